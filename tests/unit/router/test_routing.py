"""The router's pure parts: slots, the merge, write tokens, member choice, body rewriting."""

from __future__ import annotations

import zlib

import numpy as np
import orjson
import pytest

from dvecdb_client import querybody, tokens
from dvecdb_client.slots import SLOTS, SlotMap, slot_of
from dvecdb_router import bodies
from dvecdb_router.members import Member, leader_of, pick_reader
from dvecdb_router.merge import forward_one_owner, merge_rows

pytestmark = pytest.mark.unit


def test_the_slot_of_an_id_is_the_documented_hash() -> None:
    for item_id in ["a", "doc-17", "ünïcode", "x" * 256]:
        assert slot_of(item_id) == zlib.crc32(item_id.encode("utf-8")) % 4096
    # Pinned: CRC-32 of b"a" is 0xE8B7BE43, whose low 12 bits are 0xE43.
    assert slot_of("a") == 0xE43 == 3651


@pytest.mark.parametrize("shards", [1, 2, 3, 4, 64])
def test_an_even_map_gives_every_shard_one_contiguous_range(shards: int) -> None:
    slot_map = SlotMap.even(shards)
    assert slot_map.shards == shards
    sizes = [sum(hi - lo + 1 for lo, hi in slot_map.ranges(s)) for s in range(shards)]
    assert sum(sizes) == SLOTS and max(sizes) - min(sizes) <= 1
    assert all(len(slot_map.ranges(s)) == 1 for s in range(shards))


def test_split_groups_positions_by_owner() -> None:
    slot_map = SlotMap.even(4)
    ids = [f"id-{i}" for i in range(200)]
    groups = slot_map.split(ids)
    assert sorted(p for positions in groups.values() for p in positions) == list(range(200))
    for shard, positions in groups.items():
        assert all(slot_map.shard_of(ids[p]) == shard for p in positions)
        assert positions == sorted(positions)


def test_bad_maps_are_refused() -> None:
    with pytest.raises(ValueError):
        SlotMap.even(0)
    with pytest.raises(ValueError):
        SlotMap.even(65)
    with pytest.raises(ValueError):
        SlotMap(1, (0,) * 10)


def _hit(item_id: str, distance: float) -> dict[str, object]:
    return {"id": item_id, "distance": distance}


def test_merge_keeps_the_nearest_k_ties_by_id_and_each_id_once() -> None:
    shard_a = [[_hit("a1", 0.1), _hit("a2", 0.4)], [_hit("x", 0.2)]]
    shard_b = [[_hit("b1", 0.2), _hit("a2", 0.3), _hit("b0", 0.1)], []]
    merged = merge_rows([shard_a, shard_b], k=3)
    assert [[h["id"] for h in row] for row in merged] == [["a1", "b0", "b1"], ["x"]]
    again = merge_rows([shard_a, shard_b], k=10)
    assert [h["id"] for h in again[0]] == ["a1", "b0", "b1", "a2"]
    assert again[0][3]["distance"] == 0.3  # the moved id counted once, at its nearest
    with pytest.raises(ValueError):
        merge_rows([shard_a, [[]]], k=3)


def _routed(rows: list[list[dict[str, object]]], k: int) -> bytes:
    """The answer the merge path renders for one owner's rows."""
    merged = merge_rows([rows], k)
    return orjson.dumps({"results": merged, "coverage": {"shards": 1, "answered": 1}})


def _forwarded(raw: bytes, k: int) -> bytes | None:
    prefix, _ = forward_one_owner(raw, k)
    return None if prefix is None else prefix + b',"coverage":{"shards":1,"answered":1}}'


def test_a_lone_owners_answer_is_forwarded_byte_for_byte_as_the_merge_renders_it() -> None:
    rows = [
        [_hit("b", 0.125), _hit("a", 0.5), _hit("c", 1e-07)][:2],
        [],
        [{"id": "m", "distance": 0.25, "metadata": {"seq": 3, "t": ',"seq":9}'}}],
    ]
    for raw in (
        orjson.dumps({"results": rows, "seq": 42}),
        b'{"results":%b,"seq":0}' % orjson.dumps(rows),
    ):
        assert _forwarded(raw, 2) == _routed(rows, 2)


@pytest.mark.parametrize(
    ("rows", "k", "extra"),
    [
        ([[_hit("b", 0.1), _hit("a", 0.1)]], 10, {}),  # a tie: the merge orders it by id
        ([[_hit("a", 0.2), _hit("b", 0.1)]], 10, {}),  # not nearest first
        ([[_hit("a", 0.1), _hit("a", 0.2)]], 10, {}),  # an id twice
        ([[_hit("a", 0.1), _hit("b", 0.2)]], 1, {}),  # more than k
        ([[_hit("a", 0.1), {"id": "b", "distance": None}]], 10, {}),  # no distance
        ([[_hit("a", 0.1)]], 10, {"took": 3}),  # a field the router does not answer
    ],
)
def test_a_lone_owners_answer_the_merge_would_change_is_not_forwarded(
    rows: list[list[dict[str, object]]], k: int, extra: dict[str, object]
) -> None:
    raw = orjson.dumps({"results": rows, **extra, "seq": 5})
    prefix, parsed = forward_one_owner(raw, k)
    assert prefix is None and parsed == rows
    assert forward_one_owner(orjson.dumps({"results": rows}), k)[0] is None  # no seq


