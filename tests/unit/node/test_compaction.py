"""Online compaction of a collection's hnswlib index (storage.compaction), on real hnswlib:
tombstones dropped with labels kept, freed labels reused by a plain insert, writes and
searches racing a compaction, checkpoints of a compacted collection, old checkpoints."""

from __future__ import annotations

import logging
import random
import threading
import time
from pathlib import Path

import numpy as np
import orjson
import pytest

from dvecdb_node.storage import compaction
from dvecdb_node.storage.filters import parse_filter
from dvecdb_node.storage.index import Collection
from dvecdb_node.storage.records import CollectionConfig, HnswParams

pytestmark = pytest.mark.unit

DIM = 16


@pytest.fixture(autouse=True)
def _small_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compaction, "COMPACT_MIN_TOMBSTONES", 64)


def _collection(n: int) -> Collection:
    return Collection(CollectionConfig("c", DIM, "l2", HnswParams(16, 100, 64)), n)


def _vectors(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, DIM), dtype=np.float32)


def _filled(n: int) -> tuple[Collection, list[str], np.ndarray]:
    col = _collection(n)
    data = _vectors(n)
    ids = [f"a{i}" for i in range(n)]
    col.upsert(ids, data, [{"g": i % 5} for i in range(n)])
    return col, ids, data


def test_due_needs_the_floor_and_a_share_of_the_live_count() -> None:
    floor = compaction.COMPACT_MIN_TOMBSTONES
    assert not compaction.due(floor - 1, 0)
    assert compaction.due(floor, 0)
    assert not compaction.due(floor * 10, floor * 21)
    assert compaction.due(floor * 10, floor * 20)


def test_compaction_drops_tombstones_keeps_labels_and_reuses_freed_labels_by_insert() -> None:
    col, ids, data = _filled(2000)
    labels_before = dict(col._labels)
    capacity = col.capacity
    col.delete(ids[::2])
    assert col.wait_compacted(60)
    assert col.compactions == 1 and col.tombstones == 0
    assert col._index.element_count == 1000  # the deleted elements are gone from the graph
    kept = ids[1::2]
    assert {i: col._labels[i] for i in kept} == {i: labels_before[i] for i in kept}
    for i in range(1, 2000, 98):  # kept (odd) ones
        got = col.get(ids[i])
        assert got is not None and np.array_equal(got[0], data[i]) and got[1] == {"g": i % 5}
    rows = col.search(data[1::2][:50], 1)
    assert [row[0].id for row in rows] == kept[:50]
    assert not {h.id for row in col.search(data[::2][:50], 10) for h in row} & set(ids[::2])
    filtered = col.search(data[1:2], 10, clauses=parse_filter({"g": 1}))[0]
    assert filtered and all(col.metadata_of(h.label) == {"g": 1} for h in filtered)
    # The freed labels are absent now: new ids take them with a plain insert.
    fresh = _vectors(1000, seed=5)
    col.upsert([f"b{i}" for i in range(1000)], fresh, [None] * 1000)
    assert col.capacity == capacity and col.tombstones == 0
    assert col._index.element_count == 2000 and len(col._absent) == 0
    assert [row[0].id for row in col.search(fresh[:50], 1)] == [f"b{i}" for i in range(50)]


def test_a_swap_invalidates_cached_filter_selections() -> None:
    """Small filters are scanned by hnswlib internal ids cached per write version; the new
    index numbers its elements anew."""
    col, ids, data = _filled(2000)
    query = data[3:4]
    clauses = parse_filter({"g": 3})
    before = [h.id for h in col.search(query, 5, clauses=clauses)[0]]
    survivors = [i for n, i in enumerate(ids) if n % 5 == 3 or n % 2]
    col.delete([i for i in ids if i not in set(survivors)])
    assert col.wait_compacted(60) and col.compactions == 1
    after = [h.id for h in col.search(query, 5, clauses=clauses)[0]]
    assert after == before


