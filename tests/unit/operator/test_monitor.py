"""The pass end to end against an in-memory API server and fake nodes: bootstrap, the lease
renewal, fence-then-choose failovers (majority, minority, certain death, lost races),
resuming after an operator restart, switchovers, forced promotion, rolling restart."""

from __future__ import annotations

import time
from typing import Any

import pytest

from dvecdb_operator import constants as c
from dvecdb_operator import kube as kube_api
from dvecdb_operator.members import Members
from dvecdb_operator.monitor import ClusterMonitor, MonitorSettings
from tests.support.operator_fakes import FakeKube, FakeNode

pytestmark = pytest.mark.unit


def url(i: int) -> str:
    return f"http://10.0.0.{i + 1}:8080"


class Harness:
    def __init__(
        self,
        monkeypatch: pytest.MonkeyPatch,
        replicas: int = 3,
        *,
        relaxed: bool = True,
        **spec: Any,
    ) -> None:
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
            self.kube.pods[f"db-{i}"]["metadata"]["uid"] = f"uid-{i}"
            self.kube.pods[f"db-{i}"]["status"]["containerStatuses"] = [
                {"name": "node", "restartCount": 0, "state": {"running": {}}}
            ]
            node = FakeNode(f"db-{i}")
            node.promote_at_fenced_epoch = relaxed
            self.nodes[url(i)] = node
        self.events: list[tuple[str, str]] = []
        monkeypatch.setattr(
            kube_api,
            "post_event",
            lambda body, *, reason, message, warning=False: self.events.append((reason, message)),
        )
        self.offset = 0.0
        self.settings = MonitorSettings(catchup_timeout=5.0, operation_backoff=30.0)
        self.monitor = self.new_monitor()

    def new_monitor(self) -> ClusterMonitor:
        """A fresh operator: nothing kept in memory, only what the status holds."""
        return ClusterMonitor(
            self.kube,  # type: ignore[arg-type]
            Members(lambda u: self.nodes[u]),
            namespace="ns",
            name="db",
            settings=self.settings,
            clock=lambda: time.monotonic() + self.offset,
        )

    def node(self, i: int) -> FakeNode:
        return self.nodes[url(i)]

    def reasons(self) -> list[str]:
        return [r for r, _ in self.events]

    def calls(self, kind: str) -> list[tuple[str, Any]]:
        """Every node's calls of one kind, in order, as (node, argument)."""
        return [(n.name, arg) for n in self.nodes.values() for call, arg in n.calls if call == kind]

    def at(self, i: int, seq: int) -> None:
        """db-<i> holds the log up to `seq`, written at epoch 1 (as streamed from db-0)."""
        node = self.node(i)
        node.last_seq = node.applied_seq = seq
        node.last_epoch = 1

    def restart_container(self, i: int) -> None:
        container = self.kube.pods[f"db-{i}"]["status"]["containerStatuses"][0]
        container["restartCount"] += 1

    async def bootstrapped(self) -> None:
        await self.monitor.tick()
        assert self.kube.status["leader"] == "db-0"
        for node in self.nodes.values():
            node.calls.clear()
        self.events.clear()


def log_of(h: Harness) -> list[str]:
    """Admin calls across all nodes in the order they happened (fakes record per node)."""
    order: list[str] = []
    for node in h.nodes.values():
        for name in ("fence", "promote", "follow"):
            original = getattr(node, name)

            async def traced(*args: Any, _o: Any = original, _n: str = name, _m: str = node.name,
                             **kw: Any) -> Any:  # fmt: skip
                order.append(f"{_n} {_m}")
                return await _o(*args, **kw)

            setattr(node, name, traced)
    return order


