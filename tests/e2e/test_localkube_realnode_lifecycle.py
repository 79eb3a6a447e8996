"""The node: pods are containers from the project's images.

These check what the earlier process kubelet could not: the image's entrypoint and non-root
user, the volume's group from ``fsGroup``, the CPU limit as the container's cgroup quota, a
Service reached through kube-proxy, and a root-owned hostPath folder that the image's user may
not write (a process-kubelet pod ran as root and wrote it). The module starts its own plane
("lifecycle" in the name: it runs before the session plane, which owns the bridge later), and
checks that stopping it leaves no container, shim, mount, cgroup or namespace.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from localkube import dns, net, procs, realnode
from localkube.build import Binaries
from localkube.netplan import NetPlan, netns_name
from localkube.nodeconfig import CLUSTER_DOMAIN, pod_in_range
from localkube.plane import Plane

from .conftest import NODE_IMAGE, TEST_IMAGES, Kubectl, leftovers, start_when_free, wait_until

pytestmark = pytest.mark.e2e

IMAGE_USER = 10001  # USER of Dockerfile.node


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "the real node needs root (network namespaces, cgroups, mounts)"
    missing = realnode.missing_tools()
    if missing:
        return missing
    if not realnode.podman_has(NODE_IMAGE):
        return f"podman has no {NODE_IMAGE} (run `make images`)"
    return None


@pytest.fixture(scope="module")
def real_plane(binaries: Binaries, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    plan = NetPlan()
    state = tmp_path_factory.mktemp("realnode")
    plane = Plane(binaries=binaries, state_dir=state, image_tags=TEST_IMAGES)
    start_when_free(plane)
    pids = dict(plane.pids)
    markers = {d: plane._marker(d) for d in pids}
    try:
        yield plane
    finally:
        plane.stop()
    assert not [d for d, pid in pids.items() if procs.alive(pid, markers[d])], "daemons left"
    assert not leftovers(plan, state), "network left behind"
    assert not list(Path("/sys/fs/cgroup").glob(f"*/{realnode.KUBEPODS}")), "pod cgroups left"
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(state) not in mounts, "mounts left under the plane's state"
    assert not procs.find(["containerd-shim", str(plane.node_paths.containerd_socket)])


@pytest.fixture(scope="module")
def kube(real_plane: Plane) -> Kubectl:
    return Kubectl(real_plane)


NODE_POD = """
apiVersion: v1
kind: Pod
metadata: {name: node, labels: {app: real-node}}
spec:
  securityContext: {fsGroup: 10001}
  containers:
    - name: node
      image: dvecdb/node:0.1.0
      ports: [{containerPort: 8080}]
      readinessProbe:
        httpGet: {path: /healthz, port: 8080}
        periodSeconds: 1
      resources:
        limits: {cpu: 500m, memory: 256Mi}
      volumeMounts: [{name: data, mountPath: /data}]
  volumes:
    - name: data
      emptyDir: {}
---
apiVersion: v1
kind: Service
metadata: {name: node}
spec:
  selector: {app: real-node}
  ports: [{port: 80, targetPort: 8080}]
