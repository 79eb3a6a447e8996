"""The fault suite's private network: one bridge, a namespace per node, iptables partitions.

Addresses come from 10.213.<slot>.0/24 (localkube owns 10.213.0.0/24; a run holds a slot, see
``claim``). The host side of the bridge
holds two addresses: ``OPERATOR_IP`` (the primary one, the source the operator's unbound sockets
get) and ``CLIENT_IP`` (the workload binds to it), so that a rule can cut the operator from the
leader while clients still reach it. Nodes get ``10.213.<slot>.10 + i``.

A partition is a DROP rule inside a node's namespace, per peer address and direction: ``OUTPUT
-d peer`` (this node cannot send to the peer) or ``INPUT -s peer`` (cannot hear from it). Rules
inside a namespace vanish with it; every name carries the ``dvfz<slot>`` prefix so that a
crashed run's leftovers are found again and removed by their exact names (``cleanup``).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

MAX_NODES = 8
SLOTS = range(1, 9)
LOCKS = Path("/tmp")

# The slot this process holds (``claim``): its names and its /24. Read as module attributes at
# the time of use (``network.CLIENT_IP``), never imported by value.
SLOT = 1
BRIDGE = "dvfz1"
NETNS_PREFIX = "dvfz1-"
VETH_PREFIX = "dvfz1v"
SUBNET_PREFIX = "10.213.1."
OPERATOR_IP = SUBNET_PREFIX + "1"
CLIENT_IP = SUBNET_PREFIX + "2"


def use_slot(slot: int) -> None:
    """Name everything after ``slot``: bridge ``dvfz<slot>``, subnet 10.213.<slot>.0/24."""
    global SLOT, BRIDGE, NETNS_PREFIX, VETH_PREFIX, SUBNET_PREFIX, OPERATOR_IP, CLIENT_IP
    SLOT = slot
    BRIDGE = f"dvfz{slot}"
    NETNS_PREFIX = f"dvfz{slot}-"
    VETH_PREFIX = f"dvfz{slot}v"
    SUBNET_PREFIX = f"10.213.{slot}."
    OPERATOR_IP = SUBNET_PREFIX + "1"
    CLIENT_IP = SUBNET_PREFIX + "2"


def claim() -> IO[bytes]:
    """Hold the first free slot (an exclusive ``flock``) until the returned file is closed.

    Two runs on one machine (a developer's ``make faults`` and a CI clone's ``make test``) then
    never share names, addresses or mounts, and the cleanup of leftovers at start only ever
    touches the slot this run holds (whatever is there was left by a run that died).
    """
    for slot in SLOTS:
        handle = open(LOCKS / f"dvecdb-faults-{slot}.lock", "ab")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        use_slot(slot)
        return handle
    raise NetworkError(f"every fault-suite slot ({SLOTS.start}..{SLOTS.stop - 1}) is in use")


class NetworkError(RuntimeError):
    """A command that builds or cuts the network failed."""


def node_ip(index: int) -> str:
    return f"{SUBNET_PREFIX}{10 + index}"


def netns_name(index: int) -> str:
    return f"{NETNS_PREFIX}{index}"


def veth_name(index: int) -> str:
    return f"{VETH_PREFIX}{index}"


def exec_prefix(index: int) -> list[str]:
    """The command prefix that runs a process inside node ``index``'s namespace."""
    return ["ip", "netns", "exec", netns_name(index)]


def _run(*cmd: str, check: bool = True) -> str:
    result = subprocess.run(list(cmd), capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise NetworkError(f"{' '.join(cmd)}: {result.stderr.strip() or result.returncode}")
    return result.stdout


def unsupported() -> str | None:
    """None when this process can build the network, else why not (the tests skip)."""
    if os.geteuid() != 0:
        return "the fault suite needs root (network namespaces, iptables, tmpfs mounts)"
    for tool in ("ip", "iptables", "mount"):
        if shutil.which(tool) is None:
            hint = (
                " (make faults installs it: apt-get install iptables)" if tool == "iptables" else ""
            )
            return f"`{tool}` not found{hint}"
    return None


def _netns_list() -> list[str]:
    return [
        line.split()[0] for line in _run("ip", "netns", "list", check=False).splitlines() if line
    ]


def _link_exists(name: str) -> bool:
    return subprocess.run(["ip", "link", "show", "dev", name], capture_output=True).returncode == 0


def cleanup() -> None:
    """Remove the bridge, veths and namespaces this suite creates, by their exact names."""
    present = set(_netns_list())
    for index in range(MAX_NODES):
        if netns_name(index) in present:
            _run("ip", "netns", "del", netns_name(index), check=False)
        if _link_exists(veth_name(index)):
            _run("ip", "link", "del", veth_name(index), check=False)
    if _link_exists(BRIDGE):
        _run("ip", "link", "del", BRIDGE, check=False)


Rule = tuple[int, str, str]  # (node index, chain, peer address)


@dataclass
class Network:
    """The bridge and ``size`` node namespaces; ``cut``/``restore`` manage DROP rules.

    Rules are counted, so two overlapping faults that cut the same link each hold it and the
    link comes back only when both have ended.
    """

    size: int
    rules: Counter[Rule] = field(default_factory=Counter)

    def create(self) -> Network:
        cleanup()
        try:
            _run("ip", "link", "add", BRIDGE, "type", "bridge")
            _run("ip", "addr", "add", f"{OPERATOR_IP}/24", "dev", BRIDGE)
            _run("ip", "addr", "add", f"{CLIENT_IP}/24", "dev", BRIDGE)
            _run("ip", "link", "set", BRIDGE, "up")
            for index in range(self.size):
                netns, veth = netns_name(index), veth_name(index)
                _run("ip", "netns", "add", netns)
                _run(
                    "ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0",
                    "netns", netns,
                )  # fmt: skip
                _run("ip", "link", "set", veth, "master", BRIDGE, "up")
                _run("ip", "-n", netns, "addr", "add", f"{node_ip(index)}/24", "dev", "eth0")
                _run("ip", "-n", netns, "link", "set", "lo", "up")
                _run("ip", "-n", netns, "link", "set", "eth0", "up")
        except NetworkError:
            cleanup()
            raise
        return self

    def destroy(self) -> None:
        self.rules.clear()
        cleanup()

    @staticmethod
    def _iptables(action: str, rule: Rule) -> None:
        index, chain, peer = rule
        flag = "-d" if chain == "OUTPUT" else "-s"
        _run(*exec_prefix(index), "iptables", "-w", action, chain, flag, peer, "-j", "DROP")

    def cut(self, index: int, peer: str, *, send: bool = True, receive: bool = True) -> list[Rule]:
        """Drop what node ``index`` sends to ``peer`` and/or receives from it."""
        added = []
        for chain, wanted in (("OUTPUT", send), ("INPUT", receive)):
            if wanted:
                rule = (index, chain, peer)
                if self.rules[rule] == 0:
                    self._iptables("-A", rule)
                self.rules[rule] += 1
                added.append(rule)
        return added

    def restore(self, rules: list[Rule]) -> None:
        """Undo ``cut``s: a rule goes once no fault holds it any more."""
        for rule in rules:
            self.rules[rule] -= 1
            if self.rules[rule] <= 0:
                del self.rules[rule]
                self._iptables("-D", rule)

    def heal(self) -> None:
        """Remove every DROP rule (flush both chains of every namespace)."""
        for index in range(self.size):
            for chain in ("INPUT", "OUTPUT"):
                _run(*exec_prefix(index), "iptables", "-w", "-F", chain, check=False)
        self.rules.clear()
