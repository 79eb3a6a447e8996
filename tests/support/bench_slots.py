"""Resharding's node side, measured: the fence check's cost on the write path, export and
slot-log speed on real node processes.

    .venv/bin/python -m tests.support.bench_slots [--items 50000] [--dim 64]

Write path (in process, ``fsync=none`` so the log's disk does not drown the difference):
``Engine.submit`` of 1- and 100-item upserts with ``fenced_ok=True`` (skips the check: the
code path before fences existed), with nothing fenced, and with 1,024 slots fenced (ids
outside them, so the writes go through), in alternating rounds, best round kept; plus the
check alone (``SlotFences.refusal``) per batch.

Over HTTP (two ``--standalone`` nodes, ``fsync=batch``): ingest ``--items`` vectors, export
all slots and a quarter of them (items/s), copy the export into the other node with the
import call (items/s), read the whole slot log from seq 1 (items/s), and replay it into a
third node with the import call (ops/s, items/s).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import orjson

from dvecdb_client import NodeClient
from dvecdb_client.slots import slot_of
from dvecdb_node.storage.engine import Engine, EngineOptions, FsyncMode
from dvecdb_node.storage.records import CollectionConfig, CreateCollection, SlotFence, UpsertBatch
from dvecdb_node.storage.slotfence import SlotFences
from tests.conftest import NodeProcess, free_port

TOKEN = "bench-token"
HEADERS = {"Authorization": f"Bearer {TOKEN}"}


# ------------------------------------------------------------------ write path
async def _write_rounds(folder: Path, batch: int, writes: int, rounds: int) -> dict[str, float]:
    engine = Engine(folder, EngineOptions(fsync=FsyncMode.NONE))
    await engine.recover()
    await engine.submit(CreateCollection(CollectionConfig("c", 8, "l2")), epoch=1)
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((batch, 8)).astype(np.float32)
    meta: list[Any] = [None] * batch
    # Ids outside the fence below (slots 928-3999), written over and over by every case.
    pool = [i for i in (f"x{n}" for n in range(40_000)) if 928 <= slot_of(i) <= 3999][:20_000]
    counter = 0

    async def run(fenced_ok: bool) -> float:
        nonlocal counter
        started = time.perf_counter()
        for _ in range(writes):
            ids = [pool[(counter + i) % len(pool)] for i in range(batch)]
            counter += batch
            await engine.submit(UpsertBatch("c", ids, vectors, meta), epoch=1, fenced_ok=fenced_ok)
        return (time.perf_counter() - started) / writes * 1e6

    best: dict[str, float] = {}
    fence_on = SlotFence(((4000, 4095), (0, 927)), True, 1, 2)  # 1,024 slots
    fence_off = SlotFence(((0, 4095),), False)
    for _ in range(rounds):
        for case in ("before (check skipped)", "nothing fenced", "1024 slots fenced"):
            await engine.submit(fence_on if case.startswith("1024") else fence_off, epoch=1)
            took = await run(case.startswith("before"))
            best[case] = min(best.get(case, float("inf")), took)
    await engine.close()
    return best


def _check_alone(batch: int) -> dict[str, float]:
    fences = SlotFences()
    ids = [f"id-{i}" for i in range(batch)]
    out: dict[str, float] = {}
    for label, fenced in (("nothing fenced", False), ("1024 slots fenced", True)):
        if fenced:
            fences.apply(SlotFence(((0, 1023),), True))
        ok = [i for i in ids if not fenced or fences.refusal([i]) is None] or ids
        reps = max(1, 200_000 // batch)
        started = time.perf_counter()
        for _ in range(reps):
            if fences:
                fences.refusal(ok)
        out[label] = (time.perf_counter() - started) / reps * 1e6
    return out


# ---------------------------------------------------------------------- HTTP
def _node(root: Path, name: str) -> NodeProcess:
    folder = root / name
    folder.mkdir()
    return NodeProcess(
        folder / "data",
        port=free_port(),
        node_id=name,
        standalone=True,
        args=["--fsync", "batch"],
        env={"DVECDB_CLUSTER_TOKEN": TOKEN, "DVECDB_LOG_LEVEL": "WARNING"},
        log_path=folder / "node.log",
    ).start()


async def _timed(what: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = await what()
    return time.perf_counter() - started, result


async def _export(session: aiohttp.ClientSession, url: str, slots: str) -> list[Any]:
    async with session.get(
        f"{url}/v1/admin/slots/export",
        params={"collection": "c", "slots": slots},
        headers=HEADERS,
    ) as resp:
        assert resp.status == 200, await resp.text()
        lines = (await resp.read()).splitlines()
    items = [orjson.loads(line) for line in lines[1:-1]]
    assert orjson.loads(lines[-1]) == {"end": True, "count": len(items)}
    return items


async def _apply(
    session: aiohttp.ClientSession, url: str, upserts: list[Any], deletes: list[str]
) -> None:
    async with session.post(
        f"{url}/v1/admin/slots/apply",
        data=orjson.dumps({"collection": "c", "upserts": upserts, "deletes": deletes}),
        headers={**HEADERS, "Content-Type": "application/json"},
    ) as resp:
        assert resp.status == 200, await resp.text()


async def _read_log(
    session: aiohttp.ClientSession, url: str, on_page: Callable[[list[Any]], Awaitable[None]]
) -> tuple[int, int]:
    """Every op of the slot log from seq 1 (all slots); (ops, items)."""
    position, ops, items = 1, 0, 0
    while True:
        async with session.get(
            f"{url}/v1/admin/slots/log",
            params={"slots": "0-4095", "from_seq": str(position), "limit": "1000"},
            headers=HEADERS,
        ) as resp:
            assert resp.status == 200, await resp.text()
            page = orjson.loads(await resp.read())
        ops += len(page["ops"])
        items += sum(len(op.get("items", op.get("ids", []))) for op in page["ops"])
        await on_page(page["ops"])
        position = page["next_seq"]
        if position > page["commit_seq"]:
            return ops, items


async def _http(items: int, dim: int, batch: int) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="bench-slots-"))
    nodes = [_node(root, name) for name in ("source", "copy", "replay")]
    source, copy, replay = (n.url for n in nodes)
    report: dict[str, Any] = {"items": items, "dim": dim, "write_batch": batch}
    try:
        for url in (source, copy, replay):
            async with NodeClient(url, token=TOKEN) as client:
                await client.create_collection("c", dim, "l2")
        rng = np.random.default_rng(1)
        async with NodeClient(source, token=TOKEN, timeout=120) as client:
            started = time.perf_counter()
            for start in range(0, items, batch):
                ids = [f"item-{i}" for i in range(start, min(items, start + batch))]
                vectors = rng.standard_normal((len(ids), dim)).astype(np.float32)
                await client.upsert_bulk("c", ids, vectors)
            report["ingest_items_per_s"] = round(items / (time.perf_counter() - started))
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
            took, everything = await _timed(lambda: _export(session, source, "0-4095"))
            assert len(everything) == items
            report["export_all_items_per_s"] = round(items / took)
            took, quarter = await _timed(lambda: _export(session, source, "0-1023"))
            report["export_quarter"] = {
                "items": len(quarter),
                "seconds": round(took, 3),
                "items_per_s": round(len(quarter) / took),
            }

            async def copy_all() -> None:
                for start in range(0, len(everything), 1000):
                    await _apply(session, copy, everything[start : start + 1000], [])

            took, _ = await _timed(copy_all)
            report["import_items_per_s"] = round(items / took)

            async def nothing(ops: list[Any]) -> None:
                return None

            took, (ops, logged) = await _timed(lambda: _read_log(session, source, nothing))
            report["log_read"] = {
                "ops": ops,
                "items": logged,
                "items_per_s": round(logged / took),
            }

            async def apply_page(page: list[Any]) -> None:
                for op in page:
                    if op["op"] == "upsert":
                        await _apply(session, replay, op["items"], [])
                    else:
                        await _apply(session, replay, [], op["ids"])

            took, (ops, logged) = await _timed(lambda: _read_log(session, source, apply_page))
            report["log_replay"] = {
                "ops_per_s": round(ops / took),
                "items_per_s": round(logged / took),
            }
            on_replay = await _export(session, replay, "0-4095")
            assert len(on_replay) == items
    finally:
        for node in nodes:
            node.kill()
        shutil.rmtree(root, ignore_errors=True)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--batch", type=int, default=1000, help="items per ingest write")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    write_path: dict[str, Any] = {}
    for batch, writes in ((1, 2000), (100, 300)):
        folder = Path(tempfile.mkdtemp(prefix="bench-fence-"))
        try:
            best = asyncio.run(_write_rounds(folder, batch, writes, args.rounds))
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        write_path[f"submit_us_batch_{batch}"] = {k: round(v, 2) for k, v in best.items()}
        write_path[f"check_alone_us_batch_{batch}"] = {
            k: round(v, 3) for k, v in _check_alone(batch).items()
        }
    print(json.dumps({"write_path": write_path}, indent=1))
    print(json.dumps(asyncio.run(_http(args.items, args.dim, args.batch)), indent=1))


if __name__ == "__main__":
    main()
