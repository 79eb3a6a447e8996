"""The mover against in-process stand-ins that keep the node contract's admin API (fence,
apply, export, slot log, purge) over one shared state per group: a move under a concurrent
writer ends with the target holding exactly what the source acknowledged; a leader change and a
cut export stream mid-move are ridden out. (Real nodes: tests/integration/reshard.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer

from dvecdb_client.slots import SlotMap, parse_ranges, slot_of, slot_set
from dvecdb_operator.reshard.mover import GroupsAccess, Progress, run_move
from dvecdb_operator.reshard.plan import apply_move, moves

pytestmark = pytest.mark.unit


@dataclass
class GroupState:
    """What a replica group holds; its members share it (replication is not the point)."""

    items: dict[str, dict[str, Any]] = field(default_factory=dict)  # collection -> id -> item
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    log: list[dict[str, Any]] = field(default_factory=list)
    fenced: dict[int, Any] = field(default_factory=dict)
    leader: int = 0  # which member index leads
    seq: int = 0

    def append(self, record: dict[str, Any]) -> int:
        self.seq += 1
        self.log.append({**record, "seq": self.seq})
        return self.seq

    def upsert(self, collection: str, items: list[dict[str, Any]]) -> None:
        self.append({"collection": collection, "op": "upsert", "items": items})
        for item in items:
            self.items[collection][item["id"]] = item

    def delete(self, collection: str, ids: list[str]) -> None:
        self.append({"collection": collection, "op": "delete", "ids": ids})
        for item_id in ids:
            self.items[collection].pop(item_id, None)


@dataclass
class FakeMember:
    state: GroupState
    index: int
    calls: list[str] = field(default_factory=list)
    cut_export_once: bool = False
    on_call: Callable[[str], Awaitable[None]] | None = None

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.leader_only])
        app.router.add_get("/v1/status", self.status)
        app.router.add_get("/v1/collections", self.list_collections)
        app.router.add_post("/v1/collections", self.create)
        app.router.add_post("/v1/admin/slots/fence", self.fence)
        app.router.add_post("/v1/admin/slots/apply", self.apply)
        app.router.add_get("/v1/admin/slots/export", self.export)
        app.router.add_get("/v1/admin/slots/log", self.slot_log)
        app.router.add_post("/v1/admin/slots/purge", self.purge)
        return app

    @web.middleware
    async def leader_only(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path == "/v1/status":
            return await handler(request)
        assert request.headers.get("Authorization") == "Bearer tok"
        self.calls.append(request.path)
        if self.on_call is not None:
            await self.on_call(request.path)
        if self.state.leader != self.index:
            error = {"code": "not_leader", "message": "follower", "leader": None}
            return web.json_response({"error": error}, status=409)
        return await handler(request)

    async def status(self, request: web.Request) -> web.Response:
        role = "leader" if self.state.leader == self.index else "follower"
        return web.json_response({"role": role, "epoch": 1 + self.state.leader})

    async def list_collections(self, request: web.Request) -> web.Response:
        return web.json_response({"collections": list(self.state.configs.values())})

    async def create(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body["name"] in self.state.configs:
            return web.json_response({"error": {"code": "collection_exists"}}, status=409)
        self.state.configs[body["name"]] = body
        self.state.items[body["name"]] = {}
        return web.json_response(body, status=201)

    async def fence(self, request: web.Request) -> web.Response:
        body = await request.json()
        for slot in slot_set(parse_ranges(body["slots"])):
            if body["fenced"]:
                self.state.fenced[slot] = (body.get("owner"), body.get("map_version"))
            else:
                self.state.fenced.pop(slot, None)
        return web.json_response({"seq": self.state.append({"op": "fence"}), "epoch": 1})

    async def apply(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body["collection"] not in self.state.configs:
            return web.json_response({"error": {"code": "collection_not_found"}}, status=404)
        if body["upserts"]:
            self.state.upsert(body["collection"], body["upserts"])
        if body["deletes"]:
            self.state.delete(body["collection"], body["deletes"])
        return web.json_response({"seq": self.state.seq, "epoch": 1, "count": 0})

    async def export(self, request: web.Request) -> web.StreamResponse:
        slots = slot_set(parse_ranges(request.query["slots"].split(",")))
        items = [
            i
            for i in self.state.items[request.query["collection"]].values()
            if slot_of(i["id"]) in slots
        ]
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        await resp.write(orjson.dumps({"seq": self.state.seq, "epoch": 1}) + b"\n")
        for n, item in enumerate(items):
            if self.cut_export_once and n == len(items) // 2:
                self.cut_export_once = False
                return resp  # no end line: cut short
            await resp.write(orjson.dumps(item) + b"\n")
        await resp.write(orjson.dumps({"end": True, "count": len(items)}) + b"\n")
        return resp

    async def slot_log(self, request: web.Request) -> web.Response:
        slots = slot_set(parse_ranges(request.query["slots"].split(",")))
        start, limit = int(request.query["from_seq"]), int(request.query["limit"])
        records = [r for r in self.state.log if r["seq"] >= start][:limit]
        ops = []
        for record in records:
            if record["op"] == "upsert":
                kept = [i for i in record["items"] if slot_of(i["id"]) in slots]
                if kept:
                    ops.append({**record, "items": kept})
            elif record["op"] == "delete":
                ids = [i for i in record["ids"] if slot_of(i) in slots]
                if ids:
                    ops.append({**record, "ids": ids})
        next_seq = records[-1]["seq"] + 1 if records else max(start, self.state.seq + 1)
        body = {"ops": ops, "next_seq": next_seq, "commit_seq": self.state.seq}
        return web.json_response(body)

    async def purge(self, request: web.Request) -> web.Response:
        slots = slot_set(parse_ranges((await request.json())["slots"]))
        count = 0
        for name, items in self.state.items.items():
            gone = [i for i in items if slot_of(i) in slots]
            if gone:
                self.state.delete(name, gone)
                count += len(gone)
        return web.json_response({"seq": self.state.seq, "count": count})


@dataclass
class FakeGroups:
    states: list[GroupState]
    members: list[list[FakeMember]]
    urls: list[list[str]]


@pytest_asyncio.fixture
async def fake_groups() -> AsyncIterator[Callable[[int], Awaitable[FakeGroups]]]:
    servers: list[TestServer] = []

    async def make(count: int) -> FakeGroups:
        states, members, urls = [], [], []
        for _ in range(count):
            state = GroupState()
            group = [FakeMember(state, m) for m in range(2)]
            group_urls = []
            for member in group:
                server = TestServer(member.app())
                await server.start_server()
                servers.append(server)
                group_urls.append(str(server.make_url("")).rstrip("/"))
            states.append(state)
            members.append(group)
            urls.append(group_urls)
        return FakeGroups(states, members, urls)

    yield make
    for server in servers:
        await server.close()


def _item(item_id: str, value: int) -> dict[str, Any]:
    return {"id": item_id, "vector": [float(value)], "metadata": {"v": value}}


async def test_a_move_under_a_writer_leaves_the_target_with_all_the_source_acknowledged(
    fake_groups: Callable[[int], Awaitable[FakeGroups]],
) -> None:
    groups = await fake_groups(2)
    source, target = groups.states
    for state in groups.states:
        state.configs["docs"] = {"name": "docs", "dimension": 1, "metric": "l2"}
        state.items["docs"] = {}
    source.configs["other"] = {"name": "other", "dimension": 1, "metric": "l2"}
    source.items["other"] = {}
    source.upsert("docs", [_item(f"d{i}", 0) for i in range(600)])
    source.upsert("other", [_item(f"o{i}", 0) for i in range(300)])
    before = SlotMap.even(1)
    [move] = moves(before, SlotMap.even(2))  # 0 -> 1, slots 2048-4095
    moving = move.slots
    acked: dict[str, int | None] = {}
    steps: list[str] = []
    published: list[SlotMap] = []
    stop = asyncio.Event()

    async def writer() -> None:
        """Writes to whoever owns the slot, as a router does: the source until it refuses."""
        n = 0
        while not stop.is_set():
            n += 1
            item_id = f"d{n % 600}"
            if item_id == ghost:
                continue
            owner = published[-1].shard_of(item_id) if published else 0
            state = groups.states[owner]
            if owner == 0 and slot_of(item_id) in source.fenced:
                await asyncio.sleep(0.001)  # refused slot_moved: retry later
                continue
            if n % 7 == 0:
                state.delete("docs", [item_id])
                acked[item_id] = None
            else:
                state.upsert("docs", [_item(item_id, n)])
                acked[item_id] = n
            await asyncio.sleep(0)

    async def on_progress(p: Progress) -> None:
        steps.append(f"{p.phase}/{p.step}")
        await asyncio.sleep(0.002)  # let the writer in between steps

    async def publish(new: SlotMap) -> None:
        # The writer stops here: the last value of every moved id was acknowledged by the
        # source, so only the copy and the catch-ups can have brought it to the target.
        stop.set()
        await task
        published.append(new)

    # Leftovers of an earlier attempt at the target: an id the source has deleted since.
    ghost = next(f"d{i}" for i in range(600) if slot_of(f"d{i}") in moving)
    source.delete("docs", [ghost])
    target.upsert("docs", [_item(ghost, -1)])
    task = asyncio.create_task(writer())
    groups.members[0][0].cut_export_once = True  # the first export is cut short
    await run_move(
        move,
        GroupsAccess.fixed(dict(enumerate(groups.urls)), "tok"),
        map_version=2,
        phase="copy",
        on_progress=on_progress,
        publish=publish,
        current=before,
    )

    assert published == [apply_move(before, move)]
    assert all(source.fenced[s] == (1, 2) for s in moving)  # the source fence stays
    assert not any(s in target.fenced for s in moving)  # the target takes writes again
    assert "other" in target.configs
    # The target holds what the source held for the slots, with every write acknowledged.
    expected = {i: v for i, v in source.items["docs"].items() if slot_of(i) in moving}
    assert expected == {}  # purged at the source
    for item_id, value in acked.items():
        if slot_of(item_id) not in moving:
            continue
        held = target.items["docs"].get(item_id)
        assert (held and held["metadata"]["v"]) == value or (held is None and value is None)
    moved_ids = {f"d{i}" for i in range(600) if slot_of(f"d{i}") in moving}
    untouched = moved_ids - set(acked) - {ghost}
    assert ghost not in target.items["docs"]  # deleted at the source: gone at the target
    assert all(target.items["docs"][i]["metadata"]["v"] == 0 for i in untouched)
    assert {i for i in target.items["other"]} == {
        f"o{i}" for i in range(300) if slot_of(f"o{i}") in moving
    }
    assert steps[-1] == "done/done" and "publish/publish" in steps


async def test_a_leader_change_mid_move_is_followed_and_phases_resume(
    fake_groups: Callable[[int], Awaitable[FakeGroups]],
) -> None:
    groups = await fake_groups(2)
    source, target = groups.states
    for state in groups.states:
        state.configs["docs"] = {"name": "docs", "dimension": 1, "metric": "l2"}
        state.items["docs"] = {}
    source.upsert("docs", [_item(f"d{i}", 1) for i in range(400)])
    [move] = moves(SlotMap.even(2), SlotMap.even(1))  # 1 -> 0

    async def flip(path: str) -> None:
        if path == "/v1/admin/slots/log" and target.leader == 0:
            target.leader = 1  # the target group fails over as the catch-up starts
            source.leader = 1

    for member in groups.members[0] + groups.members[1]:
        member.on_call = flip
    reports: list[Progress] = []

    async def on_progress(p: Progress) -> None:
        reports.append(p)

    # The source is shard 1 here: groups.states[1] is the source, [0] the target.
    access = GroupsAccess.fixed({1: groups.urls[0], 0: groups.urls[1]}, "tok")
    await run_move(move, access, map_version=5, phase="copy", on_progress=on_progress)
    assert reports[-1].phase == "publish"  # without a publish callback: stops for the caller
    assert {i for i in target.items["docs"]} == {
        f"d{i}" for i in range(400) if slot_of(f"d{i}") in move.slots
    }
    assert any(c.endswith("/fence") for c in groups.members[1][1].calls)  # the new leader
    await run_move(move, access, map_version=5, phase="publish", on_progress=on_progress)
    assert len(source.items["docs"]) == 400  # "publish" is the caller's: nothing purged
    await run_move(move, access, map_version=5, phase="purge", on_progress=on_progress)
    assert not any(slot_of(i) in move.slots for i in source.items["docs"])
    assert reports[-1].phase == "done" and reports[-1].items_copied == 0
    with pytest.raises(ValueError):
        await run_move(move, access, map_version=5, phase="bogus", on_progress=on_progress)
