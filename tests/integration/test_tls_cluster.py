"""spec.tls with real processes: nodes and the router serving the certificates the operator
issues (`dvecdb_operator.certificates`), each endpoint refusing what it must over TLS, the
client refusing what it must not trust, members replicating, the router renewing in place.

The endpoint x credential table is printed (`-s`) as observed over HTTPS.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import http.client
import http.server
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from dvecdb_client import NodeClient, NodeError
from dvecdb_operator import certificates as certs
from dvecdb_operator.builders.common import ClusterRef
from tests.conftest import LOOPBACK, NodeFactory, NodeProcess, free_port

pytestmark = pytest.mark.integration

REF = ClusterRef("db", "ns", 0, 1)
TOKEN, API_KEY, READ_ONLY = "tls-cluster-token", "tls-api-key", "tls-read-only"


class Pki:
    """A CA made as the operator makes it, and leaves it issues into files."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.now = dt.datetime.now(dt.UTC)
        self.cert, self.key = certs.new_ca("integration CA", self.now)
        self.path = folder / "ca.crt"
        self.path.write_bytes(self.cert)

    def issue(
        self, leaf: certs.Leaf, *, at: dt.datetime | None = None, days: float = 90
    ) -> tuple[Path, Path]:
        cert, key = certs.issue_leaf(
            self.cert, self.key, leaf, at or self.now, dt.timedelta(days=days)
        )
        cert_path, key_path = self.folder / leaf.cert_key, self.folder / leaf.key_key
        key_path.write_bytes(key)
        cert_path.write_bytes(cert)
        return cert_path, key_path

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.path))


def https(port: int) -> str:
    return f"https://{LOOPBACK}:{port}"


def call(
    method: str, url: str, context: ssl.SSLContext, body: Any = None, token: str | None = None
) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")


def start_tls_node(
    node_factory: NodeFactory,
    pki: Pki,
    leaf: certs.Leaf,
    *,
    standalone: bool = True,
    cert: tuple[Path, Path] | None = None,
    wait: bool = True,
) -> NodeProcess:
    cert_path, key_path = cert or pki.issue(leaf)
    node = node_factory(
        standalone=standalone,
        node_id=leaf.name,
        wait=False,
        env={
            "DVECDB_TLS_CERT_FILE": str(cert_path),
            "DVECDB_TLS_KEY_FILE": str(key_path),
            "DVECDB_TLS_CA_FILE": str(pki.path),
            "DVECDB_CLUSTER_TOKEN": TOKEN,
            "DVECDB_API_KEY": API_KEY,
            "DVECDB_READ_ONLY_KEY": READ_ONLY,
        },
    )
    if not wait:
        return node
    deadline = time.monotonic() + 30
    while True:
        try:
            if call("GET", https(node.port) + "/healthz", pki.context())[0] == 200:
                return node
        except OSError:
            pass
        assert node.proc is not None and node.proc.poll() is None, node.log()
        assert time.monotonic() < deadline, node.log()
        time.sleep(0.05)


def outcome(code: int, body: Any) -> str:
    if 200 <= code < 300:
        return "ok"
    if code == 403 and "read_only" in str(body):
        return "ro"
    if code in (401, 403):
        return str(code)
    return "passed" if code in (400, 404, 409, 422) else f"?{code}"


def endpoints(url: str, cred: str) -> list[tuple[str, str, str, Any]]:
    search = {"vector": [1.0, 0.0], "k": 1}
    vectors = {"vectors": [{"id": f"by-{cred}", "vector": [1.0, 0.0]}]}
    return [
        ("GET /healthz", "GET", f"{url}/healthz", None),
        ("GET /v1/status", "GET", f"{url}/v1/status", None),
        ("GET /v1/collections", "GET", f"{url}/v1/collections", None),
        ("POST .../search", "POST", f"{url}/v1/collections/c/search", search),
        ("PUT .../vectors (write)", "PUT", f"{url}/v1/collections/c/vectors", vectors),
        (
            "POST /v1/collections",
            "POST",
            f"{url}/v1/collections",
            {"name": f"m-{cred}", "dimension": 2},
        ),
        ("DELETE /v1/collections/x", "DELETE", f"{url}/v1/collections/drop-{cred}", None),
        ("GET /v1/replication/status", "GET", f"{url}/v1/replication/status", None),
        ("POST /v1/admin/promote (bad body)", "POST", f"{url}/v1/admin/promote", {}),
    ]


