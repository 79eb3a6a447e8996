"""The operator's NetworkPolicy, enforced (issue #16): on the session plane with kube-router's
firewall on (localkube's opt-in `network_policy`, kube-router v2.1.0), a pod the policy admits
(`allowFrom`) reaches a member's port; a pod of the same namespace without the label and a pod
of another namespace with it do not, until the policy is turned off (so the policy blocks them,
not the network); with the policy on the members still replicate and the operator (a pod: the
Helm chart's Deployment, admitted by its own peer only) still reaches them.

Enforcement is on only while this module runs: the other e2e tests reach members from the host,
which a policy would refuse. Its rules and ipsets are removed afterwards and checked gone.

Observed outcomes are printed (`-s`).
"""

from __future__ import annotations

import json
import socket
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from localkube import netpolicy, realnode
from localkube.plane import Plane

from .conftest import Kubectl, api_key, scratch_namespace, wait_until
from .test_operator_cluster import healthy_with, install_operator, pod

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

CLIENT_LABEL = {"dvecdb-e2e/role": "client"}
CLUSTER = """
apiVersion: dvecdb.io/v1alpha1
kind: DVecCluster
metadata:
  name: demo
spec:
  replicas: 2
  storage: {size: 64Mi}
  node: {fsync: batch, defaultAck: one}
  tls: {enabled: false}  # plain HTTP keeps the probes simple; the policy is the same with TLS
  networkPolicy:
    # Narrower than the default (the whole namespace): the operator's pod is then admitted
    # only by the policy's own operator peer.
    allowFrom: [{podSelector: {matchLabels: {dvecdb-e2e/role: client}}}]
"""

# Runs in a pod (the node image has python3): one TCP connect, or one JSON request.
CONNECT = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3).close()
    print("open")
except socket.timeout:
    print("timeout")
except ConnectionRefusedError:
    print("refused")
except OSError as err:
    print(f"error {err.errno}")
"""
REQUEST = """
import json, sys, urllib.request, urllib.error
method, url, token, body = sys.argv[1:5]
req = urllib.request.Request(url, data=body.encode() or None, method=method, headers={
    "Content-Type": "application/json", "Authorization": f"Bearer {token}"})
try:
    with urllib.request.urlopen(req, timeout=10) as resp:
        print(json.dumps([resp.status, json.loads(resp.read() or b"null")]))
except urllib.error.HTTPError as err:
    print(json.dumps([err.code, err.read().decode(errors="replace")]))
"""


def firewall_leftovers_on_host() -> list[str]:
    """kube-router's chains or ipsets in the host's namespace (it must only touch the node's)."""
    save = subprocess.run(
        ["iptables-save", "-t", "filter"], capture_output=True, text=True, check=False
    ).stdout
    sets = subprocess.run(["ipset", "list", "-n"], capture_output=True, text=True, check=False)
    return netpolicy.leftovers(save, sets.stdout.split())


@pytest.fixture(scope="module")
def enforcing(plane: Plane) -> Iterator[Plane]:
    """The session plane with NetworkPolicies enforced while this module runs."""
    assert not firewall_leftovers_on_host()
    plane.enable_network_policy()
    try:
        yield plane
    finally:
        removed = plane.disable_network_policy()
        print(f"\nenforcement off, removed: {len(removed)} items ({removed[:3]} ...)")
        assert not netpolicy.leftovers(*realnode.firewall_state()), "left in the node"
        assert not firewall_leftovers_on_host(), "kube-router touched the host's namespace"


@pytest.fixture
def other_namespace(kubectl: Kubectl) -> Iterator[str]:
    yield from scratch_namespace(kubectl, f"t-np-outside-{uuid.uuid4().hex[:5]}")


def start_prober(kubectl: Kubectl, namespace: str, name: str, labels: dict[str, str]) -> None:
    manifest = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "containers": [
                {
                    "name": "probe",
                    "image": "localkube-test/python:1",
                    "command": ["python3", "-c", "import time; time.sleep(3600)"],
                }
            ],
        },
    }
    kubectl.apply(json.dumps(manifest), namespace)


def running(kubectl: Kubectl, namespace: str, name: str) -> bool:
    found = kubectl.get("pod", name, namespace) or {}
    return bool(found.get("status", {}).get("phase") == "Running")


def connect(kubectl: Kubectl, namespace: str, name: str, ip: str, port: int = 8080) -> str:
    """open, timeout, refused or `error N`: one TCP connection from the pod to ip:port."""
    result = kubectl.run(
        "exec", "-n", namespace, name, "--", "python3", "-c", CONNECT, ip, str(port)
    )
    return result.stdout.strip()


def host_connect(ip: str, port: int = 8080) -> str:
    """The same probe from the test process (the host, routed through the node): observed and
    printed, not asserted (the host is no pod, so no peer of the policy names it)."""
    try:
        socket.create_connection((ip, port), timeout=3).close()
        return "open"
    except TimeoutError:
        return "timeout"
    except ConnectionRefusedError:
        return "refused"
    except OSError as err:
        return f"error {err.errno}"


def request(
    kubectl: Kubectl, namespace: str, name: str, method: str, url: str, token: str, body: Any
) -> tuple[int, Any]:
    payload = json.dumps(body) if body is not None else ""
    argv = ["exec", "-n", namespace, name, "--", "python3", "-c", REQUEST, method, url, token]
    code, decoded = json.loads(kubectl.run(*argv, payload).stdout)
    return int(code), decoded


