"""Status computation and role labels from observations."""

from __future__ import annotations

from dataclasses import replace

import pytest

from dvecdb_operator.observation import ClusterObservation, FailoverRecord, MemberObservation
from dvecdb_operator.status import PassReport, compute_status, derive_health, desired_role_labels

pytestmark = pytest.mark.unit

URL0 = "http://10.0.0.1:8080"


def m(
    ordinal: int,
    role: str | None = "follower",
    *,
    last: int = 10,
    applied: int | None = None,
    up: bool = True,
    ready: bool = True,
    label: str | None = None,
    revision: str | None = "r2",
) -> MemberObservation:
    return MemberObservation(
        name=f"db-{ordinal}",
        ordinal=ordinal,
        pod_ip=f"10.0.0.{ordinal + 1}",
        pod_ready=ready,
        reachable=up,
        role=role if up else None,
        epoch=2,
        last_seq=last,
        applied_seq=last if applied is None else applied,
        leader_url=URL0 if role == "follower" else None,
        role_label=label,
        pod_uid=f"uid-{ordinal}",
        restarts=1,
        revision=revision,
    )


def obs(
    *members: MemberObservation,
    leader: str | None = "db-0",
    healthy_replicas: int | None = 3,
    previous_phase: str | None = "Healthy",
    replicas: int = 3,
) -> ClusterObservation:
    return ClusterObservation(
        name="db",
        namespace="ns",
        replicas=replicas,
        epoch=2,
        leader=leader,
        members=members,
        healthy_replicas=healthy_replicas,
        previous_phase=previous_phase,
        update_revision="r2",
    )


def conditions(status: dict[str, object]) -> dict[str, str]:
    return {c["type"]: c["status"] for c in status["conditions"]}  # type: ignore[attr-defined]


def test_healthy_cluster_status() -> None:
    status = compute_status(
        obs(m(0, "leader", last=20), m(1, applied=15), m(2, applied=20)), generation=4, now="T1"
    )
    assert status["phase"] == "Healthy"
    assert status["observedGeneration"] == 4
    # leader and epoch are written only by the failover's compare-and-swap steps
    assert "leader" not in status and "epoch" not in status
    assert status["readyMembers"] == "3/3"
    assert status["replicas"] == 3
    assert status["selector"] == "app.kubernetes.io/name=dvecdb,dvecdb.io/cluster=db"
    assert conditions(status) == {
        "Ready": "True",
        "LeaderElected": "True",
        "Replicating": "True",
        "Progressing": "False",
    }
    assert status["leaderPod"] == {"name": "db-0", "uid": "uid-0", "restarts": 1}
    assert [x["lagSeq"] for x in status["members"]] == [0, 5, 0]
    assert status["members"][0] == {
        "name": "db-0",
        "role": "leader",
        "ready": True,
        "lastSeq": 20,
        "appliedSeq": 20,
        "lagSeq": 0,
    }
    assert status["message"] == "" and status["healthyReplicas"] == 3


def test_member_down_degrades_and_is_listed_unreachable_without_lag() -> None:
    status = compute_status(
        obs(m(0, "leader"), m(1), m(2, up=False, ready=False)), generation=1, now="T"
    )
    assert status["phase"] == "Degraded"
    assert conditions(status) == {
        "Ready": "False",
        "LeaderElected": "True",
        "Replicating": "False",
        "Progressing": "False",
    }
    down = status["members"][2]
    assert down["role"] == "unreachable" and "lagSeq" not in down
    assert status["message"] == "db-2 is not ready"


def test_unled_cluster_is_creating_and_flags_override() -> None:
    members = (m(0, "standby"), m(1, "standby"), m(2, "standby"))
    assert compute_status(obs(*members, leader=None), generation=1, now="T")["phase"] == "Creating"
    report = PassReport(failed=True, message="bad")
    assert compute_status(obs(*members), generation=1, now="T", report=report)["phase"] == "Failed"


@pytest.mark.parametrize(
    ("kind", "phase"),
    [("failover", "FailingOver"), ("forced", "FailingOver"), ("switchover", "Switching")],
)
def test_a_change_in_flight_sets_the_phase_and_progressing(kind: str, phase: str) -> None:
    members = (m(0, "standby"), m(1, "standby"), m(2, "standby"))
    record = FailoverRecord(epoch=3, kind=kind, phase="fencing", from_="db-0", reason="x")  # type: ignore[arg-type]
    cluster = replace(obs(*members), failover=record)
    status = compute_status(cluster, generation=1, now="T")
    assert status["phase"] == phase
    assert conditions(status)["LeaderElected"] == "False"
    assert conditions(status)["Progressing"] == "True"
    assert "leaderPod" not in status


