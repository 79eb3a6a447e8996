"""A Qdrant server for the bench, run from the binary cached outside the repo.

The binary is built once from Qdrant's public source with cargo (DESIGN.md, "Performance
method") and cached by version and cargo profile, like the Kubernetes binaries:
`~/.cache/dvecdb/qdrant-<version>-<profile>/qdrant` (`DVECDB_CACHE` moves the cache). Nothing here
builds it.

The server is started with its working directory, storage and snapshots in one scratch folder,
so no `config/*.yaml` of anyone else's is read: Qdrant's compiled-in defaults apply, changed only
by the environment below (loopback, free ports, no telemetry, no cluster, no web UI).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from dvecbench.procs import LOOPBACK, Processes, free_port

VERSION = "1.18.3"
PROFILE = "perf"  # Qdrant's own profile for performance tests: release without LTO


def cache_dir() -> Path:
    return Path(os.environ.get("DVECDB_CACHE") or Path.home() / ".cache" / "dvecdb")


def binary_path(version: str = VERSION, profile: str = PROFILE) -> Path:
    return cache_dir() / f"qdrant-{version}-{profile}" / "qdrant"


def cached_binary(version: str = VERSION, profile: str = PROFILE) -> Path:
    """The cached binary, or FileNotFoundError saying where it is expected."""
    path = binary_path(version, profile)
    if not os.access(path, os.X_OK):
        raise FileNotFoundError(
            f"no Qdrant {version} binary at {path}: build it from Qdrant's source as DESIGN.md "
            "'Performance method' says, and copy target/<profile>/qdrant there"
        )
    return path


def server_env(*, http_port: int, grpc_port: int, data_dir: Path) -> dict[str, str]:
    """Qdrant's settings for one bench server (`QDRANT__` variables override its config)."""
    return {
        "QDRANT__SERVICE__HOST": LOOPBACK,
        "QDRANT__SERVICE__HTTP_PORT": str(http_port),
        "QDRANT__SERVICE__GRPC_PORT": str(grpc_port),
        "QDRANT__SERVICE__ENABLE_STATIC_CONTENT": "false",
        "QDRANT__STORAGE__STORAGE_PATH": str(data_dir / "storage"),
        "QDRANT__STORAGE__SNAPSHOTS_PATH": str(data_dir / "snapshots"),
        "QDRANT__CLUSTER__ENABLED": "false",
        "QDRANT__TELEMETRY_DISABLED": "true",
        "QDRANT__LOG_LEVEL": "WARN",
        "QDRANT_INIT_FILE_PATH": str(data_dir / ".qdrant-initialized"),
    }


def start(
    procs: Processes,
    binary: Path,
    *,
    data_dir: Path,
    cpus: frozenset[int] | None = None,
    name: str = "qdrant",
    timeout: float = 120.0,
) -> str:
    """Start Qdrant under `procs` (which stops it by its pid), wait until `/readyz` answers
    200, and return its base URL."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = server_env(http_port=port, grpc_port=free_port(), data_dir=data_dir)
    procs.start(name, [str(binary), "--disable-telemetry"], cpus=cpus, env=env, cwd=data_dir)
    url = f"http://{LOOPBACK}:{port}"
    procs.wait_ready(name, url + "/readyz", timeout=timeout)
    return url


@contextlib.contextmanager
def running(
    binary: Path | None = None, *, cpus: frozenset[int] | None = None
) -> Iterator[tuple[str, Processes]]:
    """A Qdrant server on a scratch folder for the block's duration: (base URL, its owner)."""
    with (
        tempfile.TemporaryDirectory(prefix="dvecbench-qdrant-") as tmp,
        Processes(Path(tmp)) as procs,
    ):
        url = start(procs, binary or cached_binary(), data_dir=Path(tmp) / "data", cpus=cpus)
        yield url, procs
