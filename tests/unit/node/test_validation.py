"""Request validation: each bad input fails with its own code; duplicates keep the last."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from dvecdb_client.bulk import encode_batch
from dvecdb_node.api import bulk
from dvecdb_node.api.validation import (
    check_name,
    parse_collection,
    parse_delete,
    parse_json,
    parse_search,
    parse_upsert_json,
)
from dvecdb_node.errors import NodeError
from dvecdb_node.settings import NodeSettings
from dvecdb_node.storage.records import CollectionConfig

pytestmark = pytest.mark.unit
SETTINGS = NodeSettings(max_batch=5, max_metadata_bytes=64)
CONFIG = CollectionConfig("c", 3, "l2")


def _code(fn: Any, *args: Any) -> str:
    with pytest.raises(NodeError) as info:
        fn(*args)
    return info.value.code


@pytest.mark.parametrize("name", ["", "-x", "a/b", "a" * 64, 5, None, "é"])
def test_invalid_names(name: object) -> None:
    assert _code(check_name, name) == "invalid_name"


def test_malformed_json() -> None:
    assert _code(parse_json, b"{") == "malformed_json"
    assert _code(parse_json, b"") == "malformed_json"
    assert _code(parse_json, b'{"x": NaN}') == "malformed_json"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"name": "c", "dimension": 0}, "invalid_input"),
        ({"name": "c", "dimension": True}, "invalid_input"),
        ({"name": "c", "dimension": 3, "metric": "hamming"}, "invalid_metric"),
        ({"name": "c", "dimension": 3, "hnsw": {"m": 1}}, "invalid_input"),
        ({"name": "c", "dimension": 3, "extra": 1}, "invalid_input"),
    ],
)
def test_bad_collections(body: dict[str, Any], code: str) -> None:
    assert _code(parse_collection, body, SETTINGS) == code


def test_collection_hnsw_defaults_come_from_settings_and_body_overrides_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DVECDB_HNSW_M", "24")
    monkeypatch.setenv("DVECDB_HNSW_EF_SEARCH", "128")
    settings = NodeSettings()
    config = parse_collection({"name": "c", "dimension": 3}, settings)
    assert (config.hnsw.m, config.hnsw.ef_construction, config.hnsw.ef_search) == (24, 200, 128)
    body = {"name": "c", "dimension": 3, "hnsw": {"m": 8}}
    assert parse_collection(body, settings).hnsw.m == 8


def _item(vector: Any, item_id: Any = "a", metadata: Any = None) -> dict[str, Any]:
    return {"id": item_id, "vector": vector, "metadata": metadata}


@pytest.mark.parametrize(
    ("items", "code"),
    [
        ([], "empty_batch"),
        ([_item([1, 2, 3])] * 6, "batch_too_large"),
        ([_item([1, 2])], "dimension_mismatch"),
        ([_item([1, "2", 3])], "invalid_vector"),
        ([_item([1, True, 3])], "invalid_vector"),
        ([_item("abc")], "invalid_vector"),
        ([_item([1, 2, 1e39])], "non_finite"),
        ([_item([1, 2, -1e39])], "non_finite"),
        ([_item([1, 2, 10**400])], "non_finite"),
        ([_item([1, 2, 3]), _item([1, float("nan"), 3])], "non_finite"),
        ([_item([1, 2, float("inf")])], "non_finite"),
        ([_item([1, None, 3])], "invalid_vector"),
        ([_item([1, 2, 3], item_id="")], "invalid_id"),
        ([_item([1, 2, 3], item_id=7)], "invalid_id"),
        ([_item([1, 2, 3], item_id="x" * 257)], "invalid_id"),
        ([_item([1, 2, 3], metadata={"nested": {"a": 1}})], "invalid_metadata"),
        ([_item([1, 2, 3], metadata=[1])], "invalid_metadata"),
        ([_item([1, 2, 3], metadata={"k": "v" * 100})], "metadata_too_large"),
    ],
)
def test_bad_upserts(items: list[Any], code: str) -> None:
    assert _code(parse_upsert_json, {"vectors": items}, CONFIG, SETTINGS) == code


def test_duplicate_ids_last_wins() -> None:
    body = {
        "vectors": [
            _item([1, 1, 1], "a", {"v": 1}),
            _item([2, 2, 2], "b"),
            _item([3, 3, 3], "a", {"v": 3}),
        ]
    }
    batch, _ = parse_upsert_json(body, CONFIG, SETTINGS)
    assert batch.ids == ["b", "a"]
    assert batch.vectors.tolist() == [[2, 2, 2], [3, 3, 3]]
    assert batch.metadata == [None, {"v": 3}]


def test_delete_dedupes_and_limits() -> None:
    assert parse_delete({"ids": ["a", "b", "a"]}, SETTINGS)[0] == ["a", "b"]
    assert _code(parse_delete, {"ids": []}, SETTINGS) == "empty_batch"
    assert _code(parse_delete, {"ids": "a"}, SETTINGS) == "invalid_input"


def test_vectors_convert_to_float32_as_numpy_casts() -> None:
    """The struct packing path gives numpy's float32 values, edge of the range included."""
    top = float(np.finfo(np.float32).max)
    rows = [[0.1, 2, -1.5e-45], [top, -top, 3.4028235e38]]  # the last rounds down to max
    batch, _ = parse_upsert_json(
        {"vectors": [_item(rows[0], "a"), _item(rows[1], "b")]}, CONFIG, SETTINGS
    )
    expected = np.asarray(rows, dtype=np.float64).astype(np.float32)
    assert batch.vectors.dtype == np.float32 and batch.vectors.shape == (2, 3)
    assert np.array_equal(batch.vectors, expected)


