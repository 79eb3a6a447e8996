"""The leader's follower tracker: positions, ack waits, retention, failing waiters."""

from __future__ import annotations

import asyncio

import pytest

from dvecdb_node.replication.backoff import Backoff
from dvecdb_node.replication.tracker import FollowerTracker

pytestmark = pytest.mark.unit


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_wait_acked_wakes_when_enough_followers_hold_the_seq() -> None:
    tracker = FollowerTracker(retention_seconds=10)
    tracker.stream_opened("a", "http://a", 0)
    tracker.stream_opened("b", "http://b", 0)
    waiting = asyncio.create_task(tracker.wait_acked(5, 2, within=5))
    await asyncio.sleep(0)
    tracker.acked("a", 5, 5)
    await asyncio.sleep(0)
    assert not waiting.done()
    tracker.acked("b", 7, 6)
    assert await waiting is True
    assert tracker.count_acked(6) == 1


async def test_wait_acked_times_out() -> None:
    tracker = FollowerTracker(retention_seconds=10)
    tracker.stream_opened("a", None, 3)
    assert await tracker.wait_acked(3, 1, within=0.01) is True
    assert await tracker.wait_acked(4, 1, within=0.01) is False


async def test_fail_waiters_raises_in_every_writer() -> None:
    tracker = FollowerTracker(retention_seconds=10)
    waiting = asyncio.create_task(tracker.wait_acked(1, 1, within=5))
    await asyncio.sleep(0)
    tracker.fail_waiters(RuntimeError("lost"))
    with pytest.raises(RuntimeError, match="lost"):
        await waiting


def test_stream_start_rewinds_a_follower_that_truncated() -> None:
    tracker = FollowerTracker(retention_seconds=10)
    tracker.acked("a", 50, 50)
    tracker.stream_opened("a", None, 20)
    entry = tracker.get("a")
    assert entry is not None and (entry.received_seq, entry.applied_seq) == (20, 20)
    tracker.acked("a", 30, 40)
    assert (entry.received_seq, entry.applied_seq) == (30, 30)


def test_retention_floor_forgets_long_gone_followers() -> None:
    clock = _Clock()
    tracker = FollowerTracker(retention_seconds=5, clock=clock)
    tracker.stream_opened("live", None, 40)
    tracker.stream_opened("gone", None, 10)
    tracker.stream_closed("gone")
    assert tracker.retention_floor() == 10
    clock.now += 6
    assert tracker.retention_floor() == 40
    tracker.stream_closed("live")
    clock.now += 6
    assert tracker.retention_floor() is None


def test_backoff_grows_to_its_cap_and_resets() -> None:
    backoff = Backoff(first=0.1, cap=1.0)
    delays = [backoff.next() for _ in range(8)]
    assert all(0.05 <= d <= 1.0 for d in delays)
    assert max(delays[5:]) > 0.4
    backoff.reset()
    assert backoff.next() <= 0.1


async def test_a_snapshot_pin_keeps_the_log_but_is_no_acknowledgement() -> None:
    # A follower asking for a snapshot holds nothing yet: it must not count for ack=one/quorum.
    tracker = FollowerTracker(retention_seconds=10)
    tracker.pin("new", 40)
    assert tracker.count_acked(1) == 0
    assert await tracker.wait_acked(1, 1, within=0.01) is False
    assert tracker.retention_floor() == 40
    entry = tracker.get("new")
    assert entry is not None and entry.received_seq == 0
    # Once it streams from after the snapshot, its position is exact and counts.
    tracker.stream_opened("new", None, 40)
    assert tracker.count_acked(40) == 1 and tracker.retention_floor() == 40


def test_a_pin_does_not_lower_a_streaming_followers_durable_position() -> None:
    tracker = FollowerTracker(retention_seconds=10)
    tracker.acked("a", 30, 30)
    tracker.pin("a", 25)
    assert tracker.count_acked(30) == 1
    assert tracker.retention_floor() == 25
