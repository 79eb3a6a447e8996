"""Pure failover decisions: is the leader failed, and which follower takes over.

Candidates are ordered by replicated position as in CloudNativePG: the most log received
first (`received_seq`, which a follower reports as its own `last_seq`), then the most applied,
then the lowest ordinal so that ties resolve the same way on every operator replica.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from dvecdb_operator import constants as c
from dvecdb_operator.observation import ClusterObservation, MemberObservation
from dvecdb_operator.promotion import (
    PendingPromotion,
    current,
    prefer_tried,
    promote_epoch,
    promoted_member,
)


def leader_healthy(leader: MemberObservation | None, epoch: int) -> bool:
    """The recorded leader answers, says it leads, and at the recorded epoch or later."""
    return (
        leader is not None
        and leader.reachable
        and not leader.terminating
        and leader.role == c.ROLE_LEADER
        and leader.epoch >= epoch
    )


def failure_reason(leader: MemberObservation | None, epoch: int) -> str:
    """Why the recorded leader counts as failed, for events and `lastFailover.reason`."""
    if leader is None:
        return "leader pod missing"
    if not leader.reachable:
        return f"leader unreachable ({leader.error or 'no answer'})"
    if leader.terminating:
        return "leader pod terminating"
    if leader.role != c.ROLE_LEADER:
        return f"leader reports role {leader.role}"
    return f"leader reports epoch {leader.epoch} below {epoch}"


def failover_due(unhealthy_for: float | None, detection_seconds: float) -> bool:
    """True once the leader has been failed for the whole detection window."""
    return unhealthy_for is not None and unhealthy_for >= detection_seconds


def order_candidates(
    members: Iterable[MemberObservation],
    *,
    exclude: str | None = None,
    max_ordinal: int | None = None,
) -> list[MemberObservation]:
    """Reachable non-leaders, best first: received_seq desc, applied_seq desc, ordinal asc."""
    eligible = [
        m
        for m in members
        if m.reachable
        and not m.terminating
        and m.role in (c.ROLE_FOLLOWER, c.ROLE_STANDBY)
        and m.name != exclude
        and (max_ordinal is None or m.ordinal < max_ordinal)
    ]
    return sorted(eligible, key=lambda m: (-m.last_seq, -m.applied_seq, m.ordinal))


def choose_candidate(
    members: Iterable[MemberObservation],
    *,
    exclude: str | None = None,
    max_ordinal: int | None = None,
) -> MemberObservation | None:
    ordered = order_candidates(members, exclude=exclude, max_ordinal=max_ordinal)
    return ordered[0] if ordered else None


@dataclass(frozen=True)
class FailoverPlan:
    """Everything the executor needs to fail over, decided up front.

    `new_epoch == epoch` marks a retry: the status already holds the epoch and the candidate
    was the one it was handed to, so nothing is bumped.
    """

    old_leader: str
    candidate: str
    epoch: int
    new_epoch: int
    fence_old: bool
    repoint: tuple[str, ...]
    from_seq: int
    to_seq: int
    reason: str
    attempt: int = 1

    @property
    def retry(self) -> bool:
        return self.new_epoch == self.epoch


def _candidate(
    cluster: ClusterObservation, pending: PendingPromotion | None
) -> MemberObservation | None:
    """The member already leading at the recorded epoch, else the tried one if it is still
    among the best, else the best follower; the old leader only as the last resort."""
    promoted = promoted_member(cluster)
    if promoted is not None:
        return promoted
    old = cluster.leader
    ordered = order_candidates(cluster.members, exclude=old, max_ordinal=cluster.replicas)
    tried = current(cluster, pending)
    member = cluster.member(tried.candidate) if tried is not None else None
    eligible = member is not None and member.ordinal < cluster.replicas
    chosen = prefer_tried(ordered, choose_candidate([member]) if member and eligible else None)
    if chosen is None:
        chosen = choose_candidate([m for m in cluster.members if m.name == old])
    return chosen


def plan_failover(
    cluster: ClusterObservation,
    *,
    reason: str,
    last_leader_seq: int = 0,
    pending: PendingPromotion | None = None,
) -> FailoverPlan | None:
    """The failover to run now, or None when no member can take over.

    Followers are preferred; the failed leader itself is the candidate of last resort (it
    holds every write it acknowledged) when it answers in standby and nobody else does. A
    pending promotion keeps its member and epoch while that is safe (see `promotion`).
    """
    old = cluster.leader or ""
    leader = cluster.member(old)
    candidate = _candidate(cluster, pending)
    if candidate is None:
        return None
    from_seq = max(last_leader_seq, leader.last_seq if leader and leader.reachable else 0)
    repoint = tuple(
        m.name
        for m in cluster.members
        if m.name != candidate.name and m.ordinal < cluster.replicas and not m.terminating
    )
    new_epoch = promote_epoch(cluster, candidate, pending)
    tried = current(cluster, pending)
    same = tried is not None and tried.candidate == candidate.name
    return FailoverPlan(
        old_leader=old,
        candidate=candidate.name,
        epoch=cluster.epoch,
        new_epoch=new_epoch,
        fence_old=leader is not None and leader.reachable and leader.name != candidate.name,
        repoint=repoint,
        from_seq=from_seq,
        to_seq=candidate.last_seq,
        reason=reason,
        attempt=tried.attempts + 1 if same and tried is not None else 1,
    )
