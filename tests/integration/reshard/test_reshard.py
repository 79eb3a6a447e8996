"""Resharding online, end to end on real processes: four replica groups (leader + follower),
a real ``dvecdb-router`` reading a members file that the test rewrites when a move publishes,
and the mover taking the cluster 1 → 2 → 4 → 2 shards under concurrent upserts, deletes and
searches, with a failover of a source leader in the middle of a copy, and a mover that dies
after fencing a source and runs the move again from its start.

The checker: no acknowledged write is lost (the final state of every id is its last
acknowledged value or a later attempted one); no answer holds an id twice; at quiet points in
every move (copies at the target; published but not yet purged) a search with k above the
collection size returns exactly what the slot owners hold; recall@10 against exact search on a
static collection is the same before and after. Sizes are parameters
(``DVECDB_RESHARD_ITEMS``, ``DVECDB_RESHARD_STATIC``); figures go to ``save_report``.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import orjson
import pytest
import pytest_asyncio

from dvecdb_client import NodeClient
from dvecdb_client.slots import SlotMap, slot_of
from dvecdb_operator.reshard.mover import GroupsAccess, Progress, run_move
from dvecdb_operator.reshard.plan import Move, apply_move, moves, target_map
from tests.conftest import NodeFactory, NodeProcess, free_port
from tests.integration.replication.conftest import TOKEN, save_report, wait_converged, wait_for

pytestmark = pytest.mark.integration

ITEMS = int(os.environ.get("DVECDB_RESHARD_ITEMS", "400"))  # ids the writers churn
STATIC = int(os.environ.get("DVECDB_RESHARD_STATIC", "4000"))  # the recall collection
DIM = 16
GROUPS = 4
WRITERS = 3
DOCS = {"name": "docs", "dimension": DIM, "metric": "l2", "hnsw": {"ef_search": 1000}}
# The node's default HNSW settings; recall is measured at the default ef (checked) and at a
# low one (reported: there a graph worn by the moves' deletes and re-inserts shows first).
STATIC_COLLECTION = {"name": "static", "dimension": DIM, "metric": "l2"}
EFS = (64, 12)
HEADERS = {"Authorization": f"Bearer {TOKEN}"}


class MoverDied(Exception):
    """The mover stops mid-move, as an operator that restarts does."""


# ------------------------------------------------------------------ the cluster
@dataclass
class Group:
    nodes: list[NodeProcess]
    clients: list[NodeClient]
    leader: int = 0
    epoch: int = 1

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]


async def start_groups(factory: NodeFactory) -> list[Group]:
    nodes = [
        [
            factory(
                standalone=False,
                node_id=f"g{g}m{m}",
                args=["--fsync", "batch"],
                env={"DVECDB_CLUSTER_TOKEN": TOKEN, "DVECDB_LOG_LEVEL": "INFO"},
            )
            for m in range(2)
        ]
        for g in range(GROUPS)
    ]
    groups = [Group(ns, [NodeClient(n.url, token=TOKEN, timeout=30.0) for n in ns]) for ns in nodes]
    for group in groups:
        await group.clients[0].promote(1)
        await group.clients[1].follow(group.nodes[0].url, 1)
    for group in groups:
        await wait_converged(group.clients, within=60)
    return groups


class MembersFile:
    """The operator's ConfigMap as the router reads it: rewritten whole, then renamed."""

    def __init__(self, path: Path, groups: list[Group]) -> None:
        self.path = path
        self.groups = groups

    def write(self, slot_map: SlotMap, listed: int) -> None:
        doc = {
            "slotMap": {
                "version": slot_map.version,
                "shards": listed,
                "owners": [list(r) for r in slot_map.owner_ranges()],
            },
            "shards": [{"shard": i, "members": self.groups[i].urls} for i in range(listed)],
        }
        tmp = self.path.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps(doc))
        tmp.replace(self.path)


