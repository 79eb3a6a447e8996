"""The monitor's pure decision for one pass: what to do about roles given what it observed.

Order of precedence: bootstrap an unled cluster; fail over a failed leader after the
detection window (a failover already under way, with a promote to retry or to finish, skips
the window, and a retry first waits out its backoff); otherwise tell stray members whom to
follow, then one planned operation (requested switchover, scale-down of the leader's
ordinal, or the next rolling-upgrade step).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dvecdb_operator import constants as c
from dvecdb_operator.failover import (
    FailoverPlan,
    choose_candidate,
    failover_due,
    failure_reason,
    leader_healthy,
    plan_failover,
)
from dvecdb_operator.observation import ClusterObservation, MemberObservation
from dvecdb_operator.promotion import (
    PendingPromotion,
    current,
    promote_epoch,
    promoted_member,
    retry_message,
)
from dvecdb_operator.upgrade import RestartPod, SwitchoverTo, next_upgrade_step


@dataclass(frozen=True)
class Bootstrap:
    """Promote `leader` at `epoch`; the others follow it."""

    leader: str
    epoch: int


@dataclass(frozen=True)
class Adopt:
    """A member already leads (the status was lost): record it instead of electing anew."""

    leader: str
    epoch: int


@dataclass(frozen=True)
class Failover:
    plan: FailoverPlan


@dataclass(frozen=True)
class Wait:
    """Nothing can be done now; `reason` says why (it becomes the status message)."""

    reason: str
    failed: bool = False
    failing_over: bool = False


@dataclass(frozen=True)
class Steady:
    """The leader is healthy: repoint `follow` members and maybe run one planned operation."""

    follow: tuple[str, ...] = ()
    operation: SwitchoverTo | RestartPod | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)


Decision = Bootstrap | Adopt | Failover | Wait | Steady


@dataclass(frozen=True)
class Policy:
    failover_enabled: bool = True
    detection_seconds: float = 10.0


def needs_follow(member: MemberObservation, leader: MemberObservation, epoch: int) -> bool:
    """A reachable non-leader that does not follow this leader at this epoch must be told."""
    if not member.reachable or member.terminating or member.name == leader.name:
        return False
    return not (
        member.role == c.ROLE_FOLLOWER
        and member.epoch == epoch
        and member.leader_url is not None
        and member.leader_url.rstrip("/") == (leader.url or "").rstrip("/")
    )


def effective_replicas(spec_replicas: int, leader_ordinal: int | None) -> int:
    """Never scale the StatefulSet below the leader: keep it until a switchover moves it."""
    if leader_ordinal is None or leader_ordinal < spec_replicas:
        return spec_replicas
    return leader_ordinal + 1


def _switchover_request(
    cluster: ClusterObservation, leader: MemberObservation, target_name: str | None
) -> tuple[SwitchoverTo | None, str | None]:
    if not target_name or target_name == leader.name:
        return None, None
    target = cluster.member(target_name)
    if target is None or target.ordinal >= cluster.replicas:
        return None, f"switchover target {target_name} is not a member"
    if choose_candidate([target]) is None:
        return None, f"switchover target {target_name} is not a reachable follower"
    return SwitchoverTo(target.name, f"switchover requested to {target.name}"), None


def decide(
    cluster: ClusterObservation,
    *,
    policy: Policy,
    unhealthy_for: float | None,
    switchover_target: str | None = None,
    last_leader_seq: int = 0,
    pending: PendingPromotion | None = None,
    now: float = 0.0,
) -> Decision:
    """The action for this pass; `unhealthy_for` is how long the leader has been failed,
    `pending` the last failed promote (on the monitor's clock `now`)."""
    tried = current(cluster, pending)
    if cluster.leader is None:
        leaders = [m for m in cluster.members if m.reachable and m.role == c.ROLE_LEADER]
        if leaders:
            best = max(leaders, key=lambda m: (m.epoch, -m.ordinal))
            return Adopt(best.name, max(best.epoch, cluster.epoch))
        first = next((m for m in cluster.members if m.ordinal == 0), None)
        if first is None or not first.reachable:
            return Wait(f"waiting for member {cluster.name}-0 to answer")
        if tried is not None and now < tried.retry_at:
            return Wait(f"bootstrap: {retry_message(tried)}")
        return Bootstrap(first.name, promote_epoch(cluster, first, tried))

    leader = cluster.member(cluster.leader)
    if not leader_healthy(leader, cluster.epoch):
        reason = failure_reason(leader, cluster.epoch)
        landed = promoted_member(cluster) is not None
        under_way = landed or tried is not None
        if not under_way and not failover_due(unhealthy_for, policy.detection_seconds):
            return Wait(f"{reason}; failover after {policy.detection_seconds:g}s")
        if not under_way and not policy.failover_enabled:
            return Wait(f"{reason}; automatic failover is disabled", failed=True)
        if tried is not None and not landed and now < tried.retry_at:
            return Wait(retry_message(tried), failing_over=True)
        plan = plan_failover(cluster, reason=reason, last_leader_seq=last_leader_seq, pending=tried)
        if plan is None:
            return Wait(f"{reason}; no reachable member can take over", failed=True)
        return Failover(plan)

    assert leader is not None  # leader_healthy() checked it
    follow = tuple(m.name for m in cluster.members if needs_follow(m, leader, cluster.epoch))
    requested, note = _switchover_request(cluster, leader, switchover_target)
    notes = (note,) if note else ()
    if requested is not None:
        return Steady(follow, requested, notes)
    if leader.ordinal >= cluster.replicas:
        target = choose_candidate(
            cluster.members, exclude=leader.name, max_ordinal=cluster.replicas
        )
        if target is not None:
            return Steady(
                follow, SwitchoverTo(target.name, f"scale down below {leader.name}"), notes
            )
        return Steady(follow, None, (*notes, "scale-down waits for a follower to take over"))
    return Steady(follow, next_upgrade_step(cluster), notes)
