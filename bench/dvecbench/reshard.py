"""``python -m dvecbench.reshard``: how fast a reshard 1 → 2 moves vectors, and what searches
and writes see while it runs.

Real processes, as in :mod:`dvecbench.sharded`: two standalone nodes (replica groups of one
member, pinned to ``--server-cpus``), a ``dvecdb-router`` reading a members file (pinned to
``--client-cpus``), and the operator's mover (:mod:`dvecdb_operator.reshard.mover`, in this
process, as ``tests/integration/reshard`` drives it without Kubernetes). Shard 0 holds every
slot and the data (JSON ingest through the router); shard 1 is listed, empty. One closed-loop
searcher (k=10) and one writer (upserts of 10 existing ids, ``ack=leader``) run through the
router for ``--baseline`` seconds, then through the whole move of half the slots (copy, catch-up,
fence, publish of the new map to the router's file, purge). The row: vectors moved, the copy's
rate (export to the first catch-up, the figure the test suite reports) and the whole move's,
and each load's p99 before and during the move. Afterwards each shard must hold exactly its
slots' ids, or the run fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import orjson

from dvecbench import ingest, nodeapi
from dvecbench.datasets import Dataset, make_clustered
from dvecbench.httpc import Client
from dvecbench.inprocess import HnswParams
from dvecbench.procs import Processes, free_port, parse_cpus
from dvecbench.sharded import json_bodies, router_binary, send_json
from dvecdb_client.slots import SlotMap
from dvecdb_operator.reshard.mover import GroupsAccess, Progress, run_move
from dvecdb_operator.reshard.plan import apply_move, moves, target_map

TOKEN = "bench-cluster-token"
COLLECTION = nodeapi.COLLECTION
WRITE_BATCH = 10
# The searcher and writer pause this long between requests: the move, not the load, should
# be what the cores are busy with, and the latencies are of a cluster that is not saturated.
PAUSE = 0.002


@dataclass(frozen=True)
class ReshardRow:
    vectors: int
    dim: int
    moved: int
    copy_vectors_per_s: float
    move_vectors_per_s: float
    move_seconds: float
    search_p99_ms_before: float
    search_p99_ms_during: float
    write_p99_ms_before: float
    write_p99_ms_during: float
    searches: int
    writes: int
    failed: int  # searches and writes not answered 200 (none expected)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Load:
    """Closed-loop searches and writes through the router, every latency kept with its
    start time (monotonic)."""

    router: str
    ds: Dataset
    searches: list[tuple[float, float]]
    writes: list[tuple[float, float]]
    failures: list[str]
    stop: bool = False

    async def searcher(self, http: aiohttp.ClientSession) -> None:
        i = 0
        url = f"{self.router}/v1/collections/{COLLECTION}/search"
        while not self.stop:
            body = orjson.dumps({"vector": self.ds.queries[i % len(self.ds.queries)].tolist()})
            i += 1
            await self._timed(http, "POST", url, body, self.searches)

    async def writer(self, http: aiohttp.ClientSession) -> None:
        rng = np.random.default_rng(11)
        url = f"{self.router}/v1/collections/{COLLECTION}/vectors?ack=leader"
        n, dim = self.ds.base.shape
        while not self.stop:
            ids = rng.choice(n, WRITE_BATCH, replace=False)
            vectors = rng.random((WRITE_BATCH, dim), dtype=np.float32)
            items = [
                {"id": str(i), "vector": v.tolist()} for i, v in zip(ids, vectors, strict=True)
            ]
            body = orjson.dumps({"vectors": items})
            await self._timed(http, "PUT", url, body, self.writes)

    async def _timed(
        self,
        http: aiohttp.ClientSession,
        method: str,
        url: str,
        body: bytes,
        into: list[tuple[float, float]],
    ) -> None:
        started = time.monotonic()
        headers = {"Content-Type": "application/json"}
        try:
            async with http.request(method, url, data=body, headers=headers) as resp:
                raw = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            status, raw = 0, repr(exc).encode()
        into.append((started, time.monotonic() - started))
        if status != 200:
            self.failures.append(f"{method} {status}: {raw[:200]!r}")
        await asyncio.sleep(PAUSE)


def p99_ms(samples: list[tuple[float, float]], start: float, end: float) -> float:
    chosen = [d for t, d in samples if start <= t < end]
    return round(float(np.percentile(chosen, 99)) * 1000, 2) if chosen else float("nan")


def write_members(path: Path, urls: list[str], slot_map: SlotMap) -> None:
    """The operator's members file, replaced whole (the router reads it each poll)."""
    doc = {
        "slotMap": {
            "version": slot_map.version,
            "shards": len(urls),
            "owners": [list(r) for r in slot_map.owner_ranges()],
        },
        "shards": [{"shard": i, "members": [u]} for i, u in enumerate(urls)],
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(orjson.dumps(doc))
    tmp.replace(path)


def start(
    procs: Processes,
    workdir: Path,
    server_cpus: frozenset[int] | None,
    client_cpus: frozenset[int] | None,
) -> tuple[str, list[str], Path]:
    """Two nodes and a router that reads a members file giving shard 0 every slot."""
    urls = []
    for shard in range(2):
        port = free_port()
        name = f"reshard-node-{shard}"
        argv = nodeapi.server_argv(port=port, data_dir=workdir / name, node_id=name)
        procs.start(name, argv, cpus=server_cpus, env={"DVECDB_CLUSTER_TOKEN": TOKEN})
        url = f"http://127.0.0.1:{port}"
        procs.wait_ready(name, url + "/readyz", timeout=60)
        urls.append(url)
    members = workdir / "members.json"
    write_members(members, urls, SlotMap.even(1))
    port = free_port()
    argv = [router_binary(), "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--members-file", str(members), "--cluster-token", TOKEN, "--poll-seconds", "0.2"]
    argv += ["--moved-retry-seconds", "30"]
    procs.start("reshard-router", argv, cpus=client_cpus)
    router = f"http://127.0.0.1:{port}"
    procs.wait_ready("reshard-router", router + "/readyz", timeout=60)
    return router, urls, members


async def _wait_router(http: aiohttp.ClientSession, router: str, version: int) -> None:
    deadline = time.monotonic() + 30
    while True:
        async with http.get(router + "/v1/status") as resp:
            if (await resp.json())["slot_map"]["version"] >= version:
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"the router did not take slot map version {version} in 30s")
        await asyncio.sleep(0.05)


