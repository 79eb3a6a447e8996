"""Where a follower's log agrees with the leader's, decided from epochs alone.

Records of one epoch are written by one leader only and logs only grow at the end, so two
logs that hold a record with the same (seq, epoch) agree on every record up to it. A follower
asks to stream after its last record ``(prev_seq, prev_epoch)``. If the leader holds that
record, streaming starts. Otherwise the leader names the last seq of its own log (at most
``prev_seq - 1``) whose epoch is at most ``prev_epoch``: the follower cannot share anything
after it, truncates there and asks again; each round strictly lowers ``prev_seq`` and never
cuts below the true agreement point. When the leader no longer retains what is needed to
tell, the follower installs a snapshot instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

EpochAt = Callable[[int], "int | None"]
EndOfEpoch = Callable[[int, int], "int | None"]


@dataclass(frozen=True, slots=True)
class Agreement:
    action: Literal["stream", "truncate", "snapshot"]
    truncate_to: int = 0


def decide(
    prev_seq: int,
    prev_epoch: int,
    *,
    leader_last_seq: int,
    epoch_at: EpochAt,
    end_of_epoch: EndOfEpoch,
) -> Agreement:
    """The leader's answer to a follower whose log ends at ``(prev_seq, prev_epoch)``.

    ``epoch_at(seq)`` is the leader's epoch of record ``seq`` (None if not retained);
    ``end_of_epoch(epoch, cap)`` is the leader's last seq <= ``cap`` whose epoch is <= ``epoch``
    (None if that lies before what the leader retains).
    """
    if prev_seq <= 0:
        return Agreement("stream")
    if prev_seq <= leader_last_seq:
        held = epoch_at(prev_seq)
        if held == prev_epoch:
            return Agreement("stream")
        if held is None:
            return Agreement("snapshot")
    cap = min(prev_seq - 1, leader_last_seq)
    point = end_of_epoch(prev_epoch, cap)
    if point is None:
        return Agreement("snapshot")
    return Agreement("truncate", truncate_to=point)


def last_seq_at_or_below(
    epoch: int, lo: int, hi: int, epoch_at: Callable[[int], int]
) -> int | None:
    """Binary search in ``lo..hi`` (epochs non-decreasing): last seq whose epoch <= ``epoch``.

    None if even ``lo`` has a higher epoch (the answer lies before ``lo``).
    """
    if hi < lo or epoch_at(lo) > epoch:
        return None
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if epoch_at(mid) <= epoch:
            lo = mid
        else:
            hi = mid - 1
    return lo
