"""Failover time to recovery (RTO) on the local real Kubernetes, with real pod networking.

One 3-member cluster (``detectionSeconds: 10``, so the lease is 5 s) goes through four faults
of its leader while a writer (``ack=one``, through the read-write Service's endpoint) and a
reader (``eventual`` searches through the read-only Service's endpoints) run. The figure is
the longest time writers saw no acknowledgement:

1. the leader's process is killed (the kubelet restarts it): a certain death signal, so a new
   leader takes writes within 3 s, whatever ``detectionSeconds`` is;
2. the leader hangs (SIGSTOP): detected after ``detectionSeconds``, so ≤ 12 s;
3. only the operator↔leader path is cut (iptables in the leader's pod namespace): the leader
   still hears its followers and keeps taking writes; after ``detectionSeconds`` the operator
   fences them, the leader stops acknowledging, and the promote waits out its lease (it could
   serve strong reads until then): about the lease plus a pass;
4. the leader is cut off from everyone (its link down): ≤ ``detectionSeconds + 2``, no lease
   wait (the fenced followers had not acked it for longer than the lease).

Every acknowledged write is on the final leader and on every member; eventual reads do not
fail (a read that finds an endpoint gone tries one other ready endpoint, as a client does).
The measured figures are printed (``-s``); the asserted bounds leave room for this shared
two-core machine, the issue's targets are in the printout beside them.
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import subprocess
import threading
import time
import urllib.error
from collections.abc import Iterator
from typing import Any

import pytest

from localkube import net
from localkube.containerpid import host_pid
from localkube.netplan import netns_name

from .conftest import Kubectl, api_key, http, secret_key, wait_until
from .test_operator_cluster import (
    base_url,
    healthy_with,
    install_operator,
    missing_on,
    node_status,
    pod,
    ready_endpoints,
    rw_endpoints,
    rw_url,
    status_of,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

DETECTION = 10
CLUSTER = f"""
apiVersion: dvecdb.io/v1alpha1
kind: DVecCluster
metadata:
  name: demo
spec:
  replicas: 3
  storage: {{size: 64Mi}}
  node: {{fsync: batch, defaultAck: one}}
  failover: {{detectionSeconds: {DETECTION}}}
  tls: {{enabled: false}}  # members reached over plain HTTP here; TLS: test_operator_tls
"""
NAMES = ["demo-0", "demo-1", "demo-2"]


def ro_endpoints(kubectl: Kubectl, namespace: str) -> list[str]:
    return sorted(ready_endpoints(kubectl, namespace, "demo-ro"))


class Load:
    """A writer (ack=one via demo-rw) and a reader (eventual via demo-ro), each in a thread.

    The writer remembers when each write was acknowledged (for the RTO) and retries a write
    that failed with the same id, so at most its last id may persist unacknowledged.
    """

    def __init__(self, kubectl: Kubectl, namespace: str) -> None:
        self.kubectl, self.namespace = kubectl, namespace
        # Writes with the API key; searches with the read-only key, as a reader would.
        self.key = api_key(kubectl, namespace)
        self.read_key = secret_key(kubectl, namespace, "readOnlyKey")
        self.acked: list[tuple[float, float, str]] = []  # (sent, acknowledged, id)
        self.reads_ok = 0
        self.reads_failed: list[str] = []
        self.reads_retried = 0
        self._stop = threading.Event()
        self._rw: list[str] = []
        self._ro: list[str] = []
        self._threads = [
            threading.Thread(target=f, daemon=True)
            for f in (self._endpoints, self._write, self._read)
        ]

    def __enter__(self) -> Load:
        self._rw = sorted(rw_endpoints(self.kubectl, self.namespace))
        self._ro = ro_endpoints(self.kubectl, self.namespace)
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _endpoints(self) -> None:
        """Follow the Services' EndpointSlices (what kube-proxy would do for a client)."""
        while not self._stop.is_set():
            try:
                self._rw = sorted(rw_endpoints(self.kubectl, self.namespace))
                self._ro = ro_endpoints(self.kubectl, self.namespace)
            except AssertionError:
                pass
            time.sleep(0.2)

    def _write(self) -> None:
        number = 0
        while not self._stop.is_set():
            item = f"w-{number}"
            found = self._rw
            if len(found) == 1:
                url = f"http://{found[0]}:8080/v1/collections/e2e/vectors"
                vector = [1.0, 2.0, 3.0, float(number)]
                sent = time.monotonic()
                try:
                    code, _ = http(
                        "PUT",
                        url,
                        {"vectors": [{"id": item, "vector": vector}], "ack": "one"},
                        2,
                        token=self.key,
                    )
                except (urllib.error.URLError, OSError):
                    code = 0
                if code == 200:
                    self.acked.append((sent, time.monotonic(), item))
                    number += 1
                    continue
            time.sleep(0.05)

    def _read(self) -> None:
        body = {"vector": [1.0, 2.0, 3.0, 0.0], "k": 3, "consistency": "eventual"}
        while not self._stop.is_set():
            addresses = list(self._ro)
            random.shuffle(addresses)
            errors = []
            for address in addresses[:2]:
                try:
                    code, answer = http(
                        "POST",
                        f"http://{address}:8080/v1/collections/e2e/search",
                        body,
                        2,
                        token=self.read_key,
                    )
                except (urllib.error.URLError, OSError) as exc:
                    code, answer = 0, str(exc)
                if code == 200:
                    break
                errors.append(f"{address}: {code} {str(answer)[:120]}")
            else:
                self.reads_failed.append("; ".join(errors) or "no ready endpoint")
                time.sleep(0.05)
                continue
            self.reads_ok += 1
            self.reads_retried += bool(errors)
            time.sleep(0.02)

    def first_ack_after(self, moment: float, timeout: float = 60) -> float:
        """Seconds from ``moment`` to the acknowledgement of the first write sent after it."""

        def found() -> float | None:
            return next((done - moment for sent, done, _ in self.acked if sent > moment), None)

        return float(wait_until(found, timeout, "a write acknowledged after the fault", 0.1))

    def outage(self, fault_at: float) -> float:
        """The longest time without an acknowledged write, from the last acknowledgement
        before ``fault_at`` up to the latest: how long writers saw the cluster unavailable.

        (A leader cut from the operator only goes on acknowledging until its followers are
        fenced, so the time to the first write after the fault would measure nothing.)
        """
        done = sorted(d for _, d, _ in self.acked)
        before = [d for d in done if d <= fault_at]
        after = [d for d in done if d > fault_at]
        points = before[-1:] + after
        return max((b - a for a, b in itertools.pairwise(points)), default=0.0)

    def ids(self) -> list[str]:
        return [item for _, _, item in self.acked]


