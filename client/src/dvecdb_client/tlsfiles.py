"""TLS contexts made from mounted files, kept current when the files change (DESIGN.md "Access").

The node and the router both serve with a certificate the operator mounts from a Secret and
both verify members against the cluster's CA file. The kubelet updates a mounted Secret in
place, so :class:`Reloader` loads the files again into the same contexts: new connections get
the new certificate (and trust a new CA), open ones go on. A half-written pair (one file
updated, not yet the other) keeps the old one until both agree.

A changed CA file is *added* to what the contexts trust: during a CA rotation members still on
the old CA's certificates and those on the new one both verify; an SSL context cannot forget a
CA, so the old one is dropped at the next restart.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


def _mtime(path: Path | None) -> float:
    return 0.0 if path is None else path.stat().st_mtime


@dataclass(frozen=True)
class TlsFiles:
    """A certificate and its key (either both or neither) and the CA to trust (None: the
    system's CAs)."""

    cert: Path | None
    key: Path | None
    ca: Path | None = None

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise ValueError("a TLS certificate needs its key, and a key its certificate")

    def server_context(self) -> ssl.SSLContext:
        """Serves our certificate; a client certificate, when one is presented, is verified
        against the CA (members do; clients need not)."""
        if self.cert is None or self.key is None:
            raise ValueError("serving TLS needs a certificate and its key")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.cert, self.key)
        if self.ca is not None:
            context.load_verify_locations(self.ca)
            context.verify_mode = ssl.CERT_OPTIONAL
        return context

    def client_context(self) -> ssl.SSLContext:
        """Verifies servers against the CA (the system's when none is given) and presents
        our certificate when we have one."""
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=None if self.ca is None else str(self.ca)
        )
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cert is not None and self.key is not None:
            context.load_cert_chain(self.cert, self.key)
        return context

    def pair_stamp(self) -> tuple[float, float]:
        return (_mtime(self.cert), _mtime(self.key))

    def ca_stamp(self) -> float:
        return _mtime(self.ca)


class Reloader:
    """Keeps contexts current with the files: ``presenting`` contexts get a renewed
    certificate and key, ``trusting`` ones a changed CA (see the module docstring)."""

    def __init__(
        self,
        files: TlsFiles,
        *,
        presenting: Sequence[ssl.SSLContext] = (),
        trusting: Sequence[ssl.SSLContext] = (),
    ) -> None:
        self.files = files
        self.presenting = tuple(presenting)
        self.trusting = tuple(trusting)
        self._pair = files.pair_stamp()
        self._ca = files.ca_stamp()

    def check(self) -> bool:
        """Reload what changed; True if anything was. A failed load keeps the current one."""
        reloaded = False
        files = self.files
        try:
            pair = files.pair_stamp()
            if pair != self._pair and files.cert is not None and files.key is not None:
                for context in self.presenting:
                    context.load_cert_chain(files.cert, files.key)
                self._pair = pair
                reloaded = True
                log.info("TLS certificate reloaded from %s", files.cert)
        except (OSError, ssl.SSLError) as exc:
            log.error("TLS certificate reload failed, keeping the current one: %s", exc)
        try:
            ca = files.ca_stamp()
            if ca != self._ca and files.ca is not None:
                for context in self.trusting:
                    context.load_verify_locations(files.ca)
                self._ca = ca
                reloaded = True
                log.info("TLS CA file %s changed: its certificates are trusted too", files.ca)
        except (OSError, ssl.SSLError) as exc:
            log.error("TLS CA reload failed, keeping the current one: %s", exc)
        return reloaded

    async def watch(self, every: float) -> None:
        """Check every ``every`` seconds until cancelled."""
        while True:
            await asyncio.sleep(every)
            self.check()
