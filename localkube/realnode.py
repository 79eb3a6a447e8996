"""The real node's I/O: its network namespace, config files, daemons' command lines, images,
and a teardown that leaves nothing (containers, shims, mounts, cgroups, namespaces).

The decisions (addresses, config contents) are in ``nodeconfig``; the plane calls these in
order: ``setup_network``, ``write_configs``, start containerd, ``load_images``, start the
kubelet, kube-proxy, the scheduler and CoreDNS; on stop, the daemons end first, ``teardown``
after.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from localkube import net, netpolicy, procs
from localkube.build import Binaries
from localkube.netplan import NetPlan
from localkube.nodeconfig import (
    CONTAINERD_NAMESPACE,
    NODE_NETNS,
    NODE_VETH,
    SANDBOX_IMAGE,
    NodePaths,
    cni_conflist,
    containerd_config,
    corefile,
    kubelet_config,
    node_ip,
    normalise,
    pod_cidr,
    proxy_config,
)
from localkube.ociimage import write_archive

CGROUP_ROOT = Path("/sys/fs/cgroup")
KUBEPODS = "kubepods"
PODMAN = ("podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs")

# Image a pod names -> image in podman's local storage (built by `make images`).
DEFAULT_IMAGE_TAGS: dict[str, str] = {
    "dvecdb/node:0.1.0": "localhost/dvecdb/node:0.1.0",
    "dvecdb/operator:0.1.0": "localhost/dvecdb/operator:0.1.0",
    "dvecdb/router:0.1.0": "localhost/dvecdb/router:0.1.0",
}


class NodeError(RuntimeError):
    """The real node cannot run here; the message says which step failed and why."""


def missing_tools() -> str | None:
    """None when this machine has what the real node needs, else what is missing."""
    absent = [tool for tool in ("runc", "podman", "nsenter", "iptables") if not shutil.which(tool)]
    if absent:
        return f"the real node needs {', '.join(absent)} (apt-get install runc podman iptables)"
    if not (CGROUP_ROOT / "cpu").is_dir() and not (CGROUP_ROOT / "cgroup.controllers").exists():
        return "no cgroup file system at /sys/fs/cgroup"
    return None


def _run(*argv: str, timeout: float = 120) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        raise NodeError(f"{' '.join(argv)}: {(result.stderr or result.stdout).strip()}")
    return result.stdout


def in_node(argv: list[str]) -> list[str]:
    """Run ``argv`` in the node's network namespace only (mounts stay the host's, so the
    kubelet's volume mounts are the ones containerd bind-mounts into containers)."""
    return ["nsenter", f"--net=/run/netns/{NODE_NETNS}", "--", *argv]


