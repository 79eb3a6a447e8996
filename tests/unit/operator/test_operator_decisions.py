"""The monitor's decision per pass: bootstrap, adopt, failover timing, repairs, operations."""

from __future__ import annotations

import pytest
from dvecdb_operator.decisions import (
    Adopt,
    Bootstrap,
    Failover,
    Policy,
    Steady,
    Wait,
    decide,
    effective_replicas,
    needs_follow,
)
from dvecdb_operator.observation import ClusterObservation, MemberObservation
from dvecdb_operator.upgrade import RestartPod, SwitchoverTo, next_upgrade_step, outdated

pytestmark = pytest.mark.unit

LEADER_URL = "http://10.0.0.1:8080"


def m(
    ordinal: int,
    role: str | None = "follower",
    *,
    last: int = 0,
    epoch: int = 1,
    up: bool = True,
    leader_url: str | None = LEADER_URL,
    ready: bool = True,
    revision: str | None = "new",
) -> MemberObservation:
    return MemberObservation(
        name=f"db-{ordinal}",
        ordinal=ordinal,
        pod_ip=f"10.0.0.{ordinal + 1}",
        pod_ready=ready and up,
        reachable=up,
        role=role if up else None,
        epoch=epoch,
        last_seq=last,
        applied_seq=last,
        leader_url=leader_url if role == "follower" else None,
        revision=revision,
    )


def healthy(replicas: int = 3, epoch: int = 1) -> list[MemberObservation]:
    return [m(0, "leader", epoch=epoch, last=10)] + [
        m(i, epoch=epoch, last=10) for i in range(1, replicas)
    ]


def obs(
    members: list[MemberObservation],
    *,
    leader: str | None = "db-0",
    epoch: int = 1,
    replicas: int = 3,
    revision: str | None = "new",
) -> ClusterObservation:
    return ClusterObservation(
        name="db",
        namespace="ns",
        replicas=replicas,
        epoch=epoch,
        leader=leader,
        members=tuple(members),
        update_revision=revision,
    )


POLICY = Policy(failover_enabled=True, detection_seconds=10)


def test_fresh_cluster_bootstraps_ordinal_zero_at_epoch_one() -> None:
    members = [m(i, "standby", epoch=0) for i in range(3)]
    decision = decide(obs(members, leader=None, epoch=0), policy=POLICY, unhealthy_for=None)
    assert decision == Bootstrap("db-0", 1)


def test_bootstrap_waits_for_ordinal_zero() -> None:
    members = [m(0, up=False), m(1, "standby", epoch=0), m(2, "standby", epoch=0)]
    decision = decide(obs(members, leader=None, epoch=0), policy=POLICY, unhealthy_for=None)
    assert isinstance(decision, Wait) and "db-0" in decision.reason


def test_lost_status_adopts_the_existing_leader_instead_of_electing() -> None:
    members = [m(0, epoch=3), m(1, "leader", epoch=3), m(2, epoch=3)]
    decision = decide(obs(members, leader=None, epoch=0), policy=POLICY, unhealthy_for=None)
    assert decision == Adopt("db-1", 3)


def test_healthy_cluster_is_steady_with_nothing_to_do() -> None:
    assert decide(obs(healthy()), policy=POLICY, unhealthy_for=None) == Steady()


def test_restarted_member_in_standby_is_told_to_follow_again() -> None:
    members = healthy()
    members[2] = m(2, "standby", epoch=1)
    decision = decide(obs(members), policy=POLICY, unhealthy_for=None)
    assert isinstance(decision, Steady) and decision.follow == ("db-2",)


@pytest.mark.parametrize(
    ("member", "expected"),
    [
        (m(1), False),
        (m(1, "standby"), True),
        (m(1, epoch=0), True),
        (m(1, leader_url="http://10.0.0.9:8080"), True),
        (m(1, "leader", epoch=0), True),
        (m(1, up=False), False),
        (m(0, "leader"), False),
    ],
)
def test_needs_follow(member: MemberObservation, expected: bool) -> None:
    assert needs_follow(member, m(0, "leader"), 1) is expected


def test_failed_leader_waits_for_detection_window() -> None:
    members = healthy()
    members[0] = m(0, up=False)
    decision = decide(obs(members), policy=POLICY, unhealthy_for=4.0)
    assert isinstance(decision, Wait) and not decision.failed


