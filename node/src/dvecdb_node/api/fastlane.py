"""The fast lane: single connections that only search skip aiohttp's per-request machinery.

A search over aiohttp costs ~0.3 ms of CPU in request objects, routing and middlewares:
more than hnswlib itself. Every connection starts here. While its requests are plain
``POST /v1/collections/{name}/search`` calls (see ``http1`` for what "plain" means) this
protocol answers them itself, through the same steps as the aiohttp route: the same token
check, read gate, validation, search, JSON and error bodies, and the same request metrics.
The first request it does not take, the connection is handed to aiohttp with the bytes not
yet consumed, and stays there; so every other endpoint, and every unusual request, sees
aiohttp exactly as before.

Searches planned ``INLINE`` (``dvecdb_node.search.plan``) are not answered one by one: each
connection's request joins a batch that the lane answers once the event loop has read every
connection that had data, with one index search for all their vectors. One call instead of one per
request saves its fixed costs, and on a node with more than one core the batch's rows are
searched on several at once (``storage.parallel``). A lone client sees no wait: its batch is
answered in the same loop iteration.

Answers planned otherwise (quorum or min_seq reads, filtered or costly searches), and
inline ones that found the index busy with a write, run as a task. A connection reads
nothing more until its answer is written, so pipelined answers keep their order.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Coroutine
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, NamedTuple, cast

import numpy as np
import orjson
from aiohttp import web

from dvecdb_node.api import search
from dvecdb_node.api.auth import check_access, parse_bearer
from dvecdb_node.api.errors import error_body, node_error_parts
from dvecdb_node.api.gates import check_serving
from dvecdb_node.api.http1 import Head, parse_head
from dvecdb_node.api.keys import CREDENTIALS, METRICS, SETTINGS
from dvecdb_node.errors import NodeError
from dvecdb_node.search.plan import Placement
from dvecdb_node.storage.filters import Clause
from dvecdb_node.storage.index import Collection

log = logging.getLogger(__name__)

MAX_HEAD = 16 * 1024
# Pipelined bytes buffered while an answer is being waited for, before reading pauses.
MAX_PENDING = 256 * 1024
_PREFIX = b"/v1/collections/"
_SUFFIX = b"/search"
_JSON = b"application/json"

Answer = tuple[int, bytes, dict[str, str]]


class _Queued(NamedTuple):
    """A plain search waiting in the lane's batch."""

    conn: LaneProtocol
    prepared: search.PreparedSearch
    close: bool
    started: float


class _Clock:
    """The ``Date`` header, formatted once per second."""

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def now(self) -> bytes:
        second = int(time.time())
        if second != self._second:
            self._second = second
            self._value = formatdate(second, usegmt=True).encode()
        return self._value


@functools.cache
def _status_lines(status: int) -> bytes:
    """The status line and the Content-Type line, made once per status."""
    phrase = HTTPStatus(status).phrase.encode()
    return b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\n" % (status, phrase, _JSON)


def route_name(head: Head) -> str | None:
    """The collection of a fast-lane search, or None for any other request."""
    path = head.path
    if head.method != b"POST" or not path.startswith(_PREFIX) or not path.endswith(_SUFFIX):
        return None
    name = path[len(_PREFIX) : -len(_SUFFIX)]
    if not name or b"/" in name or not name.isascii():
        return None
    return name.decode("ascii")


