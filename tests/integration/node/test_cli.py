"""The ``dvecdb-node`` CLI as users run it: flags and env, probes, roles, graceful SIGTERM,
and the 10,000-vector SIGKILL round trip the issue's "done" criterion names."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dvecdb_client import bulk

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[3]


def _console_script() -> str:
    script = Path(sys.executable).parent / "dvecdb-node"
    assert script.exists(), "the dvecdb-node console script is not installed"
    return str(script)


def test_help_lists_the_contract_flags() -> None:
    out = subprocess.run(
        [_console_script(), "--help"], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    for flag in ("--host", "--port", "--data-dir", "--node-id", "--standalone", "--fsync"):
        assert flag in out


def test_invalid_settings_exit_with_a_message() -> None:
    proc = subprocess.run(
        [_console_script(), "--fsync", "sometimes"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2 and "fsync" in proc.stderr


def test_env_configured_node_serves_and_stops_gracefully(node_factory: Any) -> None:
    node = node_factory(via_env=True, node_id="env-node", env={"DVECDB_API_KEY": "k3y"})
    auth = {"Authorization": "Bearer k3y"}
    assert node.request("GET", "/healthz")[0] == 200
    assert node.request("GET", "/v1/status")[0] == 401
    status, body = node.request("GET", "/v1/status", headers=auth)
    assert status == 200 and body["node_id"] == "env-node" and body["role"] == "leader"
    created = node.request("POST", "/v1/collections", {"name": "c", "dimension": 2}, headers=auth)
    assert created[0] == 201
    assert node.stop() == 0  # SIGTERM: graceful exit
    assert "engine closed at seq 1" in node.log()


def test_node_without_standalone_starts_in_standby_serving_nothing(node_factory: Any) -> None:
    # DESIGN.md: a node starts in standby; its log may hold records no leader acknowledged,
    # so it serves no reads and is not ready until it has reconciled with a leader.
    node = node_factory(standalone=False)
    status, body = node.request("POST", "/v1/collections", {"name": "c", "dimension": 2})
    assert status == 409 and body["error"]["code"] == "not_leader" and body["leader"] is None
    assert node.request("GET", "/v1/status")[1]["role"] == "standby"
    assert node.request("GET", "/readyz")[0] == 503
    status, body = node.request("GET", "/v1/collections")
    assert status == 503 and body["error"]["code"] == "not_agreed"


def test_ten_thousand_vectors_survive_sigkill(node_factory: Any) -> None:
    node = node_factory(args=["--fsync", "batch"])
    dim, count = 32, 10_000
    vectors = np.random.default_rng(7).standard_normal((count, dim)).astype(np.float32)
    ids = [f"v{i}" for i in range(count)]
    assert node.request("POST", "/v1/collections", {"name": "c", "dimension": dim})[0] == 201
    for start in range(0, count, 2500):
        body = bulk.encode_batch(ids[start : start + 2500], vectors[start : start + 2500])
        status, _ = node.request(
            "PUT", "/v1/collections/c/vectors", data=body,
            headers={"Content-Type": bulk.CONTENT_TYPE},
        )  # fmt: skip
        assert status == 200
    node.kill()
    started = time.monotonic()
    node.start(timeout=120)
    recovery = time.monotonic() - started
    assert node.request("GET", "/v1/collections/c")[1]["count"] == count
    for start in range(0, count, 100):
        status, body = node.request(
            "POST", "/v1/collections/c/search",
            {"vectors": vectors[start : start + 100].tolist(), "k": 1},
        )  # fmt: skip
        assert status == 200
        for offset, row in enumerate(body["results"]):
            assert row[0]["id"] == ids[start + offset] and row[0]["distance"] == 0.0
    print(f"recovered 10,000 vectors in {recovery:.2f}s")


def test_demo_runs_end_to_end() -> None:
    args = ["-m", "demo.standalone", "--count", "2000", "--dim", "16", "--queries", "50"]
    proc = subprocess.run(
        [sys.executable, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2,000/2,000 exact self-matches" in proc.stdout
    assert "[FAIL]" not in proc.stdout


def test_sigterm_during_ingest_keeps_acknowledged_writes(node_factory: Any) -> None:
    node = node_factory(args=["--fsync", "none"])
    assert node.request("POST", "/v1/collections", {"name": "c", "dimension": 4})[0] == 201
    vectors = np.ones((500, 4), np.float32)
    body = bulk.encode_batch([f"x{i}" for i in range(500)], vectors)
    status, _ = node.request(
        "PUT", "/v1/collections/c/vectors", data=body, headers={"Content-Type": bulk.CONTENT_TYPE}
    )
    assert status == 200
    node.signal(signal.SIGTERM)  # graceful: fsyncs even in fsync=none
    assert node.proc is not None and node.proc.wait(timeout=30) == 0
    assert "checkpoint at seq 2" in node.log()
    node.start()
    assert node.request("GET", "/v1/collections/c")[1]["count"] == 500
    status = node.request("GET", "/v1/status")[1]
    assert status["checkpoint_seq"] == status["last_seq"] == 2  # loaded, nothing to replay


def test_sigusr1_logs_every_task_and_the_node_keeps_serving(standalone_node: Any) -> None:
    standalone_node.signal(signal.SIGUSR1)
    deadline = time.monotonic() + 10
    while "asyncio tasks" not in standalone_node.log():
        assert time.monotonic() < deadline, standalone_node.log()
        time.sleep(0.05)
    assert "Stack for <Task" in standalone_node.log()
    status, _ = standalone_node.request("GET", "/readyz")
    assert status == 200
