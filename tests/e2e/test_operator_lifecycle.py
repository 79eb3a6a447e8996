"""Changing a running cluster's settings on the local real Kubernetes (issue #15):
`spec.node.hnsw.efSearch` and `spec.storage.size`, neither restarting a member.

- efSearch: the node-defaults ConfigMap takes the new default, every existing collection gets
  it through the leader's replicated `PATCH` (all members describe it), `status.efSearch`
  records it, and every pod is the same pod as before.
- storage.size with a StorageClass that allows expansion: the real API server takes the
  operator's patch of each claim's `spec.resources.requests.storage` (its resize admission
  checks the class), the StatefulSet is deleted with its pods orphaned and made again with the
  new claim template, and it adopts the same pods.
- The same class switched to `allowVolumeExpansion: false`: the next growth changes no claim
  and `status.storage.message` says why.

Not exercised here: the volumes themselves. localkube binds claims to hostPath volumes and
runs no resizer, so no PV capacity or file system grows (a CSI driver's job).
"""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import Kubectl, api_key, http, wait_until
from .test_operator_cluster import base_url, healthy_with, install_operator, rw_url, status_of

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

NAMES = ["demo-0", "demo-1"]


def storage_class(name: str, expandable: bool) -> str:
    return f"""
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: {name}
provisioner: localkube.dvecdb.io/none
allowVolumeExpansion: {str(expandable).lower()}
"""


def cluster(storage_class_name: str) -> str:
    return f"""
apiVersion: dvecdb.io/v1alpha1
kind: DVecCluster
metadata:
  name: demo
spec:
  replicas: 2
  storage: {{size: 64Mi, storageClassName: {storage_class_name}}}
  node: {{fsync: batch, defaultAck: one}}
  tls: {{enabled: false}}  # members reached over plain HTTP here; TLS: test_operator_tls
"""


def pod_uids(kubectl: Kubectl, namespace: str) -> dict[str, str]:
    return {n: kubectl.get("pod", n, namespace)["metadata"]["uid"] for n in NAMES}


def claim_sizes(kubectl: Kubectl, namespace: str) -> list[str]:
    return [
        kubectl.get("pvc", f"data-{n}", namespace)["spec"]["resources"]["requests"]["storage"]
        for n in NAMES
    ]


def patch_spec(kubectl: Kubectl, namespace: str, patch: str) -> None:
    kubectl.run("patch", "dveccluster", "demo", "-n", namespace, "--type=merge", "-p", patch)


def reasons(kubectl: Kubectl, namespace: str) -> list[str]:
    return [e["reason"] for e in kubectl.json("get", "events", "-n", namespace)["items"]]


def test_ef_search_and_storage_grow_without_restarting_members(
    kubectl: Kubectl, namespace: str
) -> None:
    release = install_operator(kubectl, namespace)
    klass = f"expandable-{namespace}"[:63]
    kubectl.apply(storage_class(klass, True))
    try:
        run(kubectl, namespace, klass)
    finally:
        kubectl.run("uninstall", release, "-n", namespace, tool="helm", check=False)
        kubectl.run("delete", "storageclass", klass, "--wait=false", check=False)


def run(kubectl: Kubectl, namespace: str, klass: str) -> None:
    kubectl.apply(cluster(klass), namespace)
    wait_until(lambda: healthy_with(kubectl, namespace), 300, "the cluster Healthy")
    key = api_key(kubectl, namespace)
    code, body = http(
        "POST", f"{rw_url(kubectl, namespace)}/v1/collections", {"name": "e2e", "dimension": 4},
        token=key,
    )  # fmt: skip
    assert code == 201 and body["hnsw"]["ef_search"] == 50, body
    uids = pod_uids(kubectl, namespace)
    sts_uid = kubectl.get("statefulset", "demo", namespace)["metadata"]["uid"]

    # efSearch: no restart, every member describes the new value.
    patch_spec(kubectl, namespace, '{"spec": {"node": {"hnsw": {"efSearch": 140}}}}')

    def efs() -> list[Any]:
        found = []
        for name in NAMES:
            code, body = http("GET", f"{base_url(kubectl, namespace, name)}/v1/collections/e2e",
                              token=key)  # fmt: skip
            found.append(body["hnsw"]["ef_search"] if code == 200 else None)
        return found

    wait_until(
        lambda: status_of(kubectl, namespace).get("efSearch", {}).get("applied") == 140,
        120,
        "status.efSearch.applied 140",
    )
    wait_until(lambda: efs() == [140, 140], 60, "every member to describe ef_search 140")
    defaults = kubectl.get("configmap", "demo-node-defaults", namespace)
    assert defaults["data"] == {"DVECDB_HNSW_EF_SEARCH": "140"}
    assert "EfSearchApplied" in reasons(kubectl, namespace)
    assert pod_uids(kubectl, namespace) == uids

    # storage.size grows: claims patched, the StatefulSet made again, the same pods.
    assert claim_sizes(kubectl, namespace) == ["64Mi", "64Mi"]
    patch_spec(kubectl, namespace, '{"spec": {"storage": {"size": "128Mi"}}}')
    wait_until(
        lambda: claim_sizes(kubectl, namespace) == ["128Mi", "128Mi"], 120, "claims of 128Mi"
    )

    def recreated() -> dict[str, Any] | None:
        sts = kubectl.get("statefulset", "demo", namespace)
        if sts is None or sts["metadata"]["uid"] == sts_uid:
            return None
        return dict(sts)

    sts = wait_until(recreated, 120, "the StatefulSet made again")
    template = sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]
    assert template["storage"] == "128Mi"
    record = status_of(kubectl, namespace)["storage"]
    assert (record["requested"], record["size"], record["message"]) == ("128Mi", "128Mi", "")
    wait_until(lambda: healthy_with(kubectl, namespace), 120, "Healthy after the growth")
    assert pod_uids(kubectl, namespace) == uids
    owners = [
        ref["uid"]
        for n in NAMES
        for ref in kubectl.get("pod", n, namespace)["metadata"].get("ownerReferences") or []
    ]
    assert owners == [sts["metadata"]["uid"]] * 2  # adopted by the new StatefulSet
    seen = reasons(kubectl, namespace)
    assert "StorageExpanding" in seen and "StatefulSetRecreated" in seen

    # The class stops allowing expansion: nothing changes, and the status says why.
    kubectl.run("patch", "storageclass", klass, "--type=merge", "-p",
                '{"allowVolumeExpansion": false}')  # fmt: skip
    patch_spec(kubectl, namespace, '{"spec": {"storage": {"size": "256Mi"}}}')
    record = wait_until(
        lambda: (
            (found := status_of(kubectl, namespace).get("storage", {})).get("message") and found
        ),
        120,
        "status.storage to say the class cannot expand",
    )
    assert "does not allow volume expansion" in record["message"], record
    assert (record["requested"], record["size"]) == ("256Mi", "128Mi")
    assert claim_sizes(kubectl, namespace) == ["128Mi", "128Mi"]
    assert "StorageNotExpandable" in reasons(kubectl, namespace)
    assert pod_uids(kubectl, namespace) == uids
