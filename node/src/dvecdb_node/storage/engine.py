"""The storage engine: log first, apply in order, acknowledge after the fsync mode's durability.

Engine interface (what the API and replication build on)
--------------------------------------------------------
Lifecycle
    ``engine = Engine(data_dir, options)``; ``await engine.recover()`` (loads the newest good
    checkpoint, replays the WAL after it, cuts a torn tail of the last segment only; any other
    damage raises :class:`RecoveryError`); ``engine.ready``; ``engine.storage_error`` (str or
    None: why the store refuses to serve, e.g. the damaged file and byte offset);
    ``await engine.close()`` (waits for in-flight writes, fsyncs, closes).
Leader writes
    ``await engine.submit(change, epoch=e, check=f) -> WriteResult(seq, count)``: validates
    against the current state, calls ``f(e)`` (if given: it raises to refuse, e.g. a leader
    fenced while the write waited for the lock), assigns the next seq, appends one record,
    applies it, and returns once the record is durable under ``options.fsync`` (``always``:
    fsync per write; ``batch``: group commit, one fsync covers every write waiting on it;
    ``none``: written to the OS).
    An upsert or delete with an id in a fenced slot (``engine.slot_fences``, changed only by
    logged :class:`~.records.SlotFence` records) raises ``SlotMoved`` (409 ``slot_moved``),
    checked under the write lock, so in log order; ``fenced_ok=True`` skips that check.
    Raises :class:`dvecdb_node.errors.NodeError` subclasses for invalid changes,
    :class:`DiskFull` (507 ``disk_full``: the log was cut back, retry once space returns) and
    :class:`StorageFailed` (503 ``storage_error``: after a failed fsync the engine fail-stops,
    nothing more is acknowledged and ``ready`` is False until a restart re-reads the log).
Replicated writes (follower)
    Records from a leader (already framed, seq and epoch kept) go through three steps, so that
    a follower indexes while its fsync runs and acknowledges durability without waiting for
    the index work: ``await engine.append_replicated(records)`` appends them to the own WAL (a
    record at or below ``last_seq`` is skipped if this log holds it at the same epoch and
    otherwise cuts the log back to the seq before it: per-record (seq, epoch) agreement; a gap
    raises :class:`~dvecdb_node.storage.wal.SeqGapError`), ``await
    engine.apply_appended(batch)`` applies them in order (``last_epoch`` follows apply), and
    ``await engine.make_durable(seq)`` fsyncs.
Positions
    ``engine.last_seq`` (appended), ``engine.applied_seq``, ``engine.durable_seq``,
    ``engine.first_seq`` (oldest retained in the WAL), ``engine.last_epoch`` (epoch of the last
    record), ``engine.epoch_at(seq)`` (epoch of a retained record, from memory).
    ``await engine.wait_appended(seq, within)`` / ``wait_durable`` / ``wait_applied`` -> bool:
    wake a streaming handler or a read-your-writes read.
Log access
    ``engine.wal.read_frames(from_seq, max_bytes=..)`` and ``engine.wal.frame_spans(..)``
    give frame bytes as they lie on disk; ``SeqNotRetainedError`` means a snapshot is needed.
    ``engine.retention_floors`` is a list of callables returning the lowest seq someone still
    needs (or None): WAL segments at or above the smallest are kept after checkpoints.
Checkpoints and snapshots
    ``await engine.checkpoint()``; ``await engine.run_checkpoints(stop)`` applies the periodic
    policy. ``async with engine.snapshot() as (path, seq)`` gives a tar of a checkpoint that
    covers ``seq`` (kept until the block exits); ``await engine.install_snapshot(path)``
    replaces all state with a snapshot atomically and restarts the WAL after its seq.
    ``await engine.truncate_after(seq) -> bool`` rewinds a diverged follower to ``seq``
    (False if no retained checkpoint+log can rebuild it: install a snapshot instead).
Reads
    ``engine.collection(name)``, ``engine.collections()``, ``engine.get(name, id)``. Searches
    run on the collections through :class:`dvecdb_node.search.searcher.Searcher`: the engine
    stores, it does not schedule.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import errno
import heapq
import itertools
import logging
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from dvecdb_node.errors import (
    InvalidInput,
    NodeError,
    NotReady,
    collection_exists,
    collection_not_found,
    dimension_mismatch,
)
from dvecdb_node.storage import snapshot as snapshots
from dvecdb_node.storage.index import Collection, FrozenCollection
from dvecdb_node.storage.policy import CheckpointPolicy, should_checkpoint
from dvecdb_node.storage.records import (
    Change,
    CreateCollection,
    DeleteBatch,
    DropCollection,
    Float32Matrix,
    Metadata,
    Noop,
    PayloadError,
    SlotFence,
    UpdateCollection,
    UpsertBatch,
    decode_payload,
    encode_payload,
    op_of,
)
from dvecdb_node.storage.slotfence import SlotFences
from dvecdb_node.storage.wal import (
    DEFAULT_SEGMENT_BYTES,
    Record,
    SeqGapError,
    WalCorruptError,
    WalFailedError,
    WalWriteError,
    WriteAheadLog,
    encode_record,
)

log = logging.getLogger(__name__)


class FsyncMode(enum.StrEnum):
    ALWAYS = "always"
    BATCH = "batch"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class EngineOptions:
    fsync: FsyncMode = FsyncMode.BATCH
    segment_bytes: int = DEFAULT_SEGMENT_BYTES
    checkpoint: CheckpointPolicy = field(default_factory=CheckpointPolicy)
    keep_checkpoints: int = 2
    # Checkpoints copy collections up to this size in memory so writes pause only for the copy.
    checkpoint_copy_bytes: int = 1 << 30


@dataclass(frozen=True, slots=True)
class WriteResult:
    seq: int
    count: int


class StorageObserver(Protocol):
    """Where the engine reports what metrics need; the default ignores everything."""

    def wal_appended(self, nbytes: int) -> None: ...
    def fsync_done(self, seconds: float) -> None: ...
    def checkpoint_done(self, seconds: float, paused: float) -> None: ...


class NullObserver:
    def wal_appended(self, nbytes: int) -> None:
        pass

    def fsync_done(self, seconds: float) -> None:
        pass

    def checkpoint_done(self, seconds: float, paused: float) -> None:
        pass


class RecoveryError(RuntimeError):
    """The data folder cannot be recovered without losing data (e.g. a gap in the log)."""


class LogDivergedError(ValueError):
    """A replicated record disagrees with this log, which cannot be cut back to take it."""


class StorageFailed(NotReady):
    """The store stopped: nothing more is acknowledged until a restart re-reads the log."""

    code = "storage_error"


class DiskFull(NodeError):
    """A write found no space; the log was cut back, so a retry succeeds once space returns."""

    status = 507
    code = "disk_full"
    retry_after = 5


_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


class SeqWatch:
    """A monotonic position that coroutines can wait on (``await watch.wait(seq)``)."""

    def __init__(self, value: int = 0) -> None:
        self.value = value
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._counter = itertools.count()

    def set(self, value: int) -> None:
        """Move to ``value`` (may move back after a rewind) and wake everyone it satisfies."""
        self.value = value
        while self._waiters and self._waiters[0][0] <= value:
            _, _, fut = heapq.heappop(self._waiters)
            if not fut.done():
                fut.set_result(None)

    async def wait(self, seq: int, within: float | None = None) -> bool:
        """True once ``value >= seq``; False if ``within`` seconds pass first."""
        if self.value >= seq:
            return True
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (seq, next(self._counter), fut)
        heapq.heappush(self._waiters, entry)
        try:
            async with asyncio.timeout(within):
                await fut
        except TimeoutError:
            return self.value >= seq
        finally:
            if not fut.done() or fut.cancelled():
                # Timed out or cancelled: drop the entry (unless set() popped it already), or
                # it stays until the value reaches its seq, which after a rewind may be never.
                fut.cancel()
                with contextlib.suppress(ValueError):
                    self._waiters.remove(entry)
                    heapq.heapify(self._waiters)
        return True

    @property
    def waiting(self) -> int:
        """Entries held for waiters (each one a coroutine still waiting)."""
        return len(self._waiters)


class Engine:
    """See the module docstring for the interface."""

    def __init__(
        self,
        data_dir: Path,
        options: EngineOptions | None = None,
        observer: StorageObserver | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.options = options or EngineOptions()
        self.observer: StorageObserver = observer or NullObserver()
        self.retention_floors: list[Callable[[], int | None]] = []
        self._wal: WriteAheadLog | None = None
        self._collections: dict[str, Collection] = {}
        self._fences = SlotFences()
        self._write_lock = asyncio.Lock()
        self._checkpoint_lock = asyncio.Lock()
        self._sync_task: asyncio.Future[int] | None = None
        self._appended = SeqWatch()
        self._applied = SeqWatch()
        self._durable = SeqWatch()
        self._last_epoch = 0
        self._checkpoint_seq = 0
        self._checkpoint_epoch = 0  # epoch of the record at _checkpoint_seq
        self._checkpoint_time = time.monotonic()
        self._checkpoint_wal_bytes = 0
        self._apply_pool = ThreadPoolExecutor(1, thread_name_prefix="dvec-apply")
        self._io_pool = ThreadPoolExecutor(2, thread_name_prefix="dvec-io")
        self._closed = False
        self._storage_error: str | None = None

    # ------------------------------------------------------------ directories
    @property
    def wal_dir(self) -> Path:
        return self.data_dir / "wal"

    @property
    def checkpoint_dir(self) -> Path:
        return self.data_dir / "checkpoints"

    # -------------------------------------------------------------- positions
    @property
    def ready(self) -> bool:
        return self._wal is not None and not self._closed and self._storage_error is None

    @property
    def storage_error(self) -> str | None:
        """Why the store refuses to serve (damaged log, failed fsync), naming file and offset.

        None while healthy. Once set it stays set: only a restart, which re-reads the log from
        disk, clears it.
        """
        return self._storage_error

    @property
    def wal(self) -> WriteAheadLog:
        if self._wal is None:
            raise NotReady("the store is still recovering")
        return self._wal

    @property
    def last_seq(self) -> int:
        return self._appended.value

    @property
    def applied_seq(self) -> int:
        return self._applied.value

    @property
    def durable_seq(self) -> int:
        return self._durable.value

    @property
    def first_seq(self) -> int:
        return self.wal.first_seq

    @property
    def last_epoch(self) -> int:
        return self._last_epoch

    @property
    def slot_fences(self) -> SlotFences:
        """The fenced slots as of the applied state (change them only by logging a
        :class:`SlotFence`)."""
        return self._fences

    @property
    def checkpoint_seq(self) -> int:
        return self._checkpoint_seq

    def epoch_at(self, seq: int) -> int | None:
        """Epoch of the record at ``seq`` from memory (no disk read); None if not retained.

        0 for seq 0 (before the first record); the checkpoint's epoch for its seq even once
        the log before it is gone. For write tokens (``min_epoch``) and log agreement.
        """
        if seq <= 0:
            return 0
        found = self._wal.epoch_at(seq) if self._wal is not None else None
        if found is None and seq == self._checkpoint_seq:
            return self._checkpoint_epoch
        return found

    async def wait_appended(self, seq: int, within: float | None = None) -> bool:
        return await self._appended.wait(seq, within)

    async def wait_applied(self, seq: int, within: float | None = None) -> bool:
        return await self._applied.wait(seq, within)

    async def wait_durable(self, seq: int, within: float | None = None) -> bool:
        return await self._durable.wait(seq, within)

    # --------------------------------------------------------------- recovery
    async def recover(self) -> None:
        """Load the newest good checkpoint and replay the log after it (in a thread).

        Damage that recovery must not repair by deleting (see :mod:`.wal`) raises
        :class:`RecoveryError`, sets :attr:`storage_error` and leaves the engine not ready.
        """
        loop = asyncio.get_running_loop()
        try:
            wal, (collections, fences), (ckpt_seq, ckpt_epoch), epoch = await loop.run_in_executor(
                self._apply_pool, self._recover_blocking
            )
        except (WalCorruptError, WalFailedError, PayloadError, RecoveryError, OSError) as exc:
            self._storage_error = f"recovery refused: {exc}"
            log.error("%s", self._storage_error)
            raise RecoveryError(self._storage_error) from exc
        self._collections = collections
        self._fences = fences
        self._checkpoint_seq, self._checkpoint_epoch = ckpt_seq, ckpt_epoch
        self._last_epoch = epoch
        self._wal = wal
        self._set_positions(wal.last_seq)

    def _set_positions(self, seq: int) -> None:
        self._appended.set(seq)
        self._applied.set(seq)
        self._durable.set(seq)

    def _recover_blocking(
        self,
    ) -> tuple[WriteAheadLog, tuple[dict[str, Collection], SlotFences], tuple[int, int], int]:
        """(log, (collections, fenced slots), (checkpoint seq, its epoch), epoch of the last
        record)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        collections: dict[str, Collection] = {}
        fences = SlotFences()
        ckpt_seq, epoch = 0, 0
        for seq, path in snapshots.list_checkpoints(self.checkpoint_dir):
            try:
                info, collections = snapshots.load_checkpoint(path)
            except snapshots.CheckpointError as exc:
                log.warning("skipping checkpoint %s: %s", seq, exc)
                continue
            ckpt_seq, epoch = info.seq, info.epoch
            fences = SlotFences.from_json(info.slot_fences)
            log.info("loaded checkpoint at seq %d (%d collections)", seq, len(collections))
            break
        ckpt_epoch = epoch
        wal, report = WriteAheadLog.open(
            self.wal_dir, segment_bytes=self.options.segment_bytes, start_seq=ckpt_seq + 1
        )
        if report.reason:
            log.warning("WAL torn tail cut (%d bytes): %s", report.dropped_bytes, report.reason)
        if wal.last_seq < ckpt_seq:
            wal.reset(ckpt_seq + 1)
        elif wal.first_seq > ckpt_seq + 1:
            raise RecoveryError(
                f"log starts at seq {wal.first_seq} but the checkpoint covers only {ckpt_seq}"
            )
        epoch, replayed = self._replay(wal, ckpt_seq, collections, fences, epoch)
        wal.sync()
        log.info("recovered to seq %d (replayed %d records)", wal.last_seq, replayed)
        return wal, (collections, fences), (ckpt_seq, ckpt_epoch), epoch

    @classmethod
    def _replay(
        cls,
        wal: WriteAheadLog,
        after: int,
        collections: dict[str, Collection],
        fences: SlotFences,
        epoch: int,
    ) -> tuple[int, int]:
        """Apply the log's records after seq ``after`` to ``collections`` (recovery and
        rewinds share this loop): (epoch of the last record, or ``epoch`` if none; count)."""
        count = 0
        for record in wal.iter_records(after + 1):
            try:
                change = decode_payload(record.op, record.payload)
            except PayloadError as exc:
                raise RecoveryError(f"record {record.seq} does not decode: {exc}") from exc
            cls._apply(change, collections, fences)
            epoch = record.epoch
            count += 1
        return epoch, count

    # ------------------------------------------------------------------ reads
    def collection(self, name: str) -> Collection:
        collection = self._collections.get(name)
        if collection is None:
            raise collection_not_found(name)
        return collection

    def collections(self) -> list[Collection]:
        return sorted(self._collections.values(), key=lambda c: c.name)

    def get(self, name: str, item_id: str) -> tuple[Float32Matrix, Metadata | None] | None:
        return self.collection(name).get(item_id)

    # ----------------------------------------------------------------- writes
    async def submit(
        self,
        change: Change,
        *,
        epoch: int,
        check: Callable[[int], None] | None = None,
        fenced_ok: bool = False,
    ) -> WriteResult:
        """Leader write path (see the module docstring).

        ``check(epoch)`` runs under the write lock right before the record gets its seq; if it
        raises, nothing is appended and the exception propagates. A write that queued for the
        lock while its leader was fenced or deposed is refused here, not appended at the old
        epoch (the API passes ``role.require_epoch``).

        An upsert or delete with an id in a fenced slot raises ``SlotMoved`` (409
        ``slot_moved``), checked under the same lock as the append, so the refusal is ordered
        with the fence record; ``fenced_ok`` skips the check (resharding's import path).
        """
        self._check_writable()
        wal = self.wal
        async with self._write_lock:
            self._check_writable()
            count = self._validate(change)
            if check is not None:
                check(epoch)
            if self._fences and not fenced_ok and isinstance(change, UpsertBatch | DeleteBatch):
                refusal = self._fences.refusal(change.ids)
                if refusal is not None:
                    raise refusal
            seq = wal.next_seq
            record = encode_record(seq, epoch, op_of(change), encode_payload(change))
            self._append([record])
            if self.options.fsync is FsyncMode.ALWAYS:
                await self._sync()
            await self._apply_async(change)
            self._last_epoch = epoch
            self._applied.set(seq)
        await self.make_durable(seq)
        return WriteResult(seq=seq, count=count)

    async def append_replicated(self, records: list[Record]) -> list[tuple[Record, Change]]:
        """Follower path, first step: append leader records to the WAL, not yet durable.

        Returns the fresh records with their decoded changes for :meth:`apply_appended`, which
        must follow in order (recovery replays anything left unapplied by a crash); the caller
        applies while :meth:`make_durable` runs the fsync. The leader holds these records
        durably already, so a follower may show them before its own fsync (a crash loses both
        the index and the tail).

        A record whose seq this log already holds is a duplicate if the epochs agree; if they
        differ, the two logs diverged there: the log is cut back to the seq before it (the
        :meth:`truncate_after` path) and the leader's record appended. If the state cannot be
        rebuilt at that point, :class:`LogDivergedError` is raised (the follower reconnects and
        the leader answers ``log_diverged`` or ``snapshot_required``).
        """
        wal = self.wal
        while True:
            async with self._write_lock:
                self._check_writable()
                disagree = self._first_disagreement(records)
                if disagree is None:
                    fresh = [r for r in records if r.seq > wal.last_seq]
                    if not fresh:
                        return []
                    if fresh[0].seq != wal.last_seq + 1:
                        raise SeqGapError(
                            f"record seq {fresh[0].seq} does not follow {wal.last_seq}"
                        )
                    changes = [decode_payload(r.op, r.payload) for r in fresh]
                    self._append(fresh)
                    return list(zip(fresh, changes, strict=True))
            await self._cut_back_for(disagree)

    def _first_disagreement(self, records: list[Record]) -> Record | None:
        """The first record whose seq this log holds at another epoch (None: they agree).

        On the streaming path every record is past ``last_seq``: one comparison in all.
        """
        last = self.wal.last_seq
        for record in records:
            if record.seq > last:
                return None
            held = self.epoch_at(record.seq)
            if held is not None and held != record.epoch:
                return record
        return None

    async def _cut_back_for(self, record: Record) -> None:
        """Drop this log's records from ``record.seq`` on: the leader's record replaces them."""
        log.warning(
            "record %d: held at epoch %s, the leader has epoch %d: cutting the log back to %d",
            record.seq,
            self.epoch_at(record.seq),
            record.epoch,
            record.seq - 1,
        )
        if not await self.truncate_after(record.seq - 1):
            raise LogDivergedError(
                f"log holds record {record.seq} at another epoch than the leader's "
                f"({record.epoch}) and cannot be cut back to {record.seq - 1}"
            )

    async def apply_appended(self, batch: list[tuple[Record, Change]]) -> None:
        """Follower path, second half: apply records already appended, in seq order.

        Records the log no longer holds at their epoch (cut back since they were appended)
        are skipped: what replaced them comes in a later batch.
        """
        async with self._write_lock:
            for record, change in batch:
                if record.seq <= self.applied_seq:
                    continue
                if self.epoch_at(record.seq) != record.epoch:  # None once cut off the end
                    continue
                if record.seq != self.applied_seq + 1:
                    raise SeqGapError(f"record {record.seq} is not the next one to apply")
                await self._apply_async(change)
                self._last_epoch = record.epoch
                self._applied.set(record.seq)

    def _check_writable(self) -> None:
        if self._storage_error is not None:
            raise StorageFailed(f"the store failed: {self._storage_error}")
        if self._closed:
            raise NotReady("the node is shutting down")

    def _fail(self, reason: str) -> StorageFailed:
        """Fail-stop: nothing more is acknowledged or served; a restart re-reads the log."""
        if self._storage_error is None:
            self._storage_error = reason
            log.critical("storage failed, refusing all writes until a restart: %s", reason)
        return StorageFailed(f"the store failed: {self._storage_error}")

    def _append(self, records: list[Record]) -> None:
        wal = self.wal
        before = wal.bytes_written
        try:
            wal.append(records)
        except WalWriteError as exc:
            if exc.errno in _NO_SPACE:
                raise DiskFull(f"no space left for the log: {exc}") from exc
            raise self._fail(str(exc)) from exc
        except WalFailedError as exc:
            raise self._fail(str(exc)) from exc
        written = wal.bytes_written - before
        self._checkpoint_wal_bytes += written
        self.observer.wal_appended(written)
        self._appended.set(records[-1].seq)

    async def _apply_async(self, change: Change) -> None:
        if isinstance(change, UpsertBatch | CreateCollection | DeleteBatch | UpdateCollection):
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(
                self._apply_pool, self._apply, change, self._collections, self._fences
            )
        else:
            self._apply(change, self._collections, self._fences)

    async def _sync(self) -> None:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        try:
            await loop.run_in_executor(self._io_pool, self.wal.sync)
        except (WalFailedError, OSError) as exc:
            raise self._fail(str(exc)) from exc
        self.observer.fsync_done(time.perf_counter() - started)
        # Read back on the loop thread: a truncation while the fsync ran lowered it.
        seq = self.wal.durable_seq
        if seq > self._durable.value:
            self._durable.set(seq)

    async def make_durable(self, seq: int) -> None:
        """Return once ``seq`` is durable; concurrent callers share one fsync (group commit).

        Raises :class:`StorageFailed` once the store has failed, unless ``seq`` was durable
        before that.
        """
        if seq <= self._durable.value:
            return
        if self._storage_error is not None:
            raise StorageFailed(f"the store failed: {self._storage_error}")
        if self.options.fsync is FsyncMode.NONE:
            self.wal.mark_durable(seq)
            if seq > self._durable.value:
                self._durable.set(seq)
            return
        while self._durable.value < seq:
            task = self._sync_task
            if task is None or task.done():
                task = self._sync_task = asyncio.ensure_future(self._sync_covering())
            await asyncio.shield(task)

    async def _sync_covering(self) -> int:
        await self._sync()
        return self._durable.value

    # ------------------------------------------------------- state transitions
    def _validate(self, change: Change) -> int:
        """Check a leader change against the current state; returns its count."""
        match change:
            case CreateCollection(config):
                if config.name in self._collections:
                    raise collection_exists(config.name)
                return 1
            case DropCollection(name):
                self.collection(name)
                return 1
            case UpsertBatch(name, ids, vectors, metadata):
                dim = self.collection(name).config.dimension
                if vectors.ndim != 2 or vectors.shape[1] != dim:
                    raise dimension_mismatch(dim, int(vectors.shape[-1]))
                if len(ids) != len(vectors) or len(ids) != len(metadata):
                    raise InvalidInput("ids, vectors and metadata differ in length")
                if len(set(ids)) != len(ids):
                    raise InvalidInput("duplicate ids in one batch", code="duplicate_ids")
                return len(ids)
            case DeleteBatch(name, ids):
                collection = self.collection(name)
                return sum(1 for item_id in set(ids) if item_id in collection)
            case Noop():
                return 0
            case UpdateCollection(name):
                self.collection(name)
                return 1
            case SlotFence(ranges):
                return sum(last - first + 1 for first, last in ranges)

    @staticmethod
    def _apply(change: Change, collections: dict[str, Collection], fences: SlotFences) -> None:
        """Apply one logged change; tolerant, because a logged record must always replay."""
        match change:
            case CreateCollection(config):
                collections[config.name] = Collection(config)
            case DropCollection(name):
                dropped = collections.pop(name, None)
                if dropped is not None:
                    dropped.close()  # a compaction under way stops
            case UpsertBatch(name, ids, vectors, metadata):
                target = collections.get(name)
                if target is not None and vectors.shape[1] == target.config.dimension:
                    target.upsert(ids, vectors, metadata)
            case DeleteBatch(name, ids):
                target = collections.get(name)
                if target is not None:
                    target.delete(ids)
            case Noop():
                pass
            case UpdateCollection(name, ef_search):
                target = collections.get(name)
                if target is not None and ef_search is not None:
                    target.set_ef_search(ef_search)
            case SlotFence():
                fences.apply(change)

    # ------------------------------------------------------------ checkpoints
    async def checkpoint(self) -> int | None:
        """Write a checkpoint of the applied state; returns its seq (None if nothing new).

        Writes pause while collections are saved; searches go on.
        """
        async with self._checkpoint_lock:
            return await self._checkpoint_locked()

    async def _checkpoint_locked(self) -> int | None:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        async with self._write_lock:
            seq = self.applied_seq
            if seq == self._checkpoint_seq and snapshots.list_checkpoints(self.checkpoint_dir):
                return None
            await self._sync()
            epoch = self._last_epoch
            fences = self._fences.to_json()
            collections = self.collections()
            frozen: list[FrozenCollection] | None = None
            if sum(c.memory_bytes for c in collections) <= self.options.checkpoint_copy_bytes:
                # Writes wait only for an in-memory copy; the files are written after.
                frozen = await loop.run_in_executor(
                    self._io_pool, lambda: [c.freeze() for c in collections]
                )
            else:  # too big to copy: write the files while writes wait
                await loop.run_in_executor(
                    self._io_pool,
                    lambda: self._write_checkpoint(seq, epoch, collections, fences),
                )
            try:
                self.wal.roll()
            except WalFailedError as exc:
                raise self._fail(str(exc)) from exc
            except WalWriteError:
                pass  # no room for a new segment: the log goes on in the current one
            wal_bytes = self._checkpoint_wal_bytes
        paused = time.perf_counter() - started
        if frozen is not None:
            copies = frozen
            await loop.run_in_executor(
                self._io_pool, lambda: self._write_checkpoint(seq, epoch, copies, fences)
            )
        self._checkpoint_seq, self._checkpoint_epoch = seq, epoch
        self._checkpoint_time = time.monotonic()
        self._checkpoint_wal_bytes -= wal_bytes  # what was appended since counts for the next
        await loop.run_in_executor(self._io_pool, self._prune)
        self.observer.checkpoint_done(time.perf_counter() - started, paused)
        log.info(
            "checkpoint at seq %d in %.3fs (writes paused %.3fs)",
            seq,
            time.perf_counter() - started,
            paused,
        )
        return seq

    def _write_checkpoint(
        self,
        seq: int,
        epoch: int,
        collections: Sequence[Collection | FrozenCollection],
        fences: list[list[object]],
    ) -> None:
        snapshots.write_checkpoint(
            self.checkpoint_dir,
            seq=seq,
            epoch=epoch,
            collections=collections,
            slot_fences=fences,
        )

    def _prune(self) -> None:
        snapshots.prune_checkpoints(self.checkpoint_dir, keep=self.options.keep_checkpoints)
        kept = snapshots.list_checkpoints(self.checkpoint_dir)
        if not kept:
            return
        floor = kept[-1][0] + 1
        for hook in self.retention_floors:
            needed = hook()
            if needed is not None:
                floor = min(floor, needed)
        self.wal.drop_before(floor)

    async def run_checkpoints(self, stop: asyncio.Event, poll_seconds: float = 1.0) -> None:
        """Checkpoint whenever the policy says so, until ``stop`` is set."""
        policy = self.options.checkpoint
        while not stop.is_set():
            try:
                async with asyncio.timeout(poll_seconds):
                    await stop.wait()
                return
            except TimeoutError:
                pass
            due = should_checkpoint(
                policy,
                seconds_since_last=time.monotonic() - self._checkpoint_time,
                records_since_last=self.applied_seq - self._checkpoint_seq,
                wal_bytes_since_last=self._checkpoint_wal_bytes,
            )
            if due and self._storage_error is None:
                try:
                    await self.checkpoint()
                except Exception:
                    log.exception("periodic checkpoint failed")

    # -------------------------------------------------------------- snapshots
    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[tuple[Path, int]]:
        """A tar of a checkpoint covering the applied state: ``(path, seq)``.

        The file is deleted when the block exits; checkpoints are not pruned meanwhile.
        """
        async with self._checkpoint_lock:
            await self._checkpoint_locked()
            seq, folder = snapshots.list_checkpoints(self.checkpoint_dir)[0]
            handle, name = tempfile.mkstemp(prefix="snapshot-", suffix=".tar", dir=self.data_dir)
            os.close(handle)
            path = Path(name)
            loop = asyncio.get_running_loop()
            try:
                await loop.run_in_executor(self._io_pool, snapshots.pack_snapshot, folder, path)
                yield path, seq
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)

    async def install_snapshot(self, archive: Path) -> int:
        """Replace the whole state with a snapshot; the WAL restarts after its seq."""
        loop = asyncio.get_running_loop()
        async with self._checkpoint_lock, self._write_lock:
            self._check_writable()
            info = await loop.run_in_executor(
                self._io_pool, snapshots.unpack_snapshot, archive, self.checkpoint_dir
            )
            loaded, collections = await loop.run_in_executor(
                self._io_pool, snapshots.load_checkpoint, info.path
            )
            for seq, path in snapshots.list_checkpoints(self.checkpoint_dir):
                if seq != info.seq:
                    shutil.rmtree(path, ignore_errors=True)
            try:
                self.wal.reset(info.seq + 1)
            except OSError as exc:  # the log is in no known state: stop until a restart
                raise self._fail(f"resetting the log after a snapshot failed: {exc}") from exc
            _close_all(self._collections)
            self._collections = collections
            self._fences = SlotFences.from_json(loaded.slot_fences)
            self._last_epoch = info.epoch
            self._checkpoint_seq, self._checkpoint_epoch = info.seq, info.epoch
            self._checkpoint_time = time.monotonic()
            self._checkpoint_wal_bytes = 0
            self._set_positions(info.seq)
        log.info("installed snapshot at seq %d", info.seq)
        return info.seq

    async def truncate_after(self, seq: int) -> bool:
        """Rewind to ``seq``: drop later records and rebuild state from checkpoint + log."""
        loop = asyncio.get_running_loop()
        async with self._checkpoint_lock, self._write_lock:
            self._check_writable()
            wal = self.wal
            if seq >= wal.last_seq:
                return True
            base = [
                (s, p)
                for s, p in snapshots.list_checkpoints(self.checkpoint_dir)
                if s <= seq and s + 1 >= wal.first_seq
            ]
            if not base and wal.first_seq > 1:
                return False
            ckpt_seq, epoch = 0, 0
            collections: dict[str, Collection] = {}
            fences = SlotFences()
            if base:
                info, collections = await loop.run_in_executor(
                    self._io_pool, snapshots.load_checkpoint, base[0][1]
                )
                ckpt_seq, epoch = info.seq, info.epoch
                fences = SlotFences.from_json(info.slot_fences)
            for s, p in snapshots.list_checkpoints(self.checkpoint_dir):
                if s > seq:
                    shutil.rmtree(p, ignore_errors=True)
            try:
                wal.truncate_after(seq)
            except OSError as exc:  # the log is in no known state: stop until a restart
                raise self._fail(f"cutting the log back to {seq} failed: {exc}") from exc
            try:
                self._last_epoch, _ = await loop.run_in_executor(
                    self._apply_pool, self._replay, wal, ckpt_seq, collections, fences, epoch
                )
            except RecoveryError as exc:  # the log changed under us: stop until a restart
                raise self._fail(f"rebuilding the state at {seq} failed: {exc}") from exc
            _close_all(self._collections)
            self._collections = collections
            self._fences = fences
            self._checkpoint_seq, self._checkpoint_epoch = ckpt_seq, epoch
            self._set_positions(seq)
        return True

    # --------------------------------------------------------------- shutdown
    async def close(self) -> None:
        """Finish in-flight writes, fsync and close; later writes get 503."""
        if self._closed:
            return
        self._closed = True
        try:
            async with self._write_lock:
                if self._wal is not None:
                    try:
                        if self._storage_error is None:
                            # Through the group-commit path: writers waiting on an fsync share it.
                            await self.make_durable(self._wal.last_seq)
                    finally:
                        self._wal.close()
        finally:
            _close_all(self._collections)
            self._apply_pool.shutdown(wait=True)
            self._io_pool.shutdown(wait=True)


def _close_all(collections: dict[str, Collection]) -> None:
    """Collections replaced or shut down: their background compactions stop."""
    for collection in collections.values():
        collection.close()
