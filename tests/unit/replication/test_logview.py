"""The leader's view of its own log (epochs, agreement, raw frames) on a real engine, and the
replication manager's transitions without HTTP."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from dvecdb_node.errors import Conflict, NotReady
from dvecdb_node.replication import logview
from dvecdb_node.replication.epochs import EpochStore
from dvecdb_node.storage.engine import Engine, EngineOptions
from dvecdb_node.storage.records import Noop
from dvecdb_node.storage.wal import decode_frames

from .repl_helpers import make_manager

pytestmark = pytest.mark.unit


async def _engine(path: Path, epochs: list[int], segment_bytes: int = 1 << 16) -> Engine:
    engine = Engine(path, EngineOptions(segment_bytes=segment_bytes))
    await engine.recover()
    for epoch in epochs:
        await engine.submit(Noop(), epoch=epoch)
    return engine


async def test_epochs_and_agreement_on_a_real_log(tmp_path: Path) -> None:
    engine = await _engine(tmp_path, [1, 1, 1, 2, 2, 4])
    try:
        assert [logview.epoch_at(engine, s) for s in range(0, 8)] == [0, 1, 1, 1, 2, 2, 4, None]
        assert logview.end_of_epoch(engine, 1, 6) == 3
        assert logview.end_of_epoch(engine, 3, 6) == 5
        assert logview.end_of_epoch(engine, 3, 4) == 4
        assert logview.decide(engine, 5, 2).action == "stream"
        # An old leader's log: seqs 4..7 at epoch 1 that this leader never had.
        answer = logview.decide(engine, 7, 1)
        assert (answer.action, answer.truncate_to) == ("truncate", 3)
        assert logview.decide(engine, 0, 0).action == "stream"
    finally:
        await engine.close()


async def test_checkpointed_history_is_checked_against_the_checkpoint(tmp_path: Path) -> None:
    engine = await _engine(tmp_path, [1] * 3, segment_bytes=1 << 16)
    try:
        await engine.checkpoint()
        for _ in range(3):
            await engine.submit(Noop(), epoch=2)
        assert engine.first_seq == 4  # the checkpoint dropped the segment holding 1..3
        assert logview.epoch_at(engine, 3) == 1  # from the checkpoint manifest
        assert logview.decide(engine, 3, 1).action == "stream"
        assert logview.decide(engine, 2, 1).action == "snapshot"
    finally:
        await engine.close()


async def test_raw_batches_and_heartbeats(tmp_path: Path) -> None:
    engine = await _engine(tmp_path, [1] * 10)
    try:
        data = logview.read_batch(engine.wal, 3, 7, max_bytes=1 << 20)
        records = decode_frames(data)
        assert [r.seq for r in records] == [3, 4, 5, 6, 7]
        assert logview.count_frames(data) == 5
        assert logview.count_frames(data[:-1]) == 4
        small = logview.read_batch(engine.wal, 1, 10, max_bytes=1)
        assert logview.count_frames(small) == 1
        beat = decode_frames(logview.heartbeat_frame(3, 10, 9))[0]
        assert (beat.seq, beat.epoch) == (logview.HEARTBEAT_SEQ, 3)
        assert logview.parse_heartbeat(beat.payload) == (10, 9, 0)
        with_token = decode_frames(logview.heartbeat_frame(3, 10, 9, token=123_456))[0]
        assert logview.parse_heartbeat(with_token.payload) == (10, 9, 123_456)
        # A heartbeat from a leader that sends no token yet reads as token 0.
        assert logview.parse_heartbeat(beat.payload[:16]) == (10, 9, 0)
    finally:
        await engine.close()


async def test_promote_persists_opens_the_epoch_and_refuses_reuse(tmp_path: Path) -> None:
    manager = await make_manager(tmp_path, ack_timeout_seconds=0.05)
    try:
        await manager.promote(2)
        assert manager.role.role == "leader" and manager.engine.last_epoch == 2
        assert EpochStore(tmp_path).load().epoch == 2
        await manager.promote(2)  # a retry changes nothing
        assert manager.engine.last_seq == 1
        # ack=leader is met at once; ack=one needs a follower this leader does not have.
        await manager.wait_ack(1, "leader")
        with pytest.raises(NotReady) as timeout:
            await manager.wait_ack(1, "one")
        assert timeout.value.code == "ack_timeout"
        assert "may or may not persist" in timeout.value.message
        manager.observe_epoch(3, "a peer")  # another member leads at 3
        assert manager.role.role == "standby"
        with pytest.raises(Conflict) as refused:
            await manager.promote(3)
        assert refused.value.code == "stale_epoch"
    finally:
        await manager.close()
        await manager.engine.close()


async def test_a_higher_epoch_ends_leadership_and_fails_waiting_writes(tmp_path: Path) -> None:
    manager = await make_manager(tmp_path, ack_timeout_seconds=30)
    try:
        await manager.promote(1)
        waiting = asyncio.create_task(manager.wait_ack(1, "quorum"))
        await asyncio.sleep(0.01)
        with pytest.raises(Conflict):
            manager.check_peer(0, "old follower")
        manager.check_peer(5, "a newer peer")
        with pytest.raises(NotReady) as lost:
            await waiting
        assert lost.value.code == "leadership_lost"
        assert manager.role.role == "standby" and manager.role.epoch == 5
        assert EpochStore(tmp_path).load().epoch == 5
    finally:
        await manager.close()
        await manager.engine.close()


async def test_follower_appends_durably_before_applying(tmp_path: Path) -> None:
    leader = await _engine(tmp_path / "leader", [1, 1, 1, 2])
    follower = await _engine(tmp_path / "follower", [])
    try:
        records = decode_frames(logview.read_batch(leader.wal, 1, 4, max_bytes=1 << 20))
        appended = await follower.append_replicated(records[:3])
        await follower.make_durable(3)
        assert (follower.last_seq, follower.durable_seq, follower.applied_seq) == (3, 3, 0)
        assert await follower.append_replicated(records[:2]) == []  # already held
        await follower.apply_appended(appended[:2])
        assert (follower.applied_seq, follower.last_epoch) == (2, 1)
        await follower.apply_appended(appended)  # applied ones are skipped
        assert follower.applied_seq == 3
        await follower.append_replicated(records[3:])
    finally:
        await follower.close()
        await leader.close()
    # A crash between the two halves: recovery applies what was appended.
    reopened = Engine(tmp_path / "follower", EngineOptions())
    await reopened.recover()
    assert (reopened.applied_seq, reopened.last_epoch) == (4, 2)
    await reopened.close()