def test_failed_leader_fails_over_after_detection_window() -> None:
    members = [m(0, up=False), m(1, last=5), m(2, last=9)]
    decision = decide(obs(members, epoch=2), policy=POLICY, unhealthy_for=10.0)
    assert isinstance(decision, Failover)
    assert decision.plan.candidate == "db-2" and decision.plan.new_epoch == 3


def test_failover_disabled_reports_failure_instead() -> None:
    members = [m(0, up=False), m(1), m(2)]
    policy = Policy(failover_enabled=False, detection_seconds=10)
    decision = decide(obs(members), policy=policy, unhealthy_for=60.0)
    assert isinstance(decision, Wait) and decision.failed


def test_no_candidate_reports_failure() -> None:
    members = [m(0, up=False), m(1, up=False), m(2, up=False)]
    decision = decide(obs(members), policy=POLICY, unhealthy_for=60.0)
    assert isinstance(decision, Wait) and decision.failed and "no reachable" in decision.reason


def test_switchover_request_to_a_follower() -> None:
    decision = decide(obs(healthy()), policy=POLICY, unhealthy_for=None, switchover_target="db-2")
    assert isinstance(decision, Steady)
    assert decision.operation == SwitchoverTo("db-2", "switchover requested to db-2")


@pytest.mark.parametrize("target", ["db-7", "nobody"])
def test_switchover_to_a_non_member_is_refused_with_a_note(target: str) -> None:
    decision = decide(obs(healthy()), policy=POLICY, unhealthy_for=None, switchover_target=target)
    assert isinstance(decision, Steady) and decision.operation is None and decision.notes


def test_switchover_to_an_unreachable_member_is_refused() -> None:
    members = healthy()
    members[1] = m(1, up=False)
    decision = decide(obs(members), policy=POLICY, unhealthy_for=None, switchover_target="db-1")
    assert isinstance(decision, Steady) and decision.operation is None
    assert "not a reachable follower" in decision.notes[0]


def test_switchover_to_current_leader_is_a_no_op() -> None:
    decision = decide(obs(healthy()), policy=POLICY, unhealthy_for=None, switchover_target="db-0")
    assert decision == Steady()


def test_scale_down_below_the_leader_switches_over_first() -> None:
    members = [m(0, last=10), m(1, last=12), m(2, "leader", last=12)]
    for i in (0, 1):
        members[i] = m(i, last=10 + i, leader_url="http://10.0.0.3:8080")
    decision = decide(obs(members, leader="db-2", replicas=2), policy=POLICY, unhealthy_for=None)
    assert isinstance(decision, Steady)
    assert isinstance(decision.operation, SwitchoverTo) and decision.operation.target == "db-1"


@pytest.mark.parametrize(
    ("replicas", "leader_ordinal", "expected"),
    [(3, 0, 3), (3, None, 3), (2, 2, 3), (1, 2, 3), (5, 4, 5)],
)
def test_effective_replicas_never_drops_the_leader(
    replicas: int, leader_ordinal: int | None, expected: int
) -> None:
    assert effective_replicas(replicas, leader_ordinal) == expected


def test_upgrade_restarts_highest_outdated_follower_first() -> None:
    members = [m(0, "leader", revision="old"), m(1, revision="old"), m(2, revision="old")]
    assert next_upgrade_step(obs(members)) == RestartPod(
        "db-2", "restart follower db-2 on the new revision"
    )


def test_upgrade_waits_while_a_member_is_not_ready() -> None:
    members = [m(0, "leader", revision="old"), m(1, revision="old"), m(2, ready=False)]
    assert next_upgrade_step(obs(members)) is None


def test_upgrade_switches_over_before_restarting_the_leader() -> None:
    members = [m(0, "leader", revision="old", last=9), m(1, last=9), m(2, last=8)]
    step = next_upgrade_step(obs(members))
    assert isinstance(step, SwitchoverTo) and step.target == "db-1"
    decision = decide(obs(members), policy=POLICY, unhealthy_for=None)
    assert isinstance(decision, Steady) and decision.operation == step


def test_upgrade_done_when_every_pod_is_current() -> None:
    assert outdated(obs(healthy())) == []
    assert next_upgrade_step(obs(healthy())) is None
    assert next_upgrade_step(obs(healthy(), revision=None)) is None
