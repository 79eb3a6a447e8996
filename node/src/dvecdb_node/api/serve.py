"""Run the node's app: aiohttp's ``run_app`` with the fast lane in front of its protocol.

Same life cycle as ``web.run_app``: SIGTERM/SIGINT stop accepting, in-flight requests finish
(within ``shutdown_grace_seconds``), then the cleanup contexts close the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl

from aiohttp import web

from dvecdb_node.api.fastlane import LaneProtocol, SearchLane
from dvecdb_node.api.keys import TLS
from dvecdb_node.diagnostics import install_task_dump
from dvecdb_node.settings import NodeSettings

log = logging.getLogger(__name__)


class LaneSite(web.BaseSite):
    """A TCP site whose connections start in the fast lane (``fast_search``), else aiohttp."""

    def __init__(
        self,
        runner: web.AppRunner,
        host: str,
        port: int,
        *,
        fast: bool,
        grace: float,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(runner)
        self._ssl = ssl_context
        self._host = host
        self._port = port
        self._fast = fast
        self._grace = grace
        self.lane: SearchLane | None = None

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl is not None else "http"
        return f"{scheme}://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        if not self._fast:
            self._server = await loop.create_server(server, self._host, self._port, ssl=self._ssl)
            return
        assert isinstance(self._runner, web.AppRunner)
        lane = self.lane = SearchLane(self._runner.app, server)
        lane.start()
        self._server = await loop.create_server(
            lambda: LaneProtocol(lane), self._host, self._port, ssl=self._ssl
        )

    async def stop(self) -> None:
        await super().stop()
        if self.lane is not None:
            await self.lane.close(self._grace)


async def _serve(app: web.Application, settings: NodeSettings) -> None:
    runner = web.AppRunner(
        app,
        handle_signals=True,
        access_log=None,
        shutdown_timeout=settings.shutdown_grace_seconds,
        keepalive_timeout=settings.keepalive_seconds,
    )
    await runner.setup()
    install_task_dump()
    try:
        site = LaneSite(
            runner,
            settings.host,
            settings.port,
            fast=settings.fast_search,
            grace=settings.shutdown_grace_seconds,
            ssl_context=None if (tls := app.get(TLS)) is None else tls.server,
        )
        await site.start()
        await asyncio.Event().wait()  # until a signal raises GracefulExit
    finally:
        await runner.cleanup()


def run(app: web.Application, settings: NodeSettings) -> None:
    """Serve until SIGTERM/SIGINT (as ``web.run_app`` does)."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    main = loop.create_task(_serve(app, settings))
    try:
        loop.run_until_complete(main)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    finally:
        main.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            loop.run_until_complete(main)
        left = asyncio.all_tasks(loop)
        for task in left:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
