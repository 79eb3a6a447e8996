"""``/v1/admin/slots/*``: what resharding asks of a shard's leader (cluster token).

A mover copies a set of hash slots from a source shard to a target: it fences them at the
target, exports them from the source (a cut at seq ``s``), applies them to the target with
the import call (which passes the fence), replays the source's slot log from ``s+1``, fences
them at the source (seq ``F``), reads the log up to ``F``, unfences the target, and once the
new map is published purges them at the source. Every change goes through the log and is
acknowledged at ``ack=quorum``; the slot log serves only ops a majority holds, so what a mover
has copied never vanishes in the source's failover.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any

import orjson
from aiohttp import web

from dvecdb_client.slots import parse_ranges, slot_of, slot_set
from dvecdb_node.api import schema
from dvecdb_node.api.errors import json_response
from dvecdb_node.api.keys import ENGINE, HOOKS, ROLE, SETTINGS
from dvecdb_node.api.validation import (
    check_metadata,
    check_name,
    dedupe_last_wins,
    to_matrix,
    typed,
)
from dvecdb_node.api.writes import write
from dvecdb_node.errors import InvalidInput, NodeError, NotReady
from dvecdb_node.storage.index import Collection
from dvecdb_node.storage.readers import LogReaders
from dvecdb_node.storage.records import (
    DeleteBatch,
    Float32Matrix,
    Metadata,
    SlotFence,
    UpsertBatch,
    decode_payload,
)
from dvecdb_node.storage.wal import Record as WalRecord
from dvecdb_node.storage.wal import SeqNotRetainedError, decode_frames

routes = web.RouteTableDef()
READERS = web.AppKey("slot_log_readers", LogReaders)


def install(app: web.Application) -> None:
    """Routes, and a retention floor: the log a mover still reads is kept."""
    readers = LogReaders(app[SETTINGS].replication_retention_seconds)
    app[READERS] = readers
    app[ENGINE].retention_floors.append(readers.floor)
    app.add_routes(routes)


# Labels read per chunk of an export (under the collection's shared lock).
EXPORT_CHUNK = 2048
LOG_LIMIT_DEFAULT = 1000
LOG_LIMIT_MAX = 100_000
# Bytes of log read per pass; a log call stops after the pass that crosses LOG_MAX_BYTES.
_LOG_READ_BYTES = 2 << 20
LOG_MAX_BYTES = 8 << 20
_PURGE_BATCH = 1000
_QUORUM = "quorum"
_NUMPY = orjson.OPT_SERIALIZE_NUMPY


class SnapshotRequired(NodeError):
    """410: the slot log no longer holds ``from_seq``: copy the slots again (export)."""

    status = 410
    code = "snapshot_required"


def _decimal(text: str) -> bool:
    return text.isascii() and text.isdigit()


def parse_slot_ranges(texts: Iterable[str]) -> tuple[tuple[int, int], ...]:
    """``["0-1023", "7"]`` to inclusive ranges (a reversed ``M-N`` taken as ``N-M``)."""
    out: list[tuple[int, int]] = []
    for text in texts:
        first, _, last = str(text).partition("-")
        if last and _decimal(first) and _decimal(last) and int(first) > int(last):
            text = f"{last}-{first}"
        try:
            out.extend(parse_ranges([text]))
        except ValueError as exc:
            raise InvalidInput(str(exc), code="invalid_slots") from None
    if not out:
        raise InvalidInput("no slots given", code="invalid_slots")
    return tuple(out)


def _query_slots(request: web.Request) -> frozenset[int]:
    raw = request.query.get("slots")
    if not raw:
        raise InvalidInput(
            "query parameter 'slots' is required (e.g. 0-1023,4000)", code="invalid_slots"
        )
    return slot_set(parse_slot_ranges(raw.split(",")))


def _query_int(request: web.Request, name: str, default: int | None, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        if default is None:
            raise InvalidInput(f"query parameter {name!r} is required")
        return default
    if not _decimal(raw) or not low <= int(raw) <= high:
        raise InvalidInput(f"query parameter {name!r} must be an integer {low}..{high}")
    return int(raw)


def _leader(request: web.Request) -> int:
    return request.app[ROLE].require_leader()


# ------------------------------------------------------------------- fence
@routes.post("/v1/admin/slots/fence")
async def fence(request: web.Request) -> web.Response:
    body = typed(schema.SlotFenceChange, await request.read())
    change = SlotFence(
        ranges=parse_slot_ranges(body.slots),
        fenced=body.fenced,
        owner=body.owner,
        map_version=body.map_version,
    )
    written = await write(request, change, _QUORUM)
    return json_response(written.token())


# ------------------------------------------------------------------- apply
@routes.post("/v1/admin/slots/apply")
async def apply(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    body = typed(schema.bodies_for(settings).slot_apply, await request.read())
    _leader(request)
    name = check_name(body.collection)
    config = request.app[ENGINE].collection(name).config
    count = 0
    token: dict[str, int] | None = None
    upsert: UpsertBatch | None = None
    if body.upserts:
        ids = [item.id for item in body.upserts]
        metadata = [check_metadata(item.metadata, settings) for item in body.upserts]
        matrix = to_matrix([item.vector for item in body.upserts], config.dimension)
        ids, matrix, metadata = dedupe_last_wins(ids, matrix, metadata)
        upsert = UpsertBatch(name, ids, matrix, metadata)
    if upsert is not None:
        written = await write(request, upsert, _QUORUM, fenced_ok=True)
        count += written.count
        token = written.token()
    if body.deletes:
        deletes = DeleteBatch(name, list(dict.fromkeys(body.deletes)))
        written = await write(request, deletes, _QUORUM, fenced_ok=True)
        count += written.count
        token = written.token()
    if token is None:
        token = {"seq": request.app[ENGINE].applied_seq, "epoch": request.app[ROLE].epoch}
    return json_response({**token, "count": count})


# ------------------------------------------------------------------ export
def _export_chunk(
    collection: Collection, start: int, stop: int, slots: frozenset[int]
) -> tuple[bytes, int]:
    """NDJSON lines of the chunk's items in ``slots`` (runs in a worker thread)."""
    ids, vectors, metadata = collection.items_in(start, stop, lambda i: slot_of(i) in slots)
    lines = [
        orjson.dumps({"id": item_id, "vector": vector, "metadata": meta}, option=_NUMPY)
        for item_id, vector, meta in zip(ids, vectors, metadata, strict=True)
    ]
    return b"".join(line + b"\n" for line in lines), len(ids)


