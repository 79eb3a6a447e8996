"""Restart time: from starting the process to `/readyz` 200, with the data set loaded.

Two restarts are timed. The first follows a graceful stop (SIGTERM) and shows whatever the
node does on shutdown (replay the log, or load a checkpoint if shutdown wrote one). Then the
node is run with a short checkpoint interval until its status shows a checkpoint covering the
last write, killed with SIGKILL, and started again: that restart loads the checkpoint. The
in-process baseline is hnswlib's `load_index` of the same index from a file.
"""

from __future__ import annotations

import dataclasses
import signal
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import hnswlib

from dvecbench.httpc import Client
from dvecbench.procs import Processes


@dataclasses.dataclass(frozen=True)
class RestartResult:
    seconds: float
    checkpoint_seq: int
    last_seq: int


def start_and_wait(
    procs: Processes,
    name: str,
    argv: Sequence[str],
    *,
    base_url: str,
    env: Mapping[str, str],
    cpus: frozenset[int] | None,
    timeout: float,
) -> RestartResult:
    started = time.monotonic()
    procs.start(name, argv, cpus=cpus, env=env, cwd=procs.log_dir)
    procs.wait_ready(name, base_url + "/readyz", timeout=timeout)
    seconds = time.monotonic() - started
    client = Client(base_url)
    try:
        status = client.json("GET", "/v1/status")
    finally:
        client.close()
    return RestartResult(
        seconds=seconds,
        checkpoint_seq=int(status.get("checkpoint_seq") or 0),
        last_seq=int(status["last_seq"]),
    )


def wait_checkpoint(base_url: str, *, timeout: float) -> int:
    """Block until a checkpoint covers the node's last write; returns its seq."""
    client = Client(base_url)
    started = time.monotonic()
    try:
        while True:
            status = client.json("GET", "/v1/status")
            ckpt, last = int(status.get("checkpoint_seq") or 0), int(status["last_seq"])
            if ckpt >= last > 0:
                return ckpt
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"no checkpoint covering seq {last} after {timeout:.0f}s")
            time.sleep(0.2)
    finally:
        client.close()


def restarts(
    procs: Processes,
    name: str,
    argv: Sequence[str],
    *,
    base_url: str,
    cpus: frozenset[int] | None,
    timeout: float = 300.0,
) -> tuple[RestartResult, RestartResult]:
    """(restart after SIGTERM, restart from a checkpoint after SIGKILL)."""
    env = {"DVECDB_CHECKPOINT_INTERVAL_SECONDS": "1"}
    procs.stop(name, sig=signal.SIGTERM, grace=60.0)
    graceful = start_and_wait(
        procs, name, argv, base_url=base_url, env=env, cpus=cpus, timeout=timeout
    )
    wait_checkpoint(base_url, timeout=timeout)
    procs.stop(name, sig=signal.SIGKILL)
    from_checkpoint = start_and_wait(
        procs, name, argv, base_url=base_url, env=env, cpus=cpus, timeout=timeout
    )
    return graceful, from_checkpoint


def hnswlib_load_seconds(index: hnswlib.Index, *, space: str, dim: int, ef: int) -> float:
    """Seconds for hnswlib to load the same index from a file (the in-process restart)."""
    with tempfile.TemporaryDirectory(prefix="dvecbench-") as tmp:
        path = str(Path(tmp) / "index.bin")
        index.save_index(path)
        started = time.perf_counter()
        loaded = hnswlib.Index(space=space, dim=dim)
        loaded.load_index(path, max_elements=index.get_max_elements())
        loaded.set_ef(ef)
        return time.perf_counter() - started
