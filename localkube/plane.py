"""Start and stop one local plane: bridge, PKI, etcd, API server, controllers, the real node.

``Plane.start()`` brings everything up and waits until the node is Ready and the default
service account exists (proof that the controller-manager works); on any failure it stops
what it started and raises ``PlaneError`` with the failing component's log tail. ``stop()``
ends every daemon (the kubelet first), then the node's containers, shims, mounts, cgroups and
namespaces, removes the bridge, and keeps the logs. With ``network_policy`` (or
``enable_network_policy()`` on a running plane) kube-router's firewall enforces NetworkPolicies
in the node (``netpolicy``); ``disable_network_policy()`` stops it and removes its rules. The
state file lets ``localkube down`` stop a plane that another process started.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from localkube import claim, dns, net, pki, procs, realnode
from localkube.build import (
    Binaries,
    ensure_dns_binaries,
    ensure_netpol_binaries,
    ensure_node_binaries,
)
from localkube.netplan import NetPlan
from localkube.nodeconfig import CLUSTER_DOMAIN, NodePaths, node_ip

STATE_FILE = claim.STATE_FILE
START_TIMEOUT = 180.0

# The controllers the tests and the operator rely on; everything else stays off to save CPU.
CONTROLLERS = (
    "serviceaccount-controller",
    "clusterrole-aggregation-controller",
    "service-cidr-controller",
    "root-ca-certificate-publisher-controller",
    "namespace-controller",
    "garbage-collector-controller",
    "replicaset-controller",
    "deployment-controller",
    "statefulset-controller",
    "endpointslice-controller",
    "endpointslice-mirroring-controller",
    "disruption-controller",
    "persistentvolumeclaim-protection-controller",
    "persistentvolume-protection-controller",
    # lifts a new node's not-ready taint
    "node-lifecycle-controller",
)

# Stop order: the kubelet first (the pods are ended by the teardown once containerd is gone),
# etcd last.
DAEMONS = (
    "kubelet",
    "kube-scheduler",
    "nodehelper",
    "kube-router",
    "kube-proxy",
    "coredns",
    "containerd",
    "kube-controller-manager",
    "kube-apiserver",
    "etcd",
)
GRACE = {
    "kubelet": 60.0,
    "kube-scheduler": 10.0,
    "nodehelper": 10.0,
    "kube-router": 10.0,
    "kube-proxy": 10.0,
    "coredns": 10.0,
    "containerd": 15.0,
    "kube-controller-manager": 10.0,
    "kube-apiserver": 15.0,
    "etcd": 10.0,
}


class PlaneError(RuntimeError):
    """The plane could not start (or stop); the message says which part and why."""


def admin_get(server: str, pki_dir: Path, path: str) -> Any:
    """GET ``path`` as the admin with the plane's client certificate; parsed JSON."""
    context = ssl.create_default_context(cafile=str(pki_dir / "ca.crt"))
    context.load_cert_chain(str(pki_dir / "admin.crt"), str(pki_dir / "admin.key"))
    with urllib.request.urlopen(server + path, timeout=5, context=context) as resp:
        body = resp.read()
    return json.loads(body) if body.strip().startswith(b"{") else body.decode()


