"""The operator's failover pass driving real `dvecdb-node` processes on loopback.

Kubernetes is the in-memory fake of the operator's unit tests (pods point at the nodes'
loopback ports); the nodes, their admin API, replication, fencing and leases are real. This
pins the pass against the node's actual behaviour: bootstrap, "the most advanced member wins"
with no acknowledged write lost, rejoin and switchover; a promote that fails (frozen candidate,
cut connection) retried at the same epoch; an operator that cannot reach the leader while the
followers can (every follower fenced before any promote, no acknowledged write lost); a
minority that is never promoted; an operator restarted mid-failover finishing it at its epoch.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio

from dvecdb_client import NodeClient, NodeError
from dvecdb_client import client as node_client
from dvecdb_operator import constants as c
from dvecdb_operator import kube as kube_api
from dvecdb_operator.members import Members, client_factory
from dvecdb_operator.monitor import ClusterMonitor, MonitorSettings
from tests.support.faultproxy import FaultProxy
from tests.support.operator_fakes import FakeKube

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

TOKEN = "operator-live-token"
DIM = 4


class Crash(Exception):
    """The operator process dies in the middle of a step."""


class LiveCluster:
    def __init__(self, node_factory: Callable[..., Any], monkeypatch: pytest.MonkeyPatch) -> None:
        self.kube = FakeKube(
            {
                "apiVersion": c.API_VERSION,
                "kind": c.KIND,
                "metadata": {"name": "db", "namespace": "ns"},
                "spec": {"replicas": 3, "failover": {"detectionSeconds": 1}},
            }
        )
        self.kube.objects[("StatefulSet", "db")] = {"status": {"updateRevision": "r1"}}
        self.nodes = [
            node_factory(
                standalone=False,
                node_id=f"db-{i}",
                args=["--fsync", "batch", "--ack-timeout-seconds", "2"],
                env={"DVECDB_CLUSTER_TOKEN": TOKEN},
            )
            for i in range(3)
        ]
        for i, node in enumerate(self.nodes):
            self.kube.add_pod(f"db-{i}", "127.0.0.1")
            self.kube.pods[f"db-{i}"]["spec"] = {
                "containers": [
                    {"name": "node", "ports": [{"name": "http", "containerPort": node.port}]}
                ]
            }
        self.events: list[tuple[str, str]] = []
        monkeypatch.setattr(
            kube_api,
            "post_event",
            lambda body, *, reason, message, warning=False: self.events.append((reason, message)),
        )
        self.members, self.monitor = self.new_operator()
        self.clients = [NodeClient(n.url, token=TOKEN, timeout=10.0, retries=0) for n in self.nodes]
        self.proxies: list[FaultProxy] = []

    def new_operator(self) -> tuple[Members, ClusterMonitor]:
        """A fresh operator process: its own node clients, nothing kept in memory."""
        members = Members(client_factory(token=TOKEN, timeout=1.0))
        monitor = ClusterMonitor(
            self.kube,  # type: ignore[arg-type]
            members,
            namespace="ns",
            name="db",
            settings=MonitorSettings(catchup_timeout=10.0),
        )
        return members, monitor

    async def restart_operator(self) -> None:
        await self.members.close()
        self.members, self.monitor = self.new_operator()

    def proxy(self, index: int) -> FaultProxy:
        """Route the operator (and members it tells to follow db-<index> from now on) to
        db-<index> through a proxy; members already following it keep their direct link."""
        proxy = FaultProxy(self.nodes[index].port).start()
        self.proxies.append(proxy)
        port = self.kube.pods[f"db-{index}"]["spec"]["containers"][0]["ports"][0]
        port["containerPort"] = proxy.port
        return proxy

    def admin_log(self) -> list[tuple[str, str, int]]:
        """Record the operator's fence and promote calls, in order: (call, member, epoch)."""
        calls: list[tuple[str, str, int]] = []
        members = self.members
        fence, promote = members.fence, members.promote

        async def traced_fence(member: Any, epoch: int) -> Any:
            calls.append(("fence", member.name, epoch))
            return await fence(member, epoch)

        async def traced_promote(url: str, epoch: int, *, members: int | None = None) -> Any:
            calls.append(("promote", self.name_of(url), epoch))
            return await promote(url, epoch, members=members)

        self.members.fence = traced_fence  # type: ignore[method-assign]
        self.members.promote = traced_promote  # type: ignore[method-assign]
        return calls

    def name_of(self, url: str) -> str:
        for name, pod in self.kube.pods.items():
            if url.endswith(f":{pod['spec']['containers'][0]['ports'][0]['containerPort']}"):
                return name
        return url

    async def close(self) -> None:
        await self.members.close()
        for client in self.clients:
            await client.close()
        for proxy in self.proxies:
            proxy.stop()

    async def until(self, check: Callable[[], bool], what: str, within: float = 30.0) -> None:
        """Run monitoring passes until `check` holds."""
        deadline = time.monotonic() + within
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; status {self.kube.status}")
            await self.monitor.tick()
            await asyncio.sleep(0.1)

    async def passes(self, seconds: float) -> None:
        """Run monitoring passes for a while."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            await self.monitor.tick()
            await asyncio.sleep(0.1)

    def reasons(self) -> list[str]:
        return [r for r, _ in self.events]

    def leads(self, name: str, epoch: int, *, healthy: bool = True) -> Callable[[], bool]:
        def check() -> bool:
            status = self.kube.status
            return (
                status.get("leader") == name
                and status.get("epoch") == epoch
                and (status.get("phase") == "Healthy" or not healthy)
            )

        return check

    async def positions(self) -> dict[str, int]:
        out = {}
        for i, client in enumerate(self.clients):
            try:
                out[f"db-{i}"] = int((await client.status())["last_seq"])
            except Exception:
                continue
        return out


@pytest_asyncio.fixture
async def live(
    node_factory: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[LiveCluster]:
    cluster = LiveCluster(node_factory, monkeypatch)
    yield cluster
    await cluster.close()


def vectors(start: int, count: int) -> list[dict[str, Any]]:
    return [
        {"id": f"v{i}", "vector": [float(i), 1.0, 0.0, 0.5]} for i in range(start, start + count)
    ]


async def test_bootstrap_failover_to_the_most_advanced_follower_then_switchover(
    live: LiveCluster,
) -> None:
    await live.until(live.leads("db-0", 1), "bootstrap")
    leader = live.clients[0]
    await leader.create_collection("c", DIM, ack="quorum")
    await leader.upsert("c", vectors(0, 20), ack="quorum")

    # db-1 goes down and misses writes that db-2 acknowledges (ack=one); then the leader
    # dies and db-1 comes back behind: both answer, and the more advanced db-2 must win.
    live.nodes[1].kill()
    for batch in range(5):
        await leader.upsert("c", vectors(20 + batch * 10, 10), ack="one")
    acked = int((await leader.status())["last_seq"])
    live.nodes[0].kill()
    live.nodes[1].start()
    positions = await live.positions()
    assert positions["db-2"] >= acked > positions["db-1"]

    await live.until(live.leads("db-2", 2, healthy=False), "failover to db-2")
    assert live.kube.status["phase"] == "Degraded"  # db-0 is still down
    failover = live.kube.status["lastFailover"]
    assert (failover["from"], failover["to"]) == ("db-0", "db-2")
    assert failover["toSeq"] >= acked
    reasons = [r for r, _ in live.events]
    for step in ("FailoverStarted", "EpochBumped", "Promoted", "FailoverCompleted"):
        assert step in reasons
    assert live.kube.role_labels()["db-2"] == "leader"
    new_leader = live.clients[2]
    assert (await new_leader.get_collection("c"))["count"] == 70

    # The old leader comes back (in standby) and is told to follow the new one.
    live.nodes[0].start()
    await live.until(
        lambda: (
            all(m.get("role") in ("leader", "follower") for m in live.kube.status["members"])
            and live.kube.status.get("phase") == "Healthy"
        ),
        "db-0 to rejoin",
        within=60,
    )
    status0 = await live.clients[0].status()
    assert (status0["role"], status0["epoch"]) == ("follower", 2)

    # Planned switchover back to db-0: no acknowledged write is lost.
    await new_leader.upsert("c", vectors(70, 5), ack="one")
    live.kube.cluster["metadata"]["annotations"] = {c.ANNOTATION_SWITCHOVER: "db-0"}
    await live.until(live.leads("db-0", 3), "switchover to db-0", within=60)
    assert c.ANNOTATION_SWITCHOVER not in live.kube.cluster["metadata"]["annotations"]
    assert (await live.clients[0].get_collection("c"))["count"] == 75
    assert "SwitchoverCompleted" in [r for r, _ in live.events]


async def _db1_is_the_candidate(live: LiveCluster) -> int:
    """Bootstrap, write, let db-2 fall behind, then lose the leader: db-1 holds the most log.

    Returns how many vectors were acknowledged (the count the new leader must hold).
    """
    await live.until(live.leads("db-0", 1), "bootstrap")
    leader = live.clients[0]
    await leader.create_collection("c", DIM, ack="quorum")
    await leader.upsert("c", vectors(0, 20), ack="quorum")
    live.nodes[2].kill()
    await leader.upsert("c", vectors(20, 10), ack="one")  # durable on db-1 as well
    live.nodes[2].start()  # back, behind, in standby: it counts in the fenced majority
    live.nodes[0].kill()
    return 30


def _fault_first_promote(
    live: LiveCluster,
    monkeypatch: pytest.MonkeyPatch,
    fault: Callable[[], Any],
    heal: Callable[[], Any],
) -> list[tuple[str, int]]:
    """Make the operator's first promote fail the way `fault` breaks it; `heal` afterwards."""
    # The node's client waits at least PROMOTE_SECONDS for a promote; keep the test short.
    monkeypatch.setattr(node_client, "PROMOTE_SECONDS", 1.5)
    calls: list[tuple[str, int]] = []
    original = live.members.promote

    async def promote(url: str, epoch: int, *, members: int | None = None) -> Any:
        calls.append((url, epoch))
        if len(calls) > 1:
            return await original(url, epoch, members=members)
        fault()
        try:
            return await original(url, epoch, members=members)
        finally:
            heal()

    monkeypatch.setattr(live.members, "promote", promote)
    return calls


