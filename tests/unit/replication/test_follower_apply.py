"""A follower indexes a received batch while its fsync runs, and acks only what is durable.

The leader sends only records it holds durably, so searches on a follower may show a batch
before the follower's own fsync; acknowledgements (``received_seq``, and ``applied_seq`` as
reported to the leader) must still wait for it.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dvecdb_node.replication.follower import Pending
from dvecdb_node.storage.engine import Engine
from dvecdb_node.storage.records import (
    CollectionConfig,
    CreateCollection,
    UpsertBatch,
    encode_payload,
    op_of,
)
from dvecdb_node.storage.wal import Record, encode_record

from .repl_helpers import make_follower

pytestmark = pytest.mark.unit


def _records() -> list[Record]:
    vectors = np.ones((2, 4), np.float32)
    changes = [
        CreateCollection(CollectionConfig("c", 4, "l2")),
        UpsertBatch("c", ["a", "b"], vectors, [None, None]),
    ]
    return [
        encode_record(seq, 1, op_of(change), encode_payload(change))
        for seq, change in enumerate(changes, start=1)
    ]


class _Session:
    """Records what the ack loop posts."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.posted = asyncio.Event()

    def post(self, url: str, *, json: dict[str, Any], timeout: Any, headers: dict[str, str]) -> Any:
        self.bodies.append(json)
        self.posted.set()
        raise OSError("the test leader does not answer")


async def test_batches_are_indexed_before_their_fsync_and_acked_after(tmp_path: Path) -> None:
    engine = Engine(tmp_path)
    await engine.recover()
    release = threading.Event()
    real_sync = engine.wal.sync

    def slow_sync() -> int:
        release.wait(10)
        return real_sync()

    engine.wal.sync = slow_sync  # type: ignore[method-assign]
    follower = make_follower(engine, ack_interval=0.05)
    pending: Pending = asyncio.Queue()
    applier = asyncio.create_task(follower._apply_stage(pending))
    step = asyncio.create_task(follower._append_and_queue(_records(), pending, applier))
    assert await engine.wait_applied(2, 5)
    assert engine.collection("c").count == 2  # searchable already
    assert engine.durable_seq < 2 and not step.done()  # the fsync is still held back

    session = _Session()
    follower.streaming = True
    acker = asyncio.create_task(follower._ack_loop(session))  # type: ignore[arg-type]
    follower._progress.set()
    async with asyncio.timeout(5):
        await session.posted.wait()
    assert session.bodies[0]["received_seq"] < 2
    assert session.bodies[0]["applied_seq"] <= session.bodies[0]["received_seq"]

    release.set()
    async with asyncio.timeout(5):
        await step
    assert engine.durable_seq == 2
    acker.cancel()
    await pending.put(None)
    async with asyncio.timeout(5):
        await applier
    await engine.close()
