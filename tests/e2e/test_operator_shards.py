"""A sharded cluster on the local real Kubernetes: 2 shards x 2 members behind the router.

The operator runs each shard as its own replica group (StatefulSets `demo` and `demo-s1`) and
the router Deployment `demo-router` behind the Service `demo`, the one client endpoint. Data
written through the router lands on both shards and searches through it cover both; killing
shard 1's leader while searching with `eventual` reads keeps every search's coverage full,
and the failover happens in shard 1 only (shard 0 keeps its leader and epoch).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import pytest

from localkube.containerpid import host_pid

from .conftest import Kubectl, api_key, http, wait_until
from .test_operator_cluster import install_operator, ready_endpoints

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

# The local kubelet maps images to the venv's console scripts and knows no `dvecdb/router`:
# the router runs from the node's image name with its own command (`dvecdb-router`), which the
# operator always sets.
CLUSTER = """
apiVersion: dvecdb.io/v1alpha1
kind: DVecCluster
metadata:
  name: demo
spec:
  shards: 2
  replicas: 2
  storage: {size: 64Mi}
  node: {fsync: batch, defaultAck: one}
  failover: {detectionSeconds: 3}
  networkPolicy: {enabled: false}
  tls: {enabled: false}  # members reached over plain HTTP here; TLS: test_operator_tls
  router: {replicas: 2}  # image: the members' with node -> router (dvecdb/router:0.1.0)