def members_caught_up(kubectl: Kubectl, namespace: str, seq: int) -> list[dict[str, Any]] | None:
    """status.members once the operator reports every member reachable at `seq` or later:
    the operator reached them, and the follower replicated the write."""
    status = (kubectl.get("dveccluster", "demo", namespace) or {}).get("status") or {}
    members = status.get("members") or []
    if len(members) != 2:
        return None
    if any(m["role"] == "unreachable" or m.get("appliedSeq", 0) < seq for m in members):
        return None
    return list(members)


def test_policy_admits_members_operator_and_allowed_pods_only(
    enforcing: Plane, kubectl: Kubectl, namespace: str, other_namespace: str
) -> None:
    release = install_operator(kubectl, namespace)
    try:
        kubectl.apply(CLUSTER, namespace)
        start_prober(kubectl, namespace, "client", CLIENT_LABEL)
        start_prober(kubectl, other_namespace, "outsider", CLIENT_LABEL)
        start_prober(kubectl, namespace, "bystander", {"dvecdb-e2e/role": "other"})
        status = wait_until(lambda: healthy_with(kubectl, namespace), 240, "the cluster Healthy")
        wait_until(lambda: running(kubectl, namespace, "client"), 60, "the client running")
        wait_until(lambda: running(kubectl, other_namespace, "outsider"), 60, "outsider running")
        wait_until(lambda: running(kubectl, namespace, "bystander"), 60, "bystander running")
        assert kubectl.get("networkpolicy", "demo", namespace) is not None
        leader = pod(kubectl, namespace, status["leader"])["status"]["podIP"]
        follower_name = next(n for n in ("demo-0", "demo-1") if n != status["leader"])
        follower = pod(kubectl, namespace, follower_name)["status"]["podIP"]
        service = (kubectl.get("service", "demo-rw", namespace) or {})["spec"]["clusterIP"]

        # The allowed pod reaches the member; the other namespace's pod, with the same labels,
        # is refused by the policy (kube-router applies it within a sync).
        assert connect(kubectl, namespace, "client", leader) == "open"
        outsider = wait_until(
            lambda: (r := connect(kubectl, other_namespace, "outsider", leader)) != "open" and r,
            60,
            "the outsider refused",
        )
        assert outsider in ("timeout", "refused"), outsider
        bystander = connect(kubectl, namespace, "bystander", leader)
        assert bystander in ("timeout", "refused"), bystander
        # Through the Service too (kube-proxy's DNAT, marked for masquerading): kube-router's
        # chains come before kube-proxy's accept of marked packets.
        assert connect(kubectl, namespace, "client", service) == "open"
        via_service = connect(kubectl, other_namespace, "outsider", service)
        assert via_service in ("timeout", "refused"), via_service
        print(
            f"\npolicy on: client (allowFrom) -> {leader}:8080 open; bystander (same namespace, "
            f"unlabelled) -> {bystander}; outsider (other namespace) -> {outsider}, through "
            f"demo-rw ({service}) -> {via_service}; the host -> {host_connect(leader)}"
        )

        # With the policy on, the members replicate and the operator reaches them: a write
        # from the allowed pod reaches the follower and the operator reports both at its seq.
        key = api_key(kubectl, namespace)
        base = f"http://{leader}:8080/v1/collections"
        code, body = request(
            kubectl, namespace, "client", "POST", base, key, {"name": "np", "dimension": 4}
        )
        assert code in (200, 201), body
        vectors = {"vectors": [{"id": "v1", "vector": [1.0, 0.0, 0.0, 1.0]}], "ack": "one"}
        code, body = request(
            kubectl, namespace, "client", "PUT", f"{base}/np/vectors", key, vectors
        )
        assert code == 200, body
        seq = int(body["seq"])
        members = wait_until(
            lambda: members_caught_up(kubectl, namespace, seq), 60, "both members at the seq"
        )
        code, _ = request(
            kubectl,
            namespace,
            "client",
            "GET",
            f"http://{follower}:8080/v1/collections/np/vectors/v1",
            key,
            None,
        )
        assert code == 200
        print(f"policy on: write seq {seq} on the follower; operator sees {members}")

        # The policy off (the CRD's switch): the same pod connects, so the policy blocked it.
        patch = {"spec": {"networkPolicy": {"enabled": False}}}
        kubectl.run(
            "patch", "dvc", "demo", "-n", namespace, "--type=merge", "-p", json.dumps(patch)
        )
        wait_until(
            lambda: kubectl.get("networkpolicy", "demo", namespace) is None, 60, "policy removed"
        )
        wait_until(
            lambda: connect(kubectl, other_namespace, "outsider", leader) == "open",
            60,
            "the outsider admitted once the policy is gone",
        )
        assert connect(kubectl, namespace, "bystander", leader) == "open"
        assert connect(kubectl, other_namespace, "outsider", service) == "open"
        print("policy off: outsider -> open (also through demo-rw), bystander -> open")
    finally:
        kubectl.run("delete", "dvc", "demo", "-n", namespace, "--wait=false", check=False)
        kubectl.run("uninstall", release, "-n", namespace, tool="helm", check=False)
