"""``PATCH /v1/collections/{name}`` in a group of real nodes: the new default ef_search is a
replicated write. Followers describe it, a follower refuses it (409 not_leader), a restarted
leader still has it, and a follower that joins by snapshot install gets it."""

from __future__ import annotations

import numpy as np
import pytest

from dvecdb_client import NodeClient

from .conftest import DIM, TOKEN, Group, wait_converged, wait_for

pytestmark = pytest.mark.integration

SMALL_LOG = [
    "--wal-segment-bytes", "65536",
    "--checkpoint-wal-bytes", "65536",
    "--checkpoint-interval-seconds", "1",
]  # fmt: skip


async def _ef(client: NodeClient) -> int:
    return int((await client.get_collection("c"))["hnsw"]["ef_search"])


async def test_ef_search_changes_live_on_every_member_and_stays(group: Group) -> None:
    group.start(2, args=SMALL_LOG, env={"DVECDB_REPLICATION_RETENTION_SECONDS": "1"})
    leader, follower = group.clients
    await leader.promote(1)
    await follower.follow(group.nodes[0].url, 1)
    await leader.create_collection("c", DIM, hnsw={"ef_search": 16}, ack="quorum")
    rng = np.random.default_rng(5)
    batch = 0

    async def write_batch() -> None:
        nonlocal batch
        ids = [f"b{batch}-{i}" for i in range(64)]
        await leader.upsert_bulk("c", ids, rng.standard_normal((64, DIM)), ack="one")
        batch += 1

    for _ in range(5):
        await write_batch()
    updated = await leader.update_collection("c", ef_search=150, ack="quorum")
    assert updated["hnsw"] == {"m": 16, "ef_construction": 200, "ef_search": 150}
    assert updated["epoch"] == 1 and updated["seq"] == (await leader.status())["last_seq"]
    assert updated["count"] == 5 * 64
    await wait_converged(group.clients)
    assert [await _ef(c) for c in group.clients] == [150, 150]

    # A follower refuses it as it refuses every write, naming the leader.
    status, body = group.nodes[1].request(
        "PATCH",
        "/v1/collections/c",
        {"hnsw": {"ef_search": 99}},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert status == 409 and body["error"]["code"] == "not_leader"
    assert body["leader"].rstrip("/") == group.nodes[0].url
    # Settings fixed at creation are refused plainly.
    status, body = group.nodes[0].request(
        "PATCH",
        "/v1/collections/c",
        {"hnsw": {"m": 8}},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert status == 400 and body["error"]["code"] == "immutable_setting", body

    # A new member whose log the leader no longer holds joins by snapshot and has it.
    joined_at = (await leader.status())["last_seq"]

    async def log_dropped() -> bool:
        await write_batch()
        return int((await leader.status())["first_seq"]) > 1

    await wait_for(log_dropped, 120, "the leader to drop the start of its log")
    assert (await leader.status())["checkpoint_seq"] >= joined_at
    group.add("n2", args=SMALL_LOG, env={"DVECDB_REPLICATION_RETENTION_SECONDS": "1"})
    late = group.clients[2]
    await late.follow(group.nodes[0].url, 1)
    await wait_converged(group.clients)
    assert (await late.replication_status())["follower"]["snapshots_installed"] >= 1
    assert await _ef(late) == 150

    # The leader restarts from its own disk (checkpoint + log) and still has it.
    group.nodes[0].stop()
    group.nodes[0].start()
    await leader.promote(2)
    assert await _ef(leader) == 150
    for client in group.clients[1:]:
        await client.follow(group.nodes[0].url, 2)
    changed = await leader.update_collection("c", ef_search=40)
    assert changed["epoch"] == 2 and changed["hnsw"]["ef_search"] == 40
    await wait_converged(group.clients)
    assert [await _ef(c) for c in group.clients] == [40, 40, 40]
    hits = await late.search("c", rng.standard_normal(DIM), k=5)
    assert len(hits["results"][0]) == 5


async def test_an_empty_follower_is_told_to_install_a_snapshot_once_the_log_start_is_gone(
    group: Group,
) -> None:
    """It agrees with every leader at seq 0, but the leader no longer holds seq 1: it used to
    be sent a stream that ended at once, over and over, instead of ``snapshot_required``."""
    group.start(1, args=SMALL_LOG, env={"DVECDB_REPLICATION_RETENTION_SECONDS": "1"})
    [leader] = group.clients
    await leader.promote(1)
    await leader.create_collection("c", DIM, ack="leader")
    rng = np.random.default_rng(2)
    batch = 0

    async def log_dropped() -> bool:
        nonlocal batch
        ids = [f"b{batch}-{i}" for i in range(64)]
        await leader.upsert_bulk("c", ids, rng.standard_normal((64, DIM)), ack="leader")
        batch += 1
        return int((await leader.status())["first_seq"]) > 1

    await wait_for(log_dropped, 120, "the leader to drop the start of its log")
    query = "from_seq=1&prev_epoch=0&epoch=1&node_id=empty"
    status, body = group.nodes[0].request(
        "GET",
        f"/v1/replication/stream?{query}",
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert status == 409 and body["error"]["code"] == "snapshot_required", body