def default_state_dir() -> Path:
    """``$LOCALKUBE_STATE`` or ``~/.local/state/dvecdb/localkube`` (outside the repo)."""
    override = os.environ.get("LOCALKUBE_STATE")
    if override:
        return Path(override)
    xdg = os.environ.get("XDG_STATE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "state"
    return base / "dvecdb" / "localkube"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Plane:
    binaries: Binaries
    state_dir: Path = field(default_factory=default_state_dir)
    plan: NetPlan = field(default_factory=NetPlan)
    api_port: int = 6443
    node_name: str = "localkube"
    # Image a pod names -> local podman image (added to realnode.DEFAULT_IMAGE_TAGS).
    image_tags: dict[str, str] = field(default_factory=dict)
    node_binaries: Binaries | None = None
    # Enforce NetworkPolicies (kube-router's firewall in the node); off by default.
    network_policy: bool = False
    netpol_binaries: Binaries | None = None
    pids: dict[str, int] = field(default_factory=dict)
    _children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, repr=False)

    # -- paths ------------------------------------------------------------------------------

    @property
    def logs(self) -> Path:
        return self.state_dir / "logs"

    @property
    def pki_dir(self) -> Path:
        return self.state_dir / "pki"

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def node_paths(self) -> NodePaths:
        return NodePaths(self.state_dir / "node")

    @property
    def dns_server(self) -> str:
        """CoreDNS's address (the node's): ``localkube.dns.resolve`` asks it from the host."""
        return node_ip(self.plan)

    @property
    def server(self) -> str:
        return f"https://{self.plan.bridge_ip}:{self.api_port}"

    def env(self) -> dict[str, str]:
        """Environment for kubectl and helm against this plane (built binaries first on PATH)."""
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        dirs = [str(d) for d in self.binaries.bin_dirs]
        env["PATH"] = os.pathsep.join([*dirs, env.get("PATH", "")])
        for kind in ("CACHE", "CONFIG", "DATA"):
            env[f"HELM_{kind}_HOME"] = str(self.state_dir / "helm" / kind.lower())
        return env

    # -- start ------------------------------------------------------------------------------

    def start(self) -> None:
        reason = net.namespaces_supported() or realnode.missing_tools()
        if reason is not None:
            raise PlaneError(f"localkube cannot run pods on this machine: {reason}")
        if self.node_binaries is None:
            node, dns = ensure_node_binaries(), ensure_dns_binaries()
            self.node_binaries = Binaries(
                {**node.paths, **dns.paths}, {**node.sources, **dns.sources}
            )
        if self.network_policy:
            self._ensure_firewall_binaries()
        if (self.state_dir / STATE_FILE).exists():
            raise PlaneError(
                f"a plane is already recorded in {self.state_dir} (run `localkube down`, "
                "or `localkube down --force` after a crash)"
            )
        for stale in ("etcd", "volumes", "pki", "helm", "node"):
            shutil.rmtree(self.state_dir / stale, ignore_errors=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        for old in self.logs.glob("*.log"):
            old.unlink()
        net.create_bridge(self.plan)
        claim.write(self.plan, self.state_dir)
        self._save()
        try:
            self._start_all()
        except BaseException:
            self.stop()
            raise

    def _start_all(self) -> None:
        certs = pki.generate(self.pki_dir, [self.plan.bridge_ip], self.plan.kubernetes_service_ip)
        self._write_kubeconfig(certs)
        client_port, peer_port = free_port(), free_port()
        self._launch("etcd", self._etcd_args(client_port, peer_port))
        self._wait("etcd", lambda: self._http_ok(f"http://127.0.0.1:{client_port}/health"))
        self._launch("kube-apiserver", self._apiserver_args(certs, client_port))
        self._wait("kube-apiserver", lambda: self._api_ok("/readyz"))
        self._launch("kube-controller-manager", self._controller_args(certs))
        self._start_real_node(certs)
        self._wait(
            "kube-controller-manager",
            lambda: self._api_ok("/api/v1/namespaces/default/serviceaccounts/default"),
        )
        self._wait("kubelet", self._node_ready)
        if self.network_policy:  # kube-router reads the Node (its address) when it starts
            self._start_firewall()
        kubernetes = f"kubernetes.default.svc.{CLUSTER_DOMAIN}"
        self._wait("coredns", lambda: bool(dns.resolve(self.dns_server, kubernetes, timeout=1)))

    def _start_real_node(self, certs: pki.Pki) -> None:
        """containerd, the images, kubelet, kube-proxy, scheduler, node helper (realnode)."""
        bins, paths = self.node_binaries, self.node_paths
        assert bins is not None
        realnode.setup_network(self.plan)
        realnode.write_configs(self.plan, paths, bins, self.kubeconfig, self.node_name)
        self._launch("containerd", realnode.containerd_argv(paths, bins))
        self._wait("containerd", lambda: paths.containerd_socket.exists())
        tags = {**realnode.DEFAULT_IMAGE_TAGS, **self.image_tags}
        realnode.load_images(paths, bins, tags, progress=lambda m: print(m, file=sys.stderr))
        self._launch(
            "kubelet",
            realnode.kubelet_argv(self.plan, paths, bins, self.kubeconfig, self.node_name),
        )
        self._launch("kube-proxy", realnode.proxy_argv(paths, bins))
        self._launch("kube-scheduler", realnode.scheduler_argv(bins, self.kubeconfig, free_port()))
        self._launch("coredns", realnode.coredns_argv(paths, bins))
        self._launch(
            "nodehelper",
            [
                sys.executable,
                "-m",
                "localkube.nodehelper",
                f"--server={self.server}",
                f"--ca={certs.ca_cert}",
                f"--cert={certs.admin_cert}",
                f"--key={certs.admin_key}",
                f"--state-dir={self.state_dir}",
                f"--node-root={paths.root}",
                f"--ctr={bins['ctr']}",
                f"--containerd={paths.containerd_socket}",
            ],
        )

    # -- NetworkPolicy enforcement -----------------------------------------------------------

    def _ensure_firewall_binaries(self) -> None:
        reason = realnode.missing_firewall_tools()
        if reason is not None:
            raise PlaneError(f"localkube cannot enforce NetworkPolicies here: {reason}")
        if self.netpol_binaries is None:
            self.netpol_binaries = ensure_netpol_binaries()

    def _start_firewall(self) -> None:
        assert self.netpol_binaries is not None
        argv = realnode.firewall_argv(
            self.plan, self.netpol_binaries, self.kubeconfig, self.node_name
        )
        # After kube-proxy's first sync: its jumps are prepended then and would come first.
        self._wait("kube-proxy", realnode.proxy_synced)
        self._launch("kube-router", argv)
        self._wait("kube-router", realnode.firewall_ready)

    def enable_network_policy(self) -> None:
        """Start enforcing on this running plane (a test's fixture; `up --network-policy`
        starts it with the plane)."""
        if "kube-router" in self.pids:
            return
        self._ensure_firewall_binaries()
        self.network_policy = True
        try:
            self._start_firewall()
        except BaseException:
            self.disable_network_policy()  # whatever it made before failing goes too
            raise

    def disable_network_policy(self) -> list[str]:
        """Stop enforcing on this running plane: kube-router ends, its chains and ipsets are
        removed from the node (so every pod reaches every pod again); returns what went."""
        removed: list[str] = []
        pid = self.pids.pop("kube-router", None)
        child = self._children.pop("kube-router", None)
        if pid is not None:
            assert self.netpol_binaries is not None
            if procs.stop(pid, str(self.netpol_binaries["kube-router"]), GRACE["kube-router"]):
                removed.append(f"kube-router (pid {pid})")
        if child is not None:
            child.wait()
        self.network_policy = False
        self._save()
        return removed + realnode.remove_firewall()

    def _launch(self, name: str, argv: list[str]) -> None:
        child = procs.start(argv, self.logs / f"{name}.log")
        self._children[name] = child
        self.pids[name] = child.pid
        self._save()

    def _wait(self, name: str, check: Callable[[], bool]) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            for daemon, child in self._children.items():
                code = child.poll()
                if code is not None:
                    log = self.logs / f"{daemon}.log"
                    raise PlaneError(
                        f"{daemon} exited (code {code}) during start-up; last lines of {log}:\n"
                        f"{procs.tail(log)}"
                    )
            if check():
                return
            time.sleep(0.5)
        raise PlaneError(
            f"{name} was not ready within {START_TIMEOUT:.0f}s; last log lines:\n"
            f"{procs.tail(self.logs / (name + '.log'))}"
        )

    def _etcd_args(self, client_port: int, peer_port: int) -> list[str]:
        client, peer = f"http://127.0.0.1:{client_port}", f"http://127.0.0.1:{peer_port}"
        return [
            str(self.binaries["etcd"]),
            "--name=localkube",
            f"--data-dir={self.state_dir / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=localkube={peer}",
            # Test data: losing it on a machine crash is fine, and fsync on a shared disk is slow.
            "--unsafe-no-fsync",
            "--log-level=warn",
        ]

    def _apiserver_args(self, certs: pki.Pki, etcd_port: int) -> list[str]:
        issuer = "https://kubernetes.default.svc.cluster.local"
        return [
            str(self.binaries["kube-apiserver"]),
            f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            f"--bind-address={self.plan.bridge_ip}",
            f"--advertise-address={self.plan.bridge_ip}",
            f"--secure-port={self.api_port}",
            f"--cert-dir={self.pki_dir}",
            f"--tls-cert-file={certs.serving_cert}",
            f"--tls-private-key-file={certs.serving_key}",
            f"--client-ca-file={certs.ca_cert}",
            f"--service-account-issuer={issuer}",
            f"--service-account-key-file={certs.sa_pub}",
            f"--service-account-signing-key-file={certs.sa_key}",
            f"--service-cluster-ip-range={self.plan.service_cidr}",
            "--authorization-mode=RBAC",
            "--allow-privileged=true",
            # The node is known by its name only: logs/exec/port-forward go to its address.
            "--kubelet-preferred-address-types=InternalIP",
            "--profiling=false",
            "--v=1",
        ]

    def _controller_args(self, certs: pki.Pki) -> list[str]:
        return [
            str(self.binaries["kube-controller-manager"]),
            f"--kubeconfig={self.kubeconfig}",
            f"--authentication-kubeconfig={self.kubeconfig}",
            f"--authorization-kubeconfig={self.kubeconfig}",
            # No front proxy here: do not poll for its request-header CA (log noise only).
            "--authentication-skip-lookup=true",
            f"--controllers={','.join(CONTROLLERS)}",
            f"--root-ca-file={certs.ca_cert}",
            f"--service-account-private-key-file={certs.sa_key}",
            "--use-service-account-credentials=false",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={free_port()}",
            f"--cert-dir={self.pki_dir / 'kcm'}",
            "--profiling=false",
            "--v=1",
        ]

    def _write_kubeconfig(self, certs: pki.Pki) -> None:
        def b64(path: Path) -> str:
            return base64.b64encode(path.read_bytes()).decode()

        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "localkube",
                    "cluster": {
                        "server": self.server,
                        "certificate-authority-data": b64(certs.ca_cert),
                    },
                }
            ],
            "users": [
                {
                    "name": "localkube-admin",
                    "user": {
                        "client-certificate-data": b64(certs.admin_cert),
                        "client-key-data": b64(certs.admin_key),
                    },
                }
            ],
            "contexts": [
                {
                    "name": "localkube",
                    "context": {
                        "cluster": "localkube",
                        "user": "localkube-admin",
                        "namespace": "default",
                    },
                }
            ],
            "current-context": "localkube",
        }
        self.kubeconfig.write_text(yaml.safe_dump(config, sort_keys=False))
        self.kubeconfig.chmod(0o600)

    # -- health checks ----------------------------------------------------------------------

    @staticmethod
    def _http_ok(url: str) -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def api_get(self, path: str) -> Any:
        """GET a JSON document from the API server as the admin (raises on failure)."""
        return admin_get(self.server, self.pki_dir, path)

    def _api_ok(self, path: str) -> bool:
        try:
            self.api_get(path)
            return True
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def _node_ready(self) -> bool:
        try:
            node = self.api_get(f"/api/v1/nodes/{self.node_name}")
        except (urllib.error.URLError, OSError, ValueError):
            return False
        conditions = node.get("status", {}).get("conditions") or []
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    # -- stop -------------------------------------------------------------------------------

    def _marker(self, daemon: str) -> str:
        """What the daemon's command line holds (checked before it is signalled)."""
        if daemon == "nodehelper":
            return "localkube.nodehelper"
        if self.node_binaries and daemon in self.node_binaries.paths:
            return str(self.node_binaries[daemon])
        if self.netpol_binaries and daemon in self.netpol_binaries.paths:
            return str(self.netpol_binaries[daemon])
        return str(self.binaries[daemon])

    def _save(self) -> None:
        state = {
            "pids": self.pids,
            "markers": {d: self._marker(d) for d in self.pids},
            "bridge": self.plan.bridge,
            "block": self.plan.block,
            "api_port": self.api_port,
            "server": self.server,
            "kubeconfig": str(self.kubeconfig),
            "bin_dirs": [str(d) for d in self.binaries.bin_dirs],
            "node_root": str(self.node_paths.root),
        }
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / STATE_FILE).write_text(json.dumps(state, indent=2))

    def stop(self) -> list[str]:
        """End every process of this plane and remove its network; returns what was stopped."""
        stopped = stop_recorded(self.state_dir)
        for child in self._children.values():
            if child.poll() is None:  # not what the state file said: never leave it running
                child.kill()
            child.wait()
        self._children.clear()
        self.pids.clear()
        return stopped