def setup_network(plan: NetPlan) -> None:
    """The node namespace on the harness bridge, forwarding on inside, the pods' route."""
    ip = node_ip(plan)
    _run("ip", "netns", "add", NODE_NETNS)
    _run(
        "ip", "link", "add", NODE_VETH, "type", "veth", "peer", "name", "eth0", "netns", NODE_NETNS
    )
    _run("ip", "link", "set", NODE_VETH, "master", plan.bridge, "up")
    _run("ip", "-n", NODE_NETNS, "addr", "add", plan.pod_cidr(ip), "dev", "eth0")
    _run("ip", "-n", NODE_NETNS, "link", "set", "lo", "up")
    _run("ip", "-n", NODE_NETNS, "link", "set", "eth0", "up")
    _run("ip", "-n", NODE_NETNS, "route", "add", "default", "via", plan.bridge_ip)
    _run("ip", "netns", "exec", NODE_NETNS, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
    _run("ip", "route", "add", pod_cidr(plan), "via", ip, "dev", plan.bridge)
    # Services from the host too (tests, the demo): kube-proxy's rules are in the node.
    _run("ip", "route", "add", plan.service_cidr, "via", ip, "dev", plan.bridge)


def write_configs(
    plan: NetPlan, paths: NodePaths, node_bins: Binaries, kubeconfig: Path, node_name: str
) -> None:
    runc = shutil.which("runc") or "runc"
    for folder in (paths.cni_conf_dir, paths.cni_ipam_dir, paths.kubelet_root, paths.pod_logs):
        folder.mkdir(parents=True, exist_ok=True)
    paths.containerd_config.parent.mkdir(parents=True, exist_ok=True)
    paths.containerd_config.write_text(containerd_config(paths, node_bins["bridge"].parent, runc))
    (paths.cni_conf_dir / "10-localkube.conflist").write_text(cni_conflist(plan, paths))
    paths.kubelet_config.write_text(kubelet_config(plan, paths))
    paths.proxy_config.write_text(proxy_config(plan, kubeconfig, node_name))
    paths.corefile.write_text(corefile(plan, kubeconfig))


def containerd_argv(paths: NodePaths, node_bins: Binaries) -> list[str]:
    return in_node([str(node_bins["containerd"]), "--config", str(paths.containerd_config)])


def kubelet_argv(
    plan: NetPlan, paths: NodePaths, node_bins: Binaries, kubeconfig: Path, node_name: str
) -> list[str]:
    return in_node(
        [
            str(node_bins["kubelet"]),
            f"--config={paths.kubelet_config}",
            f"--kubeconfig={kubeconfig}",
            f"--root-dir={paths.kubelet_root}",
            f"--hostname-override={node_name}",
            f"--node-ip={node_ip(plan)}",
            "--v=1",
        ]
    )


def proxy_argv(paths: NodePaths, node_bins: Binaries) -> list[str]:
    return in_node([str(node_bins["kube-proxy"]), f"--config={paths.proxy_config}", "--v=1"])


def firewall_argv(
    plan: NetPlan, netpol_bins: Binaries, kubeconfig: Path, node_name: str
) -> list[str]:
    """kube-router's firewall in the node's namespace (``netpolicy``), where its rules act."""
    return in_node(netpolicy.firewall_args(netpol_bins["kube-router"], plan, kubeconfig, node_name))


def missing_firewall_tools() -> str | None:
    """None when kube-router's commands are here, else what to install."""
    absent = [tool for tool in netpolicy.TOOLS if not shutil.which(tool)]
    if absent:
        return f"network policies need {', '.join(absent)} (apt-get install ipset iptables)"
    return None


def firewall_state() -> tuple[str, list[str]]:
    """The node's filter table (`iptables-save`) and ipset names, or empty without a node."""
    if NODE_NETNS not in net.list_netns():
        return "", []
    save = subprocess.run(
        in_node(["iptables-save", "-t", "filter"]),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    sets = subprocess.run(
        in_node(["ipset", "list", "-n"]), capture_output=True, text=True, timeout=30, check=False
    )
    return save.stdout, sets.stdout.split()


def proxy_synced() -> bool:
    return netpolicy.proxy_synced(firewall_state()[0])


def firewall_ready() -> bool:
    return netpolicy.enforcing(firewall_state()[0])


def remove_firewall() -> list[str]:
    """After kube-router stopped on a running plane: its rules, chains and ipsets out of the
    node's namespace (kube-proxy's stay); returns what was removed."""
    save, sets = firewall_state()
    removed = netpolicy.leftovers(save, sets)
    script = netpolicy.cleanup_script(save)
    if script is not None:
        result = subprocess.run(
            in_node(["iptables-restore", "--noflush"]),
            input=script,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if result.returncode != 0:
            raise NodeError(f"removing kube-router's rules failed: {result.stderr.strip()}")
    for name in netpolicy.firewall_sets(sets):
        _run(*in_node(["ipset", "destroy", name]))
    left = netpolicy.leftovers(*firewall_state())
    if left:
        raise NodeError(f"kube-router's state is still in the node: {', '.join(left)}")
    return removed


def coredns_argv(paths: NodePaths, node_bins: Binaries) -> list[str]:
    return in_node([str(node_bins["coredns"]), "-conf", str(paths.corefile), "-quiet"])


def scheduler_argv(node_bins: Binaries, kubeconfig: Path, port: int) -> list[str]:
    return [
        str(node_bins["kube-scheduler"]),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--authentication-skip-lookup=true",
        "--leader-elect=false",
        "--bind-address=127.0.0.1",
        f"--secure-port={port}",
        "--v=1",
    ]


def ctr(paths: NodePaths, node_bins: Binaries, *args: str, timeout: float = 300) -> str:
    return _run(
        str(node_bins["ctr"]),
        "--address",
        str(paths.containerd_socket),
        "--namespace",
        CONTAINERD_NAMESPACE,
        *args,
        timeout=timeout,
    )


def podman_has(image: str) -> bool:
    result = subprocess.run([*PODMAN, "image", "exists", image], capture_output=True, check=False)
    return result.returncode == 0


def load_images(
    paths: NodePaths,
    node_bins: Binaries,
    tags: dict[str, str],
    progress: Callable[[str], None] = lambda _: None,
) -> list[str]:
    """The pause image and each local podman image into containerd, under every name a pod
    may use; returns the names loaded. An image podman lacks is left out (its pods then wait
    in ErrImageNeverPull / ImagePullBackOff, as on any node without the image)."""
    paths.images.mkdir(parents=True, exist_ok=True)
    pause = write_archive(node_bins["pause"], SANDBOX_IMAGE, paths.images / "pause.tar")
    ctr(paths, node_bins, "images", "import", "--local", str(pause))
    pause.unlink()
    ctr(paths, node_bins, "images", "tag", "--force", SANDBOX_IMAGE, normalise(SANDBOX_IMAGE))
    loaded = [normalise(SANDBOX_IMAGE)]
    by_source: dict[str, list[str]] = {}
    for alias, source in tags.items():
        by_source.setdefault(source, []).append(normalise(alias))
    for source, aliases in by_source.items():
        if not podman_has(source):
            progress(f"podman has no {source}: pods naming {', '.join(aliases)} will not start")
            continue
        started = time.monotonic()
        with tempfile.TemporaryDirectory(dir=paths.images) as tmp:
            archive = Path(tmp) / "image.tar"
            _run(*PODMAN, "save", "--format", "oci-archive", "-o", str(archive), source)
            ctr(paths, node_bins, "images", "import", "--local", str(archive))
        for alias in aliases:
            if alias != source:
                ctr(paths, node_bins, "images", "tag", "--force", source, alias)
        loaded += aliases
        progress(f"loaded {source} as {', '.join(aliases)} ({time.monotonic() - started:.0f}s)")
    return loaded


# -- teardown --------------------------------------------------------------------------------


def _cgroup_dirs() -> list[Path]:
    """Every kubepods cgroup folder, deepest first, over all v1 hierarchies (and v2)."""
    found: list[Path] = []
    for hierarchy in CGROUP_ROOT.iterdir() if CGROUP_ROOT.is_dir() else []:
        top = hierarchy / KUBEPODS
        if top.is_dir() and not top.is_symlink():
            found += [Path(d) for d, _, _ in os.walk(top)]
    if (CGROUP_ROOT / KUBEPODS).is_dir():
        found += [Path(d) for d, _, _ in os.walk(CGROUP_ROOT / KUBEPODS)]
    return sorted(set(found), key=lambda p: len(p.parts), reverse=True)


def _cgroup_pids(dirs: Iterable[Path]) -> set[int]:
    pids: set[int] = set()
    for folder in dirs:
        try:
            pids.update(int(p) for p in (folder / "cgroup.procs").read_text().split())
        except OSError:
            continue
    return pids


def kill_containers() -> list[str]:
    """SIGKILL every process in the kubelet's pod cgroups (only a real node makes them)."""
    killed: list[str] = []
    for _ in range(50):
        pids = _cgroup_pids(_cgroup_dirs())
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(f"container process {pid}")
            except ProcessLookupError:
                pass
        time.sleep(0.1)
    return sorted(set(killed))


def remove_cgroups() -> list[str]:
    removed = []
    for folder in _cgroup_dirs():
        try:
            folder.rmdir()
            removed.append(str(folder))
        except OSError:
            continue
    return [f"cgroup {r}" for r in removed if r.endswith(KUBEPODS)]


def unmount_under(root: Path) -> list[str]:
    """Lazily unmount everything mounted at or below ``root``, deepest first."""
    prefix = str(root.resolve())
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == prefix or point.startswith(prefix + "/"):
            points.append(point)
    for point in sorted(set(points), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)
    return [f"mount {p}" for p in sorted(set(points))]


def stop_shims(socket: Path) -> list[str]:
    """containerd's shims outlive it (their own sessions): find them by their socket path."""
    stopped = []
    for pid in procs.find(["containerd-shim", str(socket)]):
        if procs.stop(pid, str(socket), 5.0):
            stopped.append(f"shim {pid}")
    return stopped


def teardown(paths: NodePaths, plan: NetPlan) -> list[str]:
    """After the daemons stopped: containers, shims, mounts, cgroups, the node namespace."""
    done = kill_containers()
    done += stop_shims(paths.containerd_socket)
    if paths.root.exists():
        done += unmount_under(paths.root)
    done += remove_cgroups()
    if NODE_NETNS in net.list_netns():
        net.kill_netns_processes(NODE_NETNS)
        subprocess.run(["ip", "netns", "del", NODE_NETNS], capture_output=True, check=False)
        done.append(f"netns {NODE_NETNS}")
    if net.link_exists(NODE_VETH):
        subprocess.run(["ip", "link", "del", NODE_VETH], capture_output=True, check=False)
    for route in (pod_cidr(plan), plan.service_cidr):
        subprocess.run(["ip", "route", "del", route], capture_output=True, check=False)
    shutil.rmtree(paths.root, ignore_errors=True)
    return done
