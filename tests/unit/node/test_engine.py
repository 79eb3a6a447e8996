"""The engine: durability modes, recovery, checkpoints, snapshots, replicated apply, rewind."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import numpy as np
import pytest

from dvecdb_node.errors import Conflict as ConflictError
from dvecdb_node.errors import InvalidInput, NotFound, NotReady
from dvecdb_node.storage.engine import Engine, FsyncMode, SeqWatch
from dvecdb_node.storage.records import (
    CollectionConfig,
    CreateCollection,
    DeleteBatch,
    DropCollection,
    UpsertBatch,
)
from dvecdb_node.storage.wal import FrameDecoder, SeqGapError
from tests.support.engines import DIM, follow, make_batch, open_engine

pytestmark = pytest.mark.unit


async def _seed(engine: Engine, n: int = 20) -> UpsertBatch:
    await engine.submit(CreateCollection(CollectionConfig("c", DIM, "l2")), epoch=1)
    batch = make_batch([str(i) for i in range(n)])
    await engine.submit(batch, epoch=1)
    return batch


async def test_seq_watch_wakes_waiters() -> None:
    watch = SeqWatch()
    waiter = asyncio.create_task(watch.wait(3))
    await asyncio.sleep(0)
    watch.set(2)
    await asyncio.sleep(0)
    assert not waiter.done()
    watch.set(3)
    assert await waiter
    assert not await watch.wait(10, 0.01)


async def test_submit_assigns_dense_seqs_and_validates(tmp_path: Path) -> None:
    engine = await open_engine(tmp_path)
    await _seed(engine)
    assert (engine.last_seq, engine.applied_seq, engine.durable_seq) == (2, 2, 2)
    with pytest.raises(ConflictError):
        await engine.submit(CreateCollection(CollectionConfig("c", DIM, "l2")), epoch=1)
    with pytest.raises(NotFound):
        await engine.submit(DeleteBatch("nope", ["a"]), epoch=1)
    with pytest.raises(InvalidInput):
        await engine.submit(
            UpsertBatch("c", ["a"], np.ones((1, DIM + 1), np.float32), [None]), epoch=1
        )
    assert engine.last_seq == 2  # rejected changes are never logged
    result = await engine.submit(DeleteBatch("c", ["1", "2", "missing"]), epoch=1)
    assert (result.seq, result.count) == (3, 2)
    await engine.close()


@pytest.mark.parametrize("fsync", list(FsyncMode))
async def test_restart_replays_the_log(tmp_path: Path, fsync: FsyncMode) -> None:
    engine = await open_engine(tmp_path, fsync)
    batch = await _seed(engine)
    await engine.submit(DeleteBatch("c", ["0"]), epoch=2)
    await engine.close()
    engine = await open_engine(tmp_path, fsync)
    assert engine.last_seq == 3 and engine.last_epoch == 2
    col = engine.collection("c")
    assert col.count == 19
    found = engine.get("c", "5")
    assert found is not None and np.array_equal(found[0], batch.vectors[5])
    hits = col.search(batch.vectors[7:8], 1)
    assert hits[0][0].id == "7"
    await engine.close()


async def test_group_commit_shares_fsyncs(tmp_path: Path) -> None:
    engine = await open_engine(tmp_path, FsyncMode.BATCH)
    await engine.submit(CreateCollection(CollectionConfig("c", DIM, "l2")), epoch=1)
    fsyncs: list[float] = []
    engine.observer.fsync_done = fsyncs.append  # type: ignore[method-assign]
    await asyncio.gather(*(engine.submit(make_batch([f"x{i}"], i), epoch=1) for i in range(40)))
    assert engine.durable_seq == 41
    assert 1 <= len(fsyncs) < 40
    await engine.close()


async def test_checkpoint_then_replay_only_the_tail(tmp_path: Path) -> None:
    engine = await open_engine(tmp_path)
    await _seed(engine)
    assert await engine.checkpoint() == 2
    assert await engine.checkpoint() is None  # nothing new
    await engine.submit(make_batch(["late"], 5), epoch=1)
    await engine.close()
    engine = await open_engine(tmp_path)
    assert engine.checkpoint_seq == 2 and engine.last_seq == 3
    assert engine.collection("c").count == 21
    await engine.close()


async def test_old_wal_segments_are_deleted_after_checkpoints(tmp_path: Path) -> None:
    engine = await open_engine(tmp_path)
    await engine.submit(CreateCollection(CollectionConfig("c", DIM, "l2")), epoch=1)
    for round_ in range(3):
        for i in range(10):
            await engine.submit(make_batch([f"{round_}-{i}"], i), epoch=1)
        await engine.checkpoint()
    kept = sorted(p.name for p in engine.checkpoint_dir.iterdir())
    assert len(kept) == 2
    assert engine.first_seq <= int(kept[0]) + 1  # the log still covers the older checkpoint
    assert engine.first_seq > 1
    await engine.close()


async def test_damaged_newest_checkpoint_falls_back(tmp_path: Path) -> None:
    engine = await open_engine(tmp_path)
    await _seed(engine)
    await engine.checkpoint()
    await engine.submit(make_batch(["more"], 3), epoch=1)
    newest = await engine.checkpoint()
    await engine.close()
    assert newest is not None
    damaged = tmp_path / "checkpoints" / f"{newest:020d}" / "c0" / "vectors.npy"
    damaged.write_bytes(damaged.read_bytes()[:-8] + b"\x00" * 8)
    engine = await open_engine(tmp_path)
    assert engine.checkpoint_seq == newest - 1
    assert engine.last_seq == newest and engine.collection("c").count == 21
    await engine.close()


async def test_torn_wal_tail_is_dropped_on_recovery(tmp_path: Path) -> None:
    engine = await open_engine(tmp_path)
    await _seed(engine)
    await engine.close()
    [segment] = sorted((tmp_path / "wal").glob("*.wal"))
    segment.write_bytes(segment.read_bytes()[:-3])
    engine = await open_engine(tmp_path)
    assert engine.last_seq == 1 and engine.collection("c").count == 0
    await engine.close()


async def test_replicated_records_keep_seq_and_epoch(tmp_path: Path) -> None:
    leader = await open_engine(tmp_path / "leader")
    batch = await _seed(leader)
    await leader.submit(DropCollection("c"), epoch=3)
    await leader.submit(CreateCollection(CollectionConfig("c", DIM, "l2")), epoch=3)
    await leader.submit(batch, epoch=3)
    follower = await open_engine(tmp_path / "follower")
    records = FrameDecoder().feed(leader.wal.read_frames(1))
    assert await follow(follower, records[:2]) == 2
    assert await follow(follower, records) == 5  # already-held records are skipped
    assert follower.wal.read_frames(1) == leader.wal.read_frames(1)
    assert follower.last_epoch == 3 and follower.collection("c").count == 20
    with pytest.raises(SeqGapError):
        gap = records[-1].__class__(9, 3, records[-1].op, records[-1].frame)
        await follow(follower, [gap])
    await leader.close()
    await follower.close()


async def test_snapshot_installs_on_an_empty_node(tmp_path: Path) -> None:
    leader = await open_engine(tmp_path / "leader")
    batch = await _seed(leader)
    follower = await open_engine(tmp_path / "follower")
    async with leader.snapshot() as (archive, seq):
        copy = tmp_path / "snap.tar"
        shutil.copy(archive, copy)
    assert not archive.exists()
    assert await follower.install_snapshot(copy) == seq == 2
    assert follower.collection("c").count == 20
    assert (follower.last_seq, follower.first_seq) == (2, 3)
    await leader.submit(make_batch(["after"], 1), epoch=1)
    await follow(follower, FrameDecoder().feed(leader.wal.read_frames(3)))
    await follower.close()
    follower = await open_engine(tmp_path / "follower")
    found = follower.get("c", "4")
    assert follower.last_seq == 3 and found is not None
    assert np.array_equal(found[0], batch.vectors[4])
    await leader.close()
    await follower.close()


async def test_truncate_after_rewinds_state(tmp_path: Path) -> None:
    engine = await open_engine(tmp_path)
    await _seed(engine)
    await engine.checkpoint()
    await engine.submit(make_batch(["x"], 1), epoch=1)
    await engine.submit(make_batch(["y"], 2), epoch=2)
    assert await engine.truncate_after(3)
    assert (
        engine.last_seq == 3 and "x" in engine.collection("c") and "y" not in engine.collection("c")
    )
    # The log before the checkpoint is gone: only a snapshot can rebuild seq 1.
    assert not await engine.truncate_after(1)
    assert engine.last_seq == 3
    await engine.close()
    engine = await open_engine(tmp_path)
    assert engine.last_seq == 3 and "x" in engine.collection("c")
    await engine.close()


async def test_truncate_after_without_checkpoint_replays_from_start(tmp_path: Path) -> None:
    engine = await open_engine(tmp_path)
    await _seed(engine)
    await engine.submit(make_batch(["x"], 1), epoch=2)
    assert await engine.truncate_after(1)
    assert engine.collection("c").count == 0 and engine.last_epoch == 1
    await engine.close()


async def test_waiters_wake_on_append(tmp_path: Path) -> None:
    engine = await open_engine(tmp_path)
    waiter = asyncio.create_task(engine.wait_appended(1, 5))
    await asyncio.sleep(0)
    await engine.submit(CreateCollection(CollectionConfig("c", DIM, "l2")), epoch=1)
    assert await waiter
    assert await engine.wait_durable(1, 1)
    await engine.close()


async def test_close_finishes_in_flight_writes_and_refuses_new_ones(tmp_path: Path) -> None:
    engine = await open_engine(tmp_path)
    await engine.submit(CreateCollection(CollectionConfig("c", DIM, "l2")), epoch=1)
    writes = [
        asyncio.create_task(engine.submit(make_batch([f"w{i}"], i), epoch=1)) for i in range(5)
    ]
    await asyncio.sleep(0)
    await engine.close()
    results = await asyncio.gather(*writes, return_exceptions=True)
    done = [r for r in results if not isinstance(r, BaseException)]
    assert all(isinstance(r, NotReady) for r in results if isinstance(r, BaseException))
    with pytest.raises(NotReady):
        await engine.submit(make_batch(["late"]), epoch=1)
    engine = await open_engine(tmp_path)
    assert engine.collection("c").count == len(done)
    await engine.close()
