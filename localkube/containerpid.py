"""The host pid of a pod's container, from the containerID in its status.

Tests and the demo kill or freeze a member's process by pid. The node reports
``containerd://<id>``, and the container's processes are in the cgroup folder named by that id
under the kubelet's ``kubepods`` tree, where the container's first process is the one whose
parent is outside it (runc's shim).
"""

from __future__ import annotations

import os
from pathlib import Path

CONTAINERD_PREFIX = "containerd://"
CGROUP_ROOT = Path("/sys/fs/cgroup")


def parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def first_process(pids: set[int]) -> int | None:
    """The process of ``pids`` whose parent is not among them (the container's init)."""
    roots = sorted(p for p in pids if parent_of(p) not in pids)
    return roots[0] if roots else None


def container_folder(container_id: str, root: Path = CGROUP_ROOT) -> Path | None:
    for hierarchy in ("pids", "memory", "cpu", "unified", ""):
        top = root / hierarchy / "kubepods" if hierarchy else root / "kubepods"
        if not top.is_dir():
            continue
        for folder, dirs, _ in os.walk(top):
            if container_id in dirs:
                return Path(folder) / container_id
    return None


def host_pid(container_id: str, root: Path = CGROUP_ROOT) -> int | None:
    """The host pid of a running container, or None (not started, gone, other runtime)."""
    if not container_id.startswith(CONTAINERD_PREFIX):
        return None
    folder = container_folder(container_id.removeprefix(CONTAINERD_PREFIX), root)
    if folder is None:
        return None
    try:
        pids = {int(p) for p in (folder / "cgroup.procs").read_text().split()}
    except OSError:
        return None
    return first_process(pids)