async def test_bootstrap_promotes_ordinal_zero_at_epoch_one_and_others_follow(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = Harness(monkeypatch)
    await h.monitor.tick()
    assert ("promote", 1) in h.node(0).calls
    assert h.node(0).members_hint == 3  # the group size, for quorum acks
    for i in (1, 2):
        assert h.node(i).calls == [("follow", (url(0), 1))]
    status = h.kube.status
    assert (status["leader"], status["epoch"], status["phase"]) == ("db-0", 1, "Healthy")
    assert status["observedGeneration"] == 1
    assert "failover" not in status and "lastFailover" not in status
    assert status["leaderPod"] == {"name": "db-0", "uid": "uid-0", "restarts": 0}
    assert {x["name"]: x["role"] for x in status["members"]} == {
        "db-0": "leader",
        "db-1": "follower",
        "db-2": "follower",
    }
    assert h.kube.role_labels() == {"db-0": "leader", "db-1": "follower", "db-2": "follower"}
    assert "Bootstrapped" in h.reasons()


async def test_a_steady_pass_renews_the_lease_and_writes_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = Harness(monkeypatch)
    await h.bootstrapped()
    await h.monitor.tick()  # the positions the bootstrap changed
    h.node(0).calls.clear()
    patches = len(h.kube.status_patches)
    result = await h.monitor.tick()
    assert not result.acted
    assert h.node(0).calls == [("confirm", 1)]
    # The lease renews from the status this pass read, not from when the call arrives.
    assert h.node(0).lease_tokens[-1] == h.node(0).lease_token
    assert len(h.kube.status_patches) == patches
    assert h.events == []


async def test_a_member_restarted_in_standby_is_told_its_role_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = Harness(monkeypatch)
    await h.bootstrapped()
    h.node(2).role, h.node(2).leader = "standby", None  # restarted: boots in standby
    await h.monitor.tick()
    assert h.node(2).calls == [("follow", (url(0), 1))]
    assert "MemberRejoining" in h.reasons()
    assert h.kube.status["phase"] == "Healthy"


async def test_failover_waits_out_the_unfenced_leaders_lease_before_promoting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Cut from the operator only, db-0 was acked by its followers until they were fenced:
    it may serve strong reads for a lease past those acks, so nobody is promoted before."""
    h = Harness(monkeypatch)
    await h.bootstrapped()
    h.at(1, 10)
    h.at(2, 12)
    h.node(0).reachable = False
    await h.monitor.tick()
    for i in (1, 2):
        h.node(i).ack_age = 0.5
    h.offset += 11
    await h.monitor.tick()
    assert h.calls("fence") == [("db-1", 2), ("db-2", 2)]
    assert h.calls("promote") == []
    status = h.kube.status
    assert status["failover"]["phase"] == "fencing" and status["failover"]["from"] == "db-0"
    assert status.get("leader") is None  # no leader at epoch 2 yet: never the old one beside it
    assert "lease of db-0" in status["message"]
    for i in (1, 2):
        h.node(i).ack_age = 6.0  # the default lease is detectionSeconds / 2 = 5 s
    await h.monitor.tick()
    assert [call[0] for call in h.calls("promote")] == ["db-2"]
    assert (h.kube.status["leader"], h.kube.status["epoch"]) == ("db-2", 2)


async def test_failover_fences_every_member_before_promoting_the_most_advanced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = Harness(monkeypatch)
    await h.bootstrapped()
    h.at(0, 14)
    await h.monitor.tick()  # the status records the leader's position
    h.at(1, 10)
    h.at(2, 12)
    h.node(0).reachable = False

    await h.monitor.tick()
    assert h.kube.status["leader"] == "db-0"
    assert h.kube.status["phase"] == "Degraded"
    assert "failover after 10s" in h.kube.status["message"]
    # Unanswered is not dead: a leader cut from the operator alone still takes writes, so it
    # stays in the read-write Service until the failover replaces it.
    assert h.kube.role_labels()["db-0"] == "leader"

    order = log_of(h)
    h.offset += 11
    await h.monitor.tick()
    assert order[:2] == ["fence db-1", "fence db-2"] or order[:2] == ["fence db-2", "fence db-1"]
    assert order[2:] == ["promote db-2", "follow db-1"]
    assert h.calls("fence") == [("db-1", 2), ("db-2", 2)]
    status = h.kube.status
    assert (status["leader"], status["epoch"]) == ("db-2", 2)
    assert "failover" not in status
    last = status["lastFailover"]
    assert (last["from"], last["to"], last["fromSeq"], last["toSeq"]) == ("db-0", "db-2", 14, 12)
    assert (last["fenced"], last["forced"], last["kind"]) == (["db-1", "db-2"], False, "failover")
    assert "unreachable" in last["reason"]
    assert h.kube.role_labels()["db-2"] == "leader"
    reasons = h.reasons()
    for step in ("FailoverStarted", "EpochBumped", "MembersFenced", "CandidateChosen",
                 "Promoted", "FollowersRepointed", "FailoverCompleted"):  # fmt: skip
        assert step in reasons
    assert status["phase"] == "Degraded"  # db-0 is still down

    h.node(0).reachable = True  # the old leader comes back in standby at epoch 1
    h.node(0).role = "standby"
    await h.monitor.tick()
    assert h.node(0).calls[-1] == ("follow", (url(2), 2))
    assert h.kube.status["phase"] == "Healthy"


async def test_a_node_that_takes_no_promote_at_its_fenced_epoch_is_promoted_at_the_next(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = Harness(monkeypatch, relaxed=False)
    await h.bootstrapped()
    h.node(0).reachable = False
    await h.monitor.tick()
    h.offset += 11
    await h.monitor.tick()
    assert h.calls("fence") == [("db-1", 2), ("db-2", 2)]
    assert h.calls("promote") == [("db-1", 2), ("db-1", 3)]
    assert (h.kube.status["leader"], h.kube.status["epoch"]) == ("db-1", 3)
    assert h.node(2).calls[-1] == ("follow", (url(1), 3))
    assert h.reasons().count("FailoverStarted") == 1


async def test_a_minority_is_never_promoted_and_the_missing_members_are_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = Harness(monkeypatch)
    await h.bootstrapped()
    h.at(1, 50)
    h.node(0).reachable = h.node(2).reachable = False
    await h.monitor.tick()
    h.offset += 11
    await h.monitor.tick()
    await h.monitor.tick()
    assert h.calls("promote") == []
    status = h.kube.status
    assert (status["phase"], status["epoch"], status.get("leader")) == ("FailingOver", 2, None)
    assert status["failover"]["from"] == "db-0"
    assert status["failover"]["phase"] == "fencing"
    assert status["failover"]["fenced"] == ["db-1"]
    assert "db-2" in status["message"]
    progressing = next(x for x in status["conditions"] if x["type"] == "Progressing")
    assert progressing["reason"] == "FailoverBlocked" and "db-2" in progressing["message"]
    assert "FailoverBlocked" in h.reasons()
    assert h.kube.role_labels()["db-0"] is None

    h.node(2).reachable = True  # the majority is back: fenced, then the best one wins
    await h.monitor.tick()
    assert ("db-2", 2) in h.calls("fence")
    assert (h.kube.status["leader"], h.kube.status["epoch"]) == ("db-1", 2)
    assert h.kube.status["lastFailover"]["fenced"] == ["db-1", "db-2"]


async def test_a_two_member_group_fails_over_to_its_fenced_follower(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = Harness(monkeypatch, replicas=2)
    await h.bootstrapped()
    h.node(0).reachable = False
    await h.monitor.tick()
    h.offset += 11
    await h.monitor.tick()
    assert (h.kube.status["leader"], h.kube.status["epoch"]) == ("db-1", 2)


async def test_a_restarted_leader_container_fails_over_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = Harness(monkeypatch)
    await h.bootstrapped()
    h.at(1, 9)
    h.at(2, 9)
    h.node(0).role = "standby"  # the process came back, in standby, with its whole log
    h.at(0, 8)
    h.restart_container(0)
    await h.monitor.tick()  # no detection window for a certain death
    status = h.kube.status
    assert (status["leader"], status["epoch"]) == ("db-1", 2)
    assert "container restarted" in status["lastFailover"]["reason"]
    assert h.calls("fence")[0] == ("db-0", 2)  # the old leader first, it answers
    assert h.node(0).calls[-1] == ("follow", (url(1), 2))
    assert status["leaderPod"]["name"] == "db-1"


async def test_a_restarted_single_member_is_promoted_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = Harness(monkeypatch, replicas=1)
    await h.bootstrapped()
    h.node(0).role = "standby"
    h.restart_container(0)
    await h.monitor.tick()
    assert (h.kube.status["leader"], h.kube.status["epoch"]) == ("db-0", 2)
    assert h.kube.status["phase"] == "Healthy"
    assert "lastFailover" not in h.kube.status  # nobody else took over


async def test_losing_the_epoch_race_neither_fences_nor_promotes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = Harness(monkeypatch)
    await h.bootstrapped()
    h.node(0).reachable = False
    await h.monitor.tick()
    h.offset += 11
    h.kube.conflict_next_status_patch = True  # another operator replica wrote first
    await h.monitor.tick()
    assert h.calls("fence") == [] and h.calls("promote") == []
    assert "changed under this pass" in h.kube.status["message"]


async def test_failover_disabled_leaves_the_leader_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(monkeypatch, failover={"enabled": False, "detectionSeconds": 10})
    await h.bootstrapped()
    h.node(0).reachable = False
    await h.monitor.tick()
    h.offset += 60
    await h.monitor.tick()
    assert h.kube.status["leader"] == "db-0"
    assert h.kube.status["phase"] == "Failed"
    assert h.calls("fence") == []


@pytest.mark.parametrize("phase", ["fencing", "promoting", "repointing"])
async def test_a_new_operator_resumes_a_failover_at_its_epoch(
    monkeypatch: pytest.MonkeyPatch, phase: str
) -> None:
    h = Harness(monkeypatch)
    await h.bootstrapped()
    h.at(1, 10)
    h.at(2, 12)
    h.node(0).reachable = False
    stop_after = {"fencing": "fence", "promoting": "promote", "repointing": "follow"}[phase]

    class Crash(Exception):
        pass

    async def crash(*args: Any, **kw: Any) -> Any:
        raise Crash  # the operator process dies in the middle of this step

    await h.monitor.tick()
    h.offset += 11
    target = h.node(2) if stop_after == "promote" else h.node(1)
    original = getattr(target, stop_after)
    setattr(target, stop_after, crash)
    with pytest.raises(Crash):
        await h.monitor.tick()
    assert h.kube.status["failover"]["phase"] == phase
    assert h.kube.status["epoch"] == 2
    setattr(target, stop_after, original)

    h.monitor = h.new_monitor()  # no memory: the detection timer starts again, unused
    await h.monitor.tick()
    status = h.kube.status
    assert (status["leader"], status["epoch"], status["phase"]) == ("db-2", 2, "Degraded")
    assert "failover" not in status
    assert h.reasons().count("EpochBumped") == 1
    assert h.node(2).role == "leader" and h.node(1).calls[-1] == ("follow", (url(2), 2))


async def test_an_unreachable_candidate_is_replaced_after_the_detection_window(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = Harness(monkeypatch)
    await h.bootstrapped()
    h.at(1, 10)
    h.at(2, 12)
    h.node(0).reachable = False
    await h.monitor.tick()
    h.offset += 11

    async def cut(*args: Any, **kw: Any) -> Any:
        h.node(2).reachable = False  # cut off right after it was fenced
        raise TimeoutError

    h.node(2).promote = cut  # type: ignore[method-assign]
    await h.monitor.tick()
    assert h.kube.status["failover"]["candidate"] == "db-2"
    assert "retrying at epoch 2" in h.kube.status["message"]
    await h.monitor.tick()
    assert h.kube.status["failover"]["candidate"] == "db-2"  # waited for within the window
    h.offset += 11
    await h.monitor.tick()  # a fresh epoch; db-1 alone is a minority: blocked
    assert (h.kube.status["epoch"], h.kube.status["phase"]) == (3, "FailingOver")
    h.node(0).reachable = True
    h.node(0).role = "standby"
    await h.monitor.tick()
    status = h.kube.status
    assert (status["leader"], status["epoch"]) == ("db-1", 3)
    assert "FailoverRestarted" in h.reasons()


async def test_requested_switchover_fences_the_leader_first_then_promotes_the_target(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = Harness(monkeypatch)
    await h.bootstrapped()
    for i in range(3):
        h.at(i, 30)
    h.kube.cluster["metadata"]["annotations"] = {c.ANNOTATION_SWITCHOVER: "db-2"}
    order = log_of(h)
    await h.monitor.tick()
    assert order[0] == "fence db-0"
    assert sorted(order[1:3]) == ["fence db-1", "fence db-2"]
    assert order[3] == "promote db-2"
    assert sorted(order[4:]) == ["follow db-0", "follow db-1"]
    status = h.kube.status
    assert (status["leader"], status["epoch"]) == ("db-2", 2)
    last = status["lastFailover"]
    assert last["reason"] == "switchover requested to db-2"
    assert (last["fromSeq"], last["toSeq"], last["kind"]) == (30, 30, "switchover")
    assert c.ANNOTATION_SWITCHOVER not in h.kube.cluster["metadata"]["annotations"]
    assert h.kube.role_labels() == {"db-0": "follower", "db-1": "follower", "db-2": "leader"}
    assert {"SwitchoverStarted", "SwitchoverCompleted"} <= set(h.reasons())


async def test_a_switchover_waits_for_a_lagging_target_then_is_deferred(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = Harness(monkeypatch)
    await h.bootstrapped()
    h.at(0, 30)  # db-1 stays at 0: not streaming
    h.kube.cluster["metadata"]["annotations"] = {c.ANNOTATION_SWITCHOVER: "db-1"}
    await h.monitor.tick()
    assert h.calls("fence") == []  # writes never stopped
    assert "waiting for db-1 to catch up" in h.kube.status["message"]
    h.offset += 6
    await h.monitor.tick()
    assert "SwitchoverDeferred" in h.reasons()
    assert h.kube.cluster["metadata"]["annotations"][c.ANNOTATION_SWITCHOVER] == "db-1"
    h.node(1).upstream = h.node(0)
    h.node(1).rate = 100
    await h.monitor.tick()  # held back for a while even though it caught up
    assert "held back" in h.kube.status["message"]
    h.offset += 31
    await h.monitor.tick()
    assert (h.kube.status["leader"], h.kube.status["epoch"]) == ("db-1", 2)


async def test_a_switchover_whose_target_misses_the_tail_leaves_the_most_advanced_leading(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = Harness(monkeypatch)
    h.settings = MonitorSettings(switchover_slack=64)
    h.monitor = h.new_monitor()
    await h.bootstrapped()
    h.at(0, 30)  # within the slack, but db-1 never receives the tail
    h.kube.cluster["metadata"]["annotations"] = {c.ANNOTATION_SWITCHOVER: "db-1"}
    await h.monitor.tick()
    assert ("fence", 2) in h.node(0).calls
    assert h.calls("promote") == [("db-0", 2)]
    assert "SwitchoverAborted" in h.reasons()
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


async def test_forced_promotion_promotes_the_named_member_from_a_minority(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = Harness(monkeypatch)
    await h.bootstrapped()
    h.node(0).reachable = h.node(1).reachable = False
    await h.monitor.tick()
    h.offset += 11
    await h.monitor.tick()
    assert h.kube.status["phase"] == "FailingOver"  # blocked: db-2 alone is a minority
    h.kube.cluster["metadata"]["annotations"] = {c.ANNOTATION_FORCE_PROMOTE: "db-2"}
    await h.monitor.tick()
    status = h.kube.status
    assert (status["leader"], status["epoch"]) == ("db-2", 3)
    last = status["lastFailover"]
    assert (last["forced"], last["fenced"], last["to"]) == (True, ["db-2"], "db-2")
    assert c.ANNOTATION_FORCE_PROMOTE not in h.kube.cluster["metadata"]["annotations"]
    forced = [m for r, m in h.events if r == "ForcedPromotion"]
    assert forced and all("acknowledged writes may be lost" in m for m in forced)


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
    result = await h.monitor.tick()
    assert result.failed
    assert h.kube.status["phase"] == "Failed"
    assert "spec.replicas" in h.kube.status["message"]


async def test_a_leader_that_times_out_is_failed_from_when_the_read_began(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two passes slowed by the leader's read timeout (2 s each) cover a 3 s window."""
    h = Harness(monkeypatch, failover={"detectionSeconds": 3})
    await h.bootstrapped()
    leader = h.node(0)

    async def hangs() -> dict[str, Any]:
        h.offset += 2.0  # the read waits out its timeout
        raise TimeoutError

    leader.status = hangs  # type: ignore[method-assign]
    await h.monitor.tick()
    assert h.calls("fence") == []
    await h.monitor.tick()  # 4 s since the first read began: due
    assert h.calls("fence") == [("db-1", 2), ("db-2", 2)]
    assert h.kube.status["epoch"] == 2


async def test_a_cluster_being_deleted_says_deleting_and_is_left_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = Harness(monkeypatch)
    await h.bootstrapped()
    h.kube.cluster["metadata"]["deletionTimestamp"] = "2026-11-30T00:00:00Z"
    h.node(0).reachable = False  # no failover for a cluster on its way out
    await h.monitor.tick()
    await h.monitor.tick()
    assert (h.kube.status["phase"], h.kube.status["leader"]) == ("Deleting", "db-0")
    assert h.calls("fence") == [] and h.events == []


async def test_members_written_by_an_older_operator_in_snake_case_are_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An operator upgrade reads the last known position of a leader the old one recorded."""
    h = Harness(monkeypatch)
    await h.bootstrapped()
    h.kube.cluster["status"]["members"] = [
        {"name": "db-0", "role": "leader", "ready": True, "last_seq": 42, "applied_seq": 42}
    ]
    h.node(0).reachable = False
    h.restart_container(0)
    await h.monitor.tick()
    assert h.kube.status["lastFailover"]["fromSeq"] == 42