def leader_pid(kubectl: Kubectl, namespace: str, name: str) -> int:
    """The pid of the member's running container (the kubelet fills it in once started)."""

    def running() -> str | None:
        statuses = pod(kubectl, namespace, name)["status"].get("containerStatuses") or [{}]
        found = statuses[0].get("containerID")
        return str(found) if found else None

    container = wait_until(running, 60, f"{name}'s container to run")
    pid = host_pid(container)
    assert pid is not None, f"no host pid for {container}"
    return pid


def operator_ip(kubectl: Kubectl, namespace: str) -> str:
    pods = kubectl.json(
        "get", "pods", "-n", namespace, "-l", "app.kubernetes.io/name=dvecdb-operator"
    )["items"]
    running = [p for p in pods if p["status"].get("podIP")]
    assert len(running) == 1, [p["metadata"]["name"] for p in pods]
    return str(running[0]["status"]["podIP"])


def iptables(netns: str, *args: str) -> None:
    subprocess.run(["ip", "netns", "exec", netns, "iptables", "-w", *args], check=True)


def steady(kubectl: Kubectl, namespace: str, load: Load, *, above: int = 0) -> tuple[str, int]:
    """Wait for Healthy at an epoch above ``above`` with writes flowing; (leader, epoch)."""

    def healthy() -> Any:
        status = healthy_with(kubectl, namespace)
        return status if status and int(status.get("epoch", 0)) > above else None

    status = wait_until(healthy, 240, f"Healthy at an epoch above {above}")
    load.first_ack_after(time.monotonic())
    return str(status["leader"]), int(status["epoch"])


@pytest.fixture
def cluster(kubectl: Kubectl, namespace: str) -> Iterator[str]:
    """The operator (by its chart) and a Healthy 3-member cluster with collection `e2e`."""
    release = install_operator(kubectl, namespace)
    try:
        kubectl.apply(CLUSTER, namespace)
        wait_until(lambda: healthy_with(kubectl, namespace), 300, "the cluster Healthy")
        code, body = http(
            "POST",
            f"{rw_url(kubectl, namespace)}/v1/collections",
            {"name": "e2e", "dimension": 4},
            token=api_key(kubectl, namespace),
        )
        assert code == 201, body
        yield namespace
    finally:
        kubectl.run("uninstall", release, "-n", namespace, tool="helm", check=False)


