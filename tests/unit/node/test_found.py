"""Search answers written from label and distance arrays: the same bytes orjson writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest

from dvecdb_node.storage.found import Found, Hit, Rows, hit_rows
from dvecdb_node.storage.index import Collection
from dvecdb_node.storage.records import CollectionConfig, HnswParams

pytestmark = pytest.mark.unit

# Ids JSON must escape, and one (`",`) whose escaped form holds the `","` of a list separator.
IDS = ["a", 'q"uote', "back\\slash", "ctl\n\t\x01", "naïve", "😀", '",', "], [", "x" * 300]


def _expected(ids: list[str], labels: np.ndarray, distances: np.ndarray) -> bytes:
    rows = [
        [{"id": ids[label], "distance": dist} for label, dist in zip(lrow, drow, strict=True)]
        for lrow, drow in zip(labels.tolist(), distances.tolist(), strict=True)
    ]
    return orjson.dumps(rows)


def _found(n: int, k: int, seed: int = 0) -> tuple[Found, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(IDS), (n, k)).astype(np.uint64)
    distances = (rng.random((n, k)) * 100).astype(np.float32)
    found = Found.resolve(labels, distances, [orjson.dumps(i) for i in IDS])
    assert found is not None
    return found, labels, distances


@pytest.mark.parametrize(("n", "k"), [(1, 1), (1, 10), (3, 1), (7, 5), (100, 10)])
def test_json_is_what_orjson_writes(n: int, k: int) -> None:
    found, labels, distances = _found(n, k, seed=n * k)
    assert found.json() == _expected(IDS, labels, distances)
    assert orjson.loads(found.json())[0][0]["id"] in IDS


def test_non_finite_distances_become_null_as_with_orjson() -> None:
    labels = np.array([[0, 1, 2]], np.uint64)
    distances = np.array([[np.inf, 0.5, np.nan]], np.float32)
    found = Found.resolve(labels, distances, [orjson.dumps(i) for i in IDS])
    assert found is not None
    assert found.json() == _expected(IDS, labels, distances)
    assert orjson.loads(found.json())[0][0]["distance"] is None


def test_hits_slices_and_equality() -> None:
    found, labels, distances = _found(4, 3, seed=9)
    hits = found.hits()
    assert hits[2][1] == Hit(IDS[int(labels[2, 1])], float(distances[2, 1]), int(labels[2, 1]))
    assert found == hits and hit_rows(found) == hits and found[3] == hits[3]
    part = found[1:3]
    assert isinstance(part, Found) and len(part) == 2
    assert part.json() == _expected(IDS, labels[1:3], distances[1:3])
    assert found[4:].json() == b"[]"
    assert [row for row in found] == hits


def test_resolve_refuses_labels_without_an_id() -> None:
    json_ids = [orjson.dumps("a"), None]
    assert Found.resolve(np.array([[1]], np.uint64), np.zeros((1, 1), np.float32), json_ids) is None
    assert Found.resolve(np.array([[5]], np.uint64), np.zeros((1, 1), np.float32), json_ids) is None


def _collection() -> Collection:
    return Collection(CollectionConfig("c", 4, "l2", HnswParams(8, 64, 32)), 16)


def test_an_answer_keeps_the_ids_it_found_when_a_label_is_reused() -> None:
    """Ids are looked up under the read lock: a write after the search changes no answer."""
    col = _collection()
    vectors = np.eye(4, dtype=np.float32)
    col.upsert(["a", "b", "c", "d"], vectors, [None] * 4)
    found = col.search(vectors[:1] + 0.01, 1)
    assert isinstance(found, Found)
    col.delete(["a"])
    col.upsert(["new"], vectors[:1], [None])  # takes a's freed label
    assert orjson.loads(found.json())[0][0]["id"] == "a"
    assert found.hits()[0][0].id == "a"
    assert col.search(vectors[:1] + 0.01, 1)[0][0].id == "new"


def test_index_answers_render_with_escaped_ids_after_reload(tmp_path: Path) -> None:
    col = _collection()
    ids = IDS[:4]
    vectors = np.random.default_rng(1).random((4, 4), dtype=np.float32)
    col.upsert(ids, vectors, [None] * 4)
    col.save(tmp_path)
    loaded = Collection.load(tmp_path)
    for each in (col, loaded):
        found = each.search(vectors, 4)
        assert isinstance(found, Found)
        got = orjson.loads(found.json())
        assert [row[0]["id"] for row in got] == ids  # each stored vector finds itself first


def test_a_stored_vector_is_promoted_in_found_rows() -> None:
    """The exact-match rule still applies: a query equal to a stored vector finds it first,
    even where HNSW missed it (ef 1, M 4 on many close vectors)."""
    col = Collection(CollectionConfig("c", 8, "l2", HnswParams(4, 8, 1)), 2048)
    data = np.random.default_rng(3).random((2000, 8), dtype=np.float32)
    ids = [str(i) for i in range(2000)]
    col.upsert(ids, data, [None] * 2000)
    rows = col.search(data[:200], 3)
    assert [row[0].id for row in rows] == ids[:200]
    body = orjson.loads(_json_of(rows))
    assert [row[0]["id"] for row in body] == ids[:200]


def _json_of(rows: Rows) -> bytes:
    """Rows in their JSON form, whichever form the index gave them."""
    if isinstance(rows, Found):
        return rows.json()
    return orjson.dumps([[{"id": hit.id, "distance": hit.distance} for hit in row] for row in rows])
