"""The router: the cluster's one client endpoint, in front of every shard's members.

- Deployment `NAME-router` (`spec.router.replicas`, stateless, spread over hosts), running
  `dvecdb-router --members-file`: the file is the ConfigMap `NAME-router` that the operator
  rewrites whenever a member's address changes (`router_members`); the router re-reads it and
  learns leaders from the members' own `/v1/status` (a failover needs no new file).
- Service `NAME` selecting the router's pods; a PDB keeping all but one of them.
- The router forwards each client's `Authorization` header, so the members check the keys of
  `spec.auth` exactly as for direct clients; its own status polls use the cluster token, the
  auth Secret's `clusterToken` mounted as a file that the router re-reads when it changes (a
  rotated token is used without a restart, as by the members).

The router's pods carry `dvecdb.io/router=NAME`, not `dvecdb.io/cluster`: that label selects
a cluster's members (Services, PDB, NetworkPolicy, dashboards) and must keep meaning only them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from dvecdb_client.slots import SlotMap
from dvecdb_operator import constants as c
from dvecdb_operator.builders.common import ClusterRef, metadata
from dvecdb_operator.builders.statefulset import AUTH_FILE_MODE, RUN_AS_USER, tls_volume
from dvecdb_operator.slotmap import slot_map_status
from dvecdb_operator.spec import ClusterSpec, router_image
from dvecdb_operator.tlsplan import ROUTER_CERT_ARG, TLS_DIR, TLS_VOLUME, TlsMounts

CONFIG_VOLUME = "members"


def router_labels(cluster: ClusterRef) -> dict[str, str]:
    """The labels that select the router's pods."""
    return {c.LABEL_NAME: c.ROUTER_APP_NAME, c.LABEL_ROUTER: cluster.name}


def _probe(path: str, *, period: int, failures: int, tls: bool = False) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": c.NODE_PORT_NAME, "scheme": "HTTPS" if tls else "HTTP"},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def build_router_deployment(
    cluster: ClusterRef, spec: ClusterSpec, *, auth_secret: str, tls: TlsMounts | None = None
) -> dict[str, Any]:
    """With `tls` the router serves HTTPS with its certificate and verifies the members'
    against the cluster's CA (both from the TLS Secret, re-read when it is renewed)."""
    labels = {**router_labels(cluster), c.LABEL_INSTANCE: cluster.name}
    container: dict[str, Any] = {
        "name": "router",
        "image": router_image(spec),
        "imagePullPolicy": spec.image_pull_policy,
        # The router image's entry point already; named so an image with both programs works.
        "command": ["dvecdb-router"],
        "args": [
            "--host",
            "0.0.0.0",
            "--port",
            str(c.NODE_PORT),
            "--members-file",
            f"{c.ROUTER_CONFIG_DIR}/{c.ROUTER_CONFIG_KEY}",
            "--cluster-token-file",
            f"{c.AUTH_DIR}/{c.CLUSTER_TOKEN_KEY}",
            "--leader-wait-seconds",
            # A write waits for its shard's failover: detection, then the failover itself.
            str(spec.failover.detection_seconds + 10),
        ],
        "ports": [{"name": c.NODE_PORT_NAME, "containerPort": c.NODE_PORT, "protocol": "TCP"}],
        "livenessProbe": _probe("/healthz", period=10, failures=3, tls=bool(tls)),
        # Ready once every shard has a ready member: the Service then sends it clients.
        "readinessProbe": _probe("/readyz", period=2, failures=2, tls=bool(tls)),
        "volumeMounts": [
            {"name": CONFIG_VOLUME, "mountPath": c.ROUTER_CONFIG_DIR, "readOnly": True},
            {"name": c.AUTH_VOLUME, "mountPath": c.AUTH_DIR, "readOnly": True},
        ],
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    volumes: list[dict[str, Any]] = []
    if tls is not None:
        container["args"] += [
            ROUTER_CERT_ARG,
            tls.path(tls.router_cert),
            "--tls-key-file",
            tls.path(tls.router_key),
            "--ca-file",
            tls.path(tls.ca),
        ]
        container["volumeMounts"].append(
            {"name": TLS_VOLUME, "mountPath": TLS_DIR, "readOnly": True}
        )
        volumes.append(tls_volume(tls))
    if spec.router.resources:
        container["resources"] = spec.router.resources
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(cluster, cluster.router, component="router"),
        "spec": {
            "replicas": spec.router.replicas,
            "selector": {"matchLabels": router_labels(cluster)},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": RUN_AS_USER,
                        "runAsGroup": RUN_AS_USER,
                        "fsGroup": RUN_AS_USER,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [container],
                    "volumes": [
                        {"name": CONFIG_VOLUME, "configMap": {"name": cluster.router}},
                        {
                            # Only the cluster token: the router holds no client key.
                            "name": c.AUTH_VOLUME,
                            "secret": {
                                "secretName": auth_secret,
                                "items": [
                                    {"key": c.CLUSTER_TOKEN_KEY, "path": c.CLUSTER_TOKEN_KEY}
                                ],
                                "defaultMode": AUTH_FILE_MODE,
                                "optional": True,
                            },
                        },
                        *volumes,
                    ],
                    "affinity": {
                        "podAntiAffinity": {
                            "preferredDuringSchedulingIgnoredDuringExecution": [
                                {
                                    "weight": 100,
                                    "podAffinityTerm": {
                                        "labelSelector": {"matchLabels": router_labels(cluster)},
                                        "topologyKey": "kubernetes.io/hostname",
                                    },
                                }
                            ]
                        }
                    },
                },
            },
        },
    }


