"""spec.tls decisions (pure): which certificates, with which names, when renewed, and what is
written to the members' Secret; the builders' TLS wiring."""

from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path

import pytest
from cryptography import x509

from dvecdb_operator import certificates as certs
from dvecdb_operator import tlsplan
from dvecdb_operator.builders.common import ClusterRef
from dvecdb_operator.builders.router import build_router_deployment
from dvecdb_operator.builders.statefulset import build_statefulset
from dvecdb_operator.members import PodView
from dvecdb_operator.monitor import pod_view
from dvecdb_operator.observation import MemberObservation
from dvecdb_operator.spec import InvalidSpecError, parse_spec
from dvecdb_operator.tlsplan import serving_scheme

pytestmark = pytest.mark.unit

NOW = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)
REF = ClusterRef("db", "ns", 0, 1)


@pytest.fixture(scope="module")
def ca() -> tuple[bytes, bytes]:
    return certs.new_ca("test CA", NOW)


def test_a_members_names_are_its_pod_its_groups_services_and_its_ip() -> None:
    leaf = certs.member_leaf(REF.group(0), 1, "10.1.2.3")
    assert leaf.name == "db-1"
    for name in (
        "db-1.db-headless.ns.svc.cluster.local",
        "db-1.db-headless.ns.svc",
        "db-1.db-headless.ns",
        "db-headless.ns.svc",
        "db-rw",
        "db-rw.ns.svc.cluster.local",
        "db-ro.ns.svc",
        "localhost",
    ):
        assert name in leaf.dns
    assert leaf.ips == ("10.1.2.3", "127.0.0.1")  # sorted
    # No IP yet: the names only (the pod IP comes in a later certificate).
    assert certs.member_leaf(REF.group(0), 1, None).ips == ("127.0.0.1",)
    # Another group's member: its own StatefulSet's names, the shared headless Service.
    other = certs.member_leaf(ClusterRef("db", "ns", 1, 2), 0, None)
    assert other.name == "db-s1-0"
    assert "db-s1-0.db-headless.ns.svc" in other.dns and "db-s1-rw.ns.svc" in other.dns


def test_the_routers_names_are_the_client_service_and_its_pod_ips() -> None:
    leaf = certs.router_leaf(REF, ["10.0.0.9", "bogus", "10.0.0.9", "10.0.0.10"])
    assert leaf.name == "router"
    assert {"db", "db.ns", "db.ns.svc", "db.ns.svc.cluster.local"} <= set(leaf.dns)
    assert leaf.ips == ("10.0.0.9", "10.0.0.10", "127.0.0.1")


def test_wanted_leaves_cover_every_group_a_member_still_running_and_the_router() -> None:
    ref = ClusterRef("db", "ns", 0, 2)
    ips = {"db-0": "10.0.0.1", "db-3": "10.0.0.4", "db-s1-1": "10.0.1.2", "other-0": "1.1.1.1"}
    leaves = certs.wanted_leaves(ref, {0: 2, 1: 2}, ips, ["10.0.9.9"])
    names = [leaf.name for leaf in leaves]
    # db-3 is beyond the spec's two but still runs (a scale-down in progress).
    assert names == ["db-0", "db-1", "db-3", "db-s1-0", "db-s1-1", "router"]
    by_name = {leaf.name: leaf for leaf in leaves}
    assert "10.0.0.1" in by_name["db-0"].ips and "10.0.1.2" in by_name["db-s1-1"].ips
    assert by_name["db-1"].ips == ("127.0.0.1",)
    assert "10.0.9.9" in by_name["router"].ips


def test_an_issued_certificate_verifies_against_the_ca_with_its_names(
    ca: tuple[bytes, bytes], tmp_path: Path
) -> None:
    leaf = certs.member_leaf(REF, 0, "10.0.0.1")
    cert_pem, key_pem = certs.issue_leaf(*ca, leaf, NOW)
    cert = x509.load_pem_x509_certificate(cert_pem)
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca[0]))
    assert certs.names_of(cert) == (frozenset(leaf.dns), frozenset(leaf.ips))
    assert cert.not_valid_after_utc == NOW + certs.LEAF_LIFETIME
    # The pair loads into an SSL context (what the node does with the mounted files).
    (tmp_path / "c.pem").write_bytes(cert_pem)
    (tmp_path / "k.pem").write_bytes(key_pem)
    ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
        tmp_path / "c.pem", tmp_path / "k.pem"
    )
    assert certs.ca_pair_valid(*ca, NOW)
    assert not certs.ca_pair_valid(cert_pem, key_pem, NOW)  # not a CA
    assert not certs.ca_pair_valid(ca[0], key_pem, NOW)  # another key
    assert not certs.ca_pair_valid(*ca, NOW + certs.CA_LIFETIME + dt.timedelta(days=1))


