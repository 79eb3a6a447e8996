"""Fenced hash slots: which slots refuse ordinary writes while resharding moves them.

The set changes only by ``SLOT_FENCE`` log records (:class:`~.records.SlotFence`), so a
follower, a restart, a checkpoint and a snapshot all carry it. The engine checks a write's ids
against it under its write lock, in log order: a write appended after a fence record is
refused, one appended before it lies in the log below the fence. With nothing fenced the check
is one truthiness test.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from dvecdb_client.slots import format_ranges, slot_of
from dvecdb_node.errors import Conflict
from dvecdb_node.storage.records import SlotFence


@dataclass(frozen=True, slots=True)
class FenceMark:
    """Where a fenced slot went (None: not told)."""

    owner: int | None
    map_version: int | None


def slot_runs(slots: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted slots as maximal inclusive ``(first, last)`` runs."""
    out: list[tuple[int, int]] = []
    for slot in sorted(set(slots)):
        if out and out[-1][1] == slot - 1:
            out[-1] = (out[-1][0], slot)
        else:
            out.append((slot, slot))
    return out


class SlotMoved(Conflict):
    """409 ``slot_moved``: a write touched a fenced slot; nothing of the batch was applied."""

    code = "slot_moved"


class SlotFences:
    """The fenced slots of one store (mutated only by applying log records)."""

    __slots__ = ("_marks",)

    def __init__(self, marks: dict[int, FenceMark] | None = None) -> None:
        self._marks: dict[int, FenceMark] = dict(marks or {})

    def __bool__(self) -> bool:
        return bool(self._marks)

    def __len__(self) -> int:
        return len(self._marks)

    def __contains__(self, slot: int) -> bool:
        return slot in self._marks

    def mark(self, slot: int) -> FenceMark | None:
        return self._marks.get(slot)

    def apply(self, change: SlotFence) -> None:
        """Apply a logged fence change (idempotent: replays and retries change nothing)."""
        mark = FenceMark(change.owner, change.map_version)
        for first, last in change.ranges:
            for slot in range(max(first, 0), last + 1):
                if change.fenced:
                    self._marks[slot] = mark
                else:
                    self._marks.pop(slot, None)

    def refusal(self, ids: Iterable[str]) -> SlotMoved | None:
        """The error for a batch with any id in a fenced slot (None: the batch may go)."""
        marks = self._marks
        hit = {slot for slot in map(slot_of, ids) if slot in marks}
        if not hit:
            return None
        first = marks[min(hit)]
        ranges = format_ranges(slot_runs(hit))
        return SlotMoved(
            f"slots {', '.join(ranges)} are fenced (moving to another shard): "
            "no write of this batch was made",
            slots=ranges,
            owner=first.owner,
            map_version=first.map_version,
        )

    def ranges(self) -> list[str]:
        """The fenced slots as text ranges (``/v1/status``)."""
        return format_ranges(slot_runs(self._marks))

    def copy(self) -> SlotFences:
        return SlotFences(self._marks)

    # Checkpoints keep the set as runs of one mark: [first, last, owner, map_version].
    def to_json(self) -> list[list[Any]]:
        out: list[list[Any]] = []
        for slot in sorted(self._marks):
            mark = self._marks[slot]
            if (
                out
                and out[-1][1] == slot - 1
                and (out[-1][2], out[-1][3])
                == (
                    mark.owner,
                    mark.map_version,
                )
            ):
                out[-1][1] = slot
            else:
                out.append([slot, slot, mark.owner, mark.map_version])
        return out

    @classmethod
    def from_json(cls, runs: Any) -> SlotFences:
        """Inverse of :meth:`to_json` (``None``: a checkpoint from before fences existed)."""
        marks: dict[int, FenceMark] = {}
        for first, last, owner, version in runs or ():
            mark = FenceMark(
                None if owner is None else int(owner), None if version is None else int(version)
            )
            for slot in range(int(first), int(last) + 1):
                marks[slot] = mark
        return cls(marks)
