"""Pod networking with iproute2: one bridge, a network namespace and veth pair per pod.

Every name carries a fixed prefix (see ``netplan``) so that ``cleanup_leftovers`` can remove
what a crashed run left behind without touching anything else on the machine. Pods get no
default route: they reach the bridge's subnet (each other, the host's bridge address where the
API server listens) and nothing else.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Sequence

from localkube import podnetns
from localkube.netplan import NETNS_PREFIX, VETH_PREFIX, NetPlan, netns_name, veth_name
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


def create_pod_network(plan: NetPlan, pod_uid: str, ip: str) -> tuple[str, str]:
    """Namespace + veth into the bridge + address; returns (netns, host veth)."""
    netns, veth = netns_name(pod_uid), veth_name(pod_uid)
    delete_pod_network(pod_uid)  # a half-made one from a crash must not block the pod
    _ip("netns", "add", netns)
    try:
        _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
        _ip("link", "set", veth, "master", plan.bridge, "up")
        _ip("-n", netns, "addr", "add", plan.pod_cidr(ip), "dev", "eth0")
        _ip("-n", netns, "link", "set", "lo", "up")
        _ip("-n", netns, "link", "set", "eth0", "up")
    except NetError:
        delete_pod_network(pod_uid)
        raise
    forget_neighbour(plan, ip, keep=netns)
    return netns, veth


def forget_neighbour(plan: NetPlan, ip: str, *, keep: str) -> list[str]:
    """Drop the neighbour (ARP) entry for `ip` on the host's bridge and in every other pod's
    namespace; returns where one was dropped.

    A pod made again (a StatefulSet member deleted and recreated) takes the lowest free
    address, usually the one it had, behind a new veth with a new MAC. The entries its peers
    hold for the old MAC stay REACHABLE for up to `base_reachable_time` and then take the
    stale/delay/probe path, so the pod was unreachable for 40-55 s (issue #15). Without the
    entry, the next packet asks again and the new MAC answers at once.
    """
    targets = [("host", ["ip", "neigh", "del", ip, "dev", plan.bridge])]
    targets += [
        (netns, ["ip", "-n", netns, "neigh", "del", ip, "dev", "eth0"])
        for netns in list_netns()
        if netns.startswith(NETNS_PREFIX) and netns != keep
    ]
    dropped = []
    for where, command in targets:
        if subprocess.run(command, capture_output=True, check=False).returncode == 0:
            dropped.append(where)  # `ip neigh del` fails when there was no entry
    return dropped


def netns_pids(netns: str) -> list[int]:
    out = _ip("netns", "pids", netns, check=False)
    return [int(p) for p in out.split() if p.isdigit()]


def kill_netns_processes(netns: str, grace: float = 0.0) -> None:
    """SIGKILL every process still inside a pod's namespace (after an optional grace)."""
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


def delete_pod_network(pod_uid: str) -> None:
    """Kill what is left in the namespace, then remove it (its eth0 and our veth go with it)."""
    netns, veth = netns_name(pod_uid), veth_name(pod_uid)
    if netns in list_netns():
        kill_netns_processes(netns)
        _ip("netns", "del", netns, check=False)
    if link_exists(veth):
        _ip("link", "del", veth, check=False)


def set_link(pod_uid: str, up: bool) -> None:
    """Take a pod's host-side link down (a real partition) or bring it back up.

    On the real node the host side is the pod's veth in the node's namespace (found by the
    index its eth0 names as peer); the pod's namespace is ``lk-<uid>`` there too (podnetns).
    """
    state = "up" if up else "down"
    veth = veth_name(pod_uid)
    if link_exists(veth) or NODE_NETNS not in list_netns():
        _ip("link", "set", veth, state)
        return
    index = podnetns.peer_index(netns_name(pod_uid))
    name = podnetns.link_name(NODE_NETNS, index) if index is not None else None
    if name is None:
        raise NetError(f"pod {pod_uid}: no link of its namespace {netns_name(pod_uid)} found")
    _ip("-n", NODE_NETNS, "link", "set", name, state)


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
