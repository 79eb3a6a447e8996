"""The router's own TLS: a certificate without its key is refused at start, and a renewed
pair is loaded into the serving context while a half-written one keeps the old."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest

from dvecdb_operator import certificates as certs
from dvecdb_operator.builders.common import ClusterRef
from dvecdb_router.cli import parse_args
from dvecdb_router.tls import ServingTls, client_context

pytestmark = pytest.mark.unit

NOW = dt.datetime.now(dt.UTC)


def _pair(ca: tuple[bytes, bytes]) -> tuple[bytes, bytes]:
    return certs.issue_leaf(*ca, certs.router_leaf(ClusterRef("db", "ns")), NOW)


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
    serving = ServingTls(cert, key)
    assert serving.check() is False  # nothing changed
    second = _pair(ca)
    cert.write_bytes(second[0])  # the key not yet: a mismatched pair
    os.utime(cert, (1, 1))
    assert serving.check() is False
    key.write_bytes(second[1])
    os.utime(key, (2, 2))
    assert serving.check() is True
    assert serving.check() is False
    (tmp_path / "ca.crt").write_bytes(ca[0])
    context = client_context(str(tmp_path / "ca.crt"))
    assert context is not None and context.check_hostname
    assert client_context(None) is None
