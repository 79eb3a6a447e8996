"""The operator's monitor driving real `dvecdb-node` processes on loopback.

Kubernetes is the in-memory fake of the operator's unit tests (pods point at the nodes'
loopback ports); the nodes, their admin API, replication and fencing are real. This pins the
operator against the node's actual behaviour: bootstrap, the CloudNativePG-style "the more
advanced follower wins" failover with no acknowledged write lost, rejoin and switchover, and
a failover whose promote fails (frozen candidate, cut connection) ending at exactly epoch + 1.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from dvecdb_node import client as node_client
from dvecdb_node.client import NodeClient
from dvecdb_operator import constants as c
from dvecdb_operator import kube as kube_api
from dvecdb_operator.members import Members, client_factory
from dvecdb_operator.monitor import ClusterMonitor, MonitorSettings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit" / "operator"))
sys.path.insert(0, str(Path(__file__).resolve().parent / "replication"))
from faultproxy import FaultProxy
from operator_fakes import FakeKube

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

TOKEN = "operator-live-token"
DIM = 4


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
                args=["--fsync", "batch"],
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
        self.members = Members(client_factory(token=TOKEN, timeout=1.0))
        self.monitor = ClusterMonitor(
            self.kube,  # type: ignore[arg-type]
            self.members,
            namespace="ns",
            name="db",
            settings=MonitorSettings(catchup_timeout=10.0, catchup_poll=0.05),
        )
        self.clients = [NodeClient(n.url, token=TOKEN, timeout=10.0, retries=0) for n in self.nodes]
        self.proxies: list[FaultProxy] = []

    def proxy(self, index: int) -> FaultProxy:
        """Route the operator (and members told to follow it) to db-<index> through a proxy."""
        proxy = FaultProxy(self.nodes[index].port).start()
        self.proxies.append(proxy)
        port = self.kube.pods[f"db-{index}"]["spec"]["containers"][0]["ports"][0]
        port["containerPort"] = proxy.port
        return proxy

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


async def _only_db1_can_take_over(live: LiveCluster) -> int:
    """Bootstrap, write, lose db-2 then the leader: db-1 is the one candidate left.

    Returns how many vectors were acknowledged (the count the new leader must hold).
    """
    await live.until(live.leads("db-0", 1), "bootstrap")
    leader = live.clients[0]
    await leader.create_collection("c", DIM, ack="quorum")
    await leader.upsert("c", vectors(0, 20), ack="quorum")
    live.nodes[2].kill()
    await leader.upsert("c", vectors(20, 10), ack="one")  # durable on db-1 as well
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
    node = await live.clients[1].status()
    assert (node["role"], node["epoch"]) == ("leader", 2)
    assert (await live.clients[1].get_collection("c"))["count"] == acked
    reasons = [r for r, _ in live.events]
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
    acked = await _only_db1_can_take_over(live)
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
    acked = await _only_db1_can_take_over(live)
    calls = _fault_first_promote(live, monkeypatch, proxy.partition, proxy.heal)
    await live.until(
        lambda: "PromoteRetrying" in [r for r, _ in live.events], "the failed promote", within=30
    )
    assert live.kube.status["phase"] == "FailingOver"
    assert "retrying at epoch 2" in live.kube.status["message"]
    node = await live.clients[1].status()
    assert node["role"] != "leader" and node["epoch"] < 2  # the promote never reached it
    await live.until(live.leads("db-1", 2, healthy=False), "the retried promote", within=60)
    assert [epoch for _, epoch in calls] == [2, 2]
    await _assert_one_failover_at_epoch_2(live, acked)
