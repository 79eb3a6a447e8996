"""`spec.tls.issuerRef` with a real cert-manager (issue #16) on the local real Kubernetes.

cert-manager's own controller (built from its source, `tests/support/certmanager.py`) runs
against the plane with its release's CRDs; a namespaced CA Issuer signs. The operator asks
for one Certificate; cert-manager writes the Secret; members serve it over TLS, verify each
other with it (a follower replicates from its leader over HTTPS), the router serves it; a
client trusting only the issuer's CA connects by a pod's IP. Then the certificate is
re-issued (its Secret deleted, as a key compromise would be handled) and the members serve
the new one without a restart.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography import x509

from dvecdb_client import NodeClient
from localkube.plane import Plane, free_port
from tests.support import certmanager

from .conftest import Kubectl, api_key, secret_key, wait_until
from .test_operator_cluster import healthy_with, install_operator, pod, ready_endpoints

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

ISSUERS = """
apiVersion: cert-manager.io/v1
kind: Issuer
metadata: {name: selfsigned}
spec: {selfSigned: {}}
---
apiVersion: cert-manager.io/v1
kind: Certificate
metadata: {name: root-ca}
spec:
  isCA: true
  commonName: d-vecDB e2e root CA
  secretName: root-ca
  privateKey: {algorithm: ECDSA, size: 256}
  issuerRef: {name: selfsigned, kind: Issuer, group: cert-manager.io}
---
apiVersion: cert-manager.io/v1
kind: Issuer
metadata: {name: ca-issuer}
spec: {ca: {secretName: root-ca}}
"""

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
  tls:
    issuerRef: {name: ca-issuer, kind: Issuer}
"""


def _crds_gone(kubectl: Kubectl) -> bool:
    found = kubectl.run("get", "crd", "-o", "name", check=False).stdout
    return "cert-manager.io" not in found


@pytest.fixture
def cert_manager(plane: Plane, kubectl: Kubectl, namespace: str) -> Iterator[None]:
    """cert-manager's CRDs and controller for one test, both removed afterwards."""
    try:
        certmanager.ensure_controller()
    except certmanager.Unavailable as exc:
        pytest.skip(str(exc))
    # Another test may have left its stand-in Certificate CRD being deleted.
    wait_until(lambda: _crds_gone(kubectl), 120, "no cert-manager CRD left by another test")
    for crd in sorted(certmanager.CRDS.glob("*.yaml")):
        kubectl.run("apply", "--server-side", "-f", str(crd))
    for name in ("certificates", "issuers", "certificaterequests"):
        kubectl.run("wait", "--for=condition=Established", f"crd/{name}.cert-manager.io")
    log = plane.logs / "cert-manager.log"
    controller = certmanager.start(plane.kubeconfig, namespace, log, free_port(), free_port())
    try:
        yield
    finally:
        controller.terminate()
        try:
            controller.wait(timeout=20)
        except subprocess.TimeoutExpired:
            controller.kill()
            controller.wait(timeout=10)
        kubectl.run("delete", "dveccluster", "--all", "-n", namespace, "--wait=true", check=False)
        for crd in sorted(certmanager.CRDS.glob("*.yaml")):
            kubectl.run("delete", "-f", str(crd), "--wait=false", check=False)
        wait_until(lambda: _crds_gone(kubectl), 120, "cert-manager's CRDs deleted")


def _status(kubectl: Kubectl, namespace: str) -> dict[str, Any]:
    return dict((kubectl.get("dveccluster", "demo", namespace) or {}).get("status") or {})


