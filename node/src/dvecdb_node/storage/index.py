"""One collection in memory: an hnswlib index plus string ids, metadata and raw vectors.

Why keep the raw vectors beside hnswlib: hnswlib normalises cosine vectors on insert, so a
``get`` must not read them back from the index; the matrix also answers small filtered
searches exactly by brute force.

Labels: each live id owns one hnswlib label. A delete marks the label deleted and puts it on a
free list; new ids reuse free labels, so deletes do not grow the index. A free label is either
still in the index as a deleted element (a tombstone: reusing it overwrites the element in
place, an update) or absent from it after a compaction (:mod:`.compaction`: once tombstones
pass a threshold the index is rebuilt from the live elements at their same labels, on a thread
of its own); reusing an absent label is a plain insert, so absent ones are taken first, then
unused labels within the capacity, and tombstones only when the index is full.

Updates (a held id, or a reused label): hnswlib's ``add_items`` re-chooses the links of every
neighbour of an updated element from its two-hop neighbourhood, ~6x the cost of an insert.
:func:`.native.update_items` does that only for an element moved farther than its farthest
neighbour; nearer moves re-link just the element (its neighbours still describe where it is),
and an unchanged vector leaves the graph alone. Measured on 50,000 clustered 64-d vectors,
25,000 updates: small moves 0.13 ms each instead of 1.58 ms (recall@10 after: 0.991 instead
of 0.995); moves to random other points 0.71 ms instead of 1.09 ms (0.988 instead of 0.991).

Exact matches: a query equal to a stored vector always finds that vector first (for ``l2``
and ``cosine``, where it is the true nearest), through a hash of the raw bytes checked
against the stored copy. HNSW alone misses a fraction of a percent of self-matches on
high-dimensional data; users take "search with a stored vector returns it" for granted.

Concurrency: hnswlib's ``add_items``/``resize_index``/``mark_deleted`` are not safe beside
``knn_query`` (its authors say so: the search path takes no locks). Searches take a shared lock,
writes an exclusive one. An upsert is applied in chunks, each its own exclusive hold; while
searches are running a chunk is sized to hold the index about ``UPSERT_HOLD_SECONDS``, and
after a hold that searches waited for they get a reader phase (:class:`RWLock`) before the
next chunk, so a search waits for at most one short chunk, not for a whole batch. Capacity
grows by doubling, so a resize (a copy of the index) is rare.

Filters: a filter's allowed labels are a sorted label array and a byte mask, cached per
filter until the next write (the read lock keeps them valid while a search uses them). Few
allowed labels are searched exactly, by a scan over the vectors hnswlib stores (:mod:`.native`,
with hnswlib's own distance function) or by numpy without it; more walk the graph with the
mask checked inside hnswlib's walk, without a Python call per candidate.
"""

from __future__ import annotations

import copy as _copy
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import hnswlib
import numpy as np
import orjson

from dvecdb_node.storage import compaction, native
from dvecdb_node.storage.filters import Clause, MetadataIndex
from dvecdb_node.storage.found import Found, Hit, Rows, hit_rows
from dvecdb_node.storage.parallel import Splitter
from dvecdb_node.storage.records import CollectionConfig, Float32Matrix, Metadata
from dvecdb_node.storage.values import CATCH_UP_ROUNDS, FINISH_PENDING, ValueGraphs, ValueKey
from dvecdb_node.storage.values import build as build_value_graph
from dvecdb_node.storage.values import value_keys as _value_keys

log = logging.getLogger(__name__)

INITIAL_CAPACITY = 1024
# Largest upsert chunk (one exclusive hold; hnswlib inserts its rows on several threads).
UPSERT_CHUNK = 512
# While searches run, an upsert chunk is sized to hold the index about this long.
UPSERT_HOLD_SECONDS = 0.002
# After such a hold, readers that waited for it get this long before the next one.
READER_PHASE_SECONDS = 0.002
MIN_UPSERT_CHUNK = 8
# An upsert takes short chunks while searches came this recently (or wait now). A count of read
# holds "since the previous chunk" was not enough: with every search waiting for the writer's
# hold, none arrives during it, and the next chunk was a whole 512 (130-360 ms holds measured
# beside 4 search connections).
SEARCHED_WITHIN_SECONDS = 1.0
# updateNeighborProbability for an update that moved an element within its neighbourhood.
NEAR_UPDATE_PROBABILITY = 0.0
# A filtered search with at most brute_force_limit(count) candidates is answered exactly by
# brute force, else by the graph walk. Measured on 50,000 and 200,000 clustered 64-d vectors
# (M 16, ef 64, CPU time on one core): the compiled scan costs 16-37 ns per candidate, numpy
# ~170 ns, the filtered walk 0.02-0.07 ms per unit of count / candidates (1/7 of 50,000:
# 0.17 ms walking, 0.26 ms scanning; 1/50: 1.05 ms walking, 0.016 ms scanning), so they cross
# where candidates^2 = 1000 * count with the scan (7,000 at 50,000; 32,000 at 1,000,000) and
# 365 * count with numpy.
BRUTE_FORCE_FACTOR = 1000 if native.AVAILABLE else 365
BRUTE_FORCE_LIMIT = 1024  # at least this many candidates are always brute-forced
# Filters whose allowed labels are kept between searches (until the next write).
SELECTION_CACHE = 16


