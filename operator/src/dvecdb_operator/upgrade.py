"""Pure rolling-restart decision: which pod to restart next when the pod template changed.

The StatefulSet uses `updateStrategy: OnDelete`, so the operator restarts members itself:
one at a time, only while every member is ready, followers first (highest ordinal first),
and the leader last, after a switchover to an up-to-date follower (`LeaderLast`; the
decision module picks the most advanced of them).
"""

from __future__ import annotations

from dataclasses import dataclass

from dvecdb_operator.observation import ClusterObservation, MemberObservation


@dataclass(frozen=True)
class RestartPod:
    name: str
    reason: str


@dataclass(frozen=True)
class LeaderLast:
    """Only the leader is outdated: move leadership to one of `updated` first."""

    updated: tuple[str, ...]


UpgradeStep = RestartPod | LeaderLast


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
    """The next restart of a rolling upgrade, the leader's turn, or None (done, or wait)."""
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
    updated = tuple(m.name for m in in_range if m not in stale and m.name != cluster.leader)
    return LeaderLast(updated) if updated else None
