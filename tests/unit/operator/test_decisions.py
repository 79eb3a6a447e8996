"""The pure decision of a pass, on literal observations: detection, epoch first, fence then
choose among a fenced majority (or all but the old leader), resume from each persisted phase,
forced promotion, bootstrap, adoption, planned switchovers and rolling restarts."""

from __future__ import annotations

from dataclasses import replace

import pytest

from dvecdb_operator import constants as c
from dvecdb_operator.decisions import (
    Adopt,
    Begin,
    Blocked,
    Choose,
    ClearRequest,
    Fence,
    Finish,
    Hold,
    Policy,
    Promote,
    Reepoch,
    Repoint,
    Steady,
    choose_candidate,
    decide,
    effective_replicas,
    fenced_quorum,
    needs_follow,
    rank,
)
from dvecdb_operator.observation import (
    ClusterObservation,
    FailoverRecord,
    LeaderPod,
    MemberObservation,
)
from dvecdb_operator.upgrade import LeaderLast, RestartPod, Waiting, next_upgrade_step, outdated

pytestmark = pytest.mark.unit

LEADER_URL = "http://10.0.0.1:8080"
POLICY = Policy(failover_enabled=True, detection_seconds=10)
LAG = POLICY.max_lag_seq


def m(
    ordinal: int,
    role: str | None = "follower",
    *,
    last: int = 10,
    last_epoch: int = 1,
    applied: int | None = None,
    epoch: int = 1,
    up: bool = True,
    leader_url: str | None = LEADER_URL,
    ready: bool = True,
    revision: str | None = "new",
    uid: str | None = None,
    restarts: int | None = None,
    running: bool | None = None,
    ack_age: float | None = 60.0,
) -> MemberObservation:
    return MemberObservation(
        name=f"db-{ordinal}",
        ordinal=ordinal,
        pod_ip=f"10.0.0.{ordinal + 1}",
        pod_ready=ready and up,
        reachable=up,
        role=role if up else None,
        epoch=epoch,
        last_epoch=last_epoch,
        last_seq=last,
        applied_seq=last if applied is None else applied,
        leader_url=leader_url if role == "follower" else None,
        revision=revision,
        pod_uid=uid,
        restarts=restarts,
        pod_running=running,
        last_ack_seconds=ack_age,
        error=None if up else "connection refused",
    )


def fenced(ordinal: int, epoch: int = 2, **kw: object) -> MemberObservation:
    """A member that answers in standby at `epoch`: fenced by the failover at that epoch."""
    return m(ordinal, "standby", epoch=epoch, **kw)  # type: ignore[arg-type]


def healthy(replicas: int = 3, epoch: int = 1) -> list[MemberObservation]:
    return [m(0, "leader", epoch=epoch)] + [m(i, epoch=epoch) for i in range(1, replicas)]


def obs(
    members: list[MemberObservation],
    *,
    leader: str | None = "db-0",
    epoch: int = 1,
    replicas: int = 3,
    revision: str | None = "new",
    failover: FailoverRecord | None = None,
    leader_pod: LeaderPod | None = None,
    switchover_to: str | None = None,
    force_promote: str | None = None,
) -> ClusterObservation:
    return ClusterObservation(
        name="db",
        namespace="ns",
        replicas=replicas,
        epoch=epoch,
        leader=leader,
        members=tuple(members),
        update_revision=revision,
        failover=failover,
        leader_pod=leader_pod,
        switchover_to=switchover_to,
        force_promote=force_promote,
    )


def record(
    phase: str = "fencing",
    *,
    epoch: int = 2,
    kind: str = "failover",
    from_: str | None = "db-0",
    candidate: str | None = None,
    target: str | None = None,
) -> FailoverRecord:
    return FailoverRecord(
        epoch=epoch,
        kind=kind,  # type: ignore[arg-type]
        phase=phase,  # type: ignore[arg-type]
        from_=from_,
        reason="leader unreachable",
        candidate=candidate,
        target=target,
    )


