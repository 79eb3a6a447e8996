"""spec.tls on the local real Kubernetes (issue #16): a cluster of the default spec serves TLS
with keys on; a client trusting the CA from the cluster's Secret connects to a member and to
the router, plain HTTP gets no answer, a member replicates over TLS; the kept CA belongs to no
one (it outlives the cluster); a cert-manager issuer without cert-manager is a clear status,
and its Certificate is accepted by the API server once the CRD is there (a CRD holding the
fields the operator writes, as cert-manager types them).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import socket
import ssl
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
from cryptography import x509

from dvecdb_client import NodeClient, NodeError
from dvecdb_operator import certificates as certs

from .conftest import Kubectl, api_key, secret_key, wait_until
from .test_operator_cluster import healthy_with, install_operator, pod, ready_endpoints

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

# The default spec: nothing about TLS or keys.
CLUSTER = """
apiVersion: dvecdb.io/v1alpha1
kind: DVecCluster
metadata:
  name: demo
spec:
  replicas: 2
  storage: {size: 64Mi}
  node: {fsync: batch, defaultAck: one}
  failover: {detectionSeconds: 3}
  router: {replicas: 1}
"""

WITH_ISSUER = """
apiVersion: dvecdb.io/v1alpha1
kind: DVecCluster
metadata:
  name: cm
spec:
  replicas: 1
  storage: {size: 64Mi}
  router: {replicas: 0}
  tls:
    issuerRef: {name: ca-issuer, kind: ClusterIssuer}
"""

# The part of cert-manager's Certificate CRD the operator writes (names and types as
# cert-manager defines them), so the API server checks the operator's manifest.
CERTIFICATE_CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: certificates.cert-manager.io
spec:
  group: cert-manager.io
  names: {kind: Certificate, listKind: CertificateList, plural: certificates, singular: certificate}
  scope: Namespaced
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              required: [issuerRef, secretName]
              properties:
                secretName: {type: string}
                commonName: {type: string}
                dnsNames: {type: array, items: {type: string}}
                ipAddresses: {type: array, items: {type: string}}
                duration: {type: string}
                renewBefore: {type: string}
                usages: {type: array, items: {type: string}}
                privateKey:
                  type: object
                  properties:
                    algorithm: {type: string, enum: [RSA, ECDSA, Ed25519]}
                    size: {type: integer}
                    rotationPolicy: {type: string, enum: [Never, Always]}
                issuerRef:
                  type: object
                  required: [name]
                  properties:
                    name: {type: string}
                    kind: {type: string}
                    group: {type: string}
"""