def build_router_service(cluster: ClusterRef) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(
            cluster,
            cluster.router_service,
            component="router",
            extra_labels={c.LABEL_SERVICE: "router"},
        ),
        "spec": {
            "type": "ClusterIP",
            "selector": router_labels(cluster),
            "ports": [
                {
                    "name": c.NODE_PORT_NAME,
                    "port": c.NODE_PORT,
                    "targetPort": c.NODE_PORT_NAME,
                    "protocol": "TCP",
                }
            ],
        },
    }


def build_router_pdb(cluster: ClusterRef) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(cluster, cluster.router, component="router"),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": router_labels(cluster)}},
    }


def router_members(
    cluster: ClusterRef,
    urls: Mapping[int, Sequence[str]],
    *,
    slot_map: SlotMap | None = None,
) -> dict[str, Any]:
    """The members file: every running shard's member URLs (pods with an address, ready or
    not: the router checks readiness itself), with the slot map the router follows (`owners`;
    default: the even map). During a resharding more shards run than own slots: `shards`
    counts the groups listed."""
    slot_map = slot_map or SlotMap.even(cluster.shards)
    return {
        "slotMap": slot_map_status(slot_map, shards=cluster.shards),
        "shards": [
            {
                "shard": shard,
                "statefulSet": cluster.group(shard).statefulset,
                "slots": [list(r) for r in slot_map.ranges(shard)],
                "members": sorted(urls.get(shard, ())),
            }
            for shard in range(cluster.shards)
        ],
    }


def members_file_version(data: Mapping[str, Any] | None) -> int:
    """The slot map version of a members ConfigMap's data (0 when none can be read)."""
    text = (data or {}).get(c.ROUTER_CONFIG_KEY)
    try:
        version = json.loads(text)["slotMap"]["version"] if isinstance(text, str) else 0
    except (ValueError, KeyError, TypeError):
        return 0
    return version if isinstance(version, int) else 0


def build_router_configmap(cluster: ClusterRef, members: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(cluster, cluster.router, component="router"),
        "data": {c.ROUTER_CONFIG_KEY: json.dumps(members, indent=1, sort_keys=True) + "\n"},
    }
