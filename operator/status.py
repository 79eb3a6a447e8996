"""Pure status computation: observations in, the `status` patch of the DVecCluster out.

Conditions keep their `lastTransitionTime` while their status does not change, so a watcher
of the object sees a transition only when one happened.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dvecdb_operator import constants as c
from dvecdb_operator.decisions import needs_follow
from dvecdb_operator.failover import leader_healthy
from dvecdb_operator.observation import ClusterObservation, MemberObservation

PHASE_CREATING = "Creating"
PHASE_HEALTHY = "Healthy"
PHASE_DEGRADED = "Degraded"
PHASE_FAILING_OVER = "FailingOver"
PHASE_FAILED = "Failed"


@dataclass(frozen=True)
class Condition:
    type: str
    status: bool
    reason: str
    message: str


def member_entry(member: MemberObservation, leader: MemberObservation | None) -> dict[str, Any]:
    """One `status.members` item; `lag_seq` is the leader's last_seq minus what this applied."""
    role = member.role if member.reachable and member.role else "unreachable"
    entry: dict[str, Any] = {
        "name": member.name,
        "role": role,
        "ready": member.pod_ready,
        "last_seq": member.last_seq,
        "applied_seq": member.applied_seq,
    }
    if member.reachable and leader is not None and leader.reachable:
        entry["lag_seq"] = 0 if member is leader else max(0, leader.last_seq - member.applied_seq)
    return entry


def conditions_for(cluster: ClusterObservation) -> list[Condition]:
    leader = cluster.member(cluster.leader)
    expected = [m for m in cluster.members if m.ordinal < cluster.replicas]
    ready = [m for m in expected if m.pod_ready]
    all_ready = len(ready) == cluster.replicas
    has_leader = leader_healthy(leader, cluster.epoch)
    conditions = [
        Condition(
            "Ready",
            all_ready,
            "AllMembersReady" if all_ready else "MembersNotReady",
            f"{len(ready)}/{cluster.replicas} members ready",
        ),
        Condition(
            "LeaderElected",
            has_leader,
            "LeaderServing" if has_leader else "NoLeader",
            f"{cluster.leader} leads at epoch {cluster.epoch}"
            if has_leader
            else "no member serves as leader",
        ),
    ]
    if has_leader and leader is not None:
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
    return conditions


def phase_for(
    cluster: ClusterObservation,
    conditions: Sequence[Condition],
    *,
    failing_over: bool,
    failed: bool,
) -> str:
    if failing_over:
        return PHASE_FAILING_OVER
    if failed:
        return PHASE_FAILED
    if cluster.leader is None:
        return PHASE_CREATING
    if all(cond.status for cond in conditions):
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
    failing_over: bool = False,
    failed: bool = False,
    message: str | None = None,
) -> dict[str, Any]:
    """The status patch for this pass (merge-patched onto the status subresource)."""
    leader = cluster.member(cluster.leader)
    conditions = conditions_for(cluster)
    selector = {c.LABEL_NAME: c.APP_NAME, c.LABEL_CLUSTER: cluster.name}
    expected = [m for m in cluster.members if m.ordinal < cluster.replicas]
    patch: dict[str, Any] = {
        "phase": phase_for(cluster, conditions, failing_over=failing_over, failed=failed),
        "leader": cluster.leader,
        "epoch": cluster.epoch,
        "readyMembers": f"{sum(1 for m in expected if m.pod_ready)}/{cluster.replicas}",
        "replicas": len(cluster.members),
        "selector": ",".join(f"{k}={v}" for k, v in sorted(selector.items())),
        "members": [member_entry(m, leader) for m in sorted(cluster.members, key=_ordinal)],
        "conditions": render_conditions(conditions, previous_conditions, now),
        "message": message or "",
    }
    if generation is not None:
        patch["observedGeneration"] = generation
    return patch


def _ordinal(member: MemberObservation) -> int:
    return member.ordinal


def desired_role_labels(
    cluster: ClusterObservation,
) -> dict[str, str | None]:
    """The `dvecdb.io/role` label each pod should carry; None removes it.

    Only the healthy recorded leader is labelled `leader`, so the read-write Service never
    routes to a member that cannot take writes. Unreachable members keep their label unless
    it is `leader` (their readiness already takes them out of the Services).
    """
    leader = cluster.member(cluster.leader)
    healthy = leader if leader_healthy(leader, cluster.epoch) else None
    labels: dict[str, str | None] = {}
    for m in cluster.members:
        if healthy is not None and m.name == healthy.name:
            want: str | None = c.ROLE_LEADER
        elif m.reachable and m.role in (c.ROLE_FOLLOWER, c.ROLE_STANDBY):
            want = m.role
        elif m.reachable or m.role_label == c.ROLE_LEADER:
            want = c.ROLE_STANDBY if m.reachable else None
        else:
            continue
        if want != m.role_label:
            labels[m.name] = want
    return labels
