"""The pure decision of a pass: from what was observed, the one next step.

`decide` is called again after every step the executor carries out (with the observation
updated by what the step learnt), so one pass walks a leadership change as far as it can:

- **Detection.** The recorded leader is failed when it does not answer, or answers but not
  as leader at the recorded epoch, for `detectionSeconds`; at once when its pod is known
  dead or restarted (gone, terminating, not running, a new uid, more container restarts).
- **Epoch first** (`Begin`): the new epoch and the record of the change are written to the
  status together, under a resourceVersion precondition.
- **Fence, then choose** (`Fence`, `Choose`, `Blocked`): every reachable member, the old
  leader included, is fenced at the new epoch; a candidate is chosen only when the fenced
  members are a majority of the group, or every member but the old leader. Best is the
  highest (`last_epoch`, `last_seq`), then `applied_seq`, then the lowest ordinal
  (CloudNativePG sorts its candidates the same way). A smaller set never promotes.
- **Promote, repoint, finish** (`Promote`, `Repoint`, `Finish`), each resumable from the
  record's phase; a candidate that fails for the detection time restarts the change at a
  fresh epoch; one that refuses the epoch it was fenced at is promoted at the next one
  (`Reepoch`, for a node that takes promotes only at epochs it has not seen).

Planned switchovers (annotation, scale-down below the leader, the leader's turn in a rolling
upgrade) take the same path once the target has caught up; a forced promotion (annotation,
a human decision) takes it without the majority rule.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from dvecdb_operator import constants as c
from dvecdb_operator.builders.common import ordinal_of
from dvecdb_operator.observation import (
    ClusterObservation,
    FailoverRecord,
    Kind,
    LeaderPod,
    MemberObservation,
)
from dvecdb_operator.upgrade import LeaderLast, RestartPod, Waiting, next_upgrade_step

PHASE_CREATING = "Creating"
PHASE_HEALTHY = "Healthy"
PHASE_DEGRADED = "Degraded"
PHASE_SWITCHING = "Switching"
PHASE_UPGRADING = "Upgrading"
PHASE_SCALING = "Scaling"
PHASE_FAILING_OVER = "FailingOver"
PHASE_FAILED = "Failed"
PHASE_DELETING = "Deleting"


# --- steps ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hold:
    """Nothing to do now; `reason` becomes the status message (`failed`: phase Failed)."""

    reason: str
    failed: bool = False


@dataclass(frozen=True)
class Adopt:
    """A member already leads (the status was lost): record it instead of electing anew."""

    leader: str
    epoch: int


@dataclass(frozen=True)
class Begin:
    """Write `record` (its epoch above every one seen) to the status, compare-and-swap."""

    record: FailoverRecord
    replaces: FailoverRecord | None = None


@dataclass(frozen=True)
class Reepoch:
    """Move the change, candidate kept, to a fresh epoch (compare-and-swap).

    A node takes a promote only at an epoch it has not seen, unless it already leads at it;
    the candidate has seen the failover's epoch (it was fenced at it), so it is promoted at
    the next one. Everyone else stays fenced at the lower epoch: nothing needs fencing again.
    """

    record: FailoverRecord
    reason: str


@dataclass(frozen=True)
class Fence:
    """Fence `targets` at the record's epoch, in order (a planned change: old leader first)."""

    record: FailoverRecord
    targets: tuple[str, ...]


@dataclass(frozen=True)
class Blocked:
    """The fenced set may not choose: persist it, say which members are missing."""

    record: FailoverRecord
    missing: tuple[str, ...]
    reason: str


@dataclass(frozen=True)
class Choose:
    """Persist the candidate (phase `promoting`) before promoting it."""

    record: FailoverRecord
    note: str


@dataclass(frozen=True)
class Promote:
    record: FailoverRecord


@dataclass(frozen=True)
class Repoint:
    """Tell `targets` to follow the record's candidate at its epoch."""

    record: FailoverRecord
    targets: tuple[str, ...]


@dataclass(frozen=True)
class Finish:
    """Record `lastFailover`, drop the record, clear the request that asked for it."""

    record: FailoverRecord


@dataclass(frozen=True)
class ClearRequest:
    """Remove a request annotation that is done or cannot be honoured (with an Event)."""

    annotation: str
    reason: str
    message: str
    warning: bool = False


