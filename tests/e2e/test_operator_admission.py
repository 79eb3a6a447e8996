"""Changes the operator can never apply are refused at `kubectl apply` (issue #15).

The CRD's CEL rules, evaluated by the real API server: `storage.size` may grow but not shrink
(a claim never gets smaller), and `storage.storageClassName` cannot change (existing claims
keep their class). No operator runs here: admission alone decides.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import Kubectl, wait_until

pytestmark = pytest.mark.e2e

CRD = Path(__file__).resolve().parents[2] / "crds" / "dvecdb.io_dvecclusters.yaml"

CLUSTER = """
apiVersion: dvecdb.io/v1alpha1
kind: DVecCluster
metadata:
  name: sized
spec:
  replicas: 1
  storage: {size: 2Gi}
"""


def patch(kubectl: Kubectl, namespace: str, storage: str) -> tuple[int, str]:
    done = kubectl.run(
        "patch", "dveccluster", "sized", "-n", namespace, "--type=merge",
        "-p", f'{{"spec": {{"storage": {storage}}}}}', check=False,
    )  # fmt: skip
    return done.returncode, done.stderr


def test_storage_changes_that_can_never_apply_are_refused_at_admission(
    kubectl: Kubectl, namespace: str
) -> None:
    kubectl.run("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    kubectl.run(
        "wait", "crd/dvecclusters.dvecdb.io", "--for=condition=Established", "--timeout=60s"
    )
    wait_until(
        lambda: (
            kubectl.run("apply", "-n", namespace, "-f", "-", stdin=CLUSTER, check=False).returncode
            == 0
        ),
        30,
        "the DVecCluster to be accepted",
    )
    code, error = patch(kubectl, namespace, '{"size": "1Gi"}')
    assert code != 0 and "storage.size cannot shrink" in error, error
    code, error = patch(kubectl, namespace, '{"storageClassName": "other"}')
    assert code != 0 and "storageClassName cannot change" in error, error
    code, error = patch(kubectl, namespace, '{"size": "3Gi"}')
    assert code == 0, error
    spec = kubectl.get("dveccluster", "sized", namespace)["spec"]
    assert spec["storage"]["size"] == "3Gi"
    kubectl.run("delete", "dveccluster", "sized", "-n", namespace, "--timeout=60s")
