"""The image table: which local entry point plays each of this project's container images.

A pod's image is never pulled: ``dvecdb/node`` runs the checkout's ``dvecdb-node`` console
script from the project venv, ``dvecdb/operator`` the ``dvecdb-operator`` one. Any other image
is refused with a message that says what localkube can run.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

DEFAULT_IMAGES: dict[str, str] = {
    "dvecdb/node": "dvecdb-node",
    "dvecdb/operator": "dvecdb-operator",
    "dvecdb/router": "dvecdb-router",
}


class ImageError(Exception):
    """This image cannot run here; ``reason`` is a Kubernetes-style waiting reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def repository(image: str) -> str:
    """``registry/ns/name:tag@digest`` -> ``ns/name`` (registry host, tag and digest dropped)."""
    name = image.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        name = name[:colon]
    parts = name.split("/")
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        parts = parts[1:]
    if parts[:1] == ["library"]:
        parts = parts[1:]
    return "/".join(parts)


def venv_bin() -> Path:
    """The folder of this interpreter's console scripts (the project venv)."""
    return Path(sys.prefix) / "bin"


def resolve_program(program: str, search: list[Path]) -> Path | None:
    """An absolute path for ``program``: itself if absolute, else the first hit in ``search``."""
    if os.sep in program:
        path = Path(program)
        return path if path.is_file() and os.access(path, os.X_OK) else None
    for folder in search:
        candidate = folder / program
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def search_path() -> list[Path]:
    """Where commands are looked up: the venv first, then the host's PATH."""
    host = [Path(p) for p in os.environ.get("PATH", "").split(os.pathsep) if p]
    return [venv_bin(), *host]


def entrypoint(image: str, table: Mapping[str, str]) -> Path:
    """The executable that plays ``image``, or ImageError saying why it cannot run."""
    repo = repository(image)
    program = table.get(repo)
    if program is None:
        known = ", ".join(sorted(table))
        raise ImageError(
            "ErrImagePull",
            f"localkube runs no container images: {image!r} has no local entry point "
            f"(known images: {known})",
        )
    path = resolve_program(program, search_path())
    if path is None:
        raise ImageError(
            "ErrImagePull",
            f"image {image!r} maps to {program!r}, which is not installed in {venv_bin()}",
        )
    return path