class RWLock:
    """Many readers or one writer, phase-fair: neither side starves the other.

    Waiting writers block new readers. When a writer lets go while readers wait, a reader
    phase of ``READER_PHASE_SECONDS`` opens: every reader arriving in it gets in (the search
    pool's next queued searches too, not only those already waiting), and the next writer
    waits for the phase to end and its readers to finish. With upsert chunks sized to short
    holds, searches and a back-to-back writer alternate in slices of a couple of milliseconds.
    The reader side takes the bare mutex, not the condition: searches take and drop a read
    hold on every request, and ``Condition.__enter__`` is a Python-level call. The time of the
    last read hold taken or refused tells a writer whether searches are running
    (:meth:`searched_within`).
    """

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._cond = threading.Condition(self._mutex)
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0
        self._readers_waiting = 0
        self._readers_until = 0.0  # a reader phase is open until this monotonic time
        self._last_read = -math.inf  # monotonic time of the last read hold taken or refused

    def _blocks_readers(self) -> bool:
        if self._writer:
            return True
        return self._writers_waiting > 0 and time.monotonic() >= self._readers_until

    @contextmanager
    def read(self, quiet: bool = False) -> Iterator[None]:
        """A shared hold. ``quiet``: not a search (a compaction's copy), so writers do not
        take it for one and shorten their chunks."""
        with self._cond:
            if not quiet:
                self._last_read = time.monotonic()
            if self._blocks_readers():
                self._readers_waiting += 1
                try:
                    while self._blocks_readers():
                        self._cond.wait()
                finally:
                    self._readers_waiting -= 1
            self._readers += 1
        try:
            yield
        finally:
            self.release_read()

    def try_acquire_read(self) -> bool:
        """Take a shared hold only if no writer holds or waits (outside a reader phase);
        never blocks for long."""
        with self._mutex:
            self._last_read = time.monotonic()
            if self._blocks_readers():
                return False
            self._readers += 1
            return True

    def searched_within(self, seconds: float) -> bool:
        """Whether a reader waits now, or one took or asked for a hold within ``seconds``."""
        with self._mutex:
            return self._readers_waiting > 0 or time.monotonic() - self._last_read < seconds

    def release_read(self) -> None:
        with self._mutex:
            self._readers -= 1
            if not self._readers and self._writers_waiting:
                self._cond.notify_all()  # only writers wait for the last reader

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            while True:
                if self._writer or self._readers:
                    self._cond.wait()
                    continue
                phase_left = self._readers_until - time.monotonic()
                if phase_left <= 0:
                    break
                self._cond.wait(phase_left)
            self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                if self._readers_waiting:
                    self._readers_until = time.monotonic() + READER_PHASE_SECONDS
                self._cond.notify_all()


class Selection(NamedTuple):
    """A filter's allowed labels as of one collection version (valid under the read lock)."""

    version: int
    labels: np.ndarray[Any, Any]  # sorted int64
    mask: np.ndarray[Any, Any]  # uint8 per label slot: 1 where allowed
    # hnswlib's internal ids of ``labels`` when they are few enough to scan (native only)
    internal: np.ndarray[Any, Any] | None


class FrozenCollection(NamedTuple):
    """A collection's persistent state at one moment (see :meth:`Collection.freeze`)."""

    name: str
    index: Any  # hnswlib.Index, private to this object once frozen
    vectors: Float32Matrix
    state: bytes

    def save(self, directory: Path) -> list[Path]:
        directory.mkdir(parents=True, exist_ok=True)
        index_path = directory / "index.bin"
        self.index.save_index(str(index_path))
        vectors_path = directory / "vectors.npy"
        with open(vectors_path, "wb") as fh:
            np.save(fh, self.vectors, allow_pickle=False)
        state_path = directory / "state.json"
        state_path.write_bytes(self.state)
        return [index_path, vectors_path, state_path]


