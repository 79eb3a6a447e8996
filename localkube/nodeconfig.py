"""Pure decisions of the real node: its addresses and the config files of its daemons.

The node is what kind runs inside its node container: containerd
with runc, the CNI bridge plugin, the kubelet and kube-proxy. Here the "container" is a network
namespace (``lk-node``) joined to the harness's bridge by a veth, so kube-proxy's iptables
rules, the node's IP forwarding and its CNI bridge live in that namespace and vanish with it;
the host keeps one route to the pods' range through the node's address.

Addresses, inside the harness's /24 (10.213.0.0/24 by default): the bridge's half (/25) holds the
bridge (.1, the API server) and the node (.2); its upper /26 is the pods' range (.64/26), routed
by the host through the node; the upper /25 stays the service range.
"""

from __future__ import annotations

import ipaddress
import json
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from localkube.netplan import NETNS_PREFIX, VETH_PREFIX, NetPlan

NODE_NETNS = NETNS_PREFIX + "node"
NODE_VETH = VETH_PREFIX + "-node"
CNI_BRIDGE = "lkcni0"
CNI_NETWORK = "localkube"
SANDBOX_IMAGE = "localkube/pause:" + "1"
CONTAINERD_NAMESPACE = "k8s.io"


CLUSTER_DOMAIN = "cluster.local"


def node_ip(plan: NetPlan) -> str:
    """The node's address on the harness bridge: the one after the bridge's."""
    return str(plan.pod_subnet.network_address + 2)


def pod_cidr(plan: NetPlan) -> str:
    """The pods' range: the upper half of the bridge's subnet, routed through the node."""
    return str(list(plan.pod_subnet.subnets(prefixlen_diff=1))[1])


def pod_in_range(plan: NetPlan, ip: str) -> bool:
    return ipaddress.IPv4Address(ip) in ipaddress.IPv4Network(pod_cidr(plan))


@dataclass(frozen=True)
class NodePaths:
    """Where one plane's node keeps its state (all under the plane's state dir)."""

    root: Path

    @property
    def containerd_config(self) -> Path:
        return self.root / "containerd" / "config.toml"

    @property
    def containerd_root(self) -> Path:
        return self.root / "containerd" / "root"

    @property
    def containerd_state(self) -> Path:
        return self.root / "containerd" / "state"

    @property
    def containerd_socket(self) -> Path:
        return self.root / "containerd" / "containerd.sock"

    @property
    def runc_root(self) -> Path:
        return self.root / "containerd" / "runc"

    @property
    def cni_conf_dir(self) -> Path:
        return self.root / "cni" / "conf"

    @property
    def cni_ipam_dir(self) -> Path:
        return self.root / "cni" / "ipam"

    @property
    def kubelet_root(self) -> Path:
        return self.root / "kubelet"

    @property
    def pod_logs(self) -> Path:
        return self.root / "pod-logs"

    @property
    def kubelet_config(self) -> Path:
        return self.root / "kubelet.yaml"

    @property
    def proxy_config(self) -> Path:
        return self.root / "kube-proxy.yaml"

    @property
    def corefile(self) -> Path:
        return self.root / "Corefile"

    @property
    def images(self) -> Path:
        return self.root / "images"


def _toml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def containerd_config(paths: NodePaths, cni_bin_dir: Path, runc: str) -> str:
    """containerd's config: CRI with runc (cgroupfs), the CNI plugins, the local pause image.

    ``restrict_oom_score_adj``: this machine gives no CAP_SYS_RESOURCE, so a container asking
    for an oom_score_adj below containerd's own (the kubelet gives Guaranteed pods -997) fails
    in runc with "can't get final child's PID from pipe: EOF"; the flag clamps it instead.
    """
    runtime = "plugins.'io.containerd.cri.v1.runtime'"
    images = "plugins.'io.containerd.cri.v1.images'"
    return "\n".join(
        [
            "version = 3",
            f"root = {_toml_str(str(paths.containerd_root))}",
            f"state = {_toml_str(str(paths.containerd_state))}",
            "[grpc]",
            f"  address = {_toml_str(str(paths.containerd_socket))}",
            "[ttrpc]",
            f"  address = {_toml_str(str(paths.containerd_socket) + '.ttrpc')}",
            "[metrics]",
            '  address = ""',
            f"[{runtime}]",
            "  restrict_oom_score_adj = true",
            "  netns_mounts_under_state_dir = true",
            f"[{runtime}.containerd]",
            "  default_runtime_name = 'runc'",
            f"[{runtime}.containerd.runtimes.runc]",
            "  runtime_type = 'io.containerd.runc.v2'",
            f"[{runtime}.containerd.runtimes.runc.options]",
            f"  BinaryName = {_toml_str(runc)}",
            f"  Root = {_toml_str(str(paths.runc_root))}",
            "  SystemdCgroup = false",
            f"[{runtime}.cni]",
            f"  bin_dirs = [{_toml_str(str(cni_bin_dir))}]",
            f"  conf_dir = {_toml_str(str(paths.cni_conf_dir))}",
            f"[{images}]",
            "  snapshotter = 'overlayfs'",
            f"[{images}.pinned_images]",
            f"  sandbox = {_toml_str(SANDBOX_IMAGE)}",
            "",
        ]
    )


