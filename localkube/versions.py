"""Pinned component versions and the cache key derived from them.

The Go modules under ``localkube/go`` are the source of truth (their go.sum files are the
checksums). The key hashes every go.mod/go.sum, the Go toolchain and the build flags, so the
cache folder changes exactly when a pinned version or the way it is built changes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

GO_ROOT = Path(__file__).resolve().parent / "go"

# Flags every binary is built with: no paths of this machine in the binaries, no symbol tables.
BUILD_FLAGS: tuple[str, ...] = ("-trimpath", "-ldflags=-s -w")


@dataclass(frozen=True)
class Component:
    """One Go module folder and the binaries built from it."""

    name: str
    module_dir: str
    packages: tuple[tuple[str, str], ...]  # (binary name, Go package path)
    version: str
    tags: tuple[str, ...] = ()  # Go build tags
    stamps: tuple[str, ...] = ()  # `-X package.var=value` linker stamps (version strings)

    @property
    def binaries(self) -> tuple[str, ...]:
        return tuple(binary for binary, _ in self.packages)


KUBERNETES_VERSION = "1.37.2"
ETCD_VERSION = "3.7.3"
HELM_VERSION = "3.22.0"

COMPONENTS: tuple[Component, ...] = (
    Component(
        name="kubernetes",
        module_dir="kube",
        packages=(
            ("kube-apiserver", "k8s.io/kubernetes/cmd/kube-apiserver"),
            ("kube-controller-manager", "k8s.io/kubernetes/cmd/kube-controller-manager"),
            ("kubectl", "k8s.io/kubernetes/cmd/kubectl"),
        ),
        version=KUBERNETES_VERSION,
    ),
    Component(
        name="etcd",
        module_dir="etcd",
        packages=(("etcd", "."),),
        version=ETCD_VERSION,
    ),
    Component(
        name="helm",
        module_dir="helm",
        packages=(("helm", "helm.sh/helm/v3/cmd/helm"),),
        version=HELM_VERSION,
    ),
)

ALL_BINARIES: tuple[str, ...] = tuple(b for c in COMPONENTS for b in c.binaries)

# The node: its own modules and its own cache folder, so adding
# it never changes the control plane's key (and never rebuilds what other checkouts share).
CONTAINERD_VERSION = "2.4.2"
CNI_PLUGINS_VERSION = "1.10.0"
PAUSE_VERSION = "1"

NODE_COMPONENTS: tuple[Component, ...] = (
    Component(
        name="kubernetes-node",
        module_dir="node",
        packages=(
            ("kubelet", "k8s.io/kubernetes/cmd/kubelet"),
            ("kube-proxy", "k8s.io/kubernetes/cmd/kube-proxy"),
            ("kube-scheduler", "k8s.io/kubernetes/cmd/kube-scheduler"),
        ),
        version=KUBERNETES_VERSION,
        # The Node object reports the kubelet's version; unstamped it says v0.0.0-master.
        stamps=(
            f"k8s.io/component-base/version.gitVersion=v{KUBERNETES_VERSION}",
            f"k8s.io/component-base/version.gitMajor={KUBERNETES_VERSION.split('.')[0]}",
            f"k8s.io/component-base/version.gitMinor={KUBERNETES_VERSION.split('.')[1]}",
        ),
    ),
    Component(
        name="containerd",
        module_dir="containerd",
        packages=(
            ("containerd", "github.com/containerd/containerd/v2/cmd/containerd"),
            ("ctr", "github.com/containerd/containerd/v2/cmd/ctr"),
            (
                "containerd-shim-runc-v2",
                "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2",
            ),
        ),
        version=CONTAINERD_VERSION,
        # Snapshotters that need cgo or kernel features this node does not use.
        tags=("no_btrfs", "no_devmapper", "no_zfs"),
        stamps=(f"github.com/containerd/containerd/v2/version.Version={CONTAINERD_VERSION}",),
    ),
    Component(
        name="cni-plugins",
        module_dir="cni",
        packages=(
            ("bridge", "github.com/containernetworking/plugins/plugins/main/bridge"),
            ("host-local", "github.com/containernetworking/plugins/plugins/ipam/host-local"),
            ("loopback", "github.com/containernetworking/plugins/plugins/main/loopback"),
            ("portmap", "github.com/containernetworking/plugins/plugins/meta/portmap"),
        ),
        version=CNI_PLUGINS_VERSION,
    ),
    Component(name="pause", module_dir="pause", packages=(("pause", "."),), version=PAUSE_VERSION),
)

NODE_BINARIES: tuple[str, ...] = tuple(b for c in NODE_COMPONENTS for b in c.binaries)

# Cluster DNS: CoreDNS with the kubernetes plugin (a trimmed main: bind, errors, cache,
# kubernetes), in its own cache folder so it never changes the node's key.
COREDNS_VERSION = "1.15.0"
DNS_COMPONENTS: tuple[Component, ...] = (
    Component(
        name="coredns",
        module_dir="dns",
        packages=(("coredns", "."),),
        version=COREDNS_VERSION,
        stamps=(f"github.com/coredns/coredns/coremain.GitCommit=v{COREDNS_VERSION}",),
    ),
)
DNS_BINARIES: tuple[str, ...] = ("coredns",)

# NetworkPolicy enforcement (opt-in): kube-router with only its firewall (the network policy
# controller: iptables chains and ipsets in the node's namespace). v2.1.0 is the only version
# the Go module proxy serves here; newer releases answer 403 "not available". It carries
# reported security flaws, so it enforces policies for tests on this machine and nothing else.
KUBE_ROUTER_VERSION = "2.1.0"
NETPOL_COMPONENTS: tuple[Component, ...] = (
    Component(
        name="kube-router",
        module_dir="netpol",
        packages=(("kube-router", "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router"),),
        version=KUBE_ROUTER_VERSION,
        stamps=(
            f"github.com/cloudnativelabs/kube-router/v2/pkg/version.Version=v{KUBE_ROUTER_VERSION}",
        ),
    ),
)
NETPOL_BINARIES: tuple[str, ...] = ("kube-router",)


def module_digest(go_root: Path, components: tuple[Component, ...] = COMPONENTS) -> str:
    """Hash of every component's go.mod, go.sum and Go sources (the tiny etcd main)."""
    digest = hashlib.sha256()
    for component in components:
        folder = go_root / component.module_dir
        for path in sorted(folder.iterdir()):
            if path.suffix in {".mod", ".sum", ".go"}:
                digest.update(f"{component.module_dir}/{path.name}\0".encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()


def cache_key(go_version: str, go_root: Path = GO_ROOT) -> str:
    """Folder name under the cache: readable versions plus a hash of everything pinned."""
    digest = hashlib.sha256()
    digest.update(module_digest(go_root).encode())
    digest.update(go_version.encode())
    digest.update("\0".join(BUILD_FLAGS).encode())
    return (
        f"k8s-{KUBERNETES_VERSION}_etcd-{ETCD_VERSION}_helm-{HELM_VERSION}"
        f"_{digest.hexdigest()[:12]}"
    )


def node_cache_key(go_version: str, go_root: Path = GO_ROOT) -> str:
    """Folder name of the real node's binaries (a sibling of the control plane's folder)."""
    digest = hashlib.sha256()
    digest.update(module_digest(go_root, NODE_COMPONENTS).encode())
    digest.update(go_version.encode())
    digest.update("\0".join(BUILD_FLAGS).encode())
    for component in NODE_COMPONENTS:
        digest.update(f"{component.name}:{component.tags}:{component.stamps}\0".encode())
    return (
        f"node-k8s-{KUBERNETES_VERSION}_containerd-{CONTAINERD_VERSION}"
        f"_cni-{CNI_PLUGINS_VERSION}_{digest.hexdigest()[:12]}"
    )


def _component_digest(go_version: str, go_root: Path, components: tuple[Component, ...]) -> str:
    digest = hashlib.sha256()
    digest.update(module_digest(go_root, components).encode())
    digest.update(go_version.encode())
    digest.update("\0".join(BUILD_FLAGS).encode())
    for component in components:
        digest.update(f"{component.name}:{component.tags}:{component.stamps}\0".encode())
    return digest.hexdigest()[:12]


def dns_cache_key(go_version: str, go_root: Path = GO_ROOT) -> str:
    """Folder name of CoreDNS's binary (a sibling of the others)."""
    return f"dns-coredns-{COREDNS_VERSION}_{_component_digest(go_version, go_root, DNS_COMPONENTS)}"


def netpol_cache_key(go_version: str, go_root: Path = GO_ROOT) -> str:
    """Folder name of the policy enforcer's binary (a sibling; never changes the others)."""
    digest = _component_digest(go_version, go_root, NETPOL_COMPONENTS)
    return f"netpol-kube-router-{KUBE_ROUTER_VERSION}_{digest}"
