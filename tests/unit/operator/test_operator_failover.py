"""Candidate choice and failover planning: table tests over members' positions."""

from __future__ import annotations

import pytest
from dvecdb_operator.failover import (
    choose_candidate,
    failover_due,
    failure_reason,
    leader_healthy,
    order_candidates,
    plan_failover,
)
from dvecdb_operator.observation import ClusterObservation, MemberObservation

pytestmark = pytest.mark.unit


def m(
    ordinal: int,
    role: str | None = "follower",
    last: int = 0,
    applied: int | None = None,
    *,
    up: bool = True,
    epoch: int = 1,
) -> MemberObservation:
    return MemberObservation(
        name=f"db-{ordinal}",
        ordinal=ordinal,
        pod_ip=f"10.0.0.{ordinal + 1}",
        pod_ready=up,
        reachable=up,
        role=role if up else None,
        epoch=epoch,
        last_seq=last,
        applied_seq=last if applied is None else applied,
    )


@pytest.mark.parametrize(
    ("members", "expected"),
    [
        pytest.param([m(1, last=10), m(2, last=12)], "db-2", id="most-received-wins"),
        pytest.param(
            [m(1, last=12, applied=8), m(2, last=12, applied=11)], "db-2", id="tie-applied-decides"
        ),
        pytest.param([m(2, last=12), m(1, last=12)], "db-1", id="full-tie-lowest-ordinal"),
        pytest.param([m(1, last=99, up=False), m(2, last=5)], "db-2", id="unreachable-skipped"),
        pytest.param([m(1, last=3), m(2, last=40), m(3, last=41)], "db-3", id="lagging-loses"),
        pytest.param([m(1, up=False), m(2, up=False)], None, id="all-followers-down"),
        pytest.param([m(1, role="standby", last=7), m(2, last=6)], "db-1", id="standby-counts"),
        pytest.param([m(1, role="leader", last=50), m(2, last=6)], "db-2", id="leaders-excluded"),
        pytest.param([], None, id="no-members"),
    ],
)
def test_choose_candidate(members: list[MemberObservation], expected: str | None) -> None:
    chosen = choose_candidate(members)
    assert (chosen.name if chosen else None) == expected


def test_order_candidates_excludes_named_member_and_out_of_range_ordinals() -> None:
    members = [m(0, role="standby", last=100), m(1, last=10), m(2, last=20), m(3, last=30)]
    ordered = order_candidates(members, exclude="db-0", max_ordinal=3)
    assert [x.name for x in ordered] == ["db-2", "db-1"]


@pytest.mark.parametrize(
    ("leader", "epoch", "healthy", "reason"),
    [
        (m(0, role="leader", epoch=3), 3, True, ""),
        (m(0, role="leader", epoch=4), 3, True, ""),
        (m(0, role="leader", epoch=2), 3, False, "epoch 2 below 3"),
        (m(0, role="standby", epoch=3), 3, False, "role standby"),
        (m(0, up=False), 3, False, "unreachable"),
        (None, 3, False, "missing"),
    ],
)
def test_leader_health(
    leader: MemberObservation | None, epoch: int, healthy: bool, reason: str
) -> None:
    assert leader_healthy(leader, epoch) is healthy
    if not healthy:
        assert reason in failure_reason(leader, epoch)


@pytest.mark.parametrize(
    ("unhealthy_for", "window", "due"),
    [(None, 10, False), (0.0, 10, False), (9.9, 10, False), (10.0, 10, True), (30, 10, True)],
)
def test_failover_due_after_detection_window(
    unhealthy_for: float | None, window: float, due: bool
) -> None:
    assert failover_due(unhealthy_for, window) is due


def cluster(
    *members: MemberObservation, leader: str = "db-0", epoch: int = 1
) -> ClusterObservation:
    return ClusterObservation(
        name="db", namespace="ns", replicas=3, epoch=epoch, leader=leader, members=members
    )


def test_plan_failover_dead_leader_promotes_most_advanced_and_repoints_rest() -> None:
    plan = plan_failover(
        cluster(m(0, up=False), m(1, last=10), m(2, last=12), epoch=4),
        reason="leader unreachable",
        last_leader_seq=13,
    )
    assert plan is not None
    assert (plan.candidate, plan.epoch, plan.new_epoch) == ("db-2", 4, 5)
    assert plan.fence_old is False
    assert plan.repoint == ("db-0", "db-1")
    assert (plan.from_seq, plan.to_seq) == (13, 12)


def test_plan_failover_fences_a_reachable_old_leader() -> None:
    plan = plan_failover(
        cluster(m(0, role="standby", last=20), m(1, last=10), m(2, last=12)),
        reason="leader reports role standby",
    )
    assert plan is not None
    assert plan.candidate == "db-2"
    assert plan.fence_old is True
    assert plan.from_seq == 20


def test_plan_failover_new_epoch_exceeds_every_epoch_seen() -> None:
    plan = plan_failover(
        cluster(m(0, up=False), m(1, last=1, epoch=7), m(2, last=1, epoch=2), epoch=2),
        reason="x",
    )
    assert plan is not None and plan.new_epoch == 8


def test_plan_failover_old_leader_is_last_resort() -> None:
    plan = plan_failover(
        cluster(m(0, role="standby", last=20), m(1, up=False), m(2, up=False)), reason="restart"
    )
    assert plan is not None
    assert plan.candidate == "db-0"
    assert plan.fence_old is False


def test_plan_failover_none_when_nobody_answers() -> None:
    assert (
        plan_failover(cluster(m(0, up=False), m(1, up=False), m(2, up=False)), reason="x") is None
    )