class Collection:
    """A collection's index and maps; every method is safe to call from worker threads."""

    def __init__(self, config: CollectionConfig, capacity: int = INITIAL_CAPACITY) -> None:
        self.config = config
        self._lock = RWLock()
        self._index = hnswlib.Index(space=config.metric, dim=config.dimension)
        self._index.init_index(
            max_elements=capacity,
            M=config.hnsw.m,
            ef_construction=config.hnsw.ef_construction,
            random_seed=100,
        )
        self._index.set_ef(config.hnsw.ef_search)
        self._vectors: Float32Matrix = np.zeros((capacity, config.dimension), dtype=np.float32)
        self._ids_by_label: list[str | None] = []
        # Each id as JSON, parallel to _ids_by_label: answers are JSON (see `found`).
        self._json_ids: list[bytes | None] = []
        self._labels: dict[str, int] = {}
        self._metadata: dict[int, Metadata] = {}
        self._meta_index = MetadataIndex()
        self._free: list[int] = []  # free labels the index holds as deleted elements
        self._absent: list[int] = []  # free labels the index does not hold (compacted away)
        self._by_hash: dict[int, int] = {}
        self.resizes = 0
        self._init_runtime()

    def _init_runtime(self) -> None:
        """State that is not persisted: write version, filter cache, insert cost."""
        self._version = 0  # bumped by every exclusive write hold
        self._selections: OrderedDict[tuple[Clause, ...], Selection] = OrderedDict()
        self._selections_lock = threading.Lock()
        self._insert_seconds = 0.0  # moving average of one vector's insert, under the hold
        self._values = ValueGraphs(self.config)  # graphs per popular filter value (.values)
        self._compaction: compaction.Job | None = None  # set and cleared under the write lock
        self._compaction_after = 0.0  # monotonic time before which none starts (a failure)
        self._closed = False
        self.compactions = 0

    # ------------------------------------------------------------------ reads
    @property
    def name(self) -> str:
        return self.config.name

    @property
    def count(self) -> int:
        return len(self._labels)

    @property
    def value_graphs(self) -> int:
        """Ready graphs of filtered values (:mod:`.values`)."""
        return len(self._values)

    @property
    def capacity(self) -> int:
        return int(self._index.get_max_elements())

    @property
    def tombstones(self) -> int:
        """Deleted elements the index still holds (:mod:`.compaction` removes them)."""
        return len(self._free)

    @property
    def compacting(self) -> bool:
        return self._compaction is not None

    def wait_compacted(self, timeout: float | None = None) -> bool:
        """Wait for a running compaction to end; False if it is still running."""
        job = self._compaction
        thread = None if job is None else job.thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    def close(self) -> None:
        """The collection is dropped or replaced: a running compaction stops at its next
        step and swaps nothing in."""
        self._closed = True
        job = self._compaction
        if job is not None:
            job.cancelled.set()

    def __contains__(self, item_id: str) -> bool:
        return item_id in self._labels

    def get(self, item_id: str) -> tuple[Float32Matrix, Metadata | None] | None:
        """The stored vector (exactly as written) and metadata of one id."""
        with self._lock.read():
            label = self._labels.get(item_id)
            if label is None:
                return None
            return self._vectors[label].copy(), self._metadata.get(label)

    def metadata_of(self, label: int) -> Metadata | None:
        return self._metadata.get(label)

    def ids(self) -> list[str]:
        with self._lock.read():
            return list(self._labels)

    @property
    def label_span(self) -> int:
        """Labels ever used (live or free): :meth:`items_in` walks ``0..label_span``."""
        return len(self._ids_by_label)

    def items_in(
        self, start: int, stop: int, keep: Callable[[str], bool]
    ) -> tuple[list[str], Float32Matrix, list[Metadata | None]]:
        """The live items at labels ``start..stop-1`` whose id ``keep`` accepts, copied under
        the shared lock (resharding's export reads a collection in such chunks).

        An item that exists throughout a walk of all labels keeps its label, so the walk
        meets it; one written meanwhile is in the log after the walk began.
        """
        with self._lock.read():
            ids_by_label = self._ids_by_label
            labels: list[int] = []
            ids: list[str] = []
            for label in range(start, min(stop, len(ids_by_label))):
                item_id = ids_by_label[label]
                if item_id is not None and keep(item_id):
                    labels.append(label)
                    ids.append(item_id)
            vectors = self._vectors[labels] if labels else self._vectors[:0].copy()
            metadata = [self._metadata.get(label) for label in labels]
        return ids, vectors, metadata

    # ----------------------------------------------------------------- writes
    def upsert(
        self, ids: list[str], vectors: Float32Matrix, metadata: list[Metadata | None]
    ) -> None:
        """Insert or replace; ids must be unique within the call.

        Chunk by chunk (see the module docstring): the largest chunks unless a search came
        or waited within ``SEARCHED_WITHIN_SECONDS``, else chunks sized to a short hold.
        """
        start = 0
        while start < len(ids):
            searched = self._lock.searched_within(SEARCHED_WITHIN_SECONDS)
            stop = start + (short_chunk(self._insert_seconds) if searched else UPSERT_CHUNK)
            with self._lock.write():
                began = time.perf_counter()
                self._upsert_chunk(ids[start:stop], vectors[start:stop], metadata[start:stop])
                held = time.perf_counter() - began
            per_vector = held / len(ids[start:stop])
            if self._insert_seconds:
                per_vector = 0.8 * self._insert_seconds + 0.2 * per_vector
            self._insert_seconds = per_vector
            start = stop

    def _upsert_chunk(
        self, ids: list[str], vectors: Float32Matrix, metadata: list[Metadata | None]
    ) -> None:
        self._version += 1
        labels: list[int] = []
        fresh = 0
        # A new id takes a label absent from the index (a plain insert), else an unused one
        # within the capacity (allocated already, so free of cost), and overwrites a tombstone
        # in place (hnswlib's update: ~5x an insert, and a worse graph) only when the index
        # is full. Never while a compaction builds: the tombstone is absent from the index
        # being built, so the update would be paid for twice.
        room = self.capacity - len(self._ids_by_label)
        reuse_tombstones = self._compaction is None
        absent: list[int] = []
        for item_id in ids:
            label = self._labels.get(item_id)
            if label is None:
                if self._absent:
                    label = self._absent.pop()
                    absent.append(label)
                elif self._free and reuse_tombstones and fresh >= room:
                    label = self._free.pop()
                else:
                    label = len(self._ids_by_label) + fresh
                    fresh += 1
            labels.append(label)
        known = len(self._ids_by_label)  # below this: in the index (live or deleted) or absent
        self._ensure_capacity(known + fresh)
        self._ids_by_label.extend([None] * fresh)
        self._json_ids.extend([None] * fresh)
        label_array = np.asarray(labels, dtype=np.int64)
        if self._compaction is not None:
            self._compaction.dirty.update(labels)
        if native.AVAILABLE:
            held = label_array < known
            if absent:
                held &= ~np.isin(label_array, absent)
            if not held.all():
                self._index.add_items(vectors[~held], label_array[~held])
            if held.any():
                native.update_items(
                    self._index, vectors[held], label_array[held], NEAR_UPDATE_PROBABILITY
                )
        else:
            self._index.add_items(vectors, label_array)
        for label, vector in zip(labels, vectors, strict=True):
            if label < len(self._ids_by_label) and self._ids_by_label[label] is not None:
                self._forget_hash(label)
            self._by_hash[hash(vector.tobytes())] = label
        self._vectors[label_array] = vectors
        for item_id, label, meta, vector in zip(ids, labels, metadata, vectors, strict=True):
            old = self._metadata.pop(label, None)
            self._values.written(label, old, meta, vector)
            if old is not None:
                self._meta_index.remove(label, old)
            if meta:
                self._metadata[label] = meta
                self._meta_index.add(label, meta)
            self._ids_by_label[label] = item_id
            self._json_ids[label] = orjson.dumps(item_id)
            self._labels[item_id] = label

    def _forget_hash(self, label: int) -> None:
        key = hash(self._vectors[label].tobytes())
        if self._by_hash.get(key) == label:
            del self._by_hash[key]

    def _ensure_capacity(self, needed: int) -> None:
        capacity = self.capacity
        if needed <= capacity:
            return
        new_capacity = max(capacity * 2, needed)
        self._index.resize_index(new_capacity)
        grown = np.zeros((new_capacity, self.config.dimension), dtype=np.float32)
        grown[:capacity] = self._vectors
        self._vectors = grown
        self.resizes += 1

    def delete(self, ids: list[str]) -> int:
        """Delete the ids that exist; returns how many did."""
        deleted = 0
        with self._lock.write():
            self._version += 1
            for item_id in ids:
                label = self._labels.pop(item_id, None)
                if label is None:
                    continue
                self._index.mark_deleted(label)
                self._forget_hash(label)
                meta = self._metadata.pop(label, None)
                self._values.written(label, meta, None, None)
                if meta is not None:
                    self._meta_index.remove(label, meta)
                self._ids_by_label[label] = None
                self._json_ids[label] = None
                self._free.append(label)
                if self._compaction is not None:
                    self._compaction.dirty.add(label)
                deleted += 1
            self._maybe_compact()
        return deleted

    # -------------------------------------------------------------- compaction
    def _maybe_compact(self) -> None:
        """Start a compaction if tombstones call for one (under the write lock)."""
        if (
            self._compaction is not None
            or self._closed
            or not compaction.due(len(self._free), len(self._labels))
            or time.monotonic() < self._compaction_after
        ):
            return
        labels = np.fromiter(self._labels.values(), np.int64, count=len(self._labels))
        labels.sort()
        job = compaction.Job(labels, self.capacity, len(labels), len(self._free))
        self._compaction = job
        job.thread = threading.Thread(
            target=self._compact, args=(job,), name=f"dvec-compact-{self.name}", daemon=True
        )
        job.thread.start()

    def _written(self, job: compaction.Job) -> compaction.Written:
        """The current state of the labels written since the job's last look (a lock held)."""
        labels = np.asarray(job.take_dirty(), dtype=np.int64)
        ids = self._ids_by_label
        live = np.fromiter((ids[label] is not None for label in labels.tolist()), bool)
        live = live.reshape(len(labels))
        return compaction.Written(labels, live, self._vectors[labels[live]], self.capacity)

    def _compact(self, job: compaction.Job) -> None:
        """Build the compacted index and swap it in (see :mod:`.compaction`); on a thread."""
        failed = False
        try:
            if self._compact_steps(job):
                return
        except Exception:
            log.exception("compacting %s failed", self.name)
            failed = True
        with self._lock.write():
            if failed:
                self._compaction_after = time.monotonic() + compaction.RETRY_AFTER_SECONDS
            if self._compaction is job:
                self._compaction = None

    def _compact_steps(self, job: compaction.Job) -> bool:
        """The build, the catch-up and the swap; False if cancelled before the swap."""
        labels = job.labels
        for start in range(0, max(len(labels), 1), compaction.BUILD_CHUNK):
            if job.cancelled.is_set() or self._closed:
                return False
            chunk = labels[start : start + compaction.BUILD_CHUNK]
            with self._lock.read(quiet=True):
                vectors = self._vectors[chunk]
            job.build(self.config, vectors, chunk)
        for _ in range(compaction.CATCH_UP_ROUNDS):
            if job.cancelled.is_set() or self._closed:
                return False
            with self._lock.read(quiet=True):
                if len(job.dirty) <= compaction.FINISH_PENDING:
                    break
                written = self._written(job)
            job.apply(written, NEAR_UPDATE_PROBABILITY)
        with self._lock.write():
            held = time.perf_counter()
            if job.cancelled.is_set() or self._closed:
                return False
            job.apply(self._written(job), NEAR_UPDATE_PROBABILITY)
            job.index.set_ef(self.config.hnsw.ef_search)
            self._index = job.index
            self._version += 1  # cached selections hold the old index's internal ids
            with self._selections_lock:
                self._selections.clear()
            free = self._free + self._absent
            self._free = [label for label in free if label in job.present]
            self._absent = [label for label in free if label not in job.present]
            self._compaction = None
            self.compactions += 1
            seconds = time.perf_counter() - job.began
            log.info(
                "compacted %s in %.2fs (writes held %.3fs): %d live, %d tombstones dropped, "
                "%d written meanwhile, %d tombstones now",
                self.name,
                seconds,
                time.perf_counter() - held,
                job.live_at_start,
                job.tombstones_at_start,
                job.replayed,
                len(self._free),
            )
            self._maybe_compact()
        return True

    def set_ef_search(self, ef: int) -> None:
        """Make ``ef`` the default search ef (a logged collection update).

        Exclusive for one ``set_ef`` call: searches read the default more than once (to pick
        the lock, then the walk), so the change waits for in-flight ones like an upsert does.
        """
        with self._lock.write():
            self.config = self.config.with_ef_search(ef)
            self._index.set_ef(ef)
            self._values.set_config(self.config)

    # ----------------------------------------------------------------- search
    def search(
        self,
        queries: Float32Matrix,
        k: int,
        *,
        ef: int | None = None,
        clauses: list[Clause] | None = None,
        threads: int = 1,
    ) -> Rows:
        """Top-``k`` per query row; distances as hnswlib reports them for the metric.

        ``threads`` > 1 lets hnswlib spread a large batch over that many threads. An ef below
        the collection's takes the index exclusively (hnswlib keeps ef index-wide); a larger
        one does not (see :meth:`_knn`).
        """
        while True:
            narrow_ef = ef is not None and ef < self.config.hnsw.ef_search
            with self._lock.write() if narrow_ef else self._lock.read():
                # The default changes only under the write lock: held, it is the one that
                # chose the lock, unless a change came in between (then choose again).
                if narrow_ef == (ef is not None and ef < self.config.hnsw.ef_search):
                    return self._search_held(queries, k, ef, clauses, threads)

    def try_search_now(
        self,
        queries: Float32Matrix,
        k: int,
        splitter: Splitter | None = None,
        clauses: list[Clause] | None = None,
    ) -> Rows | None:
        """Search at the default ef if no write is under way; None instead of waiting.

        For callers that must not block (the event loop): they fall back to :meth:`search`
        in a thread. A ``splitter`` searches slices of an unfiltered batch on its helper
        threads.
        """
        if not self._lock.try_acquire_read():
            return None
        try:
            return self._search_held(queries, k, None, clauses, 1, splitter)
        finally:
            self._lock.release_read()

    def _search_held(
        self,
        queries: Float32Matrix,
        k: int,
        ef: int | None,
        clauses: list[Clause] | None,
        threads: int = 1,
        splitter: Splitter | None = None,
    ) -> Rows:
        allowed: Callable[[int], bool] | None = None
        if not clauses:
            rows = self._search_all(queries, k, ef, threads, splitter)
        elif (found := self._search_value_graph(queries, k, ef, clauses)) is not None:
            rows, allowed = found
        else:
            selection = self._selection(clauses)
            rows = self._search_filtered(queries, k, ef, selection, clauses)
            mask = selection.mask
            allowed = lambda label: label < len(mask) and bool(mask[label])  # noqa: E731
        if self.config.metric != "ip":
            rows = self._promote_exacts(queries, rows, k, allowed)
        return rows

    def _search_value_graph(
        self, queries: Float32Matrix, k: int, ef: int | None, clauses: list[Clause]
    ) -> tuple[Rows, Callable[[int], bool]] | None:
        """A one-clause filter on a value whose graph is ready (:mod:`.values`) and too large
        to scan: that graph holds exactly the allowed labels, so no selection is made (after
        every write, a selection of 1/7 of 50,000 labels costs ~1 ms to make again)."""
        if len(clauses) != 1 or (ef is not None and ef != self.config.hnsw.ef_search):
            return None
        graph = self._values.graph_for(clauses)
        if graph is None or len(graph.live) <= max(k, brute_force_limit(self.count)):
            return None
        try:
            labels, distances = graph.index.knn_query(queries, k, 1, None)
        except RuntimeError:
            return None  # too few reachable: the filtered walk of the whole graph instead
        live = graph.live
        return self._found(labels, distances), live.__contains__

    def _selection(self, clauses: list[Clause]) -> Selection:
        """The filter's allowed labels, from the cache unless a write came since."""
        key = tuple(clauses)
        with self._selections_lock:
            cached = self._selections.get(key)
            if cached is not None and cached.version == self._version:
                self._selections.move_to_end(key)
                return cached
        allowed = self._meta_index.select(clauses)
        labels = np.fromiter(allowed, np.int64, count=len(allowed))
        labels.sort()
        mask = np.zeros(max(len(self._ids_by_label), 1), dtype=np.uint8)
        mask[labels] = 1
        internal = None
        if native.AVAILABLE and 0 < len(labels) <= brute_force_limit(self.count):
            internal = native.internal_ids(self._index, labels)
        made = Selection(self._version, labels, mask, internal)
        with self._selections_lock:
            self._selections[key] = made
            self._selections.move_to_end(key)
            while len(self._selections) > SELECTION_CACHE:
                self._selections.popitem(last=False)
        return made

    def _promote_exacts(
        self, queries: Float32Matrix, rows: Rows, k: int, allowed: Callable[[int], bool] | None
    ) -> Rows:
        """Put a stored vector equal to a query first in its row (see the module docstring)."""
        by_hash = self._by_hash
        equal = [by_hash.get(hash(query.tobytes())) for query in queries]
        if equal.count(None) == len(equal):
            return rows
        if isinstance(rows, Found):
            firsts = rows.labels[:, 0].tolist() if rows.labels.shape[1] else [None] * len(rows)
            if all(label in (None, first) for label, first in zip(equal, firsts, strict=True)):
                return rows
        out = hit_rows(rows)
        for query, label, row in zip(queries, equal, out, strict=True):
            if label is not None and (allowed is None or allowed(label)):
                self._promote_exact(query, label, row, k)
        return out

    def _promote_exact(self, query: Float32Matrix, label: int, row: list[Hit], k: int) -> None:
        if row and row[0].label == label:
            return
        item_id = self._ids_by_label[label]
        if item_id is None or not np.array_equal(self._vectors[label], query):
            return
        for position, hit in enumerate(row):
            if hit.label == label:
                row.insert(0, row.pop(position))
                return
        exact = self._brute_force(query[None, :], 1, np.asarray([label], np.int64))[0][0]
        row.insert(0, exact)
        del row[k:]

    def _search_all(
        self,
        queries: Float32Matrix,
        k: int,
        ef: int | None,
        threads: int = 1,
        splitter: Splitter | None = None,
    ) -> Rows:
        k = min(k, self.count)
        if k <= 0:
            return [[] for _ in range(len(queries))]
        try:
            if splitter is not None and ef is None:
                labels, distances = splitter.knn(self._index, queries, k)
            else:
                labels, distances = self._knn(queries, k, ef, None, threads)
        except RuntimeError:
            # Too few reachable live elements for k at this ef: answer exactly instead.
            return self._brute_force(queries, k, np.fromiter(self._labels.values(), np.int64))
        return self._found(labels, distances)

    def _search_filtered(
        self,
        queries: Float32Matrix,
        k: int,
        ef: int | None,
        selection: Selection,
        clauses: list[Clause],
    ) -> Rows:
        """Few allowed labels: an exact scan. More: the graph of a filtered value if one is
        ready (:mod:`.values`), else the filtered walk of the whole graph."""
        candidates = selection.labels
        k = min(k, len(candidates))
        if k <= 0:
            return [[] for _ in range(len(queries))]
        if selection.internal is not None:
            return self._found(*native.scan_knn(self._index, queries, k, selection.internal))
        if len(candidates) <= brute_force_limit(self.count):
            return self._brute_force(queries, k, candidates)
        if ef is None or ef == self.config.hnsw.ef_search:
            graph = self._values.graph_for(clauses)
            if graph is None:
                self._values.searched(clauses, self._start_value_graph)
            elif len(graph.live) >= k:
                try:  # several clauses: the smallest value's graph, narrowed by the mask
                    if native.AVAILABLE:
                        labels, distances = native.filtered_knn(
                            graph.index, queries, k, selection.mask
                        )
                        return self._found(labels, distances)
                except RuntimeError:
                    pass  # too few reachable: the whole graph's walk below
        try:
            labels, distances = self._knn(queries, k, ef, selection)
        except RuntimeError:
            return self._brute_force(queries, k, candidates)
        return self._found(labels, distances)

    def _knn(
        self,
        queries: Float32Matrix,
        k: int,
        ef: int | None,
        selection: Selection | None = None,
        threads: int = 1,
    ) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        """hnswlib's search at ``ef``, among ``selection``'s labels if given.

        hnswlib searches at ``max(ef, k)``: a larger ef is asking for ``ef`` results and
        keeping the first ``k`` (the same walk, no index-wide state). A smaller ef changes the
        index's ef, so the caller holds the exclusive lock for it.
        """
        default = self.config.hnsw.ef_search
        available = self.count if selection is None else len(selection.labels)
        search_ef = default if ef is None else ef
        wanted = min(max(k, search_ef), available) if search_ef > default else k
        narrow = search_ef < default
        if narrow:
            self._index.set_ef(max(search_ef, k))
        try:
            if selection is None:
                # Positional arguments: pybind11 matches keywords by name on every call.
                labels, distances = self._index.knn_query(queries, wanted, threads, None)
            elif native.AVAILABLE:
                mask = selection.mask
                labels, distances = native.filtered_knn(self._index, queries, wanted, mask)
            else:
                mask = selection.mask
                size = len(mask)  # the slow path: a Python call per candidate
                labels, distances = self._index.knn_query(
                    queries, wanted, 1, lambda label: label < size and bool(mask[label])
                )
        finally:
            if narrow:
                self._index.set_ef(default)
        if wanted != k:
            return labels[:, :k], distances[:, :k]
        return labels, distances

    def _start_value_graph(self, key: ValueKey) -> None:
        """Build ``key``'s graph from a copy taken now (the read lock is held) on a thread of
        its own; the write lock only to catch up with writes made meanwhile."""
        clause = Clause(key[0], frozenset([key[1]]))
        labels = np.fromiter(self._meta_index.select([clause]), np.int64)
        labels.sort()
        vectors = self._vectors[labels]
        values = self._values

        def vector_of(label: int) -> Float32Matrix:
            row: Float32Matrix = self._vectors[label]
            return row

        def matches(label: int) -> bool:
            return key in _value_keys(self._metadata.get(label))

        def run() -> None:
            try:
                graph = build_value_graph(self.config, labels, vectors)
                for _ in range(CATCH_UP_ROUNDS):
                    with self._lock.read():
                        if values.pending(key) <= FINISH_PENDING:
                            break
                        values.catch_up(key, graph, matches, vector_of)
                with self._lock.write():
                    values.finish(key, graph, matches, vector_of)
            except Exception:
                log.exception("building the graph for %s failed", key[0])
                values.abandon(key)

        threading.Thread(target=run, name=f"dvec-graph-{self.name}", daemon=True).start()

    def _found(self, labels: np.ndarray[Any, Any], distances: np.ndarray[Any, Any]) -> Rows:
        """The search's hits, their ids looked up now (the read lock is held)."""
        found = Found.resolve(labels, distances, self._json_ids)
        if found is not None:
            return found
        # A label without a live id (not expected from hnswlib): leave it out of its row.
        ids = self._ids_by_label
        used = len(ids)
        return [
            [
                Hit(item_id, dist, label)
                for label, dist in zip(row_labels, row_dist, strict=True)
                if label < used and (item_id := ids[label]) is not None
            ]
            for row_labels, row_dist in zip(labels.tolist(), distances.tolist(), strict=True)
        ]

    def _brute_force(
        self, queries: Float32Matrix, k: int, candidates: np.ndarray[Any, Any]
    ) -> list[list[Hit]]:
        """Exact search over ``candidates`` with hnswlib's distance for the metric."""
        data = self._vectors[candidates]
        metric = self.config.metric
        if metric == "l2":
            # Row by row, not the |q|^2 - 2qx + |x|^2 expansion: an equal vector must give 0.
            dist = np.stack([np.sum((data - q) ** 2, axis=1) for q in queries])
        else:
            q = queries
            if metric == "cosine":
                q = _normalise(queries)
                data = _normalise(data)
            dist = 1.0 - q @ data.T
        k = min(k, len(candidates))
        part = np.argpartition(dist, k - 1, axis=1)[:, :k] if k < dist.shape[1] else None
        out: list[list[Hit]] = []
        for row in range(len(queries)):
            cols = part[row] if part is not None else np.arange(dist.shape[1])
            order = cols[np.argsort(dist[row, cols], kind="stable")]
            out.append(
                [
                    Hit(
                        str(self._ids_by_label[int(candidates[c])]),
                        float(dist[row, c]),
                        int(candidates[c]),
                    )
                    for c in order
                ]
            )
        return out

    # -------------------------------------------------------------- persistence
    def save(self, directory: Path) -> list[Path]:
        """Write ``index.bin``, ``vectors.npy`` and ``state.json``; returns their paths.

        Holds the shared lock, so searches continue; the engine pauses writes meanwhile.
        """
        with self._lock.read():
            return self._frozen(copy=False).save(directory)

    def freeze(self) -> FrozenCollection:
        """An in-memory copy of everything :meth:`save` writes, to be written without a lock.

        Copying (~0.1 s per 100k 128-d vectors) is what writes pause for, instead of writing
        and fsyncing files (~1 s); the price is the collection's memory once more, briefly.
        """
        with self._lock.read():
            return self._frozen(copy=True)

    def _frozen(self, *, copy: bool) -> FrozenCollection:
        used = len(self._ids_by_label)
        state = {
            "config": self.config.to_dict(),
            "ids_by_label": self._ids_by_label,
            "metadata": {str(label): meta for label, meta in self._metadata.items()},
            # Tombstones only: a build before compaction reads "free" as labels the index holds.
            "free": self._free,
            "absent": self._absent,
        }
        return FrozenCollection(
            name=self.name,
            index=_copy.copy(self._index) if copy else self._index,
            vectors=self._vectors[:used].copy() if copy else self._vectors[:used],
            state=orjson.dumps(state),
        )

    @property
    def memory_bytes(self) -> int:
        """Roughly what :meth:`freeze` copies: raw vectors plus the HNSW graph."""
        used = len(self._ids_by_label)
        per_vector = self.config.dimension * 4
        links = (2 * self.config.hnsw.m + 1) * 4 + 8  # level-0 links, count, label
        return used * (2 * per_vector + links)

    @classmethod
    def load(cls, directory: Path) -> Collection:
        state = orjson.loads((directory / "state.json").read_bytes())
        config = CollectionConfig.from_dict(state["config"])
        self = cls.__new__(cls)
        self.config = config
        self._lock = RWLock()
        self._index = hnswlib.Index(space=config.metric, dim=config.dimension)
        self._index.load_index(str(directory / "index.bin"))
        self._index.set_ef(config.hnsw.ef_search)
        capacity = int(self._index.get_max_elements())
        with open(directory / "vectors.npy", "rb") as fh:
            used_vectors = np.load(fh, allow_pickle=False)
        self._vectors = np.zeros((max(capacity, len(used_vectors)), config.dimension), np.float32)
        self._vectors[: len(used_vectors)] = used_vectors
        self._ids_by_label = list(state["ids_by_label"])
        self._json_ids = [
            None if item_id is None else orjson.dumps(item_id) for item_id in self._ids_by_label
        ]
        self._labels = {
            item_id: label
            for label, item_id in enumerate(self._ids_by_label)
            if item_id is not None
        }
        self._metadata = {int(label): meta for label, meta in state["metadata"].items()}
        self._meta_index = MetadataIndex()
        for label, meta in self._metadata.items():
            self._meta_index.add(label, meta)
        # Which free labels the index holds is read from the index itself: checkpoints from
        # before compaction list every free label under "free", later ones split them.
        free = list(state["free"]) + list(state.get("absent", ()))
        present = set(self._index.get_ids_list())
        self._free = [label for label in free if label in present]
        self._absent = [label for label in free if label not in present]
        self._by_hash = {
            hash(self._vectors[label].tobytes()): label for label in self._labels.values()
        }
        self.resizes = 0
        self._init_runtime()
        with self._lock.write():
            self._maybe_compact()
        return self


def _normalise(matrix: Float32Matrix) -> Float32Matrix:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    normalised: Float32Matrix = (matrix / norms).astype(np.float32)
    return normalised


def short_chunk(insert_seconds: float) -> int:
    """Vectors one upsert chunk takes while searches run: about ``UPSERT_HOLD_SECONDS`` of
    inserts at ``insert_seconds`` each, within [MIN_UPSERT_CHUNK, UPSERT_CHUNK]."""
    if insert_seconds <= 0:
        return MIN_UPSERT_CHUNK
    return max(MIN_UPSERT_CHUNK, min(UPSERT_CHUNK, int(UPSERT_HOLD_SECONDS / insert_seconds)))


def brute_force_limit(count: int) -> int:
    """Most candidates a filtered search over ``count`` vectors answers by brute force (see
    BRUTE_FORCE_FACTOR): below it, exact and cheaper than walking the graph."""
    return max(BRUTE_FORCE_LIMIT, math.isqrt(BRUTE_FORCE_FACTOR * count))
