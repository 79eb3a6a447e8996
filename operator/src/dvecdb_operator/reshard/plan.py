"""Which slots move from which shard to which: pure, so the operator, the tests and a human
reading the status all compute the same moves.

A reshard to ``n`` shards aims at the even map for ``n`` (:meth:`SlotMap.even`); only slots whose
owner differs between the current and the target map move, each exactly once, so the movement
is the least that reaches the target. Moves are grouped per (source, target) pair and ordered by
that pair, so a resumed operator finds the same list. After each finished move the map's
version grows by one and every slot still has exactly one owner.
"""

from __future__ import annotations

from dataclasses import dataclass

from dvecdb_client.slots import SLOTS, SlotMap, format_ranges, slot_set


@dataclass(frozen=True, slots=True)
class Move:
    """The slots in ``ranges`` (inclusive ``(first, last)``, ascending) go from ``source`` to
    ``target``."""

    source: int
    target: int
    ranges: tuple[tuple[int, int], ...]

    @property
    def slots(self) -> frozenset[int]:
        return slot_set(self.ranges)

    @property
    def slot_count(self) -> int:
        return sum(last - first + 1 for first, last in self.ranges)

    def texts(self) -> list[str]:
        """The ranges as the node's admin API and the status take them (``"0-1023"``)."""
        return format_ranges(self.ranges)


def target_map(current: SlotMap, shards: int) -> SlotMap:
    """The even map for ``shards``, at the current version (the moves raise it)."""
    return SlotMap.even(shards, version=current.version)


def moves(current: SlotMap, target: SlotMap) -> list[Move]:
    """Every slot whose owner differs, grouped per (source, target) in maximal runs."""
    runs: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for slot in range(SLOTS):
        source, dest = current.owners[slot], target.owners[slot]
        if source == dest:
            continue
        pair = runs.setdefault((source, dest), [])
        if pair and pair[-1][1] == slot - 1:
            pair[-1] = (pair[-1][0], slot)
        else:
            pair.append((slot, slot))
    return [Move(source, dest, tuple(runs[(source, dest)])) for source, dest in sorted(runs)]


def apply_move(current: SlotMap, move: Move) -> SlotMap:
    """The map once ``move`` is done: its slots owned by the target, the version one higher.

    Raises ValueError when a slot of the move is not the source's (a move applied twice, or
    planned from another map), so a published map never comes from a confused plan."""
    owners = list(current.owners)
    for slot in move.slots:
        if owners[slot] != move.source:
            raise ValueError(
                f"slot {slot} is owned by shard {owners[slot]}, not the move's source {move.source}"
            )
        owners[slot] = move.target
    return SlotMap(current.version + 1, tuple(owners))


def applied(current: SlotMap, done: list[Move]) -> SlotMap:
    """The map after the moves in ``done``, in order (what a resumed operator publishes)."""
    for move in done:
        current = apply_move(current, move)
    return current


def owning_shards(slot_map: SlotMap) -> list[int]:
    """Shards that own at least one slot (a shrink's emptied shards are not among them)."""
    return sorted(set(slot_map.owners))
