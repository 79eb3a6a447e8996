"""When to checkpoint: a pure decision, so the policy is tested without clocks or disks."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CheckpointPolicy:
    """Checkpoint after ``interval_seconds`` or ``wal_bytes`` of log, whichever comes first."""

    interval_seconds: float = 300.0
    wal_bytes: int = 256 << 20
    min_interval_seconds: float = 5.0


def should_checkpoint(
    policy: CheckpointPolicy,
    *,
    seconds_since_last: float,
    records_since_last: int,
    wal_bytes_since_last: int,
) -> bool:
    """Whether a checkpoint is due now; never when nothing changed or too soon after the last."""
    if records_since_last <= 0 or seconds_since_last < policy.min_interval_seconds:
        return False
    return seconds_since_last >= policy.interval_seconds or wal_bytes_since_last >= policy.wal_bytes
