"""``make images``: the node, operator and router images, built with podman over a Debian base.

No image registry is reachable here, so the base the Dockerfiles take as ``BASE`` (the public
``python:3.11-slim`` for users) is a Debian bookworm root file system made by ``mmdebstrap
--variant=minbase`` from Debian's packages, cached as a tarball under
``~/.cache/dvecdb/images/`` keyed by everything that decides its content (suite, variant,
package list, path filters), and imported into podman's local storage once.

podman on these machines: ``runc`` with the ``cgroupfs`` manager (``crun`` refuses the hybrid
cgroup v1 layout) and explicit ``nofile`` and ``nproc`` limits (``ULIMITS``: podman's defaults
are above what runc may set here and the container fails to start). Builds use the host's
network (no bridge, no addresses but the host's) and ``--layers``, so an unchanged checkout
rebuilds from cache in seconds. A TLS-intercepting egress is trusted inside the build by handing
the host's CA bundle to pip as a build secret; it stays out of every layer.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VERSION = "0.1.0"
COMPONENTS = ("node", "operator", "router")

SUITE = "bookworm"
VARIANT = "minbase"
# python3-venv: both stages make a virtualenv; libstdc++6: hnswlib's extension; passwd: useradd.
BASE_PACKAGES = ("libstdc++6", "passwd", "python3", "python3-venv")
# Documentation and translations are no use in an image (Debian's own slim images drop them).
DPKG_OPTIONS = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/info/*",
)

PODMAN = ("podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs")
# Explicit limits, each within what runc may set here: the sandbox has no CAP_SYS_RESOURCE, so
# no hard limit can be raised, and podman's defaults ask for more (nofile 1,048,576 against the
# host's 20,000; nproc the caller's 96,365 against conmon's 32,768: "error setting rlimit type 6:
# operation not permitted").
ULIMITS = ("nofile=20000:20000", "nproc=4096:4096")


def ulimit_args() -> list[str]:
    return [arg for limit in ULIMITS for arg in ("--ulimit", limit)]


CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# Every stage of both Dockerfiles carries it (LABEL), and only such images are ever pruned.
LABEL = "io.dvecdb.image"
TOOLS = ("podman", "runc", "mmdebstrap")


@dataclass(frozen=True)
class Built:
    """One image as ``make images`` left it."""

    ref: str
    seconds: float
    size_bytes: int


def image_ref(component: str) -> str:
    return f"localhost/dvecdb/{component}:{VERSION}"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dvecdb" / "images"


def base_key() -> str:
    """Digest of everything that decides the base's content: a new list makes a new base."""
    spec = {
        "suite": SUITE,
        "variant": VARIANT,
        "packages": sorted(BASE_PACKAGES),
        "dpkg": list(DPKG_OPTIONS),
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


def base_ref() -> str:
    return f"localhost/dvecdb/base:{SUITE}-{base_key()}"


def missing_tools() -> list[str]:
    return [tool for tool in TOOLS if shutil.which(tool) is None]


def podman(*args: str, capture: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PODMAN, *args],
        check=True,
        text=True,
        stdout=subprocess.PIPE if capture else None,
    )


def image_exists(ref: str) -> bool:
    return subprocess.run([*PODMAN, "image", "exists", ref], check=False).returncode == 0


def image_size(ref: str) -> int:
    out = podman("image", "inspect", "--format", "{{.Size}}", ref, capture=True).stdout
    return int(out.strip())


def make_base_tarball(target: Path) -> None:
    """mmdebstrap into a temporary file beside ``target``, renamed only once complete."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".base-") as tmp:
        partial = Path(tmp) / "base.tar"
        command = [
            "mmdebstrap",
            f"--variant={VARIANT}",
            f"--include={','.join(BASE_PACKAGES)}",
            *(f"--dpkgopt={option}" for option in DPKG_OPTIONS),
            '--aptopt=Acquire::Languages "none"',
            SUITE,
            str(partial),
        ]
        subprocess.run(command, check=True)
        partial.replace(target)


def ensure_base() -> tuple[str, float | None]:
    """The base image's reference, and how long making it took (None when it was cached)."""
    ref = base_ref()
    if image_exists(ref):
        return ref, None
    started = time.monotonic()
    tarball = cache_dir() / f"base-{SUITE}-{base_key()}.tar"
    if not tarball.exists():
        make_base_tarball(tarball)
    podman(
        "import",
        "--change",
        'CMD ["python3"]',
        "--message",
        f"mmdebstrap {VARIANT} {SUITE}: {' '.join(BASE_PACKAGES)}",
        str(tarball),
        ref,
    )
    return ref, time.monotonic() - started


def build_stage_ref(component: str) -> str:
    return f"localhost/dvecdb/{component}-build:{VERSION}"


def build_image(component: str, base: str) -> Built:
    """Builds the image, and tags its build stage first: a tagged stage is no dangling image, so
    ``prune_stale`` keeps the layers the next build reuses."""
    ref = image_ref(component)
    common = [
        "build",
        "--layers",
        # The docker format keeps HEALTHCHECK (OCI image configs have no such field).
        "--format",
        "docker",
        "--network",
        "host",
        *ulimit_args(),
        "--build-arg",
        f"BASE={base}",
        "--file",
        str(ROOT / f"Dockerfile.{component}"),
    ]
    if CA_BUNDLE.is_file():
        common += ["--secret", f"id=pip-ca,src={CA_BUNDLE}"]
    started = time.monotonic()
    podman(*common, "--target", "build", "--tag", build_stage_ref(component), str(ROOT))
    podman(*common, "--tag", ref, str(ROOT))
    return Built(ref=ref, seconds=time.monotonic() - started, size_bytes=image_size(ref))


def prune_stale() -> None:
    """Drops this project's untagged layers that no tagged image stands on (those of older
    checkouts); without it every source change leaves hundreds of MB behind."""
    podman("image", "prune", "--force", "--filter", f"label={LABEL}", capture=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m images.build",
        description="Build the node, operator and router images over the cached mmdebstrap base.",
    )
    parser.add_argument(
        "--only", action="append", choices=COMPONENTS, help="build this image only (repeatable)"
    )
    parser.add_argument(
        "--base",
        help="build over this image instead of the cached mmdebstrap base (e.g. python:3.11-slim)",
    )
    parser.add_argument("--print-base", action="store_true", help="print the base's reference")
    args = parser.parse_args(argv)
    if args.print_base:
        print(base_ref())
        return 0
    missing = missing_tools()
    if missing:
        print(f"missing {', '.join(missing)}: `make image-tools` installs them", file=sys.stderr)
        return 2
    # Four engineers share two cores: the builds and everything they start yield to the rest.
    os.nice(10)
    if args.base:
        base, base_seconds = args.base, None
    else:
        base, base_seconds = ensure_base()
    made = "cached" if base_seconds is None else f"made in {base_seconds:.1f}s"
    lines = [f"base      {base} ({made})"]
    for component in args.only or COMPONENTS:
        built = build_image(component, base)
        size_mb = built.size_bytes / 1e6
        lines.append(f"{component:<9} {built.ref} {size_mb:.0f} MB, built in {built.seconds:.1f}s")
    prune_stale()
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
