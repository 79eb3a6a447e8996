"""The router during a move, against in-process stand-ins for the nodes: a write part refused
``slot_moved`` is retried (only it) by the newer map from the file, or answered 503
``slot_moving`` after the deadline; search hits of slots the answering shard does not own are
dropped, and such a shard is asked again for more."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from dvecdb_client.slots import SlotMap, format_ranges, slot_of
from dvecdb_router.app import CLUSTER, create_app
from dvecdb_router.cluster import Cluster
from dvecdb_router.config import FileSource
from dvecdb_router.merge import keep_owned

pytestmark = pytest.mark.unit


@dataclass
class FakeNode:
    """A leader that stores upserts, refuses those touching ``fenced`` slots as a node does,
    and answers a search with every held id (distance: position in ``hits``)."""

    fenced: set[int] = field(default_factory=set)
    items: dict[str, Any] = field(default_factory=dict)
    writes: list[list[str]] = field(default_factory=list)
    searches: list[int] = field(default_factory=list)
    hits: list[str] = field(default_factory=list)
    seq: int = 0
    offset: float = 0.0  # added to every distance
    ready: bool = True

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/status", self.status)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/v1/collections", self.collections)
        app.router.add_put("/v1/collections/{name}/vectors", self.upsert)
        app.router.add_post("/v1/collections/{name}/search", self.search)
        return app

    async def status(self, request: web.Request) -> web.Response:
        return web.json_response({"role": "leader", "epoch": 1})

    async def readyz(self, request: web.Request) -> web.Response:
        return web.json_response({}, status=200 if self.ready else 503)

    async def collections(self, request: web.Request) -> web.Response:
        return web.json_response({"collections": []})

    async def upsert(self, request: web.Request) -> web.Response:
        doc = await request.json()
        ids = [v["id"] for v in doc["vectors"]]
        refused = sorted({slot_of(i) for i in ids} & self.fenced)
        if refused:  # the whole batch, naming the fenced slots it touched
            slots = format_ranges((s, s) for s in refused)
            error = {"code": "slot_moved", "message": "moving", "slots": slots}
            return web.json_response({"error": error}, status=409)
        self.writes.append(ids)
        self.items.update({v["id"]: v for v in doc["vectors"]})
        self.seq += 1
        return web.json_response({"count": len(ids), "seq": self.seq, "epoch": 1})

    async def search(self, request: web.Request) -> web.Response:
        k = (await request.json()).get("k", 10)
        self.searches.append(k)
        row = [{"id": i, "distance": self.offset + d} for d, i in enumerate(self.hits)][:k]
        return web.json_response({"results": [row]})


Start = Callable[..., Awaitable[tuple[TestClient[Any, Any], list[FakeNode], Path]]]


def _write_file(path: Path, urls: list[str], slot_map: SlotMap) -> None:
    doc = {
        "slotMap": {
            "version": slot_map.version,
            "shards": len(urls),
            "owners": [list(r) for r in slot_map.owner_ranges()],
        },
        "shards": [{"shard": i, "members": [u]} for i, u in enumerate(urls)],
    }
    path.write_bytes(orjson.dumps(doc))


@pytest_asyncio.fixture
async def start(tmp_path: Path) -> AsyncIterator[Start]:
    made: list[TestServer | TestClient[Any, Any]] = []

    async def go(
        count: int, slot_map: SlotMap, moved_retry_seconds: float = 5.0
    ) -> tuple[TestClient[Any, Any], list[FakeNode], Path]:
        nodes = [FakeNode() for _ in range(count)]
        urls = []
        for node in nodes:
            server = TestServer(node.app())
            await server.start_server()
            made.append(server)
            urls.append(str(server.make_url("")).rstrip("/"))
        path = tmp_path / "members.json"
        _write_file(path, urls, slot_map)
        source = FileSource(path)
        config = source.read()
        assert config is not None
        cluster = Cluster(
            [list(s) for s in config.shards],
            source=source,
            poll_seconds=30,  # only a refused write makes the router re-read the file here
            moved_retry_seconds=moved_retry_seconds,
        )
        client = TestClient(TestServer(create_app(cluster)))
        await client.start_server()
        made.append(client)
        return client, nodes, path

    yield go
    for thing in reversed(made):
        await thing.close()


def _urls(client: TestClient[Any, Any]) -> list[str]:
    assert client.app is not None
    cluster = client.app[CLUSTER]
    return [s[0].url for s in cluster.shards]


async def test_a_refused_part_follows_the_new_map_and_only_it_is_sent_again(
    start: Start,
) -> None:
    before = SlotMap.from_owner_ranges(1, [(0, 2047, 0), (2048, 4095, 1)])
    client, (a, b, c), path = await start(3, before)
    moving = set(range(2048, 3072))  # shard 1 hands these to shard 2
    b.fenced = moving
    ids = [f"id-{i}" for i in range(300)]
    refused = {i for i in ids if slot_of(i) in moving}
    assert refused and len(refused) < len(ids)
    body = {"vectors": [{"id": i, "vector": [1.0]} for i in ids]}

    async def publish_soon() -> None:
        await asyncio.sleep(0.4)  # between the retries at 375 ms and 775 ms
        # Shard 1's ids outside the moving slots were sent again at once, not after the map.
        assert set(b.items) == {i for i in ids if 3072 <= slot_of(i)}
        after = SlotMap.from_owner_ranges(2, [(0, 2047, 0), (2048, 3071, 2), (3072, 4095, 1)])
        _write_file(path, _urls(client), after)

    task = asyncio.create_task(publish_soon())
    began = time.monotonic()
    resp = await client.put("/v1/collections/docs/vectors", json=body)
    took = time.monotonic() - began
    await task
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["count"] == len(ids)
    assert took < 0.7  # woken by the new map, not by the next backoff step
    assert set(c.items) == refused  # the refused part went to the new owner
    assert set(a.items) | set(b.items) | set(c.items) == set(ids)
    assert not set(b.items) & refused
    # Parts that were taken were sent once: a and b each took exactly one write.
    assert len(a.writes) == 1 and len(b.writes) == 1
    metrics = await (await client.get("/metrics")).text()
    assert "dvecdb_router_slot_moved_retries_total" in metrics
    assert "dvecdb_router_slot_map_version 2.0" in metrics
    status = await (await client.get("/v1/status")).json()
    assert status["slot_map"]["owners"] == [[0, 2047, 0], [2048, 3071, 2], [3072, 4095, 1]]


async def test_a_move_that_does_not_publish_in_time_answers_503_slot_moving(
    start: Start,
) -> None:
    client, (a, b), _ = await start(2, SlotMap.even(2), moved_retry_seconds=0.3)
    b.fenced = set(range(2048, 4096))
    ids = [f"id-{i}" for i in range(50)]
    resp = await client.put(
        "/v1/collections/docs/vectors", json={"vectors": [{"id": i, "vector": [1.0]} for i in ids]}
    )
    assert resp.status == 503
    doc = await resp.json()
    assert doc["error"]["code"] == "slot_moving"
    assert doc["error"]["written_shards"] == [0]  # shard 0's part is in: said plainly
    assert resp.headers["Retry-After"] == "1"
    assert set(a.items) == {i for i in ids if slot_of(i) < 2048}
    assert not b.items


def _ids_in(slots: range, count: int) -> list[str]:
    out: list[str] = []
    n = 0
    while len(out) < count:
        candidate = f"h-{n}"
        if slot_of(candidate) in slots:
            out.append(candidate)
        n += 1
    return out


async def test_search_keeps_only_hits_from_their_slots_owner_and_asks_again_for_more(
    start: Start,
) -> None:
    client, (a, b), _ = await start(2, SlotMap.even(2))
    own_a = _ids_in(range(0, 2048), 6)
    own_b = _ids_in(range(2048, 4096), 6)
    # Shard 1 holds copies of shard 0's slots (a move in progress) that rank first there.
    a.hits = own_a
    a.offset = 5.5  # ranks between shard 1's own hits (at 5, 6, ...)
    b.hits = own_a[:5] + own_b
    resp = await client.post("/v1/collections/docs/search", json={"vector": [1.0], "k": 4})
    assert resp.status == 200, await resp.text()
    row = (await resp.json())["results"][0]
    ids = [h["id"] for h in row]
    assert len(ids) == len(set(ids)) == 4
    # Shard 1's own hits were all behind the copies: it was asked again, with a larger k.
    assert b.searches[0] == 4 and len(b.searches) == 2 and b.searches[1] > 4
    assert a.searches == [4]
    assert set(ids) == {own_a[0], own_a[1], own_b[0], own_b[1]}
    metrics = await (await client.get("/metrics")).text()
    # 4 copies of the first answer (k=4), then all 5 copies in the second (k=12).
    assert "dvecdb_router_hits_dropped_not_owner_total 9.0" in metrics


async def test_shards_that_own_no_slot_are_not_asked_nor_needed_for_readiness(
    start: Start,
) -> None:
    """A group listed before slots move to it (still starting), or emptied by a shrink and
    listed until its objects go, neither answers reads nor makes the router unready."""
    client, (a, b), _ = await start(2, SlotMap.even(1))
    b.ready = False
    await client.app[CLUSTER].poll()
    assert (await client.get("/readyz")).status == 200
    assert (await client.get("/v1/collections")).status == 200
    a.hits = b.hits = ["x"]
    resp = await client.post("/v1/collections/docs/search", json={"vector": [1.0], "k": 4})
    assert (await resp.json())["coverage"] == {"shards": 1, "answered": 1}
    assert a.searches == [4] and b.searches == []
    a.ready = False
    await client.app[CLUSTER].poll()
    assert (await client.get("/readyz")).status == 503  # an owner without a ready member


def test_keep_owned_says_when_a_full_row_lost_hits() -> None:
    slot_map = SlotMap.even(2)
    [mine] = _ids_in(range(0, 2048), 1)
    [theirs] = _ids_in(range(2048, 4096), 1)
    rows = [[{"id": theirs, "distance": 0.1}, {"id": mine, "distance": 0.2}]]
    kept, dropped, short = keep_owned(rows, 0, slot_map, 2)
    assert kept == [[{"id": mine, "distance": 0.2}]] and dropped == 1 and short
    kept, dropped, short = keep_owned(rows, 0, slot_map, 3)  # not full: nothing beyond
    assert dropped == 1 and not short