async def _wait_committed(request: web.Request, seq: int) -> None:
    """Wait (up to the ack timeout) until a majority holds ``seq``: an export never starts
    from a state a failover could take back."""
    engine, hooks = request.app[ENGINE], request.app[HOOKS]
    deadline = time.monotonic() + request.app[SETTINGS].ack_timeout_seconds
    while hooks.commit_seq(engine.durable_seq) < seq:
        if time.monotonic() > deadline:
            raise NotReady(
                f"seq {seq} is not yet held by a majority of members", code="ack_timeout"
            )
        await asyncio.sleep(0.01)


@routes.get("/v1/admin/slots/export")
async def export(request: web.Request) -> web.StreamResponse:
    name = check_name(request.query.get("collection", ""))
    slots = _query_slots(request)
    epoch = _leader(request)
    engine = request.app[ENGINE]
    collection = engine.collection(name)
    seq = engine.applied_seq  # every chunk read from here on is at least as new
    request.app[READERS].note(seq + 1)  # the mover's log replay starts there
    await _wait_committed(request, seq)
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    await response.write(orjson.dumps({"seq": seq, "epoch": epoch}) + b"\n")
    loop = asyncio.get_running_loop()
    count = start = 0
    # Labels past today's span are items inserted after the cut: the log replay brings them.
    span = collection.label_span
    while start < span:
        data, found = await loop.run_in_executor(
            None, _export_chunk, collection, start, start + EXPORT_CHUNK, slots
        )
        if data:
            await response.write(data)
        count += found
        start += EXPORT_CHUNK
    await response.write(orjson.dumps({"end": True, "count": count}) + b"\n")
    await response.write_eof()
    return response


