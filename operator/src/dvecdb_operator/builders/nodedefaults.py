"""The ConfigMap of node defaults that change without restarting members.

`spec.node.hnsw.efSearch` is the default search ef of collections created without one. The
members read it from this ConfigMap (an environment variable with `configMapKeyRef`), not
from a literal in the pod template: a changed value then leaves the pod template, and so the
StatefulSet's revision, as it was, and no member restarts for it. Each member takes the new
default at its next start, whatever restarts it; collections that exist already get the new
value at once through the node's `PATCH /v1/collections/{name}` (see `livesettings`).
"""

from __future__ import annotations

from typing import Any

from dvecdb_operator.builders.common import ClusterRef, metadata
from dvecdb_operator.spec import ClusterSpec

EF_SEARCH_KEY = "DVECDB_HNSW_EF_SEARCH"


def node_defaults_name(cluster: ClusterRef) -> str:
    return f"{cluster.name}-node-defaults"


def build_node_defaults(cluster: ClusterRef, spec: ClusterSpec) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(cluster, node_defaults_name(cluster)),
        "data": {EF_SEARCH_KEY: str(spec.node.hnsw.ef_search)},
    }


def ef_search_env(configmap: str) -> dict[str, Any]:
    """The pod template's entry: the same text whatever the value (no restart for it)."""
    return {
        "name": EF_SEARCH_KEY,
        "valueFrom": {"configMapKeyRef": {"name": configmap, "key": EF_SEARCH_KEY}},
    }