@dataclass(frozen=True)
class Steady:
    """The leader is healthy: renew its lease, repoint strays, maybe restart one pod."""

    leader: str
    follow: tuple[str, ...] = ()
    restart: RestartPod | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    message: str | None = None
    waiting: str | None = None  # a planned operation waits for its target to catch up


Step = (
    Hold
    | Adopt
    | Begin
    | Reepoch
    | Fence
    | Blocked
    | Choose
    | Promote
    | Repoint
    | Finish
    | ClearRequest
    | Steady
)
# Steps after which the pass stops deciding (the rest wait for a new observation).
FINAL = (Hold, Blocked, Steady)


@dataclass(frozen=True)
class Policy:
    failover_enabled: bool = True
    detection_seconds: float = 10.0
    lease_seconds: float = 5.0
    # A planned switchover starts once the target is this close (in log records); it is
    # fenced with the rest, so anything it lacks then makes a more advanced member win.
    switchover_slack: int = 0
    # A follower lacking more records than this does not count for the group: the phase is
    # not Healthy and a rolling upgrade does not restart the next member.
    max_lag_seq: int = 100


@dataclass(frozen=True)
class Failure:
    """Why a member counts as failed; `certain` when its pod is known dead or restarted."""

    reason: str
    certain: bool = False


# --- facts ------------------------------------------------------------------------------------


def effective_replicas(spec_replicas: int, leader_ordinal: int | None) -> int:
    """Never scale the StatefulSet below the leader: keep it until a switchover moves it."""
    if leader_ordinal is None or leader_ordinal < spec_replicas:
        return spec_replicas
    return leader_ordinal + 1


def group_size(cluster: ClusterObservation) -> int:
    """How many members the group has: the StatefulSet's size (the spec, or up to the leader)."""
    owner = cluster.leader or (cluster.failover.from_ if cluster.failover else None)
    ordinal = ordinal_of(owner) if owner else -1
    return effective_replicas(cluster.replicas, ordinal if ordinal >= 0 else None)


def member_names(cluster: ClusterObservation) -> list[str]:
    """The group's members by name, pod or no pod: a missing one counts against a majority."""
    return [f"{cluster.name}-{i}" for i in range(group_size(cluster))]


def next_epoch(cluster: ClusterObservation) -> int:
    """One above every epoch recorded or reported, so no member can refuse it as stale."""
    record = cluster.failover.epoch if cluster.failover else 0
    return max([cluster.epoch, record, *(m.epoch for m in cluster.members)]) + 1


def pod_death(member: MemberObservation | None, baseline: LeaderPod | None = None) -> str | None:
    """A certain sign that the member's process is gone or was restarted, else None."""
    if member is None:
        return "pod missing"
    if member.terminating:
        return "pod terminating"
    if member.pod_running is False:
        return "container not running"
    if baseline is not None and baseline.name == member.name:
        if baseline.uid and member.pod_uid and member.pod_uid != baseline.uid:
            return "pod recreated"
        if (
            baseline.restarts is not None
            and member.restarts is not None
            and member.restarts > baseline.restarts
        ):
            return f"container restarted ({member.restarts} restarts)"
    return None


def leader_failure(cluster: ClusterObservation) -> Failure | None:
    """Why the recorded leader is failed now, or None when it serves at the recorded epoch."""
    name = cluster.leader
    if name is None:
        return None
    member = cluster.member(name)
    death = pod_death(member, cluster.leader_pod)
    if death is not None:
        return Failure(f"leader {death}", certain=True)
    assert member is not None
    if not member.reachable:
        return Failure(f"leader unreachable ({member.error or 'no answer'})")
    if member.role != c.ROLE_LEADER:
        return Failure(f"leader reports role {member.role} at epoch {member.epoch}")
    if member.epoch != cluster.epoch:
        return Failure(f"leader reports epoch {member.epoch}, not {cluster.epoch}")
    return None


def candidate_failure(member: MemberObservation | None) -> Failure | None:
    """Why a chosen candidate cannot be promoted now (it is not expected to lead yet)."""
    death = pod_death(member)
    if death is not None:
        return Failure(f"candidate {death}", certain=True)
    assert member is not None
    if not member.reachable:
        return Failure(f"candidate {member.name} unreachable ({member.error or 'no answer'})")
    return None


