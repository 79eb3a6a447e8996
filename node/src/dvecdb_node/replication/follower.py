"""A follower: pull the leader's log, make it durable, apply it in order, acknowledge.

One task streams ``GET /v1/replication/stream`` from after the last local record (with that
record's epoch, so the leader can check that the logs agree), appends each batch of frames
with :meth:`Engine.append_replicated`, hands it to an apply stage that indexes batches in
order, then fsyncs it (one fsync per batch) and wakes the ack task, which posts
``received_seq`` (durable) and ``applied_seq`` (coalesced, and at least every
``ack_interval`` as a heartbeat, echoing the leader's last lease token: these acks keep the
leader's lease): indexing overlaps the fsync, and acknowledgements do not wait for it.
The leader may answer that the logs diverged (truncate, then ask again) or that a snapshot is
needed (download, install atomically, stream on). Connection failures back off and retry.

Engine calls are never cancelled half-way (a stop waits for the current batch), so a stop can
not leave records appended but unapplied.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeVar

import aiohttp

from dvecdb_node.replication.backoff import Backoff
from dvecdb_node.replication.logview import HEARTBEAT_SEQ, parse_heartbeat
from dvecdb_node.storage.engine import Engine
from dvecdb_node.storage.records import Change
from dvecdb_node.storage.wal import FrameDecoder, FrameError, Record, SeqGapError

log = logging.getLogger(__name__)
T = TypeVar("T")
# Appended batches waiting for the apply stage; None ends it.
Pending: TypeAlias = "asyncio.Queue[list[tuple[Record, Change]] | None]"


@dataclass(frozen=True, slots=True)
class FollowerOptions:
    connect_timeout: float = 3.0
    # The leader sends a heartbeat at least every second; silence this long means a dead link.
    read_timeout: float = 5.0
    ack_interval: float = 1.0
    # Batches appended but not yet applied before the stream stops reading (back-pressure).
    max_pending_batches: int = 64
    backoff_first: float = 0.05
    backoff_cap: float = 2.0


class LeaderRefused(Exception):
    """The leader answered the stream request with an error body."""

    def __init__(self, status: int, code: str, body: dict[str, Any]) -> None:
        super().__init__(f"{status} {code}: {body.get('message', '')}")
        self.status = status
        self.code = code
        self.body = body


async def _uncancellable(make: Callable[[], Awaitable[T]]) -> T:
    """Run an engine call to completion even if the caller is cancelled meanwhile."""
    task = asyncio.ensure_future(make())
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await task
        raise


async def hand_over(
    pending: Pending,
    item: list[tuple[Record, Change]] | None,
    applier: asyncio.Task[None],
) -> bool:
    """Queue ``item`` for the apply stage; False if that stage ended before taking it.

    A bare ``put`` on a full queue waits forever once the stage is gone, and so would
    ``stop()`` and every admin command queued behind it (a promote that never answers).
    """
    if applier.done():
        return False
    put = asyncio.ensure_future(pending.put(item))
    await asyncio.wait({put, applier}, return_when=asyncio.FIRST_COMPLETED)
    if put.done():
        return True
    put.cancel()
    return False


async def _error_of(resp: aiohttp.ClientResponse) -> LeaderRefused:
    try:
        body = await resp.json(content_type=None)
        error = body.get("error", {}) if isinstance(body, dict) else {}
    except (ValueError, aiohttp.ClientError):
        error = {}
    return LeaderRefused(resp.status, str(error.get("code", "http_error")), error)


class Follower:
    """See the module docstring."""

    def __init__(
        self,
        *,
        engine: Engine,
        leader_url: str,
        epoch: int,
        node_id: str,
        self_url: str,
        auth: Callable[[], dict[str, str]],
        on_epoch: Callable[[int], None],
        options: FollowerOptions,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.engine = engine
        self.ssl_context = ssl_context  # verifies the leader (TLS), None: plain HTTP
        self.leader_url = leader_url
        self.epoch = epoch
        self.node_id = node_id
        self.self_url = self_url
        # The Authorization header to send, asked per request: the cluster token may rotate.
        self.auth = auth
        self.on_epoch = on_epoch
        self.options = options
        self.state = "starting"
        # reconciled: the leader accepted this log as a prefix of its own (a stream started).
        # diverged: the leader said it is not, and it is not yet cut back or replaced.
        self.reconciled = False
        self.diverged = False
        self.streaming = False
        self.leader_last_seq = 0
        self.last_error: str | None = None
        self.snapshots_installed = 0
        self.truncations = 0
        self.connects = 0
        self.last_heard = 0.0
        # The last lease token the leader sent on the current stream (0: none yet).
        self.lease_token = 0
        # When (monotonic) this follower last sent an ack echoing a token: the leader's lease
        # may run up to lease_seconds past it, on this follower's word.
        self.last_token_ack = 0.0
        self._progress = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -------------------------------------------------------------- lifecycle
    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"follow {self.leader_url}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        self.streaming = False
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def describe(self) -> dict[str, Any]:
        return {
            "leader": self.leader_url,
            "epoch": self.epoch,
            "state": self.state,
            "streaming": self.streaming,
            "reconciled": self.reconciled,
            "last_heard_seconds": (
                round(time.monotonic() - self.last_heard, 3) if self.last_heard else None
            ),
            "leader_last_seq": self.leader_last_seq,
            "received_seq": self.engine.durable_seq,
            "applied_seq": self.engine.applied_seq,
            "snapshots_installed": self.snapshots_installed,
            "truncations": self.truncations,
            "connects": self.connects,
            "last_error": self.last_error,
        }

    # ------------------------------------------------------------------ loop
    async def _run(self) -> None:
        opts = self.options
        backoff = Backoff(opts.backoff_first, opts.backoff_cap)
        timeout = aiohttp.ClientTimeout(
            total=None, connect=opts.connect_timeout, sock_read=opts.read_timeout
        )
        connector = aiohttp.TCPConnector(ssl=True if self.ssl_context is None else self.ssl_context)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            acker = asyncio.create_task(self._ack_loop(session))
            try:
                while True:
                    try:
                        if await self._stream_once(session):
                            backoff.reset()
                        continue
                    except LeaderRefused as exc:
                        if await self._handle_refusal(session, exc):
                            backoff.reset()
                            continue
                        self.last_error = str(exc)
                    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                        self.last_error = f"{type(exc).__name__}: {exc}"
                    except (FrameError, SeqGapError, ValueError) as exc:
                        log.warning("bad data from %s: %s", self.leader_url, exc)
                        self.last_error = f"{type(exc).__name__}: {exc}"
                    except Exception as exc:  # never stop following over one bad round
                        log.exception("replication from %s failed", self.leader_url)
                        self.last_error = f"{type(exc).__name__}: {exc}"
                    self.streaming = False
                    self.state = "backoff"
                    await asyncio.sleep(backoff.next())
            finally:
                self.streaming = False
                acker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await acker

    async def _stream_once(self, session: aiohttp.ClientSession) -> bool:
        """One stream connection; True if it delivered anything (a working link).

        Two stages: this coroutine appends each batch, queues it for the applier task (which
        applies batches in order) and then fsyncs it (after which the ack task may report it as
        received). Before it returns, for whatever reason, every appended batch has been
        applied.
        """
        engine = self.engine
        if engine.applied_seq != engine.last_seq:
            raise SeqGapError("appended records were left unapplied")
        self.state = "connecting"
        params = {
            "from_seq": str(engine.last_seq + 1),
            "prev_epoch": str(engine.last_epoch),
            "epoch": str(self.epoch),
            "node_id": self.node_id,
            "url": self.self_url,
        }
        url = f"{self.leader_url}/v1/replication/stream"
        async with session.get(url, params=params, headers=self.auth()) as resp:
            if resp.status != 200:
                raise await _error_of(resp)
            self.connects += 1
            self.lease_token = 0
            self.last_heard = time.monotonic()
            self.diverged = False
            self.reconciled = True
            self.streaming = True
            self.state = "streaming"
            self.last_error = None
            self._progress.set()
            pending: Pending = asyncio.Queue(maxsize=self.options.max_pending_batches)
            applier = asyncio.create_task(self._apply_stage(pending))
            try:
                return await self._receive(resp, pending, applier)
            finally:
                await _uncancellable(lambda: self._drain(pending, applier))

    async def _receive(
        self,
        resp: aiohttp.ClientResponse,
        pending: Pending,
        applier: asyncio.Task[None],
    ) -> bool:
        decoder = FrameDecoder()
        delivered = False
        async for chunk in resp.content.iter_any():
            self.last_heard = time.monotonic()
            batch: list[Record] = []
            for record in decoder.feed(chunk):
                if record.seq == HEARTBEAT_SEQ:
                    self.leader_last_seq, _, token = parse_heartbeat(record.payload)
                    self.lease_token = token or self.lease_token
                elif record.epoch > self.epoch:
                    raise ValueError(f"record {record.seq} has epoch {record.epoch}")
                else:
                    batch.append(record)
            delivered = True
            if not batch:
                continue
            if applier.done():
                applier.result()  # re-raise the apply stage's failure
                raise SeqGapError("the apply stage stopped")
            await _uncancellable(lambda b=batch: self._append_and_queue(b, pending, applier))  # type: ignore[misc]
            self.leader_last_seq = max(self.leader_last_seq, batch[-1].seq)
            self._progress.set()
        return delivered

    async def _append_and_queue(
        self, batch: list[Record], pending: Pending, applier: asyncio.Task[None]
    ) -> None:
        """Append, hand to the apply stage, then fsync: one step that is never cut short.

        The apply stage indexes the batch while the fsync runs, so a slow disk delays the
        acknowledgement (``received_seq``) but not what searches on this follower see.
        """
        appended = await self.engine.append_replicated(batch)
        if appended and not await hand_over(pending, appended, applier):
            # The stage ended: apply what it left, then this batch, in order, right here.
            await self._apply_left(pending)
            await self.engine.apply_appended(appended)
        if appended:
            await self.engine.make_durable(appended[-1][0].seq)

    async def _apply_stage(self, pending: Pending) -> None:
        while (batch := await pending.get()) is not None:
            await self.engine.apply_appended(batch)
            self._progress.set()

    async def _drain(
        self,
        pending: Pending,
        applier: asyncio.Task[None],
    ) -> None:
        """Apply everything appended so far, then end the apply stage."""
        await hand_over(pending, None, applier)
        try:
            await applier
        finally:
            # If the apply stage failed, apply what is left here (order is kept by the engine).
            await self._apply_left(pending)

    async def _apply_left(self, pending: Pending) -> None:
        while not pending.empty():
            batch = pending.get_nowait()
            if batch is not None:
                await self.engine.apply_appended(batch)

    async def _handle_refusal(self, session: aiohttp.ClientSession, exc: LeaderRefused) -> bool:
        """Act on the leader's answer; True if the follower can retry at once."""
        if exc.code == "log_diverged":
            point = int(exc.body.get("truncate_to", 0))
            self.state = "truncating"
            self.reconciled = False
            self.diverged = True
            log.warning("log diverges from %s after seq %d: truncating", self.leader_url, point)
            if await _uncancellable(lambda: self.engine.truncate_after(point)):
                self.truncations += 1
            else:
                await self._install_snapshot(session)
            return True
        if exc.code == "snapshot_required":
            await self._install_snapshot(session)
            return True
        if exc.code == "stale_epoch":
            theirs = int(exc.body.get("epoch", 0))
            if theirs > self.epoch:
                self.on_epoch(theirs)
                self.epoch = theirs
                return True
        return False

    async def _install_snapshot(self, session: aiohttp.ClientSession) -> None:
        self.state = "snapshot"
        self.reconciled = False
        self.diverged = True  # until installed, the log is not known to continue the leader's
        self.streaming = False
        path = self.engine.data_dir / "incoming-snapshot.tar"
        url = f"{self.leader_url}/v1/replication/snapshot"
        params = {"epoch": str(self.epoch), "node_id": self.node_id}
        loop = asyncio.get_running_loop()
        try:
            async with session.get(url, params=params, headers=self.auth()) as resp:
                if resp.status != 200:
                    raise await _error_of(resp)
                seq = int(resp.headers.get("X-DVec-Snapshot-Seq", "0"))
                fh = await loop.run_in_executor(None, open, path, "wb")
                try:
                    async for chunk in resp.content.iter_chunked(1 << 20):
                        await loop.run_in_executor(None, fh.write, chunk)
                    await loop.run_in_executor(None, fh.flush)
                    await loop.run_in_executor(None, os.fsync, fh.fileno())
                finally:
                    fh.close()
            installed = await _uncancellable(lambda: self.engine.install_snapshot(path))
            self.diverged = False  # the store is now the leader's snapshot
            self.snapshots_installed += 1
            log.info("installed snapshot at seq %d from %s (announced %d)",
                     installed, self.leader_url, seq)  # fmt: skip
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    # ------------------------------------------------------------------ acks
    async def _ack_loop(self, session: aiohttp.ClientSession) -> None:
        url = f"{self.leader_url}/v1/replication/ack"
        timeout = aiohttp.ClientTimeout(total=self.options.read_timeout)
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.options.ack_interval):
                    await self._progress.wait()
            self._progress.clear()
            if not self.streaming:
                continue
            body = {
                "node_id": self.node_id,
                "epoch": self.epoch,
                "received_seq": self.engine.durable_seq,
                # Applied may run ahead of durable here; the leader counts only durable.
                "applied_seq": min(self.engine.applied_seq, self.engine.durable_seq),
            }
            if self.lease_token:
                body["lease_token"] = self.lease_token
                self.last_token_ack = time.monotonic()
            try:
                async with session.post(
                    url, json=body, timeout=timeout, headers=self.auth()
                ) as resp:
                    if resp.status != 200:
                        refused = await _error_of(resp)
                        theirs = int(refused.body.get("epoch", 0) or 0)
                        if refused.code == "stale_epoch" and theirs > self.epoch:
                            self.on_epoch(theirs)
                            self.epoch = theirs
                    else:
                        await resp.read()
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
                log.debug("ack to %s failed: %s", url, exc)
