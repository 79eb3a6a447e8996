"""Storage safety (issue 11): damage is refused, not cut; failed fsyncs and full disks stop
acknowledgements; the epoch is checked under the write lock; followers agree per (seq, epoch)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dvecdb_node.errors import NotLeader
from dvecdb_node.storage import wal as wal_module
from dvecdb_node.storage.engine import (
    DiskFull,
    Engine,
    EngineOptions,
    RecoveryError,
    SeqWatch,
    StorageFailed,
)
from dvecdb_node.storage.records import CollectionConfig, CreateCollection, UpsertBatch
from dvecdb_node.storage.wal import HEADER_SIZE, FrameDecoder
from tests.support.engines import DIM, follow, make_batch, open_engine

pytestmark = pytest.mark.unit


async def _fill(engine: Engine, batches: int, epoch: int = 1) -> None:
    await engine.submit(CreateCollection(CollectionConfig("c", DIM, "l2")), epoch=epoch)
    for i in range(batches):
        await engine.submit(
            make_batch([f"{i}-{j}" for j in range(5)], i, tagged=False), epoch=epoch
        )


async def test_a_flipped_byte_in_an_early_segment_refuses_recovery(tmp_path: Path) -> None:
    engine = await open_engine(tmp_path)
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


class _FaultyOs:
    """Stands in for ``os`` in the WAL module: injects fsync and write failures."""

    def __init__(self) -> None:
        self.fsync_errors = 0  # how many next fsyncs fail with EIO
        self.write_budget: int | None = None  # bytes writable before ENOSPC (None: no limit)

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def fsync(self, fd: int) -> None:
        if self.fsync_errors:
            self.fsync_errors -= 1
            raise OSError(errno.EIO, "Input/output error")
        os.fsync(fd)

    def write(self, fd: int, data: Any) -> int:
        if self.write_budget is None:
            return os.write(fd, data)
        if self.write_budget <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        written = os.write(fd, memoryview(data)[: self.write_budget])
        self.write_budget -= written
        return written


@pytest.fixture
def faulty_os(monkeypatch: pytest.MonkeyPatch) -> _FaultyOs:
    fake = _FaultyOs()
    monkeypatch.setattr(wal_module, "os", fake)
    return fake


async def test_after_a_failed_fsync_nothing_more_is_acknowledged(
    tmp_path: Path, faulty_os: _FaultyOs
) -> None:
    engine = await open_engine(tmp_path)
    await _fill(engine, 3)
    acked = engine.durable_seq
    faulty_os.fsync_errors = 1
    waiting = await asyncio.gather(
        *(engine.submit(make_batch([f"w{i}"], i, tagged=False), epoch=1) for i in range(5)),
        return_exceptions=True,
    )
    assert all(isinstance(r, StorageFailed) for r in waiting), waiting
    # The next fsync would succeed, which proves nothing: the engine has stopped for good.
    with pytest.raises(StorageFailed) as caught:
        await engine.submit(make_batch(["later"], tagged=False), epoch=1)
    assert caught.value.status == 503
    assert not engine.ready
    assert engine.storage_error is not None and "fsync" in engine.storage_error
    assert engine.durable_seq == acked
    await engine.close()
    engine = await open_engine(tmp_path)  # a restart re-reads the log
    assert engine.ready and engine.storage_error is None
    assert engine.last_seq >= acked and engine.collection("c").count >= 15
    await engine.close()


async def test_enospc_mid_record_fails_the_write_and_leaves_no_torn_record(
    tmp_path: Path, faulty_os: _FaultyOs
) -> None:
    engine = await open_engine(tmp_path)
    await _fill(engine, 3)
    before = engine.last_seq
    faulty_os.write_budget = 30  # the next record is cut off after 30 bytes
    with pytest.raises(DiskFull) as caught:
        await engine.submit(make_batch(["big-0", "big-1"], tagged=False), epoch=1)
    assert (caught.value.status, caught.value.code) == (507, "disk_full")
    assert engine.ready and engine.storage_error is None
    assert engine.last_seq == before and engine.collection("c").count == 15
    faulty_os.write_budget = None  # space returns
    await engine.submit(make_batch(["after"], tagged=False), epoch=1)
    await engine.close()
    engine = await open_engine(tmp_path)
    assert engine.last_seq == before + 1
    assert engine.get("c", "after") is not None and engine.get("c", "big-0") is None
    await engine.close()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs (needs root; skipped otherwise), unmounted at teardown."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


async def test_full_disk_refuses_writes_until_space_returns_and_loses_nothing(
    small_disk: Path,
) -> None:
    ballast = small_disk / "ballast"
    ballast.write_bytes(b"\0" * (256 << 10))
    engine = await open_engine(small_disk / "node")
    await engine.submit(CreateCollection(CollectionConfig("big", 256, "l2")), epoch=1)
    rng = np.random.default_rng(1)
    acked: list[str] = []
    with pytest.raises(DiskFull):
        for i in range(100):  # 100 x 40 KiB is far more than 1 MiB
            ids = [f"{i}-{j}" for j in range(40)]
            vectors = rng.random((40, 256), dtype=np.float32)
            await engine.submit(UpsertBatch("big", ids, vectors, [None] * 40), epoch=1)
            acked.extend(ids)
    assert acked and engine.ready and engine.storage_error is None
    assert engine.wal.size_bytes() == sum(
        p.stat().st_size for p in (small_disk / "node" / "wal").glob("*.wal")
    )
    ballast.unlink()  # space returns
    vectors = rng.random((2, 256), dtype=np.float32)
    await engine.submit(UpsertBatch("big", ["late-0", "late-1"], vectors, [None] * 2), epoch=1)
    acked.extend(["late-0", "late-1"])
    last = engine.last_seq
    await engine.close()
    engine = await open_engine(small_disk / "node")
    assert engine.last_seq == last
    assert engine.collection("big").count == len(acked)
    assert all(engine.get("big", item) is not None for item in acked)
    await engine.close()


async def test_seq_watch_forgets_waits_that_time_out_or_are_cancelled() -> None:
    watch = SeqWatch()
    for seq in range(1, 101):
        assert not await watch.wait(seq, 0)
    cancelled = asyncio.create_task(watch.wait(500))
    kept = asyncio.create_task(watch.wait(7))
    await asyncio.sleep(0)
    cancelled.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await cancelled
    assert watch.waiting == 1
    watch.set(7)
    assert await kept
    assert watch.waiting == 0


async def test_a_write_queued_behind_the_lock_is_refused_once_its_epoch_is_fenced(
    tmp_path: Path,
) -> None:
    engine = await open_engine(tmp_path)
    await _fill(engine, 1)
    before = engine.last_seq
    fenced_at: list[int] = []
    checked: list[int] = []

    def require_epoch(epoch: int) -> None:
        checked.append(epoch)
        if fenced_at and epoch < fenced_at[0]:
            raise NotLeader(None, f"fenced at epoch {fenced_at[0]}")

    async with engine._write_lock:  # a write in progress (or a frozen leader) holds the lock
        queued = asyncio.create_task(
            engine.submit(make_batch(["q"], tagged=False), epoch=1, check=require_epoch)
        )
        await asyncio.sleep(0.01)
        assert not queued.done() and checked == []  # the request passed the API's check
        fenced_at.append(2)  # meanwhile the node is fenced at epoch 2
    with pytest.raises(NotLeader):
        await queued
    assert checked == [1]
    assert engine.last_seq == before and engine.get("c", "q") is None
    result = await engine.submit(make_batch(["ok"], tagged=False), epoch=2, check=require_epoch)
    assert result.seq == before + 1 and checked == [1, 2]
    await engine.close()


async def test_epoch_at_answers_from_memory_and_from_the_checkpoint(tmp_path: Path) -> None:
    engine = await open_engine(tmp_path)
    await _fill(engine, 2, epoch=1)
    await engine.submit(make_batch(["e2"], tagged=False), epoch=2)
    assert [engine.epoch_at(s) for s in (0, 1, 3, 4, 5)] == [0, 1, 1, 2, None]
    assert await engine.checkpoint() == 4
    for i in range(60):  # enough segments that the log before the checkpoint is dropped
        await engine.submit(make_batch([f"x{i}"], tagged=False), epoch=3)
    await engine.checkpoint()
    await engine.checkpoint()
    await engine.close()
    engine = await open_engine(tmp_path)
    assert engine.epoch_at(1) is None  # no longer retained
    assert engine.epoch_at(engine.last_seq) == 3
    empty = await open_engine(tmp_path / "empty")
    async with engine.snapshot() as (archive, seq):
        assert await empty.install_snapshot(archive) == seq
    assert empty.first_seq == seq + 1  # the log holds nothing: the checkpoint answers
    assert empty.epoch_at(seq) == 3 and empty.epoch_at(seq - 1) is None
    await empty.close()
    await engine.close()


async def _two_histories(tmp_path: Path) -> tuple[Engine, Engine, Engine]:
    """An old leader with 1..5 at epoch 1; a new leader sharing 1..3, then 4..6 at epoch 2;
    and a follower that took the old leader's 1..5."""
    old = await open_engine(tmp_path / "old")
    new = await open_engine(tmp_path / "new")
    await _fill(old, 2, epoch=1)
    for i in range(2):
        await old.submit(make_batch([f"old-{i}"], 10 + i, tagged=False), epoch=1)
    new_follows = FrameDecoder().feed(old.wal.read_frames(1, upto_seq=3))
    await follow(new, new_follows)
    for i in range(3):
        await new.submit(make_batch([f"new-{i}"], 20 + i, tagged=False), epoch=2)
    follower = await open_engine(tmp_path / "follower")
    await follow(follower, FrameDecoder().feed(old.wal.read_frames(1)))
    assert (old.last_seq, new.last_seq, follower.last_seq) == (5, 6, 5)
    return old, new, follower


