"""Checkpoints copy collections in memory so writes pause only for the copy, not the files.

The file writing is held back by a latch; a write submitted meanwhile completes when copies
are allowed and waits for the files when the collection is over ``checkpoint_copy_bytes``.
Either way the checkpoint holds exactly the state at its seq, and recovery from it works.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dvecdb_node.storage import engine as engine_module
from dvecdb_node.storage.engine import Engine, EngineOptions
from dvecdb_node.storage.records import CollectionConfig, CreateCollection, UpsertBatch

pytestmark = pytest.mark.unit
DIM = 4


def _batch(ids: list[str], seed: int) -> UpsertBatch:
    vectors = np.random.default_rng(seed).random((len(ids), DIM), dtype=np.float32)
    return UpsertBatch("c", ids, vectors, [None] * len(ids))


class _Observer:
    """Keeps what the engine reports of checkpoints (the metrics' view)."""

    def __init__(self) -> None:
        self.checkpoints: list[tuple[float, float]] = []

    def wal_appended(self, nbytes: int) -> None:
        pass

    def fsync_done(self, seconds: float) -> None:
        pass

    def checkpoint_done(self, seconds: float, paused: float) -> None:
        self.checkpoints.append((seconds, paused))


async def _checkpoint_with_a_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, copy_bytes: int
) -> tuple[bool, tuple[float, float]]:
    """(did the write finish while the files were held back, (seconds, paused) reported)."""
    latch, writing = threading.Event(), threading.Event()
    real = engine_module.snapshots.write_checkpoint

    def held_back(*args: Any, **kwargs: Any) -> Any:
        writing.set()
        latch.wait(10)
        return real(*args, **kwargs)

    monkeypatch.setattr(engine_module.snapshots, "write_checkpoint", held_back)
    observer = _Observer()
    engine = Engine(tmp_path, EngineOptions(checkpoint_copy_bytes=copy_bytes), observer)
    await engine.recover()
    await engine.submit(CreateCollection(CollectionConfig("c", DIM, "l2")), epoch=1)
    await engine.submit(_batch([str(i) for i in range(50)], 1), epoch=1)
    checkpoint = asyncio.create_task(engine.checkpoint())
    await asyncio.to_thread(writing.wait, 10)
    write = asyncio.create_task(engine.submit(_batch(["late"], 2), epoch=1))
    done, _ = await asyncio.wait({write}, timeout=1.0)
    await asyncio.sleep(0.3)  # the files stay held back a while longer either way
    latch.set()
    seq = await checkpoint
    await write
    await engine.close()

    reopened = Engine(tmp_path, EngineOptions())
    await reopened.recover()
    assert reopened.checkpoint_seq == seq == 2  # the checkpoint is the state before "late"
    assert reopened.collection("c").count == 51  # "late" replays from the log
    await reopened.close()
    assert len(observer.checkpoints) == 1
    return bool(done), observer.checkpoints[0]


async def test_writes_go_on_while_a_copied_checkpoint_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    finished, (seconds, paused) = await _checkpoint_with_a_write(
        tmp_path, monkeypatch, copy_bytes=1 << 30
    )
    assert finished
    # The files were held back at least 0.3 s after the copy: the pause metric leaves that out.
    assert seconds - paused >= 0.3


async def test_collections_too_big_to_copy_pause_writes_for_the_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    finished, (seconds, paused) = await _checkpoint_with_a_write(
        tmp_path, monkeypatch, copy_bytes=0
    )
    assert not finished
    assert paused >= 1.0 and seconds >= paused
