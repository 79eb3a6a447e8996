"""The leader lease: a majority of followers' echoed tokens or the operator keep it; a token
proves only the time it was issued."""

from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path

import pytest

from dvecdb_node.errors import NodeError, NotLeader
from dvecdb_node.replication import lease
from dvecdb_node.replication.metrics import ReplicationCollector

from .repl_helpers import make_manager

pytestmark = pytest.mark.unit


def test_the_lease_runs_from_the_needed_th_most_recent_follower() -> None:
    # Five members: the leader and two followers are a majority.
    assert lease.majority_lease([10.0, 14.0, 12.0, 3.0], needed=2, lease_seconds=5) == 17.0
    assert lease.majority_lease([10.0], needed=2, lease_seconds=5) == -math.inf
    assert lease.majority_lease([], needed=0, lease_seconds=5) == math.inf


def test_a_token_proves_the_time_it_was_issued_never_a_later_one() -> None:
    assert lease.token_time(None, now=50.0) == 50.0
    assert lease.token_time(42_500, now=50.0) == 42.5
    assert lease.token_time(99_000, now=50.0) == 50.0  # not this clock's: arrival only


def test_remaining() -> None:
    assert lease.remaining(math.inf, 3.0) is None
    assert lease.remaining(5.0, 3.0) == 2.0
    assert lease.remaining(5.0, 9.0) == 0.0


async def test_acks_of_a_majority_keep_the_lease_and_stale_tokens_do_not(
    tmp_path: Path,
) -> None:
    manager = await make_manager(tmp_path, lease_seconds=0.2)
    try:
        await manager.promote(1, members=3)
        assert manager.role.lease_valid  # the promote is the operator's confirmation
        stale = lease.token_now()
        await asyncio.sleep(0.25)
        assert not manager.role.lease_valid
        with pytest.raises(NodeError) as refused:
            manager.role.require_epoch(1)
        assert refused.value.code == "lease_expired"
        # An ack echoing a token issued before the lapse (queued while frozen) renews nothing.
        manager.heard_from("b", stale)
        assert not manager.role.lease_valid
        # One follower and the leader are a majority of three.
        manager.heard_from("b", lease.token_now())
        assert manager.role.lease_valid
        manager.role.require_epoch(1)
        with pytest.raises(NotLeader):
            manager.role.require_epoch(2)
        assert manager.lease_status() is not None
    finally:
        await manager.close()
        await manager.engine.close()


async def test_five_members_need_two_followers(tmp_path: Path) -> None:
    manager = await make_manager(tmp_path, lease_seconds=0.2)
    try:
        await manager.promote(1, members=5)
        await asyncio.sleep(0.25)
        manager.heard_from("b", lease.token_now())
        assert not manager.role.lease_valid
        manager.heard_from("c", lease.token_now())
        assert manager.role.lease_valid
    finally:
        await manager.close()
        await manager.engine.close()


async def test_a_standalone_leader_has_no_lease_to_lose(tmp_path: Path) -> None:
    manager = await make_manager(tmp_path, lease_seconds=0.01, standalone=True)
    try:
        await manager.promote(1)
        await asyncio.sleep(0.02)
        assert manager.role.lease_valid and manager.role.lease_until == math.inf
    finally:
        await manager.close()
        await manager.engine.close()


async def test_the_lease_and_the_read_refusal_are_exported(tmp_path: Path) -> None:
    manager = await make_manager(tmp_path, lease_seconds=0.2)
    collector = ReplicationCollector(manager)

    def gauges() -> dict[str, float]:
        return {m.name: m.samples[0].value for m in collector.collect() if m.samples}

    try:
        assert gauges()["dvecdb_leader_lease_valid"] == 0
        assert gauges()["dvecdb_reads_refused"] == 1  # booted in standby
        await manager.promote(1, members=3)
        assert gauges()["dvecdb_leader_lease_valid"] == 1
        assert gauges()["dvecdb_reads_refused"] == 0
        await asyncio.sleep(0.25)
        assert gauges()["dvecdb_leader_lease_valid"] == 0
    finally:
        await manager.close()
        await manager.engine.close()


async def test_a_fenced_member_reports_how_long_ago_it_last_acked_a_leader(
    tmp_path: Path,
) -> None:
    # The operator waits out the old leader's lease from the fenced members' last acks.
    manager = await make_manager(tmp_path)
    try:
        # Never acked: the time since the process started (any earlier ack is older).
        assert 0 <= manager.last_ack_seconds() < 5.0
        await asyncio.sleep(1.2)  # so that an ack 1 s ago is after the process start
        await manager.follow("http://127.0.0.1:9", 1)
        assert manager.follower is not None
        manager.follower.last_token_ack = time.monotonic() - 1.0
        await manager.fence(2)
        age = manager.last_ack_seconds()
        assert 1.0 <= age < 2.0
    finally:
        await manager.close()
        await manager.engine.close()
