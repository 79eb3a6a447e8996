"""Name each pod's network namespace by its UID (``lk-<uid>``) for the harness's tools.

containerd keeps a pod's namespace as ``cni-<random>`` under its state dir. The harness's
tools find a pod's namespace by its UID (``netplan.netns_name``) to run a command in it, add a
firewall rule or cut its link, so the node helper keeps ``/run/netns/lk-<uid>`` as a symlink to
the sandbox's namespace, made when the sandbox appears, removed when it is gone.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from localkube.netplan import netns_name

NETNS_DIR = Path("/run/netns")
POD_UID_LABEL = "io.kubernetes.pod.uid"
SANDBOX_FILTER = 'labels."io.cri-containerd.kind"==sandbox'

log = logging.getLogger("localkube.podnetns")

Ctr = Callable[..., str]  # runs `ctr <args>` against the node's containerd, returns stdout


def sandbox_netns(info: dict[str, Any]) -> tuple[str, str] | None:
    """(pod uid, namespace path) of one sandbox from `ctr containers info`, if it has both."""
    uid = (info.get("Labels") or {}).get(POD_UID_LABEL)
    namespaces = (((info.get("Spec") or {}).get("linux") or {}).get("namespaces")) or []
    paths = [n.get("path") for n in namespaces if n.get("type") == "network" and n.get("path")]
    return (uid, paths[0]) if uid and paths else None


def wanted_links(sandboxes: list[tuple[str, str]]) -> dict[str, str]:
    """Link name -> target; a pod with several sandboxes (restarted) keeps the last one."""
    return {netns_name(uid): path for uid, path in sandboxes}


class Linker:
    """Keeps /run/netns/lk-<uid> links for the sandboxes of one node's containerd."""

    def __init__(self, ctr: Ctr, state_root: Path, netns_dir: Path = NETNS_DIR) -> None:
        self.ctr = ctr
        self.state_root = str(state_root)
        self.netns_dir = netns_dir
        self.seen: dict[str, tuple[str, str] | None] = {}  # sandbox id -> (uid, path)

    def sync(self) -> None:
        ids = self.ctr("containers", "ls", "-q", SANDBOX_FILTER).split()
        for sandbox in ids:
            if sandbox not in self.seen:
                info = json.loads(self.ctr("containers", "info", sandbox))
                self.seen[sandbox] = sandbox_netns(info)
        for gone in set(self.seen) - set(ids):
            del self.seen[gone]
        wanted = wanted_links([v for v in self.seen.values() if v is not None])
        self.netns_dir.mkdir(parents=True, exist_ok=True)
        for name, target in wanted.items():
            link = self.netns_dir / name
            if link.is_symlink() and str(link.readlink()) == target:
                continue
            if link.is_symlink():
                link.unlink()
            if not link.exists():
                link.symlink_to(target)
                log.info("linked %s -> %s", link, target)
        for link in self.netns_dir.iterdir():
            ours = link.is_symlink() and str(link.readlink()).startswith(self.state_root)
            if ours and link.name not in wanted:
                link.unlink()
                log.info("unlinked %s", link)


def peer_index(pod_netns: str) -> int | None:
    """Interface index, in the node's namespace, of the pod's eth0 peer (``eth0@if<N>``)."""
    out = subprocess.run(
        ["ip", "-n", pod_netns, "-o", "link", "show", "eth0"], capture_output=True, text=True
    ).stdout
    match = re.search(r"eth0@if(\d+)", out)
    return int(match.group(1)) if match else None


def link_name(netns: str, index: int) -> str | None:
    out = subprocess.run(
        ["ip", "-n", netns, "-o", "link", "show"], capture_output=True, text=True
    ).stdout
    for line in out.splitlines():
        number, _, rest = line.partition(":")
        if number.strip() == str(index):
            return rest.split(":", 1)[0].strip().split("@", 1)[0]
    return None
