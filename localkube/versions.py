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
