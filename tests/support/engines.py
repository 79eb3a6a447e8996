"""Engines for the storage tests: open one, make an upsert batch, replicate as a follower."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dvecdb_node.storage.engine import Engine, EngineOptions, FsyncMode
from dvecdb_node.storage.records import UpsertBatch
from dvecdb_node.storage.wal import Record

DIM = 4


async def open_engine(path: Path, fsync: FsyncMode = FsyncMode.BATCH) -> Engine:
    """A recovered engine in ``path`` with small WAL segments (rolls are exercised)."""
    engine = Engine(path, EngineOptions(fsync=fsync, segment_bytes=4096))
    await engine.recover()
    return engine


def make_batch(ids: list[str], seed: int = 0, *, tagged: bool = True) -> UpsertBatch:
    """An upsert of random ``DIM``-d vectors into collection "c", each tagged ``{"id": id}``
    unless ``tagged`` is False."""
    vectors = np.random.default_rng(seed).random((len(ids), DIM), dtype=np.float32)
    metadata = [{"id": i} for i in ids] if tagged else [None] * len(ids)
    return UpsertBatch("c", ids, vectors, metadata)


async def follow(engine: Engine, records: list[Record]) -> int:
    """Append, apply and fsync ``records`` as a follower does (there overlapped); the new
    ``last_seq``."""
    appended = await engine.append_replicated(records)
    if appended:
        await engine.apply_appended(appended)
        await engine.make_durable(appended[-1][0].seq)
    return engine.last_seq
