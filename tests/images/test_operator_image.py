"""The operator image: its entrypoint answers, it runs as the non-root user, and it carries the
operator's dependencies but not the node's (no hnswlib)."""

from __future__ import annotations

import json

import pytest

from images import build
from tests.images.conftest import BUILD_TIMEOUT, RUN_USER, assert_image_holds_checkout, podman

pytestmark = [pytest.mark.images, pytest.mark.timeout(BUILD_TIMEOUT + 300)]


def test_operator_entrypoint_prints_its_help(built_images: dict[str, str]) -> None:
    proc = podman(
        "run", "--rm", "--network", "host", *build.ulimit_args(),
        built_images["operator"], "--help",
    )  # fmt: skip
    assert "usage: dvecdb-operator" in proc.stdout
    assert "--all-namespaces" in proc.stdout


def test_operator_image_metadata_declares_user_and_entrypoint(
    built_images: dict[str, str],
) -> None:
    config = json.loads(podman("image", "inspect", built_images["operator"]).stdout)[0]["Config"]
    assert config["User"] == f"{RUN_USER}:{RUN_USER}"
    assert config["Entrypoint"] == ["dvecdb-operator"]
    assert config["Cmd"] == ["--all-namespaces"]


def test_operator_image_holds_the_operator_but_not_hnswlib(built_images: dict[str, str]) -> None:
    probe = (
        "import importlib, importlib.util as u, json, os\n"
        "try:\n    importlib.import_module('hnswlib'); hnsw = 'imported'\n"
        "except ImportError as exc:\n    hnsw = type(exc).__name__\n"
        "importlib.import_module('dvecdb_operator.cli')\n"
        "print(json.dumps({'uid': os.getuid(), 'hnswlib': hnsw, "
        "'present': {m: u.find_spec(m) is not None for m in "
        "('dvecdb_operator', 'dvecdb_client', 'kopf', 'kubernetes', 'dvecdb_node', 'pip')}}))"
    )
    out = podman(
        "run", "--rm", "--network", "host", *build.ulimit_args(),
        "--entrypoint", "python", built_images["operator"], "-c", probe,
    ).stdout  # fmt: skip
    seen = json.loads(out)
    assert seen["uid"] == int(RUN_USER)
    assert seen["hnswlib"] == "ModuleNotFoundError"
    assert seen["present"] == {
        "dvecdb_operator": True,
        "dvecdb_client": True,
        "kopf": True,
        "kubernetes": True,
        "dvecdb_node": False,
        "pip": False,
    }


def test_operator_image_runs_this_checkouts_code(built_images: dict[str, str]) -> None:
    """The layer cache rebuilt what changed: the installed sources are the checkout's."""
    assert_image_holds_checkout(
        built_images["operator"], {"dvecdb_operator": "operator", "dvecdb_client": "client"}
    )