def test_failover_rto_kill_hang_and_operator_cut(kubectl: Kubectl, cluster: str) -> None:
    namespace = cluster
    figures: dict[str, float] = {}
    with Load(kubectl, namespace) as load:
        leader, epoch = steady(kubectl, namespace, load)

        # 1. The leader's process dies; the kubelet restarts it: a certain signal.
        killed_at = time.monotonic()
        os.kill(leader_pid(kubectl, namespace, leader), signal.SIGKILL)
        leader, epoch = steady(kubectl, namespace, load, above=epoch)
        figures["kill"] = load.outage(killed_at)

        # 2. The leader hangs: detected after detectionSeconds without an answer.
        pid = leader_pid(kubectl, namespace, leader)
        stopped_at = time.monotonic()
        os.kill(pid, signal.SIGSTOP)
        try:
            wait_until(
                lambda: status_of(kubectl, namespace).get("leader") not in (None, leader),
                60,
                f"a leader other than the hung {leader}",
                0.2,
            )
            load.first_ack_after(stopped_at)
        finally:
            os.kill(pid, signal.SIGCONT)
        leader, epoch = steady(kubectl, namespace, load, above=epoch)
        figures["hang"] = load.outage(stopped_at)

        # 3. Only the operator's path to the leader is cut; the members still talk.
        netns = netns_name(pod(kubectl, namespace, leader)["metadata"]["uid"])
        op = operator_ip(kubectl, namespace)
        rules = [("INPUT", "-s", op), ("OUTPUT", "-d", op)]
        cut_at = time.monotonic()
        for chain, flag, address in rules:
            iptables(netns, "-I", chain, flag, address, "-j", "DROP")
        try:
            wait_until(
                lambda: status_of(kubectl, namespace).get("leader") not in (None, leader),
                60,
                f"a leader other than {leader}, cut from the operator",
                0.2,
            )
            load.first_ack_after(cut_at)
        finally:
            for chain, flag, address in rules:
                iptables(netns, "-D", chain, flag, address, "-j", "DROP")
        leader, epoch = steady(kubectl, namespace, load, above=epoch)
        figures["operator_cut"] = load.outage(cut_at)

        # 4. The leader is cut off from everyone (its pod's link down).
        uid = pod(kubectl, namespace, leader)["metadata"]["uid"]
        isolated_at = time.monotonic()
        net.set_link(uid, up=False)
        try:
            wait_until(
                lambda: status_of(kubectl, namespace).get("leader") not in (None, leader),
                60,
                f"a leader other than the isolated {leader}",
                0.2,
            )
            load.first_ack_after(isolated_at)
        finally:
            net.set_link(uid, up=True)
        final, epoch = steady(kubectl, namespace, load, above=epoch)
        figures["isolated"] = load.outage(isolated_at)
        time.sleep(1)

    acked = load.ids()
    print(
        f"\nRTO (longest time without an acknowledged write through demo-rw): kill "
        f"{figures['kill']:.2f}s "
        f"(target 3s), hang {figures['hang']:.2f}s, isolated {figures['isolated']:.2f}s (target "
        f"{DETECTION + 2}s), operator cut {figures['operator_cut']:.2f}s (lease wait included, "
        f"{DETECTION / 2:g}s); {len(acked)} writes acknowledged; eventual reads "
        f"{load.reads_ok} ok, {load.reads_retried} needed a second endpoint, "
        f"{len(load.reads_failed)} failed"
    )
    assert figures["kill"] <= 3 + 5, figures
    assert figures["hang"] <= DETECTION + 2 + 8, figures
    assert figures["isolated"] <= DETECTION + 2 + 8, figures
    # Cut from the operator alone, the leader serves until its followers are fenced, then
    # the promote waits out its lease (strong reads): about lease + a pass or two.
    assert figures["operator_cut"] <= DETECTION / 2 + 2 + 8, figures
    assert load.reads_failed == [], load.reads_failed[:5]
    # Nothing acknowledged is lost, on the leader or on any member once they converge.
    leader_url = base_url(kubectl, namespace, final)
    key = api_key(kubectl, namespace)
    assert missing_on(leader_url, acked, key) == []
    top = (node_status(leader_url, key) or {}).get("last_seq")
    for name in NAMES:
        url = base_url(kubectl, namespace, name)

        def caught_up(url: str = url) -> bool:
            return (node_status(url, key) or {}).get("applied_seq") == top

        wait_until(caught_up, 120, f"{name} caught up with {final}")
        assert missing_on(url, acked, key) == [], name
