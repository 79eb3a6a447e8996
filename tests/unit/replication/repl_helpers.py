"""Builders shared by the replication unit tests: a recovered manager, a follower object."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from dvecdb_node.replication.follower import Follower, FollowerOptions
from dvecdb_node.replication.manager import ReplicationManager
from dvecdb_node.role import NodeRole
from dvecdb_node.settings import NodeSettings
from dvecdb_node.storage.engine import Engine


async def make_manager(tmp_path: Path, **settings: Any) -> ReplicationManager:
    """A manager over a recovered engine in ``tmp_path`` (node "a", booted in standby)."""
    config = NodeSettings(data_dir=tmp_path, node_id="a", port=1, **settings)
    engine = Engine(tmp_path, config.engine_options())
    await engine.recover()
    recovered = asyncio.Event()
    recovered.set()
    manager = ReplicationManager(config, engine, NodeRole(node_id="a"), recovered)
    manager.load()
    return manager


def make_follower(engine: Engine, *, ack_interval: float) -> Follower:
    """A follower of a leader URL nobody answers on (tests drive its stages directly)."""
    return Follower(
        engine=engine,
        leader_url="http://127.0.0.1:9",
        epoch=1,
        node_id="n1",
        self_url="http://127.0.0.1:8",
        auth=dict,
        on_epoch=lambda epoch: None,
        options=FollowerOptions(ack_interval=ack_interval),
    )
