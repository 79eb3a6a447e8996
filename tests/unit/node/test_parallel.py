"""Searching a batch on several threads: the cores counted, the slices, the same answers."""

from __future__ import annotations

import threading
from typing import Any

import hnswlib
import numpy as np
import pytest

from dvecdb_node.storage.parallel import Splitter, pool_threads, slice_bounds, usable_cpus

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("affinity", "cpu_max", "cpus"),
    [
        (8, None, 8),
        (8, "max 100000\n", 8),
        (8, "200000 100000\n", 2),
        (8, "150000 100000", 2),  # 1.5 cores keep two threads busy part of the time
        (8, "50000 100000", 1),
        (2, "800000 100000", 2),  # a quota above the affinity changes nothing
        (0, None, 1),
        (4, "garbage", 4),
        (4, "x 100000", 4),
    ],
)
def test_usable_cpus(affinity: int, cpu_max: str | None, cpus: int) -> None:
    assert usable_cpus(affinity, cpu_max) == cpus


@pytest.mark.parametrize(
    ("rows", "parts", "bounds"),
    [
        (1, 2, [(0, 1)]),
        (3, 2, [(0, 3)]),  # fewer than two rows a slice: one slice
        (4, 2, [(0, 2), (2, 4)]),
        (9, 2, [(0, 4), (4, 9)]),
        (8, 3, [(0, 2), (2, 5), (5, 8)]),
        (5, 1, [(0, 5)]),
    ],
)
def test_slice_bounds(rows: int, parts: int, bounds: list[tuple[int, int]]) -> None:
    assert slice_bounds(rows, parts) == bounds


@pytest.mark.parametrize(
    ("cores", "in_flight", "threads"), [(4, 0, 4), (4, 1, 1), (4, 3, 1), (1, 0, 1), (1, 2, 1)]
)
def test_a_pooled_search_spreads_only_when_alone(cores: int, in_flight: int, threads: int) -> None:
    assert pool_threads(cores, in_flight) == threads


@pytest.fixture(scope="module")
def index() -> Any:
    rng = np.random.default_rng(3)
    data = rng.standard_normal((2000, 16)).astype(np.float32)
    idx = hnswlib.Index(space="l2", dim=16)
    idx.init_index(max_elements=2000, M=8, ef_construction=50)
    idx.add_items(data, np.arange(2000))
    idx.set_ef(50)
    return idx


@pytest.mark.parametrize("rows", [1, 3, 4, 9, 32])
def test_split_search_gives_the_unsplit_answer(index: Any, rows: int) -> None:
    queries = np.random.default_rng(rows).standard_normal((rows, 16)).astype(np.float32)
    splitter = Splitter(3)
    try:
        labels, distances = splitter.knn(index, queries, 5)
    finally:
        splitter.close()
    want_labels, want_distances = index.knn_query(queries, 5, 1)
    assert np.array_equal(labels, want_labels)
    assert np.array_equal(distances, want_distances)


class _Recorder:
    """An index stand-in: records the threads that searched and can fail one slice."""

    def __init__(self, fail_rows: int | None = None) -> None:
        self.threads: set[str] = set()
        self.finished = 0
        self.fail_rows = fail_rows
        self.lock = threading.Lock()

    def knn_query(self, queries: Any, k: int, threads: int) -> tuple[Any, Any]:
        with self.lock:
            self.threads.add(threading.current_thread().name)
        if len(queries) == self.fail_rows:
            raise RuntimeError("Cannot return the results in a contiguous 2D array")
        with self.lock:
            self.finished += 1
        rows = len(queries)
        return np.zeros((rows, k), np.uint64), np.zeros((rows, k), np.float32)


def test_slices_run_on_the_caller_and_helpers() -> None:
    recorder = _Recorder()
    splitter = Splitter(2)
    try:
        labels, _ = splitter.knn(recorder, np.zeros((6, 4), np.float32), 3)
    finally:
        splitter.close()
    assert labels.shape == (6, 3)
    assert threading.current_thread().name in recorder.threads
    assert any(name.startswith("dvec-split") for name in recorder.threads)


@pytest.mark.parametrize("fail_rows", [3, 4])  # 7 rows in 2 parts: the caller 3, a helper 4
def test_a_failed_slice_raises_after_every_slice_is_over(fail_rows: int) -> None:
    """hnswlib's "too few results" error reaches the caller (who answers exactly instead),
    and only once no helper still reads the index."""
    recorder = _Recorder(fail_rows=fail_rows)
    splitter = Splitter(2)
    try:
        with pytest.raises(RuntimeError, match="contiguous"):
            splitter.knn(recorder, np.zeros((7, 4), np.float32), 3)
        assert recorder.finished == 1  # the other slice ran to its end before the raise
    finally:
        splitter.close()


def test_own_rows_is_the_callers_slice() -> None:
    two, one = Splitter(2), Splitter(1)
    try:
        assert [two.own_rows(n) for n in (1, 3, 4, 9)] == [1, 3, 2, 4]
        assert one.own_rows(9) == 9
    finally:
        two.close()
        one.close()


def test_one_part_searches_on_the_caller_only() -> None:
    recorder = _Recorder()
    splitter = Splitter(1)
    try:
        splitter.knn(recorder, np.zeros((8, 4), np.float32), 3)
    finally:
        splitter.close()
    assert recorder.threads == {threading.current_thread().name}