EXPECTED = {
    "none": ["ok", "401", "401", "401", "401", "401", "401", "401", "401"],
    "wrong": ["ok", "403", "403", "403", "403", "403", "403", "403", "403"],
    "readOnlyKey": ["ok", "ok", "ok", "ok", "ro", "ro", "ro", "403", "403"],
    "apiKey": ["ok", "ok", "ok", "ok", "ok", "ok", "ok", "403", "403"],
    "clusterToken": ["ok", "ok", "ok", "ok", "ok", "ok", "ok", "ok", "passed"],
}


def test_each_endpoint_and_credential_over_tls(node_factory: NodeFactory, tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki")
    node = start_tls_node(node_factory, pki, certs.member_leaf(REF, 0, LOOPBACK))
    url, context = https(node.port), pki.context()
    created = call("POST", url + "/v1/collections", context, {"name": "c", "dimension": 2}, API_KEY)
    assert created[0] == 201, created
    for cred in ("readOnlyKey", "apiKey", "clusterToken"):  # what each credential tries to drop
        body = {"name": f"drop-{cred}", "dimension": 2}
        made = call("POST", url + "/v1/collections", context, body, API_KEY)
        assert made[0] == 201, made
    tokens = {
        "none": None,
        "wrong": "not-a-key",
        "readOnlyKey": READ_ONLY,
        "apiKey": API_KEY,
        "clusterToken": TOKEN,
    }
    seen = {
        cred: [outcome(*call(m, u, context, b, token)) for _, m, u, b in endpoints(url, cred)]
        for cred, token in tokens.items()
    }
    labels = [label for label, *_ in endpoints(url, "x")]
    print("\nendpoint x credential over HTTPS (a member):")
    print(f"{'':34}" + "".join(f"{cred:>13}" for cred in tokens))
    for row, label in enumerate(labels):
        print(f"{label:34}" + "".join(f"{seen[cred][row]:>13}" for cred in tokens))
    assert seen == EXPECTED

    # On one kept-alive TLS connection (searches stay in the node's fast lane, the rest goes
    # to aiohttp), every request is checked on its own, not the connection once.
    conn = http.client.HTTPSConnection(LOOPBACK, node.port, timeout=10, context=context)
    search = json.dumps({"vector": [1.0, 0.0], "k": 1}).encode()
    write = json.dumps({"vectors": [{"id": "kept", "vector": [1.0, 0.0]}]}).encode()
    steps = [
        ("POST", "/v1/collections/c/search", search, API_KEY, 200),
        ("POST", "/v1/collections/c/search", search, None, 401),
        ("POST", "/v1/collections/c/search", search, READ_ONLY, 200),
        ("PUT", "/v1/collections/c/vectors", write, READ_ONLY, 403),
        ("POST", "/v1/collections/c/search", search, "not-a-key", 403),
        ("PUT", "/v1/collections/c/vectors", write, API_KEY, 200),
    ]
    try:
        for method, path, body, token, expected in steps:
            headers = {"Content-Type": "application/json"}
            if token is not None:
                headers["Authorization"] = f"Bearer {token}"
            conn.request(method, path, body, headers)
            resp = conn.getresponse()
            resp.read()
            assert resp.status == expected, (method, path, token, resp.status)
    finally:
        conn.close()


def test_the_client_refuses_what_it_must_not_trust(
    node_factory: NodeFactory, tmp_path: Path
) -> None:
    pki = Pki(tmp_path / "pki")
    node = start_tls_node(node_factory, pki, certs.member_leaf(REF, 0, LOOPBACK))
    plain = node_factory(standalone=True, node_id="plain", env={"DVECDB_API_KEY": API_KEY})
    other = Pki(tmp_path / "other")
    expired_leaf = certs.Leaf("old", ("localhost",), (LOOPBACK,))
    expired = start_tls_node(
        node_factory,
        pki,
        expired_leaf,
        cert=pki.issue(expired_leaf, at=pki.now - dt.timedelta(days=10), days=1),
        wait=False,
    )
    # Another member's certificate (its pod IP, not this address) on this port.
    elsewhere_leaf = certs.Leaf("elsewhere", ("db-9.db-headless.ns.svc",), ("10.9.9.9",))
    elsewhere = start_tls_node(node_factory, pki, elsewhere_leaf, wait=False)

    async def refused(url: str, **tls: Any) -> NodeError:
        async with NodeClient(url, api_key=API_KEY, retries=0, timeout=3, **tls) as client:
            with pytest.raises(NodeError) as caught:
                await client.list_collections()
        return caught.value

    async def run() -> None:
        # The right CA (as PEM bytes, as read from the Secret): accepted.
        async with NodeClient(https(node.port), api_key=API_KEY, ca=pki.cert) as client:
            assert await client.list_collections() == []
        # The CA file works as well.
        async with NodeClient(https(node.port), api_key=API_KEY, ca=pki.path) as client:
            assert await client.list_collections() == []
        wrong_ca = await refused(https(node.port), ca=other.path)
        assert wrong_ca.code == "tls_untrusted" and "CERTIFICATE_VERIFY_FAILED" in wrong_ca.message
        # Plain HTTP to the TLS port: no HTTP answer.
        to_tls = await refused(node.url)
        assert to_tls.status == 0 and to_tls.code == "unreachable"
        # TLS to a plain HTTP port: a server that answers the handshake with plain HTTP fails
        # it at once, and the client says so; the node's plain port waits for a request that
        # never comes (a timeout: unreachable).
        with http.server.ThreadingHTTPServer(
            (LOOPBACK, 0), http.server.BaseHTTPRequestHandler
        ) as web:
            threading.Thread(target=web.serve_forever, daemon=True).start()
            to_plain = await refused(https(web.server_address[1]), ca=pki.path)
            web.shutdown()
        assert to_plain.code == "tls_error" and "TLS handshake failed" in to_plain.message
        to_node = await refused(https(plain.port), ca=pki.path)
        assert to_node.status == 0 and to_node.code == "unreachable"
        # The names do not match the address.
        await asyncio.to_thread(_until_listening, elsewhere.port)
        mismatch = await refused(https(elsewhere.port), ca=pki.path)
        assert mismatch.code == "tls_untrusted" and "mismatch" in mismatch.message
        # Reached by address (a Service's ClusterIP), verified against the name it carries.
        async with NodeClient(
            https(elsewhere.port),
            api_key=API_KEY,
            ca=pki.path,
            server_hostname="db-9.db-headless.ns.svc",
        ) as client:
            assert await client.list_collections() == []
        named_wrong = await refused(
            https(elsewhere.port), ca=pki.path, server_hostname="db-8.db-headless.ns.svc"
        )
        assert named_wrong.code == "tls_untrusted" and "mismatch" in named_wrong.message
        # An expired certificate.
        await asyncio.to_thread(_until_listening, expired.port)
        old = await refused(https(expired.port), ca=pki.path)
        assert old.code == "tls_untrusted" and "expired" in old.message
        # verify=False (tests only) skips the check.
        async with NodeClient(https(expired.port), api_key=API_KEY, verify=False) as client:
            assert (await client.healthz())["status"]

    asyncio.run(run())


def _until_listening(port: int) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection((LOOPBACK, port), timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"nothing listens on {port}"
            time.sleep(0.05)


def test_members_replicate_over_tls_with_the_operators_certificates(
    node_factory: NodeFactory, tmp_path: Path
) -> None:
    pki = Pki(tmp_path / "pki")
    leader = start_tls_node(
        node_factory, pki, certs.member_leaf(REF, 0, LOOPBACK), standalone=False
    )
    follower = start_tls_node(
        node_factory, pki, certs.member_leaf(REF, 1, LOOPBACK), standalone=False
    )

    async def run() -> None:
        async with (
            NodeClient(https(leader.port), token=TOKEN, ca=pki.cert) as lead,
            NodeClient(https(follower.port), token=TOKEN, ca=pki.cert) as follow,
        ):
            await lead.promote(1)
            await follow.follow(https(leader.port), 1)
            await lead.create_collection(name="c", dimension=2, metric="l2")
            written = await lead.upsert("c", [{"id": "a", "vector": [1.0, 2.0]}], ack="one")
            deadline = time.monotonic() + 30
            while (await follow.status())["applied_seq"] < written["seq"]:
                assert time.monotonic() < deadline, follower.log()
                await asyncio.sleep(0.05)
            assert (await follow.replication_status())["follower"]["streaming"]

    asyncio.run(run())


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def _serial(port: int, context: ssl.SSLContext) -> int:
    with socket.create_connection((LOOPBACK, port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=LOOPBACK) as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    return int(x509.load_der_x509_certificate(der).serial_number)


def test_the_router_serves_tls_to_tls_members_and_takes_a_renewed_certificate(
    node_factory: NodeFactory, tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    pki = Pki(tmp_path / "pki")
    members = [
        start_tls_node(node_factory, pki, certs.member_leaf(REF.group(0), i, LOOPBACK))
        for i in range(2)
    ]
    members_file = tmp_path / "members.json"
    members_file.write_text(
        json.dumps(
            {
                "slotMap": {"version": 1, "shards": 2},
                "shards": [{"shard": i, "members": [https(m.port)]} for i, m in enumerate(members)],
            }
        )
    )
    cert, key = pki.issue(certs.router_leaf(REF))
    port = free_port()
    log = open(tmp_path / "router.log", "wb")
    processes.append(
        subprocess.Popen(
            [
                str(Path(sys.executable).parent / "dvecdb-router"),
                "--host",
                LOOPBACK,
                "--port",
                str(port),
                "--members-file",
                str(members_file),
                "--cluster-token",
                TOKEN,
                "--ca-file",
                str(pki.path),
                "--tls-cert-file",
                str(cert),
                "--tls-key-file",
                str(key),
                "--tls-reload-seconds",
                "0.2",
                "--poll-seconds",
                "0.2",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    )
    log.close()
    router_log = tmp_path / "router.log"
    context = pki.context()
    deadline = time.monotonic() + 30
    while True:
        try:
            if call("GET", https(port) + "/readyz", context)[0] == 200:
                break
        except OSError:
            pass
        assert processes[0].poll() is None, router_log.read_text()
        assert time.monotonic() < deadline, router_log.read_text()
        time.sleep(0.1)

    async def run() -> None:
        async with NodeClient(https(port), api_key=API_KEY, ca=pki.cert) as client:
            await client.create_collection(name="c", dimension=2, metric="l2")
            items = [{"id": f"v{i}", "vector": [float(i), 0.0]} for i in range(20)]
            await client.upsert("c", items)
            found = await client.search("c", [3.2, 0.0], k=2)
            assert [h["id"] for h in found["results"][0]] == ["v3", "v4"]
        async with NodeClient(f"http://{LOOPBACK}:{port}", api_key=API_KEY, retries=0) as plain:
            with pytest.raises(NodeError) as caught:
                await plain.list_collections()
            assert caught.value.status == 0

    asyncio.run(run())
    # Renewal in place (as the kubelet updates the mounted Secret): served without a restart.
    first = _serial(port, context)
    renewed = certs.issue_leaf(pki.cert, pki.key, certs.router_leaf(REF), pki.now)
    key.write_bytes(renewed[1])
    cert.write_bytes(renewed[0])
    new_serial = x509.load_pem_x509_certificate(renewed[0]).serial_number
    deadline = time.monotonic() + 10
    while _serial(port, context) != new_serial:
        assert time.monotonic() < deadline, router_log.read_text()
        time.sleep(0.1)
    assert first != new_serial and processes[0].poll() is None
