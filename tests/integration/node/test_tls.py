"""TLS on real nodes: HTTPS only on the port, clients verify it, members replicate over it,
a renewed certificate is served without a restart, bad certificates fail clearly."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from dvecdb_client import NodeClient, NodeError
from tests.conftest import NodeFactory, NodeProcess
from tests.support.certs import TestCa

pytestmark = pytest.mark.integration

TOKEN = "tls-cluster-token"


def _https(node: NodeProcess) -> str:
    return f"https://127.0.0.1:{node.port}"


def _context(ca: TestCa) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca.path))


def _get(url: str, context: ssl.SSLContext, token: str | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _start_tls(
    node_factory: NodeFactory, ca: TestCa, name: str, *, standalone: bool = True
) -> NodeProcess:
    issued = ca.issue(name)
    node = node_factory(
        standalone=standalone,
        node_id=name,
        wait=False,
        env={
            "DVECDB_TLS_CERT_FILE": str(issued.cert),
            "DVECDB_TLS_KEY_FILE": str(issued.key),
            "DVECDB_TLS_CA_FILE": str(ca.path),
            "DVECDB_CLUSTER_TOKEN": TOKEN,
            "DVECDB_SECRETS_REFRESH_SECONDS": "0.2",
        },
    )
    context = _context(ca)
    deadline = time.monotonic() + 30
    path = "/readyz" if standalone else "/healthz"
    while True:
        try:
            if _get(_https(node) + path, context)[0] == 200:
                return node
        except OSError:
            pass
        assert time.monotonic() < deadline, node.log()
        time.sleep(0.05)


def _peer_serial(port: int, ca: TestCa) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with _context(ca).wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            der = tls.getpeercert(binary_form=True)
    from cryptography import x509

    return int(x509.load_der_x509_certificate(der).serial_number)


def test_a_tls_node_serves_https_only_and_clients_verify_it(
    node_factory: NodeFactory, tmp_path: Path
) -> None:
    ca = TestCa(tmp_path / "ca")
    node = _start_tls(node_factory, ca, "tls-0")
    context = _context(ca)
    assert _get(_https(node) + "/v1/status", context, TOKEN)[0] == 200
    # The search fast lane answers over TLS too (the first request of a connection).
    create = urllib.request.Request(
        _https(node) + "/v1/collections",
        data=json.dumps({"name": "c", "dimension": 2, "metric": "l2"}).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(create, context=context, timeout=5) as resp:
        assert resp.status == 201
    search = urllib.request.Request(
        _https(node) + "/v1/collections/c/search",
        data=json.dumps({"vector": [0, 0], "k": 1}).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(search, context=context, timeout=5) as resp:
        assert json.loads(resp.read())["results"] == [[]]
    # Plain HTTP to the TLS port gets no HTTP answer.
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        urllib.request.urlopen(node.url + "/healthz", timeout=5)
    # A client trusting another CA refuses the node's certificate, and says so.
    other = TestCa(tmp_path / "other-ca", common_name="someone else")
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        _get(_https(node) + "/healthz", _context(other))

    async def with_client() -> None:
        async with NodeClient(_https(node), token=TOKEN, ssl=context) as client:
            assert (await client.status())["node_id"] == "tls-0"
        async with NodeClient(_https(node), token=TOKEN, ssl=_context(other)) as client:
            with pytest.raises(NodeError, match="CERTIFICATE_VERIFY_FAILED") as caught:
                await client.status()
            assert caught.value.code == "tls_untrusted"

    asyncio.run(with_client())


def test_an_expired_certificate_is_refused_by_clients(
    node_factory: NodeFactory, tmp_path: Path
) -> None:
    ca = TestCa(tmp_path / "ca")
    expired = ca.issue("old", expired=True)
    node = node_factory(
        node_id="expired",
        wait=False,
        env={"DVECDB_TLS_CERT_FILE": str(expired.cert), "DVECDB_TLS_KEY_FILE": str(expired.key)},
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            _get(_https(node) + "/healthz", _context(ca))
        except urllib.error.URLError as exc:
            if "certificate has expired" in str(exc.reason):
                break
        assert time.monotonic() < deadline, node.log()
        time.sleep(0.1)


def test_a_renewed_certificate_is_served_without_a_restart(
    node_factory: NodeFactory, tmp_path: Path
) -> None:
    ca = TestCa(tmp_path / "ca")
    node = _start_tls(node_factory, ca, "renew")
    first = _peer_serial(node.port, ca)
    pid = node.proc.pid if node.proc else None
    renewed = ca.issue("renew-next", into=tmp_path / "next")
    # Replace the files the node was started with (as a Secret update does).
    (ca.folder / "renew.key").write_bytes(renewed.key.read_bytes())
    (ca.folder / "renew.crt").write_bytes(renewed.cert.read_bytes())
    deadline = time.monotonic() + 10
    while _peer_serial(node.port, ca) == first:
        assert time.monotonic() < deadline, "the new certificate was not served"
        time.sleep(0.1)
    assert _peer_serial(node.port, ca) == renewed.serial
    assert node.proc is not None and node.proc.pid == pid and node.proc.poll() is None


def test_members_replicate_over_tls(node_factory: NodeFactory, tmp_path: Path) -> None:
    ca = TestCa(tmp_path / "ca")
    leader = _start_tls(node_factory, ca, "m0", standalone=False)
    follower = _start_tls(node_factory, ca, "m1", standalone=False)
    context = _context(ca)

    async def run() -> None:
        async with (
            NodeClient(_https(leader), token=TOKEN, ssl=context) as lead,
            NodeClient(_https(follower), token=TOKEN, ssl=context) as follow,
        ):
            await lead.promote(1)
            await follow.follow(_https(leader), 1)
            await lead.create_collection(name="c", dimension=2, metric="l2")
            written = await lead.upsert("c", [{"id": "a", "vector": [1.0, 2.0]}], ack="one")
            deadline = time.monotonic() + 30
            while True:
                status = await follow.status()
                if status["applied_seq"] >= written["seq"]:
                    break
                assert time.monotonic() < deadline, follower.log()
                await asyncio.sleep(0.05)
            details = await follow.replication_status()
            assert details["follower"]["streaming"]

    asyncio.run(run())


def test_a_certificate_without_its_key_is_refused_at_start(
    node_factory: NodeFactory, tmp_path: Path
) -> None:
    ca = TestCa(tmp_path / "ca")
    issued = ca.issue("half")
    node = node_factory(node_id="half", wait=False, env={"DVECDB_TLS_CERT_FILE": str(issued.cert)})
    assert node.proc is not None
    assert node.proc.wait(timeout=30) != 0
    assert "tls_key_file" in node.log()


def test_the_router_reaches_tls_members(node_factory: NodeFactory, tmp_path: Path) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from dvecdb_router.app import create_app
    from dvecdb_router.cluster import Cluster

    ca = TestCa(tmp_path / "ca")
    members = [_start_tls(node_factory, ca, f"s{i}") for i in range(2)]

    async def run() -> None:
        cluster = Cluster(
            [[_https(m)] for m in members], cluster_token=TOKEN, ssl_context=_context(ca)
        )
        async with TestClient(TestServer(create_app(cluster))) as client:
            create = {"name": "c", "dimension": 2, "metric": "l2"}
            assert (await client.post("/v1/collections", json=create)).status == 201
            items = [{"id": f"v{i}", "vector": [float(i), 0.0]} for i in range(20)]
            resp = await client.put("/v1/collections/c/vectors", json={"vectors": items})
            assert resp.status == 200 and (await resp.json())["shards"] == 2
            found = await client.post(
                "/v1/collections/c/search", json={"vector": [3.2, 0.0], "k": 2}
            )
            hits = (await found.json())["results"][0]
            assert [h["id"] for h in hits] == ["v3", "v4"]

    asyncio.run(run())


def test_members_trust_a_new_ca_without_a_restart(
    node_factory: NodeFactory, tmp_path: Path
) -> None:
    """A CA rotation, as a Secret update brings it: new certificates and a new ca.crt. A
    member that did not restart must trust the new CA for its next connection (its follower
    stream to a leader that did restart), or replication stops."""
    old = TestCa(tmp_path / "ca")
    leader = _start_tls(node_factory, old, "m0", standalone=False)
    follower = _start_tls(node_factory, old, "m1", standalone=False)
    new = TestCa(tmp_path / "new", common_name="dvecdb rotated CA")

    async def run() -> None:
        async with NodeClient(_https(leader), token=TOKEN, ssl=_context(old)) as lead:
            await lead.promote(1)
            async with NodeClient(_https(follower), token=TOKEN, ssl=_context(old)) as follow:
                await follow.follow(_https(leader), 1)
            await lead.create_collection(name="c", dimension=2, metric="l2")
            await lead.upsert("c", [{"id": "a", "vector": [1.0, 2.0]}], ack="one")
        # The rotation: every member's pair and the CA file replaced in place.
        for member in ("m0", "m1"):
            issued = new.issue(member, into=tmp_path / "new-leaves")
            (old.folder / f"{member}.key").write_bytes(issued.key.read_bytes())
            (old.folder / f"{member}.crt").write_bytes(issued.cert.read_bytes())
        old.path.write_bytes(new.path.read_bytes())
        await asyncio.sleep(1.0)  # the secrets refresh is 0.2 s
        # The leader restarts (it reads the new files at start); the follower does not.
        leader.stop()
        leader.start(wait=False)
        context = _context(new)
        deadline = time.monotonic() + 30
        while True:
            try:
                if _get(_https(leader) + "/healthz", context)[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, leader.log()
            await asyncio.sleep(0.1)
        async with (
            NodeClient(_https(leader), token=TOKEN, ssl=context) as lead,
            NodeClient(_https(follower), token=TOKEN, ssl=context) as follow,
        ):
            await lead.promote(2)
            await follow.follow(_https(leader), 2)
            written = await lead.upsert(
                "c", [{"id": "b", "vector": [3.0, 4.0]}], ack="one", retry=False
            )
            assert (await follow.status())["applied_seq"] >= written["seq"]

    asyncio.run(run())
