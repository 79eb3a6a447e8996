"""Failover by hand: SIGKILL the leader mid-ingest, promote the follower with the highest
received seq at epoch+1, repoint the other; every write acknowledged with ``one`` or
``quorum`` is on the new leader. Reports the time from SIGKILL to the first write the new
leader acknowledges."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from dvecdb_client import NodeClient, NodeError

from .conftest import DIM, Group, save_report, wait_converged, wait_for
from .test_converge import setup_group

pytestmark = pytest.mark.integration

WRITERS = 16
KILL_AFTER_ACKS = 1500


async def _writer(
    client: NodeClient,
    prefix: str,
    ack: str,
    acked: dict[str, np.ndarray],
    rng: np.random.Generator,
    stop: asyncio.Event,
) -> None:
    batch = 0
    while not stop.is_set():
        size = int(rng.integers(1, 8))
        ids = [f"{prefix}-{batch}-{i}" for i in range(size)]
        vectors = rng.standard_normal((size, DIM)).astype(np.float32)
        batch += 1
        try:
            await client.upsert_bulk("c", ids, vectors, ack=ack, retry=False)
        except NodeError:
            return
        acked.update(zip(ids, vectors, strict=True))


async def test_failover_keeps_every_acknowledged_write(group: Group) -> None:
    await setup_group(group)
    old = group.nodes[0]
    acked: dict[str, np.ndarray] = {}
    stop = asyncio.Event()
    writer_client = NodeClient(old.url, token=None, timeout=10.0, retries=0, follow_leader=False)
    tasks = [
        asyncio.create_task(
            _writer(
                writer_client,
                f"w{w}",
                "one" if w % 2 else "quorum",
                acked,
                np.random.default_rng(w),
                stop,
            )
        )
        for w in range(WRITERS)
    ]
    await wait_for(lambda: _true(len(acked) >= KILL_AFTER_ACKS), 120, "ingest to get going")
    await asyncio.to_thread(old.kill)
    killed_at = time.monotonic()
    stop.set()
    await asyncio.gather(*tasks)
    await writer_client.close()
    snapshot_of_acked = dict(acked)

    # The operator's move: the follower holding the most, at epoch + 1.
    followers = group.clients[1:]
    statuses = await asyncio.gather(*(c.status() for c in followers))
    best = max(range(len(followers)), key=lambda i: (statuses[i]["durable_seq"], -i))
    new_leader, other = followers[best], followers[1 - best]
    new_url = group.nodes[1 + best].url
    await new_leader.promote(2)
    await other.follow(new_url, 2)
    first = None
    give_up = time.monotonic() + 60
    while first is None:
        assert time.monotonic() < give_up, "the new leader acknowledged no write within 60s"
        try:
            await new_leader.upsert_bulk(
                "c", ["after-failover"], np.zeros(DIM, dtype=np.float32), ack="one", retry=False
            )
            first = time.monotonic()
        except NodeError as exc:
            assert exc.code in ("ack_timeout",), exc
    failover_seconds = first - killed_at

    missing = []
    sem = asyncio.Semaphore(32)

    async def check(item_id: str, vector: np.ndarray) -> None:
        async with sem:
            found = await new_leader.get("c", item_id)
        if found is None or not np.allclose(found["vector"], vector):
            missing.append(item_id)

    await asyncio.gather(*(check(i, v) for i, v in snapshot_of_acked.items()))
    assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {missing[:5]}"

    await wait_converged([new_leader, other])
    leader_status = await new_leader.status()
    assert leader_status["role"] == "leader" and leader_status["epoch"] == 2
    other_status = await other.status()
    assert other_status["role"] == "follower" and other_status["leader"] == new_url
    count = (await new_leader.get_collection("c"))["count"]
    assert (await other.get_collection("c"))["count"] == count

    report = {
        "acked_before_kill": len(snapshot_of_acked),
        "kill_to_first_ack_seconds": round(failover_seconds, 3),
    }
    save_report("failover", report)


async def _true(value: bool) -> bool:
    return value