def watched(cluster: ClusterObservation) -> tuple[str, int, Failure] | None:
    """The member whose failure the detection timer measures (name, epoch, why), if failed.

    The leader, or while a promote is pending, the candidate; the monitor keeps the time it
    was first seen failed and passes `decide` how long ago that was.
    """
    record = cluster.failover
    if record is not None and record.phase == "promoting" and record.candidate:
        failure = candidate_failure(cluster.member(record.candidate))
        return (record.candidate, record.epoch, failure) if failure else None
    failure = leader_failure(cluster)
    if failure is None or cluster.leader is None:
        return None
    return cluster.leader, cluster.epoch, failure


def needs_follow(member: MemberObservation, leader: MemberObservation, epoch: int) -> bool:
    """A reachable non-leader that does not follow this leader at this epoch must be told."""
    if not member.reachable or member.terminating or member.name == leader.name:
        return False
    return not member.streams_from(leader, epoch)


def rank(members: Iterable[MemberObservation]) -> list[MemberObservation]:
    """Best first: highest (last_epoch, last_seq), then applied_seq, then lowest ordinal."""
    return sorted(members, key=lambda m: (-m.last_epoch, -m.last_seq, -m.applied_seq, m.ordinal))


def best_follower(
    cluster: ClusterObservation, *, among: Iterable[str] | None = None
) -> MemberObservation | None:
    """The most advanced reachable follower of the recorded leader (a planned target)."""
    allowed = set(among) if among is not None else None
    followers = [
        m
        for m in cluster.members
        if m.reachable
        and not m.terminating
        and m.role == c.ROLE_FOLLOWER
        and m.epoch == cluster.epoch
        and m.name != cluster.leader
        and (allowed is None or m.name in allowed)
    ]
    ranked = rank(followers)
    return ranked[0] if ranked else None


@dataclass(frozen=True)
class Quorum:
    """Whether the fenced members may choose, and who is missing for it."""

    fenced: tuple[str, ...]
    missing: tuple[str, ...]
    enough: bool
    rule: str


def fenced_quorum(cluster: ClusterObservation, record: FailoverRecord) -> Quorum:
    """A majority of the group, or every member but the old leader, must be fenced.

    A majority is what `ack=quorum` needs (any majority holds each such write); all but the
    old leader is what `ack=one` needs (each such write is on some follower), and it is what
    lets a two-member group fail over.
    """
    names = member_names(cluster)
    fenced = tuple(n for n in names if (m := cluster.member(n)) and m.fenced_at(record.epoch))
    majority = len(names) // 2 + 1
    others = [n for n in names if n != record.from_]
    all_others = bool(others) and all(n in fenced for n in others)
    missing = tuple(n for n in names if n not in fenced and n != record.from_)
    if len(fenced) >= majority:
        return Quorum(fenced, missing, True, f"a majority ({len(fenced)} of {len(names)})")
    if all_others:
        return Quorum(fenced, missing, True, "every member but the old leader")
    need = f"{majority} of {len(names)} members, or all but {record.from_}"
    return Quorum(fenced, missing, False, f"fenced {len(fenced)}; need {need}")


def choose_candidate(
    cluster: ClusterObservation, record: FailoverRecord
) -> MemberObservation | None:
    """The member to promote among those fenced at the record's epoch (no quorum check).

    A switchover keeps its target when the target holds as much as the best; a forced
    promotion takes its target as soon as that is fenced, whatever it holds.
    """
    fenced = [m for m in cluster.members if m.fenced_at(record.epoch) and not m.terminating]
    if record.kind == "forced":
        return next((m for m in fenced if m.name == record.target), None)
    ranked = rank(fenced)
    if not ranked:
        return None
    best = ranked[0]
    target = next((m for m in ranked if m.name == record.target), None)
    if target is not None and (target.last_epoch, target.last_seq) == (
        best.last_epoch,
        best.last_seq,
    ):
        return target
    return best


def _position(member: MemberObservation) -> str:
    return f"last_epoch {member.last_epoch}, last_seq {member.last_seq}"


# --- the decision -----------------------------------------------------------------------------