def status_of(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    return dict((kubectl.get("dveccluster", name, namespace) or {}).get("status") or {})


def ca_of(kubectl: Kubectl, namespace: str) -> bytes:
    """The CA a client trusts, read from the cluster's Secret as the README tells a user."""
    return secret_key(kubectl, namespace, "ca\\.crt", secret="demo-tls").encode()


def get(url: str, context: ssl.SSLContext | None, token: str | None = None) -> int:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def test_default_cluster_serves_tls_with_keys_and_replicates_over_it(
    kubectl: Kubectl, namespace: str
) -> None:
    release = install_operator(kubectl, namespace)
    try:
        run_default(kubectl, namespace)
        run_cert_manager(kubectl, namespace)
    finally:
        kubectl.run("uninstall", release, "-n", namespace, tool="helm", check=False)


def run_default(kubectl: Kubectl, namespace: str) -> None:
    started = time.monotonic()
    kubectl.apply(CLUSTER, namespace)
    first = wait_until(lambda: healthy_with(kubectl, namespace), 300, "the cluster Healthy")
    print(f"\nTLS cluster Healthy {time.monotonic() - started:.1f}s after it was applied")
    tls = status_of(kubectl, namespace, "demo")["tls"]
    assert (tls["mode"], tls["secretName"], tls["ready"]) == ("generated", "demo-tls", True), tls

    # The kept CA belongs to no one; the members' Secret to the cluster.
    ca_secret = kubectl.get("secret", "demo-ca", namespace)
    assert ca_secret is not None and not ca_secret["metadata"].get("ownerReferences")
    members_secret = kubectl.get("secret", "demo-tls", namespace)
    assert members_secret["metadata"]["ownerReferences"][0]["kind"] == "DVecCluster"
    ca = ca_of(kubectl, namespace)
    context = ssl.create_default_context(cadata=ca.decode())
    key = api_key(kubectl, namespace)
    token = secret_key(kubectl, namespace, "clusterToken")

    leader_ip = pod(kubectl, namespace, first["leader"])["status"]["podIP"]
    follower = next(n for n in ("demo-0", "demo-1") if n != first["leader"])
    follower_ip = pod(kubectl, namespace, follower)["status"]["podIP"]
    leader, follower_url = f"https://{leader_ip}:8080", f"https://{follower_ip}:8080"
    assert get(f"{leader}/healthz", context) == 200
    # Keys are on: no key, no data, over TLS as before.
    assert get(f"{leader}/v1/collections", context) == 401
    assert get(f"{leader}/v1/collections", context, key) == 200
    # Plain HTTP to the member's port gets no HTTP answer.
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        urllib.request.urlopen(f"http://{leader_ip}:8080/healthz", timeout=5)
    # A client that does not trust the cluster's CA refuses the member.
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        get(f"{leader}/healthz", ssl.create_default_context())
    # The served certificate names the pod IP (the clients here check it: no name override).
    dns, ips = certs.names_of(x509.load_der_x509_certificate(_served_der(leader_ip, context)))
    assert leader_ip in ips and f"{first['leader']}.demo-headless.{namespace}.svc" in dns

    async def replicate() -> None:
        async with (
            NodeClient(leader, api_key=key, ca=ca) as lead,
            NodeClient(follower_url, token=token, ca=ca) as follow,
        ):
            await lead.create_collection(name="tls", dimension=2, metric="l2")
            written = await lead.upsert("tls", [{"id": "a", "vector": [1.0, 2.0]}], ack="quorum")
            deadline = time.monotonic() + 60
            while (await follow.status())["applied_seq"] < written["seq"]:
                assert time.monotonic() < deadline, "the follower did not apply the write"
                await asyncio.sleep(0.2)
            details = await follow.replication_status()
            assert details["follower"]["streaming"], details
            assert details["follower"]["leader"].startswith("https://"), details
            # The client refuses a server whose CA it was not given.
            other, _ = certs.new_ca("someone else", dt.datetime.now(dt.UTC))
            async with NodeClient(leader, api_key=key, ca=other, retries=0) as wrong:
                with pytest.raises(NodeError) as caught:
                    await wrong.list_collections()
                assert caught.value.code == "tls_untrusted"

    asyncio.run(replicate())

    # The router: HTTPS with the same CA, verifying the members behind it.
    wait_until(lambda: ready_endpoints(kubectl, namespace, "demo"), 180, "a ready router")
    # Clients reach the router through its Service, by name or by ClusterIP (both in its
    # certificate; the ClusterIP from the operator's pass after the Service got it, and the
    # kubelet then refreshes the router's mounted Secret).
    service_ip = kubectl.get("service", "demo", namespace)["spec"]["clusterIP"]
    waited = time.monotonic()
    wait_until(
        lambda: _verifies(service_ip, context), 90, "the router's certificate to name its ClusterIP"
    )
    print(f"router verified by ClusterIP {time.monotonic() - waited:.1f}s after it was ready")
    router = f"https://{service_ip}:8080"

    async def through_router() -> None:
        async with NodeClient(router, api_key=key, ca=ca) as client:
            await client.upsert("tls", [{"id": "b", "vector": [3.0, 4.0]}])
            found = await client.search("tls", [3.0, 4.0], k=1)
            assert found["results"][0][0]["id"] == "b", found

    asyncio.run(through_router())
    members_file = kubectl.get("configmap", "demo-router", namespace)["data"]["members.json"]
    assert "https://" in members_file and "http://" not in members_file


def _verifies(ip: str, context: ssl.SSLContext) -> bool:
    """A TLS handshake to `ip`:8080 verifies against `context` with the address as the name."""
    try:
        _served_der(ip, context)
    except ssl.SSLCertVerificationError:
        return False
    return True


def _served_der(ip: str, context: ssl.SSLContext) -> bytes:
    with socket.create_connection((ip, 8080), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=ip) as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def _certificate(kubectl: Kubectl, namespace: str) -> dict[str, Any] | None:
    """The Certificate `cm-tls`, None until the CRD is served and the operator made it."""
    found = kubectl.run(
        "get", "certificates.cert-manager.io", "cm-tls", "-n", namespace, "-o", "json",
        check=False,
    )  # fmt: skip
    return json.loads(found.stdout) if found.returncode == 0 else None


def run_cert_manager(kubectl: Kubectl, namespace: str) -> None:
    kubectl.apply(WITH_ISSUER, namespace)
    tls = wait_until(
        lambda: (status_of(kubectl, namespace, "cm").get("tls") or {}).get("message"),
        120,
        "status.tls of a cluster with an issuer and no cert-manager",
    )
    assert "certificates.cert-manager.io" in tls and "not installed" in tls, tls
    assert status_of(kubectl, namespace, "cm")["tls"]["ready"] is False
    kubectl.apply(CERTIFICATE_CRD, namespace)
    try:
        certificate = wait_until(
            lambda: _certificate(kubectl, namespace),
            120,
            "the Certificate accepted by the API server",
        )
        spec = certificate["spec"]
        assert spec["secretName"] == "cm-tls"
        assert spec["issuerRef"] == {
            "name": "ca-issuer",
            "kind": "ClusterIssuer",
            "group": "cert-manager.io",
        }
        assert f"cm-0.cm-headless.{namespace}.svc" in spec["dnsNames"]
        assert certificate["metadata"]["ownerReferences"][0]["name"] == "cm"
        message = wait_until(
            lambda: (
                "cert-manager writes it"
                in str((status_of(kubectl, namespace, "cm").get("tls") or {}).get("message"))
            ),
            60,
            "status.tls waiting for cert-manager's Secret",
        )
        assert message
    finally:
        kubectl.run("delete", "dveccluster", "cm", "-n", namespace, "--wait=false", check=False)
        kubectl.run("delete", "crd", "certificates.cert-manager.io", "--wait=false", check=False)