# --- detection and epoch first ------------------------------------------------------------


def test_a_healthy_cluster_renews_the_leader_lease_and_does_nothing_else() -> None:
    assert decide(obs(healthy()), policy=POLICY) == Steady("db-0")


def test_an_unreachable_leader_waits_out_the_detection_window() -> None:
    members = healthy()
    members[0] = m(0, up=False)
    step = decide(obs(members), policy=POLICY, failed_for=4.0)
    assert isinstance(step, Hold) and "failover after 10s" in step.reason


@pytest.mark.parametrize(
    "leader",
    [
        m(0, up=False),
        m(0, "standby"),  # answers, but not as leader
        m(0, "leader", epoch=0),  # answers as leader, at another epoch
    ],
)
def test_a_failed_leader_begins_a_failover_at_epoch_plus_one_after_detection(
    leader: MemberObservation,
) -> None:
    members = [leader, m(1, last=5), m(2, last=9)]
    step = decide(obs(members), policy=POLICY, failed_for=10.0, now="T")
    assert isinstance(step, Begin)
    assert (step.record.epoch, step.record.kind, step.record.phase) == (2, "failover", "fencing")
    assert (step.record.from_, step.record.candidate, step.record.started) == ("db-0", None, "T")


@pytest.mark.parametrize(
    ("leader", "baseline", "why"),
    [
        (m(0, up=False, restarts=1, uid="u1"), LeaderPod("db-0", "u1", 0), "restarted"),
        (m(0, "standby", uid="u2", restarts=0), LeaderPod("db-0", "u1", 0), "recreated"),
        (m(0, up=False, running=False), None, "not running"),
    ],
)
def test_a_certain_death_of_the_leader_pod_fails_over_at_once(
    leader: MemberObservation, baseline: LeaderPod | None, why: str
) -> None:
    step = decide(obs([leader, m(1), m(2)], leader_pod=baseline), policy=POLICY, failed_for=0.0)
    assert isinstance(step, Begin) and why in step.record.reason


def test_a_missing_leader_pod_fails_over_at_once() -> None:
    step = decide(obs([m(1), m(2)]), policy=POLICY, failed_for=0.0)
    assert isinstance(step, Begin) and "pod missing" in step.record.reason


def test_the_new_epoch_is_above_every_epoch_a_member_reports() -> None:
    members = [m(0, up=False), m(1, epoch=4), m(2)]
    step = decide(obs(members), policy=POLICY, failed_for=11.0)
    assert isinstance(step, Begin) and step.record.epoch == 5


def test_failover_disabled_reports_failure_instead() -> None:
    members = [m(0, up=False), m(1), m(2)]
    policy = Policy(failover_enabled=False, detection_seconds=10)
    step = decide(obs(members), policy=policy, failed_for=60.0)
    assert isinstance(step, Hold) and step.failed


# --- fence, then choose -------------------------------------------------------------------


def test_fencing_targets_every_reachable_member_the_old_leader_first() -> None:
    members = [m(1), m(2), m(0, "leader")]
    step = decide(obs(members, epoch=2, failover=record()), policy=POLICY)
    assert step == Fence(record(), ("db-0", "db-1", "db-2"))


def test_fencing_skips_members_already_fenced_and_unreachable_ones() -> None:
    members = [m(0, up=False), fenced(1), m(2)]
    step = decide(obs(members, epoch=2, failover=record()), policy=POLICY)
    assert step == Fence(record(), ("db-2",))


def test_a_fenced_majority_chooses_the_most_advanced_member() -> None:
    members = [m(0, up=False), fenced(1, last=5), fenced(2, last=9)]
    step = decide(obs(members, epoch=2, failover=record()), policy=POLICY)
    assert isinstance(step, Choose)
    assert (step.record.phase, step.record.candidate, step.record.to_seq) == (
        "promoting",
        "db-2",
        9,
    )
    assert step.record.fenced == ("db-1", "db-2")