class SearchLane:
    """Per-server state: the app, aiohttp's protocol factory, the open lane connections."""

    def __init__(self, app: web.Application, aiohttp_factory: Callable[[], asyncio.Protocol]):
        self.app = app
        self.aiohttp_factory = aiohttp_factory
        self.settings = app[SETTINGS]
        self.credentials = app[CREDENTIALS]
        self.metrics = app[METRICS]
        self.search = app[search.SEARCH]
        self.connections: set[LaneProtocol] = set()
        self.clock = _Clock()
        self._batch: list[_Queued] = []
        self._all_closed: asyncio.Event | None = None
        self._sweeper: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep_idle(), name="fast lane idle sweep")

    async def _sweep_idle(self) -> None:
        """Close connections that completed no request for ``keepalive_seconds``.

        Counting from the last complete request also ends clients trickling a head in slowly.
        """
        loop = asyncio.get_running_loop()
        idle = self.settings.keepalive_seconds
        while True:
            await asyncio.sleep(idle / 5)
            horizon = loop.time() - idle
            for conn in list(self.connections):
                if not conn.busy and conn.last_request < horizon:
                    conn.close_when_idle()

    def accepts(self, head: Head) -> str | None:
        if head.content_length > self.settings.max_body_bytes:
            return None  # aiohttp answers 413 with its own reading of the body
        return route_name(head)

    def answer(
        self, conn: LaneProtocol, name: str, head: Head, body: bytes
    ) -> Answer | Coroutine[Any, Any, Answer] | None:
        """An answer now (an error), a coroutine producing it when it must wait, or None
        when the search joined the batch (``conn.answered`` is called with its answer)."""
        started = time.perf_counter()
        try:
            prepared, placement = self._admit(name, head, body)
            if placement is not Placement.INLINE:
                return self._answer_later(prepared, placement, started)
        except Exception as exc:
            return self._fail(exc, started)
        if not self._batch:
            asyncio.get_running_loop().call_soon(self._answer_batch)
        self._batch.append(_Queued(conn, prepared, head.close, started))
        return None

    def _answer_batch(self) -> None:
        """Answer the queued searches, one index search per (collection, k, filter).

        Each search was planned inline on its own; their sum is not held against them (they
        are separate requests, and one index call costs less than one per request).
        """
        batch, self._batch = self._batch, []
        groups: dict[tuple[Collection, int, tuple[Clause, ...] | None], list[_Queued]] = {}
        for item in batch:
            if item.conn.transport is not None:  # else the client has gone
                query = item.prepared.query
                clauses = None if query.clauses is None else tuple(query.clauses)
                key = (item.prepared.collection, query.k, clauses)
                groups.setdefault(key, []).append(item)
        for (collection, k, _), items in groups.items():
            self._answer_group(collection, k, items)

    def _answer_group(self, collection: Collection, k: int, items: list[_Queued]) -> None:
        try:
            seq = self.search.engine.applied_seq
            queries = [item.prepared.query.queries for item in items]
            matrix = queries[0] if len(queries) == 1 else np.concatenate(queries)
            clauses = items[0].prepared.query.clauses
            rows = self.search.searcher.search_inline(collection, matrix, k, clauses)
        except Exception as exc:
            for item in items:
                item.conn.answered(self._fail(exc, item.started), item.close)
            return
        if rows is None:  # a write holds the index
            for item in items:
                later = self._answer_later(item.prepared, Placement.POOLED, item.started)
                item.conn.wait_for(later, item.close)
            return
        self.metrics.fastlane_batch.observe(len(items))
        start = 0
        for item in items:
            end = start + len(item.prepared.query.queries)
            try:
                body = search.render(item.prepared, rows[start:end], seq)
                answer = self._finish(200, body, {}, item.started)
            except Exception as exc:
                answer = self._fail(exc, item.started)
            start = end
            item.conn.answered(answer, item.close)

    def _admit(self, name: str, head: Head, body: bytes) -> tuple[search.PreparedSearch, Placement]:
        token = None
        if head.authorization is not None:
            token = parse_bearer(head.authorization.decode("latin-1"))
        path = head.path.decode("ascii")
        check_access("POST", path, token, self.credentials.current)
        check_serving(self.app)
        raw_type = head.content_type
        content_type = None if raw_type is None else raw_type.decode("latin-1")
        return search.admit(self.search, name, body, content_type)

    async def _answer_later(
        self, prepared: search.PreparedSearch, placement: Placement, started: float
    ) -> Answer:
        try:
            out = await search.answer(self.search, prepared, placement)
        except Exception as exc:
            return self._fail(exc, started)
        return self._finish(200, out, {}, started)

    def _fail(self, exc: Exception, started: float) -> Answer:
        if isinstance(exc, NodeError):
            body, headers = node_error_parts(exc)
            return self._finish(exc.status, body, headers, started)
        log.exception("unhandled error on POST %s", search.ROUTE)
        body = orjson.dumps(error_body("internal_error", "internal server error"))
        return self._finish(500, body, {}, started)

    def _finish(self, status: int, body: bytes, headers: dict[str, str], started: float) -> Answer:
        self.metrics.observe_request("POST", search.ROUTE, status, time.perf_counter() - started)
        return status, body, headers

    def render(self, answer: Answer, close: bool) -> bytes:
        status, body, headers = answer
        extra = b"".join(f"{key}: {value}\r\n".encode("latin-1") for key, value in headers.items())
        return b"%sContent-Length: %d\r\nDate: %s\r\n%s%s\r\n%s" % (
            _status_lines(status),
            len(body),
            self.clock.now(),
            extra,
            b"Connection: close\r\n" if close else b"",
            body,
        )

    def admit(self, conn: LaneProtocol) -> None:
        self.connections.add(conn)
        self.metrics.fastlane_connections.inc()

    def forget(self, conn: LaneProtocol, *, handed_off: bool = False) -> None:
        if conn in self.connections:
            self.connections.discard(conn)
            self.metrics.fastlane_connections.dec()
            if handed_off:
                self.metrics.fastlane_handoffs.inc()
        if not self.connections and self._all_closed is not None:
            self._all_closed.set()

    async def close(self, grace: float) -> None:
        """Close idle connections now, busy ones once answered (at most ``grace`` s)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
        self._all_closed = asyncio.Event()
        if not self.connections:
            return
        for conn in list(self.connections):
            conn.close_when_idle()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await self._all_closed.wait()
        for conn in list(self.connections):
            conn.abort()


class LaneProtocol(asyncio.Protocol):
    """One client connection while it is in the fast lane (see the module docstring)."""

    def __init__(self, lane: SearchLane) -> None:
        self.lane = lane
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiting: asyncio.Task[Answer] | None = None
        self.waiting_close = False
        self.queued = False  # a search of this connection is in the lane's batch
        self.write_paused = False
        self.read_paused = False
        self.closing = False
        self.last_request = asyncio.get_running_loop().time()

    # ---------------------------------------------------------- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.lane.admit(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lane.forget(self)
        if self.waiting is not None:
            self.waiting.cancel()
        self.transport = None

    @property
    def busy(self) -> bool:
        """An answer is still owed: read nothing more, so pipelined answers keep order."""
        return self.waiting is not None or self.queued

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy and not self.write_paused:
            self._serve()
        elif len(self.buf) > MAX_PENDING:
            self._pause_reading()

    def eof_received(self) -> bool:
        return False  # close once the peer has nothing more to say

    def pause_writing(self) -> None:
        self.write_paused = True
        self._pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        self._resume_reading()
        if not self.busy:
            self._serve()

    # ---------------------------------------------------------------- serving
    def _serve(self) -> None:
        """Answer the complete requests in the buffer, in order, until one must wait."""
        while self.buf and self.transport is not None and not (self.write_paused or self.closing):
            head = parse_head(self.buf, MAX_HEAD)
            if head is None:
                return  # the head is still arriving
            name = self.lane.accepts(head) if isinstance(head, Head) else None
            if name is None or not isinstance(head, Head):
                self._hand_off()
                return
            end = head.size + head.content_length
            if len(self.buf) < end:
                return  # the body is still arriving
            body = bytes(self.buf[head.size : end])
            del self.buf[:end]
            self.last_request = asyncio.get_running_loop().time()
            answer = self.lane.answer(self, name, head, body)
            if answer is None:
                self.queued = True
                return
            if isinstance(answer, tuple):
                self._write(answer, head.close)
                continue
            self.wait_for(answer, head.close)
            return
        if self.closing and self.transport is not None:
            self.transport.close()

    def answered(self, answer: Answer, close: bool) -> None:
        """The batch answered this connection's queued search."""
        self.queued = False
        if self.transport is None:
            return
        self._write(answer, close)
        self._resume_reading()
        self._serve()

    def wait_for(self, answer: Coroutine[Any, Any, Answer], close: bool) -> None:
        """Answer through a task: the search must wait for something."""
        self.queued = False
        self.waiting = asyncio.ensure_future(answer)
        self.waiting_close = close
        self.waiting.add_done_callback(self._answered)

    def _answered(self, task: asyncio.Task[Answer]) -> None:
        self.waiting = None
        if task.cancelled() or self.transport is None:
            return
        self._write(task.result(), self.waiting_close)
        self._resume_reading()
        self._serve()

    def _write(self, answer: Answer, close: bool) -> None:
        assert self.transport is not None
        self.transport.write(self.lane.render(answer, close))
        if close:
            self.transport.close()
            self.transport = None
            self.buf.clear()

    def _hand_off(self) -> None:
        """Give the connection, with the bytes not yet consumed, to aiohttp for good."""
        transport = self.transport
        assert transport is not None
        self.lane.forget(self, handed_off=True)
        self._resume_reading()
        handler = self.lane.aiohttp_factory()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        self.transport = None
        pending, self.buf = bytes(self.buf), bytearray()
        if pending:
            handler.data_received(pending)

    def _pause_reading(self) -> None:
        if self.transport is not None and not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self.transport is not None and self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()

    # --------------------------------------------------------------- shutdown
    def close_when_idle(self) -> None:
        self.closing = True
        if not self.busy and self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