def test_a_blocked_failover_names_the_missing_members_in_progressing() -> None:
    members = (m(0, up=False), m(1, "standby"), m(2, up=False))
    record = FailoverRecord(epoch=3, kind="failover", phase="fencing", from_="db-0", reason="x")
    report = PassReport(message="missing db-2", blocked="not promoting from a minority: db-2")
    status = compute_status(replace(obs(*members, leader=None), failover=record), generation=1,
                            now="T", report=report)  # fmt: skip
    assert status["phase"] == "FailingOver"
    progressing = next(c for c in status["conditions"] if c["type"] == "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("False", "FailoverBlocked")
    assert "db-2" in progressing["message"]
    assert status["message"] == "failover at epoch 3 (x): fencing; missing db-2"


def test_condition_transition_time_kept_while_status_unchanged() -> None:
    cluster = obs(m(0, "leader"), m(1), m(2))
    first = compute_status(cluster, generation=1, now="T1")
    again = compute_status(cluster, generation=1, now="T2", previous_conditions=first["conditions"])
    assert {c["lastTransitionTime"] for c in again["conditions"]} == {"T1"}
    degraded = obs(m(0, "leader"), m(1), m(2, up=False, ready=False))
    later = compute_status(
        degraded, generation=1, now="T3", previous_conditions=again["conditions"]
    )
    times = {c["type"]: c["lastTransitionTime"] for c in later["conditions"]}
    assert times == {"Ready": "T3", "LeaderElected": "T1", "Replicating": "T3", "Progressing": "T1"}


def test_role_labels_follow_the_healthy_leader_only() -> None:
    cluster = obs(
        m(0, "leader", label=None), m(1, label="follower"), m(2, "standby", label="leader")
    )
    assert desired_role_labels(cluster) == {"db-0": "leader", "db-2": "standby"}


def test_role_label_kept_on_a_leader_that_only_does_not_answer_the_operator() -> None:
    # Cut from the operator alone it still takes writes until a failover fences its
    # followers; its pod's readiness takes a dead or hung one out of the Service.
    cluster = obs(
        m(0, up=False, label="leader"), m(1, label="follower"), m(2, up=False, label="follower")
    )
    assert desired_role_labels(cluster) == {}


def test_role_label_removed_from_a_failed_leader() -> None:
    members = (m(1, label="follower"), m(2, up=False, label="follower"))
    dead = replace(m(0, up=False, label="leader"), pod_running=False)
    assert desired_role_labels(obs(dead, *members)) == {"db-0": None}
    replaced = obs(m(0, up=False, label="leader"), *members)
    record = FailoverRecord(epoch=3, kind="failover", phase="fencing", from_="db-0", reason="x")
    assert desired_role_labels(replace(replaced, failover=record)) == {"db-0": None}
    deposed = obs(m(0, "standby", label="leader"), *members)
    assert desired_role_labels(deposed) == {"db-0": "standby"}


def test_role_label_of_a_stale_leader_is_not_leader() -> None:
    cluster = obs(
        m(0, "leader", label="leader"), m(1, "leader", label=None), m(2, label="follower")
    )
    assert desired_role_labels(cluster) == {"db-1": "standby"}


def health(cluster: ClusterObservation, report: PassReport | None = None) -> tuple[str, str]:
    result = derive_health(cluster, report or PassReport(), max_lag_seq=100)
    return result.phase, result.message


def condition(cluster: ClusterObservation, kind: str) -> tuple[bool, str, str]:
    found = next(
        x
        for x in derive_health(cluster, PassReport(), max_lag_seq=100).conditions
        if x.type == kind
    )
    return found.status, found.reason, found.message


def test_a_member_beyond_the_lag_bound_is_not_healthy() -> None:
    """Issue #15: `Healthy` with a member at lag_seq 1188."""
    lagging = obs(m(0, "leader", last=1200), m(1, last=1200), m(2, last=1200, applied=12))
    assert health(lagging) == ("Degraded", "db-2 lags 1188 records (bound 100)")
    assert condition(lagging, "Replicating") == (
        False, "FollowersLagging", "more than 100 records behind db-0: db-2 (1188)"
    )  # fmt: skip
    assert condition(lagging, "Ready")[:2] == (False, "Degraded")
    within = obs(m(0, "leader", last=1200), m(1, last=1200), m(2, last=1200, applied=1100))
    assert health(within) == ("Healthy", "")
    assert condition(within, "Ready")[:2] == (True, "ClusterIsHealthy")
    assert condition(within, "Progressing")[:2] == (False, "Healthy")


def test_a_ready_member_in_standby_is_not_counted_until_it_follows() -> None:
    cluster = obs(m(0, "leader"), m(1), m(2, "standby"))
    assert health(cluster) == ("Degraded", "db-2 does not follow db-0 yet")


def test_members_on_an_older_revision_make_the_phase_upgrading_until_all_match() -> None:
    """Issue #15: mid-upgrade the phase was Healthy while revisions differed."""
    cluster = obs(m(0, "leader", revision="r1"), m(1, revision="r1"), m(2))
    phase, message = health(cluster)
    assert phase == "Upgrading"
    assert message == "db-0 runs an older revision; db-1 runs an older revision"
    assert condition(cluster, "Progressing") == (True, "Upgrading", message)
    assert condition(cluster, "Ready") == (False, "Upgrading", message)
    restarted = obs(m(0, "leader", revision="r1"), m(1, revision="r1"), m(2, "standby"))
    assert health(restarted) == (
        "Upgrading",
        "db-2 does not follow db-0 yet; db-0 runs an older revision; db-1 runs an older revision",
    )


def test_a_planned_switchover_is_switching_and_the_leaders_upgrade_turn_is_upgrading() -> None:
    """Issue #15: a planned switchover showed FailingOver."""
    record = FailoverRecord(
        epoch=3, kind="switchover", phase="fencing", from_="db-0", reason="asked", target="db-1"
    )
    members = (m(0, "standby"), m(1, "standby"), m(2, "standby"))
    switching = replace(obs(*members, leader=None), failover=record)
    assert health(switching) == ("Switching", "switchover at epoch 3 (asked): fencing")
    stale = (m(0, "standby", revision="r1"), m(1, "standby"), m(2, "standby"))
    upgrading = replace(obs(*stale, leader=None), failover=record)
    assert health(upgrading)[0] == "Upgrading"
    requested = replace(obs(m(0, "leader"), m(1), m(2, applied=1)), switchover_to="db-1")
    assert health(requested) == ("Switching", "switchover requested to db-1")


def test_scaling_until_the_new_size_follows_then_healthy_at_it() -> None:
    up = obs(m(0, "leader"), m(1), m(2), m(3, "standby"), replicas=5)
    assert health(up) == ("Scaling", "scaling 3 -> 5 members; db-3 does not follow db-0 yet;"
                                     " db-4 has no pod")  # fmt: skip
    assert condition(up, "Progressing")[:2] == (True, "Scaling")
    grown = obs(m(0, "leader"), m(1), m(2), m(3), m(4), replicas=5)
    status = compute_status(grown, generation=2, now="T")
    assert (status["phase"], status["healthyReplicas"]) == ("Healthy", 5)
    down = obs(m(0, "leader"), m(1), m(2), m(3), m(4), replicas=3, healthy_replicas=5)
    assert health(down) == (
        "Scaling",
        "scaling 5 -> 3 members; db-3 is beyond 3 replicas; db-4 is beyond 3 replicas",
    )


def test_creating_until_the_first_healthy_pass_then_degraded() -> None:
    new = obs(m(0, "leader"), m(1), m(2, "standby"), healthy_replicas=None, previous_phase=None)
    assert health(new) == ("Creating", "db-2 does not follow db-0 yet")
    # An object an older operator wrote (no healthyReplicas) past Creating is not re-created.
    old = obs(
        m(0, "leader"), m(1), m(2, "standby"), healthy_replicas=None, previous_phase="Healthy"
    )
    assert health(old)[0] == "Degraded"


def test_a_leader_failure_within_the_detection_window_is_degraded_with_its_reason() -> None:
    cluster = obs(m(0, up=False), m(1), m(2))
    phase, message = health(cluster)
    assert (phase, message) == ("Degraded", "leader unreachable (no answer)")
    assert condition(cluster, "LeaderElected")[:2] == (False, "NoLeader")


def test_a_failed_pass_is_failed_with_the_reason() -> None:
    reason = "leader unreachable (no answer); automatic failover is disabled"
    report = PassReport(message=reason, failed=True)
    assert health(obs(m(0, up=False), m(1), m(2)), report) == ("Failed", reason)


def test_not_healthy_until_the_statefulset_controller_has_applied_the_template() -> None:
    """Right after a spec change the update revision may still be the old one."""
    pending = replace(obs(m(0, "leader"), m(1), m(2)), revision_pending=True)
    assert health(pending) == (
        "Upgrading",
        "the StatefulSet controller has not applied the latest pod template yet",
    )
