"""The router's calls to members over a lean HTTP/1.1 keep-alive client.

Every client request costs the router one call to each shard it touches; aiohttp's client
spends about four times the CPU of the request itself on its machinery (measured: ~250 us
against ~60 us per call on this bench machine), the largest part of the router's overhead on
single searches. The members are our own nodes, answering with ``Content-Length`` (chunked
and read-until-close bodies are read too), so a small protocol is enough: one request at a
time per connection, idle connections kept per member, a connection that ended or failed is
dropped. A request that fails on a reused connection before any answer byte is sent once more
on a new one (the peer may have closed it idle; every call the router makes is idempotent).

Failures raise what aiohttp raised (``aiohttp.ClientConnectionError``, ``TimeoutError``), so
the circuit and retry logic of :mod:`.cluster` is unchanged.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import cast
from urllib.parse import quote, urlencode, urlsplit

import aiohttp

# Requests in flight to one member at most (as aiohttp's connector limit was); more wait.
PER_MEMBER = 64
_CRLF2 = b"\r\n\r\n"


class ResponseError(aiohttp.ClientPayloadError):
    """The member's answer could not be read as HTTP/1.1."""


@dataclass(frozen=True, slots=True)
class _Origin:
    host: str
    port: int
    ssl: ssl.SSLContext | None
    host_header: bytes


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.open = True
        self.keep_alive = True
        self.received = False  # some answer bytes arrived for the current request
        self._head: tuple[int, int | None, bool] | None = None  # status, length, chunked

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # (uvloop's is not a subclass)

    def data_received(self, data: bytes) -> None:
        if self.waiter is None or self.waiter.done():
            self.close()  # bytes nobody asked for: this connection cannot be trusted
            return
        self.buffer += data
        self.received = True
        try:
            self._parse()
        except ValueError as exc:
            self._fail(ResponseError(f"unreadable answer: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        head = self._head
        if head is not None and head[1] is None and not head[2]:
            # No length, not chunked: the body ends with the connection.
            waiter.set_result((head[0], bytes(self.buffer)))
            return
        reason = f": {exc}" if exc else ""
        waiter.set_exception(aiohttp.ServerDisconnectedError(f"the member closed{reason}"))

    # -- requests
    def send(self, request: bytes) -> asyncio.Future[tuple[int, bytes]]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.received = False
        self._head = None
        self.transport.write(request)
        return self.waiter

    def close(self) -> None:
        self.open = False
        if self.transport is not None:
            self.transport.close()

    def _fail(self, exc: Exception) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)

    def _parse(self) -> None:
        buffer = self.buffer
        while self._head is None:
            end = buffer.find(_CRLF2)
            if end < 0:
                return
            head = parse_head(bytes(buffer[:end]))
            del buffer[: end + 4]
            if 100 <= head.status < 200:
                continue  # an interim answer: the real one follows
            self.keep_alive = head.keep_alive
            length = 0 if head.status in (204, 304) else head.length
            self._head = (head.status, length, head.chunked)
        status, length, chunked = self._head
        assert self.waiter is not None
        if chunked:
            body = dechunk(buffer)
            if body is None:
                return
            self.waiter.set_result((status, body))
        elif length is not None and len(buffer) >= length:
            body = bytes(buffer[:length])
            del buffer[:length]
            self.waiter.set_result((status, body))
        # else: more to come (or, without a length, the end of the connection)


@dataclass(frozen=True, slots=True)
class Head:
    status: int
    length: int | None
    chunked: bool
    keep_alive: bool


def parse_head(raw: bytes) -> Head:
    """An answer's status line and the headers that frame its body (pure)."""
    lines = raw.split(b"\r\n")
    version, _, rest = lines[0].partition(b" ")
    if not version.startswith(b"HTTP/1.") or len(rest) < 3 or not rest[:3].isdigit():
        raise ValueError(f"bad status line {lines[0][:80]!r}")
    keep_alive = version == b"HTTP/1.1"
    length: int | None = None
    chunked = False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value.strip())
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif name == b"connection":
            token = value.strip().lower()
            keep_alive = token == b"keep-alive" or (keep_alive and token != b"close")
    return Head(int(rest[:3]), None if chunked else length, chunked, keep_alive)


