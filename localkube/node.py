"""The kubelet's Node object and its scheduling duty (localkube has no kube-scheduler).

There is one node, so scheduling is binding every pending pod whose nodeSelector it matches.
Affinity and anti-affinity are not evaluated (with one node a required anti-affinity could
never be met, and the tests want every member running).
"""

from __future__ import annotations

import os
import platform
from typing import Any

from localkube.container import now
from localkube.kubeclient import ApiError, KubeClient

Json = dict[str, Any]

SCHEDULER_NAMES = {"", "default-scheduler", "localkube"}


def allocatable() -> dict[str, str]:
    """What the node offers: this machine's cores and memory, 110 pods like a default kubelet."""
    pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return {
        "cpu": str(os.cpu_count() or 1),
        "memory": f"{pages // 1024}Ki",
        "pods": "110",
        "ephemeral-storage": "100Gi",
    }


def labels(name: str) -> dict[str, str]:
    return {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": {"x86_64": "amd64", "aarch64": "arm64"}.get(
            platform.machine(), platform.machine()
        ),
        "node.localkube.dvecdb.io/process-kubelet": "true",
    }


def node_status(name: str, ip: str, resources: dict[str, str], version: str) -> Json:
    stamp = now()

    def condition(kind: str, ok: bool, reason: str, message: str) -> Json:
        return {
            "type": kind,
            "status": "True" if ok else "False",
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": stamp,
            "lastTransitionTime": stamp,
        }

    return {
        "conditions": [
            condition("Ready", True, "KubeletReady", "localkube process kubelet is posting ready"),
            condition("MemoryPressure", False, "KubeletHasSufficientMemory", "ok"),
            condition("DiskPressure", False, "KubeletHasNoDiskPressure", "ok"),
            condition("PIDPressure", False, "KubeletHasSufficientPID", "ok"),
        ],
        "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
        "capacity": resources,
        "allocatable": resources,
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
        "nodeInfo": {
            "machineID": "",
            "systemUUID": "",
            "bootID": "",
            "kernelVersion": platform.release(),
            "osImage": "localkube process kubelet",
            "containerRuntimeVersion": "localkube://processes",
            "kubeletVersion": version,
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": labels(name)["kubernetes.io/arch"],
        },
    }


async def register(
    client: KubeClient, name: str, ip: str, resources: dict[str, str], version: str
) -> None:
    """Create (or adopt) the Node, mark it Ready and drop the not-ready taint admission added."""
    body = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels(name)}}
    try:
        await client.create("/api/v1/nodes", body)
    except ApiError as err:
        if err.status != 409:
            raise
    await heartbeat(client, name, ip, resources, version)
    await client.merge_patch(f"/api/v1/nodes/{name}", {"spec": {"taints": None}})


async def heartbeat(
    client: KubeClient, name: str, ip: str, resources: dict[str, str], version: str
) -> None:
    status = node_status(name, ip, resources, version)
    await client.merge_patch(f"/api/v1/nodes/{name}/status", {"status": status})


def schedulable(pod: Json, node_labels: dict[str, str]) -> bool:
    """Pending, not ours to ignore, and its nodeSelector matches the node."""
    spec, meta = pod.get("spec", {}), pod.get("metadata", {})
    if spec.get("nodeName") or meta.get("deletionTimestamp"):
        return False
    if spec.get("schedulerName", "") not in SCHEDULER_NAMES:
        return False
    selector = spec.get("nodeSelector") or {}
    return all(node_labels.get(k) == v for k, v in selector.items())


async def bind(client: KubeClient, pod: Json, node: str) -> None:
    meta = pod["metadata"]
    body = {
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"]},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    }
    await client.create(f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/binding", body)
