"""Pure rolling-restart decision: which pod to restart next when the pod template changed.

The StatefulSet uses `updateStrategy: OnDelete`, so the operator restarts members itself:
one at a time, followers first (highest ordinal first), and the leader last, after a
switchover to an up-to-date follower (`LeaderLast`; the decision module picks the most
advanced of them).

A member counts as back only once it streams from the leader again and lacks at most
`max_lag_seq` records (`MemberObservation.in_step`), not when its pod is Ready: a restarted
node is Ready in standby, before anyone has told it whom to follow. Restarting the next one
on readiness alone left a 3-member leader without a follower for as long as the repoint took,
and every `ack=quorum` write timed out meanwhile (issue #15). So the next restart waits until
every other member is in step: the group never has more than one member out, which keeps a
majority (what `ack=quorum` needs) and a follower (what `ack=one` needs) while one restarts.
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


@dataclass(frozen=True)
class Waiting:
    """An outdated member remains, but the group is not whole yet: `reason` says who lags."""

    reason: str


UpgradeStep = RestartPod | LeaderLast | Waiting


def outdated(cluster: ClusterObservation) -> list[MemberObservation]:
    """Members whose pod was created from an older StatefulSet revision."""
    if not cluster.update_revision:
        return []
    return [
        m
        for m in cluster.members
        if m.revision is not None and m.revision != cluster.update_revision
    ]


def not_in_step(cluster: ClusterObservation, max_lag_seq: int) -> list[str]:
    """In-range members that do not count for the group now, each with why (leader first)."""
    leader = cluster.member(cluster.leader)
    out: list[str] = []
    for i in range(cluster.replicas):
        name = f"{cluster.name}-{i}"
        member = cluster.member(name)
        if member is None:
            out.append(f"{name} has no pod")
        elif member.terminating or not member.pod_ready:
            out.append(f"{name} is not ready")
        elif leader is None or member is leader:
            continue
        elif not member.streams_from(leader, cluster.epoch):
            out.append(f"{name} does not follow {leader.name} yet")
        elif member.lag_behind(leader) > max_lag_seq:
            out.append(f"{name} lags {member.lag_behind(leader)} records (bound {max_lag_seq})")
    return out


def next_upgrade_step(cluster: ClusterObservation, max_lag_seq: int) -> UpgradeStep | None:
    """The next restart of a rolling upgrade, the leader's turn, a wait, or None (done)."""
    if cluster.revision_pending:
        return Waiting("upgrade waits for the StatefulSet controller to apply the pod template")
    stale = outdated(cluster)
    if not stale:
        return None
    behind = not_in_step(cluster, max_lag_seq)
    if behind:
        return Waiting(f"upgrade waits: {'; '.join(behind)}")
    in_range = [m for m in cluster.members if m.ordinal < cluster.replicas]
    followers = [m for m in stale if m.name != cluster.leader]
    if followers:
        victim = max(followers, key=lambda m: m.ordinal)
        return RestartPod(victim.name, f"restart follower {victim.name} on the new revision")
    updated = tuple(m.name for m in in_range if m not in stale and m.name != cluster.leader)
    return LeaderLast(updated) if updated else None
