"""Who owns the harness's network on this machine: one claim file per bridge.

The bridge, the node namespace ``lk-node``, the pods' ``lk-<uid>`` names and the kubelet's pod
cgroups are machine-wide, and several engineers' test sessions take turns on them. A plane
writes ``/run/localkube/<bridge>.json`` (its state dir and the pid that started it) when it
makes the bridge; a forced cleanup removes the network only when no live plane claims it, so
``localkube down --force`` after a crash never tears down another session's running plane.
A plane is live while the process that started it runs or any daemon its state file records
does (``localkube up`` returns while its daemons keep running).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from localkube import procs
from localkube.netplan import NetPlan

CLAIM_DIR = Path("/run/localkube")
STATE_FILE = "state.json"  # the plane's record (plane.STATE_FILE)


def claim_path(plan: NetPlan, claim_dir: Path = CLAIM_DIR) -> Path:
    return claim_dir / f"{plan.bridge}.json"


def _start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (tells a reused pid from the one recorded)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def write(plan: NetPlan, state_dir: Path, claim_dir: Path = CLAIM_DIR) -> None:
    path = claim_path(plan, claim_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"state_dir": str(state_dir), "pid": os.getpid(), "started": _start_time(os.getpid())}
    path.write_text(json.dumps(record))


def read(plan: NetPlan, claim_dir: Path = CLAIM_DIR) -> dict[str, object] | None:
    try:
        found = json.loads(claim_path(plan, claim_dir).read_text())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def plane_alive(record: dict[str, object]) -> bool:
    """The claiming plane still runs: its starter, or a daemon its state file records."""
    pid = record.get("pid")
    started = _start_time(pid) if isinstance(pid, int) else None
    if started is not None and started == record.get("started"):
        return True
    state = Path(str(record.get("state_dir"))) / STATE_FILE
    try:
        recorded = json.loads(state.read_text())
    except (OSError, ValueError):
        return False
    markers = recorded.get("markers", {})
    return any(procs.alive(p, markers.get(d, "")) for d, p in recorded.get("pids", {}).items())


def other_live_owner(plan: NetPlan, state_dir: Path, claim_dir: Path = CLAIM_DIR) -> Path | None:
    """The state dir of another live plane that holds this network, else None."""
    record = read(plan, claim_dir)
    if record is None or Path(str(record.get("state_dir"))) == state_dir:
        return None
    return Path(str(record["state_dir"])) if plane_alive(record) else None


def release(plan: NetPlan, state_dir: Path, claim_dir: Path = CLAIM_DIR) -> None:
    """Drop the claim if it is this plane's (or its owner is dead)."""
    if other_live_owner(plan, state_dir, claim_dir) is None:
        claim_path(plan, claim_dir).unlink(missing_ok=True)
