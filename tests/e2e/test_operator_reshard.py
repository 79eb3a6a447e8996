"""Resharding online on the local real Kubernetes: 2 shards x 2 members grow to 3 and shrink
back to 2 under load, the operator restarted during the shrink.

`kubectl patch dvc demo --type merge -p '{"spec":{"shards":3}}'` while a writer and a searcher
go through the router: the operator creates shard 2 (StatefulSet `demo-s2`), waits for its
leader, runs the planned moves one at a time (each publishing a new slot map to the status and
the router's members file) and finishes; the shrink moves shard 2's slots off, then deletes its
StatefulSet and Services (its claims stay: `reclaimPolicy: Retain`). Every write the router
acknowledged is readable afterwards (by id, through the router, and in the count), each item
is held by exactly its owner, and no search answered during a resharding returned an id twice.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from dvecdb_client.slots import SlotMap
from localkube.containerpid import host_pid

from .conftest import Kubectl, api_key, http, wait_until
from .test_operator_cluster import install_operator
from .test_operator_shards import CLUSTER, all_healthy, router_url, status_of

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

DIM = 4
BEFORE = 600
BATCH = 20


def vector(i: int) -> list[float]:
    return [float(i % 17), float(i % 5), 1.0, float(i % 1000) / 1000]


class Load:
    """A writer (batches of new ids) and a searcher through the router, in threads."""

    def __init__(self, url: str, key: str) -> None:
        self.url, self.key = url, key
        self.acked: list[str] = []
        self.refused: list[tuple[int, Any]] = []
        self.searches = 0
        self.bad_searches: list[Any] = []
        self.duplicates: list[Any] = []
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self.write, daemon=True),
            threading.Thread(target=self.search, daemon=True),
        ]

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)

    def write(self) -> None:
        batch = 0
        while not self.stop.is_set():
            ids = [f"live-{batch}-{j}" for j in range(BATCH)]
            body = {"vectors": [{"id": i, "vector": vector(batch * BATCH + j)}
                                for j, i in enumerate(ids)]}  # fmt: skip
            try:
                code, answer = http(
                    "PUT", f"{self.url}/v1/collections/e2e/vectors", body, 30, token=self.key
                )
            except OSError as exc:
                code, answer = 0, str(exc)
            if code == 200:
                self.acked += ids
            else:
                self.refused.append((code, answer))
            batch += 1
            time.sleep(0.05)

    def search(self) -> None:
        n = 0
        while not self.stop.is_set():
            query = {"vector": vector(n), "k": 20, "consistency": "eventual"}
            try:
                code, body = http(
                    "POST", f"{self.url}/v1/collections/e2e/search", query, 10, token=self.key
                )
            except OSError as exc:
                code, body = 0, str(exc)
            self.searches += 1
            if code != 200:
                self.bad_searches.append((code, body))
            else:
                ids = [hit["id"] for hit in body["results"][0]]
                twice = [i for i, count in Counter(ids).items() if count > 1]
                if twice:
                    self.duplicates.append(twice)
            n += 1
            time.sleep(0.05)


def finished_at(kubectl: Kubectl, namespace: str, shards: int) -> dict[str, Any] | None:
    status = status_of(kubectl, namespace)
    done = "resharding" not in status and (status.get("lastResharding") or {}).get("to") == shards
    ready = status.get("readyShards") == f"{shards}/{shards}"
    return status if done and status.get("phase") == "Healthy" and ready else None


@dataclass
class Run:
    status: dict[str, Any]
    load: Load
    seconds: float
    phases: list[str]


def reshard_under_load(
    kubectl: Kubectl,
    namespace: str,
    url: str,
    key: str,
    shards: int,
    *,
    during: Callable[[dict[str, Any]], bool] | None = None,
) -> Run:
    """Patch `spec.shards` while writing and searching; `during(status)` is called on each
    poll until it returns True (e.g. to restart the operator once a move runs)."""
    with Load(url, key) as load:
        time.sleep(2)
        patched = time.monotonic()
        kubectl.run(
            "patch", "dvc", "demo", "-n", namespace, "--type=merge",
            "-p", json.dumps({"spec": {"shards": shards}}),
        )  # fmt: skip
        phases: list[str] = []
        acted = during is None

        def finished() -> dict[str, Any] | None:
            nonlocal acted
            status = status_of(kubectl, namespace)
            summary = (status.get("resharding") or {}).get("summary")
            if summary and (not phases or phases[-1] != summary):
                phases.append(summary)
            if not acted and during is not None:
                acted = during(status)
            return finished_at(kubectl, namespace, shards) if acted else None

        status = wait_until(finished, 420, f"the resharding to {shards} shards", every=0.5)
        seconds = time.monotonic() - patched
        time.sleep(2)  # writes and searches on the new map
    return Run(status, load, seconds, phases)


def check_data(
    kubectl: Kubectl, namespace: str, url: str, key: str, acked: list[str], status: dict[str, Any]
) -> dict[int, int]:
    """Every acknowledged id is readable through the router, counted once, held by its owner
    only; returns each shard's count."""
    owners = SlotMap.from_owner_ranges(
        status["slotMap"]["version"], [(o[0], o[1], o[2]) for o in status["slotMap"]["owners"]]
    )
    missing = []
    for item in acked:
        code, _ = http("GET", f"{url}/v1/collections/e2e/vectors/{item}", token=key)
        if code != 200:
            missing.append((item, code))
    assert missing == [], missing[:5]
    unique = set(acked)
    wait_until(
        lambda: (
            (c := http("GET", f"{url}/v1/collections/e2e", token=key))[0] == 200
            and c[1]["count"] == len(unique)
        ),
        60,
        f"the router's count to be {len(unique)}",
    )
    held = {}
    for shard, leader in enumerate(status["leaders"].split(",")):
        ip = kubectl.get("pod", leader, namespace)["status"]["podIP"]
        code, info = http("GET", f"http://{ip}:8080/v1/collections/e2e", token=key)
        assert code == 200, info
        held[shard] = info["count"]
    expected = Counter(owners.shard_of(item) for item in unique)
    assert held == dict(sorted(expected.items())), (held, expected)
    return held