@pytest.fixture
def router_process(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        yield session


def start_router(
    members: Path, log: Path, started: list[subprocess.Popen[bytes]]
) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    argv = [
        str(Path(sys.executable).parent / "dvecdb-router"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--members-file",
        str(members),
        "--cluster-token",
        TOKEN,
        "--poll-seconds",
        "0.2",
        "--moved-retry-seconds",
        "30",
        "--leader-wait-seconds",
        "30",
    ]
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    started.append(proc)
    return f"http://127.0.0.1:{port}", proc


# ------------------------------------------------------------------ the workload
@dataclass
class Attempt:
    value: tuple[int, int] | None  # (writer, n) of an upsert; None: a delete
    acked: bool


@dataclass
class Workload:
    """Writers (each owning its own ids, one request at a time, so each id's attempts are
    ordered) and a searcher, paused at quiet points; every latency kept with its time."""

    router: str
    http: aiohttp.ClientSession
    history: dict[str, list[Attempt]] = field(default_factory=dict)
    running: asyncio.Event = field(default_factory=asyncio.Event)
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    in_flight: int = 0
    stop: bool = False
    write_latency: list[tuple[float, float]] = field(default_factory=list)
    search_latency: list[tuple[float, float]] = field(default_factory=list)
    search_errors: list[tuple[float, int, str]] = field(default_factory=list)
    write_errors: list[tuple[float, int, str]] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)

    async def _gate(self) -> bool:
        await self.running.wait()
        if self.stop:
            return False
        self.in_flight += 1
        self.idle.clear()
        return True

    def _done(self) -> None:
        self.in_flight -= 1
        if not self.in_flight:
            self.idle.set()

    async def pause(self) -> None:
        self.running.clear()
        if self.in_flight:
            await self.idle.wait()

    async def writer(self, index: int, ids: list[str]) -> None:
        rng = random.Random(index)
        n = 0
        while await self._gate():
            try:
                chosen = rng.sample(ids, min(len(ids), rng.randint(1, 8)))
                started = time.monotonic()
                if rng.random() < 0.25:
                    body: dict[str, Any] = {"ids": chosen, "ack": "quorum"}
                    path = "/v1/collections/docs/vectors/delete"
                    values: list[tuple[int, int] | None] = [None] * len(chosen)
                    method = "POST"
                else:
                    values = []
                    vectors = []
                    for item_id in chosen:
                        n += 1
                        values.append((index, n))
                        vectors.append(
                            {
                                "id": item_id,
                                "vector": [rng.random() for _ in range(DIM)],
                                "metadata": {"w": index, "n": n},
                            }
                        )
                    body = {"vectors": vectors, "ack": "quorum"}
                    path = "/v1/collections/docs/vectors"
                    method = "PUT"
                try:
                    async with self.http.request(method, self.router + path, json=body) as resp:
                        status, text = resp.status, await resp.text()
                except (aiohttp.ClientError, TimeoutError) as exc:
                    status, text = 0, repr(exc)
                acked = status == 200
                self.write_latency.append((started, time.monotonic() - started))
                if not acked:
                    self.write_errors.append((started, status, text[:200]))
                for item_id, value in zip(chosen, values, strict=True):
                    self.history.setdefault(item_id, []).append(Attempt(value, acked))
            finally:
                self._done()

    async def searcher(self, queries: np.ndarray) -> None:
        rounds = 0
        while await self._gate():
            try:
                rounds += 1
                k = ITEMS + 10 if rounds % 5 == 0 else 10
                query = {"vector": queries[rounds % len(queries)].tolist(), "k": k}
                started = time.monotonic()
                try:
                    async with self.http.post(
                        self.router + "/v1/collections/docs/search", json=query
                    ) as resp:
                        status, raw = resp.status, await resp.read()
                except (aiohttp.ClientError, TimeoutError) as exc:
                    status, raw = 0, repr(exc).encode()
                self.search_latency.append((started, time.monotonic() - started))
                if status != 200:
                    self.search_errors.append((started, status, raw[:200].decode(errors="replace")))
                    continue
                ids = [h["id"] for h in orjson.loads(raw)["results"][0]]
                if len(ids) != len(set(ids)):
                    self.duplicates.extend(i for i in set(ids) if ids.count(i) > 1)
            finally:
                self._done()
            await asyncio.sleep(0.005)


def p99(
    samples: list[tuple[float, float]], windows: list[tuple[float, float]], inside: bool
) -> float:
    chosen = [d for t, d in samples if any(a <= t <= b for a, b in windows) == inside]
    return float(np.percentile(chosen, 99) * 1000) if chosen else float("nan")


# ------------------------------------------------------------------ the checks
async def holdings(
    http: aiohttp.ClientSession, group: Group, collection: str
) -> dict[str, dict[str, Any]]:
    """Everything the group's leader holds of ``collection`` (an export of every slot)."""
    url = group.nodes[group.leader].url
    async with http.get(
        url + "/v1/admin/slots/export",
        params={"collection": collection, "slots": "0-4095"},
        headers=HEADERS,
    ) as resp:
        assert resp.status == 200, await resp.text()
        lines = [orjson.loads(line) for line in (await resp.read()).splitlines() if line.strip()]
    assert lines[-1].get("end"), "export cut short"
    return {doc["id"]: doc for doc in lines[1:-1]}


async def owned_holdings(
    http: aiohttp.ClientSession, groups: list[Group], slot_map: SlotMap, collection: str
) -> dict[str, dict[str, Any]]:
    """What the slot owners hold (each id from its owner only)."""
    out: dict[str, dict[str, Any]] = {}
    for shard in sorted(set(slot_map.owners)):
        for item_id, doc in (await holdings(http, groups[shard], collection)).items():
            if slot_map.owners[slot_of(item_id)] == shard:
                out[item_id] = doc
    return out


async def wait_router_version(http: aiohttp.ClientSession, router: str, version: int) -> None:
    async def seen() -> bool:
        async with http.get(router + "/v1/status") as resp:
            return bool((await resp.json())["slot_map"]["version"] >= version)

    await wait_for(seen, 30, f"the router to follow slot map version {version}")


async def search_all(http: aiohttp.ClientSession, router: str) -> list[str]:
    query = {"vector": [0.5] * DIM, "k": ITEMS + 10, "consistency": "strong"}
    async with http.post(router + "/v1/collections/docs/search", json=query) as resp:
        assert resp.status == 200, await resp.text()
        return [h["id"] for h in (await resp.json())["results"][0]]


async def recall_at_10(
    http: aiohttp.ClientSession, router: str, vectors: np.ndarray, queries: np.ndarray, ef: int
) -> float:
    found = 0
    for query in queries:
        exact = set(np.argsort(((vectors - query) ** 2).sum(axis=1))[:10].tolist())
        body = {"vector": query.tolist(), "k": 10, "ef": ef}
        async with http.post(router + "/v1/collections/static/search", json=body) as resp:
            assert resp.status == 200, await resp.text()
            hits = (await resp.json())["results"][0]
        found += len(exact & {int(h["id"][1:]) for h in hits})
    return found / (10 * len(queries))


def check_history(history: dict[str, list[Attempt]], final: dict[str, dict[str, Any]]) -> list[str]:
    """Ids whose final state is neither their last acknowledged value nor a later attempt."""
    bad = []
    for item_id, attempts in history.items():
        last_acked = max((i for i, a in enumerate(attempts) if a.acked), default=0)
        allowed = {a.value for a in attempts[last_acked:]}
        doc = final.get(item_id)
        meta = (doc or {}).get("metadata") or {}
        state = None if doc is None else (meta.get("w"), meta.get("n"))
        if state not in allowed:
            bad.append(f"{item_id}: final {state}, allowed {sorted(allowed, key=str)}")
    return bad


# ------------------------------------------------------------------ the test
async def test_resharding_1_2_4_2_under_writes_searches_and_a_failover(
    node_factory: NodeFactory,
    tmp_path: Path,
    router_process: list[subprocess.Popen[bytes]],
    http: aiohttp.ClientSession,
) -> None:
    groups = await start_groups(node_factory)
    members = MembersFile(tmp_path / "members.json", groups)
    slot_map = SlotMap.even(1)
    members.write(slot_map, 1)
    router, proc = start_router(members.path, tmp_path / "router.log", router_process)

    async def ready() -> bool:
        async with http.get(router + "/readyz") as resp:
            return resp.status == 200

    await wait_for(ready, 30, "the router to be ready")
    for collection in (DOCS, STATIC_COLLECTION):
        async with http.post(router + "/v1/collections", json=collection) as resp:
            assert resp.status == 201, await resp.text()

    rng = np.random.default_rng(7)
    static = rng.random((STATIC, DIM), dtype=np.float32)
    queries = rng.random((200, DIM), dtype=np.float32)
    for start in range(0, STATIC, 500):
        batch = [
            {"id": f"s{i}", "vector": static[i].tolist()}
            for i in range(start, min(STATIC, start + 500))
        ]
        async with http.put(
            router + "/v1/collections/static/vectors", json={"vectors": batch, "ack": "quorum"}
        ) as resp:
            assert resp.status == 200, await resp.text()
    ids = [f"d{i}" for i in range(ITEMS)]
    work = Workload(router, http)
    initial = rng.random((ITEMS, DIM), dtype=np.float32)
    for start in range(0, ITEMS, 200):
        batch = [
            {"id": ids[i], "vector": initial[i].tolist(), "metadata": {"w": -1, "n": i}}
            for i in range(start, min(ITEMS, start + 200))
        ]
        async with http.put(
            router + "/v1/collections/docs/vectors", json={"vectors": batch, "ack": "quorum"}
        ) as resp:
            assert resp.status == 200, await resp.text()
    for i, item_id in enumerate(ids):
        work.history[item_id] = [Attempt((-1, i), True)]
    recalls: dict[str, dict[int, float]] = {}

    async def recall(label: str) -> None:
        recalls[label] = {ef: await recall_at_10(http, router, static, queries, ef) for ef in EFS}

    await recall("1 shard")

    tasks = [
        asyncio.create_task(work.writer(w, ids[w::WRITERS]), name=f"writer {w}")
        for w in range(WRITERS)
    ]
    tasks.append(asyncio.create_task(work.searcher(queries), name="searcher"))
    work.running.set()
    await asyncio.sleep(3)  # the baseline: latencies before any move

    move_windows: list[tuple[float, float]] = []
    failover_windows: list[tuple[float, float]] = []
    moved: list[dict[str, Any]] = []
    quiet_checks: list[str] = []
    failed_over = False
    restarted: list[Move] = []
    failover_move: list[Move] = []

    async def quiet_check(label: str, current: SlotMap) -> None:
        """Writers paused: a search for everything returns exactly what the owners hold."""
        await work.pause()
        try:
            expected = await owned_holdings(http, groups, current, "docs")
            found = await search_all(http, router)
            assert len(found) == len(set(found)), f"{label}: an id twice"
            missing = set(expected) - set(found)
            extra = set(found) - set(expected)
            assert not missing and not extra, (
                f"{label}: missing {sorted(missing)[:5]}, extra {sorted(extra)[:5]}"
            )
            quiet_checks.append(label)
        finally:
            work.running.set()

    async def fail_over(group: Group) -> None:
        """Kill the leader, promote its follower, bring the old one back as its follower."""
        began = time.monotonic()
        old, new = group.leader, 1 - group.leader
        group.nodes[old].kill()
        group.epoch += 1
        await group.clients[new].promote(group.epoch)
        group.leader = new
        await asyncio.to_thread(group.nodes[old].start, wait=False)

        async def back() -> bool:
            await group.clients[old].follow(group.nodes[new].url, group.epoch)
            return True

        await wait_for(back, 60, "the old leader to follow the new one", interval=0.2)
        failover_windows.append((began, time.monotonic() + 15))

    async def one_move(index: int, move: Move, listed: int, to: int) -> None:
        nonlocal slot_map
        steps: dict[str, float] = {}
        checked: set[str] = set()
        before = slot_map
        copied = 0

        async def on_progress(p: Progress) -> None:
            nonlocal failed_over, copied
            copied = p.items_copied
            steps.setdefault(p.step.split(" ")[0], time.monotonic())
            label = f"{before.shards}->{to} move {index} {move.source}->{move.target}"
            if p.step == "catch-up" and "copy" not in checked:
                checked.add("copy")
                await quiet_check(f"{label}: copies at the target", before)
            if p.phase == "purge" and "published" not in checked:
                checked.add("published")
                await quiet_check(f"{label}: published, not purged", apply_move(before, move))
            if not failed_over and to == 4 and p.step == "export static" and p.items_copied:
                failed_over = True
                failover_move.append(move)
                await fail_over(groups[move.source])
            if to == 2 and before.shards == 4 and index == 0 and p.step == "final-catch-up":
                if not restarted:
                    restarted.append(move)
                    raise MoverDied  # after the source's fence: the rerun must not lose writes

        async def publish(new: SlotMap) -> None:
            members.write(new, listed)
            await wait_router_version(http, router, new.version)

        began = time.monotonic()
        for attempt in range(2):
            try:
                await run_move(
                    move,
                    GroupsAccess(lambda shard: groups[shard].urls, TOKEN),
                    map_version=before.version + 1,
                    phase="copy",  # what a restarted operator's record says until publish
                    on_progress=on_progress,
                    publish=publish,
                    current=before,
                )
                break
            except MoverDied:
                assert attempt == 0
                steps.clear()
        slot_map = apply_move(before, move)
        ended = time.monotonic()
        move_windows.append((began, ended))
        copy_seconds = steps.get("catch-up", ended) - steps.get("export", began)
        moved.append(
            {
                "move": f"{move.source}->{move.target}",
                "slots": move.slot_count,
                "items": copied,
                "seconds": round(ended - began, 2),
                "copy_vectors_per_s": round(copied / max(copy_seconds, 1e-6)),
                "rerun": move in restarted,  # its second copy found the items there already
                "failover": failed_over and failover_move == [move],
            }
        )

    async def reshard(to: int) -> None:
        plan = moves(slot_map, target_map(slot_map, to))
        listed = max(slot_map.shards, to)
        members.write(slot_map, listed)  # new groups are listed before slots move to them
        for index, move in enumerate(plan):
            await one_move(index, move, listed, to)
        members.write(slot_map, to)  # a shrink's emptied groups leave the file
        await wait_router_version(http, router, slot_map.version)

    try:
        async with asyncio.timeout(600):
            for count, label in ((2, "2 shards"), (4, "4 shards"), (2, "2 shards after 4")):
                await reshard(count)
                await recall(label)
            await asyncio.sleep(2)
    finally:
        work.stop = True
        work.running.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert proc.poll() is None, (tmp_path / "router.log").read_text()[-3000:]

    # The figures first, so that a failing check still shows them.
    async with http.get(router + "/metrics") as resp:
        metrics = await resp.text()
    report = {
        "items": ITEMS,
        "static": STATIC,
        "moves": moved,
        "writes": len(work.write_latency),
        "writes_failed": len(work.write_errors),
        "searches": len(work.search_latency),
        "searches_failed": len(work.search_errors),
        "write_p99_ms_before": round(p99(work.write_latency, move_windows, False), 1),
        "write_p99_ms_during": round(p99(work.write_latency, move_windows, True), 1),
        "search_p99_ms_before": round(p99(work.search_latency, move_windows, False), 1),
        "search_p99_ms_during": round(p99(work.search_latency, move_windows, True), 1),
        "recall_at_10_by_ef": recalls,
        "quiet_checks": len(quiet_checks),
        "router_metrics": [
            line
            for line in metrics.splitlines()
            if line.startswith(("dvecdb_router_slot_moved", "dvecdb_router_hits_dropped"))
        ],
    }
    save_report("reshard_online", report)

    # Every group's followers converge, then the final state of each acked write is checked.
    for group in groups:
        await wait_converged(
            [group.clients[group.leader], group.clients[1 - group.leader]], within=60
        )
    final = await owned_holdings(http, groups, slot_map, "docs")
    bad = check_history(work.history, final)
    assert not bad, f"{len(bad)} ids lost an acknowledged write: {bad[:5]}"
    assert not work.duplicates
    # Purged: no group holds an id of a slot it does not own.
    for shard, group in enumerate(groups):
        held = await holdings(http, group, "docs")
        strays = [i for i in held if slot_map.owners[slot_of(i)] != shard]
        assert not strays, f"group {shard} still holds {strays[:5]}"
    await quiet_check("final", slot_map)
    # The same partition (2 shards) before and after the round trip through 4: the copies'
    # graphs (built by the import) search as well as the ones built by the original writes.
    # A group refilled after a purge inserts into labels its compaction freed
    # (storage.compaction), not into deleted elements in place. At DVECDB_RESHARD_STATIC=20000:
    # ef 64 0.9995 -> 1.0 (0.9945 before compaction, issue #13); ef 12, reported only, still
    # trails: 0.9405-0.9425 -> 0.919-0.926 over three runs (0.9475 -> 0.9055 before).
    before, after = recalls["2 shards"][EFS[0]], recalls["2 shards after 4"][EFS[0]]
    assert abs(after - before) <= 0.005, recalls
    outside = [
        e for e in work.search_errors if not any(a <= e[0] <= b for a, b in failover_windows)
    ]
    assert not outside, f"searches failed outside the failover: {outside[:3]}"
    acked = sum(a.acked for attempts in work.history.values() for a in attempts[1:])
    assert failed_over and restarted and acked > 0
