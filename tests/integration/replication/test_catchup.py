"""Catching up: a follower stopped until the leader dropped the log it needs installs a
snapshot and streams on; a follower partitioned from the leader (fault-injecting proxy)
falls behind and, once healed, catches up without losing a write."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from dvecdb_client import NodeClient, NodeError

from .conftest import DIM, Group, wait_converged, wait_for

pytestmark = pytest.mark.integration

SMALL_LOG = [
    "--wal-segment-bytes", "65536",
    "--checkpoint-wal-bytes", "65536",
    "--checkpoint-interval-seconds", "1",
]  # fmt: skip


async def _search_ids(client: NodeClient, queries: np.ndarray) -> list[list[str]]:
    result = await client.search("c", vectors=queries, k=5)
    return [[hit["id"] for hit in row] for row in result["results"]]


async def test_stopped_follower_catches_up_by_snapshot(group: Group) -> None:
    group.start(3, args=SMALL_LOG, env={"DVECDB_REPLICATION_RETENTION_SECONDS": "1"})
    leader, n1, n2 = group.clients
    await leader.promote(1)
    for client in (n1, n2):
        await client.follow(group.nodes[0].url, 1)
    await leader.create_collection("c", DIM, ack="quorum")
    rng = np.random.default_rng(11)
    batch = 0

    async def write_batch() -> None:
        nonlocal batch
        ids = [f"b{batch}-{i}" for i in range(64)]
        await leader.upsert_bulk("c", ids, rng.standard_normal((64, DIM)), ack="one")
        batch += 1

    for _ in range(10):
        await write_batch()
    await wait_converged(group.clients)
    group.nodes[2].stop()
    stopped_at = (await leader.status())["last_seq"]

    async def log_dropped() -> bool:
        for _ in range(10):
            await write_batch()
        return int((await leader.status())["first_seq"]) > stopped_at + 1

    await wait_for(log_dropped, 120, "the leader to drop the log the stopped follower needs")

    group.nodes[2].start()
    await n2.follow(group.nodes[0].url, 1)
    await wait_converged(group.clients)
    detail = await n2.replication_status()
    assert detail["follower"]["snapshots_installed"] >= 1
    expected = batch * 64
    counts = [(await c.get_collection("c"))["count"] for c in group.clients]
    assert counts == [expected] * 3
    queries = rng.standard_normal((10, DIM)).astype(np.float32)
    assert await _search_ids(n2, queries) == await _search_ids(leader, queries)

    # It keeps streaming after the snapshot: a new write reaches it.
    result = await leader.upsert_bulk("c", ["after"], np.ones(DIM), ack="quorum")
    answer = await n2.search("c", np.ones(DIM), k=1, min_seq=result["seq"])
    assert answer["results"][0][0]["id"] == "after"


async def test_partitioned_follower_lags_then_heals(group: Group, proxy_factory) -> None:  # type: ignore[no-untyped-def]
    group.start(3)
    leader, n1, n2 = group.clients
    proxy = proxy_factory(group.nodes[0].port)
    await leader.promote(1)
    await n1.follow(proxy.url, 1)
    await n2.follow(group.nodes[0].url, 1)
    await leader.create_collection("c", DIM, ack="quorum")
    acked: dict[str, np.ndarray] = {}
    stop = asyncio.Event()

    async def ingest() -> None:
        rng = np.random.default_rng(5)
        batch = 0
        while not stop.is_set():
            ids = [f"p{batch}-{i}" for i in range(8)]
            vectors = rng.standard_normal((8, DIM)).astype(np.float32)
            try:
                await leader.upsert_bulk("c", ids, vectors, ack="one", retry=False)
            except NodeError as exc:
                raise AssertionError(f"ack=one write failed during the partition: {exc}") from exc
            acked.update(zip(ids, vectors, strict=True))
            batch += 1
            await asyncio.sleep(0.005)

    writer = asyncio.create_task(ingest())
    try:
        await wait_for(lambda: _has(acked, 200), 60, "ingest to start")
        proxy.partition()

        async def lagging() -> bool:
            followers = {f["node_id"]: f for f in (await leader.status())["followers"]}
            return followers["n1"]["lag_seq"] > 100 and followers["n1"]["lag_seconds"] > 1.0

        await wait_for(lagging, 60, "the partitioned follower's lag to rise")
        proxy.heal()
        await asyncio.sleep(0.5)
    finally:
        stop.set()
        await writer

    await wait_converged(group.clients)
    missing = [i for i in acked if await n1.get("c", i) is None]
    assert not missing, f"{len(missing)} writes missing on the healed follower"
    counts = [(await c.get_collection("c"))["count"] for c in group.clients]
    assert counts == [len(acked)] * 3
    assert proxy.dropped_bytes > 0


async def _has(acked: dict[str, np.ndarray], count: int) -> bool:
    return len(acked) >= count
