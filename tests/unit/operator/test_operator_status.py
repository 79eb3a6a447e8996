"""Status computation and role labels from observations."""

from __future__ import annotations

import pytest
from dvecdb_operator.observation import ClusterObservation, MemberObservation
from dvecdb_operator.status import compute_status, desired_role_labels

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
    )


def obs(*members: MemberObservation, leader: str | None = "db-0") -> ClusterObservation:
    return ClusterObservation(
        name="db", namespace="ns", replicas=3, epoch=2, leader=leader, members=members
    )


def conditions(status: dict[str, object]) -> dict[str, str]:
    return {c["type"]: c["status"] for c in status["conditions"]}  # type: ignore[attr-defined]


def test_healthy_cluster_status() -> None:
    status = compute_status(
        obs(m(0, "leader", last=20), m(1, applied=15), m(2, applied=20)), generation=4, now="T1"
    )
    assert status["phase"] == "Healthy"
    assert (status["leader"], status["epoch"], status["observedGeneration"]) == ("db-0", 2, 4)
    assert status["readyMembers"] == "3/3"
    assert status["replicas"] == 3
    assert status["selector"] == "app.kubernetes.io/name=dvecdb,dvecdb.io/cluster=db"
    assert conditions(status) == {"Ready": "True", "LeaderElected": "True", "Replicating": "True"}
    assert [x["lag_seq"] for x in status["members"]] == [0, 5, 0]
    assert status["members"][0] == {
        "name": "db-0",
        "role": "leader",
        "ready": True,
        "last_seq": 20,
        "applied_seq": 20,
        "lag_seq": 0,
    }


def test_member_down_degrades_and_is_listed_unreachable_without_lag() -> None:
    status = compute_status(
        obs(m(0, "leader"), m(1), m(2, up=False, ready=False)), generation=1, now="T"
    )
    assert status["phase"] == "Degraded"
    assert conditions(status) == {"Ready": "False", "LeaderElected": "True", "Replicating": "False"}
    down = status["members"][2]
    assert down["role"] == "unreachable" and "lag_seq" not in down


def test_unled_cluster_is_creating_and_flags_override() -> None:
    members = (m(0, "standby"), m(1, "standby"), m(2, "standby"))
    assert compute_status(obs(*members, leader=None), generation=1, now="T")["phase"] == "Creating"
    assert compute_status(obs(*members), generation=1, now="T", failed=True)["phase"] == "Failed"
    failing = compute_status(obs(*members), generation=1, now="T", failing_over=True)
    assert failing["phase"] == "FailingOver"
    assert conditions(failing)["LeaderElected"] == "False"


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
    assert times == {"Ready": "T3", "LeaderElected": "T1", "Replicating": "T3"}


def test_role_labels_follow_the_healthy_leader_only() -> None:
    cluster = obs(
        m(0, "leader", label=None), m(1, label="follower"), m(2, "standby", label="leader")
    )
    assert desired_role_labels(cluster) == {"db-0": "leader", "db-2": "standby"}


def test_role_label_removed_from_a_failed_leader() -> None:
    cluster = obs(
        m(0, up=False, label="leader"), m(1, label="follower"), m(2, up=False, label="follower")
    )
    assert desired_role_labels(cluster) == {"db-0": None}


def test_role_label_of_a_stale_leader_is_not_leader() -> None:
    cluster = obs(
        m(0, "leader", label="leader"), m(1, "leader", label=None), m(2, label="follower")
    )
    assert desired_role_labels(cluster) == {"db-1": "standby"}