def _ready_certificate(kubectl: Kubectl, namespace: str, name: str) -> bool:
    found = kubectl.run(
        "get", "certificates.cert-manager.io", name, "-n", namespace, "-o", "json", check=False
    )
    if found.returncode != 0:
        return False
    conditions = json.loads(found.stdout).get("status", {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def _verifies(ip: str, context: ssl.SSLContext) -> bool:
    try:
        _served(ip, context)
    except ssl.SSLCertVerificationError:
        return False
    return True


def _served(ip: str, context: ssl.SSLContext) -> x509.Certificate:
    """The certificate a member serves, verified by `context` against the pod's IP."""
    with socket.create_connection((ip, 8080), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=ip) as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def test_cert_manager_issues_members_and_router_certificates_and_reissues(
    kubectl: Kubectl, namespace: str, cert_manager: None
) -> None:
    release = install_operator(kubectl, namespace)
    try:
        kubectl.apply(ISSUERS, namespace)
        wait_until(lambda: _ready_certificate(kubectl, namespace, "root-ca"), 120, "the root CA")
        started = time.monotonic()
        kubectl.apply(CLUSTER, namespace)
        first = wait_until(lambda: healthy_with(kubectl, namespace), 300, "the cluster Healthy")
        print(f"\ncert-manager cluster Healthy {time.monotonic() - started:.1f}s after applied")
        tls = _status(kubectl, namespace)["tls"]
        assert (tls["mode"], tls["secretName"], tls["ready"]) == ("cert-manager", "demo-tls", True)
        assert _ready_certificate(kubectl, namespace, "demo-tls")

        # A client trusts the issuer's CA (cert-manager's `ca.crt`), nothing of the operator's.
        ca = secret_key(kubectl, namespace, "ca\\.crt", secret="root-ca").encode()
        assert secret_key(kubectl, namespace, "ca\\.crt", secret="demo-tls").encode() == ca
        assert kubectl.get("secret", "demo-ca", namespace) is None  # no operator CA
        context = ssl.create_default_context(cadata=ca.decode())
        leader_ip = pod(kubectl, namespace, first["leader"])["status"]["podIP"]
        served = _served(leader_ip, context)
        issuer = served.issuer.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
        assert issuer == "d-vecDB e2e root CA"
        key = api_key(kubectl, namespace)
        token = secret_key(kubectl, namespace, "clusterToken")
        follower = next(n for n in ("demo-0", "demo-1") if n != first["leader"])
        follower_ip = pod(kubectl, namespace, follower)["status"]["podIP"]
        leader, follower_url = f"https://{leader_ip}:8080", f"https://{follower_ip}:8080"
        wait_until(lambda: ready_endpoints(kubectl, namespace, "demo"), 180, "a ready router")
        # Through the router's Service as clients do: its ClusterIP is in the Certificate from
        # the operator's pass after the Service got it (then cert-manager and the kubelet).
        service_ip = kubectl.get("service", "demo", namespace)["spec"]["clusterIP"]
        wait_until(lambda: _verifies(service_ip, context), 90, "the router to serve its ClusterIP")
        router = f"https://{service_ip}:8080"

        async def replicate_and_route(vector_id: str) -> None:
            async with (
                NodeClient(leader, api_key=key, ca=ca) as lead,
                NodeClient(follower_url, token=token, ca=ca) as follow,
                NodeClient(router, api_key=key, ca=ca) as through,
            ):
                if "cm" not in [c["name"] for c in await lead.list_collections()]:
                    await lead.create_collection(name="cm", dimension=2, metric="l2")
                item = {"id": vector_id, "vector": [1.0, float(len(vector_id))]}
                written = await lead.upsert("cm", [item], ack="quorum")
                deadline = time.monotonic() + 60
                while (await follow.status())["applied_seq"] < written["seq"]:
                    assert time.monotonic() < deadline, "the follower did not apply the write"
                    await asyncio.sleep(0.2)
                details = await follow.replication_status()
                assert details["follower"]["streaming"], details
                assert details["follower"]["leader"].startswith("https://"), details
                found = await through.get("cm", vector_id)
                assert found is not None and found["id"] == vector_id, found

        asyncio.run(replicate_and_route("before"))

        # Re-issue: the Secret deleted, cert-manager writes a new key and certificate; the
        # kubelet updates the mounts and members load them without restarting.
        restarts = {
            name: pod(kubectl, namespace, name)["status"]["containerStatuses"][0]["restartCount"]
            for name in ("demo-0", "demo-1")
        }
        kubectl.run("delete", "secret", "demo-tls", "-n", namespace)
        renewed = wait_until(
            lambda: (
                (now := _served(leader_ip, context)).serial_number != served.serial_number and now
            ),
            180,
            "the leader to serve the re-issued certificate",
            every=2,
        )
        assert renewed.not_valid_before_utc >= served.not_valid_before_utc
        wait_until(
            lambda: _served(follower_ip, context).serial_number != served.serial_number,
            120,
            "the follower to serve the re-issued certificate",
            every=2,
        )
        asyncio.run(replicate_and_route("after"))
        for name, count in restarts.items():
            now = pod(kubectl, namespace, name)["status"]["containerStatuses"][0]["restartCount"]
            assert now == count, f"{name} restarted to take the certificate"
        assert _status(kubectl, namespace)["tls"]["ready"] is True
    finally:
        kubectl.run("uninstall", release, "-n", namespace, tool="helm", check=False)