def summary(run: Run) -> str:
    last = run.status["lastResharding"]
    refused = Counter(code for code, _ in run.load.refused)
    return (
        f"{last['from']}->{last['to']} shards in {run.seconds:.1f}s (operator: {last['seconds']}s,"
        f" {last['slotsMoved']} slots, {last['itemsCopied']} items copied), "
        f"{len(run.load.acked)} items written during it ({len(run.load.refused)} batches "
        f"refused: {dict(refused)}), {run.load.searches} searches "
        f"({len(run.load.bad_searches)} failed: {str(run.load.bad_searches[:2])[:300]}), "
        f"phases {run.phases}"
    )


def check_run(run: Run, *, leader_killed: bool = False) -> None:
    """No duplicates ever; searches fail only rarely, or with a leader killed (its group of
    two has no ready member until the failover and the restart), only as `shard_unavailable`."""
    assert run.load.duplicates == [], run.load.duplicates[:3]
    assert len(run.load.acked) > 0 and run.load.searches > 10
    if leader_killed:
        other = [b for b in run.load.bad_searches if "shard_unavailable" not in str(b)]
        assert other == [], other[:3]
    else:
        assert len(run.load.bad_searches) <= run.load.searches // 20, run.load.bad_searches[:3]


def test_two_shards_grow_to_three_and_shrink_back_online(kubectl: Kubectl, namespace: str) -> None:
    started = time.monotonic()
    release = install_operator(kubectl, namespace)
    try:
        kubectl.apply(CLUSTER, namespace)
        wait_until(lambda: all_healthy(kubectl, namespace), 240, "both shards Healthy")
        created = time.monotonic() - started
        key = api_key(kubectl, namespace)
        url = router_url(kubectl, namespace)
        code, body = http(
            "POST", f"{url}/v1/collections", {"name": "e2e", "dimension": DIM}, token=key
        )
        assert code == 201, body
        acked = [f"doc-{i}" for i in range(BEFORE)]
        for first in range(0, BEFORE, 200):
            batch = [{"id": acked[i], "vector": vector(i)} for i in range(first, first + 200)]
            code, body = http(
                "PUT", f"{url}/v1/collections/e2e/vectors", {"vectors": batch}, token=key
            )
            assert code == 200, body

        # 2 -> 3: shard 2 is created, waited for, and given slots by two moves.
        grow = reshard_under_load(kubectl, namespace, url, key, 3)
        acked += grow.load.acked
        check_run(grow)
        status = grow.status
        # Progress as `kubectl get dvc` shows it (the growing phase is shown unless the
        # reconciler had already made shard 2 ready when the resharder looked).
        assert grow.phases and all(p.startswith("2->3 ") for p in grow.phases), grow.phases
        assert any("2/2" in p for p in grow.phases), grow.phases
        last = status["lastResharding"]
        assert (last["from"], last["to"]) == (2, 3) and last["slotsMoved"] == 682 + 1365
        assert status["slotMap"]["version"] == 3  # two moves, each one version
        owners = [(o[0], o[1], o[2]) for o in status["slotMap"]["owners"]]
        assert SlotMap.from_owner_ranges(3, owners).owners == SlotMap.even(3).owners
        assert [line["statefulSet"] for line in status["shards"]] == ["demo", "demo-s1", "demo-s2"]
        code, routed = http("GET", f"{url}/v1/status", token=key)
        assert code == 200 and routed["slot_map"]["version"] == 3, routed
        held = check_data(kubectl, namespace, url, key, acked, status)
        assert len(held) == 3 and min(held.values()) > 0, held
        claims = sorted(
            p["metadata"]["name"]
            for p in kubectl.json("get", "pvc", "-n", namespace)["items"]
            if "demo-s2-" in p["metadata"]["name"]
        )

        # 3 -> 2, the operator restarted while a move runs: it resumes from the record.
        restarts: list[str] = []

        def restart_operator(status: dict[str, Any]) -> bool:
            if (status.get("resharding") or {}).get("phase") != "Moving":
                return False
            kubectl.run(
                "delete", "pod", "-n", namespace, "-l",
                f"app.kubernetes.io/instance={release}", "--wait=false",
            )  # fmt: skip
            restarts.append(status["resharding"]["summary"])
            return True

        shrink = reshard_under_load(kubectl, namespace, url, key, 2, during=restart_operator)
        acked += shrink.load.acked
        check_run(shrink)
        status = shrink.status
        assert restarts, "the operator was not restarted during a move"
        last = status["lastResharding"]
        assert (last["from"], last["to"]) == (3, 2) and status["slotMap"]["version"] == 5
        owners = [(o[0], o[1], o[2]) for o in status["slotMap"]["owners"]]
        assert SlotMap.from_owner_ranges(5, owners).owners == SlotMap.even(2).owners
        assert [line["statefulSet"] for line in status["shards"]] == ["demo", "demo-s1"]
        assert "2" not in (status.get("groups") or {})
        for kind, name in (
            ("statefulset", "demo-s2"),
            ("service", "demo-s2-rw"),
            ("service", "demo-s2-ro"),
        ):
            wait_until(
                lambda k=kind, n=name: kubectl.get(k, n, namespace) is None,
                60,
                f"{kind} {name} gone",
            )
        # storage.reclaimPolicy Retain (the default): shard 2's claims stay.
        left = sorted(
            p["metadata"]["name"]
            for p in kubectl.json("get", "pvc", "-n", namespace)["items"]
            if "demo-s2-" in p["metadata"]["name"]
        )
        assert left == claims
        # The router drops the removed shard once its kubelet refreshes the members file.
        routed = wait_until(
            lambda: (
                (r := http("GET", f"{url}/v1/status", token=key))[0] == 200
                and len(r[1]["shards"]) == 2
                and r[1]
            ),
            60,
            "the router to list 2 shards",
        )
        assert routed["slot_map"]["version"] == 5, routed
        check_data(kubectl, namespace, url, key, acked, status)
        events = [
            e
            for e in kubectl.json("get", "events", "-n", namespace)["items"]
            if e.get("involvedObject", {}).get("kind") == "DVecCluster"
        ]
        reasons = Counter(e["reason"] for e in events)
        assert reasons["ReshardingFinished"] >= 2 and reasons["ShardRemoved"] >= 1, reasons
        # Routers took the published maps before the purges (never "RoutersBehind").
        followed = sorted(e["message"] for e in events if e["reason"] == "RoutersFollowed")
        assert followed and not reasons["RoutersBehind"], reasons
        print(
            f"\nreshard e2e: created+healthy {created:.1f}s; {summary(grow)}; {summary(shrink)}"
            f" (operator restarted at {restarts}); {len(set(acked))} items in all, "
            f"total {time.monotonic() - started:.1f}s; routers: {'; '.join(followed)}"
        )
    finally:
        kubectl.run("uninstall", release, "-n", namespace, tool="helm", check=False)


