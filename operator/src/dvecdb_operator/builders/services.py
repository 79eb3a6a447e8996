"""The members' Services: one headless Service for the cluster, a read-write and a read-only
Service per group (shard 0's keep their names `NAME-rw`/`NAME-ro`; clients of a sharded cluster
use the router's Service `NAME` instead, see `builders.router`).

- headless: stable per-pod identity for the StatefulSet, lists members even before they are
  ready (the operator and Prometheus need to reach a member that is still recovering);
- read-write: selects only the pod labelled `dvecdb.io/role=leader`, which the operator moves
  on failover, so clients of this Service always reach the current leader;
- read-only: every ready member; followers serve eventual and `min_seq` reads.
"""

from __future__ import annotations

from typing import Any

from dvecdb_operator import constants as c
from dvecdb_operator.builders.common import ClusterRef, member_labels, metadata, selector_labels

_PORTS = [
    {
        "name": c.NODE_PORT_NAME,
        "port": c.NODE_PORT,
        "targetPort": c.NODE_PORT_NAME,
        "protocol": "TCP",
    }
]


def _service(
    cluster: ClusterRef,
    name: str,
    kind: str,
    selector: dict[str, str],
    extra: dict[str, Any],
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(cluster, name, extra_labels={c.LABEL_SERVICE: kind}),
        "spec": {"selector": selector, "ports": [dict(p) for p in _PORTS], **extra},
    }


def build_headless_service(cluster: ClusterRef) -> dict[str, Any]:
    return _service(
        cluster,
        cluster.headless_service,
        "headless",
        selector_labels(cluster),
        {"clusterIP": "None", "publishNotReadyAddresses": True},
    )


def build_rw_service(cluster: ClusterRef) -> dict[str, Any]:
    selector = {**member_labels(cluster), c.LABEL_ROLE: c.ROLE_LEADER}
    return _service(cluster, cluster.rw_service, "rw", selector, {"type": "ClusterIP"})


def build_ro_service(cluster: ClusterRef) -> dict[str, Any]:
    return _service(
        cluster, cluster.ro_service, "ro", member_labels(cluster), {"type": "ClusterIP"}
    )


def build_services(cluster: ClusterRef) -> list[dict[str, Any]]:
    """The headless Service, then each group's read-write and read-only Services."""
    out = [build_headless_service(cluster)]
    for group in cluster.groups:
        out += [build_rw_service(group), build_ro_service(group)]
    return out