async def test_a_held_seq_at_another_epoch_is_cut_back_and_replaced(tmp_path: Path) -> None:
    old, new, follower = await _two_histories(tmp_path)
    records = FrameDecoder().feed(new.wal.read_frames(1))
    appended = await follower.append_replicated(records)
    assert [r.seq for r, _ in appended] == [4, 5, 6]
    await follower.apply_appended(appended)
    await follower.make_durable(6)
    assert follower.wal.read_frames(1) == new.wal.read_frames(1)  # identical logs
    assert [follower.epoch_at(s) for s in range(1, 7)] == [1, 1, 1, 2, 2, 2]
    assert follower.get("c", "old-0") is None and follower.get("c", "old-1") is None
    assert all(follower.get("c", f"new-{i}") is not None for i in range(3))
    # Same (seq, epoch) again is a duplicate: skipped, nothing cut.
    assert await follower.append_replicated(records) == []
    assert follower.last_seq == 6
    for engine in (old, new, follower):
        await engine.close()


async def test_records_cut_back_while_queued_for_apply_are_skipped(tmp_path: Path) -> None:
    old, new, follower = await _two_histories(tmp_path)
    await follower.truncate_after(3)
    stale = await follower.append_replicated(FrameDecoder().feed(old.wal.read_frames(4)))
    fresh = await follower.append_replicated(FrameDecoder().feed(new.wal.read_frames(4)))
    await follower.apply_appended(stale)  # queued before the cut-back: no longer in the log
    await follower.apply_appended(fresh)
    assert follower.applied_seq == 6
    assert follower.get("c", "old-0") is None and follower.get("c", "new-2") is not None
    for engine in (old, new, follower):
        await engine.close()


async def test_a_checkpoint_that_finds_no_space_frees_what_it_wrote(small_disk: Path) -> None:
    engine = await open_engine(small_disk / "node")
    await engine.submit(CreateCollection(CollectionConfig("big", 256, "l2")), epoch=1)
    rng = np.random.default_rng(2)
    for i in range(8):  # about 330 KiB of log, and as much again for a checkpoint
        ids = [f"{i}-{j}" for j in range(40)]
        vectors = rng.random((40, 256), dtype=np.float32)
        await engine.submit(UpsertBatch("big", ids, vectors, [None] * 40), epoch=1)
    free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
    (small_disk / "ballast").write_bytes(b"\0" * (free - (100 << 10)))
    with pytest.raises(OSError) as caught:
        await engine.checkpoint()
    assert caught.value.errno == errno.ENOSPC
    assert list((small_disk / "node" / "checkpoints").iterdir()) == []
    assert engine.ready
    vectors = rng.random((1, 256), dtype=np.float32)
    await engine.submit(UpsertBatch("big", ["after"], vectors, [None]), epoch=1)
    await engine.close()