def dechunk(buffer: bytearray) -> bytes | None:
    """A whole chunked body taken off the front of ``buffer``, or None until it has arrived
    (``buffer`` is left as it was)."""
    out = bytearray()
    at = 0
    while True:
        line_end = buffer.find(b"\r\n", at)
        if line_end < 0:
            return None
        size = int(bytes(buffer[at:line_end]).split(b";")[0].strip() or b"0", 16)
        at = line_end + 2
        if size == 0:
            trailer_end = buffer.find(b"\r\n", at)
            while trailer_end > at:  # trailers: skipped
                at = trailer_end + 2
                trailer_end = buffer.find(b"\r\n", at)
            if trailer_end < 0:
                return None
            del buffer[: trailer_end + 2]
            return bytes(out)
        if len(buffer) < at + size + 2:
            return None
        out += buffer[at : at + size]
        at += size + 2


@lru_cache(maxsize=4096)
def request_target(path: str) -> str:
    """A request path as sent on the wire (percent-encoded as aiohttp's client would)."""
    return quote(path, safe="/:@!$&'()*+,;=-._~%")


class Wire:
    """Keep-alive connections per member, for :meth:`request`."""

    def __init__(self, ssl_context: ssl.SSLContext | None, timeout: float) -> None:
        self.ssl_context = ssl_context
        self.timeout = timeout
        self._idle: dict[str, list[_Connection]] = {}
        self._origins: dict[str, _Origin] = {}
        self._busy: set[_Connection] = set()
        self._limits: dict[str, asyncio.Semaphore] = {}

    def _origin(self, base: str) -> _Origin:
        origin = self._origins.get(base)
        if origin is None:
            parts = urlsplit(base)
            if parts.scheme not in ("http", "https") or parts.hostname is None:
                raise ValueError(f"not an http(s) member URL: {base}")
            secure = parts.scheme == "https"
            port = parts.port or (443 if secure else 80)
            context = None
            if secure:
                if self.ssl_context is None:  # the system's CAs, loaded once
                    self.ssl_context = ssl.create_default_context()
                context = self.ssl_context
            host = parts.hostname
            shown = f"[{host}]" if ":" in host else host
            origin = _Origin(host, port, context, f"{shown}:{port}".encode("idna"))
            self._origins[base] = origin
        return origin

    async def _connect(self, origin: _Origin) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await loop.create_connection(
                _Connection,
                origin.host,
                origin.port,
                ssl=origin.ssl,
                server_hostname=origin.host if origin.ssl is not None else None,
            )
        except OSError as exc:  # refused, unreachable, a TLS failure (ssl.SSLError)
            raise aiohttp.ClientConnectionError(
                f"cannot connect to {origin.host}:{origin.port}: {exc}"
            ) from exc
        return conn

    async def request(
        self,
        base: str,
        method: str,
        path: str,
        body: bytes | None = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, bytes]:
        """Send one request to the member at ``base``; its status and body."""
        origin = self._origin(base)
        target = request_target(path)
        if params:
            target += "?" + urlencode(params, quote_via=quote)
        lines = [f"{method} {target} HTTP/1.1".encode(), b"Host: " + origin.host_header]
        for name, value in (headers or {}).items():
            lines.append(f"{name}: {value}".encode("latin-1"))
        if body is not None or method in ("POST", "PUT", "PATCH"):
            lines.append(b"Content-Length: %d" % len(body or b""))
        raw = b"\r\n".join(lines) + _CRLF2 + (body or b"")
        limit = self._limits.get(base)
        if limit is None:
            limit = self._limits[base] = asyncio.Semaphore(PER_MEMBER)
        async with asyncio.timeout(self.timeout), limit:
            idle = self._idle.setdefault(base, [])
            while idle:
                conn = idle.pop()
                if conn.open:
                    try:
                        return await self._exchange(base, conn, raw)
                    except aiohttp.ClientConnectionError:
                        if conn.received:
                            raise
                        # closed while idle: once more on a new connection
                    break
            return await self._exchange(base, await self._connect(origin), raw)

    async def _exchange(self, base: str, conn: _Connection, raw: bytes) -> tuple[int, bytes]:
        self._busy.add(conn)
        try:
            answer = await conn.send(raw)
        except BaseException:
            conn.close()
            raise
        finally:
            self._busy.discard(conn)
        idle = self._idle.setdefault(base, [])
        kept = conn.open and conn.keep_alive and not conn.buffer and base in self._origins
        if kept and len(idle) < PER_MEMBER:
            conn.waiter = None
            idle.append(conn)
        else:
            conn.close()
        return answer

    def forget(self, keep: set[str]) -> None:
        """Close the idle connections of members no longer listed."""
        for base in list(self._idle):
            if base not in keep:
                for conn in self._idle.pop(base):
                    conn.close()
                self._origins.pop(base, None)
                self._limits.pop(base, None)

    async def close(self) -> None:
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        for conn in list(self._busy):
            conn.close()
        self._idle.clear()
        await asyncio.sleep(0)  # let the transports finish closing
