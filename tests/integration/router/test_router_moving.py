"""The router against real nodes whose slots are fenced (a move's hand-over): writes for them
wait for the new map and follow it, or answer 503 slot_moving after the deadline; a shard's
copies of slots it does not own never reach an answer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from dvecdb_client import NodeClient
from dvecdb_client.slots import SlotMap, parse_ranges, slot_of, slot_set
from dvecdb_router.app import create_app
from dvecdb_router.cluster import Cluster
from dvecdb_router.config import FileSource
from tests.conftest import NodeFactory
from tests.integration.replication.conftest import TOKEN

pytestmark = pytest.mark.integration

COLLECTION = {"name": "docs", "dimension": 2, "metric": "l2"}


def write_members(path: Path, urls: list[str], slot_map: SlotMap) -> None:
    owners = [list(r) for r in slot_map.owner_ranges()]
    doc = {
        "slotMap": {"version": slot_map.version, "shards": len(urls), "owners": owners},
        "shards": [{"shard": i, "members": [u]} for i, u in enumerate(urls)],
    }
    path.write_bytes(orjson.dumps(doc))


@pytest_asyncio.fixture
async def clients() -> AsyncIterator[list[TestClient[Any, Any]]]:
    made: list[TestClient[Any, Any]] = []
    yield made
    for client in made:
        await client.close()


async def test_fenced_slots_wait_for_the_new_map_or_answer_slot_moving(
    node_factory: NodeFactory, tmp_path: Path, clients: list[TestClient[Any, Any]]
) -> None:
    nodes = [node_factory(standalone=True, env={"DVECDB_CLUSTER_TOKEN": TOKEN}) for _ in range(2)]
    urls = [n.url for n in nodes]
    path = tmp_path / "members.json"
    before = SlotMap.even(2)
    write_members(path, urls, before)
    source = FileSource(path)
    assert source.read() is not None
    cluster = Cluster(
        [[u] for u in urls],
        cluster_token=TOKEN,
        poll_seconds=30,  # only a refused write makes it re-read the file here
        source=source,
        moved_retry_seconds=1.0,
    )
    client = TestClient(TestServer(create_app(cluster)))
    await client.start_server()
    clients.append(client)
    assert (await client.post("/v1/collections", json=COLLECTION)).status == 201
    ids = [f"v{i}" for i in range(60)]
    moving = [i for i in ids if slot_of(i) >= 3072]  # shard 1 hands 3072-4095 to shard 0
    assert moving
    admin = NodeClient(urls[1], token=TOKEN)
    try:
        fence = {"slots": ["3072-4095"], "fenced": True, "owner": 0, "map_version": 2}
        await admin.request("POST", "/v1/admin/slots/fence", json=fence, admin=True)
    finally:
        await admin.close()

    def body(value: float) -> dict[str, Any]:
        return {"vectors": [{"id": i, "vector": [value, 0.0]} for i in ids]}

    # No new map within the deadline: 503 slot_moving, the other parts are in.
    resp = await client.put("/v1/collections/docs/vectors", json=body(1.0))
    assert resp.status == 503, await resp.text()
    error = (await resp.json())["error"]
    assert error["code"] == "slot_moving"
    assert slot_set(parse_ranges(error["slots"])) == {slot_of(i) for i in moving}
    # Shard 1 refused its whole part; its ids outside the fenced slots went again at once.
    assert error["written_shards"] == [0, 1]

    # The map is published while a write waits: it goes to the new owner.
    after = SlotMap.from_owner_ranges(2, [(0, 2047, 0), (2048, 3071, 1), (3072, 4095, 0)])

    async def publish() -> None:
        await asyncio.sleep(0.3)
        write_members(path, urls, after)

    task = asyncio.create_task(publish())
    resp = await client.put("/v1/collections/docs/vectors", json=body(2.0))
    await task
    assert resp.status == 200, await resp.text()
    assert cluster.slot_map == after
    for item_id in moving:
        got = await client.get(f"/v1/collections/docs/vectors/{item_id}")
        assert got.status == 200 and (await got.json())["vector"][0] == 2.0
    # Shard 0 gets copies of slots shard 1 keeps (as a move's target would), nearer the query
    # than the owner's: a search has each id once, as its owner holds it.
    kept = [i for i in ids if 2048 <= slot_of(i) < 3072]
    copies = {"collection": "docs", "upserts": [{"id": i, "vector": [0.0, 0.0]} for i in kept]}
    admin = NodeClient(urls[0], token=TOKEN)
    try:
        await admin.request("POST", "/v1/admin/slots/apply", json=copies, admin=True)
    finally:
        await admin.close()
    query = {"vector": [0.0, 0.0], "k": 100}
    resp = await client.post("/v1/collections/docs/search", json=query)
    hits = (await resp.json())["results"][0]
    assert sorted(h["id"] for h in hits) == sorted(ids)
    assert all(h["distance"] > 0 for h in hits)  # no copy (at distance 0) got through
    metrics = await (await client.get("/metrics")).text()
    assert f"dvecdb_router_hits_dropped_not_owner_total {float(len(kept))}" in metrics
