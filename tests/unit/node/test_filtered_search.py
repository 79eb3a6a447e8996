"""Filtered search in the graph walk, and searches that do not wait for whole upserts."""

from __future__ import annotations

import threading
from typing import Any

import hnswlib
import numpy as np
import pytest

from dvecdb_node.storage import index as index_module
from dvecdb_node.storage import native
from dvecdb_node.storage.filters import parse_filter
from dvecdb_node.storage.index import UPSERT_CHUNK, Collection, RWLock, short_chunk
from dvecdb_node.storage.records import CollectionConfig, HnswParams

pytestmark = pytest.mark.unit


def _vectors(n: int, dim: int = 8, seed: int = 0) -> np.ndarray[Any, Any]:
    return np.random.default_rng(seed).random((n, dim), dtype=np.float32)


def _filled(metric: str = "l2", n: int = 2000, dim: int = 8) -> tuple[Collection, np.ndarray]:
    col = Collection(CollectionConfig("c", dim, metric, HnswParams(16, 100, 40)), n)
    data = _vectors(n, dim)
    col.upsert([str(i) for i in range(n)], data, [{"g": i % 7} for i in range(n)])
    return col, data


def test_the_compiled_filter_is_in_use_here() -> None:
    """CI builds the node with its compiled filter; a silent fallback would hide a slow path."""
    assert native.AVAILABLE, native.REASON


@pytest.mark.parametrize("metric", ["l2", "cosine", "ip"])
def test_the_compiled_filter_answers_as_hnswlib_callable_filter(metric: str) -> None:
    dim, n = 16, 3000
    index = hnswlib.Index(space=metric, dim=dim)
    index.init_index(max_elements=n, M=16, ef_construction=100, random_seed=7)
    index.add_items(_vectors(n, dim), np.arange(n))
    index.set_ef(50)
    mask = (np.arange(n) % 5 == 2).astype(np.uint8)
    queries = _vectors(20, dim, seed=3)
    labels, distances = native.filtered_knn(index, queries, 10, mask)
    want_labels, want_distances = index.knn_query(queries, 10, 1, lambda label: bool(mask[label]))
    assert np.array_equal(labels, want_labels)
    assert np.array_equal(distances, want_distances)
    assert np.all(labels % 5 == 2)


@pytest.mark.parametrize("metric", ["l2", "cosine", "ip"])
def test_the_scan_is_exact_with_hnswlib_distances_and_skips_deleted_elements(metric: str) -> None:
    dim, n = 16, 3000
    index = hnswlib.Index(space=metric, dim=dim)
    index.init_index(max_elements=n, M=16, ef_construction=100, random_seed=7)
    data = _vectors(n, dim)
    index.add_items(data, np.arange(n))
    allowed = np.arange(2, n, 5, dtype=np.int64)
    internal = native.internal_ids(index, allowed)
    index.mark_deleted(7)  # allowed, then deleted: a scan must not return it
    queries = _vectors(20, dim, seed=3)
    labels, distances = native.scan_knn(index, queries, 10, internal)
    live = allowed[allowed != 7]
    rows = data[live]
    q = queries
    if metric == "l2":
        exact = ((q[:, None, :] - rows[None, :, :]) ** 2).sum(axis=2)
    else:
        if metric == "cosine":
            q = q / np.linalg.norm(q, axis=1, keepdims=True)
            rows = rows / np.linalg.norm(rows, axis=1, keepdims=True)
        exact = 1.0 - q @ rows.T
    want = live[np.argsort(exact, axis=1, kind="stable")[:, :10]]
    assert np.array_equal(labels.astype(np.int64), want)
    assert np.allclose(distances, np.sort(exact, axis=1)[:, :10], atol=1e-5)


def test_internal_ids_refuse_a_label_the_index_lacks() -> None:
    index = hnswlib.Index(space="l2", dim=4)
    index.init_index(max_elements=10, M=8, ef_construction=50)
    index.add_items(_vectors(5, 4), np.arange(5))
    with pytest.raises(RuntimeError, match="1 of 3 labels"):
        native.internal_ids(index, np.asarray([0, 4, 9]))


