"""The images as users get them: built once by ``images.build`` (cached layers, so seconds when
nothing changed), then run with podman the way these machines allow (runc, cgroupfs, explicit
``nofile`` and ``nproc`` limits, the host's network on loopback). Every container a test starts
is removed.

Skips, with the reason, where podman cannot run a container here; a build that fails is a
failure.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from images import build
from tests.conftest import LOOPBACK, free_port

REPO = Path(__file__).resolve().parents[2]
# A fresh machine makes the base and compiles hnswlib: minutes, on two shared cores.
BUILD_TIMEOUT = 1500
RUN_USER = "10001"


def podman(
    *args: str, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*build.PODMAN, *args], capture_output=True, text=True, timeout=timeout, check=check
    )


@pytest.fixture(scope="session")
def built_images() -> dict[str, str]:
    """Every image built from this checkout (from cache when unchanged); component -> ref."""
    missing = build.missing_tools()
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (`make image-tools` installs them)")
    base, _ = _base_or_skip()
    probe = podman(
        "run", "--rm", "--network", "host", *build.ulimit_args(), base, "true", check=False
    )
    if probe.returncode != 0:
        pytest.skip(f"podman cannot run a container here: {probe.stderr.strip()[-500:]}")
    proc = subprocess.run(
        [sys.executable, "-m", "images.build"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, (
        f"image build failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    return {component: build.image_ref(component) for component in build.COMPONENTS}


def _base_or_skip() -> tuple[str, float | None]:
    if shutil.which("podman") is None:
        pytest.skip("podman not installed")
    info = podman("info", check=False)
    if info.returncode != 0:
        pytest.skip(f"podman does not work here: {info.stderr.strip()[-500:]}")
    return build.ensure_base()


class Containers:
    """Starts detached containers on the host's network; removes every one at teardown."""

    def __init__(self) -> None:
        self.ids: list[str] = []

    def run(self, image: str, *args: str, volumes: dict[Path, str] | None = None) -> str:
        mounts = [f"--volume={host}:{inside}" for host, inside in (volumes or {}).items()]
        out = podman(
            "run", "--detach", "--network", "host", *build.ulimit_args(), *mounts, image, *args
        ).stdout
        cid = out.strip().splitlines()[-1]
        self.ids.append(cid)
        return cid

    def logs(self, cid: str) -> str:
        proc = podman("logs", cid, check=False)
        return proc.stdout + proc.stderr

    def remove(self, cid: str) -> None:
        podman("rm", "--force", "--volumes", cid, timeout=60, check=False)
        self.ids.remove(cid)

    def stop(self, cid: str) -> None:
        podman("stop", "--time", "20", cid, timeout=60)

    def remove_all(self) -> None:
        for cid in self.ids:
            podman("rm", "--force", "--volumes", cid, timeout=60, check=False)
        self.ids.clear()


@pytest.fixture
def containers() -> Iterator[Containers]:
    made = Containers()
    try:
        yield made
    finally:
        made.remove_all()


def start_node(
    containers: Containers, image: str, volume: Path, *, node_id: str, attempts: int = 3
) -> tuple[str, str]:
    """A standalone node container on a free loopback port serving ``volume`` as ``/data``;
    returns (container id, URL). A port is free when chosen, not always when the container binds
    it (other tests on this machine take ports too): a node that could not bind starts again on
    another, and ``/v1/status`` must name this node, never another process on that port."""
    for _ in range(attempts):
        port = free_port()
        url = f"http://{LOOPBACK}:{port}"
        args = ("--port", str(port), "--data-dir", "/data", "--node-id", node_id)
        cid = containers.run(
            image, "--standalone", "--host", LOOPBACK, *args, volumes={volume: "/data"}
        )
        if _healthy(url, cid) and _status(url).get("node_id") == node_id:
            return cid, url
        log = containers.logs(cid)
        if "address already in use" not in log.lower():
            pytest.fail(f"{url}/healthz never answered for {node_id}; log:\n{log[-3000:]}")
        containers.remove(cid)
    pytest.fail(f"no free loopback port for {node_id} in {attempts} tries")


def _healthy(url: str, cid: str, timeout: float = 90) -> bool:
    """Until ``/healthz`` answers 200 (True), or the container exits or the time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as resp:
                if resp.status == 200:
                    return True
        except (OSError, urllib.error.URLError):
            pass
        state = podman("inspect", "--format", "{{.State.Status}}", cid, check=False).stdout
        if state.strip() in ("exited", "stopped"):
            return False
        time.sleep(0.3)
    return False


def _status(url: str) -> dict[str, object]:
    with urllib.request.urlopen(f"{url}/v1/status", timeout=5) as resp:
        body: dict[str, object] = json.loads(resp.read())
    return body


def assert_image_holds_checkout(image: str, packages: dict[str, str]) -> None:
    """Every ``.py`` of each package (import name -> distribution folder) is in the image, byte
    for byte as in this checkout, and nothing else is."""
    expected = {
        f"{name}/{path.relative_to(REPO / folder / 'src' / name).as_posix()}": _digest(path)
        for name, folder in packages.items()
        for path in sorted((REPO / folder / "src" / name).rglob("*.py"))
    }
    probe = (
        "import hashlib, importlib, json, pathlib, sys\n"
        "out = {}\n"
        "for name in sys.argv[1:]:\n"
        "    root = pathlib.Path(importlib.import_module(name).__file__).parent\n"
        "    for p in root.rglob('*.py'):\n"
        "        out[f'{name}/{p.relative_to(root).as_posix()}'] = "
        "hashlib.sha256(p.read_bytes()).hexdigest()\n"
        "print(json.dumps(out))\n"
    )
    out = podman(
        "run", "--rm", "--network", "host", *build.ulimit_args(),
        "--entrypoint", "python", image, "-c", probe, *packages,
    ).stdout  # fmt: skip
    installed = json.loads(out)
    stale = sorted(k for k in expected.keys() & installed.keys() if expected[k] != installed[k])
    assert not stale, f"{image} holds older code than the checkout: {stale[:10]}"
    assert installed.keys() == expected.keys()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
