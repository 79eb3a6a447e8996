"""Metadata filters: parsing, JSON equality, and the inverted index."""

from __future__ import annotations

import pytest

from dvecdb_node.storage.filters import FilterError, MetadataIndex, matches, parse_filter

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "bad",
    [[], {"k": {"gt": 1}}, {"k": {"in": "x"}}, {"k": [1]}, {"k": {"in": [[1]]}}, {"": 1}],
)
def test_unsupported_filters_are_rejected(bad: object) -> None:
    with pytest.raises(FilterError):
        parse_filter(bad)


def test_equality_and_in() -> None:
    clauses = parse_filter({"color": "red", "size": {"in": [1, 2]}})
    assert matches({"color": "red", "size": 2}, clauses)
    assert not matches({"color": "red", "size": 3}, clauses)
    assert not matches({"color": "red"}, clauses)
    assert not matches(None, clauses)


def test_booleans_never_equal_numbers() -> None:
    assert not matches({"flag": 1}, parse_filter({"flag": True}))
    assert not matches({"flag": True}, parse_filter({"flag": 1}))
    assert matches({"n": 1.0}, parse_filter({"n": 1}))
    assert not matches({"n": "1"}, parse_filter({"n": 1}))


def test_index_select_matches_scan() -> None:
    index = MetadataIndex()
    metas = {i: {"g": i % 3, "odd": i % 2 == 1, "name": f"n{i}"} for i in range(30)}
    for label, meta in metas.items():
        index.add(label, meta)
    index.remove(4, metas[4])
    del metas[4]
    for raw in ({"g": 1}, {"g": {"in": [0, 2]}, "odd": True}, {"name": "n7"}, {"missing": 1}):
        clauses = parse_filter(raw)
        expected = {label for label, meta in metas.items() if matches(meta, clauses)}
        assert index.select(clauses) == expected