def decide(
    cluster: ClusterObservation,
    *,
    policy: Policy,
    failed_for: float | None = None,
    held: bool = False,
    now: str = "",
) -> Step:
    """The next step. `failed_for`: seconds the watched member (see `watched`) has been
    failed; `held`: planned operations wait (after an aborted switchover); `now`: the
    ISO time stamped on a new record."""
    record = cluster.failover
    if cluster.force_promote:
        forced = _forced(cluster, record, now)
        if forced is not None:
            return forced
    if record is not None:
        return _resume(cluster, record, policy, failed_for, now)
    if cluster.leader is None:
        return _elect(cluster, now)
    failure = leader_failure(cluster)
    if failure is None:
        return _steady(cluster, policy, held, now)
    due = failure.certain or (failed_for is not None and failed_for >= policy.detection_seconds)
    if not due:
        return Hold(f"{failure.reason}; failover after {policy.detection_seconds:g}s")
    if not policy.failover_enabled:
        return Hold(f"{failure.reason}; automatic failover is disabled", failed=True)
    leader = cluster.member(cluster.leader)
    seen = leader.last_seq if leader is not None and leader.reachable else 0
    return Begin(
        FailoverRecord(
            epoch=next_epoch(cluster),
            kind="failover",
            phase="fencing",
            from_=cluster.leader,
            reason=failure.reason,
            from_seq=max(seen, cluster.recorded_seqs.get(cluster.leader, 0)),
            started=now,
        )
    )


def _restart(cluster: ClusterObservation, record: FailoverRecord, reason: str, now: str) -> Begin:
    """The same change again at a fresh epoch, from fencing (bootstrap: from promoting)."""
    again = FailoverRecord(
        epoch=next_epoch(cluster),
        kind=record.kind,
        phase="promoting" if record.kind == "bootstrap" else "fencing",
        from_=record.from_,
        reason=f"{record.reason}; restarted: {reason}" if record.reason else reason,
        target=record.target,
        candidate=record.candidate if record.kind == "bootstrap" else None,
        from_seq=record.from_seq,
        started=now,
    )
    return Begin(again, replaces=record)


def _resume(
    cluster: ClusterObservation,
    record: FailoverRecord,
    policy: Policy,
    failed_for: float | None,
    now: str,
) -> Step:
    if record.epoch != cluster.epoch:
        return _restart(cluster, record, f"status epoch {cluster.epoch} moved", now)
    above = [m for m in cluster.members if m.reachable and m.epoch > record.epoch]
    if above:
        return _restart(cluster, record, f"{above[0].name} reports epoch {above[0].epoch}", now)
    if record.refused:
        candidate = cluster.member(record.candidate)
        if candidate is not None and candidate.fenced_at(record.epoch):
            return Reepoch(
                replace(record, epoch=next_epoch(cluster), refused=False),
                f"{candidate.name} takes no promote at epoch {record.epoch}, where it was fenced",
            )
        return _restart(cluster, record, f"{record.candidate} refused epoch {record.epoch}", now)
    if record.phase == "fencing":
        return _fencing(cluster, record, policy)
    if record.phase == "promoting":
        candidate = cluster.member(record.candidate)
        if candidate is not None and candidate.leads_at(record.epoch):
            return Promote(record)  # it took the epoch; the answer was lost: a no-op retry
        failure = candidate_failure(candidate)
        if failure is None:
            return Promote(record)
        late = failure.certain or (
            failed_for is not None and failed_for >= policy.detection_seconds
        )
        if late and record.kind != "bootstrap":
            return _restart(cluster, record, failure.reason, now)
        return Hold(f"promoting {record.candidate} at epoch {record.epoch}: {failure.reason}")
    candidate = cluster.member(record.candidate)
    if candidate is None or candidate.url is None:
        return Finish(record)
    targets = tuple(
        m.name
        for m in cluster.members
        if m.name != candidate.name and needs_follow(m, candidate, record.epoch)
    )
    return Repoint(record, targets) if targets else Finish(record)


# Clocks run at slightly different rates: the wait for a lease to lapse is this much longer.
LEASE_MARGIN = 0.05


