"""The search threads and the per-query cost that decides what may run on the event loop.

The engine stores; this runs searches over the collections it holds:

- :meth:`Searcher.search_inline` on the calling thread (the event loop), a batch's rows
  sliced over waiting helper threads (:class:`~dvecdb_node.storage.parallel.Splitter`); it
  never waits for the index: a write holding it answers None, and the caller pools instead.
- :meth:`Searcher.search_pooled` on the search pool, at most one search per usable core.
- :meth:`Searcher.plan` feeds the measured cost to the pure :func:`.plan.place`.

Cost is this thread's CPU time per query row (not wall time: on a busy machine wall time grows
with the wait for a core, and would push cheap searches off the loop when it hurts most),
a moving average per collection object, measured on searches at the default ef (the only ones
planning runs inline): one for unfiltered searches (0 before any, so the first runs inline)
and one per filter (unknown before one ran pooled: a filter allowing few labels in a large
collection can cost milliseconds), the most recently used ``FILTER_COSTS`` of them.
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

from dvecdb_node.errors import dimension_mismatch
from dvecdb_node.search.plan import Placement, Query, place, runs_inline
from dvecdb_node.storage.filters import Clause
from dvecdb_node.storage.found import Rows
from dvecdb_node.storage.index import Collection
from dvecdb_node.storage.parallel import Splitter, detect_cpus, pool_threads
from dvecdb_node.storage.records import Float32Matrix

# Weight of the newest measurement in the moving average.
COST_WEIGHT = 0.1
# Filters whose cost is remembered per collection.
FILTER_COSTS = 64

FilterKey = tuple[Clause, ...]


class Costs:
    """One collection's measured CPU seconds per query row: plain, and per filter."""

    def __init__(self) -> None:
        self.plain = 0.0
        self.filters: OrderedDict[FilterKey, float] = OrderedDict()

    def get(self, clauses: list[Clause] | None) -> float | None:
        if clauses is None:
            return self.plain
        return self.filters.get(tuple(clauses))

    def add(self, clauses: list[Clause] | None, per_query: float) -> None:
        if clauses is None:
            self.plain = (1 - COST_WEIGHT) * self.plain + COST_WEIGHT * per_query
            return
        key = tuple(clauses)
        old = self.filters.get(key)
        self.filters[key] = (
            per_query if old is None else (1 - COST_WEIGHT) * old + COST_WEIGHT * per_query
        )
        self.filters.move_to_end(key)
        while len(self.filters) > FILTER_COSTS:
            self.filters.popitem(last=False)


class Searcher:
    """Runs searches inline or on its pool; ``threads`` caps the cores one search may use."""

    def __init__(self, threads: int) -> None:
        # Cores one search may spread over, from what the process may really use.
        self.parts = max(1, min(threads, detect_cpus()))
        # At most one pooled search per core: two 100-query batches time-slicing one core evict
        # each other's cache lines (about 5% more CPU per query measured, on a noisy VM).
        self._pool = ThreadPoolExecutor(self.parts, thread_name_prefix="dvec-search")
        self._splitter = Splitter(self.parts)
        self._pooled = 0  # searches submitted to the pool and not yet answered (loop thread)
        self._costs: weakref.WeakKeyDictionary[Collection, Costs] = weakref.WeakKeyDictionary()
        self._costs_lock = threading.Lock()  # measured on the loop and on the pool threads

    def cost(self, collection: Collection, clauses: list[Clause] | None = None) -> float | None:
        """Recent CPU seconds per query row of ``collection``'s searches with this filter
        (or none); None for a filter not measured yet."""
        with self._costs_lock:
            costs = self._costs.get(collection)
            if costs is None:
                return None if clauses is not None else 0.0
            return costs.get(clauses)

    def plan(self, query: Query, collection: Collection, *, waited: bool = False) -> Placement:
        cost = self.cost(collection, query.clauses)
        return place(query, collection.config.hnsw.ef_search, cost, waited=waited)

    def _measure(
        self, collection: Collection, clauses: list[Clause] | None, started: float, rows: int
    ) -> None:
        per_query = (time.thread_time() - started) / max(1, rows)
        with self._costs_lock:
            costs = self._costs.get(collection)
            if costs is None:
                costs = self._costs[collection] = Costs()
            costs.add(clauses, per_query)

    @staticmethod
    def _check_dimension(collection: Collection, queries: Float32Matrix) -> None:
        dimension = collection.config.dimension
        if queries.ndim != 2 or queries.shape[1] != dimension:
            raise dimension_mismatch(dimension, int(queries.shape[-1]))

    def search_inline(
        self,
        collection: Collection,
        queries: Float32Matrix,
        k: int,
        clauses: list[Clause] | None = None,
    ) -> Rows | None:
        """Search at the default ef now, or None if a write holds the index (never blocks).

        The calling thread's CPU time covers the rows it searched itself (all, or the first
        slice of a split batch; filtered batches are not split): that is what is measured.
        """
        self._check_dimension(collection, queries)
        started = time.thread_time()
        splitter = self._splitter if clauses is None else None
        rows = collection.try_search_now(queries, k, splitter, clauses)
        if rows is not None:
            own = len(queries) if splitter is None else splitter.own_rows(len(queries))
            self._measure(collection, clauses, started, own)
        return rows

    async def search_pooled(
        self,
        collection: Collection,
        queries: Float32Matrix,
        k: int,
        *,
        ef: int | None = None,
        clauses: list[Clause] | None = None,
    ) -> Rows:
        """Search on the pool: alone a search spreads over every core, beside others it
        takes one (:func:`~dvecdb_node.storage.parallel.pool_threads`)."""
        self._check_dimension(collection, queries)
        threads = pool_threads(self.parts, self._pooled)
        # A filtered search runs on this thread alone; an unfiltered one spread over hnswlib's
        # threads would be undercounted (this thread's CPU time misses theirs).
        measured = (clauses is not None or threads == 1) and (
            ef is None or ef == collection.config.hnsw.ef_search
        )

        def run() -> Rows:
            started = time.thread_time()
            rows = collection.search(queries, k, ef=ef, clauses=clauses, threads=threads)
            if measured:
                self._measure(collection, clauses, started, len(queries))
            return rows

        self._pooled += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, run)
        finally:
            self._pooled -= 1

    async def search(
        self,
        collection: Collection,
        queries: Float32Matrix,
        k: int,
        *,
        ef: int | None = None,
        clauses: list[Clause] | None = None,
    ) -> Rows:
        """Inline when the plan allows and the index is free, else on the pool."""
        default_ef = collection.config.hnsw.ef_search
        cost = self.cost(collection, clauses)
        if runs_inline(len(queries), ef, default_ef, cost):
            rows = self.search_inline(collection, queries, k, clauses)
            if rows is not None:
                return rows
        return await self.search_pooled(collection, queries, k, ef=ef, clauses=clauses)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._splitter.close()
