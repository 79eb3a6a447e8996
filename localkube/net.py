"""The harness's network with iproute2: the bridge, pods' links, and the cleanup.

The real node's namespace hangs off the bridge (``realnode``); its pods' namespaces are named
``lk-<uid>`` (``podnetns``). Every name carries a fixed prefix (see ``netplan``) so that
``cleanup_leftovers`` removes what a crashed run left behind and nothing else on the machine.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Sequence

from localkube import podnetns
from localkube.netplan import NETNS_PREFIX, VETH_PREFIX, NetPlan, netns_name
from localkube.nodeconfig import NODE_NETNS


class NetError(RuntimeError):
    """An iproute2 command failed; the message holds the command and its error."""


def _ip(*args: str, check: bool = True) -> str:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise NetError(f"ip {' '.join(args)}: {result.stderr.strip() or result.returncode}")
    return result.stdout


def namespaces_supported() -> str | None:
    """None when this process can create network namespaces, else the reason it cannot."""
    if os.geteuid() != 0:
        return "network namespaces need root (localkube runs pods in their own netns)"
    probe = f"{NETNS_PREFIX}probe{os.getpid()}"
    result = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if result.returncode != 0:
        return f"`ip netns add` failed: {result.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, check=False)
    return None


def link_exists(name: str) -> bool:
    return subprocess.run(["ip", "link", "show", "dev", name], capture_output=True).returncode == 0


def create_bridge(plan: NetPlan) -> None:
    """Create the bridge with the harness's address; refuse if it already exists."""
    if link_exists(plan.bridge):
        raise NetError(
            f"bridge {plan.bridge} already exists: another localkube plane is running or a "
            "crashed one left it (run `localkube down --force`)"
        )
    _ip("link", "add", plan.bridge, "type", "bridge")
    _ip("addr", "add", plan.bridge_cidr, "dev", plan.bridge)
    _ip("link", "set", plan.bridge, "up")


def delete_bridge(plan: NetPlan) -> None:
    if link_exists(plan.bridge):
        _ip("link", "del", plan.bridge)


def netns_pids(netns: str) -> list[int]:
    out = _ip("netns", "pids", netns, check=False)
    return [int(p) for p in out.split() if p.isdigit()]


def kill_netns_processes(netns: str, grace: float = 0.0) -> None:
    """SIGKILL every process still inside a namespace (after an optional grace)."""
    deadline = time.monotonic() + grace
    pids = netns_pids(netns)
    if pids and grace > 0:
        for pid in pids:
            _signal(pid, signal.SIGTERM)
        while time.monotonic() < deadline and netns_pids(netns):
            time.sleep(0.1)
    for _ in range(50):
        pids = netns_pids(netns)
        if not pids:
            return
        for pid in pids:
            _signal(pid, signal.SIGKILL)
        time.sleep(0.1)


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def set_link(pod_uid: str, up: bool) -> None:
    """Take a pod's link down (a real partition) or bring it back up: the host side of its veth,
    in the node's namespace, found by the index its eth0 names as peer (``podnetns``)."""
    index = podnetns.peer_index(netns_name(pod_uid))
    name = podnetns.link_name(NODE_NETNS, index) if index is not None else None
    if name is None:
        raise NetError(f"pod {pod_uid}: no link of its namespace {netns_name(pod_uid)} found")
    _ip("-n", NODE_NETNS, "link", "set", name, "up" if up else "down")


def list_netns() -> list[str]:
    out = _ip("netns", "list", check=False)
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def list_links(prefixes: Sequence[str]) -> list[str]:
    out = _ip("-o", "link", "show", check=False)
    names = []
    for line in out.splitlines():
        parts = line.split(":", 2)
        if len(parts) < 2:
            continue
        name = parts[1].strip().split("@", 1)[0]
        if name.startswith(tuple(prefixes)):
            names.append(name)
    return names


def cleanup_leftovers(plan: NetPlan) -> list[str]:
    """Remove every namespace, veth and the bridge this harness may have made; list them."""
    removed = []
    for netns in list_netns():
        if netns.startswith(NETNS_PREFIX):
            kill_netns_processes(netns)
            _ip("netns", "del", netns, check=False)
            removed.append(f"netns {netns}")
    for link in list_links([VETH_PREFIX]):
        _ip("link", "del", link, check=False)
        removed.append(f"link {link}")
    if link_exists(plan.bridge):
        _ip("link", "del", plan.bridge, check=False)
        removed.append(f"bridge {plan.bridge}")
    return removed
