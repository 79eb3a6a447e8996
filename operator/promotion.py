"""Pure rules for a promote that failed: when to retry it and at which epoch.

A promote whose call timed out or whose member was unreachable has an unknown outcome: the
member may have taken the epoch (and lead at it), may still be working on it (a follower
applies its received backlog first), or may never have seen it. Taking a fresh epoch on every
retry would leave a failover several epochs up and fence members for nothing, so, as
CloudNativePG keeps its `targetPrimary` until the promotion lands, the operator remembers the
attempt (`PendingPromotion`) and retries it with a capped exponential backoff.

The epoch rule keeps "never two leaders at one epoch": an epoch is reused only for the member
it was handed to, only while it is still the recorded epoch, and only when that member can
still take it (it is below it, or already leads at it). A `stale_epoch` refusal means the
epoch is used up for that member; any other member gets a fresh epoch above all seen.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from dvecdb_operator import constants as c
from dvecdb_operator.observation import ClusterObservation, MemberObservation


@dataclass(frozen=True)
class PendingPromotion:
    """The last promote that failed, kept between monitoring passes."""

    candidate: str
    epoch: int
    attempts: int
    error: str
    refused: bool  # the member answered `stale_epoch`: this epoch is used up for it
    delay: float
    retry_at: float


def next_epoch(cluster: ClusterObservation) -> int:
    """One above every epoch recorded or reported, so no member can refuse it."""
    return max([cluster.epoch, *(m.epoch for m in cluster.members)]) + 1


def retry_delay(attempts: int, *, first: float, cap: float) -> float:
    """Seconds to wait after the `attempts`-th failure: first, 2x, 4x, ... up to `cap`."""
    return float(min(cap, first * 2 ** min(max(attempts - 1, 0), 30)))


def record_failure(
    pending: PendingPromotion | None,
    *,
    candidate: str,
    epoch: int,
    error: str,
    refused: bool,
    now: float,
    first: float,
    cap: float,
) -> PendingPromotion:
    """The pending promotion after one more failed attempt.

    Attempts on the same member count up whatever the epoch, so a member that keeps refusing
    is retried ever more slowly instead of burning an epoch every couple of seconds.
    """
    same = pending is not None and pending.candidate == candidate
    attempts = pending.attempts + 1 if same and pending is not None else 1
    delay = retry_delay(attempts, first=first, cap=cap)
    return PendingPromotion(candidate, epoch, attempts, error, refused, delay, now + delay)


def current(
    cluster: ClusterObservation, pending: PendingPromotion | None
) -> PendingPromotion | None:
    """The pending promotion if it belongs to the recorded epoch; an older one is moot."""
    if pending is None or pending.epoch != cluster.epoch:
        return None
    return pending


def promoted_member(cluster: ClusterObservation) -> MemberObservation | None:
    """A member that leads at the recorded epoch while the status names another leader.

    The operator hands each epoch to one member only, so this is the member whose promote
    took effect but whose answer never arrived: the failover only needs finishing.
    """
    if cluster.leader is None or cluster.epoch < 1:
        return None
    return next(
        (
            m
            for m in cluster.members
            if m.reachable
            and not m.terminating
            and m.role == c.ROLE_LEADER
            and m.epoch == cluster.epoch
            and m.name != cluster.leader
        ),
        None,
    )


def prefer_tried(
    ordered: Iterable[MemberObservation],
    tried: MemberObservation | None,
) -> MemberObservation | None:
    """Keep the member already tried when it holds as much log as the best candidate.

    Switching to another member forces a fresh epoch; data decides first, the epoch second.
    """
    best = next(iter(ordered), None)
    if tried is not None and (best is None or tried.last_seq >= best.last_seq):
        return tried
    return best


def promote_epoch(
    cluster: ClusterObservation, candidate: MemberObservation, pending: PendingPromotion | None
) -> int:
    """The epoch to promote `candidate` at: the pending one when safe, else a fresh one."""
    if candidate.role == c.ROLE_LEADER and candidate.epoch == cluster.epoch >= 1:
        return cluster.epoch  # it already leads at the recorded epoch: a retry is a no-op
    tried = current(cluster, pending)
    if (
        tried is not None
        and tried.candidate == candidate.name
        and not tried.refused
        and candidate.epoch < tried.epoch
    ):
        return tried.epoch
    return next_epoch(cluster)


def retry_message(pending: PendingPromotion) -> str:
    """The status message while a retry waits out its backoff."""
    epoch = "a new epoch" if pending.refused else f"epoch {pending.epoch}"
    return (
        f"promoting {pending.candidate} failed ({pending.error}); attempt {pending.attempts + 1}"
        f" at {epoch} after a {pending.delay:g}s backoff"
    )
