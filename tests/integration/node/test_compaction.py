"""A collection refilled after deleting half of it (what a resharding purge and a later move
back do to a group) searches as well as one built fresh on the same data, and refills at
about the rate it was filled: the tombstones are compacted away, so the new ids' labels are
inserted, not overwritten in place (issue #13).

In-process on real hnswlib (no servers): at 20,000 vectors the measured gap is small, so the
test runs at the size of the issue, which takes tens of seconds; hence this tier.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from dvecbench.datasets import clustered, exact_knn
from dvecdb_node.storage.index import Collection
from dvecdb_node.storage.records import CollectionConfig, HnswParams

pytestmark = pytest.mark.integration

N = 20_000
DIM = 64
BATCH = 1000
# Recall of the refilled collection against exact search, next to a fresh one on the same final
# data. Before compaction (main, 3 seeds) the refilled one trailed by 0.012-0.017 at ef 16 and
# 0.015-0.021 at ef 12, within 0.004 at ef 64; with it, within 0.0003 everywhere.
EFS = (64, 16)
RECALL_SLACK = 0.005
# Refill rate over fill rate, by the process's CPU time: 0.14-0.28 before (each reused label
# went through hnswlib's updatePoint with neighbour repair), 0.6-2 after. Loose on purpose.
MIN_RATE_RATIO = 0.45


def _fill(col: Collection, ids: list[str], vectors: np.ndarray) -> float:
    """Upsert in batches; returns vectors per CPU second of this process."""
    began = time.process_time()
    for start in range(0, len(ids), BATCH):
        stop = start + BATCH
        col.upsert(ids[start:stop], vectors[start:stop], [None] * len(ids[start:stop]))
    return len(ids) / (time.process_time() - began)


def _recall(col: Collection, queries: np.ndarray, truth: list[set[str]], ef: int) -> float:
    rows = col.search(queries, 10, ef=ef)
    return sum(len({h.id for h in row} & want) for row, want in zip(rows, truth, strict=True)) / (
        10 * len(queries)
    )


def test_a_half_deleted_and_refilled_collection_searches_like_a_fresh_one() -> None:
    base, queries = clustered(n=N + N // 2, dim=DIM, n_queries=500, clusters=200, seed=2)
    config = CollectionConfig("c", DIM, "l2", HnswParams())
    col = Collection(config)
    ids = [f"a{i}" for i in range(N)]
    fill_rate = _fill(col, ids, base[:N])
    col.delete(ids[::2])
    assert col.wait_compacted(300)
    refill_ids = [f"b{i}" for i in range(N // 2)]
    refill_rate = _fill(col, refill_ids, base[N:])
    assert col.wait_compacted(300)

    final_ids = ids[1::2] + refill_ids
    final = np.concatenate([base[:N][1::2], base[N:]])
    fresh = Collection(config)
    _fill(fresh, final_ids, final)
    exact = exact_knn(final, queries, k=10, metric="l2")
    truth = [{final_ids[i] for i in row} for row in exact.tolist()]
    recalls = {
        ef: (_recall(col, queries, truth, ef), _recall(fresh, queries, truth, ef)) for ef in EFS
    }
    ratio = refill_rate / fill_rate
    print(f"recall@10 (refilled, fresh) by ef: {recalls}; refill/fill rate {ratio:.2f}")
    for refilled, built in recalls.values():
        assert refilled >= built - RECALL_SLACK, recalls
    assert ratio >= MIN_RATE_RATIO, (fill_rate, refill_rate)
