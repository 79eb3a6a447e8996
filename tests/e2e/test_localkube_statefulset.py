"""A plain StatefulSet of real ``dvecdb-node`` pods on the real controller-manager.

Covers readiness through the StatefulSet controller, EndpointSlices, pod-to-pod traffic over
the bridge, a partition by link down/up, pod deletion (process killed, pod recreated on the same
claim with its data), and garbage collection of the pods when the StatefulSet goes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from localkube import net
from localkube.containerpid import host_pid
from localkube.netplan import netns_name
from localkube.plane import Plane

from .conftest import MANIFESTS, Kubectl, http, wait_until

pytestmark = pytest.mark.e2e

NAMES = ["dvec-0", "dvec-1", "dvec-2"]


def reachable(url: str) -> bool:
    try:
        return http("GET", url, timeout=2)[0] == 200
    except (urllib.error.URLError, OSError):
        return False


def from_pod(pod_uid: str, url: str) -> bool:
    """GET ``url`` from inside another pod's network namespace."""
    code = f"import sys, urllib.request\nurllib.request.urlopen({url!r}, timeout=2)\n"
    result = subprocess.run(
        ["ip", "netns", "exec", netns_name(pod_uid), sys.executable, "-c", code],
        capture_output=True,
        timeout=20,
    )
    return result.returncode == 0


def pid_of(pod: dict[str, Any]) -> int:
    pid = host_pid(pod["status"]["containerStatuses"][0]["containerID"])
    assert pid is not None, pod["status"]["containerStatuses"][0]
    return pid


def ready_pods(kubectl: Kubectl, namespace: str) -> dict[str, dict[str, Any]] | None:
    pods = {}
    for name in NAMES:
        pod = kubectl.get("pod", name, namespace)
        conditions = {
            c["type"]: c["status"] for c in (pod or {}).get("status", {}).get("conditions", [])
        }
        if conditions.get("Ready") != "True":
            return None
        pods[name] = pod
    return pods


def slice_addresses(kubectl: Kubectl, namespace: str) -> dict[str, bool]:
    slices = kubectl.json(
        "get", "endpointslices", "-n", namespace, "-l", "kubernetes.io/service-name=dvec"
    )
    return {
        address: bool(endpoint.get("conditions", {}).get("ready"))
        for item in slices["items"]
        for endpoint in item.get("endpoints") or []
        for address in endpoint["addresses"]
    }


def test_statefulset_of_nodes(kubectl: Kubectl, namespace: str, plane: Plane) -> None:
    kubectl.apply(MANIFESTS / "statefulset-node.yaml", namespace)
    wait_until(
        lambda: (
            (kubectl.get("statefulset", "dvec", namespace) or {})
            .get("status", {})
            .get("readyReplicas")
            == 3
        ),
        240,
        "StatefulSet dvec 3/3 Ready",
    )
    pods = ready_pods(kubectl, namespace)
    assert pods is not None
    ips = {name: pod["status"]["podIP"] for name, pod in pods.items()}
    uids = {name: pod["metadata"]["uid"] for name, pod in pods.items()}
    assert len(set(ips.values())) == 3

    # EndpointSlices list every member's address as ready.
    wait_until(
        lambda: slice_addresses(kubectl, namespace) == {ip: True for ip in ips.values()},
        60,
        "EndpointSlices listing the three pods as ready",
    )
    # Each member answers from the host and from another pod.
    for name, ip in ips.items():
        assert reachable(f"http://{ip}:8080/healthz"), f"{name} unreachable from the host"
    assert from_pod(uids["dvec-1"], f"http://{ips['dvec-0']}:8080/healthz")

    # A partition: dvec-0's link down cuts it off; up heals.
    url0 = f"http://{ips['dvec-0']}:8080/healthz"
    net.set_link(uids["dvec-0"], up=False)
    try:
        assert not reachable(url0)
        assert not from_pod(uids["dvec-2"], url0)
        wait_until(
            lambda: slice_addresses(kubectl, namespace).get(ips["dvec-0"]) is False,
            30,
            "dvec-0 to be marked not ready in its EndpointSlice",
        )
    finally:
        net.set_link(uids["dvec-0"], up=True)
    wait_until(lambda: reachable(url0), 20, "dvec-0 reachable again")
    assert from_pod(uids["dvec-2"], url0)
    wait_until(lambda: ready_pods(kubectl, namespace), 60, "all pods Ready after healing")

    # Data written through the node API survives the pod's deletion.
    base = f"http://{ips['dvec-0']}:8080"
    collection = {
        "name": "e2e",
        "dimension": 4,
        "metric": "l2",
        "hnsw": {"m": 8, "ef_construction": 64, "ef_search": 32},
    }
    status, body = http("POST", f"{base}/v1/collections", collection, timeout=5)
    assert status == 201, body
    vectors = {
        "vectors": [{"id": f"v{i}", "vector": [float(i), 0.0, 1.0, 2.0]} for i in range(5)],
        "ack": "leader",
    }
    status, body = http("PUT", f"{base}/v1/collections/e2e/vectors", vectors, timeout=5)
    assert status == 200 and body["count"] == 5, body
    claim = kubectl.get("pvc", "data-dvec-0", namespace)
    volume_before = claim["spec"]["volumeName"]
    folder = Path(kubectl.get("pv", volume_before)["spec"]["hostPath"]["path"])
    assert any(folder.iterdir()), "the node wrote nothing into its claim's folder"

    old_pid = pid_of(kubectl.get("pod", "dvec-0", namespace))
    kubectl.run("delete", "pod", "dvec-0", "-n", namespace, "--wait=false")
    wait_until(lambda: not Path(f"/proc/{old_pid}").exists(), 30, "the old process to be killed")

    def recreated() -> dict[str, Any] | None:
        pod = kubectl.get("pod", "dvec-0", namespace)
        if not pod or pod["metadata"]["uid"] == uids["dvec-0"]:
            return None
        return ready_pods(kubectl, namespace) and pod

    new_pod = wait_until(recreated, 120, "dvec-0 recreated and Ready")
    assert kubectl.get("pvc", "data-dvec-0", namespace)["spec"]["volumeName"] == volume_before
    new_base = f"http://{new_pod['status']['podIP']}:8080"
    status, described = http("GET", f"{new_base}/v1/collections/e2e", timeout=5)
    assert status == 200 and described["count"] == 5, described

    # Deleting the StatefulSet removes its pods (garbage collector) and their processes.
    pids = [pid_of(p) for p in (ready_pods(kubectl, namespace) or {}).values()]
    kubectl.run("delete", "statefulset", "dvec", "-n", namespace, "--wait=false")
    wait_until(
        lambda: not kubectl.json("get", "pods", "-n", namespace, "-l", "app=dvec")["items"],
        90,
        "the StatefulSet's pods to be garbage-collected",
    )
    still = [pid for pid in pids if os.path.exists(f"/proc/{pid}")]
    assert not still, f"processes {still} outlived their pods"

    # Claims outlive the StatefulSet; deleting one releases its volume and folder.
    kubectl.run("delete", "pvc", "data-dvec-0", "-n", namespace, "--timeout=60s")
    wait_until(lambda: kubectl.get("pv", volume_before) is None, 30, "the volume to be released")
    assert not folder.exists()
