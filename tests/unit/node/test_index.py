"""One collection: id mapping, label reuse, growth, exact gets, filtered search, persistence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dvecdb_node.storage import index as index_module
from dvecdb_node.storage.filters import parse_filter
from dvecdb_node.storage.index import Collection
from dvecdb_node.storage.records import CollectionConfig, HnswParams

pytestmark = pytest.mark.unit


def _collection(metric: str = "l2", dim: int = 8, capacity: int = 16) -> Collection:
    return Collection(CollectionConfig("c", dim, metric, HnswParams(8, 64, 32)), capacity)


def _vectors(n: int, dim: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, dim), dtype=np.float32)


def test_upsert_replaces_and_maps_ids() -> None:
    col = _collection()
    v = _vectors(3)
    col.upsert(["a", "b", "c"], v, [None, {"k": 1}, None])
    col.upsert(["b"], v[:1] * 2, [{"k": 2}])
    assert col.count == 3
    found = col.get("b")
    assert found is not None
    assert np.array_equal(found[0], v[0] * 2) and found[1] == {"k": 2}
    assert col.get("zz") is None


def test_delete_frees_labels_for_reuse() -> None:
    col = _collection(capacity=4)
    col.upsert(["a", "b", "c", "d"], _vectors(4), [None] * 4)
    assert col.delete(["b", "c", "missing"]) == 2
    col.upsert(["e", "f"], _vectors(2, seed=1), [None] * 2)
    assert col.capacity == 4 and col.resizes == 0  # reused, not grown
    assert sorted(col.ids()) == ["a", "d", "e", "f"]
    hit = col.search(_vectors(2, seed=1)[:1], 1)[0][0]
    assert hit.id == "e" and hit.distance == pytest.approx(0.0, abs=1e-6)


def test_growth_doubles_capacity() -> None:
    col = _collection(capacity=16)
    for start in range(0, 100, 10):
        col.upsert(
            [str(i) for i in range(start, start + 10)], _vectors(10, seed=start), [None] * 10
        )
    assert col.capacity == 128 and col.resizes == 3  # 16 -> 32 -> 64 -> 128
    assert col.count == 100


@pytest.mark.parametrize("metric", ["l2", "cosine", "ip"])
def test_self_match_and_exact_get(metric: str) -> None:
    col = _collection(metric)
    v = _vectors(200) + 0.1
    ids = [f"id{i}" for i in range(200)]
    col.upsert(ids, v, [None] * 200)
    for i in (0, 57, 199):
        found = col.get(ids[i])
        assert found is not None and np.array_equal(found[0], v[i])  # not normalised
        if metric != "ip":  # inner product has no self-match guarantee
            assert col.search(v[i : i + 1], 1)[0][0].id == ids[i]


def test_k_larger_than_count_returns_all() -> None:
    col = _collection()
    col.upsert(["a", "b"], _vectors(2), [None, None])
    assert len(col.search(_vectors(1), 10)[0]) == 2
    assert _collection().search(_vectors(1), 5) == [[]]


def test_filtered_search_brute_force_and_hnsw_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    col = _collection(dim=4)
    n = 600
    v = _vectors(n, dim=4)
    col.upsert([str(i) for i in range(n)], v, [{"g": i % 3} for i in range(n)])
    query = _vectors(1, dim=4, seed=9)
    clauses = parse_filter({"g": {"in": [1]}})
    exact = col.search(query, 5, clauses=clauses)[0]
    assert all(int(h.id) % 3 == 1 for h in exact)
    monkeypatch.setattr(index_module, "brute_force_limit", lambda count: 0)  # the graph walk
    approx = col.search(query, 5, ef=200, clauses=clauses)[0]
    assert all(int(h.id) % 3 == 1 for h in approx)
    assert [h.id for h in approx][:3] == [h.id for h in exact][:3]
    expected = np.sort(((v[1::3] - query) ** 2).sum(axis=1))[:5]
    assert [h.distance for h in exact] == pytest.approx(expected.tolist(), rel=1e-4)


def test_filter_matching_nothing_returns_empty() -> None:
    col = _collection()
    col.upsert(["a"], _vectors(1), [{"g": 1}])
    assert col.search(_vectors(1), 3, clauses=parse_filter({"g": 2})) == [[]]


def test_save_and_load_roundtrip(tmp_path: Path) -> None:
    col = _collection("cosine")
    v = _vectors(50)
    col.upsert([str(i) for i in range(50)], v, [{"i": i} for i in range(50)])
    col.delete(["3", "4"])
    col.save(tmp_path)
    loaded = Collection.load(tmp_path)
    assert loaded.count == 48 and sorted(loaded.ids()) == sorted(col.ids())
    found = loaded.get("10")
    assert found is not None and np.array_equal(found[0], v[10]) and found[1] == {"i": 10}
    assert loaded.search(v[10:11], 1)[0][0].id == "10"
    loaded.upsert(["new"], v[:1], [None])  # reuses a freed label after load
    assert loaded.count == 49 and loaded.capacity == col.capacity


def test_stored_vector_always_finds_itself_first() -> None:
    col = Collection(CollectionConfig("c", 64, "l2", HnswParams(4, 8, 1)), 64)
    v = _vectors(2000, dim=64)
    ids = [str(i) for i in range(2000)]
    col.upsert(ids, v, [{"g": i % 2} for i in range(2000)])
    rows = col.search(v, 3)  # ef=1, M=4: HNSW alone misses many of these
    assert [row[0].id for row in rows] == ids
    assert all(row[0].distance == 0.0 and len(row) == 3 for row in rows)
    filtered = col.search(v[:10], 1, clauses=parse_filter({"g": 1}))
    assert [row[0].id for row in filtered][1::2] == ids[1:10:2]
    col.upsert(["0"], v[1:2] + 1, [None])  # replaced: the old vector no longer matches "0"
    assert col.search(v[:1], 1)[0][0].id != "0" or col.search(v[:1], 1)[0][0].distance > 0
    col.delete(["5"])
    assert col.search(v[5:6], 1)[0][0].id != "5"


def test_split_searches_answer_alike() -> None:
    """A batch split over helper threads gives the one-thread answer."""
    from dvecdb_node.storage.parallel import Splitter

    col = _collection(capacity=512)
    data = _vectors(500, seed=4)
    col.upsert([str(i) for i in range(500)], data, [None] * 500)
    queries = _vectors(9, seed=5)
    want = col.search(queries, 5)
    splitter = Splitter(2)
    try:
        got = col.try_search_now(queries, 5, splitter)
    finally:
        splitter.close()
    assert got == want


@pytest.mark.parametrize(
    "metric", ["l2", "cosine"]
)  # with "ip" a vector need not be its own nearest
def test_updated_vectors_are_searched_where_they_moved_near_or_far(metric: str) -> None:
    """Updates go through the compiled update (neighbours re-linked only for far moves):
    every moved vector is found at its new place, deleted-then-reused labels included."""
    n, dim = 2000, 16
    col = Collection(CollectionConfig("c", dim, metric, HnswParams(16, 100, 64)), n)
    data = _vectors(n, dim)
    ids = [str(i) for i in range(n)]
    col.upsert(ids, data, [None] * n)
    rng = np.random.default_rng(4)
    near = (data[:300] + 0.001 * rng.standard_normal((300, dim))).astype(np.float32)
    far = (data[300:600][::-1] + 0.001).astype(np.float32)  # onto other points' places
    col.upsert(ids[:300], near, [None] * 300)
    col.upsert(ids[300:600], far, [None] * 300)
    col.delete(ids[600:650])
    reborn = _vectors(50, dim, seed=9)
    col.upsert([f"new{i}" for i in range(50)], reborn, [None] * 50)  # reuse the 50 labels
    assert col.count == n and col.capacity == n  # no growth: labels reused in place
    moved = np.concatenate([near, far, reborn])
    want = ids[:600] + [f"new{i}" for i in range(50)]
    rows = col.search(moved, 1)
    assert [row[0].id for row in rows] == want
    for item_id, vector in zip(want, moved, strict=True):
        got = col.get(item_id)
        assert got is not None and np.array_equal(got[0], vector)
    assert not {h.id for row in col.search(data[600:650], 10) for h in row} & set(ids[600:650])


def test_the_compiled_update_relinks_neighbours_only_for_far_moves() -> None:
    from dvecdb_node.storage import native

    col, data = _collection(dim=8, capacity=500), _vectors(500)
    col.upsert([str(i) for i in range(500)], data, [None] * 500)
    labels = np.arange(10, dtype=np.int64)
    index = col._index
    assert native.update_items(index, data[:10], labels, 0.0) == 0  # unchanged
    assert native.update_items(index, data[:10] + 1e-4, labels, 0.0) == 0  # within reach
    assert native.update_items(index, data[:10] + 10.0, labels, 0.0) == 10  # far away
    with pytest.raises(KeyError):
        native.update_items(index, data[:1], np.asarray([999], np.int64), 0.0)
