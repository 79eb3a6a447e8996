"""The PodDisruptionBudget: voluntary evictions take at most one member at a time.

One member is the most a cluster of any size can lose while keeping a leader and a follower
that holds every write acknowledged with `ack=one`.
"""

from __future__ import annotations

from typing import Any

from dvecdb_operator.builders.common import ClusterRef, metadata, selector_labels


def build_pdb(cluster: ClusterRef) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(cluster, cluster.pdb),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": selector_labels(cluster)},
        },
    }