# --------------------------------------------------------------------- log
def _read_log(request: web.Request, from_seq: int, upto: int, limit_bytes: int) -> list[WalRecord]:
    """Records ``from_seq..upto`` (fewer past ``limit_bytes``), read in a worker thread."""
    wal = request.app[ENGINE].wal
    records: list[WalRecord] = []
    read = 0
    seq = from_seq
    while seq <= upto and read < limit_bytes:
        data = wal.read_frames(seq, max_bytes=_LOG_READ_BYTES, upto_seq=upto)
        if not data:
            break
        read += len(data)
        batch = decode_frames(data)
        if not batch:
            break
        records.extend(batch)
        seq = batch[-1].seq + 1
    return records


def _items(
    ids: list[str], vectors: Float32Matrix, metadata: list[Metadata | None], keep: list[int]
) -> list[dict[str, Any]]:
    return [{"id": ids[i], "vector": vectors[i], "metadata": metadata[i]} for i in keep]


def slot_ops(records: list[WalRecord], slots: frozenset[int]) -> list[dict[str, Any]]:
    """The upserts and deletes of ``records``, cut down to ids in ``slots`` (pure)."""
    ops: list[dict[str, Any]] = []
    for record in records:
        change = decode_payload(record.op, record.payload)
        if isinstance(change, UpsertBatch):
            keep = [i for i, item_id in enumerate(change.ids) if slot_of(item_id) in slots]
            if keep:
                items = _items(change.ids, change.vectors, change.metadata, keep)
                ops.append(
                    {"seq": record.seq, "collection": change.collection, "op": "upsert",
                     "items": items}
                )  # fmt: skip
        elif isinstance(change, DeleteBatch):
            ids = [item_id for item_id in change.ids if slot_of(item_id) in slots]
            if ids:
                ops.append(
                    {"seq": record.seq, "collection": change.collection, "op": "delete",
                     "ids": ids}
                )  # fmt: skip
    return ops


@routes.get("/v1/admin/slots/log")
async def slot_log(request: web.Request) -> web.Response:
    slots = _query_slots(request)
    from_seq = _query_int(request, "from_seq", None, 1, schema.MAX_INT64)
    limit = _query_int(request, "limit", LOG_LIMIT_DEFAULT, 1, LOG_LIMIT_MAX)
    _leader(request)
    engine = request.app[ENGINE]
    request.app[READERS].note(from_seq)
    commit = request.app[HOOKS].commit_seq(engine.durable_seq)
    upto = min(commit, from_seq + limit - 1)
    records: list[WalRecord] = []
    if from_seq <= upto:
        if from_seq < engine.first_seq:
            raise SnapshotRequired(
                f"the log starts at seq {engine.first_seq}, after {from_seq}: copy the slots "
                "again (export)"
            )
        loop = asyncio.get_running_loop()
        try:
            records = await loop.run_in_executor(
                None, _read_log, request, from_seq, upto, LOG_MAX_BYTES
            )
        except (SeqNotRetainedError, FileNotFoundError) as exc:
            raise SnapshotRequired(f"the log no longer holds seq {from_seq}: {exc}") from None
        if records and records[0].seq != from_seq:
            raise SnapshotRequired(f"the log no longer holds seq {from_seq}")
    ops = await asyncio.get_running_loop().run_in_executor(None, slot_ops, records, slots)
    next_seq = records[-1].seq + 1 if records else from_seq
    return json_response({"ops": ops, "next_seq": next_seq, "commit_seq": commit})


# ------------------------------------------------------------------- purge
@routes.post("/v1/admin/slots/purge")
async def purge(request: web.Request) -> web.Response:
    body = typed(schema.SlotPurge, await request.read())
    slots = slot_set(parse_slot_ranges(body.slots))
    _leader(request)
    engine = request.app[ENGINE]
    targets = (
        [engine.collection(check_name(body.collection))]
        if body.collection is not None
        else engine.collections()
    )
    count = 0
    token: dict[str, int] | None = None
    for collection in targets:
        ids = [item_id for item_id in collection.ids() if slot_of(item_id) in slots]
        for start in range(0, len(ids), _PURGE_BATCH):
            batch = DeleteBatch(collection.name, ids[start : start + _PURGE_BATCH])
            written = await write(request, batch, _QUORUM, fenced_ok=True)
            count += written.count
            token = written.token()
    if token is None:
        token = {"seq": engine.applied_seq, "epoch": request.app[ROLE].epoch}
    return json_response({**token, "count": count})
