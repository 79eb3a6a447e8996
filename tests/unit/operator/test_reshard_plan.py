"""The move plan: least movement, one owner per slot after every move, deterministic order."""

from __future__ import annotations

import pytest

from dvecdb_client.slots import SLOTS, SlotMap
from dvecdb_operator.reshard.plan import Move, applied, apply_move, moves, owning_shards, target_map

pytestmark = pytest.mark.unit


def _walk(current: SlotMap, shards: int) -> tuple[SlotMap, list[Move]]:
    """Plan to ``shards`` and apply every move, checking the map after each one."""
    target = target_map(current, shards)
    plan = moves(current, target)
    for move in plan:
        before = current
        current = apply_move(current, move)
        assert current.version == before.version + 1
        assert len(current.owners) == SLOTS  # every slot has exactly one owner (a tuple)
        changed = {s for s in range(SLOTS) if current.owners[s] != before.owners[s]}
        assert changed == set(move.slots)
        assert all(current.owners[s] == move.target for s in move.slots)
    assert current.owners == target.owners
    return current, plan


def test_the_target_is_the_even_map_at_the_current_version() -> None:
    current = SlotMap(7, SlotMap.even(2).owners)
    target = target_map(current, 4)
    assert target.version == 7
    assert target.owners == SlotMap.even(4).owners


def test_1_to_2_to_4_to_2_moves_only_what_changes_owner() -> None:
    current = SlotMap.even(1)
    current, plan = _walk(current, 2)
    assert plan == [Move(0, 1, ((2048, 4095),))]
    current, plan = _walk(current, 4)
    assert plan == [
        Move(0, 1, ((1024, 2047),)),
        Move(1, 2, ((2048, 3071),)),
        Move(1, 3, ((3072, 4095),)),
    ]
    assert sum(m.slot_count for m in plan) == 3072  # half of each old shard's slots stay
    current, plan = _walk(current, 2)
    assert plan == [
        Move(1, 0, ((1024, 2047),)),
        Move(2, 1, ((2048, 3071),)),
        Move(3, 1, ((3072, 4095),)),
    ]
    assert current.version == 1 + 1 + 3 + 3
    assert owning_shards(current) == [0, 1]


@pytest.mark.parametrize(("start", "end"), [(3, 5), (5, 3), (1, 7), (7, 1), (4, 6), (64, 3)])
def test_any_count_to_any_count_moves_each_differing_slot_exactly_once(
    start: int, end: int
) -> None:
    current = SlotMap.even(start)
    target = target_map(current, end)
    plan = moves(current, target)
    moved = [s for m in plan for s in m.slots]
    assert len(moved) == len(set(moved))  # no slot moves twice
    differing = {s for s in range(SLOTS) if current.owners[s] != target.owners[s]}
    assert set(moved) == differing  # and nothing that keeps its owner moves
    pairs = [(m.source, m.target) for m in plan]
    assert pairs == sorted(set(pairs))  # one move per pair, in pair order
    assert all(m.source != m.target for m in plan)
    final, _ = _walk(current, end)
    assert owning_shards(final) == list(range(end))
    assert applied(current, plan).owners == final.owners


def test_3_to_5_splits_runs_where_ownership_is_not_contiguous() -> None:
    plan = moves(SlotMap.even(3), SlotMap.even(5))
    for move in plan:
        for (_, last), (first, _) in zip(move.ranges, move.ranges[1:], strict=False):
            assert first > last + 1  # maximal runs: adjacent ranges would have been joined
    assert plan[0].texts() == ["820-1365"]


def test_the_same_maps_give_no_moves_and_a_plan_is_deterministic() -> None:
    current = SlotMap.even(4)
    assert moves(current, target_map(current, 4)) == []
    assert moves(current, SlotMap.even(3)) == moves(current, SlotMap.even(3))


def test_a_move_applied_twice_or_to_another_map_is_refused() -> None:
    current = SlotMap.even(2)
    [move] = moves(current, SlotMap.even(1))
    after = apply_move(current, move)
    with pytest.raises(ValueError, match="not the move's source"):
        apply_move(after, move)
