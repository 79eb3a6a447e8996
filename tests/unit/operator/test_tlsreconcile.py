"""spec.tls against a fake API: the kept CA and the members' Secret written once and renewed
in place, a pod's new IP reissued, and each source's problems reported, not raised."""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

import pytest
from cryptography import x509

from dvecdb_operator import certificates as certs
from dvecdb_operator import kube as kube_api
from dvecdb_operator.builders.common import ClusterRef
from dvecdb_operator.spec import parse_spec
from dvecdb_operator.tlsreconcile import ensure_tls
from tests.support.operator_fakes import FakeKube

pytestmark = pytest.mark.unit

REF = ClusterRef("db", "ns", 0, 1)
NOW = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)


class CertManagerKube(FakeKube):
    """The fake API, answering whether cert-manager's Certificate CRD is installed."""

    def __init__(self, cluster: dict[str, Any], *, installed: bool) -> None:
        super().__init__(cluster)
        self.installed = installed

    async def request(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        if method == "GET" and path.endswith("/certificates.cert-manager.io"):
            if not self.installed:
                raise kube_api.NotFoundError(404, "not found")
            return {}
        return await super().request(method, path, **kw)


def cluster(spec: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "dvecdb.io/v1alpha1",
        "kind": "DVecCluster",
        "metadata": {"name": "db", "namespace": "ns"},
        "spec": spec or {},
        "status": {},
    }


def data(kube: FakeKube, name: str) -> dict[str, bytes]:
    raw = kube.objects[("Secret", name)]["data"]
    return {k: base64.b64decode(v) for k, v in raw.items()}


async def test_generated_ca_and_member_certificates_then_no_writes_then_a_new_ip(
    events: list[tuple[str, str]],
) -> None:
    kube = FakeKube(cluster())
    body = await kube.get_cluster("ns", "db")
    spec = parse_spec({})
    state = await ensure_tls(kube, body, REF, spec, [3], now=NOW)
    assert state.problem is None and state.mode == "generated"
    assert state.client_context() is not None
    ca = data(kube, "db-ca")
    assert state.ca_pem == ca["tls.crt"] == ca["ca.crt"]
    assert "ownerReferences" not in kube.objects[("Secret", "db-ca")]["metadata"]
    held = data(kube, "db-tls")
    leaves = ("db-0", "db-1", "db-2", "router")
    assert set(held) == {"ca.crt"} | {f"{n}.{e}" for n in leaves for e in ("crt", "key")}
    assert kube.objects[("Secret", "db-tls")]["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert kube.status["tls"]["ready"] is True and kube.status["tls"]["secretName"] == "db-tls"
    assert any(r == "CertificatesIssued" for r, _ in events)

    # Nothing changed: nothing is written (not even the status: it is what it was).
    version = kube.objects[("Secret", "db-tls")]["metadata"]["resourceVersion"]
    patches = len(kube.status_patches)
    body = await kube.get_cluster("ns", "db")
    await ensure_tls(kube, body, REF, spec, [3], now=NOW)
    assert kube.objects[("Secret", "db-tls")]["metadata"]["resourceVersion"] == version
    assert len(kube.status_patches) == patches

    # db-1's pod got its IP: its certificate (only) is issued again, in place.
    kube.add_pod("db-1", "10.0.0.2")
    await ensure_tls(kube, body, REF, spec, [3], now=NOW)
    after = data(kube, "db-tls")
    assert after["db-0.crt"] == held["db-0.crt"] and after["db-1.crt"] != held["db-1.crt"]
    cert = x509.load_pem_x509_certificate(after["db-1.crt"])
    assert "10.0.0.2" in certs.names_of(cert)[1]
    assert data(kube, "db-ca") == ca  # the CA is kept

    # Two thirds into the lifetime: every certificate renewed, under the same CA.
    later = NOW + dt.timedelta(days=61)
    await ensure_tls(kube, body, REF, spec, [3], now=later)
    renewed = data(kube, "db-tls")
    assert all(renewed[f"{n}.crt"] != after[f"{n}.crt"] for n in ("db-0", "db-1", "router"))
    assert renewed["ca.crt"] == ca["tls.crt"]


async def test_an_unusable_ca_is_reported_not_replaced(events: list[tuple[str, str]]) -> None:
    kube = FakeKube(cluster())
    kube.objects[("Secret", "db-ca")] = {
        "metadata": {"name": "db-ca"},
        "data": {"tls.crt": base64.b64encode(b"junk").decode()},
    }
    body = await kube.get_cluster("ns", "db")
    state = await ensure_tls(kube, body, REF, parse_spec({}), [3], now=NOW)
    assert state.problem and "db-ca" in state.problem and state.client_context() is None
    assert ("Secret", "db-tls") not in kube.objects
    assert kube.status["tls"]["ready"] is False and "db-ca" in kube.status["tls"]["message"]
    assert any(r == "TlsNotReady" for r, _ in events)


async def test_the_users_secret_is_used_as_it_is(events: list[tuple[str, str]]) -> None:
    kube = FakeKube(cluster())
    body = await kube.get_cluster("ns", "db")
    spec = parse_spec({"tls": {"secretName": "mine"}})
    state = await ensure_tls(kube, body, REF, spec, [3], now=NOW)
    assert state.problem == "Secret mine does not exist"
    ca_cert, ca_key = certs.new_ca("user CA", NOW)
    leaf_cert, leaf_key = certs.issue_leaf(ca_cert, ca_key, certs.router_leaf(REF), NOW)
    kube.objects[("Secret", "mine")] = {
        "metadata": {"name": "mine"},
        "data": {
            k: base64.b64encode(v).decode()
            for k, v in {"tls.crt": leaf_cert, "tls.key": leaf_key, "ca.crt": ca_cert}.items()
        },
    }
    state = await ensure_tls(kube, body, REF, spec, [3], now=NOW)
    assert state.problem is None and state.ca_pem == ca_cert and state.mode == "secret"
    assert ("Secret", "db-ca") not in kube.objects  # the operator makes no CA of its own


async def test_cert_manager_without_its_crd_is_a_clear_status(
    events: list[tuple[str, str]],
) -> None:
    kube = CertManagerKube(cluster(), installed=False)
    body = await kube.get_cluster("ns", "db")
    spec = parse_spec({"tls": {"issuerRef": {"name": "ca-issuer"}}})
    state = await ensure_tls(kube, body, REF, spec, [3], now=NOW)
    assert state.problem is not None and "certificates.cert-manager.io" in state.problem
    assert kube.status["tls"] == {
        "enabled": True,
        "mode": "cert-manager",
        "secretName": "db-tls",
        "ready": False,
        "message": state.problem,
        "renewAt": None,
        "caExpiresAt": None,
    }
    assert not kube.applied


async def test_cert_manager_gets_a_certificate_and_its_secret_is_awaited(
    events: list[tuple[str, str]],
) -> None:
    kube = CertManagerKube(cluster(), installed=True)
    kube.add_pod("db-0", "10.0.0.1")
    body = await kube.get_cluster("ns", "db")
    spec = parse_spec({"tls": {"issuerRef": {"name": "ca-issuer"}}})
    state = await ensure_tls(kube, body, REF, spec, [3], now=NOW)
    assert state.problem == "Secret db-tls does not exist (cert-manager writes it)"
    certificate = kube.objects[("Certificate", "db-tls")]
    assert certificate["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert "10.0.0.1" in certificate["spec"]["ipAddresses"]
    assert "db-2.db-headless.ns.svc" in certificate["spec"]["dnsNames"]


class TlsApiDown(FakeKube):
    """The fake API, refusing the TLS Secrets' reads once `down` is set."""

    down = False

    async def get(self, api_version: str, kind: str, namespace: str, name: str) -> Any:
        if self.down and kind == "Secret" and name in ("db-ca", "db-tls"):
            raise kube_api.ApiError(403, "secrets is forbidden")
        return await super().get(api_version, kind, namespace, name)


class DownAfterFirstPass:
    """kopf's `stopped` flag after `passes` passes; the TLS Secrets refused after the first."""

    def __init__(self, passes: int, kube: TlsApiDown) -> None:
        self.left, self.kube = passes, kube

    def __bool__(self) -> bool:
        return self.left <= 0

    async def wait(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 (kopf API)
        self.left -= 1
        self.kube.down = True


async def test_a_failing_certificate_pass_does_not_cost_the_monitoring_pass(
    monkeypatch: pytest.MonkeyPatch, events: list[tuple[str, str]]
) -> None:
    import kopf

    from dvecdb_operator import runtime
    from tests.support.operator_fakes import FakeNode

    kube = TlsApiDown(cluster({"replicas": 2}))
    for i in range(2):
        kube.add_pod(f"db-{i}", f"10.0.0.{i + 1}")
    nodes = {f"http://10.0.0.{i + 1}:8080": FakeNode(f"db-{i}") for i in range(2)}
    contexts: list[Any] = []

    def factory(*, ssl_context: Any = None, **_: Any) -> Any:
        contexts.append(ssl_context)
        return lambda url: nodes[url]

    monkeypatch.setattr(runtime, "client_factory", factory)
    memo = kopf.Memo(kube=kube, node_session=None, config=runtime.RuntimeConfig())
    await runtime.monitor(memo, "ns", "db", DownAfterFirstPass(3, kube))
    # The passes after the first could not read the TLS Secrets, and still did their work.
    assert kube.down and kube.status["phase"] == "Healthy"
    assert (kube.status["leader"], kube.status["epoch"]) == ("db-0", 1)
    assert len(contexts) == 1 and contexts[0] is not None  # the first pass's CA kept


def ips(held: dict[str, bytes], leaf: str) -> frozenset[str]:
    """The IP addresses a held certificate names."""
    return certs.names_of(x509.load_pem_x509_certificate(held[f"{leaf}.crt"]))[1]


async def test_service_cluster_ips_are_named_once_allocated_and_reissued_when_they_change(
    events: list[tuple[str, str]],
) -> None:
    kube = FakeKube(cluster())
    body = await kube.get_cluster("ns", "db")
    spec = parse_spec({})
    await ensure_tls(kube, body, REF, spec, [2], now=NOW)
    before = data(kube, "db-tls")
    assert "10.96.0.10" not in ips(before, "db-0")
    for name, ip in (("db-rw", "10.96.0.10"), ("db-ro", "10.96.0.11"), ("db", "10.96.0.12")):
        kube.objects[("Service", name)] = {"metadata": {"name": name}, "spec": {"clusterIP": ip}}
    kube.objects[("Service", "db-headless")] = {"spec": {"clusterIP": "None"}}
    await ensure_tls(kube, body, REF, spec, [2], now=NOW)
    after = data(kube, "db-tls")

    assert {"10.96.0.10", "10.96.0.11"} <= ips(after, "db-0") and "10.96.0.12" in ips(
        after, "router"
    )
    # The rw Service made again with another ClusterIP: the members' certificates follow.
    kube.objects[("Service", "db-rw")]["spec"]["clusterIP"] = "10.96.0.20"
    await ensure_tls(kube, body, REF, spec, [2], now=NOW)
    again = data(kube, "db-tls")
    assert "10.96.0.20" in ips(again, "db-1") and "10.96.0.10" not in ips(again, "db-1")
    assert again["router.crt"] == after["router.crt"]  # the router's names did not change


async def test_a_ca_near_its_end_is_warned_about_in_status_and_an_event(
    events: list[tuple[str, str]],
) -> None:
    kube = FakeKube(cluster())
    body = await kube.get_cluster("ns", "db")
    await ensure_tls(kube, body, REF, parse_spec({}), [1], now=NOW)
    end = NOW + certs.CA_LIFETIME
    assert kube.status["tls"]["caExpiresAt"] == end.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert kube.status["tls"]["message"] == "certificates in place"
    assert "CaExpiring" not in [r for r, _ in events]
    # The kept CA is never renewed: 100 days before its end the status and an Event say so.
    late = end - dt.timedelta(days=100, hours=1)
    await ensure_tls(kube, body, REF, parse_spec({}), [1], now=late)
    tls = kube.status["tls"]
    assert tls["ready"] is True and "does not renew" in tls["message"], tls
    assert "100 days left" in tls["message"]
    assert [m for r, m in events if r == "CaExpiring"] == [tls["message"]]
