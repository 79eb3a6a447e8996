"""TLS for the node's port and for the calls it makes to other members (DESIGN.md "Access").

With ``tls_cert_file`` and ``tls_key_file`` set, the node serves HTTPS only (plain HTTP to the
port fails the handshake). ``tls_ca_file`` is the CA members trust: outgoing calls (a
follower to its leader) verify the peer's certificate against it and present this member's
own certificate; incoming connections that present a certificate are verified against it.
Renewal and CA rotation without downtime: :class:`dvecdb_client.tlsfiles.Reloader`, shared
with the router.
"""

from __future__ import annotations

from dvecdb_client.tlsfiles import Reloader, TlsFiles


class Tls:
    """A node's TLS: the server context, the client context, and their reloader (both
    present the member's certificate and trust the CA)."""

    def __init__(self, files: TlsFiles) -> None:
        self.files = files
        self.server = files.server_context()
        self.client = files.client_context()
        contexts = (self.server, self.client)
        self.reloader = Reloader(files, presenting=contexts, trusting=contexts)
