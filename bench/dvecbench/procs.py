"""Start, pin and always stop the processes a benchmark run needs.

Every server is started in its own session (process group) under `taskset`, and the
`Processes` context manager kills every group it started on the way out, on success, on an
exception and on SIGINT/SIGTERM alike, so a failed run leaves nothing listening.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import types
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

LOOPBACK = "127.0.0.1"


def parse_cpus(text: str) -> frozenset[int] | None:
    """'0', '1', '0,1' or '0-1' to a CPU set; '' or 'none' means unpinned."""
    text = text.strip().lower()
    if text in ("", "none"):
        return None
    cpus: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    available = os.sched_getaffinity(0)
    if not cpus <= available:
        raise ValueError(f"CPUs {sorted(cpus - available)} are not available here")
    return frozenset(cpus)


def taskset_prefix(cpus: frozenset[int] | None) -> list[str]:
    if not cpus:
        return []
    return ["taskset", "-c", ",".join(str(c) for c in sorted(cpus))]


def ensure_apt_tool(package: str, binary: str | None = None) -> str:
    """Install a Debian package when its binary is missing (the bench runs as root)."""
    binary = binary or package
    found = shutil.which(binary)
    if found:
        return found
    print(f"[bench] installing {package} with apt-get", flush=True)
    apt = ["apt-get", "-o", "DPkg::Lock::Timeout=300"]
    subprocess.run([*apt, "update", "-qq"], check=True, timeout=600)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([*apt, "install", "-y", "-qq", package], check=True, timeout=900, env=env)
    found = shutil.which(binary)
    if not found:
        raise RuntimeError(f"{binary} still missing after installing {package}")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        port: int = s.getsockname()[1]
        return port


def http_status(url: str, timeout: float = 2.0) -> int | None:
    """Status code of a GET, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            status: int = resp.status
            return status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (OSError, urllib.error.URLError):
        return None


class Processes:
    """Owns the benchmark's child processes; closing kills them all."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        cpus: frozenset[int] | None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        if name in self._procs and self._procs[name].poll() is None:
            raise RuntimeError(f"{name} is already running")
        log = (self.log_dir / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            [*taskset_prefix(cpus), *argv],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,
        )
        log.close()
        self._procs[name] = proc
        return proc

    def wait_ready(self, name: str, url: str, *, timeout: float, expect: int = 200) -> float:
        """Poll `url` until it answers `expect`; returns the seconds waited."""
        proc = self._procs[name]
        started = time.monotonic()
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}; see {self.log(name)}")
            if http_status(url, timeout=1.0) == expect:
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"{name} not ready at {url} after {timeout:.0f}s")
            time.sleep(0.02)

    def pid(self, name: str) -> int:
        return self._procs[name].pid

    def cpu_seconds(self, name: str) -> float:
        """User + system CPU time the process has used so far (all its threads).

        CPU per request hardly depends on what else runs on the machine, unlike QPS, so it
        is reported beside every timed figure.
        """
        fields = Path(f"/proc/{self.pid(name)}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
        return ticks / os.sysconf("SC_CLK_TCK")

    def set_cpus(self, name: str, cpus: frozenset[int] | None) -> None:
        """Move every thread of a running process to `cpus` (None: every CPU we may use).

        Only the same as starting it under `taskset` for a server that does not size anything
        (thread pools) from its CPU count at start-up.
        """
        allowed = cpus or frozenset(range(os.cpu_count() or 1))
        for task in Path(f"/proc/{self.pid(name)}/task").iterdir():
            with contextlib.suppress(ProcessLookupError):  # a thread that just ended
                os.sched_setaffinity(int(task.name), allowed)

    def log(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def stop(self, name: str, *, sig: int = signal.SIGTERM, grace: float = 15.0) -> int | None:
        """Signal the process group, wait `grace` seconds, then SIGKILL it."""
        proc = self._procs.pop(name, None)
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        # Children left in the group (none expected) go too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        return proc.returncode

    def close(self) -> None:
        for name in list(self._procs):
            self.stop(name, grace=5.0)

    def __enter__(self) -> Processes:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        self.close()


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt so cleanup runs when the bench is stopped."""

    def handler(signum: int, frame: types.FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
