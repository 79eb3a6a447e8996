"""Pure rolling-restart decision: which pod to restart next when the pod template changed.

The StatefulSet uses `updateStrategy: OnDelete`, so the operator restarts members itself:
one at a time, only while every member is ready, followers first (highest ordinal first),
and the leader last, after a switchover to an up-to-date follower.
"""

from __future__ import annotations

from dataclasses import dataclass

from dvecdb_operator.failover import choose_candidate
from dvecdb_operator.observation import ClusterObservation, MemberObservation


@dataclass(frozen=True)
class RestartPod:
    name: str
    reason: str


@dataclass(frozen=True)
class SwitchoverTo:
    target: str
    reason: str


UpgradeStep = RestartPod | SwitchoverTo


def outdated(cluster: ClusterObservation) -> list[MemberObservation]:
    """Members whose pod was created from an older StatefulSet revision."""
    if not cluster.update_revision:
        return []
    return [
        m
        for m in cluster.members
        if m.revision is not None and m.revision != cluster.update_revision
    ]


def next_upgrade_step(cluster: ClusterObservation) -> UpgradeStep | None:
    """The next restart or switchover of a rolling upgrade, or None (done, or must wait)."""
    stale = outdated(cluster)
    if not stale:
        return None
    in_range = [m for m in cluster.members if m.ordinal < cluster.replicas]
    if len(in_range) < cluster.replicas or not all(
        m.pod_ready and not m.terminating for m in in_range
    ):
        return None
    followers = [m for m in stale if m.name != cluster.leader]
    if followers:
        victim = max(followers, key=lambda m: m.ordinal)
        return RestartPod(victim.name, f"restart follower {victim.name} on the new revision")
    updated = [m for m in in_range if m not in stale]
    target = choose_candidate(updated, exclude=cluster.leader)
    if target is None:
        return None
    return SwitchoverTo(target.name, f"switch over to {target.name} before the leader restarts")
