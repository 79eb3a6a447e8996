"""The router's members file: parsing, re-reading on change, and taking new members."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from dvecdb_client.slots import SlotMap
from dvecdb_router.cluster import Cluster
from dvecdb_router.config import (
    ConfigError,
    FileSource,
    ShardsConfig,
    TokenFile,
    first_token,
    parse_config,
)

pytestmark = pytest.mark.unit


def doc(*shards: list[str], version: int = 1) -> bytes:
    return orjson.dumps(
        {
            "slotMap": {"version": version, "shards": len(shards)},
            "shards": [{"shard": i, "members": m} for i, m in enumerate(shards)],
        }
    )


def test_parse_gives_members_per_shard_in_order() -> None:
    config = parse_config(doc(["http://a:1/", "http://b:1"], [], version=3))
    assert config == ShardsConfig(SlotMap.even(2, 3), (("http://a:1", "http://b:1"), ()))


@pytest.mark.parametrize(
    "raw",
    [b"{", b"[]", b'{"shards": []}', doc(["ftp://a"]), b'{"shards": [{"members": [1]}]}'],
)
def test_parse_refuses_what_is_not_a_members_file(raw: bytes) -> None:
    with pytest.raises(ConfigError):
        parse_config(raw)


def test_file_source_reports_only_changes_and_keeps_the_last_good(tmp_path: Path) -> None:
    path = tmp_path / "members.json"
    path.write_bytes(doc(["http://a:1"]))
    source = FileSource(path)
    first = source.read()
    assert first is not None and first.shards == (("http://a:1",),)
    assert source.read() is None  # unchanged
    path.write_bytes(b"garbage")
    assert source.read() is None and source.current == first  # bad: the last good stays
    path.write_bytes(doc(["http://b:1"]))
    changed = source.read()
    assert changed is not None and changed.shards == (("http://b:1",),)


def test_a_missing_file_at_start_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        FileSource(tmp_path / "absent.json").read()


def test_reconfigure_keeps_what_was_learnt_of_members_that_stay() -> None:
    cluster = Cluster([["http://a:1", "http://b:1"], ["http://c:1"]], source=None)
    kept = cluster.shards[0][0]
    kept.role, kept.epoch = "leader", 4
    two = (("http://a:1", "http://d:1"), ("http://c:1",))
    assert cluster.reconfigure(ShardsConfig(SlotMap.even(2, 2), two))
    assert cluster.shards[0][0] is kept and cluster.shards[0][0].role == "leader"
    assert [m.url for m in cluster.shards[0]] == ["http://a:1", "http://d:1"]
    assert cluster.slot_map.version == 2
    # A resharding map with more shards is taken, members that stay keep what was learnt.
    grown = SlotMap.from_owner_ranges(3, [(0, 1023, 0), (1024, 2047, 2), (2048, 4095, 1)])
    assert cluster.reconfigure(ShardsConfig(grown, (*two, ("http://e:1",))))
    assert cluster.shards[0][0] is kept and len(cluster.shards) == 3
    assert cluster.slot_map == grown
    # An older map (a stale file) is ignored, nothing changes.
    assert not cluster.reconfigure(ShardsConfig(SlotMap.even(1, 2), (("http://a:1",),)))
    assert cluster.slot_map == grown and len(cluster.shards) == 3
    # And fewer shards after a shrink.
    assert cluster.reconfigure(ShardsConfig(SlotMap.even(1, 9), (("http://a:1",),)))
    assert [[m.url for m in s] for s in cluster.shards] == [["http://a:1"]]


def test_the_slot_map_comes_from_owners_or_is_even_over_slotmap_shards() -> None:
    raw = orjson.dumps(
        {
            "slotMap": {"version": 5, "shards": 2, "owners": [[0, 99, 1], [100, 4095, 0]]},
            "shards": [{"shard": 0, "members": ["http://a:1"]}, {"shard": 1, "members": []}],
        }
    )
    config = parse_config(raw)
    assert config.version == 5 and config.slot_map.owner_ranges() == [(0, 99, 1), (100, 4095, 0)]
    # Without owners: even over slotMap.shards, which may be fewer than the listed groups
    # (new groups are listed before slots move to them).
    grown = {"slotMap": {"version": 2, "shards": 1}, "shards": [{"members": []}] * 2}
    assert parse_config(orjson.dumps(grown)).slot_map == SlotMap.even(1, 2)


@pytest.mark.parametrize(
    "slot_map",
    [
        {"version": 1, "owners": [[0, 4095, 2]]},  # shard 2 is not listed
        {"version": 1, "owners": [[0, 4094, 0]]},  # slot 4095 has no owner
        {"version": 1, "owners": [[0, 4095, 0], [7, 7, 1]]},  # slot 7 twice
        {"version": 1, "owners": [["0", 4095, 0]]},
        {"version": 0, "shards": 2},
        {"version": 1, "shards": 3},  # more than listed
    ],
)
def test_a_slot_map_that_does_not_fit_the_listed_shards_is_refused(slot_map: object) -> None:
    raw = orjson.dumps({"slotMap": slot_map, "shards": [{"members": []}] * 2})
    with pytest.raises(ConfigError):
        parse_config(raw)


def test_a_file_source_allows_a_shard_without_members_yet(tmp_path: Path) -> None:
    path = tmp_path / "members.json"
    path.write_bytes(doc(["http://a:1"], []))
    source = FileSource(path)
    assert Cluster([["http://a:1"], []], source=source).shards[1] == []
    with pytest.raises(ValueError):
        Cluster([["http://a:1"], []])


def test_the_token_file_is_read_again_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "clusterToken"
    tokens = TokenFile(path)
    assert tokens.current() is None  # not mounted (yet)
    path.write_text("old")
    assert tokens.current() == "old"
    path.write_text("new-one,old")  # rotation: the new value first, both accepted
    assert tokens.current() == "new-one"
    cluster = Cluster([["http://a:1"]], cluster_token=tokens)
    assert cluster._headers() == {"Authorization": "Bearer new-one"}


def test_first_token_skips_blanks() -> None:
    assert first_token(" \n, a ,b") == "a"
    assert first_token("") is None and first_token(None) is None
