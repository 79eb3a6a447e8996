"""A rolling image upgrade of a 3-member cluster under an `ack=quorum` writer (issue #15).

What a user sees: how many quorum writes fail and how long the upgrade takes, and whether a
script can wait on the status (`kubectl wait`): the phase is `Upgrading` while revisions
differ, never `Healthy` until every member runs the new revision and follows the leader, and
`condition=Ready` returns only then. The numbers are printed (`-s`) for the issue's note.
"""

from __future__ import annotations

import itertools
import subprocess
import threading
import time
import urllib.error
from dataclasses import dataclass, field
from typing import Any

import pytest

from .conftest import Kubectl, api_key, http, wait_until
from .test_operator_cluster import (
    CLUSTER,
    NAMES,
    healthy_with,
    node_status,
    rw_endpoints,
    rw_url,
    status_of,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

NEW_IMAGE = "dvecdb/node:0.1.1"
# A switchover moves the rw endpoint: writes in flight then, and until the writer sees the new
# endpoint (it looks again every second), may fail. Longer without an acknowledgement is what
# issue #15 was: a leader left without a follower while the next one restarted.
SWITCHOVER_SECONDS = 5.0


@dataclass
class Attempt:
    started: float
    ended: float
    ok: bool
    detail: str = ""


@dataclass
class QuorumWriter:
    """One `ack=quorum` write at a time to the current `demo-rw` endpoint, in a thread."""

    kubectl: Kubectl
    namespace: str
    key: str
    attempts: list[Attempt] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> QuorumWriter:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(timeout=30)

    def _endpoint(self) -> str | None:
        found = rw_endpoints(self.kubectl, self.namespace)
        return f"http://{next(iter(found))}:8080" if len(found) == 1 else None

    def _run(self) -> None:
        number = 0
        url: str | None = None
        refreshed = 0.0
        while not self._stop.is_set():
            if url is None or time.monotonic() - refreshed > 1.0:
                url, refreshed = self._endpoint(), time.monotonic()
            if url is None:
                time.sleep(0.1)
                continue
            body = {
                "vectors": [{"id": f"q-{number}", "vector": [1.0, 0.0, 2.0, float(number)]}],
                "ack": "quorum",
            }
            started = time.monotonic()
            try:
                code, answer = http(
                    "PUT", f"{url}/v1/collections/e2e/vectors", body, timeout=5, token=self.key
                )
                ok, detail = code == 200, f"{code} {str(answer)[:80]}"
            except (urllib.error.URLError, OSError) as exc:
                ok, detail = False, str(exc)[:80]
            self.attempts.append(Attempt(started, time.monotonic(), ok, detail))
            if ok:
                number += 1
            else:
                url = None  # the leader may have moved
                time.sleep(0.1)

    def failures(self) -> list[Attempt]:
        return [a for a in self.attempts if not a.ok]


@dataclass
class Sample:
    at: float
    phase: str
    revisions_match: bool
    message: str


def sample(kubectl: Kubectl, namespace: str) -> Sample | None:
    """The phase next to whether every pod runs the StatefulSet's update revision."""
    status = status_of(kubectl, namespace)
    sts = kubectl.get("statefulset", "demo", namespace) or {}
    revision = (sts.get("status") or {}).get("updateRevision")
    pods = kubectl.json("get", "pods", "-n", namespace, "-l", "dvecdb.io/cluster=demo")["items"]
    if not revision or not status:
        return None
    match = len(pods) == 3 and all(
        p["metadata"]["labels"].get("controller-revision-hash") == revision for p in pods
    )
    return Sample(time.monotonic(), str(status.get("phase")), match, str(status.get("message")))


def url_of(kubectl: Kubectl, namespace: str, name: str) -> str | None:
    """The member's URL, or None while its pod is gone or has no address yet."""
    ip = ((kubectl.get("pod", name, namespace) or {}).get("status") or {}).get("podIP")
    return f"http://{ip}:8080" if ip else None


def all_follow_the_leader(kubectl: Kubectl, namespace: str, leader: str) -> bool:
    key = api_key(kubectl, namespace)
    urls = {name: url_of(kubectl, namespace, name) for name in NAMES}
    leader_url = urls[leader]
    if leader_url is None or None in urls.values():
        return False
    top = (node_status(leader_url, key) or {}).get("last_seq")
    for name in NAMES:
        if name == leader:
            continue
        node = node_status(urls[name] or "", key) or {}
        if node.get("role") != "follower" or (node.get("leader") or "").rstrip("/") != leader_url:
            return False
        if top is None or int(node.get("applied_seq") or 0) < int(top) - 100:
            return False
    return True


def longest_without_ack(attempts: list[Attempt], since: float) -> tuple[float, float]:
    """The longest span between two acknowledgements after `since` (and when it began)."""
    acks = [since] + [a.ended for a in attempts if a.ok and a.ended >= since]
    spans = [(b - a, a - since) for a, b in itertools.pairwise(acks)]
    return max(spans, default=(0.0, 0.0))


def kubectl_wait(
    kubectl: Kubectl, namespace: str, condition: str, seconds: int
) -> subprocess.CompletedProcess[str]:
    """`kubectl wait` on the cluster, as a script would run it (longer than `Kubectl.run`'s
    own time limit)."""
    return subprocess.run(
        [str(kubectl.plane.binaries["kubectl"]), "wait", "dveccluster/demo", "-n", namespace,
         condition, f"--timeout={seconds}s"],
        capture_output=True, text=True, env=kubectl.env, timeout=seconds + 30, check=False,
    )  # fmt: skip


def upgraded(kubectl: Kubectl, namespace: str) -> dict[str, Any] | None:
    now = sample(kubectl, namespace)
    status = status_of(kubectl, namespace)
    if now is None or not now.revisions_match or not status.get("leader"):
        return None
    return status if all_follow_the_leader(kubectl, namespace, str(status["leader"])) else None


def switchovers_aborted(kubectl: Kubectl, namespace: str) -> int:
    """How many switchovers the operator aborted (its target held less when fenced)."""
    return sum(
        int(e.get("count") or 1)
        for e in kubectl.json("get", "events", "-n", namespace)["items"]
        if e["reason"] == "SwitchoverAborted"
    )


def switchover_times(kubectl: Kubectl, namespace: str) -> list[tuple[str, str]]:
    return [
        (e["reason"], e.get("lastTimestamp") or e.get("eventTime") or "")
        for e in kubectl.json("get", "events", "-n", namespace)["items"]
        if e["reason"] in ("SwitchoverStarted", "SwitchoverCompleted", "RollingRestart")
    ]


def test_rolling_upgrade_under_quorum_writes_keeps_a_quorum_and_a_waitable_status(
    kubectl: Kubectl, namespace: str, operator: str
) -> None:
    kubectl.apply(CLUSTER, namespace)
    wait_until(lambda: healthy_with(kubectl, namespace), 300, "the cluster Healthy")
    key = api_key(kubectl, namespace)
    code, body = http(
        "POST",
        f"{rw_url(kubectl, namespace)}/v1/collections",
        {"name": "e2e", "dimension": 4},
        token=key,
    )
    assert code == 201, body
    samples: list[Sample] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            try:
                found = sample(kubectl, namespace)
            except AssertionError:
                found = None
            if found is not None:
                samples.append(found)
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    with QuorumWriter(kubectl, namespace, key) as writer:
        time.sleep(3)  # a few quorum writes on the old revision
        steady = len(writer.attempts)
        watcher.start()
        started = time.monotonic()
        kubectl.run(
            "patch", "dveccluster", "demo", "-n", namespace, "--type=merge",
            "-p", f'{{"spec": {{"image": "{NEW_IMAGE}"}}}}',
        )  # fmt: skip
        # What a script does: wait for the upgrade to be seen, then for the cluster to be Ready.
        seen = kubectl_wait(kubectl, namespace, "--for=jsonpath={.status.phase}=Upgrading", 60)
        waited = kubectl_wait(kubectl, namespace, "--for=condition=Ready", 600)
        ready_at = sample(kubectl, namespace)
        # The upgrade is over when every pod runs the new revision and every member follows
        # the leader (measured the same way whatever the status said).
        status = wait_until(lambda: upgraded(kubectl, namespace), 600, "the upgrade to finish")
        took = time.monotonic() - started
        time.sleep(2)  # a few writes on the upgraded cluster
        stop.set()
        watcher.join(timeout=10)
    failed = writer.failures()
    ok = sum(1 for a in writer.attempts if a.ok)
    events = switchover_times(kubectl, namespace)
    aborted = switchovers_aborted(kubectl, namespace)
    print(
        f"\nupgrade of 3 members: {took:.1f}s until condition Ready; ack=quorum writes"
        f" {ok} acknowledged, {len(failed)} failed ({steady} attempts before the patch)"
    )
    gap, gap_at = longest_without_ack(writer.attempts, started)
    print(f"  longest time without an acknowledged write: {gap:.1f}s (from t+{gap_at:.1f}s)")
    for attempt in failed:
        print(
            f"  failed at t+{attempt.started - started:.1f}s after"
            f" {attempt.ended - attempt.started:.1f}s: {attempt.detail}"
        )
    print(f"  events: {events}; switchovers aborted: {aborted}")
    print(f"  phases: {[(round(s.at - started, 1), s.phase, s.revisions_match) for s in samples]}")

    assert seen.returncode == 0, seen.stderr
    assert waited.returncode == 0 and ready_at is not None, waited.stderr
    # `kubectl wait --for=condition=Ready` returned only once every pod is on the new revision
    # and every member follows the leader within the bound.
    assert ready_at.revisions_match and ready_at.phase == "Healthy", ready_at
    assert all_follow_the_leader(kubectl, namespace, str(status["leader"]))
    # Once the operator has seen the new revision (Upgrading), never Healthy while revisions
    # differ. (Before that a sample may pair the old status with the new StatefulSet: a
    # script waits for Upgrading first, as above.)
    first = next(i for i, s in enumerate(samples) if s.phase == "Upgrading")
    early = [s for s in samples[first:] if s.phase == "Healthy" and not s.revisions_match]
    assert not early, early
    # Quorum writes failed only around the leader's switchover, never while a follower
    # restarted: the group kept a majority all along, so acknowledgements never stopped for
    # longer than the switchover takes.
    assert gap <= SWITCHOVER_SECONDS, (gap, [a.detail for a in failed])
    # Under these back-to-back quorum writes the switchover's target may hold a few records
    # less than the leader at the moment both are fenced; the operator then keeps the most
    # advanced (the old leader, at the next epoch) and tries again after its 30 s backoff:
    # safe, but each attempt refuses a write or two and adds the wait (measured on a loaded
    # CI machine: 4 aborts, 138 s). Counted here, not hidden; the refusals are only the
    # switchovers' own (`leadership_lost`, `not_leader`).
    assert all("leadership_lost" in a.detail or "not_leader" in a.detail for a in failed), [
        a.detail for a in failed
    ]
    assert len(failed) <= 3 * (aborted + 1), ([a.detail for a in failed], aborted)
    assert took < 120 + 35 * aborted, f"the upgrade took {took:.0f}s ({aborted} aborted)"
    # Creating the cluster's Services posted no spurious Warning (the create handler and the
    # monitor's first pass used to create them at once).
    wrong = [
        e.get("note") or e.get("message")
        for e in kubectl.json("get", "events.events.k8s.io", "-A")["items"]
        if e.get("reason") == "IPAddressWrongReference"
        and namespace in str(e.get("note") or e.get("message"))
    ]
    assert wrong == [], wrong

    # Deleting the cluster after the operator is gone does not hang (no finalizer).
    kubectl.run("uninstall", operator, "-n", namespace, tool="helm")
    kubectl.run("delete", "dveccluster", "demo", "-n", namespace, "--timeout=60s")
    assert kubectl.get("dveccluster", "demo", namespace) is None


@pytest.fixture
def operator(kubectl: Kubectl, namespace: str) -> Any:
    from .test_operator_cluster import install_operator

    release = install_operator(kubectl, namespace)
    yield release
    kubectl.run("uninstall", release, "-n", namespace, tool="helm", check=False)
