"""A fault-injecting TCP proxy for replication tests (runs on its own thread and loop).

``FaultProxy(target_port).start()`` listens on a free loopback port and forwards to the
target. ``partition()`` silently drops every byte in both directions on existing and new
connections (a blackhole, like a cut network: peers see timeouts, not resets); ``heal()``
forwards again and closes the connections that lived through the partition, so both sides
reconnect cleanly instead of resuming a stream with a hole in it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

LOOPBACK = "127.0.0.1"


class FaultProxy:
    def __init__(self, target_port: int, target_host: str = LOOPBACK) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.blackhole = False
        self.dropped_bytes = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tainted: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> FaultProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)
        return self

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._handle, LOOPBACK, 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        pair = {writer, up_writer}
        self._writers |= pair
        if self.blackhole:
            self._tainted |= pair
        try:
            await asyncio.gather(
                self._pipe(reader, up_writer, pair), self._pipe(up_reader, writer, pair)
            )
        finally:
            for w in pair:
                self._writers.discard(w)
                self._tainted.discard(w)
                with contextlib.suppress(Exception):
                    w.close()

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        pair: set[asyncio.StreamWriter],
    ) -> None:
        try:
            while data := await reader.read(65536):
                if self.blackhole:
                    self._tainted |= pair
                    self.dropped_bytes += len(data)
                    continue
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    def _run(self, fn: object) -> None:
        async def call() -> None:
            assert callable(fn)
            fn()

        asyncio.run_coroutine_threadsafe(call(), self._loop).result(10)

    def partition(self) -> None:
        def cut() -> None:
            self.blackhole = True
            self._tainted |= self._writers

        self._run(cut)

    def heal(self) -> None:
        def restore() -> None:
            self.blackhole = False
            for writer in list(self._tainted):
                writer.close()
            self._tainted.clear()

        self._run(restore)

    def stop(self) -> None:
        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for writer in list(self._writers):
                writer.close()

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
