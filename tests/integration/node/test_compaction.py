"""Compaction of a collection's hnswlib index (issue #13).

A collection refilled after deleting half of it (what a resharding purge and a later move back
do to a group) searches as well as one built fresh on the same data, and refills at about the
rate it was filled: the tombstones are compacted away, so the new ids' labels are inserted, not
overwritten in place. The refill runs in-process on real hnswlib at the size of the issue (the
gap is small there), which takes tens of seconds, hence this tier; the restart test runs a real
node.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

from dvecbench.datasets import clustered, exact_knn
from dvecdb_node.storage.index import Collection
from dvecdb_node.storage.records import CollectionConfig, HnswParams
from tests.conftest import NodeFactory, NodeProcess

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


def _metric(node: NodeProcess, name: str) -> float:
    status, text = node.request("GET", "/metrics")
    assert status == 200
    for line in text.splitlines():
        if line.startswith(f'{name}{{collection="c"}}'):
            return float(line.split()[-1])
    raise AssertionError(f"no {name} in /metrics")


def test_a_compacted_collection_survives_a_checkpoint_and_restart(
    node_factory: NodeFactory,
) -> None:
    """A real node compacts after a large delete, keeps serving, checkpoints at shutdown and
    comes back with the same items, the same answers and its tombstones where they were."""
    node = node_factory(args=["--fsync", "batch"])
    status, _ = node.request(
        "POST", "/v1/collections", {"name": "c", "dimension": 16, "metric": "l2"}
    )
    assert status == 201
    rng = np.random.default_rng(5)
    data = rng.random((4000, 16), dtype=np.float32)

    def upsert(names: list[str], rows: np.ndarray) -> None:
        for start in range(0, len(names), 500):
            batch = [
                {"id": item_id, "vector": row.tolist(), "metadata": {"n": item_id}}
                for item_id, row in zip(
                    names[start : start + 500], rows[start : start + 500], strict=True
                )
            ]
            status, body = node.request("PUT", "/v1/collections/c/vectors", {"vectors": batch})
            assert status == 200, body

    def delete(names: list[str]) -> None:
        status, body = node.request("POST", "/v1/collections/c/vectors/delete", {"ids": names})
        assert status == 200, body

    ids = [f"a{i}" for i in range(3000)]
    upsert(ids, data[:3000])
    delete(ids[:2000])
    deadline = time.monotonic() + 60
    while _metric(node, "dvecdb_index_compactions_total") < 1:
        assert time.monotonic() < deadline, "no compaction"
        time.sleep(0.2)
    assert _metric(node, "dvecdb_index_tombstones") == 0
    upsert([f"b{i}" for i in range(1000)], data[3000:])  # into the labels compacted away
    delete(ids[2000:2100])  # tombstones again, below the threshold
    assert _metric(node, "dvecdb_index_tombstones") == 100

    queries = rng.random((30, 16), dtype=np.float32).tolist()

    def answers() -> list[list[str]]:
        status, body = node.request(
            "POST", "/v1/collections/c/search", {"vectors": queries, "k": 10}
        )
        assert status == 200, body
        return [[hit["id"] for hit in row] for row in body["results"]]

    def item(item_id: str) -> Any:
        status, body = node.request("GET", f"/v1/collections/c/vectors/{item_id}")
        return status, body

    before = answers()
    items = {i: item(i) for i in ("a2100", "a2999", "b0", "b999", "a5", "a2050")}
    assert items["a5"][0] == 404 and items["a2050"][0] == 404 and items["b0"][0] == 200
    assert node.stop() == 0
    node.start()
    assert "compacted c in" in node.log()
    assert _metric(node, "dvecdb_collection_vectors") == 1900
    assert _metric(node, "dvecdb_index_tombstones") == 100
    assert answers() == before
    assert {i: item(i) for i in items} == items
    upsert([f"c{i}" for i in range(200)], data[:200])  # reuses labels after the restart
    status, body = node.request("GET", "/v1/collections/c")
    assert status == 200 and body["count"] == 2100
