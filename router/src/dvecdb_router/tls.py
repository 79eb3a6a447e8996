"""The router's TLS (DESIGN.md "Access"): it serves HTTPS with the certificate the operator
mounts, verifies members against the cluster's CA file, and takes a renewed certificate or a
rotated CA without a restart (:class:`dvecdb_client.tlsfiles.Reloader`, shared with the node).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from aiohttp import web

from dvecdb_client.tlsfiles import Reloader, TlsFiles


class RouterTls:
    """The serving context (with a certificate) and the members' client context (with a CA
    file); None for either means plain HTTP, or the system's CAs."""

    def __init__(self, cert: str | None, key: str | None, ca: str | None) -> None:
        def path(name: str | None) -> Path | None:
            return None if name is None else Path(name)

        files = TlsFiles(path(cert), path(key), path(ca))
        # Clients are not asked for certificates (keys authenticate them), and the router
        # presents none to members (its calls carry the cluster token).
        pair, trust = TlsFiles(files.cert, files.key), TlsFiles(None, None, files.ca)
        self.serving = None if files.cert is None else pair.server_context()
        self.members = None if files.ca is None else trust.client_context()
        self.reloader = Reloader(
            files,
            presenting=[] if self.serving is None else [self.serving],
            trusting=[] if self.members is None else [self.members],
        )

    def watcher(self, every: float) -> Callable[[web.Application], AsyncIterator[None]]:
        """An aiohttp cleanup context that checks the files every `every` seconds."""

        async def watch(_: web.Application) -> AsyncIterator[None]:
            task = asyncio.create_task(self.reloader.watch(every))
            yield
            task.cancel()

        return watch
