"""The slot map the operator publishes, as the status and the router's members file carry it.

The map itself is `dvecdb_client.slots.SlotMap` (4,096 CRC-32 slots, an owner per slot, a
version that grows whenever slots move), shared with the nodes, the routers and the mover; this
module only reads and writes its two published forms. `status.slotMap` is the one record of
the map: the router's file is derived from it, and a resharding changes it one move at a time
(`resharding`). A status written before resharding existed has no `owners`: its map is the
even map of its `shards` at its version.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dvecdb_client.slots import MAX_SHARDS, SLOTS, SlotMap, format_ranges

HASH = "crc32(utf8(id)) % 4096"

__all__ = ["HASH", "MAX_SHARDS", "SLOTS", "even_ranges", "map_from_status", "slot_map_status"]


def even_ranges(shards: int) -> list[tuple[int, int]]:
    """Shard `i`'s slots in the even map of `shards`, as one inclusive range, in shard order."""
    even = SlotMap.even(shards)
    return [even.ranges(i)[0] for i in range(shards)]


def owners_of(slot_map: SlotMap) -> list[list[int]]:
    """`[[first, last, shard], ...]`: the form of the members file and the status."""
    return [[first, last, shard] for first, last, shard in slot_map.owner_ranges()]


def slot_map_status(slot_map: SlotMap, *, shards: int | None = None) -> dict[str, Any]:
    """`status.slotMap` (also the members file's `slotMap`): what routers and clients follow.

    `shards`: how many groups run (during a resharding more than own slots; default: the
    owners'). `ranges` is each running shard's slots as text, in shard order.
    """
    count = max(shards or 0, slot_map.shards)
    return {
        "version": slot_map.version,
        "slots": SLOTS,
        "hash": HASH,
        "shards": count,
        "owners": owners_of(slot_map),
        "ranges": [",".join(format_ranges(slot_map.ranges(i))) for i in range(count)],
    }


def map_from_status(status: Mapping[str, Any] | None, default_shards: int) -> SlotMap:
    """The published map: `owners` when present, else the even map of the recorded `shards`
    (an older operator's status), else the even map of `default_shards` (nothing published)."""
    raw = (status or {}).get("slotMap")
    raw = raw if isinstance(raw, Mapping) else {}
    version = raw.get("version")
    version = version if isinstance(version, int) and version >= 1 else 1
    owners = raw.get("owners")
    if isinstance(owners, list) and owners:
        try:
            return SlotMap.from_owner_ranges(
                version, [(int(o[0]), int(o[1]), int(o[2])) for o in owners]
            )
        except (ValueError, TypeError, IndexError):
            pass  # hand-edited: fall back to the count, as an older status
    shards = raw.get("shards")
    if isinstance(shards, int) and 1 <= shards <= MAX_SHARDS:
        return SlotMap.even(shards, version)
    return SlotMap.even(default_shards, version)


def has_owners(status: Mapping[str, Any] | None) -> bool:
    raw = (status or {}).get("slotMap")
    return isinstance(raw, Mapping) and isinstance(raw.get("owners"), list)
