"""Transport alone: what one HTTP request and response cost a Python server here, no search.

A uvloop `asyncio.Protocol` that reads just enough of each request (the head up to the blank
line, then `Content-Length` bytes of body) and answers every `POST .../search` with one canned
200 JSON body, a real 10-hit answer of the bench's data set rendered once by the bench, and
`GET /readyz` with 200. Connections stay open, and pipelined requests are answered in order.
Its CPU per request plus in-process hnswlib's CPU per query is the least any Python server can
spend on one query on one core, which bounds the QPS ratio a pinned server can reach.

Run: `python transport_server.py PORT ANSWER.json` (loopback only).
"""

from __future__ import annotations

import asyncio
import sys
import time
from email.utils import formatdate
from pathlib import Path
from typing import NamedTuple, cast

MAX_HEAD = 64 * 1024
MAX_BODY = 64 * 1024 * 1024
_END = b"\r\n\r\n"


class Request(NamedTuple):
    method: bytes
    path: bytes
    size: int  # head, blank line and body
    close: bool  # the client asked to close after this answer


class BadRequest(Exception):
    """The request cannot be framed; the answer is an error and the connection closes."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason = status, reason


def next_request(buf: bytes | bytearray, start: int) -> Request | None:
    """The complete request at `buf[start:]`, or None while more bytes are needed."""
    end = buf.find(_END, start, start + MAX_HEAD + len(_END))
    if end < 0:
        if len(buf) - start > MAX_HEAD:
            raise BadRequest(431, "Request Header Fields Too Large", "request head too large")
        return None
    lines = bytes(buf[start:end]).split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        raise BadRequest(400, "Bad Request", "malformed request line")
    close = parts[2] == b"HTTP/1.0"
    length = 0
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            raise BadRequest(400, "Bad Request", "malformed header line")
        key = name.strip().lower()
        if key == b"content-length":
            value = value.strip()
            if not value.isdigit() or int(value) > MAX_BODY:
                raise BadRequest(400, "Bad Request", "bad Content-Length")
            length = int(value)
        elif key == b"transfer-encoding":
            raise BadRequest(501, "Not Implemented", "only Content-Length bodies are read")
        elif key == b"connection":
            tokens = value.strip().lower()
            close = b"close" in tokens or (close and b"keep-alive" not in tokens)
    size = end + len(_END) + length - start
    if len(buf) - start < size:
        return None
    return Request(parts[0], parts[1], size, close)


class Answers:
    """Pre-rendered responses; only the `Date` header changes, once a second."""

    def __init__(self, search_body: bytes) -> None:
        self._search = self._head(200, "OK", search_body)
        self._ready = self._head(200, "OK", b'{"status":"ready"}')
        self._missing = self._head(404, "Not Found", b'{"error":"no such route"}')
        self._second = -1
        self._date = b""

    @staticmethod
    def _head(status: int, reason: str, body: bytes) -> tuple[bytes, bytes]:
        before = f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        after = f"Content-Length: {len(body)}\r\n\r\n".encode() + body
        return before.encode() + b"Date: ", b"\r\n" + after

    def date(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second, self._date = now, formatdate(now, usegmt=True).encode()
        return self._date

    def answer(self, request: Request) -> bytes:
        if request.method == b"POST" and request.path.endswith(b"/search"):
            before, after = self._search
        elif request.method == b"GET" and request.path == b"/readyz":
            before, after = self._ready
        else:
            before, after = self._missing
        return before + self.date() + after

    def error(self, exc: BadRequest) -> bytes:
        body = b'{"error":"%s"}' % str(exc).encode()
        before, after = self._head(exc.status, exc.reason, body)
        return before + self.date() + after


class Transport(asyncio.Protocol):
    """One connection: frame every complete request in the buffer, answer them in one write."""

    def __init__(self, answers: Answers) -> None:
        self.answers = answers
        self.pending = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        transport = self.transport
        assert transport is not None
        buf: bytes | bytearray = data
        if self.pending:
            self.pending += data
            buf = self.pending
        out: list[bytes] = []
        start, close = 0, False
        try:
            while not close:
                request = next_request(buf, start)
                if request is None:
                    break
                start += request.size
                out.append(self.answers.answer(request))
                close = request.close
        except BadRequest as exc:
            out.append(self.answers.error(exc))
            close = True
        self.pending = bytearray(buf[start:]) if start < len(buf) and not close else bytearray()
        if out:
            transport.write(out[0] if len(out) == 1 else b"".join(out))
        if close:
            transport.close()


async def serve(port: int, answers: Answers) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Transport(answers), "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def main(argv: list[str]) -> None:
    port, answer = int(argv[0]), Path(argv[1]).read_bytes()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve(port, Answers(answer)))


if __name__ == "__main__":
    main(sys.argv[1:])
