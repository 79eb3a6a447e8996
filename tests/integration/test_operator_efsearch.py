"""A new `spec.node.hnsw.efSearch` reaches live collections on real `dvecdb-node` members
through the operator's pass, with no restart (issue #15).

Kubernetes is the operator's in-memory fake (as in `test_operator_live`); the nodes, the
PATCH, its replication and the status and Events the pass writes are real.
"""

from __future__ import annotations

import pytest

from tests.integration.test_operator_live import DIM, LiveCluster, live, vectors

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]
__all__ = ["live"]  # the fixture, used by name


async def _efs(cluster: LiveCluster, name: str) -> list[int]:
    return [
        int((await client.get_collection(name))["hnsw"]["ef_search"]) for client in cluster.clients
    ]


async def test_a_new_ef_search_is_patched_into_every_collection_without_restarts(
    live: LiveCluster,
) -> None:
    await live.until(live.leads("db-0", 1), "bootstrap")
    record = live.kube.status["efSearch"]
    # First sight: the members started with the spec's default; nothing to sweep.
    assert (record["desired"], record["applied"], record["collections"]) == (50, 50, 0)
    leader = live.clients[0]
    await leader.create_collection("a", DIM, hnsw={"ef_search": 50}, ack="quorum")
    await leader.create_collection("b", DIM, hnsw={"ef_search": 20}, ack="quorum")
    await leader.upsert("a", vectors(0, 10), ack="quorum")
    pids = [node.proc.pid for node in live.nodes if node.proc is not None]

    live.kube.cluster["spec"]["node"] = {"hnsw": {"efSearch": 120}}
    await live.until(
        lambda: live.kube.status.get("efSearch", {}).get("applied") == 120, "the sweep"
    )
    record = live.kube.status["efSearch"]
    assert (record["desired"], record["collections"], record["message"]) == (120, 2, "")
    assert record["time"]
    applied = [m for r, m in live.events if r == "EfSearchApplied"]
    assert len(applied) == 1 and "db-0/a, db-0/b" in applied[0]
    await live.passes(0.5)  # every member applies the records
    assert await _efs(live, "a") == [120, 120, 120]
    assert await _efs(live, "b") == [120, 120, 120]
    assert [node.proc.pid for node in live.nodes if node.proc is not None] == pids

    # Tuned by hand afterwards: later passes leave it alone (one sweep per change).
    await leader.update_collection("b", ef_search=33, ack="quorum")
    await live.passes(1.0)
    assert (await leader.get_collection("b"))["hnsw"]["ef_search"] == 33
    assert len([r for r, _ in live.events if r == "EfSearchApplied"]) == 1


async def test_a_change_made_while_the_leader_is_down_lands_after_the_failover(
    live: LiveCluster,
) -> None:
    await live.until(live.leads("db-0", 1), "bootstrap")
    await live.clients[0].create_collection("a", DIM, ack="quorum")
    live.nodes[0].kill()
    live.kube.cluster["spec"]["node"] = {"hnsw": {"efSearch": 77}}
    await live.until(
        lambda: live.kube.status.get("efSearch", {}).get("applied") == 77,
        "the sweep on the new leader",
        within=60,
    )
    leader = live.kube.status["leader"]
    assert leader in ("db-1", "db-2") and live.kube.status["epoch"] == 2
    index = int(leader[-1])
    assert (await live.clients[index].get_collection("a"))["hnsw"]["ef_search"] == 77
