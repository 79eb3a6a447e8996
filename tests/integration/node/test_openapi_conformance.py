"""The OpenAPI document is exact (DESIGN.md "Access"): schemathesis, with every check it has,
finds nothing against a live node.

Requests the document calls valid must be accepted, requests it calls invalid refused with a
4xx JSON error, responses must match their documented schemas, undeclared methods answer 405
with ``Allow``, and operations that need a token refuse requests without one. The binary body
forms are drawn by ``tests.support.openapi_media``.

The node takes vectors of one dimension (``DVECDB_MAX_DIMENSION=1``; its document says so):
a collection's dimension is state the document cannot know, and with one possible dimension
every vector the document calls valid fits every collection the run creates.

Two runs, each on its own node. With the data API key, every operation: the admin and
replication ones are then checked for their refusals. With the cluster token, the admin and
replication operations themselves (a fuzzed promote or fence rightly makes a node answer
writes and reads with 503, so the data operations are not in that run); not the log stream,
an endless response by design, which no request-and-response fuzzer can read.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import NodeFactory

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
API_KEY = "data-key"
CLUSTER_TOKEN = "cluster-token"
RUNS = {
    "data key, every operation": (API_KEY, [], 26),
    "cluster token, admin and replication": (
        CLUSTER_TOKEN,
        ["--include-path-regex=^/v1/(admin/|replication/(ack|status|snapshot)$)"],
        12,
    ),
}


@pytest.mark.parametrize("run", RUNS)
def test_schemathesis_with_every_check_finds_nothing(
    node_factory: NodeFactory, run: str, tmp_path: Path
) -> None:
    token, selection, operations = RUNS[run]
    node = node_factory(
        args=["--api-key", API_KEY, "--cluster-token", CLUSTER_TOKEN],
        env={"DVECDB_MAX_DIMENSION": "1", "DVECDB_MAX_BATCH": "20"},
    )
    command = [
        str(Path(sys.executable).parent / "schemathesis"),
        "run",
        f"{node.url}/openapi.json",
        "--checks=all",
        "--max-examples=25",
        "--seed=1",
        "--workers=1",
        "--continue-on-failure",
        "--generation-database=none",
        "--request-timeout=10",
        "--no-color",
        f"--header=Authorization: Bearer {token}",
        *selection,
    ]
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "tests.support.openapi_media",
        "PYTHONPATH": str(ROOT),
    }
    done = subprocess.run(
        # In a temporary folder: schemathesis keeps a cache in its working directory.
        command,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    report = done.stdout[-8000:] + done.stderr[-2000:]
    assert done.returncode == 0, report
    assert f"Tested: {operations}" in done.stdout and " passed" in done.stdout, report