def lease_left(cluster: ClusterObservation, record: FailoverRecord, lease_seconds: float) -> float:
    """Seconds the old leader may still hold its lease, once a quorum of others is fenced.

    A leader that was not fenced (unreachable) and is not known dead may go on serving
    `strong` reads while its lease lasts, and it lasts at most `lease_seconds` past the most
    recent ack a fenced member sent it (a fenced member acks no more, and the leader needs
    a majority's acks). Promoting before then could let a strong read miss a write the new
    leader acknowledged (Raft's leader-lease rule). A member that does not say when it last
    acked counts as having just acked. A leader cut off from everyone has not been acked for
    the detection time, longer than its lease: no wait.
    """
    old = record.from_
    if old is None or record.kind == "forced":
        return 0.0
    leader = cluster.member(old)
    if leader is not None and (
        leader.fenced_at(record.epoch) or pod_death(leader, cluster.leader_pod) is not None
    ):
        return 0.0
    ages = [
        0.0 if m.last_ack_seconds is None else m.last_ack_seconds
        for m in cluster.members
        if m.name != old and m.fenced_at(record.epoch)
    ]
    if not ages:
        return 0.0
    return lease_seconds * (1 + LEASE_MARGIN) - min(ages)


def _fencing(cluster: ClusterObservation, record: FailoverRecord, policy: Policy) -> Step:
    """Fence what is reachable and not yet fenced; then choose, or say who is missing."""
    targets = [
        m.name for m in cluster.members if m.reachable and m.url and not m.fenced_at(record.epoch)
    ]
    if record.from_ in targets:  # the old leader first: it stops acknowledging soonest
        targets.remove(record.from_)
        targets.insert(0, record.from_)
    if targets:
        return Fence(record, tuple(targets))
    quorum = fenced_quorum(cluster, record)
    fenced_all = tuple(m.name for m in cluster.members if m.fenced_at(record.epoch))
    record = record.at("fencing", fenced=fenced_all)
    if record.kind == "forced":
        target = choose_candidate(cluster, record)
        if target is None:
            return Blocked(record, (record.target or "",), f"waiting for {record.target} to answer")
        return Choose(
            record.at("promoting", candidate=target.name, to_seq=target.last_seq),
            f"forced: {target.name} ({_position(target)}); acknowledged writes may be lost",
        )
    if not quorum.enough:
        return Blocked(
            record,
            quorum.missing,
            f"not promoting from a minority: {quorum.rule};"
            f" missing {', '.join(quorum.missing) or 'none'}",
        )
    candidate = choose_candidate(cluster, record)
    if candidate is None:
        return Blocked(record, quorum.missing, "no fenced member can take over")
    left = lease_left(cluster, record, policy.lease_seconds)
    if left > 0:
        return Hold(
            f"fenced {', '.join(quorum.fenced)}; promoting {candidate.name} once the lease of "
            f"{record.from_} (not fenced) has lapsed, in {left:.1f}s (it may serve strong reads "
            "until then)"
        )
    others = [m.name for m in rank(m for m in cluster.members if m.name in fenced_all)]
    return Choose(
        record.at("promoting", candidate=candidate.name, to_seq=candidate.last_seq),
        f"{candidate.name} ({_position(candidate)}) of fenced {', '.join(others)}; {quorum.rule}",
    )


def _forced(cluster: ClusterObservation, record: FailoverRecord | None, now: str) -> Step | None:
    name = cluster.force_promote
    assert name is not None
    if record is not None and record.kind == "forced" and record.target == name:
        return None  # under way: resume it
    target = cluster.member(name)
    if target is None or target.ordinal >= group_size(cluster):
        return ClearRequest(
            c.ANNOTATION_FORCE_PROMOTE,
            "ForcePromoteRefused",
            f"forced promotion target {name} is not a member",
            warning=True,
        )
    if record is None and cluster.leader == name and leader_failure(cluster) is None:
        return ClearRequest(
            c.ANNOTATION_FORCE_PROMOTE,
            "ForcePromoteDone",
            f"{name} leads at epoch {cluster.epoch}",
        )
    old = record.from_ if record is not None else cluster.leader
    return Begin(
        FailoverRecord(
            epoch=next_epoch(cluster),
            kind="forced",
            phase="fencing",
            from_=old,
            reason=f"forced promotion of {name} requested",
            target=name,
            from_seq=cluster.recorded_seqs.get(old, 0) if old else 0,
            started=now,
        ),
        replaces=record,
    )