def test_an_unfenced_old_leader_keeps_the_promote_waiting_until_its_lease_lapsed() -> None:
    # The operator cannot reach db-0, the followers could until they were fenced: db-0 may
    # serve strong reads until lease_seconds past the latest of their acks.
    policy = Policy(detection_seconds=10, lease_seconds=5)
    members = [m(0, up=False), fenced(1, last=5, ack_age=1.0), fenced(2, last=9, ack_age=3.0)]
    step = decide(obs(members, epoch=2, failover=record()), policy=policy)
    assert isinstance(step, Hold) and "lease of db-0" in step.reason
    assert "in 4.2s" in step.reason  # 5 s (+5% for clock rates) past the ack 1 s ago
    later = [m(0, up=False), fenced(1, last=5, ack_age=5.3), fenced(2, last=9, ack_age=7.3)]
    step = decide(obs(later, epoch=2, failover=record()), policy=policy)
    assert isinstance(step, Choose) and step.record.candidate == "db-2"


def test_a_member_that_does_not_say_when_it_acked_counts_as_just_acked() -> None:
    policy = Policy(detection_seconds=10, lease_seconds=5)
    members = [m(0, up=False), fenced(1, ack_age=None), fenced(2, ack_age=30.0)]
    step = decide(obs(members, epoch=2, failover=record()), policy=policy)
    assert isinstance(step, Hold) and "in 5.2s" in step.reason


def test_no_lease_wait_when_the_old_leader_is_fenced_or_known_dead() -> None:
    policy = Policy(detection_seconds=10, lease_seconds=5)
    members = [fenced(0, ack_age=None), fenced(1, ack_age=0.1), m(2, up=False)]
    step = decide(obs(members, epoch=2, failover=record()), policy=policy)
    assert isinstance(step, Choose)
    dead = [m(0, up=False, running=False), fenced(1, ack_age=0.1), fenced(2, ack_age=0.1)]
    step = decide(obs(dead, epoch=2, failover=record()), policy=policy)
    assert isinstance(step, Choose)
    restarted = [m(0, up=False, uid="u2"), fenced(1, ack_age=0.1), fenced(2, ack_age=0.1)]
    baseline = LeaderPod(name="db-0", uid="u1", restarts=0)
    step = decide(obs(restarted, epoch=2, failover=record(), leader_pod=baseline), policy=policy)
    assert isinstance(step, Choose)


def test_a_two_member_group_fails_over_when_every_member_but_the_leader_is_fenced() -> None:
    members = [m(0, up=False), fenced(1)]
    step = decide(obs(members, epoch=2, replicas=2, failover=record()), policy=POLICY)
    assert isinstance(step, Choose) and step.record.candidate == "db-1"
    assert "every member but the old leader" in step.note


def test_a_minority_is_never_promoted() -> None:
    members = [m(0, up=False), fenced(1, last=50), m(2, up=False)]
    step = decide(obs(members, epoch=2, failover=record()), policy=POLICY)
    assert isinstance(step, Blocked)
    assert step.missing == ("db-2",) and "db-2" in step.reason
    assert step.record.fenced == ("db-1",)


def test_a_minority_of_five_is_not_promoted_even_with_the_old_leader_fenced() -> None:
    members = [fenced(0), fenced(1), m(2, up=False), m(3, up=False), m(4, up=False)]
    cluster = obs(members, epoch=2, replicas=5, failover=record())
    step = decide(cluster, policy=POLICY)
    assert isinstance(step, Blocked) and step.missing == ("db-2", "db-3", "db-4")


def test_a_member_without_a_pod_counts_against_the_majority() -> None:
    members = [m(0, up=False), fenced(1)]  # db-2 has no pod at all
    step = decide(obs(members, epoch=2, failover=record()), policy=POLICY)
    assert isinstance(step, Blocked) and step.missing == ("db-2",)