async def move_under_load(
    router: str, urls: list[str], members: Path, ds: Dataset, baseline: float
) -> ReshardRow:
    before = SlotMap.even(1)
    [move] = moves(before, target_map(before, 2))
    load = Load(router, ds, [], [], [])
    steps: dict[str, float] = {}
    copied = 0

    async def on_progress(p: Progress) -> None:
        nonlocal copied
        copied = max(copied, p.items_copied)
        steps.setdefault(p.step, time.monotonic())

    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as http:

        async def publish(new: SlotMap) -> None:
            write_members(members, urls, new)
            await _wait_router(http, router, new.version)

        tasks = [asyncio.create_task(load.searcher(http)), asyncio.create_task(load.writer(http))]
        try:
            began = time.monotonic()
            await asyncio.sleep(baseline)
            moving = time.monotonic()
            await run_move(
                move,
                GroupsAccess.fixed({0: [urls[0]], 1: [urls[1]]}, TOKEN),
                map_version=before.version + 1,
                phase="copy",
                on_progress=on_progress,
                publish=publish,
                current=before,
            )
            moved_at = time.monotonic()
        finally:
            load.stop = True
            await asyncio.gather(*tasks, return_exceptions=True)
    if load.failures:
        raise RuntimeError(f"{len(load.failures)} requests failed: {load.failures[:3]}")
    after = apply_move(before, move)
    held = [_count(url) for url in urls]
    expected = [len(v) for _, v in sorted(after.split(str(i) for i in range(len(ds.base))).items())]
    if held != expected:
        raise RuntimeError(f"after the move the shards hold {held}, their slots {expected}")
    copy_seconds = steps.get("catch-up", moved_at) - steps.get("export", moving)
    move_seconds = moved_at - moving
    n, dim = ds.base.shape
    return ReshardRow(
        vectors=n,
        dim=dim,
        moved=copied,
        copy_vectors_per_s=round(copied / max(copy_seconds, 1e-6), 1),
        move_vectors_per_s=round(copied / move_seconds, 1),
        move_seconds=round(move_seconds, 2),
        search_p99_ms_before=p99_ms(load.searches, began, moving),
        search_p99_ms_during=p99_ms(load.searches, moving, moved_at),
        write_p99_ms_before=p99_ms(load.writes, began, moving),
        write_p99_ms_during=p99_ms(load.writes, moving, moved_at),
        searches=len(load.searches),
        writes=len(load.writes),
        failed=len(load.failures),
    )


