"""Pure decisions about the harness's network: the address plan and names.

The harness owns one /24 (10.213.0.0/24 by default). Its lower half is the bridge's subnet
(the bridge and API server .1, the node .2, the pods' range .64/26 behind the node:
``nodeconfig``); its upper half is the service-cluster-ip-range, served by kube-proxy inside
the node's namespace.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

NETNS_PREFIX = "lk-"
VETH_PREFIX = "lkv"


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


def netns_name(pod_uid: str) -> str:
    """Network namespace of one pod: from its UID, so it is found again after a crash."""
    return NETNS_PREFIX + pod_uid.replace("-", "")[:16]
