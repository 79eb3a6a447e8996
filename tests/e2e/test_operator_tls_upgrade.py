"""An operator upgrade never turns TLS on (issue #16), on the local real Kubernetes: a cluster
as an operator without TLS left it (the object, the API server filling `spec.tls` defaults in,
and the status that operator wrote) stays plain HTTP under the new operator, with a Warning
Event saying how to opt in; a cluster created now gets TLS, its certificates naming its
Services' ClusterIPs; the annotation opts the old one in.

The members' image is one the kubelet may not pull (`imagePullPolicy: Never`): no member pod
runs, the test is about what the operator writes to the API server.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from dvecdb_operator import certificates as certs

from .conftest import Kubectl, wait_until
from .test_operator_cluster import install_operator

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

CRD = Path(__file__).resolve().parents[2] / "crds" / "dvecdb.io_dvecclusters.yaml"

SPEC = """
apiVersion: dvecdb.io/v1alpha1
kind: DVecCluster
metadata:
  name: {name}
spec:
  replicas: 2
  image: localhost/dvecdb/not-pulled:0
  imagePullPolicy: Never
  storage: {{size: 64Mi}}
  router: {{replicas: 0}}
"""

# What the operator before TLS (status.py at 5790d69) wrote for a running cluster.
OLD_STATUS = {
    "phase": "Healthy",
    "readyMembers": "2/2",
    "replicas": 2,
    "selector": "app.kubernetes.io/instance=old",
    "leader": "old-0",
    "epoch": 1,
    "members": [
        {"name": "old-0", "role": "leader", "ready": True, "lastSeq": 7, "appliedSeq": 7},
        {"name": "old-1", "role": "follower", "ready": True, "lastSeq": 7, "appliedSeq": 7},
    ],
    "conditions": [
        {
            "type": "Ready",
            "status": "True",
            "reason": "Healthy",
            "message": "",
            "lastTransitionTime": "2026-11-30T12:00:00Z",
        }
    ],
    "message": "",
}


def cluster(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    return dict(kubectl.get("dveccluster", name, namespace) or {})


def template_env(kubectl: Kubectl, namespace: str, name: str) -> set[str] | None:
    sts = kubectl.get("statefulset", name, namespace)
    if sts is None:
        return None
    containers = sts["spec"]["template"]["spec"]["containers"]
    return {v["name"] for c in containers for v in c.get("env") or []}


def san_ips(kubectl: Kubectl, namespace: str, secret: str, key: str) -> frozenset[str]:
    data = (kubectl.get("secret", secret, namespace) or {}).get("data") or {}
    if key not in data:
        return frozenset()
    return certs.names_of(x509.load_pem_x509_certificate(base64.b64decode(data[key])))[1]


def cluster_ip(kubectl: Kubectl, namespace: str, service: str) -> str | None:
    return ((kubectl.get("service", service, namespace) or {}).get("spec") or {}).get("clusterIP")


def test_an_operator_upgrade_keeps_a_pre_tls_cluster_plain_and_new_clusters_get_tls(
    kubectl: Kubectl, namespace: str
) -> None:
    # The cluster as the operator before TLS left it, in place before this operator starts.
    kubectl.run("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    kubectl.run("wait", "--for=condition=Established", "crd/dvecclusters.dvecdb.io")
    wait_until(
        lambda: (
            kubectl.run(
                "apply", "-n", namespace, "-f", "-", stdin=SPEC.format(name="old"), check=False
            ).returncode
            == 0
        ),
        30,
        "the old cluster's object",
    )
    kubectl.run(
        "patch", "dveccluster", "old", "-n", namespace, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": OLD_STATUS}),
    )  # fmt: skip
    old = cluster(kubectl, namespace, "old")
    # The API server filled the default in, and credits it to the creator: neither the
    # spec nor managedFields tell the user's `enabled: true` from the default.
    assert old["spec"]["tls"] == {"enabled": True}, old["spec"]
    fields = kubectl.json("get", "dveccluster", "old", "-n", namespace, "--show-managed-fields")
    creator = next(m for m in fields["metadata"]["managedFields"] if m["operation"] == "Update")
    assert '"f:enabled"' in json.dumps(creator["fieldsV1"]), creator

    release = install_operator(kubectl, namespace)
    try:
        kubectl.apply(SPEC.format(name="new"), namespace)
        status = wait_until(
            lambda: (
                (cluster(kubectl, namespace, "old").get("status") or {}).get("tlsDefault")
                and template_env(kubectl, namespace, "old") is not None
                and cluster(kubectl, namespace, "old")["status"]
            ),
            120,
            "the operator's first pass over the old cluster",
        )
        assert status["tlsDefault"] == "disabled", status
        assert (
            status["tls"]["enabled"] is False
            and "dvecdb.io/tls=enabled" in (status["tls"]["message"])
        ), status["tls"]
        assert "DVECDB_TLS_CERT_FILE" not in (template_env(kubectl, namespace, "old") or set())
        events = kubectl.json(
            "get", "events", "-n", namespace, "--field-selector", "involvedObject.name=old"
        )["items"]
        kept = [e for e in events if e["reason"] == "TlsKeptOff"]
        assert kept and kept[0]["type"] == "Warning", [e["reason"] for e in events]

        new = wait_until(
            lambda: (cluster(kubectl, namespace, "new").get("status") or {}).get("tls"),
            120,
            "the new cluster's TLS status",
        )
        assert new["enabled"] is True and new["mode"] == "generated", new
        assert cluster(kubectl, namespace, "new")["status"]["tlsDefault"] == "enabled"
        assert "DVECDB_TLS_CERT_FILE" in (template_env(kubectl, namespace, "new") or set())

        # The certificates name the Services' ClusterIPs once allocated (the next pass).
        rw, router = cluster_ip(kubectl, namespace, "new-rw"), cluster_ip(kubectl, namespace, "new")
        assert rw and router
        wait_until(
            lambda: (
                rw in san_ips(kubectl, namespace, "new-tls", "new-0.crt")
                and router in san_ips(kubectl, namespace, "new-tls", "router.crt")
            ),
            60,
            f"new-0's certificate naming {rw} and the router's naming {router}",
        )

        # Passes go on: the old cluster stays as it was (no restart, no certificates).
        generation = kubectl.get("statefulset", "old", namespace)["metadata"]["generation"]
        time.sleep(5)
        assert kubectl.get("statefulset", "old", namespace)["metadata"]["generation"] == generation
        assert kubectl.get("secret", "old-tls", namespace) is None
        assert kubectl.get("secret", "old-ca", namespace) is None

        # The user opts in: certificates, then members started with them.
        started = time.monotonic()
        kubectl.run("annotate", "dveccluster", "old", "-n", namespace, "dvecdb.io/tls=enabled")
        wait_until(
            lambda: "DVECDB_TLS_CERT_FILE" in (template_env(kubectl, namespace, "old") or set()),
            60,
            "the old cluster's members started with TLS",
        )
        took = time.monotonic() - started
        print(f"\nopted in: members' template with TLS {took:.1f}s after")
        # Within a few monitor passes (1 s here), not the 30 s safety net's converge.
        assert took < 15, took
        assert kubectl.get("secret", "old-tls", namespace) is not None
        tls = cluster(kubectl, namespace, "old")["status"]
        assert tls["tls"]["enabled"] is True and tls["tlsDefault"] == "disabled", tls
    finally:
        for name in ("old", "new"):
            kubectl.run("delete", "dveccluster", name, "-n", namespace, "--wait=false", check=False)
        kubectl.run("uninstall", release, "-n", namespace, tool="helm", check=False)
