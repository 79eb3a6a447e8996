"""The searcher: inline searches never block the loop, and the cost that planning reads."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import numpy as np
import pytest

from dvecdb_node.errors import NodeError
from dvecdb_node.search.searcher import Searcher
from dvecdb_node.storage.filters import parse_filter
from dvecdb_node.storage.index import Collection
from dvecdb_node.storage.records import CollectionConfig

pytestmark = pytest.mark.unit

DIM = 8


@pytest.fixture
def searcher() -> Iterator[Searcher]:
    s = Searcher(threads=2)
    yield s
    s.close()


def _collection(n: int = 300) -> tuple[Collection, np.ndarray]:
    col = Collection(CollectionConfig("c", DIM, "l2"), capacity=n)
    data = np.random.default_rng(1).random((n, DIM), dtype=np.float32)
    col.upsert([str(i) for i in range(n)], data, [{"g": i % 3} for i in range(n)])
    return col, data


async def test_a_search_never_blocks_the_loop_behind_a_write(searcher: Searcher) -> None:
    col, data = _collection()
    await searcher.search(col, data[:1], 1)  # warm: cheap searches may run inline
    locked, release = threading.Event(), threading.Event()

    def hold_write_lock() -> None:
        with col._lock.write():
            locked.set()
            release.wait(5)

    holder = threading.Thread(target=hold_write_lock)
    holder.start()
    locked.wait(5)
    assert searcher.search_inline(col, data[3:4], 1) is None  # a write holds the index
    search = asyncio.create_task(searcher.search(col, data[3:4], 1))
    for _ in range(5):  # the loop keeps running while the search waits for the lock
        await asyncio.sleep(0.01)
        assert not search.done()
    release.set()
    assert (await search)[0][0].id == "3"
    holder.join()


async def test_plain_searches_are_measured_per_collection_object(searcher: Searcher) -> None:
    col, data = _collection()
    assert searcher.cost(col) == 0.0
    rows = searcher.search_inline(col, data[:9], 5)  # split over the helper thread
    assert rows == col.search(data[:9], 5)
    inline_cost = searcher.cost(col)
    assert inline_cost > 0.0
    await searcher.search_pooled(col, data[:1], 5, clauses=parse_filter({"g": 1}))
    await searcher.search_pooled(col, data[:1], 5, ef=200)
    # Filtered searches count apart, custom-ef ones not at all, nor a lone pooled search
    # spread over both cores by hnswlib's own threads (this thread's CPU time misses theirs).
    await searcher.search_pooled(col, data[:9], 5)
    assert searcher.cost(col) == inline_cost
    assert searcher.cost(col, parse_filter({"g": 1})) is not None
    other, _ = _collection()  # e.g. the same name recreated, or rebuilt by a rewind
    assert searcher.cost(other) == 0.0


async def test_a_filter_runs_pooled_until_measured_then_inline(searcher: Searcher) -> None:
    col, data = _collection()
    g1, g2 = parse_filter({"g": 1}), parse_filter({"g": 2})
    assert searcher.cost(col, g1) is None  # unknown: it could allow few labels of many
    pool_threads = set()
    original = col.search

    def search(*args: object, **kwargs: object) -> object:
        pool_threads.add(threading.current_thread().name)
        return original(*args, **kwargs)  # type: ignore[arg-type]

    col.search = search  # type: ignore[method-assign]
    first = await searcher.search(col, data[:1], 5, clauses=g1)
    assert pool_threads and all(name.startswith("dvec-search") for name in pool_threads)
    assert searcher.cost(col, g1) is not None
    assert searcher.cost(col, g2) is None  # measured per filter
    pool_threads.clear()
    again = await searcher.search(col, data[:1], 5, clauses=g1)
    assert not pool_threads  # answered inline: Collection.search (the pooled path) not called
    assert again == first and all(int(h.id) % 3 == 1 for h in again[0])
    assert searcher.search_inline(col, data[:2], 5, g1) == col.search(data[:2], 5, clauses=g1)


async def test_a_one_thread_pooled_search_is_measured() -> None:
    col, data = _collection()
    single = Searcher(threads=1)
    try:
        await single.search_pooled(col, data[:1], 5)
        assert single.cost(col) > 0.0
    finally:
        single.close()


async def test_filtered_and_custom_ef_searches_answer_on_the_pool(searcher: Searcher) -> None:
    col, data = _collection()
    hits = await searcher.search(col, data[:1], 10, clauses=parse_filter({"g": 1}))
    assert hits[0] and all(int(h.id) % 3 == 1 for h in hits[0])
    wide = await searcher.search(col, data[4:5], 1, ef=300)
    assert wide[0][0].id == "4"


async def test_a_query_of_another_dimension_is_refused(searcher: Searcher) -> None:
    col, _ = _collection()
    wrong = np.zeros((1, DIM + 1), dtype=np.float32)
    with pytest.raises(NodeError, match="dimension"):
        searcher.search_inline(col, wrong, 1)
    with pytest.raises(NodeError, match="dimension"):
        await searcher.search_pooled(col, wrong, 1)
