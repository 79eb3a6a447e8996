"""TLS for the node's port and for the calls it makes to other members (DESIGN.md "Access").

With ``tls_cert_file`` and ``tls_key_file`` set, the node serves HTTPS only (plain HTTP to the
port fails the handshake). ``tls_ca_file`` is the CA members trust: outgoing calls (a
follower to its leader) verify the peer's certificate against it and present this member's
own certificate; incoming connections that present a certificate are verified against it.

Renewal without downtime: :class:`Reloader` loads the certificate and key again when their
files change (a Secret updated in place), into the same contexts, so new connections get the
new certificate and open ones go on; a changed CA file is added to what they trust (a CA
rotation, see :meth:`Reloader.check`).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from pathlib import Path

log = logging.getLogger(__name__)


class TlsFiles:
    def __init__(self, cert: Path, key: Path, ca: Path | None) -> None:
        self.cert, self.key, self.ca = cert, key, ca

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.cert, self.key)
        if self.ca is not None:
            context.load_verify_locations(self.ca)
            context.verify_mode = ssl.CERT_OPTIONAL
        return context

    def client_context(self) -> ssl.SSLContext:
        """Verifies members against the CA (the system's when none is given); presents ours."""
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=None if self.ca is None else str(self.ca)
        )
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.cert, self.key)
        return context

    def stamp(self) -> tuple[float, float, float]:
        ca = self.ca.stat().st_mtime if self.ca is not None else 0.0
        return (self.cert.stat().st_mtime, self.key.stat().st_mtime, ca)


class Reloader:
    """Keeps contexts' certificate chains current with the files (see the module docstring)."""

    def __init__(self, files: TlsFiles, *contexts: ssl.SSLContext) -> None:
        self.files = files
        self.contexts = contexts
        self._stamp = files.stamp()

    def check(self) -> bool:
        """Reload if the files changed; True if it did. A half-written pair keeps the old.

        A changed CA file is added to what the contexts trust (a rotation: members still on
        the old CA's certificates and those on the new one both verify until each restarts;
        an SSL context cannot forget a CA, so the old one is dropped at the next restart).
        """
        try:
            stamp = self.files.stamp()
            if stamp == self._stamp:
                return False
            for context in self.contexts:
                context.load_cert_chain(self.files.cert, self.files.key)
                if self.files.ca is not None and stamp[2] != self._stamp[2]:
                    context.load_verify_locations(self.files.ca)
        except (OSError, ssl.SSLError) as exc:
            log.error("TLS certificate reload failed, keeping the current one: %s", exc)
            return False
        self._stamp = stamp
        log.info("TLS certificate reloaded from %s", self.files.cert)
        return True

    async def watch(self, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            self.check()


class Tls:
    """A node's TLS: the server context, the client context, and their reloader."""

    def __init__(self, files: TlsFiles) -> None:
        self.files = files
        self.server = files.server_context()
        self.client = files.client_context()
        self.reloader = Reloader(files, self.server, self.client)