def test_the_old_leader_counts_in_a_majority_and_may_be_chosen() -> None:
    members = [fenced(0, last=12), fenced(1, last=10), m(2, up=False)]
    step = decide(obs(members, epoch=2, failover=record()), policy=POLICY)
    assert isinstance(step, Choose) and step.record.candidate == "db-0"


def test_fenced_quorum_rules() -> None:
    three = obs([fenced(0), fenced(1), m(2, up=False)], epoch=2)
    assert fenced_quorum(three, record()).enough
    one = obs([fenced(0)], epoch=2, replicas=1)
    assert fenced_quorum(one, record()).enough  # a restarted single member takes over again
    alone = obs([m(0, up=False)], epoch=2, replicas=1)
    assert not fenced_quorum(alone, record()).enough  # nobody but the old leader: nobody


@pytest.mark.parametrize(
    ("members", "best"),
    [
        # The later epoch's log wins over a longer log of an older epoch.
        ([fenced(1, last_epoch=2, last=5), fenced(2, last_epoch=1, last=9)], "db-1"),
        ([fenced(1, last=5), fenced(2, last=9)], "db-2"),
        ([fenced(1, last=9, applied=7), fenced(2, last=9, applied=8)], "db-2"),
        ([fenced(2, last=9), fenced(1, last=9)], "db-1"),  # ties: the lowest ordinal
    ],
)
def test_candidates_rank_by_last_epoch_last_seq_applied_seq_then_ordinal(
    members: list[MemberObservation], best: str
) -> None:
    assert rank(members)[0].name == best
    cluster = obs([m(0, up=False), *members], epoch=2, failover=record())
    step = decide(cluster, policy=POLICY)
    assert isinstance(step, Choose) and step.record.candidate == best


def test_a_terminating_member_is_fenced_but_not_chosen() -> None:
    going = replace(fenced(2, last=99), terminating=True)
    cluster = obs([m(0, up=False), fenced(1, last=5), going], epoch=2, failover=record())
    step = decide(cluster, policy=POLICY)
    assert isinstance(step, Choose) and step.record.candidate == "db-1"


# --- resuming from the status -------------------------------------------------------------


def test_promoting_resumes_with_the_recorded_candidate_at_the_same_epoch() -> None:
    rec = record("promoting", candidate="db-1")
    members = [m(0, up=False), fenced(1, last=5), fenced(2, last=9)]  # db-2 ranks higher now
    step = decide(obs(members, epoch=2, failover=rec), policy=POLICY)
    assert step == Promote(rec)


def test_promoting_a_candidate_that_already_leads_is_a_no_op_retry() -> None:
    rec = record("promoting", candidate="db-1")
    members = [m(0, up=False), m(1, "leader", epoch=2), fenced(2)]
    assert decide(obs(members, epoch=2, failover=rec), policy=POLICY) == Promote(rec)


def test_an_unreachable_candidate_is_waited_for_then_replaced_at_a_fresh_epoch() -> None:
    rec = record("promoting", candidate="db-1")
    members = [m(0, up=False), m(1, up=False), fenced(2)]
    cluster = obs(members, epoch=2, failover=rec)
    assert isinstance(decide(cluster, policy=POLICY, failed_for=3.0), Hold)
    step = decide(cluster, policy=POLICY, failed_for=10.0)
    assert isinstance(step, Begin) and step.replaces == rec
    assert (step.record.epoch, step.record.phase, step.record.candidate) == (3, "fencing", None)


def test_a_fenced_candidate_that_refused_the_epoch_is_promoted_at_the_next_one() -> None:
    rec = replace(record("promoting", candidate="db-1"), refused=True)
    members = [m(0, up=False), fenced(1), fenced(2)]
    step = decide(obs(members, epoch=2, failover=rec), policy=POLICY)
    assert isinstance(step, Reepoch)
    assert step.record == replace(rec, epoch=3, refused=False)  # same candidate, no re-fence


