"""The slot map the operator publishes: 4,096 hash slots spread evenly over the shards.

An id's slot is the CRC-32 (IEEE, as `zlib.crc32`) of its UTF-8 bytes modulo 4,096; shard `i`
of `n` holds the contiguous slots `[ceil(i*4096/n), ceil((i+1)*4096/n))`, the same map as the
router's `SlotMap.even` (a unit test holds the two together). The version grows when a slot
moves; with no resharding yet, every cluster's map is version 1.
"""

from __future__ import annotations

from typing import Any

SLOTS = 4096
MAX_SHARDS = 64
HASH = "crc32(utf8(id)) % 4096"


def even_ranges(shards: int) -> list[tuple[int, int]]:
    """Shard `i`'s slots as one inclusive `(first, last)` range, for every shard in order."""
    if not 1 <= shards <= MAX_SHARDS:
        raise ValueError(f"shards must be 1..{MAX_SHARDS}, not {shards}")
    firsts = [-(-i * SLOTS // shards) for i in range(shards + 1)]
    return [(firsts[i], firsts[i + 1] - 1) for i in range(shards)]


def slot_map_status(shards: int, *, version: int = 1) -> dict[str, Any]:
    """`status.slotMap`: what routers and clients follow."""
    return {
        "version": version,
        "slots": SLOTS,
        "hash": HASH,
        "shards": shards,
        "ranges": [f"{first}-{last}" for first, last in even_ranges(shards)],
    }