def cni_conflist(plan: NetPlan, paths: NodePaths) -> str:
    """Pods on the node's own bridge, the node as their gateway, hairpin for Services."""
    config = {
        "cniVersion": "1.0.0",
        "name": CNI_NETWORK,
        "plugins": [
            {
                "type": "bridge",
                "bridge": CNI_BRIDGE,
                "isGateway": True,
                "isDefaultGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": pod_cidr(plan)}]],
                    "dataDir": str(paths.cni_ipam_dir),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }
    return json.dumps(config, indent=2)


def kubelet_config(plan: NetPlan, paths: NodePaths) -> str:
    """KubeletConfiguration for this host: cgroup v1 (hybrid) allowed, cgroupfs driver.

    The API server reaches the kubelet with no client certificate, so anonymous requests are
    allowed (the port listens only on the node's address inside the harness's range). Eviction
    thresholds are low: the machine's disk is shared and the tests must not be evicted.
    """
    config = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "containerRuntimeEndpoint": f"unix://{paths.containerd_socket}",
        "address": node_ip(plan),
        "port": 10250,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",  # the node namespace's own loopback
        "healthzPort": 10248,
        "authentication": {
            "anonymous": {"enabled": True},
            "webhook": {"enabled": False},
            "x509": {},
        },
        "authorization": {"mode": "AlwaysAllow"},
        "clusterDomain": CLUSTER_DOMAIN,
        # CoreDNS listens on the node's address (pods reach it through their gateway).
        "clusterDNS": [node_ip(plan)],
        "resolvConf": "",
        "failSwapOn": False,
        "podLogsDir": str(paths.pod_logs),
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": False,
        # Secret and ConfigMap volumes follow their object at the pod's next sync (the tests
        # bound a key rotation to 10 s; the default minute is for big nodes, and
        # LOCALKUBE_KUBELET_SYNC_FREQUENCY=1m measures what a default kubelet does).
        "syncFrequency": os.environ.get("LOCALKUBE_KUBELET_SYNC_FREQUENCY", "3s"),
        "fileCheckFrequency": "10s",
        "nodeStatusUpdateFrequency": "5s",
    }
    return str(yaml.safe_dump(config, sort_keys=False))


def proxy_config(plan: NetPlan, kubeconfig: Path, node_name: str) -> str:
    """kube-proxy in iptables mode inside the node namespace.

    ``masqueradeAll``: a pod reaching a Service whose endpoint is on the same bridge would
    otherwise get the reply straight from the endpoint's address. Conntrack sizes are global
    (not per namespace) and stay as the host has them.
    """
    config = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "mode": "iptables",
        "clusterCIDR": pod_cidr(plan),
        "hostnameOverride": node_name,
        "bindAddress": node_ip(plan),
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        "nodePortAddresses": [f"{node_ip(plan)}/32"],
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
        "iptables": {"masqueradeAll": True},
    }
    return str(yaml.safe_dump(config, sort_keys=False))


def corefile(plan: NetPlan, kubeconfig: Path) -> str:
    """CoreDNS on the node's address: Service and pod names of the cluster domain, read from
    the API server; anything else is refused (no upstream: the machine has no resolver to
    forward to that pods may use)."""
    return "\n".join(
        [
            f"{CLUSTER_DOMAIN}:53 {{",
            f"    bind {node_ip(plan)}",
            "    errors",
            "    cache 5",
            f"    kubernetes {CLUSTER_DOMAIN} {{",
            f"        kubeconfig {kubeconfig} localkube",
            "        pods insecure",
            "        ttl 5",
            "    }",
            "}",
            "",
        ]
    )


def image_aliases(tags: dict[str, str]) -> dict[str, str]:
    """The reference a pod names (normalised as the CRI does) -> the local image it is.

    ``dvecdb/node:0.1.0`` -> ``docker.io/dvecdb/node:0.1.0``; a name with a registry host keeps
    it. The kubelet and containerd look images up by the normalised name.
    """
    return {normalise(alias): source for alias, source in tags.items()}


def normalise(ref: str) -> str:
    name, _, tag = ref.rpartition(":") if ":" in ref.rsplit("/", 1)[-1] else (ref, "", "latest")
    first = name.split("/", 1)[0]
    if "/" not in name:
        name = f"docker.io/library/{name}"
    elif not ("." in first or ":" in first or first == "localhost"):
        name = f"docker.io/{name}"
    return f"{name}:{tag}"