async def _assert_one_failover_at_epoch_2(live: LiveCluster, acked: int) -> None:
    status = live.kube.status
    assert (status["leader"], status["epoch"]) == ("db-1", 2)
    assert status["lastFailover"]["to"] == "db-1"
    assert status["lastFailover"]["fenced"] == ["db-1", "db-2"]
    node = await live.clients[1].status()
    assert (node["role"], node["epoch"]) == ("leader", 2)
    assert (await live.clients[1].get_collection("c"))["count"] == acked
    reasons = live.reasons()
    assert reasons.count("EpochBumped") == 1
    assert "PromoteFailed" in reasons
    assert not any("stale_epoch" in m for r, m in live.events if r == "PromoteFailed")
    # It takes writes at the new epoch, replicated to the old leader once that returns.
    live.nodes[0].start()
    await live.until(
        lambda: any(
            m.get("name") == "db-0" and m.get("role") == "follower"
            for m in live.kube.status.get("members", [])
        ),
        "db-0 to follow db-1",
        within=60,
    )
    result = await live.clients[1].upsert("c", vectors(100, 3), ack="one")
    assert result["count"] == 3
    assert live.kube.status["epoch"] == 2


async def test_a_promote_answer_lost_while_the_candidate_froze_ends_at_epoch_plus_one(
    live: LiveCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    acked = await _db1_is_the_candidate(live)
    candidate = live.nodes[1]
    calls = _fault_first_promote(
        live,
        monkeypatch,
        lambda: candidate.signal(signal.SIGSTOP),  # the request waits in its socket
        lambda: candidate.signal(signal.SIGCONT),  # and is served after the client gave up
    )
    await live.until(live.leads("db-1", 2, healthy=False), "failover to db-1", within=60)
    assert [epoch for _, epoch in calls] == [2, 2]  # a no-op retry if the first one landed
    await _assert_one_failover_at_epoch_2(live, acked)


async def test_a_promote_cut_by_a_partition_is_retried_at_the_same_epoch(
    live: LiveCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = live.proxy(1)
    acked = await _db1_is_the_candidate(live)
    calls = _fault_first_promote(live, monkeypatch, proxy.partition, proxy.heal)
    await live.until(lambda: "PromoteFailed" in live.reasons(), "the failed promote", within=30)
    assert live.kube.status["phase"] == "FailingOver"
    assert live.kube.status["failover"]["phase"] == "promoting"
    assert "retrying at epoch 2" in live.kube.status["message"]
    node = await live.clients[1].status()
    assert (node["role"], node["epoch"]) == ("standby", 2)  # fenced; the promote never came
    await live.until(live.leads("db-1", 2, healthy=False), "the retried promote", within=60)
    assert [epoch for _, epoch in calls] == [2, 2]
    await _assert_one_failover_at_epoch_2(live, acked)


class Writer:
    """Writes one vector at a time to one member only (no redirects), recording each
    acknowledged write with the time its request was sent."""

    def __init__(self, url: str, ack: str) -> None:
        self.client = NodeClient(url, token=TOKEN, timeout=10.0, retries=0, follow_leader=False)
        self.ack = ack
        self.acked: list[tuple[str, float]] = []
        self.failed = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        number = 1000
        while not self._stop.is_set():
            item, sent = f"v{number}", time.monotonic()
            try:
                await self.client.upsert("c", vectors(number, 1), ack=self.ack, retry=False)
                self.acked.append((item, sent))
            except NodeError:
                self.failed += 1
                await asyncio.sleep(0.05)
            number += 1

    def __enter__(self) -> Writer:
        self._task = asyncio.create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task
        await self.client.close()


async def missing_on(client: NodeClient, ids: list[str]) -> list[str]:
    return [i for i in ids if await client.get("c", i) is None]


async def test_an_operator_cut_off_from_the_leader_fences_every_follower_before_promoting(
    live: LiveCluster,
) -> None:
    await live.until(live.leads("db-0", 1), "bootstrap")
    await live.clients[0].create_collection("c", DIM, ack="quorum")
    await live.clients[0].upsert("c", vectors(0, 10), ack="quorum")
    cut = live.proxy(0)
    cut.partition()  # only the operator's path to db-0: the followers stream on from it
    calls = live.admin_log()
    done: dict[str, float] = {}
    fence = live.members.fence

    async def timed_fence(member: Any, epoch: int) -> Any:
        answer = await fence(member, epoch)
        done[member.name] = time.monotonic()
        return answer

    live.members.fence = timed_fence  # type: ignore[method-assign]
    writer = Writer(live.nodes[0].url, "one")
    with writer:
        await live.until(
            lambda: live.kube.status.get("leader") in ("db-1", "db-2"),
            "a failover away from db-0",
            within=60,
        )
        await asyncio.sleep(1.0)  # writes keep going to the old leader a while longer
    await writer.stop()

    # Every follower was fenced before anything was promoted; db-0 was never reached.
    fences = [i for i, (call, name, _) in enumerate(calls) if call == "fence"]
    promotes = [i for i, (call, _, _) in enumerate(calls) if call == "promote"]
    assert {calls[i][1] for i in fences} == {"db-1", "db-2"}
    assert promotes and max(fences) < min(promotes)
    status = live.kube.status
    assert status["epoch"] == 2 and status["lastFailover"]["fenced"] == ["db-1", "db-2"]
    # The old leader acknowledged writes until its followers were fenced, none sent after.
    fenced = max(done[n] for n in ("db-1", "db-2"))
    assert writer.acked, f"no write acknowledged before the failover ({writer.failed} failed)"
    assert [i for i, sent in writer.acked if sent > fenced] == []
    assert writer.failed > 0
    # And the new leader holds every write the old one acknowledged.
    new_leader = live.clients[int(status["leader"][-1])]
    assert await missing_on(new_leader, [i for i, _ in writer.acked]) == []

    cut.heal()  # the old leader is fenced and told to follow at the new epoch
    await live.until(
        lambda: any(
            m.get("name") == "db-0" and m.get("role") == "follower"
            for m in live.kube.status.get("members", [])
        ),
        "db-0 to follow the new leader",
        within=60,
    )
    assert (await live.clients[0].status())["epoch"] == 2


async def test_a_minority_reachable_by_the_operator_is_never_promoted(live: LiveCluster) -> None:
    await live.until(live.leads("db-0", 1), "bootstrap")
    await live.clients[0].create_collection("c", DIM, ack="quorum")
    await live.clients[0].upsert("c", vectors(0, 10), ack="quorum")
    cuts = [live.proxy(0), live.proxy(2)]
    for cut in cuts:
        cut.partition()  # the operator reaches db-1 only; db-0 and db-2 still see each other
    calls = live.admin_log()
    await live.passes(4.0)

    assert [c for c in calls if c[0] == "promote"] == []
    assert {(call, name) for call, name, _ in calls} == {("fence", "db-1")}
    status = live.kube.status
    # The new epoch is written without a leader: none is known at it until one is promoted.
    assert (status["phase"], status.get("leader"), status["epoch"]) == ("FailingOver", None, 2)
    assert status["failover"]["fenced"] == ["db-1"] and "db-2" in status["message"]
    assert "FailoverBlocked" in live.reasons()
    # db-0 and db-2 are a majority and still acknowledge ack=quorum writes: promoting db-1
    # (which holds none of them) would have lost every one.
    result = await live.clients[0].upsert("c", vectors(100, 5), ack="quorum")
    assert result["count"] == 5

    for cut in cuts:
        cut.heal()
    await live.until(
        lambda: "failover" not in live.kube.status and live.kube.status.get("leader") is not None,
        "the failover to finish once a majority is fenced",
        within=60,
    )
    status = live.kube.status
    assert status["leader"] in ("db-0", "db-2") and status["epoch"] == 2
    new_leader = live.clients[int(status["leader"][-1])]
    assert await missing_on(new_leader, [f"v{i}" for i in range(100, 105)]) == []
    assert ("promote", "db-1", 2) not in calls


async def test_an_operator_restarted_mid_failover_finishes_it_at_the_same_epoch(
    live: LiveCluster,
) -> None:
    acked = await _db1_is_the_candidate(live)

    async def crash(url: str, epoch: int, *, members: int | None = None) -> Any:
        raise Crash  # the operator's process dies right before the promote

    live.members.promote = crash  # type: ignore[method-assign]
    with pytest.raises(Crash):
        await live.until(lambda: False, "the operator to die mid-failover", within=30)
    status = live.kube.status
    assert (status["epoch"], status["failover"]["phase"]) == (2, "promoting")
    assert status["failover"]["candidate"] == "db-1"

    await live.restart_operator()
    await live.until(live.leads("db-1", 2, healthy=False), "the new operator to finish", within=30)
    status = live.kube.status
    assert "failover" not in status and status["lastFailover"]["to"] == "db-1"
    reasons = live.reasons()
    assert reasons.count("EpochBumped") == 1 and reasons.count("FailoverStarted") == 1
    assert "FailoverRestarted" not in reasons
    node = await live.clients[1].status()
    assert (node["role"], node["epoch"]) == ("leader", 2)
    assert (await live.clients[1].get_collection("c"))["count"] == acked
    assert (await live.clients[2].status())["epoch"] == 2


async def test_a_forced_promotion_takes_the_named_member_whatever_the_majority(
    live: LiveCluster,
) -> None:
    await live.until(live.leads("db-0", 1), "bootstrap")
    await live.clients[0].create_collection("c", DIM, ack="quorum")
    await live.clients[0].upsert("c", vectors(0, 10), ack="quorum")
    live.nodes[0].kill()
    live.nodes[2].kill()  # the majority is gone for good: only a human may decide
    await live.passes(3.0)
    assert live.kube.status["phase"] == "FailingOver"
    assert (await live.clients[1].status())["role"] == "standby"

    live.kube.cluster["metadata"]["annotations"] = {c.ANNOTATION_FORCE_PROMOTE: "db-1"}
    await live.until(live.leads("db-1", 3, healthy=False), "the forced promotion", within=30)
    status = live.kube.status
    last = status["lastFailover"]
    assert (last["to"], last["forced"], last["fenced"]) == ("db-1", True, ["db-1"])
    assert c.ANNOTATION_FORCE_PROMOTE not in live.kube.cluster["metadata"]["annotations"]
    assert any(
        "acknowledged writes may be lost" in m for r, m in live.events if r == "ForcedPromotion"
    )
    # Alone, it takes writes the operator's lease renewals keep it allowed to acknowledge.
    await live.passes(0.5)
    assert (await live.clients[1].upsert("c", vectors(10, 2), ack="leader"))["count"] == 2
    assert (await live.clients[1].get_collection("c"))["count"] == 12
