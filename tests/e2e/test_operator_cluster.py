"""The operator on the local real Kubernetes: Helm install, a DVecCluster of real node pods,
bootstrap, failover after the leader's process dies, failover across a network partition
with the stale leader fenced when it comes back, deletion collecting the children; and the
planned operations: switchover, scale-down below the leader, rolling image upgrade.
"""

from __future__ import annotations

import json
import os
import signal
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from localkube import net
from localkube.images import venv_bin

from .conftest import Kubectl, wait_until

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(900),
    pytest.mark.skipif(
        not (venv_bin() / "dvecdb-node").exists() or not (venv_bin() / "dvecdb-operator").exists(),
        reason="the dvecdb-node / dvecdb-operator console scripts are not installed in the venv",
    ),
]

CHART = Path(__file__).resolve().parents[2] / "charts" / "dvecdb-operator"
NAMES = ["demo-0", "demo-1", "demo-2"]

CLUSTER = """
apiVersion: dvecdb.io/v1alpha1
kind: DVecCluster
metadata:
  name: demo
spec:
  replicas: 3
  storage: {size: 64Mi}
  node: {fsync: batch, defaultAck: one}
  failover: {detectionSeconds: 3}
"""


def http(method: str, url: str, body: Any = None, timeout: float = 10) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")


def status_of(kubectl: Kubectl, namespace: str) -> dict[str, Any]:
    return dict((kubectl.get("dveccluster", "demo", namespace) or {}).get("status") or {})


def healthy_with(kubectl: Kubectl, namespace: str, *, not_leader: str | None = None) -> Any:
    status = status_of(kubectl, namespace)
    if status.get("phase") != "Healthy" or status.get("leader") in (None, not_leader):
        return None
    return status


