"""The router's own TLS (DESIGN.md "Access"): it serves HTTPS with the certificate the operator
mounts, and takes a renewed one without a restart.

The kubelet updates a mounted Secret in place; :class:`ServingTls` loads the pair again into
the same context when the files change, so new connections get the new certificate and open
ones go on. A half-written pair (one file updated, not yet the other) keeps the old one.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from aiohttp import web

log = logging.getLogger(__name__)


class ServingTls:
    def __init__(self, cert: str | Path, key: str | Path) -> None:
        self.cert, self.key = Path(cert), Path(key)
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.context.load_cert_chain(self.cert, self.key)
        self._stamp = self._files_stamp()

    def _files_stamp(self) -> tuple[float, float]:
        return (self.cert.stat().st_mtime, self.key.stat().st_mtime)

    def check(self) -> bool:
        """Reload when the files changed; True if it did."""
        try:
            stamp = self._files_stamp()
            if stamp == self._stamp:
                return False
            self.context.load_cert_chain(self.cert, self.key)
        except (OSError, ssl.SSLError) as exc:
            log.error("TLS certificate reload failed, keeping the current one: %s", exc)
            return False
        self._stamp = stamp
        log.info("TLS certificate reloaded from %s", self.cert)
        return True

    def watcher(self, every: float) -> Callable[[web.Application], AsyncIterator[None]]:
        """An aiohttp cleanup context that checks the files every `every` seconds."""

        async def watch(_: web.Application) -> AsyncIterator[None]:
            async def loop() -> None:
                while True:
                    await asyncio.sleep(every)
                    self.check()

            task = asyncio.create_task(loop())
            yield
            task.cancel()

        return watch


def client_context(ca_file: str | None) -> ssl.SSLContext | None:
    """Verifies https members against `ca_file` (None: the system's CAs)."""
    return None if ca_file is None else ssl.create_default_context(cafile=ca_file)
