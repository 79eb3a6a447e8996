"""What the numbers were measured on: CPUs, memory, load, and every component's version."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / (1 << 20), 1)
    except OSError:
        pass
    return 0.0


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f}/{five:.2f}/{fifteen:.2f}"


def busiest_processes(limit: int = 5) -> list[str]:
    """The top CPU users (other work sharing the machine skews every figure)."""
    proc = subprocess.run(
        ["ps", "-eo", "pcpu,comm", "--sort=-pcpu", "--no-headers"],
        capture_output=True,
        text=True,
        check=False,
        timeout=10,
    )
    return [" ".join(line.split()) for line in proc.stdout.splitlines()[:limit]]


def _thp_mode() -> str:
    """The host's transparent huge page mode (the bracketed word), or 'unknown'."""
    try:
        text = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return "unknown"
    start, end = text.find("["), text.find("]")
    return text[start + 1 : end] if 0 <= start < end else "unknown"


def describe() -> dict[str, Any]:
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model(),
        "memory_gib": memory_gib(),
        "kernel": platform.release(),
        # Inherited by every engine the run starts, and used by the in-process baseline.
        "malloc": os.environ.get("GLIBC_TUNABLES") or "glibc defaults",
        "thp": _thp_mode(),
        "load_start": load(),
        "busiest_at_start": busiest_processes(),
    }


def version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def wrk_version(wrk: str) -> str:
    proc = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False, timeout=10)
    first = (proc.stdout or proc.stderr).splitlines()
    return first[0].split()[1] if first and len(first[0].split()) > 1 else "unknown"


def versions(*, wrk: str | None, chroma: str | None) -> dict[str, str]:
    out = {
        "python": platform.python_version(),
        "dvecdb": version("dvecdb-node"),
        "hnswlib": version("hnswlib"),
        "numpy": version("numpy"),
        "aiohttp": version("aiohttp"),
        "uvloop": version("uvloop"),
        "orjson": version("orjson"),
    }
    if wrk:
        out["wrk"] = wrk_version(wrk)
    if chroma:
        out["chromadb"] = chroma
    return out
