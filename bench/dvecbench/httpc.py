"""A small blocking HTTP/1.1 client with keep-alive, for setup, recall passes and ingest.

The timed search phases use wrk; this client only has to be correct and cheap enough not to
hide the server's ingest rate: bodies are encoded before the clock starts, and each worker
thread keeps one persistent connection.
"""

from __future__ import annotations

import http.client
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson


class HttpError(RuntimeError):
    def __init__(self, method: str, path: str, status: int, body: bytes) -> None:
        super().__init__(f"{method} {path} -> {status}: {body[:500]!r}")
        self.status = status
        self.body = body


class Client:
    """One keep-alive connection to one loopback server."""

    def __init__(self, base_url: str, *, timeout: float = 120.0) -> None:
        parsed = urllib.parse.urlsplit(base_url)
        if parsed.hostname is None or not parsed.hostname.startswith("127."):
            raise ValueError(f"the bench only talks to loopback, not {base_url}")
        self.base_url = base_url.rstrip("/")
        self._host = parsed.hostname
        self._port = parsed.port or 80
        self._timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            self._conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        *,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        all_headers = dict(headers or {})
        if body is not None:
            all_headers.setdefault("Content-Type", content_type)
        for attempt in (1, 2):
            conn = self._connection()
            try:
                conn.request(method, path, body=body, headers=all_headers)
                resp = conn.getresponse()
                return resp.status, resp.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                # A keep-alive connection the server closed: reconnect once.
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def json(
        self,
        method: str,
        path: str,
        payload: Any = None,
        *,
        ok: Sequence[int] = (200, 201),
        headers: dict[str, str] | None = None,
    ) -> Any:
        body = None if payload is None else orjson.dumps(payload)
        status, data = self.request(method, path, body, headers=headers)
        if status not in ok:
            raise HttpError(method, path, status, data)
        return orjson.loads(data) if data else None


def send_all(
    base_url: str,
    bodies: Sequence[bytes],
    send: Callable[[Client, bytes], None],
    *,
    concurrency: int,
) -> float:
    """Send every body with `concurrency` requests in flight; returns the seconds taken."""
    lock = threading.Lock()
    position = iter(range(len(bodies)))
    local = threading.local()
    clients: list[Client] = []

    def client() -> Client:
        c: Client | None = getattr(local, "client", None)
        if c is None:
            c = Client(base_url)
            local.client = c
            with lock:
                clients.append(c)
        return c

    def worker() -> None:
        c = client()
        while True:
            with lock:
                i = next(position, None)
            if i is None:
                return
            send(c, bodies[i])

    started = time.perf_counter()
    try:
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            for fut in [pool.submit(worker) for _ in range(concurrency)]:
                fut.result()
        return time.perf_counter() - started
    finally:
        for c in clients:
            c.close()