def test_a_candidate_that_refused_for_another_reason_restarts_the_failover() -> None:
    rec = replace(record("promoting", candidate="db-1"), refused=True)
    members = [m(0, up=False), m(1, "follower", epoch=2), fenced(2)]
    step = decide(obs(members, epoch=2, failover=rec), policy=POLICY)
    assert isinstance(step, Begin) and step.record.epoch == 3 and step.record.phase == "fencing"


def test_a_member_above_the_failover_epoch_restarts_it_above() -> None:
    members = [m(0, up=False), fenced(1), m(2, "standby", epoch=5)]
    step = decide(obs(members, epoch=2, failover=record()), policy=POLICY)
    assert isinstance(step, Begin) and step.record.epoch == 6


def test_repointing_resumes_then_finishes() -> None:
    rec = record("repointing", candidate="db-2")
    new_url = "http://10.0.0.3:8080"
    members = [fenced(0), fenced(1), m(2, "leader", epoch=2)]
    cluster = obs(members, epoch=2, leader="db-2", failover=rec)
    assert decide(cluster, policy=POLICY) == Repoint(rec, ("db-0", "db-1"))
    following = [m(0, epoch=2, leader_url=new_url), m(1, epoch=2, leader_url=new_url)]
    done = obs([*following, m(2, "leader", epoch=2)], epoch=2, leader="db-2", failover=rec)
    assert decide(done, policy=POLICY) == Finish(rec)


def test_a_record_at_another_epoch_than_the_status_is_restarted() -> None:
    members = [m(0, up=False), fenced(1), fenced(2)]
    step = decide(obs(members, epoch=3, failover=record()), policy=POLICY)
    assert isinstance(step, Begin) and step.record.epoch == 4


def test_the_record_round_trips_through_the_status() -> None:
    rec = replace(record("promoting", candidate="db-1"), fenced=("db-1", "db-2"), to_seq=7)
    assert FailoverRecord.from_status(rec.to_status()) == rec
    assert FailoverRecord.from_status({"phase": "dreaming", "kind": "failover", "epoch": 2}) is None
    assert FailoverRecord.from_status(None) is None


# --- forced promotion ---------------------------------------------------------------------


def test_forced_promotion_begins_at_a_new_epoch_even_while_a_failover_is_blocked() -> None:
    members = [m(0, up=False), fenced(1), m(2, up=False)]
    step = decide(
        obs(members, epoch=2, failover=record(), force_promote="db-1"), policy=POLICY, now="T"
    )
    assert isinstance(step, Begin)
    assert (step.record.kind, step.record.target, step.record.epoch) == ("forced", "db-1", 3)


def test_forced_promotion_chooses_its_target_from_a_minority() -> None:
    rec = record(kind="forced", target="db-1", epoch=3)
    members = [m(0, up=False), fenced(1, epoch=3, last=4), m(2, up=False)]
    step = decide(obs(members, epoch=3, failover=rec, force_promote="db-1"), policy=POLICY)
    assert isinstance(step, Choose) and step.record.candidate == "db-1"
    assert "acknowledged writes may be lost" in step.note


def test_forced_promotion_waits_for_its_target_to_answer() -> None:
    rec = record(kind="forced", target="db-2", epoch=3)
    members = [m(0, up=False), fenced(1, epoch=3), m(2, up=False)]
    step = decide(obs(members, epoch=3, failover=rec, force_promote="db-2"), policy=POLICY)
    assert isinstance(step, Blocked) and "db-2" in step.reason


def test_forced_promotion_of_a_non_member_is_refused() -> None:
    step = decide(obs(healthy(), force_promote="db-9"), policy=POLICY)
    assert isinstance(step, ClearRequest)
    assert step.annotation == c.ANNOTATION_FORCE_PROMOTE and "not a member" in step.message


def test_forced_promotion_of_the_serving_leader_only_clears_the_request() -> None:
    step = decide(obs(healthy(), force_promote="db-0"), policy=POLICY)
    assert isinstance(step, ClearRequest) and step.reason == "ForcePromoteDone"


