"""Pure decisions about pod networking: address plan, interface names, address allocation.

The harness owns one /24 (10.213.0.0/24 by default). Its lower half is the bridge's subnet
(the bridge address plus pod addresses); its upper half is the service-cluster-ip-range, which
only exists inside the API server: there is no kube-proxy, so nothing is ever sent to it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

NETNS_PREFIX = "lk-"
VETH_PREFIX = "lkv"
IFNAME_MAX = 15  # Linux IFNAMSIZ - 1


@dataclass(frozen=True)
class NetPlan:
    """Addresses and names of one plane's network."""

    bridge: str = "dvk0"
    block: str = "10.213.0.0/24"

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.block)

    @property
    def pod_subnet(self) -> ipaddress.IPv4Network:
        return next(self.network.subnets(prefixlen_diff=1))

    @property
    def service_cidr(self) -> str:
        return str(list(self.network.subnets(prefixlen_diff=1))[1])

    @property
    def bridge_ip(self) -> str:
        return str(self.pod_subnet.network_address + 1)

    @property
    def bridge_cidr(self) -> str:
        return f"{self.bridge_ip}/{self.pod_subnet.prefixlen}"

    @property
    def kubernetes_service_ip(self) -> str:
        """The first service address, which the API server gives the `kubernetes` Service."""
        return str(ipaddress.IPv4Network(self.service_cidr).network_address + 1)

    def pod_cidr(self, ip: str) -> str:
        return f"{ip}/{self.pod_subnet.prefixlen}"

    def pod_addresses(self) -> list[str]:
        """Every address a pod may get: the subnet's hosts without the bridge's."""
        return [str(h) for h in self.pod_subnet.hosts() if str(h) != self.bridge_ip]


def allocate_ip(plan: NetPlan, used: set[str]) -> str:
    """Lowest free pod address; raises when the subnet is full."""
    for candidate in plan.pod_addresses():
        if candidate not in used:
            return candidate
    raise RuntimeError(f"pod subnet {plan.pod_subnet} is full ({len(used)} addresses in use)")


def netns_name(pod_uid: str) -> str:
    """Network namespace of one pod: from its UID, so it is found again after a crash."""
    return NETNS_PREFIX + pod_uid.replace("-", "")[:16]


def veth_name(pod_uid: str) -> str:
    """Host side of the pod's veth pair; the pod side is always `eth0`."""
    name = VETH_PREFIX + pod_uid.replace("-", "")
    return name[:IFNAME_MAX]
