"""The ConfigMap of node defaults that change without restarting members.

`spec.node.hnsw.efSearch` is the default search ef of collections created without one. The
members read it from this ConfigMap (an environment variable with `configMapKeyRef`), not
from a literal in the pod template: a changed value then leaves the pod template, and so the
StatefulSet's revision, as it was, and no member restarts for it. Each member takes the new
default at its next start, whatever restarts it; collections that exist already get the new
value at once through the node's `PATCH /v1/collections/{name}` (see `livesettings`).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from dvecdb_operator.builders.common import ClusterRef, metadata
from dvecdb_operator.drift import contains
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


def _node_env(template: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    for item in (template.get("spec") or {}).get("containers") or []:
        if item.get("name") == "node":
            return list(item.get("env") or [])
    return None


def keep_literal_ef_search(live: Mapping[str, Any] | None, desired: dict[str, Any]) -> None:
    """A StatefulSet made by an operator before this ConfigMap carries the value as a literal:
    keep that entry while nothing else in the pod template changes, so upgrading the operator
    restarts no member. The next rollout that happens anyway (an image, resources) moves it
    to the ConfigMap. Until then a restarted member keeps the old default (existing
    collections still get the new one through the sweep)."""
    live_template = ((live or {}).get("spec") or {}).get("template") or {}
    live_env = _node_env(live_template)
    literal = next(
        (e for e in live_env or [] if e.get("name") == EF_SEARCH_KEY and "value" in e), None
    )
    if literal is None:
        return
    candidate = copy.deepcopy(desired["spec"]["template"])
    env = _node_env(candidate)
    if env is None:
        return
    for item in candidate["spec"]["containers"]:
        if item.get("name") == "node":
            item["env"] = [
                {"name": EF_SEARCH_KEY, "value": literal["value"]}
                if e.get("name") == EF_SEARCH_KEY
                else e
                for e in env
            ]
    if contains(live_template, candidate):
        desired["spec"]["template"] = candidate
