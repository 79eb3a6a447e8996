"""The network claim: a forced cleanup leaves alone the network a live plane holds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from localkube import claim
from localkube.netplan import NetPlan

pytestmark = pytest.mark.unit


def test_a_live_owner_is_reported_to_others_only(tmp_path: Path) -> None:
    plan, mine, other = NetPlan(), tmp_path / "mine", tmp_path / "other"
    claim.write(plan, mine, tmp_path)  # this process is the starter: alive
    assert claim.other_live_owner(plan, other, tmp_path) == mine
    assert claim.other_live_owner(plan, mine, tmp_path) is None
    claim.release(plan, other, tmp_path)  # not its claim: kept
    assert claim.read(plan, tmp_path) is not None
    claim.release(plan, mine, tmp_path)
    assert claim.read(plan, tmp_path) is None


def test_a_dead_starter_counts_only_through_its_recorded_daemons(tmp_path: Path) -> None:
    plan, owner = NetPlan(), tmp_path / "owner"
    owner.mkdir()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    record = {"state_dir": str(owner), "pid": int(gone.stdout), "started": "1"}
    claim.claim_path(plan, tmp_path).write_text(json.dumps(record))
    assert claim.other_live_owner(plan, tmp_path / "x", tmp_path) is None  # no state file
    daemon = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        state = {"pids": {"etcd": daemon.pid}, "markers": {"etcd": "time.sleep(30)"}}
        (owner / claim.STATE_FILE).write_text(json.dumps(state))
        assert claim.other_live_owner(plan, tmp_path / "x", tmp_path) == owner
    finally:
        daemon.kill()
        daemon.wait()
    assert claim.other_live_owner(plan, tmp_path / "x", tmp_path) is None
