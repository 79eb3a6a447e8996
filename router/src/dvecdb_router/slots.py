"""Ids to hash slots to shards: the fixed ring every router and client computes alike.

An id's slot is the CRC-32 (IEEE 802.3, as ``zlib.crc32``) of its UTF-8 bytes, modulo 4,096.
Each slot belongs to exactly one shard; the assignment carries a version that grows whenever a
slot moves, so a router can tell which of two maps is newer.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from dataclasses import dataclass

SLOTS = 4096
MAX_SHARDS = 64


def slot_of(item_id: str) -> int:
    return zlib.crc32(item_id.encode("utf-8")) % SLOTS


@dataclass(frozen=True, slots=True)
class SlotMap:
    """``owners[slot]`` is the shard (0-based) that holds the slot."""

    version: int
    owners: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.owners) != SLOTS:
            raise ValueError(f"a slot map assigns all {SLOTS} slots, not {len(self.owners)}")
        if self.owners and (min(self.owners) < 0 or max(self.owners) >= MAX_SHARDS):
            raise ValueError(f"shards are numbered 0..{MAX_SHARDS - 1}")

    @classmethod
    def even(cls, shards: int, version: int = 1) -> SlotMap:
        """Contiguous, equal ranges: shard i holds slots [i*4096/n, (i+1)*4096/n)."""
        if not 1 <= shards <= MAX_SHARDS:
            raise ValueError(f"shards must be 1..{MAX_SHARDS}, not {shards}")
        return cls(version, tuple(slot * shards // SLOTS for slot in range(SLOTS)))

    @property
    def shards(self) -> int:
        return max(self.owners) + 1

    def shard_of(self, item_id: str) -> int:
        return self.owners[slot_of(item_id)]

    def split(self, ids: Iterable[str]) -> dict[int, list[int]]:
        """Positions of ``ids`` grouped by owning shard, in their original order."""
        groups: dict[int, list[int]] = {}
        owners = self.owners
        for position, item_id in enumerate(ids):
            groups.setdefault(owners[slot_of(item_id)], []).append(position)
        return groups

    def ranges(self, shard: int) -> list[tuple[int, int]]:
        """The shard's slots as inclusive ``(first, last)`` ranges (for status and humans)."""
        out: list[tuple[int, int]] = []
        for slot, owner in enumerate(self.owners):
            if owner != shard:
                continue
            if out and out[-1][1] == slot - 1:
                out[-1] = (out[-1][0], slot)
            else:
                out.append((slot, slot))
        return out
