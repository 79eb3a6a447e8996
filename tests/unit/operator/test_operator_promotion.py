"""A failed promote: backoff, which epoch the retry uses, and which member it goes to.

The rule pinned here: an epoch is reused only for the member it was handed to, while it is
the recorded epoch and that member can still take it; anything else gets a fresh epoch above
every one seen, so two members are never promoted at the same epoch.
"""

from __future__ import annotations

import pytest
from dvecdb_operator.decisions import Bootstrap, Failover, Policy, Wait, decide
from dvecdb_operator.failover import plan_failover
from dvecdb_operator.observation import ClusterObservation, MemberObservation
from dvecdb_operator.promotion import (
    PendingPromotion,
    current,
    next_epoch,
    promote_epoch,
    promoted_member,
    record_failure,
    retry_delay,
    retry_message,
)

pytestmark = pytest.mark.unit

POLICY = Policy(failover_enabled=True, detection_seconds=10)


def m(
    ordinal: int,
    role: str | None = "follower",
    *,
    last: int = 10,
    epoch: int = 1,
    up: bool = True,
) -> MemberObservation:
    return MemberObservation(
        name=f"db-{ordinal}",
        ordinal=ordinal,
        pod_ip=f"10.0.0.{ordinal + 1}",
        pod_ready=up,
        reachable=up,
        role=role if up else None,
        epoch=epoch if up else 0,
        last_seq=last,
        applied_seq=last,
    )


def obs(
    members: list[MemberObservation], *, leader: str | None = "db-0", epoch: int = 2
) -> ClusterObservation:
    return ClusterObservation(
        name="db", namespace="ns", replicas=3, epoch=epoch, leader=leader, members=tuple(members)
    )


def pending(
    candidate: str = "db-2",
    epoch: int = 2,
    *,
    attempts: int = 1,
    refused: bool = False,
    retry_at: float = 0.0,
) -> PendingPromotion:
    return PendingPromotion(
        candidate, epoch, attempts, "0 unreachable: TimeoutError", refused, 2.0, retry_at
    )


# The failover to db-2 at epoch 2 was started: the status says epoch 2, db-0 is dead.
DEAD_LEADER = m(0, "leader", up=False)


@pytest.mark.parametrize(
    ("attempts", "expected"),
    [(1, 2.0), (2, 4.0), (3, 8.0), (4, 16.0), (5, 30.0), (60, 30.0), (0, 2.0)],
)
def test_retry_delay_doubles_up_to_the_cap(attempts: int, expected: float) -> None:
    assert retry_delay(attempts, first=2.0, cap=30.0) == expected


def test_record_failure_counts_attempts_per_member() -> None:
    first = record_failure(
        None, candidate="db-2", epoch=2, error="timeout", refused=False, now=100, first=2, cap=30
    )
    assert (first.attempts, first.delay, first.retry_at) == (1, 2, 102)
    second = record_failure(
        first, candidate="db-2", epoch=2, error="timeout", refused=False, now=103, first=2, cap=30
    )
    assert (second.attempts, second.delay, second.retry_at) == (2, 4, 107)
    refused = record_failure(
        second, candidate="db-2", epoch=3, error="refused", refused=True, now=110, first=2, cap=30
    )
    assert (refused.attempts, refused.epoch, refused.refused, refused.delay) == (3, 3, True, 8)
    other = record_failure(
        refused, candidate="db-1", epoch=4, error="timeout", refused=False, now=120, first=2, cap=30
    )
    assert (other.attempts, other.candidate, other.refused) == (1, "db-1", False)


def test_a_pending_promotion_of_an_older_epoch_is_moot() -> None:
    cluster = obs([DEAD_LEADER, m(1), m(2)], epoch=3)
    assert current(cluster, pending(epoch=2)) is None
    assert current(cluster, pending(epoch=3)) == pending(epoch=3)
    assert current(cluster, None) is None


@pytest.mark.parametrize(
    ("candidate", "tried", "expected"),
    [
        pytest.param(m(2, epoch=1), pending(), 2, id="never-took-it-reuse"),
        pytest.param(m(2, "standby", epoch=1), pending(), 2, id="standby-below-reuse"),
        pytest.param(m(2, "leader", epoch=2), None, 2, id="already-leads-at-it-reuse"),
        pytest.param(m(2, epoch=2), pending(), 3, id="holds-it-without-leading-new"),
        pytest.param(m(2, epoch=1), pending(refused=True), 3, id="refused-new"),
        pytest.param(m(1, epoch=1), pending(), 3, id="another-member-new"),
        pytest.param(m(2, epoch=1), None, 3, id="nothing-pending-new"),
        pytest.param(m(2, epoch=1), pending(epoch=1), 3, id="older-pending-new"),
    ],
)
def test_promote_epoch(
    candidate: MemberObservation, tried: PendingPromotion | None, expected: int
) -> None:
    others = [m(i) for i in (1, 2) if i != candidate.ordinal]
    cluster = obs([DEAD_LEADER, candidate, *others])
    assert promote_epoch(cluster, candidate, tried) == expected


def test_a_fresh_epoch_is_above_every_epoch_seen() -> None:
    cluster = obs([DEAD_LEADER, m(1, epoch=7), m(2)], epoch=2)
    assert next_epoch(cluster) == 8
    assert promote_epoch(cluster, m(2), pending(refused=True)) == 8


