"""Graphs per filtered value: built after a few walked searches, kept current by writes."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest

from dvecdb_node.storage import index as index_module
from dvecdb_node.storage import values as values_module
from dvecdb_node.storage.filters import parse_filter
from dvecdb_node.storage.index import Collection
from dvecdb_node.storage.records import CollectionConfig, HnswParams

pytestmark = pytest.mark.unit

N, DIM = 1400, 8
G3 = parse_filter({"g": 3})


@pytest.fixture(autouse=True)
def _walk_past_a_small_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(index_module, "brute_force_limit", lambda count: 50)  # 1/7 walks


def _filled() -> tuple[Collection, np.ndarray[Any, Any]]:
    col = Collection(CollectionConfig("c", DIM, "l2", HnswParams(16, 100, 32)), N)
    data = np.random.default_rng(0).random((N, DIM), dtype=np.float32)
    col.upsert([str(i) for i in range(N)], data, [{"g": i % 7, "h": i % 2} for i in range(N)])
    return col, data


def _wait_ready(col: Collection, graphs: int = 1) -> None:
    deadline = time.monotonic() + 20
    while len(col._values) < graphs:
        assert time.monotonic() < deadline, "the value graph was not built"
        time.sleep(0.01)


def _exact(col: Collection, query: np.ndarray[Any, Any], allowed: list[str]) -> list[str]:
    vectors = np.stack([col.get(item)[0] for item in allowed])  # type: ignore[index]
    order = np.argsort(((vectors - query) ** 2).sum(axis=1), kind="stable")
    return [allowed[i] for i in order[:10]]


def test_a_value_walked_a_few_times_gets_its_graph_and_answers_from_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    col, data = _filled()
    queries = data[:20] + 0.01
    for _ in range(values_module.BUILD_AFTER - 1):
        col.search(queries[:1], 10, clauses=G3)
    time.sleep(0.05)
    assert len(col._values) == 0  # not before BUILD_AFTER walks
    col.search(queries[:1], 10, clauses=G3)
    _wait_ready(col)
    walked: list[Any] = []
    real = index_module.native.filtered_knn
    monkeypatch.setattr(
        index_module.native,
        "filtered_knn",
        lambda index, *a: walked.append(index) or real(index, *a),
    )
    allowed = [str(i) for i in range(N) if i % 7 == 3]
    rows = col.search(queries, 10, clauses=G3)
    assert not walked  # answered from the value's graph, not the filtered walk
    assert all(int(h.id) % 7 == 3 for row in rows for h in row)
    hits = sum(
        len({h.id for h in row} & set(_exact(col, q, allowed)))
        for q, row in zip(queries, rows, strict=True)
    )
    assert hits / (10 * len(queries)) >= 0.95
    # Two clauses: the value's graph walked with the filter's mask, not the whole graph.
    narrower = [str(i) for i in range(N) if i % 7 == 3 and i % 2 == 1]
    both = col.search(queries, 10, clauses=parse_filter({"g": 3, "h": 1}))
    assert walked and all(index is not col._index for index in walked)
    assert all(h.id in narrower for row in both for h in row)
    hits = sum(
        len({h.id for h in row} & set(_exact(col, q, narrower)))
        for q, row in zip(queries, both, strict=True)
    )
    assert hits / (10 * len(queries)) >= 0.95


def test_writes_after_and_during_the_build_keep_the_graph_current(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    col, data = _filled()
    release = threading.Event()
    real_build = values_module.build

    def slow_build(*args: Any) -> Any:
        release.wait(10)
        return real_build(*args)

    monkeypatch.setattr(index_module, "build_value_graph", slow_build)
    for _ in range(values_module.BUILD_AFTER):
        col.search(data[:1], 10, clauses=G3)
    # During the build (from a copy taken at its start): one id leaves the value, one is
    # deleted, one new joins it, and one member moves elsewhere.
    target = (np.ones(DIM, dtype=np.float32) * 5).reshape(1, DIM)
    col.upsert(["3"], data[3:4], [{"g": 4}])
    col.delete(["10"])
    col.upsert(["during"], target * 1.001, [{"g": 3}])
    col.upsert(["17"], target * 0.999, [{"g": 3}])
    release.set()
    _wait_ready(col)
    # After it is ready: another joins, another leaves.
    col.upsert(["after"], target, [{"g": 3}])
    col.upsert(["24"], data[24:25], [{"g": 0}])
    top = [h.id for h in col.search(target, 3, clauses=G3)[0]]
    assert top[0] == "after" and set(top) == {"after", "during", "17"}
    everything = {h.id for h in col.search(data[:40] + 0.001, 50, clauses=G3)[0]}
    for gone in ("3", "10", "24"):
        assert gone not in everything
        assert all(gone not in {h.id for h in row} for row in col.search(data[:40], 50, clauses=G3))
    graph = next(iter(col._values._ready.values()))
    assert graph.live == {
        label for label, meta in col._metadata.items() if meta and meta.get("g") == 3
    }


def test_a_graph_worn_by_churn_is_dropped_and_built_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """Labels are reused across ids and values: without a bound, churn would make a value's
    graph hold every label the collection has used."""
    monkeypatch.setattr(values_module, "MIN_WORN", 10)
    col, data = _filled()
    for _ in range(values_module.BUILD_AFTER):
        col.search(data[:1], 10, clauses=G3)
    _wait_ready(col)
    graph = next(iter(col._values._ready.values()))
    members = sorted(label for label in graph.live)
    col.delete([str(label) for label in members[: 2 * len(members) // 3]])
    for i in range(len(members)):  # new ids reuse the freed labels, with another value
        col.upsert([f"n{i}"], data[i : i + 1], [{"g": 5}])
    assert len(col._values) == 0  # worn: dropped
    for _ in range(values_module.BUILD_AFTER):
        col.search(data[:1], 10, clauses=G3)
    _wait_ready(col)
    rebuilt = next(iter(col._values._ready.values()))
    assert (
        rebuilt.held
        == rebuilt.live
        == {label for label, meta in col._metadata.items() if meta and meta.get("g") == 3}
    )


def test_a_changed_default_ef_reaches_the_value_graphs() -> None:
    col, data = _filled()
    for _ in range(values_module.BUILD_AFTER):
        col.search(data[:1], 10, clauses=G3)
    _wait_ready(col)
    graph = next(iter(col._values._ready.values()))
    assert graph.index.ef == values_module.EF_FACTOR * 32
    col.set_ef_search(100)
    assert graph.index.ef == values_module.EF_FACTOR * 100


def test_the_ready_graphs_are_counted_for_the_metrics() -> None:
    col, data = _filled()
    assert col.value_graphs == 0
    for _ in range(values_module.BUILD_AFTER):
        col.search(data[:1], 10, clauses=G3)
    _wait_ready(col)
    assert col.value_graphs == 1
