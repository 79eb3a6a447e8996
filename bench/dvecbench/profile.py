"""`--profile`: py-spy samples the node while wrk drives 8-client searches, after the figures.

Profiling runs in its own phase so the sampler's cost never touches a reported figure. It
samples only the thread holding the GIL (`--gil`) without pausing the process
(`--nonblocking`), so the profile shows where Python time goes, which is what an HTTP
overhead hunt needs; hnswlib's own search time appears as time the GIL is free.
"""

from __future__ import annotations

import collections
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from dvecbench import wrk
from dvecbench.datasets import Dataset
from dvecbench.searchload import SearchApi


def ensure_py_spy() -> str:
    beside = Path(sys.executable).with_name("py-spy")
    if beside.exists():
        return str(beside)
    found = shutil.which("py-spy")
    if found:
        return found
    print("[bench] installing py-spy with pip", flush=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "py-spy"], check=True, timeout=600
    )
    return str(beside)


def summarise(raw: Path, *, top: int = 20) -> list[str]:
    """The frames with the most samples on top of the stack, as 'share% frame' lines."""
    self_time: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        total += int(count)
        self_time[stack.split(";")[-1]] += int(count)
    if total == 0:
        return []
    return [f"{n / total * 100:5.1f}% {frame}" for frame, n in self_time.most_common(top)]


def profile_search(
    *,
    pid: int,
    api: SearchApi,
    ds: Dataset,
    k: int,
    seconds: float,
    cpus: frozenset[int] | None,
    out: Path,
) -> list[str]:
    """Record `seconds` of 8-client search load; writes the raw stacks to `out`."""
    spy = ensure_py_spy()
    with tempfile.TemporaryDirectory(prefix="dvecbench-") as tmp:
        bodies = wrk.write_bodies(
            Path(tmp) / "bodies.txt",
            (api.body(ds.queries[i : i + 1], k) for i in range(len(ds.queries))),
            hex_lines=api.binary,
        )
        duration = max(2, round(seconds))
        argv = [spy, "record", "-p", str(pid), "-d", str(duration), "-r", "200"]
        argv += ["--gil", "--nonblocking", "-f", "raw", "-o", str(out)]
        recorder = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wrk.run(
                url=api.base_url + api.path,
                bodies=bodies,
                connections=8,
                seconds=duration,
                cpus=cpus,
                content_type=api.content_type,
                hex_lines=api.binary,
            )
            recorder.wait(timeout=duration + 60)
        finally:
            if recorder.poll() is None:
                recorder.kill()
                recorder.wait()
    return summarise(out) if out.exists() else []
