"""Pure write-back of a pass: the status patch and the `dvecdb.io/role` label of each pod.

The patch never carries `leader`, `epoch` or `failover`: those are written only by the
executor's compare-and-swap steps, so a pass that lost a race cannot write an older epoch
back. Conditions keep their `lastTransitionTime` while their status does not change, so a
watcher of the object sees a transition only when one happened.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dvecdb_operator import constants as c
from dvecdb_operator.decisions import (
    PHASE_CREATING,
    PHASE_DEGRADED,
    PHASE_FAILED,
    PHASE_FAILING_OVER,
    PHASE_HEALTHY,
    PHASE_SCALING,
    PHASE_SWITCHING,
    PHASE_UPGRADING,
    Policy,
    kind_phase,
    leader_failure,
)
from dvecdb_operator.observation import ClusterObservation, FailoverRecord, MemberObservation
from dvecdb_operator.upgrade import not_in_step, outdated

DEFAULT_MAX_LAG_SEQ = Policy().max_lag_seq


@dataclass(frozen=True)
class Condition:
    type: str
    status: bool
    reason: str
    message: str


@dataclass(frozen=True)
class PassReport:
    """What the pass's last step says about the cluster beyond the observation itself."""

    message: str = ""
    failed: bool = False
    blocked: str | None = None  # why a failover may not choose (the members missing)


def serving_leader(cluster: ClusterObservation) -> MemberObservation | None:
    """The recorded leader when it serves at the recorded epoch, else None."""
    if cluster.leader is None or leader_failure(cluster) is not None:
        return None
    return cluster.member(cluster.leader)


def kept_leader(cluster: ClusterObservation) -> MemberObservation | None:
    """The recorded leader when it only fails to answer (no certain death, no change under
    way): its label is left as it is (see `desired_role_labels`)."""
    if cluster.leader is None or cluster.failover is not None:
        return None
    failure = leader_failure(cluster)
    member = cluster.member(cluster.leader)
    if failure is None or failure.certain or member is None or member.reachable:
        return None
    return member


