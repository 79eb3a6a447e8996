"""Shared fixtures: real ``dvecdb-node`` processes on free loopback ports, killed at teardown.

``node_factory(...)`` starts a node (``--standalone`` unless told otherwise) in a temp data
folder and returns a :class:`NodeProcess`; every process it started is killed when the test
ends, whatever happened. Other tiers reuse it for replication tests.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class NodeProcess:
    """One ``dvecdb-node`` process; restartable on the same data folder and port."""

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int,
        node_id: str,
        standalone: bool,
        args: list[str],
        env: dict[str, str],
        log_path: Path,
        via_env: bool = False,
    ) -> None:
        self.via_env = via_env
        self.data_dir = data_dir
        self.port = port
        self.node_id = node_id
        self.standalone = standalone
        self.args = args
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def command(self) -> list[str]:
        if self.via_env:
            # The installed console script, configured only through DVECDB_* variables.
            return [str(Path(sys.executable).parent / "dvecdb-node"), *self.args]
        cmd = [
            sys.executable,
            "-m",
            "dvecdb_node",
            "--host",
            LOOPBACK,
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            "--node-id",
            self.node_id,
            *self.args,
        ]
        if self.standalone:
            cmd.append("--standalone")
        return cmd

    def start(self, *, wait: bool = True, timeout: float = 30.0) -> NodeProcess:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.command(),
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env, **self._settings_env()},
            start_new_session=True,
        )
        log.close()
        if wait:
            self.wait_ready(timeout)
        return self

    def _settings_env(self) -> dict[str, str]:
        if not self.via_env:
            return {}
        return {
            "DVECDB_HOST": LOOPBACK,
            "DVECDB_PORT": str(self.port),
            "DVECDB_DATA_DIR": str(self.data_dir),
            "DVECDB_NODE_ID": self.node_id,
            "DVECDB_STANDALONE": "true" if self.standalone else "false",
        }

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until the node has recovered: ``/readyz`` for a standalone node; a cluster
        member's ``/v1/status`` (it is not ready before it agrees with a leader)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"node exited with {self.proc.returncode}:\n{self.log()}")
            try:
                path = "/readyz" if self.standalone else "/v1/status"
                status, body = self.request("GET", path, timeout=1.0)
                if status == 200 and (self.standalone or body.get("ready")):
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"node not ready after {timeout}s:\n{self.log()}")

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 30.0,
    ) -> tuple[int, Any]:
        """A blocking HTTP call: (status, decoded JSON or text)."""
        payload = (
            data if data is not None else (None if body is None else json.dumps(body).encode())
        )
        req = urllib.request.Request(self.url + path, data=payload, method=method)
        req.add_header("Content-Type", "application/json")
        for key, value in (headers or {}).items():
            req.add_header(key, value)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                status, raw = resp.status, resp.read()
                ctype = resp.headers.get("Content-Type", "")
        except urllib.error.HTTPError as err:
            status, raw, ctype = err.code, err.read(), err.headers.get("Content-Type", "")
        return status, (json.loads(raw) if "json" in ctype else raw.decode())

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL the process (a crash) and reap it."""
        self.signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=10)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM (graceful) and wait; SIGKILL if it does not exit in time."""
        if self.proc is None:
            return 0
        self.signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return -9

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""


NodeFactory = Callable[..., NodeProcess]
_STARTED = pytest.StashKey[list[NodeProcess]]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """On a failed test, show the last lines of every node it started (CI keeps no files)."""
    report = yield
    if report.failed:
        for node in item.stash.get(_STARTED, []):
            report.sections.append((f"node {node.node_id} log (last lines)", node.log()))
    return report


@pytest.fixture
def node_factory(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NodeFactory]:
    """Start real nodes: ``node_factory(standalone=True, args=[...], env={...})``.

    ``via_env=True`` runs the ``dvecdb-node`` console script configured by environment only.
    """
    started: list[NodeProcess] = []
    request.node.stash[_STARTED] = started

    def start(
        *,
        standalone: bool = True,
        node_id: str | None = None,
        args: list[str] | None = None,
        env: dict[str, str] | None = None,
        data_dir: Path | None = None,
        wait: bool = True,
        via_env: bool = False,
    ) -> NodeProcess:
        name = node_id or f"node-{len(started)}"
        folder = data_dir or tmp_path_factory.mktemp(name)
        node = NodeProcess(
            folder / "data",
            port=free_port(),
            node_id=name,
            standalone=standalone,
            args=list(args or []),
            env=dict(env or {}),
            log_path=folder / f"{name}.log",
            via_env=via_env,
        )
        started.append(node)
        return node.start(wait=wait)

    yield start
    for node in started:
        node.kill()


@pytest.fixture
def standalone_node(node_factory: NodeFactory) -> NodeProcess:
    """One ready ``--standalone`` node."""
    return node_factory(standalone=True)
