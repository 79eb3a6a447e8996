"""Storage safety (issue 11): damage is refused, not cut; failed fsyncs and full disks stop
acknowledgements; the epoch is checked under the write lock; followers agree per (seq, epoch)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from dvecdb_node.storage.engine import Engine, EngineOptions, FsyncMode, RecoveryError
from dvecdb_node.storage.records import CollectionConfig, CreateCollection, UpsertBatch
from dvecdb_node.storage.wal import HEADER_SIZE

pytestmark = pytest.mark.unit
DIM = 4


async def _open(path: Path, fsync: FsyncMode = FsyncMode.BATCH) -> Engine:
    engine = Engine(path, EngineOptions(fsync=fsync, segment_bytes=4096))
    await engine.recover()
    return engine


def _batch(ids: list[str], seed: int = 0) -> UpsertBatch:
    vectors = np.random.default_rng(seed).random((len(ids), DIM), dtype=np.float32)
    return UpsertBatch("c", ids, vectors, [None] * len(ids))


async def _fill(engine: Engine, batches: int, epoch: int = 1) -> None:
    await engine.submit(CreateCollection(CollectionConfig("c", DIM, "l2")), epoch=epoch)
    for i in range(batches):
        await engine.submit(_batch([f"{i}-{j}" for j in range(5)], i), epoch=epoch)


async def test_a_flipped_byte_in_an_early_segment_refuses_recovery(tmp_path: Path) -> None:
    engine = await _open(tmp_path)
    await _fill(engine, 60)
    await engine.close()
    segments = sorted((tmp_path / "wal").glob("*.wal"))
    assert len(segments) >= 3
    victim = segments[1]
    data = bytearray(victim.read_bytes())
    data[HEADER_SIZE + 3] ^= 0x40
    victim.write_bytes(bytes(data))
    sizes = [p.stat().st_size for p in segments]

    engine = Engine(tmp_path, EngineOptions(segment_bytes=4096))
    with pytest.raises(RecoveryError):
        await engine.recover()
    assert not engine.ready
    assert engine.storage_error is not None
    assert victim.name in engine.storage_error and "byte offset 0" in engine.storage_error
    assert [p.stat().st_size for p in sorted((tmp_path / "wal").glob("*.wal"))] == sizes
    await engine.close()
