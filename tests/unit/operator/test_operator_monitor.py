"""The monitoring loop end to end against an in-memory API server and fake nodes:
bootstrap, rejoin, failover (and its race guard), switchover, rolling restart, bad spec."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import pytest
from dvecdb_operator import constants as c
from dvecdb_operator import kube as kube_api
from dvecdb_operator.members import Members
from dvecdb_operator.monitor import ClusterMonitor, MonitorSettings
from operator_fakes import FakeKube, FakeNode

pytestmark = pytest.mark.unit


def url(i: int) -> str:
    return f"http://10.0.0.{i + 1}:8080"


class Harness:
    def __init__(self, monkeypatch: pytest.MonkeyPatch, replicas: int = 3, **spec: Any) -> None:
        self.kube = FakeKube(
            {
                "apiVersion": c.API_VERSION,
                "kind": c.KIND,
                "metadata": {"name": "db", "namespace": "ns"},
                "spec": {"replicas": replicas, "failover": {"detectionSeconds": 10}, **spec},
            }
        )
        self.kube.objects[("StatefulSet", "db")] = {"status": {"updateRevision": "r1"}}
        self.nodes: dict[str, FakeNode] = {}
        for i in range(replicas):
            self.kube.add_pod(f"db-{i}", f"10.0.0.{i + 1}")
            self.nodes[url(i)] = FakeNode(f"db-{i}")
        self.events: list[tuple[str, str]] = []
        monkeypatch.setattr(
            kube_api,
            "post_event",
            lambda body, *, reason, message, warning=False: self.events.append((reason, message)),
        )
        self.offset = 0.0
        self.monitor = ClusterMonitor(
            self.kube,  # type: ignore[arg-type]
            Members(lambda u: self.nodes[u]),
            namespace="ns",
            name="db",
            settings=MonitorSettings(
                catchup_timeout=0.5,
                catchup_poll=0.01,
                switchover_slack=0,
                fenced_catchup_timeout=0.1,
            ),
            clock=lambda: time.monotonic() + self.offset,
        )

    def node(self, i: int) -> FakeNode:
        return self.nodes[url(i)]

    def reasons(self) -> list[str]:
        return [r for r, _ in self.events]

    async def bootstrapped(self) -> None:
        await self.monitor.tick()
        assert self.kube.status["leader"] == "db-0"
        self.events.clear()


async def test_bootstrap_promotes_ordinal_zero_at_epoch_one_and_others_follow(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = Harness(monkeypatch)
    await h.monitor.tick()
    assert h.node(0).calls == [("promote", 1)]
    assert h.node(0).members_hint == 3  # the cluster size, for quorum acks
    for i in (1, 2):
        assert h.node(i).calls == [("follow", (url(0), 1))]
    status = h.kube.status
    assert (status["leader"], status["epoch"], status["phase"]) == ("db-0", 1, "Healthy")
    assert status["observedGeneration"] == 1
    assert {x["name"]: x["role"] for x in status["members"]} == {
        "db-0": "leader",
        "db-1": "follower",
        "db-2": "follower",
    }
    assert h.kube.role_labels() == {"db-0": "leader", "db-1": "follower", "db-2": "follower"}
    assert "Bootstrapped" in h.reasons()


async def test_steady_pass_writes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(monkeypatch)
    await h.bootstrapped()
    patches = len(h.kube.status_patches)
    outcome = await h.monitor.tick()
    assert not outcome.acted
    assert len(h.kube.status_patches) == patches
    assert h.events == []


async def test_member_restarted_in_standby_is_told_its_role_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = Harness(monkeypatch)
    await h.bootstrapped()
    h.node(2).role, h.node(2).leader = "standby", None  # restarted: boots in standby
    h.node(2).calls.clear()
    await h.monitor.tick()
    assert h.node(2).calls == [("follow", (url(0), 1))]
    assert "MemberRejoining" in h.reasons()
    assert h.kube.status["phase"] == "Healthy"


async def test_failover_after_detection_promotes_most_advanced_follower(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = Harness(monkeypatch)
    await h.bootstrapped()
    h.node(0).last_seq = 14
    await h.monitor.tick()  # remembers the leader's position
    h.node(1).last_seq, h.node(2).last_seq = 10, 12
    h.node(0).reachable = False

    await h.monitor.tick()
    assert h.kube.status["leader"] == "db-0"
    assert h.kube.status["phase"] == "Degraded"
    assert "failover after 10s" in h.kube.status["message"]
    assert h.kube.role_labels()["db-0"] is None  # out of the read-write Service at once

    h.offset += 11
    await h.monitor.tick()
    assert h.node(2).calls[-1] == ("promote", 2)
    assert h.node(1).calls[-1] == ("follow", (url(2), 2))
    status = h.kube.status
    assert (status["leader"], status["epoch"]) == ("db-2", 2)
    failover = status["lastFailover"]
    assert (failover["from"], failover["to"], failover["fromSeq"], failover["toSeq"]) == (
        "db-0",
        "db-2",
        14,
        12,
    )
    assert "unreachable" in failover["reason"]
    assert h.kube.role_labels()["db-2"] == "leader"
    assert h.reasons()[:4] == ["FailoverStarted", "EpochBumped", "Promoted", "FollowersRepointed"]
    assert "FailoverCompleted" in h.reasons()
    assert status["phase"] == "Degraded"  # db-0 is still down

    h.node(0).reachable = True  # the old leader comes back in standby at epoch 1
    h.node(0).role = "standby"
    await h.monitor.tick()
    assert h.node(0).calls[-1] == ("follow", (url(2), 2))
    assert h.kube.status["phase"] == "Healthy"


async def test_a_reachable_demoted_leader_is_fenced_at_the_new_epoch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = Harness(monkeypatch)
    await h.bootstrapped()
    h.node(0).role = "standby"  # answers, but no longer leads
    await h.monitor.tick()
    h.offset += 11
    await h.monitor.tick()
    assert ("fence", 2) in h.node(0).calls
    assert "LeaderFenced" in h.reasons()
    assert h.kube.status["leader"] == "db-1"


async def test_losing_the_epoch_race_does_not_promote(monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(monkeypatch)
    await h.bootstrapped()
    h.node(0).reachable = False
    await h.monitor.tick()
    h.offset += 11
    h.kube.conflict_next_status_patch = True  # another operator replica bumped first
    await h.monitor.tick()
    assert all(call[0] != "promote" for i in (1, 2) for call in h.node(i).calls)
    assert "FailoverSkipped" in h.reasons()


async def test_no_candidate_marks_the_cluster_failed(monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(monkeypatch)
    await h.bootstrapped()
    for i in range(3):
        h.node(i).reachable = False
    await h.monitor.tick()
    h.offset += 11
    await h.monitor.tick()
    assert h.kube.status["phase"] == "Failed"
    assert "no reachable member" in h.kube.status["message"]


async def test_failover_disabled_leaves_the_leader_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(monkeypatch, failover={"enabled": False, "detectionSeconds": 10})
    await h.bootstrapped()
    h.node(0).reachable = False
    await h.monitor.tick()
    h.offset += 60
    await h.monitor.tick()
    assert h.kube.status["leader"] == "db-0"
    assert h.kube.status["phase"] == "Failed"


async def test_requested_switchover_fences_waits_promotes_and_clears_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = Harness(monkeypatch)
    await h.bootstrapped()
    h.node(0).last_seq = 30
    h.node(2).upstream = h.node(0)  # streams the rest while the operator waits
    h.kube.cluster["metadata"]["annotations"] = {c.ANNOTATION_SWITCHOVER: "db-2"}
    await h.monitor.tick()
    assert ("fence", 1) in h.node(0).calls
    assert h.node(2).calls[-1] == ("promote", 2)
    assert h.node(0).calls[-1] == ("follow", (url(2), 2))
    assert h.node(1).calls[-1] == ("follow", (url(2), 2))
    status = h.kube.status
    assert (status["leader"], status["epoch"]) == ("db-2", 2)
    assert status["lastFailover"]["reason"] == "switchover requested to db-2"
    assert (status["lastFailover"]["fromSeq"], status["lastFailover"]["toSeq"]) == (30, 30)
    assert c.ANNOTATION_SWITCHOVER not in h.kube.cluster["metadata"]["annotations"]
    assert h.kube.role_labels() == {"db-0": "follower", "db-1": "follower", "db-2": "leader"}
    assert "SwitchoverCompleted" in h.reasons()


async def test_switchover_waits_for_a_lagging_target_before_fencing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = Harness(monkeypatch)
    await h.bootstrapped()
    h.node(0).last_seq = 30  # db-1 stays at 0: not streaming
    h.kube.cluster["metadata"]["annotations"] = {c.ANNOTATION_SWITCHOVER: "db-1"}
    await h.monitor.tick()
    assert "SwitchoverDeferred" in h.reasons()
    assert all(call[0] != "fence" for call in h.node(0).calls)  # writes never stopped
    assert (h.kube.status["leader"], h.kube.status["epoch"]) == ("db-0", 1)
    assert h.kube.cluster["metadata"]["annotations"][c.ANNOTATION_SWITCHOVER] == "db-1"
    h.events.clear()
    await h.monitor.tick()  # held back for a while instead of retrying every pass
    assert "SwitchoverDeferred" not in h.reasons()
    h.offset += 31
    h.node(1).upstream = h.node(0)
    h.node(1).rate = 100
    await h.monitor.tick()
    assert h.kube.status["leader"] == "db-1"


async def test_switchover_whose_target_misses_the_tail_keeps_the_old_leader(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = Harness(monkeypatch)
    h.monitor.actions.settings = replace(h.monitor.settings, switchover_slack=64)
    await h.bootstrapped()
    h.node(0).last_seq = 30  # within the slack, but db-1 never receives the tail
    h.kube.cluster["metadata"]["annotations"] = {c.ANNOTATION_SWITCHOVER: "db-1"}
    await h.monitor.tick()
    assert ("fence", 1) in h.node(0).calls
    assert "SwitchoverAborted" in h.reasons()
    assert h.node(0).calls[-1] == ("promote", 2)
    assert all(call[0] != "promote" for call in h.node(1).calls)
    assert (h.kube.status["leader"], h.kube.status["epoch"]) == ("db-0", 2)
    assert "lastFailover" not in h.kube.status


async def test_switchover_to_unknown_member_is_refused_and_cleared(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = Harness(monkeypatch)
    await h.bootstrapped()
    h.kube.cluster["metadata"]["annotations"] = {c.ANNOTATION_SWITCHOVER: "db-9"}
    await h.monitor.tick()
    assert "SwitchoverRefused" in h.reasons()
    assert c.ANNOTATION_SWITCHOVER not in h.kube.cluster["metadata"]["annotations"]
    assert h.kube.status["leader"] == "db-0"


async def test_rolling_upgrade_restarts_a_follower_first(monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(monkeypatch)
    await h.bootstrapped()
    h.kube.objects[("StatefulSet", "db")] = {"status": {"updateRevision": "r2"}}
    await h.monitor.tick()
    assert h.kube.deleted == ["db-2"]
    assert "RollingRestart" in h.reasons()


async def test_invalid_spec_is_reported_in_status(monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(monkeypatch)
    h.kube.cluster["spec"]["replicas"] = 0
    outcome = await h.monitor.tick()
    assert outcome.failed
    assert h.kube.status["phase"] == "Failed"
    assert "spec.replicas" in h.kube.status["message"]


class FlakyNode(FakeNode):
    """A node whose next promotes misbehave, one fault per call:

    - `drop`: the call times out and the node never saw it;
    - `lose`: the node takes the epoch, but the answer times out on the way back;
    - `learned`: the node learned the epoch from a peer first, so it refuses it (stale_epoch).
    """

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.faults: list[str] = []

    async def promote(self, epoch: int, *, members: int | None = None) -> dict[str, Any]:
        fault = self.faults.pop(0) if self.faults else None
        if fault == "drop":
            self.calls.append(("promote", epoch))
            raise TimeoutError
        if fault == "learned":
            self.epoch = epoch
        answer = await super().promote(epoch, members=members)
        if fault == "lose":
            raise TimeoutError
        return answer


def flaky_harness(monkeypatch: pytest.MonkeyPatch) -> tuple[Harness, FlakyNode]:
    h = Harness(monkeypatch)
    flaky = FlakyNode("db-2")
    h.nodes[url(2)] = flaky
    return h, flaky


async def fail_leader(h: Harness) -> None:
    """db-0 dies with db-2 the most advanced follower; the next tick starts the failover."""
    await h.bootstrapped()
    h.node(1).last_seq, h.node(2).last_seq = 10, 12
    h.node(0).reachable = False
    await h.monitor.tick()
    h.offset += 11


def promotes(node: FakeNode) -> list[Any]:
    return [epoch for call, epoch in node.calls if call == "promote"]


async def test_a_promote_that_never_arrived_is_retried_after_backoff_at_the_same_epoch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h, flaky = flaky_harness(monkeypatch)
    flaky.faults = ["drop", "drop"]
    await fail_leader(h)

    await h.monitor.tick()  # attempt 1 times out
    status = h.kube.status
    assert (status["leader"], status["epoch"], status["phase"]) == ("db-0", 2, "FailingOver")
    assert "retrying at epoch 2 in 2s" in status["message"]
    assert {"PromoteFailed", "PromoteRetrying"} <= set(h.reasons())

    await h.monitor.tick()  # within the backoff: no call at all
    assert promotes(flaky) == [2]
    assert h.kube.status["phase"] == "FailingOver"
    assert "attempt 2 at epoch 2 after a 2s backoff" in h.kube.status["message"]

    h.offset += 2.1
    await h.monitor.tick()  # attempt 2 times out too: the backoff doubles
    assert promotes(flaky) == [2, 2]
    assert "retrying at epoch 2 in 4s" in h.kube.status["message"]
    h.offset += 2.1
    await h.monitor.tick()
    assert promotes(flaky) == [2, 2]
    h.offset += 2.0
    await h.monitor.tick()  # attempt 3 succeeds
    assert promotes(flaky) == [2, 2, 2]
    status = h.kube.status
    assert (status["leader"], status["epoch"]) == ("db-2", 2)
    assert status["lastFailover"]["to"] == "db-2"
    assert h.reasons().count("EpochBumped") == 1
    assert h.node(1).calls[-1] == ("follow", (url(2), 2))
    assert h.monitor.pending is None


async def test_a_promote_whose_answer_was_lost_is_finished_at_its_epoch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h, flaky = flaky_harness(monkeypatch)
    flaky.faults = ["lose"]
    await fail_leader(h)
    await h.monitor.tick()  # db-2 leads at 2, but the operator never heard back
    assert (flaky.role, flaky.epoch) == ("leader", 2)
    assert h.kube.status["leader"] == "db-0"

    await h.monitor.tick()  # it sees db-2 leading at the recorded epoch: no backoff needed
    status = h.kube.status
    assert (status["leader"], status["epoch"]) == ("db-2", 2)
    assert promotes(flaky) == [2, 2]  # the second is the node's no-op retry
    assert h.node(1).calls[-1] == ("follow", (url(2), 2))
    assert h.kube.role_labels()["db-2"] == "leader"


async def test_a_refused_epoch_is_replaced_by_a_new_one(monkeypatch: pytest.MonkeyPatch) -> None:
    h, flaky = flaky_harness(monkeypatch)
    flaky.faults = ["learned"]
    await fail_leader(h)
    await h.monitor.tick()
    assert "retrying at a new epoch" in h.kube.status["message"]
    h.offset += 2.1
    await h.monitor.tick()
    assert promotes(flaky) == [2, 3]
    assert (h.kube.status["leader"], h.kube.status["epoch"]) == ("db-2", 3)


async def test_a_member_more_advanced_than_the_tried_one_wins_at_a_new_epoch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h, flaky = flaky_harness(monkeypatch)
    flaky.faults = ["drop"]
    await fail_leader(h)
    await h.monitor.tick()
    h.node(1).last_seq = 20  # it had more of the log than db-2 after all
    h.offset += 2.1
    await h.monitor.tick()
    assert promotes(flaky) == [2]
    assert promotes(h.node(1)) == [3]
    assert (h.kube.status["leader"], h.kube.status["epoch"]) == ("db-1", 3)


async def test_bootstrap_promote_failure_is_retried_at_epoch_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = Harness(monkeypatch)
    first = FlakyNode("db-0")
    first.faults = ["drop"]
    h.nodes[url(0)] = first
    await h.monitor.tick()
    assert (h.kube.status.get("leader"), h.kube.status["epoch"]) == (None, 1)
    await h.monitor.tick()
    assert promotes(first) == [1]  # waiting out the backoff
    h.offset += 2.1
    await h.monitor.tick()
    assert promotes(first) == [1, 1]
    assert (h.kube.status["leader"], h.kube.status["epoch"]) == ("db-0", 1)


async def test_a_reachable_old_leader_stops_at_its_epoch_before_the_promote(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Fencing it at the new epoch first would teach that epoch to followers still streaming
    # from it, and they would refuse to be promoted at it.
    h = Harness(monkeypatch)
    await h.bootstrapped()
    h.node(0).role = "standby"  # restarted: answers, no longer leads
    await h.monitor.tick()
    h.offset += 11
    order: list[str] = []
    for i in range(3):
        node = h.node(i)
        for name in ("fence", "promote"):
            original = getattr(node, name)

            async def traced(
                *args: Any, _o: Any = original, _n: str = f"{name} db-{i}", **kw: Any
            ) -> Any:
                order.append(f"{_n} {args[0]}")
                return await _o(*args, **kw)

            setattr(node, name, traced)
    await h.monitor.tick()
    assert order == ["fence db-0 1", "promote db-1 2", "fence db-0 2"]
    assert h.node(0).calls[-1] == ("follow", (url(1), 2))
