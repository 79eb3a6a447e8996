"""The OpenAPI document is exact (DESIGN.md "Access"): schemathesis, with every check it has,
finds nothing against a live node.

Requests the document calls valid must be accepted, requests it calls invalid refused with a
4xx JSON error, responses must match their documented schemas, undeclared methods answer 405
with ``Allow``, and operations that need a token refuse requests without one.

The node takes vectors of one dimension (``DVECDB_MAX_DIMENSION=1``; its document says so):
a collection's dimension is state the document cannot know, and with one possible
dimension every vector the document calls valid fits every collection the run creates.
schemathesis holds the data API key, not the cluster token: the admin and replication
operations are checked for their refusals (a fuzzed promote or fence would, rightly, make
the node answer 503 to what follows). Their bodies are the same ``schema`` types, checked by
``tests/unit/node/test_schema.py``.
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


def test_schemathesis_with_every_check_finds_nothing(node_factory: NodeFactory) -> None:
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
        f"--header=Authorization: Bearer {API_KEY}",
    ]
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "tests.support.openapi_media",
        "PYTHONPATH": str(ROOT),
    }
    run = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    report = run.stdout[-8000:] + run.stderr[-2000:]
    assert run.returncode == 0, report
    assert "Tested: 20" in run.stdout and " passed" in run.stdout, report
