"""Build (or find) the control-plane binaries: pinned Go modules into a cache outside the repo.

``ensure_binaries`` is idempotent: binaries already in the cache folder for the current key are
reused, so only a change of a pinned version (or of the Go toolchain or flags) rebuilds. When
``KUBEBUILDER_ASSETS`` names a folder (setup-envtest's layout: etcd, kube-apiserver, kubectl),
the binaries found there are used and only the missing ones are built.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from localkube.versions import (
    ALL_BINARIES,
    BUILD_FLAGS,
    COMPONENTS,
    DNS_BINARIES,
    DNS_COMPONENTS,
    GO_ROOT,
    NETPOL_BINARIES,
    NETPOL_COMPONENTS,
    NODE_BINARIES,
    NODE_COMPONENTS,
    Component,
    cache_key,
    dns_cache_key,
    netpol_cache_key,
    node_cache_key,
)

Progress = Callable[[str], None]

HEARTBEAT_SECONDS = 30.0


class BuildError(RuntimeError):
    """A binary could not be built or found; the message says which and why."""


@dataclass(frozen=True)
class Binaries:
    """Absolute paths of every binary the plane and the tests use."""

    paths: dict[str, Path]
    sources: dict[str, str]  # binary -> "cache" or "KUBEBUILDER_ASSETS"

    def __getitem__(self, name: str) -> Path:
        return self.paths[name]

    @property
    def bin_dirs(self) -> list[Path]:
        return sorted({p.parent for p in self.paths.values()})


def default_cache_root() -> Path:
    """``$LOCALKUBE_CACHE`` or ``~/.cache/dvecdb/localkube`` (never inside the repo)."""
    override = os.environ.get("LOCALKUBE_CACHE")
    if override:
        return Path(override)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "dvecdb" / "localkube"


def find_go() -> Path:
    """The Go toolchain: ``$LOCALKUBE_GO``, ``go`` on PATH, or the usual /usr/local/go."""
    candidates = [os.environ.get("LOCALKUBE_GO"), shutil.which("go"), "/usr/local/go/bin/go"]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return Path(candidate)
    raise BuildError(
        "no Go toolchain found (set LOCALKUBE_GO, put go on PATH, or set KUBEBUILDER_ASSETS "
        "to a folder holding every binary)"
    )


def go_version(go: Path) -> str:
    result = subprocess.run(
        [str(go), "env", "GOVERSION"], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise BuildError(f"`{go} env GOVERSION` failed: {result.stderr.strip()}")
    return result.stdout.strip()


def assets_binaries(assets: str | None) -> dict[str, Path]:
    """Binaries present in a KUBEBUILDER_ASSETS folder (may be a subset of what we need)."""
    if not assets:
        return {}
    folder = Path(assets)
    if not folder.is_dir():
        raise BuildError(f"KUBEBUILDER_ASSETS={assets} is not a folder")
    found = {}
    for name in ALL_BINARIES:
        path = folder / name
        if path.is_file() and os.access(path, os.X_OK):
            found[name] = path.resolve()
    return found


def components_to_build(
    missing: set[str], components: tuple[Component, ...] = COMPONENTS
) -> list[Component]:
    return [c for c in components if missing.intersection(c.binaries)]


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialise builds of one cache key between processes (make and pytest may race)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _print(message: str) -> None:
    print(f"[localkube] {message}", file=sys.stderr, flush=True)


def _go_env(go: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{go.parent}{os.pathsep}{env.get('PATH', '')}"
    # -mod=readonly: go.sum is the checksum and must not be rewritten by a build.
    # -p=2: the project's machines have two cores; more parallelism only thrashes memory.
    env["GOFLAGS"] = "-mod=readonly -p=2 -buildvcs=false"
    env.setdefault("CGO_ENABLED", "0")
    return env


def build_flags(component: Component) -> list[str]:
    """The shared flags, with the component's tags and version stamps merged in."""
    flags = []
    for flag in BUILD_FLAGS:
        if flag.startswith("-ldflags=") and component.stamps:
            flag += "".join(f" -X {stamp}" for stamp in component.stamps)
        flags.append(flag)
    if component.tags:
        flags.append(f"-tags={','.join(component.tags)}")
    return flags


