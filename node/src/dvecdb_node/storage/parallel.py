"""Searching one batch of query rows on several cores at once.

hnswlib releases the GIL inside ``knn_query``, so rows searched on different threads really
run in parallel. Two ways, for two sizes:

- hnswlib's own ``num_threads`` starts threads per call and declines batches of at most four
  rows per thread: right for large batch requests, which run on the search pool anyway.
- :class:`Splitter` keeps helper threads waiting and lets the calling thread search the first
  slice itself while they search the others: right for the handful of single-vector requests
  the fast lane answers together on the event loop, where a thread per call costs more than
  the rows. The caller waits for all slices before it returns, so the index is never read
  after the caller's read hold ends.

How many cores is decided once, from what the process may really use (:func:`usable_cpus`).
The search pool runs at most that many searches at once (:func:`pool_threads`).
"""

from __future__ import annotations

import math
import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from dvecdb_node.storage.records import Float32Matrix

# Below two rows a slice, waking a helper thread (0.05-0.15 ms on a VM) costs about as much
# as it saves.
MIN_ROWS_PER_SLICE = 2
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")

KnnResult = tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]


def usable_cpus(affinity: int, cpu_max: str | None) -> int:
    """Cores this process can keep busy: its CPU affinity, capped by a cgroup v2 quota.

    ``cpu_max`` is the text of ``cpu.max`` ("max 100000" or "<quota> <period>"); a Kubernetes
    CPU limit shows there, not in the affinity mask, which lists all the node's cores.
    """
    cpus = max(1, affinity)
    if cpu_max:
        fields = cpu_max.split()
        if len(fields) == 2 and fields[0] != "max":
            try:
                quota, period = int(fields[0]), int(fields[1])
            except ValueError:
                return cpus
            if quota > 0 and period > 0:
                cpus = min(cpus, max(1, math.ceil(quota / period)))
    return cpus


def detect_cpus() -> int:
    """:func:`usable_cpus` for this process."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        affinity = os.cpu_count() or 1
    try:
        cpu_max: str | None = CGROUP_CPU_MAX.read_text()
    except OSError:
        cpu_max = None
    return usable_cpus(affinity, cpu_max)


def pool_threads(cores: int, in_flight: int) -> int:
    """hnswlib threads for one search on the search pool, given the searches already there.

    Alone, a search spreads over every core. Beside others it takes one: the pool runs at
    most ``cores`` searches, so each then has a core, and no core time-slices two searches
    that evict each other's cache lines.
    """
    return cores if in_flight == 0 else 1


def slice_bounds(rows: int, parts: int) -> list[tuple[int, int]]:
    """Split ``rows`` into at most ``parts`` slices of at least MIN_ROWS_PER_SLICE, in order."""
    parts = max(1, min(parts, rows // MIN_ROWS_PER_SLICE))
    edges = [rows * i // parts for i in range(parts + 1)]
    return [(edges[i], edges[i + 1]) for i in range(parts)]


class Splitter:
    """Searches a batch on the calling thread plus ``parts - 1`` waiting helper threads."""

    def __init__(self, parts: int) -> None:
        self.parts = max(1, parts)
        self._pool = (
            ThreadPoolExecutor(self.parts - 1, thread_name_prefix="dvec-split")
            if self.parts > 1
            else None
        )

    def own_rows(self, rows: int) -> int:
        """How many of ``rows`` the calling thread searches itself."""
        if self._pool is None or rows < 2 * MIN_ROWS_PER_SLICE:
            return rows
        lo, hi = slice_bounds(rows, self.parts)[0]
        return hi - lo

    def knn(self, index: Any, queries: Float32Matrix, k: int) -> KnnResult:
        """``index.knn_query(queries, k)`` at the index's ef, sliced across threads."""
        if self._pool is None or len(queries) < 2 * MIN_ROWS_PER_SLICE:
            return index.knn_query(queries, k, 1)  # type: ignore[no-any-return]
        bounds = slice_bounds(len(queries), self.parts)
        futures: list[Future[KnnResult]] = [
            self._pool.submit(index.knn_query, queries[lo:hi], k, 1) for lo, hi in bounds[1:]
        ]
        try:
            lo, hi = bounds[0]
            first: KnnResult = index.knn_query(queries[lo:hi], k, 1)
        finally:
            # Every slice must be over before the caller drops its hold on the index.
            results = [_settled(f) for f in futures]
        parts = [first]
        for outcome in results:
            if isinstance(outcome, BaseException):
                raise outcome
            parts.append(outcome)
        return (
            np.concatenate([labels for labels, _ in parts]),
            np.concatenate([distances for _, distances in parts]),
        )

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)


def _settled(future: Future[KnnResult]) -> KnnResult | BaseException:
    exc = future.exception()
    return exc if exc is not None else future.result()