def test_a_small_filter_is_scanned_exactly_and_a_write_renews_its_ids() -> None:
    col, _ = _filled(n=2000)  # 1/7 of 2,000 is under the brute-force limit
    g3 = parse_filter({"g": 3})
    queries = _vectors(5, seed=9)
    rows = col.search(queries, 10, clauses=g3)
    candidates = np.asarray([label for label in range(2000) if label % 7 == 3], np.int64)
    assert col._selection(g3).internal is not None  # the compiled scan, not numpy
    assert [[h.id for h in row] for row in rows] == [
        [h.id for h in row] for row in col._brute_force(queries, 10, candidates)
    ]
    nearest = rows[0][0].id
    col.delete([nearest])
    col.upsert(["new"], queries[:1], [{"g": 3}])
    after = col.search(queries[:1], 10, clauses=g3)
    assert after[0][0].id == "new" and nearest not in [h.id for h in after[0]]


def test_too_few_allowed_labels_raise_as_hnswlib_does() -> None:
    index = hnswlib.Index(space="l2", dim=4)
    index.init_index(max_elements=100, M=8, ef_construction=50)
    index.add_items(_vectors(100, 4), np.arange(100))
    mask = np.zeros(100, dtype=np.uint8)
    mask[[3, 9]] = 1
    with pytest.raises(RuntimeError, match="2 of 5"):
        native.filtered_knn(index, _vectors(1, 4), 5, mask)