def stop_recorded(state_dir: Path) -> list[str]:
    """Stop the plane recorded in ``state_dir`` (works from any process), keep its logs."""
    path = state_dir / STATE_FILE
    if not path.exists():
        return []
    state = json.loads(path.read_text())
    stopped = []
    for daemon in DAEMONS:
        pid = state["pids"].get(daemon)
        if pid is not None and procs.stop(pid, state["markers"][daemon], GRACE[daemon]):
            stopped.append(f"{daemon} (pid {pid})")
    plan = NetPlan(bridge=state["bridge"], block=state["block"])
    owner = claim.other_live_owner(plan, state_dir)
    if owner is None:
        stopped += realnode.teardown(NodePaths(Path(state["node_root"])), plan)
        stopped += net.cleanup_leftovers(plan)
        claim.release(plan, state_dir)
    else:
        stopped.append(f"(the network is held by the live plane of {owner}: left alone)")
    for data in ("etcd", "volumes"):
        shutil.rmtree(state_dir / data, ignore_errors=True)
    path.unlink()
    return stopped


def force_cleanup(state_dir: Path, plan: NetPlan, cache_root: Path) -> list[str]:
    """After a crash: stop the recorded plane, then any localkube daemon, container and netns
    left; refused while another live plane holds the network (another session's)."""
    owner = claim.other_live_owner(plan, state_dir)
    if owner is not None:
        raise PlaneError(
            f"the network ({plan.bridge}) belongs to the running plane of {owner}: stop it with "
            f"`localkube --state-dir {owner} down`, or let its session end"
        )
    removed = stop_recorded(state_dir)
    daemons = procs.find(["localkube.nodehelper"]) + [
        pid
        for pid in procs.find([str(cache_root)])
        if procs.cmdline(pid)[:1] and procs.cmdline(pid)[0].startswith(str(cache_root))
    ]
    for pid in daemons:
        line = procs.cmdline(pid)
        if procs.stop(pid, line[0] if line else "", 5.0):
            removed.append(f"process {pid} ({' '.join(line[:2])})")
    removed += realnode.teardown(NodePaths(state_dir / "node"), plan)
    removed += net.cleanup_leftovers(plan)
    claim.release(plan, state_dir)
    return removed