def test_plain_search_takes_the_same_checks() -> None:
    """``{vector, k}`` skips the option lookups but none of the checks."""
    req = parse_search({"vector": [1, 2, 3], "k": 4}, CONFIG, SETTINGS)
    assert (req.single, req.k, req.ef, req.clauses, req.consistency) == (
        True,
        4,
        None,
        None,
        "eventual",
    )
    assert req.queries.tolist() == [[1, 2, 3]]
    assert _code(parse_search, {"vector": [1, 2]}, CONFIG, SETTINGS) == "dimension_mismatch"
    assert _code(parse_search, {"vector": [1, 2, True]}, CONFIG, SETTINGS) == "invalid_vector"
    assert _code(parse_search, {"vector": [1, 2, 1e39]}, CONFIG, SETTINGS) == "non_finite"
    assert _code(parse_search, {"vector": [1, 2, 3], "k": True}, CONFIG, SETTINGS) == (
        "invalid_input"
    )


def test_search_parsing() -> None:
    req = parse_search({"vector": [1, 2, 3], "filter": {"g": 1}}, CONFIG, SETTINGS)
    assert req.single and req.k == 10 and req.clauses and req.consistency == "eventual"
    req = parse_search({"vectors": [[1, 2, 3]], "min_seq": 4}, CONFIG, SETTINGS)
    assert req.consistency == "min_seq" and req.min_seq == 4
    assert _code(parse_search, {}, CONFIG, SETTINGS) == "invalid_input"
    assert _code(parse_search, {"vector": [1, 2, 3], "k": 0}, CONFIG, SETTINGS) == "invalid_input"
    bad_filter = {"vector": [1, 2, 3], "filter": {"g": {"lt": 1}}}
    assert _code(parse_search, bad_filter, CONFIG, SETTINGS) == "invalid_filter"


def test_a_write_token_is_min_seq_with_min_epoch() -> None:
    req = parse_search({"vector": [1, 2, 3], "min_seq": 4, "min_epoch": 2}, CONFIG, SETTINGS)
    assert (req.consistency, req.min_seq, req.min_epoch) == ("min_seq", 4, 2)
    assert parse_search({"vector": [1, 2, 3]}, CONFIG, SETTINGS).min_epoch is None
    alone = {"vector": [1, 2, 3], "min_epoch": 2}
    assert _code(parse_search, alone, CONFIG, SETTINGS) == "invalid_input"
    zero = {"vector": [1, 2, 3], "min_seq": 4, "min_epoch": 0}
    assert _code(parse_search, zero, CONFIG, SETTINGS) == "invalid_input"


def test_bulk_roundtrip_and_errors() -> None:
    vectors = np.arange(9, dtype=np.float32).reshape(3, 3)
    body = encode_batch(["a", "b", "a"], vectors, [{"x": 1}, None, {"x": 3}])
    batch = bulk.decode_batch(body, "c", 3, SETTINGS)
    assert batch.ids == ["b", "a"] and batch.metadata == [None, {"x": 3}]
    assert np.array_equal(batch.vectors, vectors[1:])
    short_meta = encode_batch(["a"], vectors[:1], [{"x": 1}, None])
    assert _code(bulk.decode_batch, short_meta, "c", 3, SETTINGS) == "invalid_input"
    assert _code(bulk.decode_batch, b"XXXX" + body[4:], "c", 3, SETTINGS) == "malformed_batch"
    assert _code(bulk.decode_batch, body, "c", 4, SETTINGS) == "dimension_mismatch"
    nan = encode_batch(["a"], np.array([[1, np.nan, 2]], np.float32))
    assert _code(bulk.decode_batch, nan, "c", 3, SETTINGS) == "non_finite"
    truncated = encode_batch(["a"], np.ones((1, 3), np.float32))[:-1]
    assert _code(bulk.decode_batch, truncated, "c", 3, SETTINGS) == "malformed_batch"