async def _bounded(work: Awaitable[ReshardRow], seconds: float) -> ReshardRow:
    async with asyncio.timeout(seconds):
        return await work


def _count(url: str) -> int:
    client = Client(url)
    try:
        return nodeapi.count(client)
    finally:
        client.close()


def measure(
    *,
    n: int,
    dim: int,
    baseline: float,
    server_cpus: frozenset[int] | None,
    client_cpus: frozenset[int] | None,
    say: Callable[[str], None] = print,
    time_limit: float = 600.0,
) -> ReshardRow:
    say(f"reshard 1 -> 2: {n:,} clustered {dim}-d vectors, searches and writes through the router")
    ds = make_clustered(n=n, n_queries=200, dim=dim, k=10)
    with tempfile.TemporaryDirectory(prefix="dvec-reshard-") as tmp, Processes(Path(tmp)) as procs:
        router, urls, members = start(procs, Path(tmp), server_cpus, client_cpus)
        client = Client(router)
        nodeapi.create_collection(client, ds, HnswParams(m=16, ef_construction=100, ef_search=64))
        client.close()
        loaded = ingest.timed(
            router,
            json_bodies(ds, 500),
            send_json,
            vectors=n,
            concurrency=4,
            searchable=lambda c: True,  # a node applies a write before it acknowledges it
        )
        say(f"reshard: {n:,} vectors in shard 0 ({loaded.rate:,.0f}/s through the router)")
        work = move_under_load(router, urls, members, ds, baseline)
        row = asyncio.run(_bounded(work, time_limit))
    say(
        f"reshard: moved {row.moved:,} vectors in {row.move_seconds:.1f}s "
        f"(copy {row.copy_vectors_per_s:,.0f}/s); search p99 {row.search_p99_ms_before:.1f} -> "
        f"{row.search_p99_ms_during:.1f} ms, write p99 {row.write_p99_ms_before:.1f} -> "
        f"{row.write_p99_ms_during:.1f} ms"
    )
    return row


def table(row: dict[str, Any]) -> str:
    return "\n".join(
        [
            "| reshard 1 → 2 | vectors moved | copy vec/s | whole move vec/s (s) "
            "| search p99 ms before → during | write p99 ms before → during |",
            "|---|---|---|---|---|---|",
            f"| {row['vectors']:,} x {row['dim']}-d | {row['moved']:,} "
            f"| {row['copy_vectors_per_s']:,.0f} "
            f"| {row['move_vectors_per_s']:,.0f} ({row['move_seconds']:.1f}) "
            f"| {row['search_p99_ms_before']:.1f} → {row['search_p99_ms_during']:.1f} "
            f"| {row['write_p99_ms_before']:.1f} → {row['write_p99_ms_during']:.1f} |",
        ]
    )


def section(row: dict[str, Any]) -> list[str]:
    """The row as a Markdown section of the bench report."""
    return [
        "",
        "## Resharding 1 → 2 under load (dvecbench.reshard)",
        "",
        "Two standalone nodes (server cores), the router reading the members file (client "
        "cores), the operator's mover in the bench process; one searcher (k=10) and one writer "
        f"(upserts of {WRITE_BATCH}, ack=leader) through the router, closed loop, before and "
        "during the move of half the slots (copy, catch-up, fence, publish, purge). Copy: "
        "export to first catch-up; whole move: every step.",
        "",
        table(row),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=30_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--baseline", type=float, default=5.0, help="seconds of load first")
    parser.add_argument("--server-cpus", default="0", help="cores the nodes are pinned to")
    parser.add_argument("--client-cpus", default="1", help="cores the router is pinned to")
    parser.add_argument("--out", type=Path, help="write the row as JSON here")
    args = parser.parse_args(argv)
    row = measure(
        n=args.n,
        dim=args.dim,
        baseline=args.baseline,
        server_cpus=parse_cpus(args.server_cpus),
        client_cpus=parse_cpus(args.client_cpus),
    ).as_dict()
    print(table(row))
    if args.out:
        args.out.write_text(json.dumps(row, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