def test_renewal_is_due_at_two_thirds_of_the_lifetime(ca: tuple[bytes, bytes]) -> None:
    leaf = certs.member_leaf(REF, 0, None)
    cert_pem, key_pem = certs.issue_leaf(*ca, leaf, NOW, dt.timedelta(days=90))
    start = NOW - certs.BACKDATE
    due = certs.renew_at(x509.load_pem_x509_certificate(cert_pem))
    assert due == start + (dt.timedelta(days=90) + certs.BACKDATE) * 2 / 3
    assert NOW + dt.timedelta(days=59) < due < NOW + dt.timedelta(days=61)
    early = due - dt.timedelta(seconds=1)
    assert certs.reissue_reason(cert_pem, key_pem, leaf, ca[0], early) is None
    assert certs.reissue_reason(cert_pem, key_pem, leaf, ca[0], due) == "renewal due"
    assert certs.next_renewal([cert_pem, b"junk"]) == due


def test_reasons_to_issue_again(ca: tuple[bytes, bytes]) -> None:
    leaf = certs.member_leaf(REF, 0, None)
    cert_pem, key_pem = certs.issue_leaf(*ca, leaf, NOW)
    assert certs.reissue_reason(cert_pem, key_pem, leaf, ca[0], NOW) is None
    assert certs.reissue_reason(None, key_pem, leaf, ca[0], NOW) == "missing"
    assert certs.reissue_reason(b"junk", key_pem, leaf, ca[0], NOW) == "unreadable"
    # The pod got its IP (or a new one after a restart): the names changed.
    with_ip = certs.member_leaf(REF, 0, "10.0.0.7")
    assert certs.reissue_reason(cert_pem, key_pem, with_ip, ca[0], NOW) == "names changed"
    other_cert, other_key = certs.issue_leaf(*ca, leaf, NOW)
    assert certs.reissue_reason(cert_pem, other_key, leaf, ca[0], NOW) == "key does not match"
    del other_cert
    other_ca = certs.new_ca("test CA", NOW)  # same name, another key
    assert certs.reissue_reason(cert_pem, key_pem, leaf, other_ca[0], NOW) == "issued by another CA"


def test_plan_issues_what_is_missing_then_nothing_then_renews(ca: tuple[bytes, bytes]) -> None:
    leaves = certs.wanted_leaves(REF, {0: 2}, {}, [])
    first = tlsplan.plan_leaves({}, leaves, *ca, NOW)
    assert set(first.data) == {
        "ca.crt", "db-0.crt", "db-0.key", "db-1.crt", "db-1.key", "router.crt", "router.key",
    }  # fmt: skip
    assert first.reasons == {"db-0": "missing", "db-1": "missing", "router": "missing"}
    held = dict(first.data)
    assert tlsplan.plan_leaves(held, leaves, *ca, NOW) == tlsplan.LeafPlan()
    # db-1 got an IP and db-0 went (scale-down): one reissued, the other's keys removed.
    later = certs.wanted_leaves(REF, {0: 0}, {"db-1": "10.0.0.2"}, [])
    second = tlsplan.plan_leaves(held, later, *ca, NOW)
    assert second.reasons == {"db-1": "names changed"}
    assert second.removed == ("db-0.crt", "db-0.key")
    patch = tlsplan.leaf_secret_patch(second, "7")
    assert patch["metadata"] == {"resourceVersion": "7"}
    assert patch["data"]["db-0.crt"] is None and patch["data"]["db-1.crt"]
    # Two thirds into their lifetime every certificate is renewed.
    renewal = tlsplan.plan_leaves(held, leaves, *ca, NOW + dt.timedelta(days=61))
    assert set(renewal.reasons.values()) == {"renewal due"}


def test_spec_tls_is_on_by_default_and_names_its_source() -> None:
    spec = parse_spec({})
    assert spec.tls.enabled and spec.tls.secret_name is None and spec.tls.issuer_ref is None
    mounts = tlsplan.tls_mounts(REF, spec)
    assert mounts is not None and mounts.mode == tlsplan.MODE_GENERATED
    assert (mounts.secret, mounts.member_cert, mounts.router_cert) == (
        "db-tls",
        "$(POD_NAME).crt",
        "router.crt",
    )
    assert tlsplan.tls_mounts(REF, parse_spec({"tls": {"enabled": False}})) is None
    given = tlsplan.tls_mounts(REF, parse_spec({"tls": {"secretName": "mine"}}))
    assert given is not None and (given.mode, given.secret, given.member_cert) == (
        "secret",
        "mine",
        "tls.crt",
    )
    issued = tlsplan.tls_mounts(REF, parse_spec({"tls": {"issuerRef": {"name": "ca-issuer"}}}))
    assert issued is not None and (issued.mode, issued.secret) == ("cert-manager", "db-tls")
    with pytest.raises(InvalidSpecError, match="issuerRef"):
        parse_spec({"tls": {"issuerRef": {"name": "x", "kind": "Nope"}}})