def member_entry(
    member: MemberObservation,
    leader: MemberObservation | None,
    recorded: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """One `status.members` item; `lagSeq` is the leader's lastSeq minus what this applied.

    An unreachable member keeps the `lastSeq` last recorded for it: a failed leader's last
    known position is what `lastFailover.fromSeq` reports.
    """
    role = member.role if member.reachable and member.role else "unreachable"
    last_seq = member.last_seq if member.reachable else (recorded or {}).get(member.name, 0)
    entry: dict[str, Any] = {
        "name": member.name,
        "role": role,
        "ready": member.pod_ready,
        "lastSeq": last_seq,
        "appliedSeq": member.applied_seq,
    }
    if member.reachable and leader is not None and leader.reachable:
        entry["lagSeq"] = member.lag_behind(leader)
    return entry


@dataclass(frozen=True)
class Health:
    """The phase, the message and the conditions of one pass: what `kubectl wait` reads."""

    phase: str
    message: str
    conditions: tuple[Condition, ...]


# Phases during which the operator is carrying out a change (Progressing is True).
MOVING = (PHASE_CREATING, PHASE_SWITCHING, PHASE_UPGRADING, PHASE_SCALING, PHASE_FAILING_OVER)


def _replicating(
    cluster: ClusterObservation, leader: MemberObservation | None, max_lag_seq: int
) -> Condition:
    if leader is None:
        return Condition("Replicating", False, "NoLeader", "no leader to stream from")
    expected = [m for m in cluster.members if m.ordinal < cluster.replicas and m is not leader]
    stray = sorted(m.name for m in expected if not m.streams_from(leader, cluster.epoch))
    if stray:
        return Condition(
            "Replicating",
            False,
            "FollowersNotStreaming",
            f"not following {leader.name}: {', '.join(stray)}",
        )
    lagging = sorted(
        f"{m.name} ({m.lag_behind(leader)})" for m in expected if m.lag_behind(leader) > max_lag_seq
    )
    if lagging:
        return Condition(
            "Replicating",
            False,
            "FollowersLagging",
            f"more than {max_lag_seq} records behind {leader.name}: {', '.join(lagging)}",
        )
    return Condition(
        "Replicating",
        True,
        "AllFollowersStreaming",
        f"every follower streams from {leader.name} within {max_lag_seq} records",
    )


def _never_healthy(cluster: ClusterObservation) -> bool:
    """No Healthy pass was ever recorded (an object from before `healthyReplicas` that was
    past Creating counts as having been Healthy at its spec's size)."""
    return cluster.healthy_replicas is None and cluster.previous_phase in (None, PHASE_CREATING)


def in_flight_phase(cluster: ClusterObservation, record: FailoverRecord) -> str:
    """The phase while `record` is in flight: a switchover while members run an older
    revision is the leader's turn in a rolling upgrade."""
    if record.kind == "switchover" and outdated(cluster):
        return PHASE_UPGRADING
    return kind_phase(record.kind)


def derive_health(cluster: ClusterObservation, report: PassReport, *, max_lag_seq: int) -> Health:
    """The phase, message and conditions of the cluster as this pass saw it (pure).

    `Healthy` only when every member of the spec's size has a ready pod on the current
    revision and streams from the serving leader within `max_lag_seq` records, no member
    beyond the spec's size is left, and nothing is in flight. Otherwise the phase names what
    happens: a leadership change in flight (`Creating`, `Switching`, `FailingOver`, or
    `Upgrading` for the leader's turn of an upgrade), `Upgrading` while members run an older
    revision, `Scaling` while the group differs from the size it was last Healthy at,
    `Creating` until the first Healthy pass, else `Degraded`; `message` says why.
    """
    leader = serving_leader(cluster)
    stale = outdated(cluster)
    behind = not_in_step(cluster, max_lag_seq) if leader is not None else []
    extra = sorted(m.name for m in cluster.members if m.ordinal >= cluster.replicas)
    problems = [*behind]
    problems += [f"{m.name} runs an older revision" for m in stale]
    if cluster.revision_pending:
        problems.append("the StatefulSet controller has not applied the latest pod template yet")
    problems += [f"{name} is beyond {cluster.replicas} replicas" for name in extra]
    failure = leader_failure(cluster)
    if failure is not None:
        problems.insert(0, failure.reason)
    if report.message:  # the pass's own account; what it already says is not repeated
        problems = [p for p in problems if p not in report.message] + [report.message]

    if report.failed:
        phase = PHASE_FAILED
    elif cluster.failover is not None:
        record = cluster.failover
        phase = in_flight_phase(cluster, record)
        why = f" ({record.reason})" if record.reason else ""
        problems.insert(0, f"{record.kind} at epoch {record.epoch}{why}: {record.phase}")
    elif report.blocked is not None:
        phase = PHASE_FAILING_OVER
    elif cluster.leader is None:
        phase = PHASE_CREATING
        problems = problems or ["electing a leader"]
    elif failure is not None:
        phase = PHASE_DEGRADED
    elif cluster.switchover_to:
        phase = PHASE_SWITCHING
        problems = problems or [f"switchover requested to {cluster.switchover_to}"]
    elif not problems:
        phase = PHASE_HEALTHY
    elif stale or cluster.revision_pending:
        phase = PHASE_UPGRADING
    elif extra or (
        cluster.healthy_replicas is not None and cluster.healthy_replicas != cluster.replicas
    ):
        phase = PHASE_SCALING
        before = cluster.healthy_replicas or len(cluster.members)
        problems.insert(0, f"scaling {before} -> {cluster.replicas} members")
    elif _never_healthy(cluster):
        phase = PHASE_CREATING
    else:
        phase = PHASE_DEGRADED
    message = "" if phase == PHASE_HEALTHY else "; ".join(dict.fromkeys(problems))

    in_range = [m for m in cluster.members if m.ordinal < cluster.replicas]
    if phase == PHASE_HEALTHY:
        ready = Condition(
            "Ready",
            True,
            "ClusterIsHealthy",
            f"{len(in_range)}/{cluster.replicas} members follow {cluster.leader} at epoch"
            f" {cluster.epoch} within {max_lag_seq} records",
        )
    else:
        ready = Condition("Ready", False, phase, message or phase)
    if report.blocked is not None:
        progressing = Condition("Progressing", False, "FailoverBlocked", report.blocked)
    elif phase in MOVING:
        progressing = Condition("Progressing", True, phase, message)
    else:
        progressing = Condition("Progressing", False, phase, message or "no change in flight")
    elected = Condition(
        "LeaderElected",
        leader is not None,
        "LeaderServing" if leader is not None else "NoLeader",
        f"{cluster.leader} leads at epoch {cluster.epoch}"
        if leader is not None
        else "no member serves as leader",
    )
    conditions = (ready, progressing, elected, _replicating(cluster, leader, max_lag_seq))
    return Health(phase, message, conditions)


def render_conditions(
    conditions: Sequence[Condition], previous: Sequence[Mapping[str, Any]], now: str
) -> list[dict[str, Any]]:
    before = {str(p.get("type")): p for p in previous}
    rendered = []
    for cond in conditions:
        status = "True" if cond.status else "False"
        prior = before.get(cond.type)
        keep = prior.get("lastTransitionTime") if prior and prior.get("status") == status else None
        rendered.append(
            {
                "type": cond.type,
                "status": status,
                "reason": cond.reason,
                "message": cond.message,
                "lastTransitionTime": keep or now,
            }
        )
    return rendered


def compute_status(
    cluster: ClusterObservation,
    *,
    generation: int | None,
    previous_conditions: Sequence[Mapping[str, Any]] = (),
    now: str,
    report: PassReport | None = None,
    max_lag_seq: int = DEFAULT_MAX_LAG_SEQ,
) -> dict[str, Any]:
    """The status patch for this pass (merge-patched onto the status subresource).

    While the leader serves, its pod's uid and restart count are kept as `leaderPod`: the
    baseline against which a restart is a certain death signal. A Healthy pass records the
    group's size as `healthyReplicas`.
    """
    report = report or PassReport()
    leader = serving_leader(cluster)
    health = derive_health(cluster, report, max_lag_seq=max_lag_seq)
    selector = {c.LABEL_NAME: c.APP_NAME, c.LABEL_CLUSTER: cluster.name}
    expected = [m for m in cluster.members if m.ordinal < cluster.replicas]
    patch: dict[str, Any] = {
        "phase": health.phase,
        "readyMembers": f"{sum(1 for m in expected if m.pod_ready)}/{cluster.replicas}",
        "replicas": len(cluster.members),
        "selector": ",".join(f"{k}={v}" for k, v in sorted(selector.items())),
        "members": [
            member_entry(m, leader, cluster.recorded_seqs)
            for m in sorted(cluster.members, key=_ordinal)
        ],
        "conditions": render_conditions(health.conditions, previous_conditions, now),
        "message": health.message,
    }
    if health.phase == PHASE_HEALTHY:
        patch["healthyReplicas"] = cluster.replicas
    if leader is not None and cluster.failover is None:
        patch["leaderPod"] = {
            "name": leader.name,
            "uid": leader.pod_uid,
            "restarts": leader.restarts,
        }
    if generation is not None:
        patch["observedGeneration"] = generation
    return patch


def _ordinal(member: MemberObservation) -> int:
    return member.ordinal


def desired_role_labels(cluster: ClusterObservation) -> dict[str, str | None]:
    """The `dvecdb.io/role` label each pod should carry (None removes it): the one place
    labels are decided, applied at the end of every pass.

    Only the recorded leader is labelled `leader`, and only while it serves at the recorded
    epoch or merely does not answer the operator: a leader cut off from the operator alone
    still takes writes from its followers' acks until a failover fences them, so unlabelling
    it at the first missed answer would cost writers the whole detection window (its pod's
    readiness takes a dead or hung leader out of the Service anyway). The label goes once
    its pod is known dead, it answers in another role or epoch, or a change replaces it.
    Unreachable members keep their label unless it is `leader`.
    """
    leader = serving_leader(cluster)
    keep = kept_leader(cluster)
    labels: dict[str, str | None] = {}
    for m in cluster.members:
        if leader is not None and m.name == leader.name:
            want: str | None = c.ROLE_LEADER
        elif keep is not None and m.name == keep.name:
            continue  # unanswered: its label stays as it is
        elif m.reachable and m.role in (c.ROLE_FOLLOWER, c.ROLE_STANDBY):
            want = m.role
        elif m.reachable or m.role_label == c.ROLE_LEADER:
            want = c.ROLE_STANDBY if m.reachable else None
        else:
            continue
        if want != m.role_label:
            labels[m.name] = want
    return labels
