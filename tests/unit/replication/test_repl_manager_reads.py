"""Which members serve data reads and count as ready (DESIGN.md): standby is "reads only" and
ready once recovered, a leader and a standalone node serve and are ready, a follower only
once streaming and reconciled with its leader."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from dvecdb_node.replication.manager import ReplicationManager
from repl_helpers import make_manager

pytestmark = pytest.mark.unit


@pytest_asyncio.fixture
async def manager(tmp_path: Path) -> AsyncIterator[ReplicationManager]:
    made = await make_manager(tmp_path)
    yield made
    await made.close()
    await made.engine.close()


async def test_a_cluster_member_in_standby_serves_reads_and_is_ready(
    manager: ReplicationManager,
) -> None:
    assert manager.role.role == "standby"
    assert manager.read_block is None and not manager.reads_blocked
    assert manager.not_ready_reason() is None


async def test_a_fenced_leader_is_a_read_only_standby(manager: ReplicationManager) -> None:
    await manager.promote(1)
    assert manager.read_block is None and manager.not_ready_reason() is None
    await manager.fence(2)
    assert manager.role.role == "standby"
    assert manager.read_block is None  # DESIGN: standby is reads only
    manager.observe_epoch(3, "a newer peer")
    assert manager.role.role == "standby" and not manager.reads_blocked


async def test_a_follower_that_has_not_reconciled_serves_no_data(
    manager: ReplicationManager,
) -> None:
    # The leader URL answers nothing, so the follower never reconciles or streams.
    await manager.follow("http://127.0.0.1:9", 1)
    assert manager.role.role == "follower"
    block = manager.read_block
    assert block is not None and block.code == "reconciling"
    assert manager.not_ready_reason() == "not streaming from the leader"


async def test_a_standalone_node_is_never_blocked(tmp_path: Path) -> None:
    made = await make_manager(tmp_path, standalone=True)
    try:
        made.role.role = "standby"  # before recovery finishes it has not taken the lead yet
        assert made.read_block is None and made.not_ready_reason() is None
    finally:
        await made.close()
        await made.engine.close()
