"""The leader's view of its own log for agreement checks and streaming: epochs and raw frames.

Everything here reads segment files as they lie on disk; the stream sends those bytes as is.
A segment may be deleted by a checkpoint while it is read, which surfaces as
:class:`FileNotFoundError` (the stream ends and the follower reconnects).
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from dvecdb_node.replication import agreement
from dvecdb_node.replication.agreement import Agreement
from dvecdb_node.storage import snapshot as snapshots
from dvecdb_node.storage.engine import Engine
from dvecdb_node.storage.records import Op
from dvecdb_node.storage.wal import (
    HEADER_SIZE,
    SeqNotRetainedError,
    WriteAheadLog,
    encode_frame,
)

__all__ = ["Agreement", "decide", "heartbeat_frame", "parse_heartbeat"]

_HEAD = struct.Struct("<IIQQB")
_HEARTBEAT = struct.Struct("<QQ")
_TOKEN = struct.Struct("<Q")
_LENGTH = struct.Struct("<I")
HEARTBEAT_SEQ = 0


def heartbeat_frame(epoch: int, last_seq: int, durable_seq: int, token: int = 0) -> bytes:
    """A frame with seq 0 (never a record): the leader's position and a lease token (see
    ``lease``), sent at least every heartbeat interval."""
    payload = _HEARTBEAT.pack(last_seq, durable_seq) + _TOKEN.pack(token)
    return encode_frame(HEARTBEAT_SEQ, epoch, Op.NOOP, payload)


def parse_heartbeat(payload: bytes | memoryview) -> tuple[int, int, int]:
    """(leader last_seq, leader durable_seq, lease token or 0) from a heartbeat payload.

    The token was added after the first two fields: a heartbeat without it reads as 0.
    """
    raw = bytes(payload)
    last_seq, durable_seq = _HEARTBEAT.unpack_from(raw)
    token = _TOKEN.unpack_from(raw, _HEARTBEAT.size)[0] if len(raw) >= 24 else 0
    return int(last_seq), int(durable_seq), int(token)


def _read_epoch(path: Path, offset: int) -> int:
    fd = os.open(path, os.O_RDONLY)
    try:
        header = os.pread(fd, HEADER_SIZE, offset)
    finally:
        os.close(fd)
    if len(header) < HEADER_SIZE:
        raise FileNotFoundError(f"{path} is shorter than expected")
    return int(_HEAD.unpack(header)[3])


def checkpoint_epoch(engine: Engine, seq: int) -> int | None:
    """The epoch recorded by a retained checkpoint covering exactly ``seq``."""
    for found, path in snapshots.list_checkpoints(engine.checkpoint_dir):
        if found == seq:
            try:
                return int(snapshots.read_manifest(path)["epoch"])
            except (snapshots.CheckpointError, KeyError, ValueError):
                return None
    return None


def epoch_at(engine: Engine, seq: int) -> int | None:
    """Epoch of record ``seq`` in this node's log, or None if it is not retained."""
    if seq <= 0:
        return 0
    wal = engine.wal
    if wal.first_seq <= seq <= wal.last_seq:
        try:
            spans = wal.frame_spans(seq, seq)
            if spans:
                path, offset, _ = spans[0]
                return _read_epoch(path, offset)
        except (SeqNotRetainedError, FileNotFoundError):
            return None
    if seq == engine.checkpoint_seq or seq == wal.first_seq - 1:
        return checkpoint_epoch(engine, seq)
    return None


def end_of_epoch(engine: Engine, epoch: int, cap: int) -> int | None:
    """Last seq <= ``cap`` whose epoch is <= ``epoch`` (None if it is no longer retained)."""
    if cap <= 0:
        return 0
    wal = engine.wal
    lo, hi = wal.first_seq, min(cap, wal.last_seq)

    def strict_epoch(seq: int) -> int:
        found = epoch_at(engine, seq)
        if found is None:
            raise FileNotFoundError(f"record {seq} vanished")
        return found

    try:
        point = agreement.last_seq_at_or_below(epoch, lo, hi, strict_epoch)
    except FileNotFoundError:
        return None
    if point is not None:
        return point
    before = min(lo - 1, cap)
    if before <= 0:
        return 0
    held = epoch_at(engine, before)
    return before if held is not None and held <= epoch else None


def decide(engine: Engine, prev_seq: int, prev_epoch: int) -> Agreement:
    return agreement.decide(
        prev_seq,
        prev_epoch,
        leader_last_seq=engine.last_seq,
        epoch_at=lambda seq: epoch_at(engine, seq),
        end_of_epoch=lambda e, cap: end_of_epoch(engine, e, cap),
    )


def read_batch(wal: WriteAheadLog, from_seq: int, upto_seq: int, max_bytes: int) -> bytes:
    """Whole frames ``from_seq..`` (at most ``upto_seq``, about ``max_bytes``) from the
    segment files as they lie on disk; at least one frame. Runs in a worker thread."""
    data = wal.read_frames(from_seq, max_bytes=max_bytes, upto_seq=upto_seq)
    if not data:
        raise FileNotFoundError(f"record {from_seq} is no longer in the log")
    return data


def count_frames(data: bytes) -> int:
    """How many whole frames a buffer of frames holds (walks the length prefixes)."""
    count = pos = 0
    end = len(data)
    while pos + _LENGTH.size <= end:
        (length,) = _LENGTH.unpack_from(data, pos)
        pos += _LENGTH.size + 4 + length
        if pos > end:
            break
        count += 1
    return count
