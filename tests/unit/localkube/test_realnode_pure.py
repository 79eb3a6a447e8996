"""Pure decisions of the real node: addresses, config files, image names, the pause image,
the build flags and the node's own cache key."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import struct
import tarfile
import tomllib
from pathlib import Path

import pytest
import yaml

from localkube import containerpid, dns, netplan, nodeconfig, ociimage, podnetns, versions
from localkube.build import build_flags
from localkube.netplan import NetPlan

pytestmark = pytest.mark.unit

PLAN = NetPlan()
PATHS = nodeconfig.NodePaths(Path("/state/node"))


def test_node_and_pods_sit_in_the_bridge_half_apart_from_services() -> None:
    assert nodeconfig.node_ip(PLAN) == "10.213.0.2"
    assert nodeconfig.pod_cidr(PLAN) == "10.213.0.64/26"
    assert nodeconfig.pod_in_range(PLAN, "10.213.0.66")
    assert not nodeconfig.pod_in_range(PLAN, PLAN.bridge_ip)
    assert not nodeconfig.pod_in_range(PLAN, nodeconfig.node_ip(PLAN))
    assert not nodeconfig.pod_in_range(PLAN, PLAN.kubernetes_service_ip)
    # Swept by the harness's crash cleanup, like the pods' namespaces.
    assert nodeconfig.NODE_NETNS.startswith("lk-") and nodeconfig.NODE_VETH.startswith("lkv")


def test_containerd_config_runs_runc_with_cgroupfs_and_clamps_oom_score() -> None:
    text = nodeconfig.containerd_config(PATHS, Path("/cache/bin"), "/usr/sbin/runc")
    config = tomllib.loads(text)
    runtime = config["plugins"]["io.containerd.cri.v1.runtime"]
    runc = runtime["containerd"]["runtimes"]["runc"]
    assert runc["options"]["BinaryName"] == "/usr/sbin/runc"
    assert runc["options"]["SystemdCgroup"] is False
    assert runc["options"]["Root"] == "/state/node/containerd/runc"
    assert runtime["restrict_oom_score_adj"] is True
    assert runtime["cni"]["bin_dirs"] == ["/cache/bin"]
    images = config["plugins"]["io.containerd.cri.v1.images"]
    assert images["pinned_images"]["sandbox"] == nodeconfig.SANDBOX_IMAGE
    assert config["grpc"]["address"] == "/state/node/containerd/containerd.sock"
    assert config["root"].startswith("/state/node/") and config["state"].startswith("/state/")


def test_cni_hands_out_the_pod_range_on_the_node_bridge() -> None:
    conflist = json.loads(nodeconfig.cni_conflist(PLAN, PATHS))
    bridge, portmap = conflist["plugins"]
    assert bridge["type"] == "bridge" and bridge["isDefaultGateway"] and bridge["hairpinMode"]
    assert bridge["ipam"]["ranges"] == [[{"subnet": "10.213.0.64/26"}]]
    assert bridge["ipam"]["dataDir"] == "/state/node/cni/ipam"
    assert portmap["type"] == "portmap"


def test_kubelet_allows_cgroup_v1_with_cgroupfs_on_the_node_address() -> None:
    config = yaml.safe_load(nodeconfig.kubelet_config(PLAN, PATHS))
    assert config["failCgroupV1"] is False and config["cgroupDriver"] == "cgroupfs"
    assert config["address"] == "10.213.0.2"
    assert config["containerRuntimeEndpoint"] == "unix:///state/node/containerd/containerd.sock"
    assert config["podLogsDir"] == "/state/node/pod-logs"


def test_kube_proxy_masquerades_inside_the_pod_range() -> None:
    config = yaml.safe_load(nodeconfig.proxy_config(PLAN, Path("/k"), "localkube"))
    assert config["mode"] == "iptables" and config["iptables"]["masqueradeAll"] is True
    assert config["clusterCIDR"] == "10.213.0.64/26"
    assert config["conntrack"]["maxPerCore"] == 0  # global sysctls stay as the host has them


@pytest.mark.parametrize(
    ("ref", "normalised"),
    [
        ("dvecdb/node:0.1.0", "docker.io/dvecdb/node:0.1.0"),
        ("busybox", "docker.io/library/busybox:latest"),
        ("localhost/dvecdb/node:0.1.0", "localhost/dvecdb/node:0.1.0"),
        ("registry.example:5000/a/b:1", "registry.example:5000/a/b:1"),
        ("localkube/pause:1", "docker.io/localkube/pause:1"),
    ],
)
def test_image_names_are_normalised_as_the_cri_does(ref: str, normalised: str) -> None:
    assert nodeconfig.normalise(ref) == normalised


def test_pause_archive_is_a_deterministic_oci_layout() -> None:
    binary = b"\x7fELF pretend"
    archive = ociimage.image_archive(binary, "localkube/pause:1")
    assert archive == ociimage.image_archive(binary, "localkube/pause:1")
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    index = json.loads(files["index.json"])
    (entry,) = index["manifests"]
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == "localkube/pause:1"
    manifest = json.loads(files["blobs/sha256/" + entry["digest"].split(":")[1]])
    for blob in [manifest["config"], *manifest["layers"]]:
        data = files["blobs/sha256/" + blob["digest"].split(":")[1]]
        assert hashlib.sha256(data).hexdigest() == blob["digest"].split(":")[1]
        assert len(data) == blob["size"]
    layer = gzip.decompress(files["blobs/sha256/" + manifest["layers"][0]["digest"][7:]])
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        (member,) = tar.getmembers()
        assert member.name == "pause" and member.mode == 0o755
        assert tar.extractfile(member).read() == binary  # type: ignore[union-attr]
    config = json.loads(files["blobs/sha256/" + manifest["config"]["digest"][7:]])
    assert config["config"]["Entrypoint"] == ["/pause"]
    assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(layer).hexdigest()]


def test_build_flags_merge_tags_and_version_stamps() -> None:
    node = next(c for c in versions.NODE_COMPONENTS if c.name == "kubernetes-node")
    flags = build_flags(node)
    (ldflags,) = [f for f in flags if f.startswith("-ldflags=")]
    assert ldflags.startswith("-ldflags=-s -w -X ")
    assert f"version.gitVersion=v{versions.KUBERNETES_VERSION}" in ldflags
    containerd = next(c for c in versions.NODE_COMPONENTS if c.name == "containerd")
    assert "-tags=no_btrfs,no_devmapper,no_zfs" in build_flags(containerd)
    plane = versions.COMPONENTS[0]
    assert build_flags(plane) == list(versions.BUILD_FLAGS)


def test_node_key_is_its_own_and_leaves_the_plane_key_alone(tmp_path: Path) -> None:
    root = tmp_path / "go"
    for component in (*versions.COMPONENTS, *versions.NODE_COMPONENTS):
        folder = root / component.module_dir
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "go.mod").write_text(f"module {component.name}\n")
    plane_before = versions.cache_key("go1.26", root)
    node_before = versions.node_cache_key("go1.26", root)
    assert node_before.startswith("node-k8s-") and node_before != plane_before
    (root / "containerd" / "go.sum").write_text("a pin moved\n")
    assert versions.cache_key("go1.26", root) == plane_before
    assert versions.node_cache_key("go1.26", root) != node_before


def _sandbox(uid: str, path: str) -> dict[str, object]:
    return {
        "Labels": {"io.kubernetes.pod.uid": uid, "io.cri-containerd.kind": "sandbox"},
        "Spec": {"linux": {"namespaces": [{"type": "pid"}, {"type": "network", "path": path}]}},
    }


def test_pod_namespaces_are_named_by_uid_and_unnamed_when_gone(tmp_path: Path) -> None:
    state = tmp_path / "node"
    netns_dir = tmp_path / "netns"
    netns_dir.mkdir()
    (netns_dir / "lk-someoneelse").write_text("")  # another plane's entry: never touched
    sandboxes = {"s1": _sandbox("aaaa-1", f"{state}/netns/cni-1")}

    def ctr(*args: str) -> str:
        if args[:2] == ("containers", "ls"):
            return "\n".join(sandboxes)
        return json.dumps(sandboxes[args[2]])

    linker = podnetns.Linker(ctr, state, netns_dir)
    linker.sync()
    link = netns_dir / netplan.netns_name("aaaa-1")
    assert link.is_symlink() and str(link.readlink()) == f"{state}/netns/cni-1"
    # The pod's sandbox is made again (new namespace): the name follows it.
    sandboxes = {"s2": _sandbox("aaaa-1", f"{state}/netns/cni-2")}
    linker.sync()
    assert str(link.readlink()) == f"{state}/netns/cni-2"
    sandboxes = {}
    linker.sync()
    assert not link.is_symlink()
    assert (netns_dir / "lk-someoneelse").exists()
    assert podnetns.sandbox_netns({"Labels": {}, "Spec": {}}) is None


def test_host_pid_from_the_container_id(tmp_path: Path) -> None:
    assert containerpid.host_pid("localkube://4242") is None  # the old process kubelet's
    assert containerpid.host_pid("docker://abc") is None
    folder = tmp_path / "pids" / "kubepods" / "besteffort" / "podu1" / "abc123"
    folder.mkdir(parents=True)
    # The container's init is the one whose parent is outside the folder (here: our parent).
    (folder / "cgroup.procs").write_text(f"{os.getpid()}\n{os.getppid()}\n")
    assert containerpid.host_pid("containerd://abc123", tmp_path) == os.getppid()
    assert containerpid.host_pid("containerd://gone", tmp_path) is None


def test_dns_query_and_answer_round_trip() -> None:
    query = dns.encode_query("demo-rw.ns.svc.cluster.local", 0x1234)
    assert query[:2] == b"\x12\x34" and b"\x07demo-rw\x02ns\x03svc" in query
    assert query.endswith(b"\x00\x00\x01\x00\x01")  # root label, type A, class IN
    # A reply: the question echoed, then two A records whose names point back at it (0xc00c).
    header = struct.pack("!HHHHHH", 0x1234, 0x8580, 1, 2, 0, 0)
    records = b"".join(
        b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 5, 4) + bytes(ip)
        for ip in ((10, 213, 0, 140), (10, 213, 0, 141))
    )
    reply = header + query[12:] + records
    assert dns.decode_answers(reply, 0x1234) == ["10.213.0.140", "10.213.0.141"]
    assert dns.decode_answers(reply, 0x9999) is None  # not our question
    nxdomain = struct.pack("!HHHHHH", 0x1234, 0x8583, 1, 0, 0, 0) + query[12:]
    assert dns.decode_answers(nxdomain, 0x1234) is None


def test_corefile_serves_the_cluster_domain_on_the_node_address(tmp_path: Path) -> None:
    plan = NetPlan()
    text = nodeconfig.corefile(plan, tmp_path / "kubeconfig")
    assert text.startswith("cluster.local:53 {")
    assert "bind 10.213.0.2" in text and f"kubeconfig {tmp_path / 'kubeconfig'} localkube" in text
    config = yaml.safe_load(nodeconfig.kubelet_config(plan, nodeconfig.NodePaths(tmp_path)))
    assert config["clusterDNS"] == ["10.213.0.2"] and config["clusterDomain"] == "cluster.local"
