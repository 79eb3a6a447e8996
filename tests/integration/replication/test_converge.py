"""Three real nodes: one promoted, two following; ingest with ack=one, then the followers
converge to the leader's applied_seq and answer searches exactly like it. Also measures the
replication lag seen on the leader while ingest runs."""

from __future__ import annotations

import asyncio
import os
import time

import aiohttp
import numpy as np
import pytest

from dvecdb_client import NodeClient

from .conftest import DIM, Group, save_report, wait_converged, wait_for

pytestmark = pytest.mark.integration

WRITES = int(os.environ.get("DVECDB_TEST_REPL_WRITES", "20000"))
CONCURRENCY = 32


async def _ingest(client: NodeClient, writes: int, rng: np.random.Generator) -> dict[str, int]:
    """``writes`` single-vector upserts at ack=one from CONCURRENCY writers; id -> seq."""
    acked: dict[str, int] = {}
    vectors = rng.standard_normal((writes, DIM)).astype(np.float32)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(writes):
        queue.put_nowait(index)

    async def writer() -> None:
        while not queue.empty():
            index = queue.get_nowait()
            result = await client.upsert_bulk("c", [f"v{index}"], vectors[index], ack="one")
            acked[f"v{index}"] = result["seq"]

    await asyncio.gather(*(writer() for _ in range(CONCURRENCY)))
    return acked


async def _sample_lag(leader: NodeClient, stop: asyncio.Event, out: list[dict[str, float]]) -> None:
    while not stop.is_set():
        status = await leader.status()
        for follower in status.get("followers", []):
            out.append({"lag_seq": follower["lag_seq"], "lag_seconds": follower["lag_seconds"]})
        await asyncio.sleep(0.05)


async def setup_group(group: Group, count: int = 3) -> None:
    group.start(count)
    await group.client(0).promote(1)
    for client in group.clients[1:]:
        await client.follow(group.nodes[0].url, 1)
    await group.client(0).create_collection("c", DIM, "l2", ack="one")


async def test_followers_converge_and_answer_alike(group: Group) -> None:
    await setup_group(group)
    leader = group.client(0)
    rng = np.random.default_rng(7)
    lag: list[dict[str, float]] = []
    stop = asyncio.Event()
    sampler = asyncio.create_task(_sample_lag(leader, stop, lag))
    started = time.monotonic()
    acked = await _ingest(leader, WRITES, rng)
    elapsed = time.monotonic() - started
    stop.set()
    await sampler
    assert len(acked) == WRITES

    target = await wait_converged(group.clients)
    statuses = [await c.status() for c in group.clients]
    assert {s["applied_seq"] for s in statuses} == {target}
    assert [s["role"] for s in statuses] == ["leader", "follower", "follower"]
    counts = [(await c.get_collection("c"))["count"] for c in group.clients]
    assert counts == [WRITES] * 3

    queries = rng.standard_normal((20, DIM)).astype(np.float32)
    answers = []
    for client in group.clients:
        result = await client.search("c", vectors=queries, k=10)
        answers.append([[hit["id"] for hit in row] for row in result["results"]])
    assert answers[1] == answers[0]
    assert answers[2] == answers[0]

    async def leader_sees_caught_up() -> bool:
        followers = (await leader.status())["followers"]
        assert sorted(f["node_id"] for f in followers) == ["n1", "n2"]
        return all(f["lag_seq"] == 0 and f["received_seq"] == target for f in followers)

    await wait_for(leader_sees_caught_up, 10, "the leader to see both followers caught up")

    seqs = np.array([s["lag_seq"] for s in lag] or [0], dtype=np.float64)
    secs = np.array([s["lag_seconds"] for s in lag] or [0.0], dtype=np.float64) * 1000
    report = {
        "writes": WRITES,
        "ingest_seconds": round(elapsed, 2),
        "writes_per_second": round(WRITES / elapsed, 1),
        "lag_samples": len(lag),
        "lag_seq_p50": float(np.percentile(seqs, 50)),
        "lag_seq_p99": float(np.percentile(seqs, 99)),
        "lag_ms_p50": round(float(np.percentile(secs, 50)), 2),
        "lag_ms_p99": round(float(np.percentile(secs, 99)), 2),
    }
    save_report("replication_lag", report)


async def test_lag_metrics_exported(group: Group) -> None:
    await setup_group(group)
    leader = group.client(0)
    await leader.upsert_bulk("c", ["a"], np.ones(DIM, dtype=np.float32), ack="quorum")
    await wait_converged(group.clients)

    async def exported() -> bool:
        async with aiohttp.ClientSession() as session:
            async with session.get(group.nodes[0].url + "/metrics") as resp:
                text = await resp.text()
        return 'dvecdb_replication_lag_seq{follower="n1"} 0.0' in text and (
            'dvecdb_replication_lag_seconds{follower="n2"}' in text
        )

    await wait_for(exported, 10, "replication lag metrics per follower")
