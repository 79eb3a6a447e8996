"""One top-k from each shard's top-k: pure, so the answer equals a single node's."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from operator import itemgetter
from typing import Any

import orjson

from dvecdb_client.slots import SlotMap, slot_of

Hit = dict[str, Any]

_NEAREST_THEN_ID = itemgetter("distance", "id")
_RESULTS = b'{"results":'
_SEQ = b',"seq":'


def keep_owned(
    rows: Sequence[Sequence[Hit]], shard: int, slot_map: SlotMap, k: int
) -> tuple[list[list[Hit]], int, bool]:
    """A shard's rows without hits of slots it does not own, the number dropped, and whether
    some row may now lack owned hits the shard holds (it lost hits and had answered a full
    ``k``: what lies beyond its k-th could be its own)."""
    owners = slot_map.owners
    out: list[list[Hit]] = []
    dropped = 0
    short = False
    for row in rows:
        kept = [hit for hit in row if owners[slot_of(hit["id"])] == shard]
        lost = len(row) - len(kept)
        dropped += lost
        short = short or (lost > 0 and len(row) >= k)
        out.append(kept)
    return out, dropped, short


def merge_rows(per_shard: Sequence[Sequence[Sequence[Hit]]], k: int) -> list[list[Hit]]:
    """Merge shards' answers row by row (one row per query vector).

    Nearest first, ties by id (a node breaks ties the same way only by chance, so the order
    of equal distances is made deterministic here); an id answered by two shards (a slot
    being moved) counts once, at its nearest distance.
    """
    if not per_shard:
        return []
    rows = len(per_shard[0])
    if any(len(answer) != rows for answer in per_shard):
        raise ValueError("shards answered different numbers of query rows")
    merged: list[list[Hit]] = []
    for row in range(rows):
        hits = sorted((hit for answer in per_shard for hit in answer[row]), key=_NEAREST_THEN_ID)
        seen: set[str] = set()
        out: list[Hit] = []
        for hit in hits:
            if hit["id"] in seen:
                continue
            seen.add(hit["id"])
            out.append(hit)
            if len(out) == k:
                break
        merged.append(out)
    return merged


def forward_one_owner(raw: bytes, k: int) -> tuple[bytes | None, list[list[Hit]]]:
    """A lone owning shard's answer as the router's, its bytes kept (no re-encoding), when the
    merge would not change it; else None and its rows, for the merge.

    With one owner every hit is owned, so the merge only cuts rows to ``k``, orders equal
    distances by id and drops an id seen twice: the bytes stand when every row has at most
    ``k`` hits, distinct ids and strictly increasing distances. What is returned is the
    answer's ``{"results":[...]`` (the node's ``seq`` cut off: the router answers none); the
    caller closes it after adding ``coverage``.
    """
    doc = orjson.loads(raw)
    rows: list[list[Hit]] = doc["results"]
    end = raw.rfind(_SEQ)
    if (
        len(doc) != 2
        or end < 0
        or not raw.startswith(_RESULTS)
        or not raw.endswith(b"}")
        or not raw[end + len(_SEQ) : -1].isdigit()
    ):
        return None, rows
    for row in rows:
        if len(row) > k or len({hit["id"] for hit in row}) != len(row):
            return None, rows
        try:
            distances = [hit["distance"] for hit in row]
            if not all(a < b for a, b in pairwise(distances)):
                return None, rows
        except TypeError:  # a null distance: the merge decides
            return None, rows
    return raw[:end], rows
