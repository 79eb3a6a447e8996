"""The members' NetworkPolicy: who may open a connection to the node's port at all.

One port serves the data API, the admin API and replication, and a NetworkPolicy sees ports
and peers, never paths, so it cannot keep clients off `/v1/admin` while letting them search.
What it can do, and does: admit the cluster's own members (replication), the operator (admin
calls, when it runs as a pod whose namespace and labels it knows), the cluster's routers (its
client endpoint: data calls, and members' status with the cluster token) and the peers the spec
names in `networkPolicy.allowFrom` (default: every pod of the cluster's namespace), and drop
everyone else. Which request a peer may then make is the keys' business (`builders.secret`).
Only ingress is restricted; the kubelet's probes come from the node and most network plugins
admit them whatever the policy says.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dvecdb_operator import constants as c
from dvecdb_operator.builders.common import ClusterRef, metadata, selector_labels
from dvecdb_operator.builders.router import router_labels

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
# `allowFrom` unset: clients anywhere in the cluster's namespace.
SAME_NAMESPACE: list[dict[str, Any]] = [{"podSelector": {}}]


@dataclass(frozen=True)
class OperatorIdentity:
    """Where the operator's pods run and the labels that select them (the Helm chart passes
    both); an operator outside the cluster has neither and gets no peer of its own."""

    namespace: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)

    def peer(self) -> dict[str, Any] | None:
        if not self.namespace or not self.labels:
            return None
        return {
            "namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: self.namespace}},
            "podSelector": {"matchLabels": dict(self.labels)},
        }


def policy_peers(
    cluster: ClusterRef,
    operator: OperatorIdentity,
    allow_from: Sequence[Mapping[str, Any]] | None,
) -> list[dict[str, Any]]:
    """Members first (never an empty list: an empty `from` would admit everyone), then the
    operator, the cluster's routers, then the configured peers."""
    peers: list[dict[str, Any]] = [{"podSelector": {"matchLabels": selector_labels(cluster)}}]
    operator_peer = operator.peer()
    if operator_peer is not None:
        peers.append(operator_peer)
    peers.append({"podSelector": {"matchLabels": router_labels(cluster)}})
    extra = SAME_NAMESPACE if allow_from is None else allow_from
    peers.extend(dict(p) for p in extra)
    return peers


def build_network_policy(
    cluster: ClusterRef,
    *,
    operator: OperatorIdentity,
    allow_from: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(cluster, cluster.network_policy, component="network"),
        "spec": {
            "podSelector": {"matchLabels": selector_labels(cluster)},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": policy_peers(cluster, operator, allow_from),
                    "ports": [{"port": c.NODE_PORT, "protocol": "TCP"}],
                }
            ],
        },
    }
