"""The node image runs as users run it: its entrypoint, its non-root user writing a volume owned
the way Kubernetes' ``fsGroup`` leaves it, its data surviving a new container, and nothing of
the operator inside."""

from __future__ import annotations

import json
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from dvecdb_client import SyncNodeClient
from images import build
from tests.images.conftest import (
    BUILD_TIMEOUT,
    RUN_USER,
    Containers,
    assert_image_holds_checkout,
    podman,
    start_node,
)

pytestmark = [pytest.mark.images, pytest.mark.timeout(BUILD_TIMEOUT + 300)]
FS_GROUP = 10001


@pytest.fixture
def fs_group_volume() -> Iterator[Path]:
    """A host folder as the kubelet prepares a volume for ``fsGroup``: root-owned, group
    ``fsGroup`` with setgid and group write, nothing for others."""
    with tempfile.TemporaryDirectory(prefix="dvecdb-image-volume-") as tmp:
        volume = Path(tmp) / "data"
        volume.mkdir()
        os.chown(volume, 0, FS_GROUP)
        volume.chmod(0o2770)
        yield volume


def test_node_image_metadata_declares_user_volume_and_entrypoint(
    built_images: dict[str, str],
) -> None:
    config = json.loads(podman("image", "inspect", built_images["node"]).stdout)[0]["Config"]
    assert config["User"] == f"{RUN_USER}:{RUN_USER}"
    assert "/data" in config["Volumes"]
    assert config["Entrypoint"] == ["dvecdb-node"]
    assert config["Cmd"] == ["--host", "0.0.0.0", "--port", "8080", "--data-dir", "/data"]
    # Built in the docker format, which keeps the HEALTHCHECK (OCI image configs drop it).
    check = json.loads(
        podman("image", "inspect", "--format", "{{json .HealthCheck}}", built_images["node"]).stdout
    )
    assert check["Test"][0] == "CMD" and "/healthz" in check["Test"][-1]


def test_node_image_holds_the_node_but_not_the_operator(built_images: dict[str, str]) -> None:
    probe = (
        "import importlib.util as u, json, os; "
        "print(json.dumps({'uid': os.getuid(), "
        "'present': {m: u.find_spec(m) is not None for m in "
        "('dvecdb_node', 'dvecdb_node.storage._filtered_knn', 'dvecdb_client', 'hnswlib', "
        "'kopf', 'kubernetes', 'pip')}}))"
    )
    out = podman(
        "run", "--rm", "--network", "host", *build.ulimit_args(),
        "--entrypoint", "python", built_images["node"], "-c", probe,
    ).stdout  # fmt: skip
    seen = json.loads(out)
    assert seen["uid"] == int(RUN_USER)
    assert seen["present"] == {
        "dvecdb_node": True,
        # The compiled filter, built in the image's own build stage.
        "dvecdb_node.storage._filtered_knn": True,
        "dvecdb_client": True,
        "hnswlib": True,
        "kopf": False,
        "kubernetes": False,
        "pip": False,
    }


def test_node_container_serves_writes_its_volume_and_keeps_data_across_containers(
    built_images: dict[str, str], containers: Containers, fs_group_volume: Path
) -> None:
    image = built_images["node"]
    first, url = start_node(containers, image, fs_group_volume, node_id="image-test-0")
    with SyncNodeClient(url) as client:
        client.create_collection("docs", 3)
        wrote = client.upsert(
            "docs",
            [
                {"id": "a", "vector": [0, 0, 0], "metadata": {"g": "x"}},
                {"id": "b", "vector": [1, 1, 1]},
                {"id": "c", "vector": [5, 5, 5]},
            ],
            ack="leader",
        )
        assert wrote["count"] == 3
        hits = client.search("docs", [0.9, 0.9, 0.9], k=2)
        assert [h["id"] for h in hits["results"][0]] == ["b", "a"]
        # A filtered search walks hnswlib's graph through the compiled filter.
        hits = client.search("docs", [4, 4, 4], k=2, filter={"g": {"in": ["x"]}})
        assert [h["id"] for h in hits["results"][0]] == ["a"]

    # The node wrote its WAL into the volume as its own user, through the group's write bit.
    written = [p for p in fs_group_volume.rglob("*") if p.is_file()]
    assert written, "the node wrote nothing into its volume"
    for path in written:
        st = path.stat()
        assert (st.st_uid, st.st_gid) == (int(RUN_USER), FS_GROUP), path
    assert stat.S_IMODE(fs_group_volume.stat().st_mode) & stat.S_ISGID

    # SIGTERM through podman stop, then a new container on the same volume.
    containers.stop(first)
    assert podman("inspect", "--format", "{{.State.ExitCode}}", first).stdout.strip() == "0"
    _, url = start_node(containers, image, fs_group_volume, node_id="image-test-0")
    with SyncNodeClient(url) as client:
        hits = client.search("docs", [4.8, 5, 5], k=1, include_metadata=True)
        assert [h["id"] for h in hits["results"][0]] == ["c"]
        assert client.get("docs", "a") == {
            "id": "a",
            "vector": [0, 0, 0],
            "metadata": {"g": "x"},
        }


def test_node_image_runs_this_checkouts_code(built_images: dict[str, str]) -> None:
    """The layer cache rebuilt what changed: the installed sources are the checkout's."""
    assert_image_holds_checkout(
        built_images["node"], {"dvecdb_node": "node", "dvecdb_client": "client"}
    )
