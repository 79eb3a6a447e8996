"""Fixtures for the e2e tier: the pinned binaries, one local plane per session, helpers.

The binaries (the control plane's and the node's) are built (or found) when the session's
collection finishes, not inside a test, so the long cold build prints its progress and does not
count against a test's timeout. Pods run the images `make images` built (podman's storage).
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from localkube import claim, net, procs, realnode
from localkube.build import (
    Binaries,
    BuildError,
    ensure_binaries,
    ensure_netpol_binaries,
    ensure_node_binaries,
)
from localkube.netplan import NETNS_PREFIX, VETH_PREFIX, NetPlan
from localkube.plane import Plane
from tests.support import certmanager

T = TypeVar("T")

HERE = Path(__file__).parent
MANIFESTS = HERE / "manifests"
# Pods are containers from the images `make images` built. The kubelet feature tests' image
# runs the pod's command with python3 (the node image has it); the upgrade tests' second tag
# is the same build under another name.
NODE_IMAGE = "localhost/dvecdb/node:0.1.0"
TEST_IMAGES = {"localkube-test/python:1": NODE_IMAGE, "dvecdb/node:0.1.1": NODE_IMAGE}

_BINARIES = pytest.StashKey[Binaries | BuildError]()


def _has_e2e(items: list[pytest.Item]) -> bool:
    return any(item.get_closest_marker("e2e") for item in items)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """e2e last (the session plane then lives only while they run); within them, lifecycle
    tests first, since they start their own plane before the session plane exists."""

    def order(item: pytest.Item) -> tuple[int, int]:
        e2e = item.get_closest_marker("e2e") is not None
        return (1 if e2e else 0, 0 if e2e and "lifecycle" in item.nodeid else 1)

    items.sort(key=order)


def pytest_collection_finish(session: pytest.Session) -> None:
    if not _has_e2e(session.items):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")

    def progress(message: str) -> None:
        if reporter is not None:
            reporter.write_line(f"[localkube] {message}")

    try:
        session.config.stash[_BINARIES] = ensure_binaries(progress=progress)
        ensure_node_binaries(progress=progress)  # the planes' Plane.start finds them cached
        ensure_netpol_binaries(progress=progress)  # the NetworkPolicy test's enforcer
        try:
            certmanager.ensure_controller(progress=progress)  # the issuerRef test's
        except certmanager.Unavailable as err:
            progress(f"the cert-manager test will be skipped: {err}")
    except BuildError as err:
        session.config.stash[_BINARIES] = err


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """On a failed e2e test, show where the plane's logs are and their last lines."""
    report = yield
    running = getattr(item, "funcargs", {}).get("plane")
    if report.failed and isinstance(running, Plane):
        parts = [f"state and logs: {running.state_dir}"]
        for name in ("kubelet", "kube-controller-manager"):
            parts.append(
                f"--- {name}.log (last lines)\n{procs.tail(running.logs / (name + '.log'))}"
            )
        report.sections.append(("localkube", "\n".join(parts)))
    return report


@pytest.fixture(scope="session")
def binaries(pytestconfig: pytest.Config) -> Binaries:
    found = pytestconfig.stash.get(_BINARIES, None)
    if found is None:
        found = ensure_binaries()
    if isinstance(found, BuildError):
        pytest.fail(f"localkube binaries are not available: {found}")
    return found


def leftovers(plan: NetPlan, state_dir: Path | None = None) -> list[str]:
    """Anything of a plane's network still on the machine. When another session's live plane
    holds the network now, ours is gone (a plane makes the bridge only where none exists)."""
    if state_dir is not None and claim.other_live_owner(plan, state_dir) is not None:
        return []
    found = [n for n in net.list_netns() if n.startswith(NETNS_PREFIX)]
    found += net.list_links([VETH_PREFIX])
    if net.link_exists(plan.bridge):
        found.append(plan.bridge)
    return found


def wait_for_machine(plan: NetPlan, timeout: float = 300) -> None:
    """One plane per machine: wait (bounded) while another test session's plane runs."""
    wait_until(
        lambda: not leftovers(plan),
        timeout,
        f"the bridge {plan.bridge} to be free (another plane runs here; if it crashed, "
        "run `localkube down --force`)",
        every=2,
    )