def test_a_filter_past_the_brute_force_limit_walks_the_graph_with_high_recall(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    col, data = _filled(n=3000)
    monkeypatch.setattr(index_module, "brute_force_limit", lambda count: 100)  # 1/7 is past it
    queries = _vectors(30, seed=5)
    clauses = parse_filter({"g": 3})
    allowed = np.flatnonzero(np.arange(3000) % 7 == 3)
    found = 0
    for query, row in zip(queries, col.search(queries, 10, clauses=clauses), strict=True):
        assert all(int(hit.id) % 7 == 3 for hit in row) and len(row) == 10
        exact = allowed[np.argsort(((data[allowed] - query) ** 2).sum(axis=1))[:10]]
        found += len({int(hit.id) for hit in row} & set(exact.tolist()))
    assert found / 300 >= 0.95


def test_a_filter_sees_writes_made_after_it_was_cached() -> None:
    col, data = _filled(n=500)
    clauses = parse_filter({"g": 99})
    assert col.search(data[:1], 3, clauses=clauses) == [[]]
    col.upsert(["new"], data[:1], [{"g": 99}])
    assert [h.id for h in col.search(data[:1], 3, clauses=clauses)[0]] == ["new"]
    col.delete(["new"])
    assert col.search(data[:1], 3, clauses=clauses) == [[]]


def test_a_wider_ef_searches_beside_other_readers() -> None:
    """An ef above the collection's asks hnswlib for more results instead of changing the
    index-wide ef, so it needs no exclusive hold: it answers while another reader holds on."""
    col, data = _filled(n=500)
    held, done = threading.Event(), threading.Event()

    def reader() -> None:
        with col._lock.read():
            held.set()
            done.wait(3)

    thread = threading.Thread(target=reader)
    thread.start()
    held.wait(5)
    try:
        wide = col.search(data[7:8], 3, ef=300)
        assert thread.is_alive()  # answered while the other reader still held the lock
        assert wide[0][0].id == "7"
    finally:
        done.set()
        thread.join()
    narrow = col.search(data[7:8], 3, ef=10)  # below the collection's: exclusive, still right
    assert narrow[0][0].id == "7"


def test_readers_that_waited_go_before_the_next_writer() -> None:
    """A writer that re-takes the lock chunk after chunk lets the waiting readers in between."""
    lock = RWLock()
    order: list[str] = []
    first_hold = threading.Event()
    reader_waiting = threading.Event()

    def writer() -> None:
        with lock.write():
            first_hold.set()
            reader_waiting.wait(5)
            # Give the reader time to block on the lock (it waits for this hold to end).
            threading.Event().wait(0.05)
        with lock.write():
            order.append("writer")

    def reader() -> None:
        first_hold.wait(5)
        reader_waiting.set()
        with lock.read():
            order.append("reader")

    threads = [threading.Thread(target=writer), threading.Thread(target=reader)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert order == ["reader", "writer"]


def test_searches_answer_during_a_large_upsert() -> None:
    """Searches running beside a large upsert are answered between its chunks, not after it."""
    col, data = _filled(n=200)
    big = _vectors(6000, seed=11)
    answered_during = 0
    writer = threading.Thread(
        target=lambda: col.upsert([f"b{i}" for i in range(6000)], big, [None] * 6000)
    )
    writer.start()
    while writer.is_alive():
        col.search(data[:1], 1)
        answered_during += writer.is_alive()
    writer.join()
    assert col.count == 6200
    assert answered_during >= 20


@pytest.mark.parametrize(
    ("seconds", "size"), [(0.0, 8), (1e-3, 8), (1e-4, 20), (1e-5, 200), (1e-7, 512)]
)
def test_short_chunks_hold_the_index_about_two_milliseconds(seconds: float, size: int) -> None:
    assert short_chunk(seconds) == size


@pytest.mark.parametrize(
    ("count", "limit"),
    [(0, 1024), (1_000, 1024), (2_000, 1414), (50_000, 7071), (1_000_000, 31622)],
)
def test_brute_force_covers_filters_up_to_where_the_walk_gets_cheaper(
    count: int, limit: int
) -> None:
    assert index_module.brute_force_limit(count) == limit


def test_a_reader_phase_admits_the_next_queued_search_too_not_one_per_writer_hold() -> None:
    """The search pool on one core is one thread taking read holds one after another. When a
    writer lets go with a search waiting, the thread's next search (a moment later, with the
    next writer already waiting) still gets in: a reader phase, not one search per hold."""
    lock = RWLock()
    held, second_waiting = threading.Event(), threading.Event()
    outcome: list[bool] = []

    def first_writer() -> None:
        with lock.write():
            held.set()
            second_waiting.wait(5)
            threading.Event().wait(0.02)  # the reader is queued behind this hold by now

    def second_writer() -> None:
        held.wait(5)
        second_waiting.set()
        with lock.write():
            pass

    def pool_thread() -> None:
        second_waiting.wait(5)
        with lock.read():  # waits for the first writer's hold
            pass
        got = lock.try_acquire_read()  # the next queued search, the second writer waiting
        outcome.append(got)
        if got:
            lock.release_read()

    threads = [
        threading.Thread(target=first_writer),
        threading.Thread(target=second_writer),
        threading.Thread(target=pool_thread),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert outcome == [True]


def test_an_upsert_takes_short_chunks_while_searches_wait_though_none_arrives_meanwhile(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every search waiting for the writer's hold means none arrives during it: counting
    arrivals since the previous chunk made the next chunk a whole 512 (holds of 130-360 ms)."""
    col, data = _filled(n=2000)
    sizes: list[int] = []
    real = col._upsert_chunk

    def chunk(ids: list[str], vectors: Any, metadata: Any) -> None:
        sizes.append(len(ids))
        real(ids, vectors, metadata)

    monkeypatch.setattr(col, "_upsert_chunk", chunk)
    monkeypatch.setattr(index_module, "SEARCHED_WITHIN_SECONDS", 0.0)  # only waiting counts
    moved = data[:600] + 0.01
    ids = [str(i) for i in range(600)]
    col.upsert(ids, moved, [{"g": 1}] * 600)
    assert sizes == [512, 88]  # nobody searching: the largest chunks
    sizes.clear()
    col._insert_seconds = 1e-4  # 2 ms of holds: 20 vectors
    waiting = threading.Event()

    def search_behind_the_writer() -> None:
        waiting.set()
        col.search(data[:1], 5)  # blocks while a chunk holds the index

    with col._lock.write():  # a hold the search must wait for
        reader = threading.Thread(target=search_behind_the_writer)
        reader.start()
        waiting.wait(5)
        while not col._lock._readers_waiting:
            threading.Event().wait(0.001)
        assert col._lock.searched_within(0.0)  # a reader waits: searches are running
    reader.join(5)
    monkeypatch.setattr(index_module, "SEARCHED_WITHIN_SECONDS", 1.0)
    col.upsert(ids, moved + 0.01, [{"g": 2}] * 600)
    # A search a moment ago: chunks sized to ~2 ms holds (20 at first, then as measured).
    assert sizes[0] == 20 and max(sizes) < UPSERT_CHUNK and sum(sizes) == 600


def test_a_compiled_filter_older_than_its_source_is_not_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`git pull` without a rebuild left a module lacking the newer functions: every filtered
    search failed with AttributeError (a fault run's first trials). It is refused instead."""
    import sys
    import types

    stale = types.ModuleType("dvecdb_node.storage._filtered_knn")
    real = native._MODULE
    stale.probe = real.probe  # type: ignore[attr-defined]
    stale.filtered_knn = real.filtered_knn  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "dvecdb_node.storage._filtered_knn", stale)
    monkeypatch.setattr(index_module.native, "_MODULE", None)  # nothing uses it meanwhile
    import dvecdb_node.storage as package

    monkeypatch.setattr(package, "_filtered_knn", stale, raising=False)
    module, reason = native._load()
    assert module is None
    assert reason is not None and "older than its source" in reason and "scan_knn" in reason
