"""Access on the local real Kubernetes (issue #16): a default cluster is closed, each key opens
what it must and nothing more, keys rotate by editing the Secret without restarting a pod, and
the NetworkPolicy the operator writes is accepted by the API server and selects what it says.

The endpoint x credential table is printed (`-s`) as observed against a member pod.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

import pytest

from dvecdb_operator.builders.networkpolicy import NAMESPACE_NAME_LABEL

from .conftest import Kubectl, http, secret_key, wait_until
from .test_operator_cluster import CLUSTER, NAMES, base_url, healthy_with, install_operator

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

SECRET = "demo-token"
# The rotation bound on this plane: localkube's kubelet syncs Secret volumes every 3 s, the node
# re-reads its folder every 5 s (a kubelet takes up to about a minute: README "Access").
ROTATION_BOUND = 10.0


def outcome(code: int, body: Any) -> str:
    """ok (2xx), 401, 403, ro (403 read_only), or `passed` (past the key check, refused as a
    request: the body was invalid)."""
    if 200 <= code < 300:
        return "ok"
    if code == 403 and "read_only" in str(body):
        return "ro"
    if code in (401, 403):
        return str(code)
    return "passed" if code in (400, 404, 409, 422) else f"?{code}"


def endpoints(url: str, cred: str) -> list[tuple[str, str, str, Any]]:
    """(label, method, url, body) of one call per kind of endpoint; writes touch collections
    named for the credential, so an accepted one changes nothing another row reads."""
    search = {"vector": [1.0, 0.0, 0.0, 1.0], "k": 1}
    vectors = {"vectors": [{"id": f"by-{cred}", "vector": [1.0, 0.0, 0.0, 1.0]}]}
    return [
        ("GET /healthz", "GET", f"{url}/healthz", None),
        ("GET /v1/status", "GET", f"{url}/v1/status", None),
        ("GET /v1/collections (list)", "GET", f"{url}/v1/collections", None),
        ("GET /v1/collections/e2e (describe)", "GET", f"{url}/v1/collections/e2e", None),
        ("POST .../search", "POST", f"{url}/v1/collections/e2e/search", search),
        ("PUT .../vectors (write)", "PUT", f"{url}/v1/collections/e2e/vectors", vectors),
        (
            "POST /v1/collections (create)",
            "POST",
            f"{url}/v1/collections",
            {"name": f"made-{cred}", "dimension": 4},
        ),
        ("DELETE /v1/collections/x (drop)", "DELETE", f"{url}/v1/collections/drop-{cred}", None),
        ("GET /v1/replication/status", "GET", f"{url}/v1/replication/status", None),
        ("POST /v1/admin/promote (bad body)", "POST", f"{url}/v1/admin/promote", {}),
    ]


# What each credential must get, row by row as `endpoints` lists them.
EXPECTED = {
    "none": ["ok", "401", "401", "401", "401", "401", "401", "401", "401", "401"],
    "wrong": ["ok", "403", "403", "403", "403", "403", "403", "403", "403", "403"],
    "readOnlyKey": ["ok", "ok", "ok", "ok", "ok", "ro", "ro", "ro", "403", "403"],
    "apiKey": ["ok", "ok", "ok", "ok", "ok", "ok", "ok", "ok", "403", "403"],
    "clusterToken": ["ok", "ok", "ok", "ok", "ok", "ok", "ok", "ok", "ok", "passed"],
}


def table(url: str, tokens: dict[str, str | None]) -> dict[str, list[str]]:
    seen: dict[str, list[str]] = {}
    for cred, token in tokens.items():
        seen[cred] = [
            outcome(*http(method, target, body, timeout=5, token=token))
            for _, method, target, body in endpoints(url, cred)
        ]
    return seen


def print_table(url: str, seen: dict[str, list[str]]) -> None:
    labels = [row[0] for row in endpoints(url, "x")]
    creds = list(seen)
    print("\n" + " | ".join(["endpoint", *creds]))
    for i, label in enumerate(labels):
        print(" | ".join([label, *(seen[c][i] for c in creds)]))


def put_secret_key(kubectl: Kubectl, namespace: str, key: str, value: str) -> None:
    patch = {"stringData": {key: value}}
    kubectl.run("patch", "secret", SECRET, "-n", namespace, "--type=merge", "-p", json.dumps(patch))


def pods_of(kubectl: Kubectl, namespace: str) -> dict[str, tuple[str, int]]:
    """Each member's pod uid and its node container's restart count."""
    found = {}
    for name in NAMES:
        pod = kubectl.get("pod", name, namespace) or {}
        statuses = pod.get("status", {}).get("containerStatuses") or [{}]
        found[name] = (pod["metadata"]["uid"], int(statuses[0].get("restartCount", 0)))
    return found


def accepted_everywhere(urls: list[str], method: str, path: str, token: str) -> bool:
    return all(http(method, f"{u}{path}", timeout=3, token=token)[0] == 200 for u in urls)


def refused_everywhere(urls: list[str], method: str, path: str, token: str) -> bool:
    return all(http(method, f"{u}{path}", timeout=3, token=token)[0] == 403 for u in urls)


def test_default_cluster_is_closed_keys_rotate_in_place_and_the_policy_selects_its_peers(
    kubectl: Kubectl, namespace: str
) -> None:
    release = install_operator(kubectl, namespace)
    try:
        run_access(kubectl, namespace)
    finally:
        kubectl.run("uninstall", release, "-n", namespace, tool="helm", check=False)


def run_access(kubectl: Kubectl, namespace: str) -> None:
    kubectl.apply(CLUSTER, namespace)
    first = wait_until(lambda: healthy_with(kubectl, namespace), 300, "the cluster Healthy")

    # The operator made the Secret, owned by the cluster, with three distinct keys.
    secret = kubectl.get("secret", SECRET, namespace)
    assert secret is not None
    assert secret["metadata"]["ownerReferences"][0]["kind"] == "DVecCluster"
    keys = {k: secret_key(kubectl, namespace, k) for k in ("apiKey", "readOnlyKey", "clusterToken")}
    assert len(set(keys.values())) == 3 and all(len(v) >= 40 for v in keys.values())

    leader = base_url(kubectl, namespace, first["leader"])
    code, body = http(
        "POST", f"{leader}/v1/collections", {"name": "e2e", "dimension": 4}, token=keys["apiKey"]
    )
    assert code == 201, body
    for cred in EXPECTED:  # what the apiKey row drops
        code, body = http(
            "POST",
            f"{leader}/v1/collections",
            {"name": f"drop-{cred}", "dimension": 4},
            token=keys["apiKey"],
        )
        assert code == 201, body

    # Every endpoint kind against every credential, on the leader.
    tokens: dict[str, str | None] = {"none": None, "wrong": "not-a-key", **keys}
    seen = table(leader, tokens)
    print_table(leader, seen)
    assert seen == EXPECTED

    # Rotation: a new apiKey in the Secret opens the API on every member, and the old one
    # stops, with no pod restarted.
    urls = [base_url(kubectl, namespace, n) for n in NAMES]
    before = pods_of(kubectl, namespace)
    old, new = keys["apiKey"], secrets.token_urlsafe(32)
    started = time.monotonic()
    put_secret_key(kubectl, namespace, "apiKey", new)
    wait_until(
        lambda: (
            accepted_everywhere(urls, "GET", "/v1/collections", new)
            and refused_everywhere(urls, "GET", "/v1/collections", old)
        ),
        60,
        "the new apiKey accepted and the old refused on every member",
        every=0.25,
    )
    took = time.monotonic() - started
    print(f"apiKey rotation: in force on all {len(urls)} members {took:.1f}s after the edit")
    assert took <= ROTATION_BOUND, took
    code, body = http(
        "PUT",
        f"{leader}/v1/collections/e2e/vectors",
        {"vectors": [{"id": "after-rotation", "vector": [0.0, 1.0, 0.0, 1.0]}]},
        token=new,
    )
    assert code == 200, body
    assert pods_of(kubectl, namespace) == before
    # The operator keeps the value a user set.
    time.sleep(3)
    assert secret_key(kubectl, namespace, "apiKey") == new

    # The cluster token rotates in three edits (append, put first, drop the old), each
    # taking effect before the next; the operator reads it every pass, so the cluster stays
    # Healthy with the same leader and epoch throughout, and the old token ends refused.
    status = healthy_with(kubectl, namespace)
    assert status is not None
    token_old, token_new = keys["clusterToken"], secrets.token_urlsafe(32)
    path = "/v1/replication/status"
    for value in (f"{token_old},{token_new}", f"{token_new},{token_old}", token_new):
        put_secret_key(kubectl, namespace, "clusterToken", value)
        wait_until(
            lambda: accepted_everywhere(urls, "GET", path, token_new), 60, "the new cluster token"
        )
        time.sleep(ROTATION_BOUND)  # every member (and the operator) on this step
    wait_until(lambda: refused_everywhere(urls, "GET", path, token_old), 60, "the old token gone")
    # An operator still sending the old token would now see every member refuse it (403):
    # all unreachable, the phase leaves Healthy within a pass or two.
    for _ in range(16):
        after = healthy_with(kubectl, namespace)
        assert after is not None, "the operator lost the members after the token rotation"
        assert (after["leader"], after["epoch"]) == (status["leader"], status["epoch"])
        time.sleep(0.5)
    assert pods_of(kubectl, namespace) == before

    check_network_policy(kubectl, namespace)


def selected(kubectl: Kubectl, namespace: str, labels: dict[str, str]) -> set[str]:
    selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    pods = kubectl.json("get", "pods", "-n", namespace, "-l", selector)["items"]
    return {p["metadata"]["name"] for p in pods if not p["metadata"].get("deletionTimestamp")}


def check_network_policy(kubectl: Kubectl, namespace: str) -> None:
    """The API server accepted the operator's policy; its selectors pick the members and the
    operator's pod for real. (The local plane does not enforce policies: README.)"""
    policy = kubectl.get("networkpolicy", "demo", namespace)
    assert policy is not None, "the operator wrote no NetworkPolicy"
    assert policy["metadata"]["ownerReferences"][0]["kind"] == "DVecCluster"
    spec = policy["spec"]
    assert spec["policyTypes"] == ["Ingress"]
    assert selected(kubectl, namespace, spec["podSelector"]["matchLabels"]) == set(NAMES)
    [rule] = spec["ingress"]
    assert rule["ports"] == [{"port": 8080, "protocol": "TCP"}]
    members, operator, routers, everyone_here = rule["from"]
    assert routers["podSelector"]["matchLabels"]["dvecdb.io/router"] == "demo"
    assert selected(kubectl, namespace, members["podSelector"]["matchLabels"]) == set(NAMES)
    assert operator["namespaceSelector"]["matchLabels"] == {NAMESPACE_NAME_LABEL: namespace}
    operator_pods = selected(kubectl, namespace, operator["podSelector"]["matchLabels"])
    assert len(operator_pods) == 1 and next(iter(operator_pods)).startswith("op-")
    ns = kubectl.get("namespace", namespace, "default") or {}
    assert ns["metadata"]["labels"][NAMESPACE_NAME_LABEL] == namespace
    assert everyone_here == {"podSelector": {}}

    # Edits are patched back; `allowFrom` replaces the namespace default; disabled: gone.
    peers = [{"ipBlock": {"cidr": "10.213.0.0/24"}}]
    patch = {"spec": {"networkPolicy": {"allowFrom": peers}}}
    kubectl.run("patch", "dvc", "demo", "-n", namespace, "--type=merge", "-p", json.dumps(patch))
    wait_until(
        lambda: (
            (kubectl.get("networkpolicy", "demo", namespace) or {})["spec"]["ingress"][0]["from"][
                3:
            ]
            == peers
        ),
        60,
        "allowFrom in the policy",
    )
    patch = {"spec": {"networkPolicy": {"enabled": False}}}
    kubectl.run("patch", "dvc", "demo", "-n", namespace, "--type=merge", "-p", json.dumps(patch))
    wait_until(
        lambda: kubectl.get("networkpolicy", "demo", namespace) is None, 60, "the policy removed"
    )