def test_the_certificate_manifest_names_every_member_and_the_router() -> None:
    spec = parse_spec({"tls": {"issuerRef": {"name": "ca-issuer", "kind": "ClusterIssuer"}}})
    leaves = certs.wanted_leaves(REF, {0: 2}, {"db-0": "10.0.0.1"}, [])
    manifest = tlsplan.build_certificate(REF, spec, leaves)
    assert manifest["apiVersion"] == "cert-manager.io/v1" and manifest["kind"] == "Certificate"
    body = manifest["spec"]
    assert body["secretName"] == "db-tls"
    assert body["issuerRef"] == {
        "name": "ca-issuer",
        "kind": "ClusterIssuer",
        "group": "cert-manager.io",
    }
    assert "db-1.db-headless.ns.svc" in body["dnsNames"] and "db.ns.svc" in body["dnsNames"]
    assert body["ipAddresses"] == ["10.0.0.1", "127.0.0.1"]
    assert (body["duration"], body["renewBefore"]) == ("2160h", "720h")


def test_members_serve_tls_with_their_own_file_and_advertise_https() -> None:
    spec = parse_spec({})
    mounts = tlsplan.tls_mounts(REF, spec)
    sts = build_statefulset(REF, spec, auth_secret="db-token", tls=mounts)
    pod = sts["spec"]["template"]["spec"]
    node = pod["containers"][0]
    env = {e["name"]: e.get("value") for e in node["env"]}
    assert env["DVECDB_ADVERTISE_URL"] == "https://$(POD_IP):8080"
    assert env["DVECDB_TLS_CERT_FILE"] == "/etc/dvecdb/tls/$(POD_NAME).crt"
    assert env["DVECDB_TLS_KEY_FILE"] == "/etc/dvecdb/tls/$(POD_NAME).key"
    assert env["DVECDB_TLS_CA_FILE"] == "/etc/dvecdb/tls/ca.crt"
    # POD_NAME is defined before the variables that refer to it (the kubelet expands in order).
    names = [e["name"] for e in node["env"]]
    assert names.index("POD_NAME") < names.index("DVECDB_TLS_CERT_FILE")
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert node[probe]["httpGet"]["scheme"] == "HTTPS"
    assert {"name": "tls", "mountPath": "/etc/dvecdb/tls", "readOnly": True} in node["volumeMounts"]
    assert {"name": "tls", "secret": {"secretName": "db-tls", "defaultMode": 0o440}} in pod[
        "volumes"
    ]
    plain = build_statefulset(REF, parse_spec({"tls": {"enabled": False}}), auth_secret="t")
    plain_node = plain["spec"]["template"]["spec"]["containers"][0]
    plain_env = {e["name"]: e.get("value") for e in plain_node["env"]}
    assert plain_env["DVECDB_ADVERTISE_URL"] == "http://$(POD_IP):8080"
    assert "DVECDB_TLS_CERT_FILE" not in plain_env


