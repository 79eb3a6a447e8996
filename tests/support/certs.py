"""A throwaway CA and the certificates TLS tests present, issued by localkube's PKI code."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from localkube.pki import cert_pem, issue, key_pem, name


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path
    serial: int


class TestCa:
    """A CA in ``folder`` (``ca.crt``); :meth:`issue` signs server-and-client certificates."""

    __test__ = False  # not a pytest class

    def __init__(self, folder: Path, common_name: str = "dvecdb test CA") -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = name(common_name)
        self.cert = issue(self.name, self.key, self.name, self.key, ca=True)
        self.path = folder / "ca.crt"
        self.path.write_bytes(cert_pem(self.cert))

    def issue(
        self,
        common_name: str,
        *,
        ips: tuple[str, ...] = ("127.0.0.1",),
        dns: tuple[str, ...] = ("localhost",),
        expired: bool = False,
        into: Path | None = None,
    ) -> Issued:
        """A certificate for 127.0.0.1 and localhost, written to ``into`` or the CA folder."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        cert = issue(
            name(common_name),
            key,
            self.name,
            self.key,
            usages=[ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
            sans=sans,
            valid=(now - dt.timedelta(days=10), now - dt.timedelta(days=1)) if expired else None,
        )
        folder = into or self.folder
        folder.mkdir(parents=True, exist_ok=True)
        cert_path, key_path = folder / f"{common_name}.crt", folder / f"{common_name}.key"
        key_path.write_bytes(key_pem(key))
        cert_path.write_bytes(cert_pem(cert))
        return Issued(cert_path, key_path, cert.serial_number)
