"""NetworkPolicy enforcement on the real node (opt-in): kube-router's firewall, and what to
remove when it stops on a running plane.

kube-router runs with only its network policy controller (``--run-firewall``; its router and
service proxy stay off, kube-proxy keeps the Services) inside the node's network namespace,
like kube-proxy: the pods' veths and the CNI bridge are there, and bridged pod-to-pod packets
pass iptables because br_netfilter's ``bridge-nf-call-iptables`` is on in every namespace. It
programs filter chains (``KUBE-ROUTER-*``, ``KUBE-POD-FW-*``, ``KUBE-NWPLCY-*``) and ipsets
(``KUBE-SRC-*``, ``KUBE-DST-*``) there. The teardown deletes the namespace and all of them with
it; ``cleanup_script`` and ``firewall_sets`` say what to remove when only the enforcer stops
(the plane, kube-proxy's chains included, keeps running).

The decisions are here; ``realnode`` runs them.
"""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

from localkube.netplan import NetPlan

CHAIN_PREFIXES = ("KUBE-ROUTER-", "KUBE-POD-FW-", "KUBE-NWPLCY-")
SET_PREFIXES = ("KUBE-SRC-", "KUBE-DST-")
# The built-in chains kube-router hooks, and the chain each one jumps to first.
HOOKS = {
    "INPUT": "KUBE-ROUTER-INPUT",
    "FORWARD": "KUBE-ROUTER-FORWARD",
    "OUTPUT": "KUBE-ROUTER-OUTPUT",
}
# kube-proxy's forwarding chain: its jump from FORWARD is made by kube-proxy's first sync.
PROXY_FORWARD = "KUBE-FORWARD"
# kube-router's resync period; it also resyncs at once on every pod/policy/namespace event.
SYNC_PERIOD = "30s"
# The commands kube-router runs (iptables through go-iptables, ipset by name).
TOOLS = ("ipset", "iptables", "iptables-save", "iptables-restore")


def firewall_args(binary: Path, plan: NetPlan, kubeconfig: Path, node_name: str) -> list[str]:
    """kube-router's command line: the firewall alone, no health or metrics listener."""
    return [
        str(binary),
        f"--kubeconfig={kubeconfig}",
        f"--hostname-override={node_name}",
        "--run-firewall=true",
        "--run-router=false",
        "--run-service-proxy=false",
        f"--service-cluster-ip-range={plan.service_cidr}",
        f"--iptables-sync-period={SYNC_PERIOD}",
        "--health-port=0",
        "--metrics-port=0",
        "--v=1",
    ]


def is_firewall_chain(name: str) -> bool:
    return name.startswith(CHAIN_PREFIXES)


def firewall_sets(set_names: list[str]) -> list[str]:
    """The ipsets kube-router made, from `ipset list -n`."""
    return [name for name in set_names if name.startswith(SET_PREFIXES)]


def _filter_lines(save_text: str) -> list[str]:
    """The lines of the filter table in `iptables-save` output."""
    lines, inside = [], False
    for line in save_text.splitlines():
        if line.startswith("*"):
            inside = line == "*filter"
        elif inside and line == "COMMIT":
            inside = False
        elif inside:
            lines.append(line)
    return lines


def firewall_chains(save_text: str) -> list[str]:
    """kube-router's chains in the filter table of `iptables-save` output."""
    chains = [line[1:].split()[0] for line in _filter_lines(save_text) if line.startswith(":")]
    return [chain for chain in chains if is_firewall_chain(chain)]


def _jumps_to_firewall(rule: str) -> bool:
    words = rule.split()
    return any(
        flag in ("-j", "-g", "--jump", "--goto") and is_firewall_chain(target)
        for flag, target in pairwise(words)
    )


def _first_jumps(save_text: str) -> dict[str, str | None]:
    """Each built-in chain's first rule's target (None when the chain has no rule)."""
    first: dict[str, str | None] = dict.fromkeys(HOOKS)
    for line in _filter_lines(save_text):
        words = line.split()
        if words[:1] == ["-A"] and words[1] in first and first[words[1]] is None:
            first[words[1]] = words[words.index("-j") + 1] if "-j" in words else ""
    return first


def proxy_synced(save_text: str) -> bool:
    """kube-proxy made its jumps (it prepends them once, on its first sync)."""
    return any(
        line.startswith("-A FORWARD ") and line.split()[-1] == PROXY_FORWARD
        for line in _filter_lines(save_text)
    )


def enforcing(save_text: str) -> bool:
    """kube-router's chains come first in INPUT, FORWARD and OUTPUT. Behind kube-proxy's
    KUBE-FORWARD, which accepts packets marked for masquerading (every Service packet here:
    `masqueradeAll`), a pod reaching a member through a Service would bypass the policy;
    kube-router puts its jumps back at the top on each full sync."""
    return _first_jumps(save_text) == HOOKS


def cleanup_script(save_text: str) -> str | None:
    """An `iptables-restore --noflush` script that removes kube-router's rules and chains from
    the filter table and touches nothing else (kube-proxy's rules stay); None when none left.

    The jumps into its chains from other chains (INPUT, FORWARD, OUTPUT) go first, then its
    chains are flushed (which drops the jumps between them), then deleted."""
    chains = firewall_chains(save_text)
    if not chains:
        return None
    script = ["*filter"]
    for line in _filter_lines(save_text):
        words = line.split()
        if words[:1] == ["-A"] and not is_firewall_chain(words[1]) and _jumps_to_firewall(line):
            script.append("-D" + line[2:])
    script += [f"-F {chain}" for chain in chains]
    script += [f"-X {chain}" for chain in chains]
    script.append("COMMIT")
    return "\n".join(script) + "\n"


def leftovers(save_text: str, set_names: list[str]) -> list[str]:
    """What of kube-router's state a namespace still holds (empty once cleaned up)."""
    chains = [f"chain {c}" for c in firewall_chains(save_text)]
    jumps = [
        f"rule {line}"
        for line in _filter_lines(save_text)
        if line.startswith("-A ")
        and not is_firewall_chain(line.split()[1])
        and _jumps_to_firewall(line)
    ]
    return chains + jumps + [f"ipset {s}" for s in firewall_sets(set_names)]
