"""The checkpoint policy decision."""

from __future__ import annotations

import pytest

from dvecdb_node.storage.policy import CheckpointPolicy, should_checkpoint

pytestmark = pytest.mark.unit
POLICY = CheckpointPolicy(interval_seconds=60, wal_bytes=1000, min_interval_seconds=5)


def test_nothing_new_never_checkpoints() -> None:
    assert not should_checkpoint(
        POLICY, seconds_since_last=1e6, records_since_last=0, wal_bytes_since_last=10**9
    )


def test_due_by_time_or_bytes_but_not_too_soon() -> None:
    due = should_checkpoint
    assert due(POLICY, seconds_since_last=61, records_since_last=1, wal_bytes_since_last=1)
    assert due(POLICY, seconds_since_last=6, records_since_last=1, wal_bytes_since_last=1000)
    assert not due(POLICY, seconds_since_last=2, records_since_last=1, wal_bytes_since_last=10**6)
    assert not due(POLICY, seconds_since_last=30, records_since_last=5, wal_bytes_since_last=10)