"""
DIM = 4
COUNT = 200


def status_of(kubectl: Kubectl, namespace: str) -> dict[str, Any]:
    return dict((kubectl.get("dveccluster", "demo", namespace) or {}).get("status") or {})


def shard_line(status: dict[str, Any], shard: int) -> dict[str, Any]:
    lines = status.get("shards") or []
    return dict(lines[shard]) if len(lines) > shard else {}


def all_healthy(kubectl: Kubectl, namespace: str) -> dict[str, Any] | None:
    status = status_of(kubectl, namespace)
    if status.get("phase") != "Healthy" or status.get("readyShards") != "2/2":
        return None
    return status


def router_url(kubectl: Kubectl, namespace: str) -> str:
    """A ready endpoint of the Service `demo` (by its EndpointSlice)."""
    found = wait_until(
        lambda: sorted(ready_endpoints(kubectl, namespace, "demo")), 120, "a ready router"
    )
    return f"http://{found[0]}:8080"


def routed_count(url: str, key: str) -> int | None:
    code, body = http("GET", f"{url}/v1/collections/e2e", token=key)
    return int(body["count"]) if code == 200 else None


def vector(i: int) -> list[float]:
    return [float(i % 17), float(i % 5), 1.0, float(i) / COUNT]


def test_two_shards_behind_the_router_fail_over_one_shard_only(
    kubectl: Kubectl, namespace: str
) -> None:
    started = time.monotonic()
    release = install_operator(kubectl, namespace)
    try:
        kubectl.apply(CLUSTER, namespace)
        status = wait_until(lambda: all_healthy(kubectl, namespace), 240, "both shards Healthy")
        created = time.monotonic() - started
        assert [shard_line(status, i)["leader"] for i in (0, 1)] == ["demo-0", "demo-s1-0"]
        assert [shard_line(status, i)["slots"] for i in (0, 1)] == [["0-2047"], ["2048-4095"]]
        assert status["slotMap"]["version"] == 1 and status["slotMap"]["shards"] == 2
        assert status["leaders"] == "demo-0,demo-s1-0"
        # Shard 0 keeps a one-shard cluster's fields; shard 1's group is under `groups`.
        assert (status["leader"], status["epoch"]) == ("demo-0", 1)
        assert status["groups"]["1"]["leader"] == "demo-s1-0"
        assert {m["name"] for m in status["groups"]["1"]["members"]} == {"demo-s1-0", "demo-s1-1"}
        for name in ("demo", "demo-s1"):
            assert kubectl.get("statefulset", name, namespace) is not None
        assert kubectl.get("deployment", "demo-router", namespace) is not None
        assert kubectl.get("poddisruptionbudget", "demo-router", namespace) is not None

        key = api_key(kubectl, namespace)
        url = router_url(kubectl, namespace)
        code, body = http("POST", f"{url}/v1/collections", {"name": "e2e", "dimension": DIM})
        assert code == 401, body  # the router carries the client's key; the members check it
        code, body = http(
            "POST", f"{url}/v1/collections", {"name": "e2e", "dimension": DIM}, token=key
        )
        assert code == 201, body
        vectors = [{"id": f"doc-{i}", "vector": vector(i)} for i in range(COUNT)]
        code, body = http(
            "PUT", f"{url}/v1/collections/e2e/vectors", {"vectors": vectors}, token=key
        )
        assert code == 200 and body["count"] == COUNT, body
        # The router's count reads any member (eventual): a follower may apply the batch a
        # moment after its acknowledgement.
        wait_until(lambda: routed_count(url, key) == COUNT, 30, f"{COUNT} vectors via the router")
        per_shard = {}
        for leader in ("demo-0", "demo-s1-0"):
            ip = kubectl.get("pod", leader, namespace)["status"]["podIP"]
            code, held = http("GET", f"http://{ip}:8080/v1/collections/e2e", token=key)
            assert code == 200, held
            per_shard[leader] = held["count"]
        assert sum(per_shard.values()) == COUNT and min(per_shard.values()) > 0, per_shard
        query = {"vector": vector(7), "k": 10, "consistency": "eventual"}
        code, body = http("POST", f"{url}/v1/collections/e2e/search", query, token=key)
        assert code == 200 and body["coverage"] == {"shards": 2, "answered": 2}, body
        assert body["results"][0][0]["id"] == "doc-7" and len(body["results"][0]) == 10

        # Searches run on while shard 1's leader process is killed.
        answers: list[tuple[int, Any]] = []
        stop = threading.Event()

        def search() -> None:
            while not stop.is_set():
                try:
                    answers.append(
                        http("POST", f"{url}/v1/collections/e2e/search", query, 5, token=key)
                    )
                except OSError as exc:
                    answers.append((0, str(exc)))
                time.sleep(0.05)

        searcher = threading.Thread(target=search, daemon=True)
        searcher.start()
        try:
            time.sleep(1)
            victim = kubectl.get("pod", "demo-s1-0", namespace)
            pid = host_pid(victim["status"]["containerStatuses"][0]["containerID"])
            assert pid is not None
            killed = time.monotonic()
            os.kill(pid, signal.SIGKILL)

            def failed_over() -> dict[str, Any] | None:
                line = shard_line(status_of(kubectl, namespace), 1)
                return line if line.get("leader") == "demo-s1-1" else None

            wait_until(failed_over, 60, "shard 1 led by demo-s1-1")
            failover_seconds = time.monotonic() - killed
            time.sleep(2)
        finally:
            stop.set()
            searcher.join(10)
        bad = [a for a in answers if a[0] != 200 or a[1]["coverage"]["answered"] != 2]
        assert len(answers) > 10 and bad == [], bad[:3]

        status = wait_until(lambda: all_healthy(kubectl, namespace), 120, "Healthy again")
        assert (shard_line(status, 0)["leader"], shard_line(status, 0)["epoch"]) == ("demo-0", 1)
        assert (shard_line(status, 1)["leader"], shard_line(status, 1)["epoch"]) == (
            "demo-s1-1",
            2,
        )
        assert status["groups"]["1"]["lastFailover"]["from"] == "demo-s1-0"
        assert "lastFailover" not in status  # shard 0 never failed over

        # Writes through the router reach the new leader; nothing acknowledged is missing.
        more = [{"id": f"after-{i}", "vector": vector(i)} for i in range(50)]
        code, body = http("PUT", f"{url}/v1/collections/e2e/vectors", {"vectors": more}, token=key)
        assert code == 200, body
        wait_until(lambda: routed_count(url, key) == COUNT + 50, 30, "the later writes")

        # A member's new pod (a new address, as a rescheduled pod gets) reaches the routers
        # through the members file the operator rewrites.
        old_uid = kubectl.get("pod", "demo-s1-0", namespace)["metadata"]["uid"]
        kubectl.run("delete", "pod", "demo-s1-0", "-n", namespace, "--wait=false")

        def routers_follow() -> set[str] | None:
            fresh = kubectl.get("pod", "demo-s1-0", namespace) or {}
            ip = (fresh.get("status") or {}).get("podIP")
            if fresh.get("metadata", {}).get("uid") in (None, old_uid) or not ip:
                return None
            code, seen = http("GET", f"{url}/v1/status", token=key)
            urls = {m["url"] for m in seen["shards"][1]["members"]} if code == 200 else set()
            return urls if f"http://{ip}:8080" in urls and len(urls) == 2 else None

        wait_until(routers_follow, 90, "the router to list demo-s1-0's new pod")
        print(
            f"\nshards e2e: created+healthy {created:.1f}s, failover {failover_seconds:.1f}s, "
            f"{len(answers)} searches during it, total {time.monotonic() - started:.1f}s"
        )
    finally:
        kubectl.run("uninstall", release, "-n", namespace, tool="helm", check=False)
