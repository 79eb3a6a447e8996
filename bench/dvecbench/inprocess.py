"""The in-process hnswlib baseline every HTTP figure is divided by.

It runs in the benchmark's own process on the same CPUs the server gets (`pinned`), with the
same HNSW parameters and thread count, so a ratio measures what the server adds on top of the
library: HTTP, JSON, the WAL and the event loop.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Iterator

import hnswlib
import numpy as np

from dvecbench.datasets import Dataset, recall_at_k
from dvecbench.stats import Latency, latency_summary


@dataclasses.dataclass(frozen=True)
class HnswParams:
    """The HNSW parameters shared by every engine in one run."""

    m: int = 16
    ef_construction: int = 100
    ef_search: int = 64
    k: int = 10


@contextlib.contextmanager
def pinned(cpus: frozenset[int] | None) -> Iterator[None]:
    """Run the block (and threads it starts) on `cpus`, then restore the old affinity.

    Linux applies the mask to the calling thread and new threads inherit it, which is what
    hnswlib's per-call worker threads do.
    """
    if not cpus:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


@dataclasses.dataclass(frozen=True)
class BuildResult:
    index: hnswlib.Index
    seconds: float
    rate: float
    cpu_us_per_vector: float


def build(ds: Dataset, params: HnswParams, *, threads: int) -> BuildResult:
    """`add_items` of the whole base set in one call; the rate is vectors per second."""
    index = hnswlib.Index(space=ds.metric, dim=ds.dimension)
    index.init_index(max_elements=ds.size, M=params.m, ef_construction=params.ef_construction)
    labels = np.arange(ds.size, dtype=np.int64)
    cpu_started = time.process_time()
    started = time.perf_counter()
    index.add_items(ds.base, labels, num_threads=threads)
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    index.set_ef(params.ef_search)
    return BuildResult(
        index=index, seconds=seconds, rate=ds.size / seconds, cpu_us_per_vector=cpu / ds.size * 1e6
    )


@dataclasses.dataclass(frozen=True)
class SearchResult:
    qps: float
    latency: Latency | None
    recall: float
    queries: int
    cpu_us_per_query: float


def single(
    index: hnswlib.Index, ds: Dataset, params: HnswParams, *, seconds: float
) -> SearchResult:
    """One query per call on one thread, for at least `seconds` and one pass over the queries."""
    labels, _ = index.knn_query(ds.queries, k=params.k, num_threads=1)
    recall = recall_at_k(labels.tolist(), ds.ground_truth, k=params.k)
    samples: list[int] = []
    clock = time.perf_counter_ns
    deadline = clock() + int(seconds * 1e9)
    cpu_started = time.process_time()
    started = clock()
    while True:
        for q in ds.queries:
            t0 = clock()
            index.knn_query(q, k=params.k, num_threads=1)
            samples.append(clock() - t0)
        if clock() >= deadline:
            break
    total = (clock() - started) / 1e9
    cpu = time.process_time() - cpu_started
    return SearchResult(
        qps=len(samples) / total,
        latency=latency_summary([s / 1e6 for s in samples]),
        recall=recall,
        queries=len(samples),
        cpu_us_per_query=cpu / len(samples) * 1e6,
    )


def batched(
    index: hnswlib.Index,
    ds: Dataset,
    params: HnswParams,
    *,
    threads: int,
    batch: int,
    seconds: float,
) -> SearchResult:
    """`knn_query` on `batch` queries per call with `threads` threads; QPS counts queries."""
    found: list[list[int]] = []
    done = 0
    deadline = time.perf_counter() + seconds
    cpu_started = time.process_time()
    started = time.perf_counter()
    first_pass = True
    while first_pass or time.perf_counter() < deadline:
        for start in range(0, len(ds.queries), batch):
            labels, _ = index.knn_query(
                ds.queries[start : start + batch], k=params.k, num_threads=threads
            )
            done += labels.shape[0]
            if first_pass:
                found.extend(labels.tolist())
        first_pass = False
    total = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    return SearchResult(
        qps=done / total,
        latency=None,
        recall=recall_at_k(found, ds.ground_truth, k=params.k),
        queries=done,
        cpu_us_per_query=cpu / done * 1e6,
    )