def test_writes_searches_and_gets_racing_compactions(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """One writer upserts (new and existing ids) and deletes while compactions build in small
    steps; searchers and getters check every answer. Afterwards the collection holds exactly
    what the writer's model says: no write lost, none resurrected."""
    monkeypatch.setattr(compaction, "BUILD_CHUNK", 64)
    monkeypatch.setattr(compaction, "FINISH_PENDING", 8)
    caplog.set_level(logging.INFO, logger="dvecdb_node.storage.index")
    n = 3000
    col, ids, data = _filled(n)
    model: dict[str, tuple[np.ndarray, dict[str, int] | None]] = {
        i: (data[k], {"g": k % 5}) for k, i in enumerate(ids)
    }
    ever = set(ids)
    stop = threading.Event()
    errors: list[str] = []
    rng = random.Random(3)

    def writer() -> None:
        step = 0
        try:
            while col.compactions < 3 or step < 40:
                step += 1
                live = list(model)
                gone = rng.sample(live, min(len(live) - 200, rng.randint(40, 400)))
                col.delete(gone)
                for item_id in gone:
                    del model[item_id]
                new = [f"s{step}_{j}" for j in range(rng.randint(20, 300))]
                updated = rng.sample(list(model), 50)
                batch = new + updated
                vectors = _vectors(len(batch), seed=step + 100)
                metadata: list[dict[str, int] | None] = [
                    {"g": j % 5} if j % 3 else None for j in range(len(batch))
                ]
                ever.update(new)
                col.upsert(batch, vectors, list(metadata))
                for item_id, vector, meta in zip(batch, vectors, metadata, strict=True):
                    model[item_id] = (vector, meta)
                if step > 2000:
                    errors.append("no three compactions in 2000 steps")
                    return
        except Exception as exc:  # reported below
            errors.append(f"writer: {exc!r}")
        finally:
            stop.set()

    def searcher(seed: int) -> None:
        queries = _vectors(8, seed=seed)
        clauses = parse_filter({"g": 2})
        try:
            while not stop.is_set():
                for row in col.search(queries, 10):
                    found = [h.id for h in row]
                    if len(set(found)) != len(found) or not set(found) <= ever:
                        errors.append(f"bad row {found}")
                for row in col.search(queries, 10, clauses=clauses):
                    for hit in row:
                        if col.metadata_of(hit.label) not in ({"g": 2}, None):
                            errors.append(f"filter broken: {hit}")
                item_id = rng.choice(sorted(ever))
                got = col.get(item_id)
                if got is not None and got[0].shape != (DIM,):
                    errors.append(f"bad get {item_id}")
        except Exception as exc:
            errors.append(f"searcher: {exc!r}")

    threads = [threading.Thread(target=writer)] + [
        threading.Thread(target=searcher, args=(s,)) for s in (1, 2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not any(t.is_alive() for t in threads)
    assert col.wait_compacted(60)
    assert not errors, errors[:5]
    assert col.compactions >= 3
    replayed = [r.args[4] for r in caplog.records if r.msg.startswith("compacted")]
    assert any(replayed), replayed  # writes did land while a compaction built
    assert sorted(col.ids()) == sorted(model)
    for item_id, (vector, meta) in model.items():
        got = col.get(item_id)
        assert got is not None and np.array_equal(got[0], vector) and got[1] == meta, item_id
    everything = col.search(_vectors(1, seed=9), col.count)[0]
    assert sorted(h.id for h in everything) == sorted(model)
    sample = rng.sample(sorted(model), 200)
    rows = col.search(np.stack([model[i][0] for i in sample]), 1)
    assert [row[0].id for row in rows] == sample
    # The index holds the live elements plus the tombstones it lists, nothing else.
    assert col._index.element_count == col.count + col.tombstones


def test_a_compacted_collection_checkpoints_and_loads_the_same(tmp_path: Path) -> None:
    col, ids, _ = _filled(2000)
    col.delete(ids[:1200])
    assert col.wait_compacted(60) and col.compactions == 1
    col.delete(ids[1200:1210])  # ten tombstones after the compaction
    col.save(tmp_path / "c")
    loaded = Collection.load(tmp_path / "c")
    assert loaded.tombstones == 10 and sorted(loaded._absent) == sorted(col._absent)
    assert sorted(loaded.ids()) == sorted(col.ids())
    queries = _vectors(100, seed=4)
    assert [[h.id for h in r] for r in loaded.search(queries, 10)] == [
        [h.id for h in r] for r in col.search(queries, 10)
    ]
    # Reusing labels after the load: the absent ones by insert, with no error.
    fresh = _vectors(1210, seed=6)
    loaded.upsert([f"b{i}" for i in range(1210)], fresh, [None] * 1210)
    assert loaded.count == 2000 and loaded.capacity == col.capacity
    assert [r[0].id for r in loaded.search(fresh[:30], 1)] == [f"b{i}" for i in range(30)]


def test_checkpoints_from_before_compaction_load_and_get_compacted(tmp_path: Path) -> None:
    """Old checkpoints list every free label under "free"; which are in the index is read
    from the index. One holding many tombstones is compacted once loaded."""
    col, ids, data = _filled(2000)
    col.delete(ids[:100])
    col.save(tmp_path / "few")
    state = orjson.loads((tmp_path / "few" / "state.json").read_bytes())
    del state["absent"]
    (tmp_path / "few" / "state.json").write_bytes(orjson.dumps(state))
    few = Collection.load(tmp_path / "few")
    assert few.tombstones == 100 and few._absent == [] and few.compactions == 0
    few.upsert(["x"], data[:1], [None])  # a tombstone reused in place, as before
    assert few.tombstones == 99

    col.delete(ids[100:1500])
    assert col.wait_compacted(60)
    col.save(tmp_path / "many")
    state = orjson.loads((tmp_path / "many" / "state.json").read_bytes())
    state["free"] = state["free"] + state.pop("absent")  # as an old build wrote it
    (tmp_path / "many" / "state.json").write_bytes(orjson.dumps(state))
    many = Collection.load(tmp_path / "many")
    assert many.tombstones == 0 and len(many._absent) == 1500
    many.upsert(["y"], data[:1], [None])
    assert many.get("y") is not None


def test_an_old_index_full_of_tombstones_is_compacted_once_loaded(tmp_path: Path) -> None:
    col, ids, _ = _filled(2000)
    col.close()  # no compaction here: the saved index keeps its tombstones
    col.delete(ids[:1500])
    assert col.tombstones == 1500 and col.compactions == 0
    col.save(tmp_path / "c")
    loaded = Collection.load(tmp_path / "c")
    assert loaded.wait_compacted(60)
    assert loaded.compactions == 1 and loaded.tombstones == 0 and len(loaded._absent) == 1500


def test_closing_stops_a_running_compaction(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compaction, "BUILD_CHUNK", 16)
    col, ids, _ = _filled(3000)
    index = col._index
    col.delete(ids[:2000])
    assert col.compacting
    col.close()
    started = time.monotonic()
    assert col.wait_compacted(30)
    assert time.monotonic() - started < 10
    assert col._index is index and col.compactions == 0 and not col.compacting


def test_a_new_id_overwrites_a_tombstone_only_when_the_index_is_full() -> None:
    col = _collection(64)
    col.upsert([f"a{i}" for i in range(40)], _vectors(40), [None] * 40)
    col.delete(["a0", "a1"])
    col.upsert(["b0", "b1"], _vectors(2, seed=1), [None] * 2)  # room left: unused labels
    assert col.tombstones == 2 and col.label_span == 42
    col.upsert([f"c{i}" for i in range(24)], _vectors(24, seed=2), [None] * 24)
    assert col.capacity == 64 and col.tombstones == 0  # 22 unused labels, then the tombstones
    assert col._index.element_count == 64 and col.count == 64