def test_tokens_round_trip_and_combine() -> None:
    token = tokens.encode({1: (3, 40), 0: (2, 7)})
    assert token.startswith("t1.")
    assert tokens.decode(token) == {0: (2, 7), 1: (3, 40)}
    later = tokens.combine({0: (2, 7), 1: (3, 40)}, {0: (2, 9)}, {1: (4, 40)})
    assert later == {0: (2, 9), 1: (4, 40)}
    for bad in ["", "t2.xx", "t1.!!!", "t1." + "e30", tokens.PREFIX + "W1sxLDJdXQ"]:
        with pytest.raises(tokens.TokenError):
            tokens.decode(bad)


def test_eventual_reads_pick_the_least_loaded_ready_member_with_a_closed_circuit() -> None:
    a, b, c = Member("http://a", ready=True), Member("http://b", ready=True), Member("http://c")
    a.in_flight, b.in_flight = 3, 0
    a.latency = b.latency = 0.001
    assert pick_reader([a, b, c], now=0.0) is b  # c is not ready
    b.latency = 0.01  # ten times slower: one request in flight on a weighs less
    assert pick_reader([a, b, c], now=0.0) is a
    for _ in range(3):
        a.failed(now=100.0)
    assert not a.closed(100.0) and pick_reader([a, b, c], now=100.0) is b
    assert pick_reader([a, b, c], now=100.0, exclude=frozenset({"http://b"})) is None
    assert pick_reader([a, b], now=106.0) is a  # the circuit half-opens after OPEN_SECONDS


def test_the_leader_is_the_highest_epoch_member_reporting_leader() -> None:
    old = Member("http://old", role="leader", epoch=2, ready=True)
    new = Member("http://new", role="leader", epoch=3, ready=True)
    follower = Member("http://f", role="follower", epoch=3, ready=True)
    assert leader_of([old, new, follower], now=0.0) is new
    assert leader_of([follower], now=0.0) is None


def test_a_binary_search_body_keeps_its_vectors_and_gets_new_options() -> None:
    vectors = np.arange(6, dtype=np.float32).reshape(2, 3)
    raw = querybody.encode_queries(vectors, {"k": 4, "allow_partial": True})
    parsed = bodies.parse_search(raw, querybody.CONTENT_TYPE)
    assert parsed.options == {"k": 4, "allow_partial": True} and parsed.k == 4
    rebuilt = parsed.rebuild({"k": 4, "min_seq": 9})
    assert rebuilt == querybody.encode_queries(vectors, {"k": 4, "min_seq": 9})
    with pytest.raises(bodies.BodyError):
        bodies.parse_search(raw[:-3], querybody.CONTENT_TYPE)


def test_json_bodies_and_ids_are_checked_before_routing() -> None:
    parsed = bodies.parse_search(orjson.dumps({"vector": [1.0], "k": 3}), "application/json")
    assert parsed.k == 3 and orjson.loads(parsed.rebuild(parsed.options))["k"] == 3
    with pytest.raises(bodies.BodyError, match="not JSON"):
        bodies.parse_search(b"{", "application/json")
    with pytest.raises(bodies.BodyError):
        bodies.parse_json_object(b"[1]")
    assert bodies.ids_of([{"id": "a"}, {"id": "b"}], "vectors") == ["a", "b"]
    assert bodies.ids_of(["a"], "ids") == ["a"]
    for items, field in [([], "vectors"), ([{"id": 3}], "vectors"), ([{"id": "a"}], "ids")]:
        with pytest.raises(bodies.BodyError):
            bodies.ids_of(items, field)


def test_slot_ranges_travel_as_text_and_owner_ranges_round_trip() -> None:
    from dvecdb_client.slots import format_ranges, parse_ranges, slot_set

    assert parse_ranges(["0-3", "7", "4095"]) == [(0, 3), (7, 7), (4095, 4095)]
    assert format_ranges([(0, 3), (7, 7)]) == ["0-3", "7"]
    assert slot_set([(0, 3), (7, 7)]) == {0, 1, 2, 3, 7}
    for bad in (["x"], ["3-1"], ["4096"], ["-1"]):
        with pytest.raises(ValueError):
            parse_ranges(bad)
    moved = SlotMap.even(2)
    owners = list(moved.owners)
    owners[5:9] = [1] * 4
    moved = SlotMap(2, tuple(owners))
    assert SlotMap.from_owner_ranges(2, moved.owner_ranges()) == moved
    with pytest.raises(ValueError, match="no owner"):
        SlotMap.from_owner_ranges(1, [(0, 10, 0)])
    with pytest.raises(ValueError, match="twice"):
        SlotMap.from_owner_ranges(1, [(0, 4095, 0), (3, 3, 1)])