# --- bootstrap and adoption ---------------------------------------------------------------


def test_a_fresh_cluster_bootstraps_ordinal_zero_at_epoch_one() -> None:
    members = [m(i, "standby", epoch=0, last=0) for i in range(3)]
    step = decide(obs(members, leader=None, epoch=0), policy=POLICY)
    assert isinstance(step, Begin)
    rec = step.record
    assert (rec.kind, rec.phase, rec.candidate, rec.epoch) == ("bootstrap", "promoting", "db-0", 1)


def test_bootstrap_waits_for_ordinal_zero() -> None:
    members = [m(0, up=False), m(1, "standby", epoch=0), m(2, "standby", epoch=0)]
    step = decide(obs(members, leader=None, epoch=0), policy=POLICY)
    assert isinstance(step, Hold) and "db-0" in step.reason


def test_lost_status_adopts_the_existing_leader_instead_of_electing() -> None:
    members = [m(0, epoch=3), m(1, "leader", epoch=3), m(2, epoch=3)]
    assert decide(obs(members, leader=None, epoch=0), policy=POLICY) == Adopt("db-1", 3)


def test_lost_status_without_a_leader_elects_by_fencing_not_by_ordinal() -> None:
    members = [m(0, "standby", epoch=3), m(1, "standby", epoch=3, last=20), m(2, up=False)]
    step = decide(obs(members, leader=None, epoch=0), policy=POLICY)
    assert isinstance(step, Begin)
    assert (step.record.phase, step.record.from_, step.record.epoch) == ("fencing", None, 4)


# --- steady state and planned operations --------------------------------------------------


def test_a_restarted_member_in_standby_is_told_to_follow_again() -> None:
    members = healthy()
    members[2] = m(2, "standby")
    step = decide(obs(members), policy=POLICY)
    assert isinstance(step, Steady) and step.follow == ("db-2",)


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


def test_a_switchover_begins_once_the_target_has_caught_up() -> None:
    members = healthy()
    members[0] = m(0, "leader", last=12)
    step = decide(obs(members, switchover_to="db-2"), policy=POLICY)
    assert isinstance(step, Steady) and step.waiting and "seq 10 of 12" in (step.message or "")
    members[2] = m(2, last=12)
    step = decide(obs(members, switchover_to="db-2"), policy=POLICY)
    assert isinstance(step, Begin)
    rec = step.record
    assert (rec.kind, rec.from_, rec.target, rec.phase) == ("switchover", "db-0", "db-2", "fencing")
    assert rec.reason == "switchover requested to db-2"


def test_a_switchover_is_held_back_after_an_aborted_one() -> None:
    step = decide(obs(healthy(), switchover_to="db-2"), policy=POLICY, held=True)
    assert isinstance(step, Steady) and "held back" in (step.message or "")


def test_a_switchover_keeps_its_target_when_it_holds_as_much_as_the_best() -> None:
    rec = record(kind="switchover", target="db-2")
    cluster = obs([fenced(0, last=9), fenced(1, last=9), fenced(2, last=9)], epoch=2)
    best = choose_candidate(cluster, rec)
    assert best is not None and best.name == "db-2"
    behind = obs([fenced(0, last=9), fenced(1, last=9), fenced(2, last=8)], epoch=2)
    best = choose_candidate(behind, rec)
    assert best is not None and best.name == "db-0"  # it holds more: it leads again


@pytest.mark.parametrize("target", ["db-7", "nobody"])
def test_a_switchover_to_a_non_member_is_refused(target: str) -> None:
    step = decide(obs(healthy(), switchover_to=target), policy=POLICY)
    assert isinstance(step, ClearRequest) and step.reason == "SwitchoverRefused"


def test_a_switchover_to_an_unreachable_member_is_refused() -> None:
    members = healthy()
    members[1] = m(1, up=False)
    step = decide(obs(members, switchover_to="db-1"), policy=POLICY)
    assert isinstance(step, ClearRequest) and "not a reachable follower" in step.message


