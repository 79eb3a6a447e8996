"""A real cert-manager controller for the e2e tier (issue #16: `spec.tls.issuerRef`).

cert-manager's controller is built once from its source at a pinned tag and cached beside
localkube's binaries (``~/.cache/dvecdb/cert-manager-<pin>/``, with the release's CRDs); the
test runs it as a host process against the plane's API server, as a cluster's controller
would run (it needs the API server only: the CA and self-signed issuers reach nothing else).

Where the source comes from: the Go module proxy serves cert-manager's library module but
not its ``cmd/controller`` module, and not ``github.com/Venafi/vcert/v5`` (a dependency), so
the build reads both from git repositories: ``DVECDB_CERT_MANAGER_GIT`` and
``DVECDB_VCERT_GIT`` (a clone of github.com/cert-manager/cert-manager and of
github.com/Venafi/vcert), by default this workplace's mirrors. Without them and without the
cache, :func:`ensure_controller` raises :class:`Unavailable` saying so.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

PIN = "v1.21.1"
VCERT_PIN = "v5.13.7"  # what cert-manager's go.mod at PIN requires
CACHE = Path.home() / ".cache" / "dvecdb" / f"cert-manager-{PIN}"
BINARY = CACHE / "controller"
CRDS = CACHE / "crds"
DEFAULT_GITS = {
    "DVECDB_CERT_MANAGER_GIT": Path("/work/.mirror/cert-manager+cert-manager/repo"),
    "DVECDB_VCERT_GIT": Path("/work/.mirror/Venafi+vcert/repo"),
}


class Unavailable(RuntimeError):
    """cert-manager cannot be built here (no cache and no source)."""


def _git_dir(variable: str) -> Path:
    path = Path(os.environ.get(variable) or DEFAULT_GITS[variable])
    if not path.exists():
        raise Unavailable(
            f"cert-manager {PIN} is not cached in {CACHE} and {variable} ({path}) does not "
            "exist: set it to a git clone of the source (see tests/support/certmanager.py)"
        )
    return path


def _extract(git_dir: Path, tag: str, into: Path) -> None:
    archive = subprocess.run(
        ["git", "--git-dir", str(git_dir), "archive", tag],
        capture_output=True,
        check=True,
        timeout=300,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")


def ensure_controller(progress: Callable[[str], None] = print) -> Path:
    """The cached controller binary, built first when missing (5-15 min on 2 cores)."""
    if BINARY.exists() and any(CRDS.glob("*.yaml")):
        return BINARY
    manager, vcert = _git_dir("DVECDB_CERT_MANAGER_GIT"), _git_dir("DVECDB_VCERT_GIT")
    progress(f"building cert-manager {PIN} controller (once; cached in {CACHE})")
    with tempfile.TemporaryDirectory(prefix="cert-manager-") as tmp:
        source, vcert_source = Path(tmp) / "cert-manager", Path(tmp) / "vcert"
        _extract(manager, PIN, source)
        _extract(vcert, VCERT_PIN, vcert_source)
        module = source / "cmd" / "controller"
        subprocess.run(
            ["go", "mod", "edit", f"-replace=github.com/Venafi/vcert/v5={vcert_source}"],
            cwd=module,
            check=True,
            timeout=60,
        )
        built = Path(tmp) / "controller"
        env = {**os.environ, "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0"}
        result = subprocess.run(
            ["go", "build", "-trimpath", "-ldflags", "-s -w", "-o", str(built), "."],
            cwd=module,
            env=env,
            capture_output=True,
            text=True,
            timeout=3600,
        )
        if result.returncode != 0:
            raise Unavailable(f"building cert-manager failed:\n{result.stderr[-3000:]}")
        CRDS.mkdir(parents=True, exist_ok=True)
        for crd in (source / "deploy" / "crds").glob("cert-manager.io_*.yaml"):
            shutil.copy(crd, CRDS / crd.name)
        shutil.move(built, BINARY)
    progress(f"cert-manager {PIN} controller built: {BINARY}")
    return BINARY


def start(
    kubeconfig: Path, namespace: str, log: Path, metrics_port: int, healthz_port: int
) -> subprocess.Popen[bytes]:
    """The controller against a plane: no leader election (one replica), its ClusterIssuers'
    Secrets in ``namespace``, every listener on loopback."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [
                str(BINARY),
                f"--kubeconfig={kubeconfig}",
                "--leader-elect=false",
                f"--cluster-resource-namespace={namespace}",
                f"--metrics-listen-address=127.0.0.1:{metrics_port}",
                f"--internal-healthz-listen-address=127.0.0.1:{healthz_port}",
                "--v=2",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
