"""Making the routers' kubelets refresh the members file now, not at their next sync.

A router learns members and the slot map from its mounted ConfigMap `NAME-router`; a kubelet
refreshes such a volume when it syncs the pod, which it does when the pod changes or else once
per sync period (a minute by default). Every time the operator writes a new file it sets the
file's digest on the router pods: a restarted member's new IP, a removed shard and a published
slot map (while moved writes wait for it) reach the routers within seconds.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

from dvecdb_operator import constants as c
from dvecdb_operator import kube as kube_api
from dvecdb_operator.builders.common import ClusterRef
from dvecdb_operator.builders.router import router_labels


def digest(data: Mapping[str, str]) -> str:
    """A short fingerprint of the ConfigMap's data (what the annotation carries)."""
    text = json.dumps(dict(data), sort_keys=True).encode()
    return hashlib.sha256(text).hexdigest()[:16]


async def nudge_routers(kube: kube_api.Kube, ref: ClusterRef, data: Mapping[str, str]) -> None:
    """Set `data`'s digest on every router pod of the cluster that lacks it."""
    value = digest(data)
    for pod in await kube.list_pods(ref.namespace, router_labels(ref)):
        meta = pod["metadata"]
        if (meta.get("labels") or {}).get(c.LABEL_ROUTER) != ref.name:
            continue
        if (meta.get("annotations") or {}).get(c.ANNOTATION_MEMBERS_FILE) == value:
            continue
        try:
            await kube.patch_pod_annotations(
                ref.namespace, meta["name"], {c.ANNOTATION_MEMBERS_FILE: value}
            )
        except kube_api.NotFoundError:
            continue  # gone meanwhile: its successor mounts the new file