def test_the_router_serves_tls_and_verifies_members_against_the_ca() -> None:
    spec = parse_spec({})
    mounts = tlsplan.tls_mounts(REF, spec)
    deployment = build_router_deployment(REF, spec, auth_secret="db-token", tls=mounts)
    pod = deployment["spec"]["template"]["spec"]
    args = pod["containers"][0]["args"]
    for flag, value in (
        ("--tls-cert-file", "/etc/dvecdb/tls/router.crt"),
        ("--tls-key-file", "/etc/dvecdb/tls/router.key"),
        ("--ca-file", "/etc/dvecdb/tls/ca.crt"),
    ):
        assert args[args.index(flag) + 1] == value
    assert pod["containers"][0]["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    assert any(v.get("secret", {}).get("secretName") == "db-tls" for v in pod["volumes"])


def test_the_operator_calls_each_member_by_the_scheme_its_pod_was_started_with() -> None:
    spec = parse_spec({})
    sts = build_statefulset(REF, spec, auth_secret="t", tls=tlsplan.tls_mounts(REF, spec))
    pod = {
        "metadata": {"name": "db-0"},
        "spec": sts["spec"]["template"]["spec"],
        "status": {"podIP": "10.0.0.1"},
    }
    assert serving_scheme(pod) == "https"
    view = pod_view(pod)
    assert view.scheme == "https"
    member = MemberObservation(name="db-0", ordinal=0, pod_ip="10.0.0.1", scheme=view.scheme)
    assert member.url == "https://10.0.0.1:8080"
    # A pod made before TLS was switched on serves plain HTTP until its restart.
    old = {"metadata": {"name": "db-1"}, "spec": {"containers": [{"name": "node", "env": []}]}}
    assert serving_scheme(old) == "http"
    assert PodView("db-1", 1, "10.0.0.2", True, False, None, None).scheme == "http"


def test_the_operators_node_clients_verify_members_against_the_clusters_ca(
    ca: tuple[bytes, bytes],
) -> None:
    from dvecdb_operator.members import client_factory
    from dvecdb_operator.tlsreconcile import TlsState

    context = TlsState(mode="generated", ca_pem=ca[0]).client_context()
    assert context is not None and context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname  # by pod IP: the certificate must name it
    client = client_factory(token="t", timeout=1.0, ssl_context=context)("https://10.0.0.1:8080")
    assert client.ssl is context  # type: ignore[attr-defined]
    assert TlsState().client_context() is None
    plain = client_factory(token="t", timeout=1.0)("http://10.0.0.1:8080")
    assert plain.ssl is True  # type: ignore[attr-defined]


def handshake(server: ssl.SSLContext, client: ssl.SSLContext, address: str) -> None:
    """A TLS handshake in memory, the client connecting to `address` (checked by OpenSSL)."""
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    conn = client.wrap_bio(c_in, c_out, server_hostname=address)
    serv = server.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(10):
        for name, end, out, peer_in in (
            ("client", conn, c_out, s_in),
            ("server", serv, s_out, c_in),
        ):
            if not done[name]:
                try:
                    end.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
            peer_in.write(out.read())
        if all(done.values()):
            return
    raise AssertionError("the handshake did not finish")


def test_a_certificate_verifies_against_its_services_cluster_ips(
    ca: tuple[bytes, bytes], tmp_path: Path
) -> None:
    ips = {"db-rw": "10.96.0.10", "db-ro": "10.96.0.11", "db": "10.96.0.12", "db-s1-rw": "1.2.3.4"}
    member = certs.member_leaf(REF, 0, "10.0.0.1", ips)
    assert {"10.96.0.10", "10.96.0.11"} <= set(member.ips) and "1.2.3.4" not in member.ips
    assert "10.96.0.12" not in member.ips  # the router's Service fronts the router only
    router = certs.router_leaf(REF, ["10.0.0.9"], ips)
    assert "10.96.0.12" in router.ips and "10.96.0.10" not in router.ips
    assert certs.service_names_of(ClusterRef("db", "ns", 0, 2)) == [
        "db-rw",
        "db-ro",
        "db-s1-rw",
        "db-s1-ro",
        "db",
    ]
    now = dt.datetime.now(dt.UTC)
    client = ssl.create_default_context(cadata=ca[0].decode())
    for leaf, address in ((member, "10.96.0.10"), (router, "10.96.0.12")):
        cert_pem, key_pem = certs.issue_leaf(*ca, leaf, now)
        (tmp_path / "c.pem").write_bytes(cert_pem)
        (tmp_path / "k.pem").write_bytes(key_pem)
        server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
        handshake(server, client, address)
        # Before the ClusterIPs were named, a client by ClusterIP was refused.
        bare = certs.Leaf(leaf.name, leaf.dns, tuple(i for i in leaf.ips if i != address))
        cert_pem, key_pem = certs.issue_leaf(*ca, bare, now)
        (tmp_path / "c.pem").write_bytes(cert_pem)
        (tmp_path / "k.pem").write_bytes(key_pem)
        server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
        with pytest.raises(ssl.SSLCertVerificationError, match="IP address mismatch"):
            handshake(server, client, address)


def test_the_ca_is_warned_about_within_the_warning_window_only(ca: tuple[bytes, bytes]) -> None:
    end = certs.expires_at(ca[0])
    assert end == NOW + certs.CA_LIFETIME
    assert certs.ca_expiry_warning(ca[0], NOW) is None
    early = end - certs.CA_WARN_BEFORE - dt.timedelta(hours=1)
    assert certs.ca_expiry_warning(ca[0], early) is None
    near = certs.ca_expiry_warning(ca[0], end - dt.timedelta(days=30, hours=1))
    assert near is not None and "30 days left" in near
    gone = certs.ca_expiry_warning(ca[0], end + dt.timedelta(seconds=1))
    assert gone is not None and "expired" in gone
    assert certs.ca_expiry_warning(b"junk", NOW) is None and certs.expires_at(None) is None