"""


def _pod(kube: Kubectl, name: str) -> dict[str, object] | None:
    return kube.get("pod", name)  # type: ignore[no-any-return]


def _ready(kube: Kubectl, name: str) -> dict[str, object] | None:
    pod = kube.get("pod", name)
    conditions = (pod or {}).get("status", {}).get("conditions") or []
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
    return pod if ready else None


def _exec_python(kube: Kubectl, pod: str, code: str) -> str:
    return kube.run("exec", pod, "--", "python3", "-c", code).stdout


def test_image_entrypoint_user_fsgroup_and_cpu_limit(real_plane: Plane, kube: Kubectl) -> None:
    kube.apply(NODE_POD)
    pod = wait_until(lambda: _ready(kube, "node"), 120, "the node pod to be Ready")
    ip = pod["status"]["podIP"]  # type: ignore[index]
    assert pod_in_range(real_plane.plan, ip), ip
    # The image's entrypoint (dvecdb-node with the image's CMD) serves, reached from the host.
    with urllib.request.urlopen(f"http://{ip}:8080/healthz", timeout=5) as resp:
        assert resp.status == 200
    seen = json.loads(
        _exec_python(
            kube,
            "node",
            "import json, os\n"
            "files = [os.stat('/data/' + n) for n in os.listdir('/data')]\n"
            "print(json.dumps({'uid': os.getuid(), 'groups': os.getgroups(),\n"
            "  'data_gid': os.stat('/data').st_gid,\n"
            "  'file_owners': sorted({(f.st_uid, f.st_gid) for f in files}),\n"
            "  'quota': int(open('/sys/fs/cgroup/cpu/cpu.cfs_quota_us').read()),\n"
            "  'period': int(open('/sys/fs/cgroup/cpu/cpu.cfs_period_us').read()),\n"
            "  'memory': int(open('/sys/fs/cgroup/memory/memory.limit_in_bytes').read())}))",
        )
    )
    assert seen["uid"] == IMAGE_USER, "the container runs as the image's USER"
    assert IMAGE_USER in seen["groups"] and seen["data_gid"] == IMAGE_USER, "fsGroup on /data"
    assert seen["file_owners"], "the node wrote its data folder"
    assert all(owner == [IMAGE_USER, IMAGE_USER] for owner in seen["file_owners"]), seen
    assert seen["quota"] * 1000 // seen["period"] == 500, "cpu limit 500m as the cgroup quota"
    assert seen["memory"] == 256 * 1024 * 1024


def test_service_reaches_the_pod_through_kube_proxy(real_plane: Plane, kube: Kubectl) -> None:
    wait_until(lambda: _ready(kube, "node"), 120, "the node pod to be Ready")
    service = kube.get("service", "node")
    assert service is not None
    cluster_ip = service["spec"]["clusterIP"]
    # From inside the pod: its own Service (hairpin through the node's NAT) and the API server.
    out = _exec_python(
        kube,
        "node",
        "import os, socket, urllib.request\n"
        f"print(urllib.request.urlopen('http://{cluster_ip}:80/healthz', timeout=5).status)\n"
        "host = os.environ['KUBERNETES_SERVICE_HOST']\n"
        "socket.create_connection((host, int(os.environ['KUBERNETES_SERVICE_PORT'])), 5)\n"
        "print('api', host)",
    )
    assert out.splitlines() == ["200", f"api {real_plane.plan.kubernetes_service_ip}"]


def test_service_names_resolve_in_pods_and_from_the_host(real_plane: Plane, kube: Kubectl) -> None:
    """CoreDNS on the node: a pod reaches Services by short names (the search path the
    kubelet writes: `node.default`, `kubernetes`); the host asks CoreDNS itself
    and reaches the Service's address through the node's kube-proxy rules."""
    wait_until(lambda: _ready(kube, "node"), 120, "the node pod to be Ready")
    service = kube.get("service", "node")
    assert service is not None
    cluster_ip = service["spec"]["clusterIP"]
    out = _exec_python(
        kube,
        "node",
        "import socket, urllib.request\n"
        # (`node` alone is the pod's own hostname, in its /etc/hosts)
        "print(socket.gethostbyname('node.default'), socket.gethostbyname('kubernetes'))\n"
        "print(urllib.request.urlopen('http://node.default.svc/healthz', timeout=5).status)\n"
        "try:\n"
        "    socket.gethostbyname('missing')\n"
        "except socket.gaierror:\n"
        "    print('missing: no such name')",
    )
    api = real_plane.plan.kubernetes_service_ip
    assert out.splitlines() == [f"{cluster_ip} {api}", "200", "missing: no such name"]
    name = f"node.default.svc.{CLUSTER_DOMAIN}"
    assert dns.resolve(real_plane.dns_server, name) == [cluster_ip]
    assert dns.resolve(real_plane.dns_server, f"missing.default.svc.{CLUSTER_DOMAIN}") == []
    with urllib.request.urlopen(f"http://{cluster_ip}:80/healthz", timeout=5) as resp:
        assert resp.status == 200


def test_root_owned_host_folder_is_not_writable_by_the_image_user(
    real_plane: Plane, kube: Kubectl, tmp_path: Path
) -> None:
    """A process-kubelet pod runs as root and writes here; the image's user cannot."""
    folder = tmp_path / "root-owned"
    folder.mkdir(mode=0o755)
    manifest = f"""
apiVersion: v1
kind: Pod
metadata: {{name: writer}}
spec:
  restartPolicy: Never
  containers:
    - name: writer
      image: localkube-test/python:1
      command: ["python3", "-c"]
      args:
        - |
          import os
          try:
              open("/mnt/out", "w").write("x")
              print("wrote as", os.getuid())
          except PermissionError as err:
              print("denied as", os.getuid(), err.strerror)
      volumeMounts: [{{name: host, mountPath: /mnt}}]
  volumes:
    - name: host
      hostPath: {{path: {folder}, type: Directory}}
"""
    kube.apply(manifest)
    done = wait_until(
        lambda: (
            (p := _pod(kube, "writer"))
            and p["status"].get("phase") in ("Succeeded", "Failed")  # type: ignore[index,union-attr]
            and p
        ),
        120,
        "the writer pod to finish",
    )
    assert done["status"]["phase"] == "Succeeded"  # type: ignore[index]
    log = kube.run("logs", "writer").stdout.strip()
    assert log == f"denied as {IMAGE_USER} Permission denied", log
    assert not (folder / "out").exists()


def _healthz(ip: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{ip}:8080/healthz", timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def test_pod_namespace_by_uid_and_a_partition_by_link(real_plane: Plane, kube: Kubectl) -> None:
    """The harness's tools work unchanged: `lk-<uid>` names the pod's namespace, and taking
    its link down (the node-side veth) cuts it off until it is brought up again."""
    pod = wait_until(lambda: _ready(kube, "node"), 120, "the node pod to be Ready")
    uid, ip = pod["metadata"]["uid"], pod["status"]["podIP"]  # type: ignore[index]
    netns = netns_name(uid)
    wait_until(lambda: netns in net.list_netns(), 30, f"{netns} for the pod")
    inside = subprocess.run(
        ["ip", "-n", netns, "-o", "-4", "addr", "show", "eth0"], capture_output=True, text=True
    )
    assert f"inet {ip}/" in inside.stdout, inside
    assert _healthz(ip)
    net.set_link(uid, up=False)
    try:
        wait_until(lambda: not _healthz(ip), 10, "the pod to be cut off")
    finally:
        net.set_link(uid, up=True)
    wait_until(lambda: _healthz(ip), 30, "the pod to be reachable again")
