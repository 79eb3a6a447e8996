"""The slot log's retention floor: what a mover read lately stays in the log."""

from __future__ import annotations

from pathlib import Path

import pytest

from dvecdb_node.storage.engine import Engine, EngineOptions
from dvecdb_node.storage.readers import LogReaders
from dvecdb_node.storage.records import CollectionConfig, CreateCollection
from tests.support.engines import DIM, make_batch

pytestmark = pytest.mark.unit


def test_floor_is_the_lowest_seq_read_within_the_hold() -> None:
    now = [100.0]
    readers = LogReaders(10.0, clock=lambda: now[0])
    assert readers.floor() is None
    readers.note(50)
    now[0] += 5
    readers.note(70)
    assert readers.floor() == 50
    now[0] += 6  # the read at 50 is now 11 s old
    assert readers.floor() == 70
    now[0] += 11
    assert readers.floor() is None


async def test_checkpoints_keep_the_log_a_mover_reads(tmp_path: Path) -> None:
    engine = Engine(tmp_path, EngineOptions(segment_bytes=4096, keep_checkpoints=1))
    await engine.recover()
    readers = LogReaders(60.0)
    engine.retention_floors.append(readers.floor)
    await engine.submit(CreateCollection(CollectionConfig("c", DIM, "l2")), epoch=1)
    readers.note(2)
    for n in range(40):  # several segments
        await engine.submit(make_batch([f"{n}-{i}" for i in range(10)], n), epoch=1)
        if n % 10 == 9:
            await engine.checkpoint()
    assert engine.first_seq <= 2
    readers.hold_seconds = 0.0  # the mover went away: the next checkpoint drops the log
    await engine.submit(make_batch(["last"]), epoch=1)
    await engine.checkpoint()
    assert engine.first_seq > 2
    await engine.close()