def pod(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    found = kubectl.get("pod", name, namespace)
    assert found is not None, f"pod {name} missing"
    return dict(found)


def base_url(kubectl: Kubectl, namespace: str, name: str) -> str:
    return f"http://{pod(kubectl, namespace, name)['status']['podIP']}:8080"


def rw_endpoints(kubectl: Kubectl, namespace: str) -> set[str]:
    slices = kubectl.json(
        "get", "endpointslices", "-n", namespace, "-l", "kubernetes.io/service-name=demo-rw"
    )
    return {
        address
        for item in slices["items"]
        for endpoint in item.get("endpoints") or []
        if endpoint.get("conditions", {}).get("ready")
        for address in endpoint["addresses"]
    }


def count_on(url: str) -> int | None:
    try:
        status, body = http("GET", f"{url}/v1/collections/e2e", timeout=3)
    except (urllib.error.URLError, OSError):
        return None
    return int(body["count"]) if status == 200 else None


def install_operator(kubectl: Kubectl, namespace: str) -> str:
    release = f"op-{namespace}"[:40]
    kubectl.run(
        "install",
        release,
        str(CHART),
        "-n",
        namespace,
        "--set",
        f"watchNamespaces={{{namespace}}}",
        "--set",
        "operator.monitorInterval=1",
        "--set",
        "operator.nodeTimeout=2",
        tool="helm",
    )
    wait_until(
        lambda: kubectl.get("crd", "dvecclusters.dvecdb.io", "default") is not None,
        30,
        "the DVecCluster CRD",
    )
    return release


def test_operator_runs_a_cluster_through_failovers(kubectl: Kubectl, namespace: str) -> None:
    release = install_operator(kubectl, namespace)
    try:
        run_failovers(kubectl, namespace)
    finally:
        kubectl.run("uninstall", release, "-n", namespace, tool="helm", check=False)


def test_switchover_scale_down_and_rolling_upgrade(kubectl: Kubectl, namespace: str) -> None:
    release = install_operator(kubectl, namespace)
    try:
        run_planned_operations(kubectl, namespace)
    finally:
        kubectl.run("uninstall", release, "-n", namespace, tool="helm", check=False)


def run_planned_operations(kubectl: Kubectl, namespace: str) -> None:
    kubectl.apply(CLUSTER, namespace)
    status = wait_until(lambda: healthy_with(kubectl, namespace), 300, "the cluster Healthy")
    assert status["leader"] == "demo-0"

    # Planned switchover to demo-2 through the annotation; the request is cleared after.
    kubectl.run(
        "annotate", "dveccluster", "demo", "-n", namespace, "dvecdb.io/switchover-to=demo-2"
    )
    status = wait_until(
        lambda: healthy_with(kubectl, namespace, not_leader="demo-0"), 120, "switchover to demo-2"
    )
    assert (status["leader"], status["epoch"]) == ("demo-2", 2)
    assert status["lastFailover"]["reason"] == "switchover requested to demo-2"
    annotations = kubectl.get("dveccluster", "demo", namespace)["metadata"].get("annotations", {})
    assert "dvecdb.io/switchover-to" not in annotations

    # Scale down below the leader's ordinal: leadership moves first, then the member goes.
    kubectl.run("scale", "dveccluster", "demo", "-n", namespace, "--replicas=2")

    def scaled() -> Any:
        status = healthy_with(kubectl, namespace, not_leader="demo-2")
        sts = kubectl.get("statefulset", "demo", namespace) or {}
        if status and sts.get("spec", {}).get("replicas") == 2:
            return status if kubectl.get("pod", "demo-2", namespace) is None else None
        return None

    status = wait_until(scaled, 180, "scale-down to 2 with a new leader")
    assert status["leader"] in ("demo-0", "demo-1") and status["epoch"] == 3
    assert status["readyMembers"] == "2/2"

    # Rolling upgrade: a new pod template restarts the follower first, then switches over,
    # then restarts the old leader.
    before = status["leader"]
    kubectl.run(
        "patch",
        "dveccluster",
        "demo",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec": {"image": "dvecdb/node:0.1.1"}}',
    )

    def upgraded() -> Any:
        sts = kubectl.get("statefulset", "demo", namespace) or {}
        revision = sts.get("status", {}).get("updateRevision")
        pods = [kubectl.get("pod", n, namespace) for n in ("demo-0", "demo-1")]
        if not revision or not all(pods):
            return None
        if any(p["metadata"]["labels"].get("controller-revision-hash") != revision for p in pods):
            return None
        if any(c["image"] != "dvecdb/node:0.1.1" for p in pods for c in p["spec"]["containers"]):
            return None
        return healthy_with(kubectl, namespace, not_leader=before)

    status = wait_until(upgraded, 300, "every member on the new image, leadership moved")
    assert status["epoch"] == 4
    reasons = [
        e["reason"]
        for e in kubectl.json("get", "events", "-n", namespace)["items"]
        if e["involvedObject"]["kind"] == "DVecCluster"
    ]
    assert reasons.count("RollingRestart") >= 1 and "SwitchoverCompleted" in reasons


def run_failovers(kubectl: Kubectl, namespace: str) -> None:
    kubectl.apply(CLUSTER, namespace)

    # Bootstrap: ordinal 0 leads at epoch 1, the others follow; every member ready.
    status = wait_until(lambda: healthy_with(kubectl, namespace), 300, "the cluster Healthy")
    assert (status["leader"], status["epoch"]) == ("demo-0", 1)
    assert {m["name"]: m["role"] for m in status["members"]} == {
        "demo-0": "leader",
        "demo-1": "follower",
        "demo-2": "follower",
    }
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "Ready": "True",
        "LeaderElected": "True",
        "Replicating": "True",
    }
    for kind, name in [
        ("statefulset", "demo"),
        ("service", "demo-headless"),
        ("service", "demo-rw"),
        ("service", "demo-ro"),
        ("poddisruptionbudget", "demo"),
        ("secret", "demo-token"),
    ]:
        child = kubectl.get(kind, name, namespace)
        assert child is not None, f"{kind}/{name} missing"
        assert child["metadata"]["ownerReferences"][0]["kind"] == "DVecCluster"
    leader_ip = pod(kubectl, namespace, "demo-0")["status"]["podIP"]
    wait_until(
        lambda: rw_endpoints(kubectl, namespace) == {leader_ip}, 60, "demo-rw -> demo-0 only"
    )

    # Writes acknowledged by the leader and one follower.
    leader = base_url(kubectl, namespace, "demo-0")
    code, body = http("POST", f"{leader}/v1/collections", {"name": "e2e", "dimension": 4})
    assert code == 201, body
    for batch in range(4):
        vectors = [
            {"id": f"v{batch}-{i}", "vector": [float(i), float(batch), 0.0, 1.0]} for i in range(25)
        ]
        code, body = http(
            "PUT", f"{leader}/v1/collections/e2e/vectors", {"vectors": vectors, "ack": "one"}
        )
        assert code == 200, body

    # Failover 1: the leader's process dies (the kubelet restarts it in standby).
    pid = int(
        pod(kubectl, namespace, "demo-0")["status"]["containerStatuses"][0][
            "containerID"
        ].removeprefix("localkube://")
    )
    os.kill(pid, signal.SIGKILL)
    status = wait_until(
        lambda: healthy_with(kubectl, namespace, not_leader="demo-0"),
        180,
        "a new leader after demo-0's process died",
    )
    first = status["leader"]
    assert status["epoch"] == 2
    failover = status["lastFailover"]
    assert (failover["from"], failover["to"]) == ("demo-0", first)
    reasons = {
        e["reason"]
        for e in kubectl.json("get", "events", "-n", namespace)["items"]
        if e["involvedObject"]["kind"] == "DVecCluster"
    }
    assert {"Bootstrapped", "FailoverStarted", "EpochBumped", "Promoted", "FailoverCompleted"} <= (
        reasons
    )
    first_ip = pod(kubectl, namespace, first)["status"]["podIP"]
    wait_until(lambda: rw_endpoints(kubectl, namespace) == {first_ip}, 60, f"demo-rw -> {first}")
    assert count_on(base_url(kubectl, namespace, first)) == 100
    labels = {
        n: pod(kubectl, namespace, n)["metadata"]["labels"].get("dvecdb.io/role") for n in NAMES
    }
    assert labels[first] == "leader" and list(labels.values()).count("leader") == 1

    # Failover 2: a partition cuts the new leader off; it is fenced when it comes back.
    uid = pod(kubectl, namespace, first)["metadata"]["uid"]
    net.set_link(uid, up=False)
    try:
        status = wait_until(
            lambda: (
                (s := status_of(kubectl, namespace)).get("epoch") == 3
                and s.get("leader") != first
                and s
            ),
            180,
            f"a failover away from the partitioned {first}",
        )
    finally:
        net.set_link(uid, up=True)
    second = status["leader"]
    status = wait_until(
        lambda: healthy_with(kubectl, namespace, not_leader=first), 180, "Healthy after healing"
    )
    assert (status["leader"], status["epoch"]) == (second, 3)
    code, body = http("GET", f"{base_url(kubectl, namespace, first)}/v1/status")
    assert code == 200 and (body["role"], body["epoch"]) == ("follower", 3), body
    assert count_on(base_url(kubectl, namespace, second)) == 100

    # Deleting the cluster collects its children; the claims stay (reclaimPolicy Retain).
    kubectl.run("delete", "dveccluster", "demo", "-n", namespace, "--wait=false")
    wait_until(
        lambda: (
            kubectl.get("statefulset", "demo", namespace) is None
            and kubectl.get("service", "demo-rw", namespace) is None
        ),
        120,
        "the children to be garbage-collected",
    )
    claims = kubectl.json("get", "pvc", "-n", namespace)["items"]
    assert {c["metadata"]["name"] for c in claims} == {f"data-{n}" for n in NAMES}