@pytest.fixture(scope="session")
def plane(binaries: Binaries, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    """One running plane for the session; stopped (and checked clean) at the end."""
    missing = realnode.missing_tools()
    if missing is None and not realnode.podman_has(NODE_IMAGE):
        missing = f"podman has no {NODE_IMAGE} (run `make images`)"
    if missing is not None:
        pytest.fail(f"the local Kubernetes node cannot run here: {missing}")
    state = tmp_path_factory.mktemp("localkube")
    instance = Plane(binaries=binaries, state_dir=state, image_tags=TEST_IMAGES)
    start_when_free(instance)
    try:
        yield instance
    finally:
        instance.stop()
    left = leftovers(instance.plan, state)
    assert not left, f"teardown left {left} behind (logs in {instance.logs})"


def start_when_free(plane: Plane, attempts: int = 3) -> None:
    """Wait for the machine, then start; retried when another session took the bridge between
    the wait and the start."""
    for attempt in range(attempts):
        wait_for_machine(plane.plan)
        try:
            plane.start()
            return
        except net.NetError as err:
            if "already exists" not in str(err) or attempt == attempts - 1:
                raise


class Kubectl:
    """kubectl (the pinned build) against a plane, returning parsed JSON where asked."""

    def __init__(self, plane: Plane) -> None:
        self.plane = plane
        self.env = plane.env()

    def run(
        self, *args: str, stdin: str | None = None, check: bool = True, tool: str = "kubectl"
    ) -> subprocess.CompletedProcess[str]:
        binary = str(self.plane.binaries[tool])
        result = subprocess.run(
            [binary, *args], input=stdin, capture_output=True, text=True, env=self.env, timeout=120
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{tool} {' '.join(args)} failed ({result.returncode}):\n{result.stderr}"
            )
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "-o", "json").stdout)

    def get(self, kind: str, name: str, namespace: str = "default") -> Any:
        result = self.run("get", kind, name, "-n", namespace, "-o", "json", check=False)
        if result.returncode != 0:
            if "NotFound" in result.stderr or "not found" in result.stderr:
                return None
            raise AssertionError(result.stderr)
        return json.loads(result.stdout)

    def apply(self, manifest: str | Path, namespace: str = "default") -> None:
        text = manifest.read_text() if isinstance(manifest, Path) else manifest
        self.run("apply", "-n", namespace, "-f", "-", stdin=text)


@pytest.fixture(scope="session")
def kubectl(plane: Plane) -> Kubectl:
    return Kubectl(plane)


@pytest.fixture
def namespace(kubectl: Kubectl, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per test, deleted (with everything in it) afterwards."""
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")
    yield from scratch_namespace(kubectl, f"t-{slug[:40].strip('-')}-{uuid.uuid4().hex[:5]}")


def scratch_namespace(kubectl: Kubectl, name: str) -> Iterator[str]:
    """Create `name`, wait for its default service account, yield it, delete it."""
    kubectl.run("create", "namespace", name)
    wait_until(
        lambda: kubectl.get("serviceaccount", "default", name) is not None,
        60,
        f"default service account in {name}",
    )
    yield name
    kubectl.run("delete", "namespace", name, "--wait=false", check=False)


def wait_until(check: Callable[[], T | None], timeout: float, what: str, every: float = 0.5) -> T:
    """Poll ``check`` until it returns something truthy; fail with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def http(
    method: str, url: str, body: Any = None, timeout: float = 10, *, token: str | None = None
) -> tuple[int, Any]:
    """One JSON request to a pod or Service address; (status, decoded body).
    `token` goes as `Authorization: Bearer` (an API key, read-only key or cluster token)."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")


def secret_key(kubectl: Kubectl, namespace: str, key: str, secret: str = "demo-token") -> str:
    """One key of a cluster's auth Secret, read as the chart's NOTES tell a user to (waits
    for the operator to have written it)."""

    def read() -> str | None:
        found = kubectl.run(
            "get", "secret", secret, "-n", namespace, "-o", f"jsonpath={{.data.{key}}}",
            check=False,
        )  # fmt: skip
        return found.stdout.strip() if found.returncode == 0 and found.stdout.strip() else None

    encoded = wait_until(read, 120, f"{key} in Secret {namespace}/{secret}")
    return base64.b64decode(encoded).decode()


def api_key(kubectl: Kubectl, namespace: str, secret: str = "demo-token") -> str:
    return secret_key(kubectl, namespace, "apiKey", secret)