def test_promoted_member_is_one_leading_at_the_recorded_epoch() -> None:
    assert promoted_member(obs([DEAD_LEADER, m(1), m(2, "leader", epoch=2)])) == m(
        2, "leader", epoch=2
    )
    # Leading at an older epoch is a stale leader, not the one this epoch was handed to.
    assert promoted_member(obs([DEAD_LEADER, m(1), m(2, "leader", epoch=1)])) is None
    assert promoted_member(obs([m(0, "leader", epoch=2), m(1)], epoch=2)) is None  # recorded
    assert promoted_member(obs([m(0, "leader", epoch=1)], leader=None, epoch=1)) is None


def test_retry_reuses_the_epoch_for_the_same_member() -> None:
    cluster = obs([DEAD_LEADER, m(1, last=9), m(2, last=10)])
    plan = plan_failover(cluster, reason="leader unreachable", pending=pending(attempts=2))
    assert plan is not None
    assert (plan.candidate, plan.new_epoch, plan.retry, plan.attempt) == ("db-2", 2, True, 3)
    assert not plan.fence_old  # the dead leader does not answer


def test_retry_keeps_the_tried_member_while_it_holds_as_much_log() -> None:
    # db-1 ties db-2 and has the lower ordinal, but switching member would cost an epoch.
    cluster = obs([DEAD_LEADER, m(1, last=10), m(2, last=10)])
    plan = plan_failover(cluster, reason="r", pending=pending())
    assert plan is not None and (plan.candidate, plan.new_epoch) == ("db-2", 2)


def test_a_more_advanced_member_wins_over_the_tried_one_at_a_fresh_epoch() -> None:
    cluster = obs([DEAD_LEADER, m(1, last=12), m(2, last=10)])
    plan = plan_failover(cluster, reason="r", pending=pending())
    assert plan is not None and (plan.candidate, plan.new_epoch, plan.retry) == ("db-1", 3, False)


def test_an_unreachable_tried_member_is_replaced_at_a_fresh_epoch() -> None:
    # It may have taken epoch 2 before going silent: nobody else may be promoted at 2.
    cluster = obs([DEAD_LEADER, m(1), m(2, up=False)])
    plan = plan_failover(cluster, reason="r", pending=pending())
    assert plan is not None and (plan.candidate, plan.new_epoch) == ("db-1", 3)


def test_a_promote_that_landed_is_finished_at_its_epoch() -> None:
    cluster = obs([m(0, "standby", epoch=1), m(1, last=9), m(2, "leader", epoch=2, last=11)])
    plan = plan_failover(cluster, reason="leader reports role standby")
    assert plan is not None
    assert (plan.candidate, plan.new_epoch, plan.retry, plan.fence_old) == ("db-2", 2, True, True)
    assert plan.repoint == ("db-0", "db-1")


def test_decide_waits_out_the_backoff_then_retries_at_the_same_epoch() -> None:
    cluster = obs([DEAD_LEADER, m(1), m(2)])
    tried = pending(retry_at=50.0)
    waiting = decide(cluster, policy=POLICY, unhealthy_for=0.0, pending=tried, now=49.0)
    assert isinstance(waiting, Wait) and waiting.failing_over and not waiting.failed
    assert waiting.reason == retry_message(tried)
    assert "attempt 2 at epoch 2 after a 2s backoff" in waiting.reason
    # The failover is under way: no new detection window, whatever the timer says.
    retry = decide(cluster, policy=POLICY, unhealthy_for=0.0, pending=tried, now=50.0)
    assert isinstance(retry, Failover)
    assert (retry.plan.candidate, retry.plan.new_epoch) == ("db-2", 2)


def test_decide_finishes_a_landed_promote_without_waiting() -> None:
    cluster = obs([DEAD_LEADER, m(1), m(2, "leader", epoch=2)])
    decision = decide(cluster, policy=POLICY, unhealthy_for=0.0, pending=None, now=0.0)
    assert isinstance(decision, Failover)
    assert (decision.plan.candidate, decision.plan.new_epoch) == ("db-2", 2)


def test_decide_without_a_pending_promotion_still_waits_for_detection() -> None:
    cluster = obs([DEAD_LEADER, m(1), m(2)])
    decision = decide(cluster, policy=POLICY, unhealthy_for=1.0, pending=None, now=0.0)
    assert isinstance(decision, Wait) and "failover after 10s" in decision.reason


def test_bootstrap_retries_at_the_same_epoch_after_backoff() -> None:
    members = [m(0, "standby", epoch=0), m(1, "standby", epoch=0), m(2, "standby", epoch=0)]
    cluster = obs(members, leader=None, epoch=1)
    tried = pending("db-0", 1, retry_at=10.0)
    waiting = decide(cluster, policy=POLICY, unhealthy_for=None, pending=tried, now=5.0)
    assert isinstance(waiting, Wait) and waiting.reason.startswith("bootstrap: promoting db-0")
    again = decide(cluster, policy=POLICY, unhealthy_for=None, pending=tried, now=10.0)
    assert again == Bootstrap("db-0", 1)
    refused = decide(
        cluster,
        policy=POLICY,
        unhealthy_for=None,
        pending=pending("db-0", 1, refused=True, retry_at=10.0),
        now=10.0,
    )
    assert refused == Bootstrap("db-0", 2)
