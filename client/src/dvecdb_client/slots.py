"""Ids to hash slots to shards: the fixed ring every node, router, mover and client computes alike.

An id's slot is the CRC-32 (IEEE 802.3, as ``zlib.crc32``) of its UTF-8 bytes, modulo 4,096.
Each slot belongs to exactly one shard; the assignment carries a version that grows whenever a
slot moves, so a router can tell which of two maps is newer. Slot sets travel as text ranges
(``"0-1023"``, ``"7"``), the form the status, the router's file and the node's admin API use.
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

    @classmethod
    def from_owner_ranges(cls, version: int, owners: Iterable[tuple[int, int, int]]) -> SlotMap:
        """From inclusive ``(first, last, shard)`` ranges that together cover every slot once."""
        table: list[int | None] = [None] * SLOTS
        for first, last, shard in owners:
            if not 0 <= first <= last < SLOTS:
                raise ValueError(f"slot range {first}-{last} is not within 0-{SLOTS - 1}")
            for slot in range(first, last + 1):
                if table[slot] is not None:
                    raise ValueError(f"slot {slot} is assigned twice")
                table[slot] = shard
        missing = [slot for slot, owner in enumerate(table) if owner is None]
        if missing:
            raise ValueError(f"{len(missing)} slots have no owner (first: {missing[0]})")
        return cls(version, tuple(owner for owner in table if owner is not None))

    def owner_ranges(self) -> list[tuple[int, int, int]]:
        """Inverse of :meth:`from_owner_ranges`: maximal runs of one owner, in slot order."""
        out: list[tuple[int, int, int]] = []
        for slot, owner in enumerate(self.owners):
            if out and out[-1][2] == owner:
                out[-1] = (out[-1][0], slot, owner)
            else:
                out.append((slot, slot, owner))
        return out

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


def parse_ranges(texts: Iterable[str]) -> list[tuple[int, int]]:
    """``["0-1023", "4095"]`` to inclusive ``(first, last)`` pairs; ValueError names a bad one."""
    out: list[tuple[int, int]] = []
    for text in texts:
        first_text, _, last_text = str(text).partition("-")
        try:
            first = int(first_text)
            last = int(last_text) if last_text else first
        except ValueError:
            raise ValueError(f"slot range {text!r} is not N or N-M") from None
        if not 0 <= first <= last < SLOTS:
            raise ValueError(f"slot range {text!r} is not within 0-{SLOTS - 1}")
        out.append((first, last))
    return out


def format_ranges(ranges: Iterable[tuple[int, int]]) -> list[str]:
    """Inverse of :func:`parse_ranges`."""
    return [f"{first}" if first == last else f"{first}-{last}" for first, last in ranges]


def slot_set(ranges: Iterable[tuple[int, int]]) -> frozenset[int]:
    return frozenset(slot for first, last in ranges for slot in range(first, last + 1))
