"""Names shared by the CRD, the builders and the handlers: one place to change them."""

from typing import Final

GROUP: Final = "dvecdb.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "DVecCluster"
PLURAL: Final = "dvecclusters"

# Labels put on every child and pod.
LABEL_NAME: Final = "app.kubernetes.io/name"
LABEL_INSTANCE: Final = "app.kubernetes.io/instance"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
LABEL_COMPONENT: Final = "app.kubernetes.io/component"
LABEL_CLUSTER: Final = f"{GROUP}/cluster"
LABEL_ROLE: Final = f"{GROUP}/role"
LABEL_SERVICE: Final = f"{GROUP}/service"
# The shard (replica group) a member belongs to, on clusters of several shards.
LABEL_SHARD: Final = f"{GROUP}/shard"
# The router's pods (not `LABEL_CLUSTER`: that label selects a cluster's members only).
LABEL_ROUTER: Final = f"{GROUP}/router"
ROUTER_APP_NAME: Final = "dvecdb-router"
ROUTER_IMAGE_REPOSITORY: Final = "router"
ROUTER_CONFIG_KEY: Final = "members.json"
ROUTER_CONFIG_DIR: Final = "/etc/dvecdb/router"
APP_NAME: Final = "dvecdb"
MANAGER: Final = "dvecdb-operator"

ROLE_LEADER: Final = "leader"
ROLE_FOLLOWER: Final = "follower"
ROLE_STANDBY: Final = "standby"

# Annotation on a DVecCluster naming the member to switch the leadership to.
ANNOTATION_SWITCHOVER: Final = f"{GROUP}/switchover-to"
# Annotation naming the member to promote whatever it holds (a human decision for a group
# that lost its majority for good): acknowledged writes may be lost.
ANNOTATION_FORCE_PROMOTE: Final = f"{GROUP}/force-promote"

# On router pods: the digest of the members file just written (`routerfile`). Changing a pod
# makes its kubelet sync it at once, which refreshes the mounted ConfigMap within seconds (else
# up to the kubelet's sync period, a minute by default).
ANNOTATION_MEMBERS_FILE: Final = f"{GROUP}/members-file"

# The node's port.
NODE_PORT: Final = 8080
NODE_PORT_NAME: Final = "http"
# The keys of the auth Secret (`spec.auth.secretName`), named as the node's secrets folder
# expects its files (dvecdb_node.credentials), and where members mount it.
API_KEY: Final = "apiKey"
READ_ONLY_KEY: Final = "readOnlyKey"
CLUSTER_TOKEN_KEY: Final = "clusterToken"
AUTH_KEYS: Final = (API_KEY, READ_ONLY_KEY, CLUSTER_TOKEN_KEY)
# The one key operators before the access keys wrote (the cluster token).
LEGACY_TOKEN_KEY: Final = "token"
AUTH_VOLUME: Final = "auth"
AUTH_DIR: Final = "/etc/dvecdb/auth"
DATA_DIR: Final = "/data"
DATA_VOLUME: Final = "data"

# The StatefulSet controller's label with the revision a pod was created from.
LABEL_REVISION: Final = "controller-revision-hash"
