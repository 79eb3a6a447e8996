"""Drive wrk (the load generator) with pre-rendered bodies and read its summary.

wrk is a C event loop: one thread on one pinned core keeps eight connections busy at far more
requests per second than a Python server can answer, so it is never the bottleneck. Bodies are
rendered once into a file (one per line) that `lua/bodies.lua` cycles through: JSON as is, a
binary body as its hex, which the script decodes once before the clock starts.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

from dvecbench.procs import ensure_apt_tool, taskset_prefix
from dvecbench.stats import Latency

LUA = Path(__file__).resolve().parent.parent / "lua" / "bodies.lua"
MARK = "WRK_SUMMARY "
JSON = "application/json"


class WrkError(RuntimeError):
    """wrk failed or reported errors: the figure would be meaningless."""


@dataclasses.dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    rps: float
    latency: Latency
    errors: int

    def as_dict(self) -> dict[str, float | int]:
        return {
            "requests": self.requests,
            "seconds": round(self.seconds, 3),
            "rps": self.rps,
            "errors": self.errors,
            **self.latency.as_dict(),
        }


def ensure_wrk() -> str:
    """Path of wrk, installing Debian's package when it is absent."""
    return shutil.which("wrk") or ensure_apt_tool("wrk")


def write_bodies(path: Path, bodies: Iterable[bytes], *, hex_lines: bool = False) -> Path:
    """One body per line: as is (JSON never contains a raw newline), or its hex for binary."""
    with path.open("wb") as f:
        for body in bodies:
            if hex_lines:
                f.write(body.hex().encode("ascii") + b"\n")
                continue
            if b"\n" in body:
                raise ValueError("a request body contains a newline")
            f.write(body + b"\n")
    return path


def script_args(bodies: Path, content_type: str, *, hex_lines: bool) -> list[str]:
    """What follows `--` for `bodies.lua`; plain JSON bodies need only the file."""
    if content_type == JSON and not hex_lines:
        return [str(bodies)]
    return [str(bodies), content_type, "hex" if hex_lines else "text"]


def parse_summary(output: str) -> WrkResult:
    """Read the line `bodies.lua` prints in done()."""
    for line in output.splitlines():
        if line.startswith(MARK):
            data = json.loads(line[len(MARK) :])
            break
    else:
        raise WrkError(f"wrk printed no summary:\n{output[-2000:]}")
    seconds = data["duration_us"] / 1e6
    errors = sum(
        int(data[key])
        for key in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")
    )
    return WrkResult(
        requests=int(data["requests"]),
        seconds=seconds,
        rps=data["requests"] / seconds if seconds > 0 else 0.0,
        latency=Latency(
            p50=data["p50_us"] / 1000, p99=data["p99_us"] / 1000, mean=data["mean_us"] / 1000
        ),
        errors=errors,
    )


def run(
    *,
    url: str,
    bodies: Path,
    connections: int,
    seconds: float,
    cpus: frozenset[int] | None,
    content_type: str = JSON,
    hex_lines: bool = False,
) -> WrkResult:
    """One fixed-duration wrk run; raises if any request failed.

    `hex_lines`: the bodies file holds hex lines (see `write_bodies`), sent decoded.
    """
    if not url.startswith("http://127."):
        raise ValueError(f"load only goes to loopback, not {url}")
    argv = [
        *taskset_prefix(cpus),
        ensure_wrk(),
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(LUA),
        url,
        "--",
        *script_args(bodies, content_type, hex_lines=hex_lines),
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
    if proc.returncode != 0:
        raise WrkError(f"wrk exited {proc.returncode}: {proc.stderr[-2000:]}")
    result = parse_summary(proc.stdout)
    if result.errors:
        raise WrkError(f"{result.errors} failed requests against {url}:\n{proc.stdout[-2000:]}")
    if result.requests == 0:
        raise WrkError(f"no request completed against {url}")
    return result