def _build_component(
    go: Path, component: Component, wanted: list[str], out_dir: Path, progress: Progress
) -> None:
    packages = [pkg for binary, pkg in component.packages if binary in wanted]
    command = [str(go), "build", *build_flags(component), "-o", f"{out_dir}{os.sep}", *packages]
    log_path = out_dir / f"build-{component.name}.log"
    started = time.monotonic()
    progress(f"building {component.name} v{component.version}: {', '.join(wanted)}")
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            command,
            cwd=GO_ROOT / component.module_dir,
            env=_go_env(go),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        done = threading.Event()

        def heartbeat() -> None:
            while not done.wait(HEARTBEAT_SECONDS):
                elapsed = time.monotonic() - started
                progress(f"  ... still building {component.name} ({elapsed:.0f}s)")

        ticker = threading.Thread(target=heartbeat, daemon=True)
        ticker.start()
        try:
            code = proc.wait()
        finally:
            done.set()
            ticker.join()
    if code != 0:
        tail = log_path.read_text(errors="replace").splitlines()[-40:]
        raise BuildError(
            f"go build of {component.name} v{component.version} failed (exit {code}):\n"
            + "\n".join(tail)
        )
    progress(f"built {component.name} in {time.monotonic() - started:.0f}s")


def ensure_binaries(
    cache_root: Path | None = None,
    assets: str | None = None,
    progress: Progress = _print,
) -> Binaries:
    """Return every binary, building the missing ones from the pinned modules first."""
    if assets is None:
        assets = os.environ.get("KUBEBUILDER_ASSETS")
    from_assets = assets_binaries(assets)
    missing = set(ALL_BINARIES) - set(from_assets)
    paths = dict(from_assets)
    sources = {name: "KUBEBUILDER_ASSETS" for name in from_assets}
    if not missing:
        return Binaries(paths=paths, sources=sources)

    go = find_go()
    root = cache_root or default_cache_root()
    bin_dir = _build_missing(root / cache_key(go_version(go)), COMPONENTS, missing, go, progress)
    for name in missing:
        paths[name] = bin_dir / name
        sources[name] = "cache"
    return Binaries(paths=paths, sources=sources)


def _build_missing(
    key_dir: Path,
    components: tuple[Component, ...],
    missing: set[str],
    go: Path,
    progress: Progress,
) -> Path:
    """Build whichever of ``missing`` is not yet in ``key_dir/bin``; returns that folder."""
    bin_dir = key_dir / "bin"
    with _locked(key_dir.with_suffix(".lock")):
        absent = {name for name in missing if not (bin_dir / name).is_file()}
        if absent:
            progress(f"cache {key_dir} lacks {', '.join(sorted(absent))}; building with {go}")
            started = time.monotonic()
            bin_dir.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=key_dir, prefix="build-") as tmp:
                out_dir = Path(tmp)
                for component in components_to_build(absent, components):
                    wanted = [b for b in component.binaries if b in absent]
                    _build_component(go, component, wanted, out_dir, progress)
                    for binary in wanted:
                        # rename is atomic: a binary in bin/ is always a complete one.
                        os.replace(out_dir / binary, bin_dir / binary)
                    shutil.copy(
                        out_dir / f"build-{component.name}.log",
                        key_dir / f"build-{component.name}.log",
                    )
            progress(f"build finished in {time.monotonic() - started:.0f}s")
    return bin_dir


def ensure_node_binaries(cache_root: Path | None = None, progress: Progress = _print) -> Binaries:
    """The real node's binaries (kubelet, kube-proxy, kube-scheduler, containerd, CNI plugins,
    pause), built once into their own cache folder beside the control plane's."""
    go = find_go()
    root = cache_root or default_cache_root()
    key_dir = root / node_cache_key(go_version(go))
    bin_dir = _build_missing(key_dir, NODE_COMPONENTS, set(NODE_BINARIES), go, progress)
    paths = {name: bin_dir / name for name in NODE_BINARIES}
    return Binaries(paths=paths, sources=dict.fromkeys(NODE_BINARIES, "cache"))


def ensure_dns_binaries(cache_root: Path | None = None, progress: Progress = _print) -> Binaries:
    """CoreDNS, built once into its own cache folder (about a minute on 2 cores when the Go
    modules are fetched; they share most of the node's)."""
    go = find_go()
    root = cache_root or default_cache_root()
    key_dir = root / dns_cache_key(go_version(go))
    bin_dir = _build_missing(key_dir, DNS_COMPONENTS, set(DNS_BINARIES), go, progress)
    return Binaries(
        paths={name: bin_dir / name for name in DNS_BINARIES},
        sources=dict.fromkeys(DNS_BINARIES, "cache"),
    )


def ensure_netpol_binaries(cache_root: Path | None = None, progress: Progress = _print) -> Binaries:
    """kube-router (the NetworkPolicy enforcer), built once into its own cache folder; only a
    plane with network policies on asks for it."""
    go = find_go()
    root = cache_root or default_cache_root()
    key_dir = root / netpol_cache_key(go_version(go))
    bin_dir = _build_missing(key_dir, NETPOL_COMPONENTS, set(NETPOL_BINARIES), go, progress)
    return Binaries(
        paths={name: bin_dir / name for name in NETPOL_BINARIES},
        sources=dict.fromkeys(NETPOL_BINARIES, "cache"),
    )
