"""Benchmark data sets, exact ground truth and recall.

Uniform random vectors make HNSW recall meaningless (every neighbour is about as far as every
other), so the synthetic set is clustered: points are Gaussian blobs around random centres, and
the queries come from the same mixture but are never in the base set. Ground truth is exact
brute force in float64 blocks so recall@10 is measured, not assumed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt

Metric = Literal["l2", "cosine", "ip"]
F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Base vectors, held-out queries and their exact top-k neighbours (row indices)."""

    name: str
    description: str
    metric: Metric
    base: F32
    queries: F32
    ground_truth: I64

    @property
    def dimension(self) -> int:
        return int(self.base.shape[1])

    @property
    def size(self) -> int:
        return int(self.base.shape[0])


def clustered(
    *, n: int, dim: int = 128, n_queries: int = 1000, clusters: int = 1000, seed: int = 7
) -> tuple[F32, F32]:
    """Draw `n` base vectors and `n_queries` queries from one Gaussian mixture.

    The spread inside a cluster (sigma 1 per axis) matches the spread of the centres, so
    clusters overlap and a query's true neighbours straddle several of them: hard enough that
    recall depends on `ef` (about 0.99 at M 16, ef_construction 100, ef 64 on 100,000).
    """
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim), dtype=np.float32)
    spread = np.float32(1.0)

    def draw(count: int) -> F32:
        which = rng.integers(0, clusters, size=count)
        noise = rng.standard_normal((count, dim), dtype=np.float32) * spread
        out: F32 = (centres[which] + noise).astype(np.float32)
        return out

    return draw(n), draw(n_queries)


def exact_knn(base: F32, queries: F32, *, k: int, metric: Metric, block: int = 256) -> I64:
    """Exact top-k row indices by brute force, nearest first (ties broken by index)."""
    if metric == "cosine":
        base = normalise(base)
        queries = normalise(queries)
    base64 = base.astype(np.float64)
    base_sq = np.einsum("ij,ij->i", base64, base64)
    out = np.empty((queries.shape[0], k), dtype=np.int64)
    for start in range(0, queries.shape[0], block):
        q = queries[start : start + block].astype(np.float64)
        dots = q @ base64.T
        # l2: |q|^2 is constant per row and does not change the order.
        score = base_sq[None, :] - 2.0 * dots if metric == "l2" else -dots
        part = np.argpartition(score, k, axis=1)[:, :k]
        part_scores = np.take_along_axis(score, part, axis=1)
        order = np.lexsort((part, part_scores), axis=1)
        out[start : start + block] = np.take_along_axis(part, order, axis=1)
    return out


def normalise(x: F32) -> F32:
    """Unit-length rows (zero rows stay zero)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    out: F32 = (x / norms).astype(np.float32)
    return out


def recall_at_k(found: Sequence[Sequence[int]], truth: I64, *, k: int = 10) -> float:
    """Mean fraction of the true top-k present in each returned top-k list."""
    if len(found) != truth.shape[0]:
        raise ValueError(f"{len(found)} result lists for {truth.shape[0]} queries")
    hits = 0
    for row, expected in zip(found, truth, strict=True):
        hits += len(set(row[:k]) & {int(i) for i in expected[:k]})
    return float(hits / (truth.shape[0] * k))


def make_clustered(*, n: int, n_queries: int, dim: int = 128, k: int = 10) -> Dataset:
    """The main synthetic set with its exact ground truth."""
    base, queries = clustered(n=n, dim=dim, n_queries=n_queries)
    truth = exact_knn(base, queries, k=k, metric="l2")
    return Dataset(
        name=f"clustered-{n // 1000}k-{dim}d",
        description=(
            f"{n:,} vectors, {dim}-d, Gaussian mixture of 1,000 clusters (sigma 1.0), "
            f"{n_queries:,} held-out queries, metric l2"
        ),
        metric="l2",
        base=base,
        queries=queries,
        ground_truth=truth,
    )