def test_a_switchover_to_the_current_leader_clears_the_request() -> None:
    step = decide(obs(healthy(), switchover_to="db-0"), policy=POLICY)
    assert isinstance(step, ClearRequest) and step.annotation == c.ANNOTATION_SWITCHOVER


def test_scale_down_below_the_leader_switches_over_to_the_best_remaining_member() -> None:
    url = "http://10.0.0.3:8080"
    members = [
        m(0, last=10, leader_url=url),
        m(1, last=12, leader_url=url),
        m(2, "leader", last=12),
    ]
    step = decide(obs(members, leader="db-2", replicas=2), policy=POLICY)
    assert isinstance(step, Begin) and step.record.target == "db-1"
    assert step.record.reason == "scale down below db-2"


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
    assert next_upgrade_step(obs(members), LAG) == RestartPod(
        "db-2", "restart follower db-2 on the new revision"
    )
    step = decide(obs(members), policy=POLICY)
    assert isinstance(step, Steady) and step.restart is not None and step.restart.name == "db-2"


def test_upgrade_waits_while_a_member_is_not_ready() -> None:
    members = [m(0, "leader", revision="old"), m(1, revision="old"), m(2, ready=False)]
    assert next_upgrade_step(obs(members), LAG) == Waiting("upgrade waits: db-2 is not ready")


def test_upgrade_waits_for_a_restarted_member_ready_in_standby_to_follow() -> None:
    """Issue #15: db-2 came back Ready in standby; restarting db-1 then would leave the
    leader without a follower, and every ack=quorum write would time out."""
    members = [m(0, "leader", revision="old"), m(1, revision="old"), m(2, "standby")]
    step = next_upgrade_step(obs(members), LAG)
    assert step == Waiting("upgrade waits: db-2 does not follow db-0 yet")
    decided = decide(obs(members), policy=POLICY)
    assert isinstance(decided, Steady) and decided.restart is None
    assert decided.follow == ("db-2",)
    assert decided.notes == ("upgrade waits: db-2 does not follow db-0 yet",)


def test_upgrade_waits_for_a_follower_to_catch_up_within_the_lag_bound() -> None:
    lagging = [m(0, "leader", revision="old", last=500), m(1, revision="old", last=500)]
    lagging.append(m(2, last=500, applied=500 - LAG - 1))
    assert next_upgrade_step(obs(lagging), LAG) == Waiting(
        f"upgrade waits: db-2 lags {LAG + 1} records (bound {LAG})"
    )
    caught_up = [*lagging[:2], m(2, last=500, applied=500 - LAG)]
    assert next_upgrade_step(obs(caught_up), LAG) == RestartPod(
        "db-1", "restart follower db-1 on the new revision"
    )


def test_upgrade_switches_over_to_the_best_updated_follower_before_the_leader() -> None:
    members = [m(0, "leader", revision="old", last=9), m(1, last=9), m(2, last=8)]
    assert next_upgrade_step(obs(members), LAG) == LeaderLast(("db-1", "db-2"))
    step = decide(obs(members), policy=POLICY)
    assert isinstance(step, Begin) and step.record.target == "db-1"


def test_upgrade_done_when_every_pod_is_current() -> None:
    assert outdated(obs(healthy())) == []
    assert next_upgrade_step(obs(healthy()), LAG) is None
    assert next_upgrade_step(obs(healthy(), revision=None), LAG) is None


def test_upgrade_restarts_nothing_while_the_statefulset_controller_has_not_caught_up() -> None:
    members = [m(0, "leader", revision="old"), m(1, revision="old"), m(2, revision="old")]
    pending = replace(obs(members), revision_pending=True)
    assert next_upgrade_step(pending, LAG) == Waiting(
        "upgrade waits for the StatefulSet controller to apply the pod template"
    )
