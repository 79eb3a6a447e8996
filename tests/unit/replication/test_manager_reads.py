"""Which members serve data reads and count as ready (DESIGN.md "Reads while there is no
leader"): a leader and a standalone node always; a follower whose log agreed with a leader's,
even once its stream broke or it was fenced, for max_read_staleness_seconds after it last
heard from that leader; a member whose log may hold records no leader acknowledged (booted
in standby, deposed leader, diverged follower) not until it has reconciled."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from dvecdb_node.replication.manager import ReplicationManager
from dvecdb_node.storage.records import Noop

from .repl_helpers import make_manager

pytestmark = pytest.mark.unit

UNREACHABLE = "http://127.0.0.1:9"


@pytest_asyncio.fixture
async def manager(tmp_path: Path) -> AsyncIterator[ReplicationManager]:
    made = await make_manager(tmp_path, max_read_staleness_seconds=30)
    yield made
    await made.close()
    await made.engine.close()


def code(manager: ReplicationManager) -> str | None:
    block = manager.read_block
    return None if block is None else block.code


def reconcile(manager: ReplicationManager, heard_ago: float, *, streaming: bool) -> None:
    """Drive the follower as its stream would: the leader accepted its log ``heard_ago`` s ago."""
    follower = manager.follower
    assert follower is not None
    follower.reconciled = True
    follower.streaming = streaming
    follower.last_heard = time.monotonic() - heard_ago


async def test_a_member_booted_in_standby_serves_nothing_until_it_reconciles(
    manager: ReplicationManager,
) -> None:
    assert manager.role.role == "standby"
    assert code(manager) == "not_agreed" and manager.reads_blocked
    assert manager.not_ready_reason() is not None
    await manager.follow(UNREACHABLE, 1)  # nobody answers: it never reconciles
    assert code(manager) == "not_agreed" and manager.not_ready_reason() is not None
    reconcile(manager, 0, streaming=True)
    assert code(manager) is None and manager.not_ready_reason() is None


async def test_a_deposed_leader_serves_nothing_until_it_reconciles(
    manager: ReplicationManager,
) -> None:
    await manager.promote(1)
    assert code(manager) is None and manager.not_ready_reason() is None
    await manager.fence(2)
    assert code(manager) == "not_agreed" and manager.not_ready_reason() is not None
    await manager.promote(3)
    manager.observe_epoch(4, "a newer peer")
    assert manager.role.role == "standby" and code(manager) == "not_agreed"
    await manager.follow(UNREACHABLE, 4)
    assert code(manager) == "not_agreed"
    reconcile(manager, 0, streaming=True)
    assert code(manager) is None


async def test_a_follower_that_lost_its_leader_serves_until_the_staleness_bound(
    manager: ReplicationManager,
) -> None:
    await manager.follow(UNREACHABLE, 1)
    reconcile(manager, 10, streaming=False)  # the stream broke 10 s ago
    assert code(manager) is None and manager.not_ready_reason() is None
    reconcile(manager, 31, streaming=False)
    assert code(manager) == "too_stale" and manager.not_ready_reason() is not None
    # Fenced during a failover: still serves, counting from when it last heard the leader.
    reconcile(manager, 5, streaming=False)
    await manager.fence(2)
    assert manager.role.role == "standby" and code(manager) is None
    # Repointed at the new leader: serves while reconciling with it, within the bound.
    await manager.follow("http://127.0.0.1:10", 2)
    assert code(manager) is None and manager.not_ready_reason() is None


async def test_a_follower_whose_log_diverges_serves_nothing(manager: ReplicationManager) -> None:
    await manager.follow(UNREACHABLE, 1)
    reconcile(manager, 0, streaming=False)
    assert manager.follower is not None
    manager.follower.reconciled = False
    manager.follower.diverged = True  # the leader answered log_diverged: truncating
    assert code(manager) == "reconciling"
    await manager.fence(2)  # fenced before it could cut back: its log is still suspect
    assert code(manager) == "not_agreed"


async def test_a_standalone_node_is_never_blocked(tmp_path: Path) -> None:
    made = await make_manager(tmp_path, standalone=True)
    try:
        made.role.role = "standby"  # before recovery finishes it has not taken the lead yet
        assert made.read_block is None and made.not_ready_reason() is None
    finally:
        await made.close()
        await made.engine.close()


async def test_follower_status_is_a_plain_read(manager: ReplicationManager) -> None:
    """``/v1/status`` and metrics scrapes read the followers' lag; reading changes nothing."""
    for seq in (1, 2, 3):
        await manager.engine.submit(Noop(), epoch=1)
        manager.clock.record(seq, time.monotonic() - 10 + seq)
    manager.tracker.stream_opened("b", "http://b", 0)
    manager.tracker.acked("b", 2, 2)
    for _ in range(2):
        [status] = manager.followers()
        assert (status["applied_seq"], status["lag_seq"]) == (2, 1)
        assert 6 < status["lag_seconds"] < 8  # seq 3, written about 7 s ago
        assert len(manager.clock) == 3


async def test_a_fence_is_answered_only_once_the_store_has_recovered(tmp_path: Path) -> None:
    """The fence's answer carries the positions the operator chooses by; before recovery
    they read 0, so the member waits for its store before it answers."""
    made = await make_manager(tmp_path)
    made.recovered.clear()
    fencing = asyncio.create_task(made.fence(3))
    await asyncio.sleep(0.05)
    assert not fencing.done() and made.role.epoch != 3
    made.recovered.set()
    async with asyncio.timeout(5):
        await fencing
    assert (made.role.role, made.role.epoch) == ("standby", 3)
    await made.close()
    await made.engine.close()


async def test_a_member_sends_the_cluster_token_in_force_after_a_rotation(tmp_path: Path) -> None:
    """Every call to another member (the stream, acks, snapshots, status) asks for the header
    then, so a rotated token is sent from the next request on, not from the next restart."""
    folder = tmp_path / "secrets"
    folder.mkdir()
    (folder / "clusterToken").write_text("old\n")
    made = await make_manager(tmp_path / "node", secrets_dir=folder)
    assert made._auth() == {"Authorization": "Bearer old"}
    (folder / "clusterToken").write_text("new\nold\n")
    assert made.credentials.refresh()
    assert made._auth() == {"Authorization": "Bearer new"}
    follower = made.follower
    assert follower is None  # booted in standby: nothing streams yet
    await made.close()
    await made.engine.close()
