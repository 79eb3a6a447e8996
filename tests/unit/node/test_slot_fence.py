"""The slot fence in the engine: a log record refusing upserts and deletes under the write
lock, replayed by a restart and a follower, carried by checkpoints, snapshots and rewinds."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from dvecdb_client.slots import slot_of
from dvecdb_node.storage.engine import Engine
from dvecdb_node.storage.records import (
    CollectionConfig,
    CreateCollection,
    DeleteBatch,
    Op,
    SlotFence,
    decode_payload,
    encode_payload,
    op_of,
)
from dvecdb_node.storage.slotfence import SlotFences, SlotMoved, slot_runs
from dvecdb_node.storage.wal import FrameDecoder
from tests.support.engines import DIM, follow, make_batch, open_engine

pytestmark = pytest.mark.unit

LOW = SlotFence(((0, 1023),), True, owner=2, map_version=5)


def _ids(count: int, low: bool, prefix: str = "i") -> list[str]:
    out, n = [], 0
    while len(out) < count:
        if (slot_of(f"{prefix}{n}") <= 1023) == low:
            out.append(f"{prefix}{n}")
        n += 1
    return out


async def _seeded(path: Path) -> Engine:
    engine = await open_engine(path)
    await engine.submit(CreateCollection(CollectionConfig("c", DIM, "l2")), epoch=1)
    await engine.submit(make_batch(_ids(5, True) + _ids(5, False)), epoch=1)
    return engine


def _fenced(engine: Engine) -> list[str]:
    return engine.slot_fences.ranges()


def test_payload_round_trips() -> None:
    change = SlotFence(((0, 7), (4000, 4095)), False, owner=None, map_version=3)
    assert op_of(change) is Op.SLOT_FENCE == 7
    assert decode_payload(Op.SLOT_FENCE, encode_payload(change)) == change


def test_fences_serialise_as_runs_of_one_mark() -> None:
    fences = SlotFences()
    fences.apply(SlotFence(((0, 9),), True, 1, 2))
    fences.apply(SlotFence(((5, 14),), True, 3, 4))
    fences.apply(SlotFence(((2, 3),), False))
    assert fences.to_json() == [[0, 1, 1, 2], [4, 4, 1, 2], [5, 14, 3, 4]]
    assert SlotFences.from_json(fences.to_json()).to_json() == fences.to_json()
    assert fences.ranges() == ["0-1", "4-14"] and len(fences) == 13
    assert not SlotFences.from_json(None)
    assert slot_runs([3, 1, 2, 9]) == [(1, 3), (9, 9)]


async def test_fenced_writes_are_refused_whole_and_nothing_is_logged(tmp_path: Path) -> None:
    engine = await _seeded(tmp_path)
    fence = await engine.submit(LOW, epoch=1)
    last = engine.last_seq
    mixed = _ids(1, False, "new") + _ids(2, True, "new")
    with pytest.raises(SlotMoved) as refused:
        await engine.submit(make_batch(mixed), epoch=1)
    assert refused.value.status == 409 and refused.value.code == "slot_moved"
    assert refused.value.extra["owner"] == 2 and refused.value.extra["map_version"] == 5
    assert refused.value.extra["slots"] == [str(s) for s in sorted(map(slot_of, mixed[1:]))]
    with pytest.raises(SlotMoved):
        await engine.submit(DeleteBatch("c", _ids(1, True)), epoch=1)
    assert engine.last_seq == last  # nothing of a refused batch is logged
    assert mixed[0] not in engine.collection("c")
    # Outside the fence, and the import path inside it, write as before.
    assert (await engine.submit(make_batch(_ids(2, False)), epoch=1)).seq == last + 1
    done = await engine.submit(DeleteBatch("c", _ids(2, True)), epoch=1, fenced_ok=True)
    assert done.count == 2 and done.seq > fence.seq
    await engine.submit(SlotFence(((0, 1023),), False), epoch=1)
    assert _fenced(engine) == []
    await engine.submit(DeleteBatch("c", _ids(1, True)), epoch=1)
    await engine.close()


async def test_restart_follower_checkpoint_snapshot_and_rewind_keep_the_fence(
    tmp_path: Path,
) -> None:
    leader = await _seeded(tmp_path / "leader")
    await leader.submit(LOW, epoch=1)
    await leader.close()
    leader = await open_engine(tmp_path / "leader")  # from the log
    assert _fenced(leader) == ["0-1023"]
    assert leader.slot_fences.mark(5) is not None and leader.slot_fences.mark(5).owner == 2

    follower = await open_engine(tmp_path / "follower")
    await follow(follower, FrameDecoder().feed(leader.wal.read_frames(1, max_bytes=1 << 30)))
    assert _fenced(follower) == ["0-1023"]
    await follower.close()

    await leader.checkpoint()
    unfence = await leader.submit(SlotFence(((0, 99),), False), epoch=1)
    await leader.close()
    leader = await open_engine(tmp_path / "leader")  # checkpoint, then the log after it
    assert _fenced(leader) == ["100-1023"]
    # A rewind to before the unfence rebuilds the fence from the checkpoint.
    assert await leader.truncate_after(unfence.seq - 1)
    assert _fenced(leader) == ["0-1023"]
    await leader.submit(SlotFence(((0, 9),), False), epoch=1)

    fresh = await open_engine(tmp_path / "fresh")
    async with leader.snapshot() as (archive, _):
        copy = tmp_path / "snap.tar"
        shutil.copy(archive, copy)
    await fresh.install_snapshot(copy)
    assert _fenced(fresh) == ["10-1023"]
    with pytest.raises(SlotMoved):
        await fresh.submit(make_batch(_ids(1, True)), epoch=1)
    await fresh.close()
    await leader.close()