def test_one_shard_grows_to_two_while_its_leader_is_killed(
    kubectl: Kubectl, namespace: str
) -> None:
    """A one-shard cluster (pods without a shard label, a StatefulSet selector without one)
    grows to two: shard 0's members are labelled at once and restarted from the new template
    later; shard 0's leader (the move's source) is killed once the move runs, the failover
    goes on beside the move, and the move follows the new leader."""
    started = time.monotonic()
    release = install_operator(kubectl, namespace)
    try:
        kubectl.apply(CLUSTER.replace("shards: 2", "shards: 1"), namespace)
        wait_until(lambda: all_healthy_one(kubectl, namespace), 240, "one shard Healthy")
        key = api_key(kubectl, namespace)
        url = router_url(kubectl, namespace)
        code, body = http(
            "POST", f"{url}/v1/collections", {"name": "e2e", "dimension": DIM}, token=key
        )
        assert code == 201, body
        acked = [f"doc-{i}" for i in range(4 * BEFORE)]
        for first in range(0, len(acked), 300):
            batch = [{"id": acked[i], "vector": vector(i)} for i in range(first, first + 300)]
            code, body = http(
                "PUT", f"{url}/v1/collections/e2e/vectors", {"vectors": batch}, token=key
            )
            assert code == 200, body
        sts_selector = kubectl.get("statefulset", "demo", namespace)["spec"]["selector"]
        killed: list[str] = []

        def kill_source_leader(status: dict[str, Any]) -> bool:
            record = status.get("resharding") or {}
            if record.get("phase") != "Moving":
                return False
            leader = status.get("leader") or ""
            pod = kubectl.get("pod", leader, namespace)
            pid = host_pid(pod["status"]["containerStatuses"][0]["containerID"])
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            killed.append(f"{leader} at {record.get('summary')}")
            return True

        run = reshard_under_load(kubectl, namespace, url, key, 2, during=kill_source_leader)
        acked += run.load.acked
        check_run(run, leader_killed=True)
        query = {"vector": vector(1), "k": 10, "consistency": "eventual"}
        code, body = http("POST", f"{url}/v1/collections/e2e/search", query, token=key)
        assert code == 200 and body["coverage"] == {"shards": 2, "answered": 2}, body
        status = run.status
        assert killed, "the leader was not killed during the move"
        assert status["epoch"] > 1 and status.get("lastFailover"), status.get("lastFailover")
        last = status["lastResharding"]
        assert (last["from"], last["to"], last["slotsMoved"]) == (1, 2, 2048)
        assert kubectl.get("statefulset", "demo", namespace)["spec"]["selector"] == sts_selector
        labels = [
            kubectl.get("pod", f"demo-{i}", namespace)["metadata"]["labels"] for i in range(2)
        ]
        assert all(lab.get("dvecdb.io/shard") == "0" for lab in labels), labels
        check_data(kubectl, namespace, url, key, acked, status)
        print(
            f"\nreshard e2e (1->2, leader killed: {killed}): {summary(run)}; "
            f"failover {status['lastFailover'].get('from')} -> {status['lastFailover'].get('to')};"
            f" total {time.monotonic() - started:.1f}s"
        )
    finally:
        kubectl.run("uninstall", release, "-n", namespace, tool="helm", check=False)


def all_healthy_one(kubectl: Kubectl, namespace: str) -> dict[str, Any] | None:
    status = status_of(kubectl, namespace)
    return (
        status if status.get("phase") == "Healthy" and status.get("readyShards") == "1/1" else None
    )
