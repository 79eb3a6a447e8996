"""A Hypothesis state machine: random upserts, deletes, checkpoints, restarts and crashes
against a dict model. After every step the counts match, every stored vector reads back
exactly, a search for it finds itself first, and a metadata filter finds exactly the ids whose
metadata match."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from dvecdb_node.storage.engine import Engine, EngineOptions, FsyncMode
from dvecdb_node.storage.filters import parse_filter
from dvecdb_node.storage.records import CollectionConfig, CreateCollection, DeleteBatch, UpsertBatch

pytestmark = pytest.mark.unit
DIM = 4
IDS = st.sampled_from([f"id{i}" for i in range(12)])


def _vector(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)


class EngineMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.root = Path(tempfile.mkdtemp(prefix="dvec-sm-"))
        self.generation = 0
        self.model: dict[str, tuple[np.ndarray, dict[str, Any] | None]] = {}
        self.engine = self._open(self.root / "g0")
        self.run(self.engine.submit(CreateCollection(CollectionConfig("c", DIM, "l2")), epoch=1))

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def _open(self, path: Path) -> Engine:
        engine = Engine(path, EngineOptions(fsync=FsyncMode.BATCH, segment_bytes=2048))
        self.run(engine.recover())
        return engine

    @rule(
        items=st.lists(
            st.tuples(IDS, st.integers(0, 10**6), st.none() | st.integers(0, 3)),
            min_size=1,
            max_size=6,
            unique_by=lambda t: t[0],
        )
    )
    def upsert(self, items: list[tuple[str, int, int | None]]) -> None:
        ids = [i for i, _, _ in items]
        vectors = np.stack([_vector(seed) for _, seed, _ in items])
        metadata = [None if g is None else {"g": g} for _, _, g in items]
        self.run(self.engine.submit(UpsertBatch("c", ids, vectors, metadata), epoch=1))
        for item_id, vector, meta in zip(ids, vectors, metadata, strict=True):
            self.model[item_id] = (vector, meta)

    @rule(ids=st.lists(IDS, min_size=1, max_size=4, unique=True))
    def delete(self, ids: list[str]) -> None:
        result = self.run(self.engine.submit(DeleteBatch("c", ids), epoch=1))
        assert result.count == sum(1 for i in ids if i in self.model)
        for item_id in ids:
            self.model.pop(item_id, None)

    @rule()
    def checkpoint(self) -> None:
        self.run(self.engine.checkpoint())

    @rule()
    def restart(self) -> None:
        path = self.engine.data_dir
        self.run(self.engine.close())
        self.engine = self._open(path)

    @rule()
    def crash(self) -> None:
        """Reopen a copy of the files as they are now, as a SIGKILL would leave them."""
        self.generation += 1
        copy = self.root / f"g{self.generation}"
        shutil.copytree(self.engine.data_dir, copy)
        self.run(self.engine.close())
        self.engine = self._open(copy)

    @invariant()
    def matches_model(self) -> None:
        collection = self.engine.collection("c")
        assert collection.count == len(self.model)
        assert self.engine.applied_seq == self.engine.last_seq == self.engine.durable_seq
        for item_id, (vector, meta) in self.model.items():
            found = collection.get(item_id)
            assert found is not None
            assert np.array_equal(found[0], vector) and found[1] == meta
            hit = collection.search(vector[None, :], 1)[0][0]
            assert hit.distance == pytest.approx(0.0, abs=1e-5)
            assert hit.id == item_id or np.array_equal(self.model[hit.id][0], vector)
            if meta is not None:
                clauses = parse_filter({"g": meta["g"]})
                hits = collection.search(vector[None, :], 20, clauses=clauses)[0]
                expected = {i for i, (_, m) in self.model.items() if m == meta}
                assert {h.id for h in hits} == expected  # k=20 covers every match

    def teardown(self) -> None:
        self.run(self.engine.close())
        self.loop.close()
        shutil.rmtree(self.root, ignore_errors=True)


TestEngineStateMachine = EngineMachine.TestCase
TestEngineStateMachine.settings = settings(
    max_examples=25,
    stateful_step_count=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
