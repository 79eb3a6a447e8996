"""The router's own TLS: a certificate without its key is refused at start; a renewed pair is
loaded into the serving context while a half-written one keeps the old; a rotated CA file is
trusted for members' certificates without a restart. Handshakes run over memory BIOs."""

from __future__ import annotations

import datetime as dt
import os
import ssl
from pathlib import Path

import pytest

from dvecdb_operator import certificates as certs
from dvecdb_operator.builders.common import ClusterRef
from dvecdb_router.cli import parse_args
from dvecdb_router.tls import RouterTls

pytestmark = pytest.mark.unit

NOW = dt.datetime.now(dt.UTC)
CLUSTER = ClusterRef("db", "ns")


def _pair(ca: tuple[bytes, bytes]) -> tuple[bytes, bytes]:
    return certs.issue_leaf(*ca, certs.router_leaf(CLUSTER), NOW)


def _write(path: Path, data: bytes, mtime: float) -> None:
    path.write_bytes(data)
    os.utime(path, (mtime, mtime))


def _server(tmp_path: Path, pair: tuple[bytes, bytes]) -> ssl.SSLContext:
    cert, key = tmp_path / "server.crt", tmp_path / "server.key"
    cert.write_bytes(pair[0])
    key.write_bytes(pair[1])
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def _handshake(client: ssl.SSLContext, server: ssl.SSLContext, hostname: str) -> None:
    """A whole TLS handshake between the two contexts, in memory; raises what the client's
    verification raises."""
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    c = client.wrap_bio(c_in, c_out, server_hostname=hostname)
    s = server.wrap_bio(s_in, s_out, server_side=True)
    done = {"c": False, "s": False}
    for _ in range(20):
        for name, end in (("c", c), ("s", s)):
            if not done[name]:
                try:
                    end.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            return
    raise AssertionError("the handshake did not finish")


def test_a_certificate_needs_its_key(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--members-file", "m.json", "--tls-cert-file", "c.pem"])
    assert "both --tls-cert-file and --tls-key-file" in capsys.readouterr().err
    args = parse_args(["--members-file", "m.json", "--tls-cert-file", "c", "--tls-key-file", "k"])
    assert (args.tls_cert_file, args.tls_key_file, args.tls_reload_seconds) == ("c", "k", 5.0)


def test_a_renewed_pair_is_loaded_and_a_half_written_one_is_not(tmp_path: Path) -> None:
    ca = certs.new_ca("router test CA", NOW)
    cert, key = tmp_path / "router.crt", tmp_path / "router.key"
    first = _pair(ca)
    cert.write_bytes(first[0])
    key.write_bytes(first[1])
    tls = RouterTls(str(cert), str(key), None)
    assert tls.serving is not None and tls.members is None  # members: the system's CAs
    assert tls.reloader.check() is False  # nothing changed
    second = _pair(ca)
    _write(cert, second[0], 1)  # the key not yet: a mismatched pair
    assert tls.reloader.check() is False
    _write(key, second[1], 2)
    assert tls.reloader.check() is True
    assert tls.reloader.check() is False
    (tmp_path / "ca.crt").write_bytes(ca[0])
    client = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
    _handshake(client, tls.serving, "localhost")


def test_a_rotated_ca_is_trusted_for_members_without_a_restart(tmp_path: Path) -> None:
    old, new = certs.new_ca("old CA", NOW), certs.new_ca("new CA", NOW)
    ca_file = tmp_path / "ca.crt"
    _write(ca_file, old[0], 1)
    tls = RouterTls(None, None, str(ca_file))
    assert tls.serving is None and tls.members is not None and tls.members.check_hostname
    on_old, on_new = _server(tmp_path, _pair(old)), _server(tmp_path, _pair(new))
    _handshake(tls.members, on_old, "localhost")
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(tls.members, on_new, "localhost")
    _write(ca_file, old[0] + new[0], 2)  # the Secret's CA bundle during a rotation
    assert tls.reloader.check() is True
    _handshake(tls.members, on_new, "localhost")
    _handshake(tls.members, on_old, "localhost")  # members not yet reissued still verify
