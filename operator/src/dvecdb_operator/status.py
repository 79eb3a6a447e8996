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
    kind_phase,
    leader_failure,
    needs_follow,
)
from dvecdb_operator.observation import ClusterObservation, MemberObservation

PHASE_HEALTHY = "Healthy"


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
    """One `status.members` item; `lag_seq` is the leader's last_seq minus what this applied.

    An unreachable member keeps the `last_seq` last recorded for it: a failed leader's last
    known position is what `lastFailover.fromSeq` reports.
    """
    role = member.role if member.reachable and member.role else "unreachable"
    last_seq = member.last_seq if member.reachable else (recorded or {}).get(member.name, 0)
    entry: dict[str, Any] = {
        "name": member.name,
        "role": role,
        "ready": member.pod_ready,
        "last_seq": last_seq,
        "applied_seq": member.applied_seq,
    }
    if member.reachable and leader is not None and leader.reachable:
        entry["lag_seq"] = 0 if member is leader else max(0, leader.last_seq - member.applied_seq)
    return entry


def conditions_for(cluster: ClusterObservation, report: PassReport) -> list[Condition]:
    leader = serving_leader(cluster)
    expected = [m for m in cluster.members if m.ordinal < cluster.replicas]
    ready = [m for m in expected if m.pod_ready]
    all_ready = len(ready) == cluster.replicas
    conditions = [
        Condition(
            "Ready",
            all_ready,
            "AllMembersReady" if all_ready else "MembersNotReady",
            f"{len(ready)}/{cluster.replicas} members ready",
        ),
        Condition(
            "LeaderElected",
            leader is not None,
            "LeaderServing" if leader is not None else "NoLeader",
            f"{cluster.leader} leads at epoch {cluster.epoch}"
            if leader is not None
            else "no member serves as leader",
        ),
    ]
    if leader is not None:
        stray = [
            m.name
            for m in expected
            if m.name != leader.name and (not m.reachable or needs_follow(m, leader, cluster.epoch))
        ]
        conditions.append(
            Condition(
                "Replicating",
                not stray,
                "AllFollowersStreaming" if not stray else "FollowersNotStreaming",
                "every follower streams from the leader"
                if not stray
                else f"not following the leader: {', '.join(sorted(stray))}",
            )
        )
    else:
        conditions.append(Condition("Replicating", False, "NoLeader", "no leader to stream from"))
    record = cluster.failover
    if report.blocked is not None:
        progressing = Condition("Progressing", False, "FailoverBlocked", report.blocked)
    elif record is not None:
        progressing = Condition(
            "Progressing",
            True,
            kind_phase(record.kind),
            f"{record.kind} at epoch {record.epoch}: {record.phase}",
        )
    else:
        progressing = Condition("Progressing", False, "Stable", "no leadership change in flight")
    conditions.append(progressing)
    return conditions


def phase_for(
    cluster: ClusterObservation, conditions: Sequence[Condition], report: PassReport
) -> str:
    if cluster.failover is not None:
        return kind_phase(cluster.failover.kind)
    if report.failed:
        return PHASE_FAILED
    if cluster.leader is None:
        return PHASE_CREATING
    if all(cond.status for cond in conditions if cond.type != "Progressing"):
        return PHASE_HEALTHY
    return PHASE_DEGRADED


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
) -> dict[str, Any]:
    """The status patch for this pass (merge-patched onto the status subresource).

    While the leader serves, its pod's uid and restart count are kept as `leaderPod`: the
    baseline against which a restart is a certain death signal.
    """
    report = report or PassReport()
    leader = serving_leader(cluster)
    conditions = conditions_for(cluster, report)
    selector = {c.LABEL_NAME: c.APP_NAME, c.LABEL_CLUSTER: cluster.name}
    expected = [m for m in cluster.members if m.ordinal < cluster.replicas]
    patch: dict[str, Any] = {
        "phase": phase_for(cluster, conditions, report),
        "readyMembers": f"{sum(1 for m in expected if m.pod_ready)}/{cluster.replicas}",
        "replicas": len(cluster.members),
        "selector": ",".join(f"{k}={v}" for k, v in sorted(selector.items())),
        "members": [
            member_entry(m, leader, cluster.recorded_seqs)
            for m in sorted(cluster.members, key=_ordinal)
        ],
        "conditions": render_conditions(conditions, previous_conditions, now),
        "message": report.message or "",
    }
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