def _elect(cluster: ClusterObservation, now: str) -> Step:
    """No leader recorded: adopt one that leads, bootstrap a new group, or elect by fencing."""
    reachable = [m for m in cluster.members if m.reachable]
    leaders = [m for m in reachable if m.role == c.ROLE_LEADER]
    if leaders:
        best = max(leaders, key=lambda m: (m.epoch, -m.ordinal))
        return Adopt(best.name, max(best.epoch, cluster.epoch))
    if cluster.epoch == 0 and all(m.epoch == 0 for m in reachable):
        first = cluster.member(f"{cluster.name}-0")
        if first is None or not first.reachable:
            return Hold(f"waiting for member {cluster.name}-0 to answer")
        return Begin(
            FailoverRecord(
                epoch=next_epoch(cluster),
                kind="bootstrap",
                phase="promoting",
                from_=None,
                reason="bootstrap",
                candidate=first.name,
                started=now,
            )
        )
    return Begin(
        FailoverRecord(
            epoch=next_epoch(cluster),
            kind="failover",
            phase="fencing",
            from_=None,
            reason="no leader recorded",
            started=now,
        )
    )


def _planned(
    cluster: ClusterObservation,
    leader: MemberObservation,
    target: MemberObservation,
    reason: str,
    policy: Policy,
    now: str,
) -> Begin | str:
    """Begin a switchover to `target` once it has caught up, else say what it waits for."""
    close = (
        target.reachable
        and target.role == c.ROLE_FOLLOWER
        and target.epoch == cluster.epoch
        and target.last_seq + policy.switchover_slack >= leader.last_seq
    )
    if not close:
        return (
            f"{reason}: waiting for {target.name} to catch up"
            f" (seq {target.last_seq} of {leader.last_seq})"
        )
    return Begin(
        FailoverRecord(
            epoch=next_epoch(cluster),
            kind="switchover",
            phase="fencing",
            from_=leader.name,
            reason=reason,
            target=target.name,
            from_seq=leader.last_seq,
            started=now,
        )
    )


def _switchover_problem(cluster: ClusterObservation, name: str) -> str | None:
    target = cluster.member(name)
    if target is None or target.ordinal >= cluster.replicas:
        return f"switchover target {name} is not a member"
    if (
        not target.reachable
        or target.terminating
        or target.role
        not in (
            c.ROLE_FOLLOWER,
            c.ROLE_STANDBY,
        )
    ):
        return f"switchover target {name} is not a reachable follower"
    return None


def _steady(cluster: ClusterObservation, policy: Policy, held: bool, now: str) -> Step:
    leader = cluster.member(cluster.leader)
    assert leader is not None  # leader_failure() checked it
    follow = tuple(m.name for m in cluster.members if needs_follow(m, leader, cluster.epoch))
    request = cluster.switchover_to
    planned: tuple[MemberObservation, str] | None = None
    restart: RestartPod | None = None
    notes: list[str] = []
    if request:
        if request == leader.name:
            return ClearRequest(
                c.ANNOTATION_SWITCHOVER,
                "SwitchoverDone",
                f"{request} leads at epoch {cluster.epoch}",
            )
        problem = _switchover_problem(cluster, request)
        if problem is not None:
            return ClearRequest(c.ANNOTATION_SWITCHOVER, "SwitchoverRefused", problem, True)
        target = cluster.member(request)
        assert target is not None
        planned = (target, f"switchover requested to {request}")
    elif leader.ordinal >= cluster.replicas:
        in_range = [f"{cluster.name}-{i}" for i in range(cluster.replicas)]
        best = best_follower(cluster, among=in_range)
        if best is not None:
            planned = (best, f"scale down below {leader.name}")
        else:
            notes.append("scale-down waits for a follower to take over")
    else:
        step = next_upgrade_step(cluster, policy.max_lag_seq)
        if isinstance(step, RestartPod):
            restart = step
        elif isinstance(step, Waiting):
            notes.append(step.reason)
        elif isinstance(step, LeaderLast):
            best = best_follower(cluster, among=step.updated)
            if best is not None:
                planned = (best, f"switch over to {best.name} before the leader restarts")
    message = waiting = None
    if planned is not None:
        if held:
            message = f"{planned[1]}: held back after a deferred or aborted switchover"
        else:
            begun = _planned(cluster, leader, planned[0], planned[1], policy, now)
            if isinstance(begun, Begin):
                return begun
            message, waiting = begun, planned[1]
    return Steady(leader.name, follow, restart, tuple(notes), message, waiting)


def kind_phase(kind: Kind) -> str:
    """The cluster's `status.phase` while a change of this kind is in flight."""
    return {"bootstrap": PHASE_CREATING, "switchover": PHASE_SWITCHING}.get(
        kind, PHASE_FAILING_OVER
    )
