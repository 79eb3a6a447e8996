"""The leader's replication endpoints: the log stream, snapshots, and follower acks.

The stream is chunked HTTP carrying WAL frames exactly as they lie in the segment files,
read in batches (up to ``MAX_BATCH_RECORDS`` / ``MAX_BATCH_BYTES`` per write), only up to the
leader's durable seq: a follower never holds a record its leader could lose in a crash. Idle
or busy, the leader sends a heartbeat frame (seq 0) with its position and a lease token at
least every second (a quarter of the lease when that is shorter); follower acks echo the
token and so renew the leader lease (``lease``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time

from aiohttp import web

from dvecdb_node.api.errors import json_response
from dvecdb_node.api.keys import ENGINE, ROLE
from dvecdb_node.api.schema import MAX_INT64, FollowerAck, decode
from dvecdb_node.errors import Conflict, InvalidInput, NotReady
from dvecdb_node.replication import lease, logview
from dvecdb_node.replication.keys import MANAGER
from dvecdb_node.storage.wal import SeqNotRetainedError

log = logging.getLogger(__name__)

STREAM_CONTENT_TYPE = "application/x-dvec-wal"
MAX_BATCH_RECORDS = 4096
MAX_BATCH_BYTES = 4 << 20
HEARTBEAT_SECONDS = 1.0

routes = web.RouteTableDef()


def _int_param(request: web.Request, name: str, default: int | None = None) -> int:
    raw = request.query.get(name)
    if raw is None:
        if default is None:
            raise InvalidInput(f"query parameter {name!r} is required")
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInput(f"query parameter {name!r} must be an integer") from None
    if not 0 <= value <= MAX_INT64:  # epochs and seqs are stored as 64-bit integers
        raise InvalidInput(f"query parameter {name!r} must be an integer from 0 to 2**63-1")
    return value


def _node_id(request: web.Request) -> str:
    node_id = request.query.get("node_id", "")
    if not 1 <= len(node_id) <= 256:
        raise InvalidInput("query parameter 'node_id' is required (1-256 chars)")
    return node_id


@routes.get("/v1/replication/stream")
async def stream(request: web.Request) -> web.StreamResponse:
    app = request.app
    manager, engine, role = app[MANAGER], app[ENGINE], app[ROLE]
    from_seq = _int_param(request, "from_seq")
    epoch = _int_param(request, "epoch")
    # Without prev_epoch the caller vouches for its prefix: only retention is checked.
    prev_epoch = _int_param(request, "prev_epoch") if "prev_epoch" in request.query else None
    node_id = _node_id(request)
    if from_seq < 1:
        raise InvalidInput("from_seq starts at 1")
    manager.check_peer(epoch, f"follower {node_id}")
    role.require_leader()
    if not engine.ready:
        raise NotReady("the store is still recovering")
    if epoch != role.epoch:
        raise Conflict(f"stream epoch {epoch} is not {role.epoch}", code="stale_epoch",
                       epoch=role.epoch)  # fmt: skip
    retained = from_seq >= engine.first_seq or from_seq == engine.last_seq + 1
    if prev_epoch is None:
        decision = logview.Agreement("stream" if retained else "snapshot")
    else:
        decision = logview.decide(engine, from_seq - 1, prev_epoch)
        if decision.action == "stream" and not retained:
            # Agreed (an empty follower agrees at seq 0) but the log it needs is gone.
            decision = logview.Agreement("snapshot")
    if decision.action == "snapshot":
        raise Conflict(
            f"seq {from_seq} is older than the retained log (first {engine.first_seq})",
            code="snapshot_required",
            first_seq=engine.first_seq,
        )
    if decision.action == "truncate":
        raise Conflict(
            f"log diverges after seq {decision.truncate_to}",
            code="log_diverged",
            truncate_to=decision.truncate_to,
        )
    response = web.StreamResponse(
        headers={
            "Content-Type": STREAM_CONTENT_TYPE,
            "X-DVec-Epoch": str(epoch),
            "X-DVec-Leader-Seq": str(engine.last_seq),
        }
    )
    response.enable_chunked_encoding()
    manager.tracker.stream_opened(node_id, request.query.get("url"), from_seq - 1)
    loop = asyncio.get_running_loop()
    beat_every = min(HEARTBEAT_SECONDS, manager.settings.lease_seconds / 4)
    try:
        await response.prepare(request)
        following = from_seq
        last_beat = -math.inf
        while (
            role.is_leader
            and role.epoch == epoch
            and engine.ready
            and not manager.stream_may_end(node_id, following)
        ):
            if time.monotonic() - last_beat >= beat_every:
                beat = logview.heartbeat_frame(
                    epoch, engine.last_seq, engine.durable_seq, lease.token_now()
                )
                await response.write(beat)
                last_beat = time.monotonic()
            durable = engine.durable_seq
            if following <= durable:
                upto = min(durable, following + MAX_BATCH_RECORDS - 1)
                data = await loop.run_in_executor(
                    None, logview.read_batch, engine.wal, following, upto, MAX_BATCH_BYTES
                )
                await response.write(data)
                following += logview.count_frames(data)
                continue
            await engine.wait_durable(
                following, max(0.01, beat_every - (time.monotonic() - last_beat))
            )
    except (ConnectionResetError, SeqNotRetainedError, FileNotFoundError) as exc:
        log.info("stream to %s ended: %s", node_id, exc)
    finally:
        manager.tracker.stream_closed(node_id)
    with contextlib.suppress(ConnectionResetError):
        await response.write_eof()
    return response


@routes.get("/v1/replication/snapshot")
async def snapshot(request: web.Request) -> web.StreamResponse:
    app = request.app
    manager, engine, role = app[MANAGER], app[ENGINE], app[ROLE]
    epoch = _int_param(request, "epoch", role.epoch)
    node_id = request.query.get("node_id")
    manager.check_peer(epoch, f"snapshot request from {node_id}")
    role.require_leader()
    if not engine.ready:
        raise NotReady("the store is still recovering")
    loop = asyncio.get_running_loop()
    async with engine.snapshot() as (path, seq):
        if node_id:
            manager.tracker.pin(node_id, seq)
        response = web.StreamResponse(
            headers={
                "Content-Type": "application/x-tar",
                "X-DVec-Snapshot-Seq": str(seq),
                "X-DVec-Epoch": str(role.epoch),
            }
        )
        response.content_length = path.stat().st_size
        await response.prepare(request)
        fh = await loop.run_in_executor(None, path.open, "rb")
        try:
            while chunk := await loop.run_in_executor(None, fh.read, 1 << 20):
                await response.write(chunk)
        finally:
            fh.close()
        await response.write_eof()
    log.info("sent snapshot at seq %d to %s", seq, node_id)
    return response


@routes.post("/v1/replication/ack")
async def ack(request: web.Request) -> web.Response:
    app = request.app
    manager, engine, role = app[MANAGER], app[ENGINE], app[ROLE]
    body = decode(FollowerAck, await request.read())
    node_id, epoch = body.node_id, body.epoch
    manager.check_peer(epoch, f"ack from {node_id}")
    role.require_leader()
    if epoch != role.epoch:
        raise Conflict(f"ack epoch {epoch} is not {role.epoch}", code="stale_epoch",
                       epoch=role.epoch)  # fmt: skip
    manager.tracker.acked(node_id, min(body.received_seq, engine.last_seq), body.applied_seq)
    manager.heard_from(node_id, body.lease_token)
    return json_response({"epoch": role.epoch, "last_seq": engine.last_seq})
