"""The router image: it routes a real node's data API from inside a container, runs as the
non-root user, and carries neither the node (hnswlib) nor the operator (kopf)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest

from images import build
from tests.conftest import NodeFactory, free_port
from tests.images.conftest import BUILD_TIMEOUT, RUN_USER, assert_image_holds_checkout, podman

pytestmark = [pytest.mark.images, pytest.mark.timeout(BUILD_TIMEOUT + 300)]


def _call(url: str, method: str = "GET", body: object = None) -> tuple[int, dict[str, object]]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_router_container_routes_to_real_nodes(
    built_images: dict[str, str], node_factory: NodeFactory
) -> None:
    shards = [node_factory(standalone=True) for _ in range(2)]
    port = free_port()
    container = podman(
        "run", "--detach", "--network", "host", *build.ulimit_args(),
        built_images["router"], "--host", "127.0.0.1", "--port", str(port),
        "--shard", shards[0].url, "--shard", shards[1].url,
    ).stdout.strip()  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if _call(url + "/readyz")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, podman("logs", container, check=False).stdout
            time.sleep(0.2)
        create = {"name": "c", "dimension": 2, "metric": "l2"}
        assert _call(url + "/v1/collections", "POST", create)[0] == 201
        items = [{"id": f"v{i}", "vector": [float(i), 0.0]} for i in range(40)]
        status, written = _call(url + "/v1/collections/c/vectors", "PUT", {"vectors": items})
        assert status == 200 and written["count"] == 40 and written["shards"] == 2
        status, found = _call(
            url + "/v1/collections/c/search", "POST", {"vector": [7.2, 0.0], "k": 2}
        )
        assert status == 200 and found["coverage"] == {"shards": 2, "answered": 2}
        assert [hit["id"] for hit in found["results"][0]] == ["v7", "v8"]  # type: ignore[index]
        counts = [_call(s.url + "/v1/collections/c")[1]["count"] for s in shards]
        assert sum(counts) == 40 and min(counts) > 0  # type: ignore[type-var]
    finally:
        podman("rm", "--force", container, check=False)


def test_router_image_metadata_and_contents(built_images: dict[str, str]) -> None:
    config = json.loads(podman("image", "inspect", built_images["router"]).stdout)[0]["Config"]
    assert config["User"] == f"{RUN_USER}:{RUN_USER}"
    assert config["Entrypoint"] == ["dvecdb-router"]
    probe = (
        "import importlib.util as u, json, os\n"
        "print(json.dumps({'uid': os.getuid(), 'present': {m: u.find_spec(m) is not None "
        "for m in ('dvecdb_router', 'dvecdb_client', 'hnswlib', 'kopf', 'dvecdb_node', 'pip')}}))"
    )
    out = podman(
        "run", "--rm", "--network", "host", *build.ulimit_args(),
        "--entrypoint", "python", built_images["router"], "-c", probe,
    ).stdout  # fmt: skip
    seen = json.loads(out)
    assert seen["uid"] == int(RUN_USER)
    assert seen["present"] == {
        "dvecdb_router": True,
        "dvecdb_client": True,
        "hnswlib": False,
        "kopf": False,
        "dvecdb_node": False,
        "pip": False,
    }
    assert_image_holds_checkout(
        built_images["router"], {"dvecdb_router": "router", "dvecdb_client": "client"}
    )
