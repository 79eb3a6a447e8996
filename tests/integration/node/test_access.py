"""Keys on a real node: the read-only key reads and cannot write, through both servers (the
aiohttp routes and the search fast lane), and an edited secrets folder takes effect live."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.conftest import NodeFactory

pytestmark = pytest.mark.integration


def _auth(token: str | None) -> dict[str, str]:
    return {} if token is None else {"Authorization": f"Bearer {token}"}


def test_each_key_gets_what_it_may(node_factory: NodeFactory, tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "apiKey").write_text("rw-1\n")
    (secrets / "readOnlyKey").write_text("ro-1\n")
    node = node_factory(
        env={
            "DVECDB_SECRETS_DIR": str(secrets),
            "DVECDB_SECRETS_REFRESH_SECONDS": "0.2",
            "DVECDB_CLUSTER_TOKEN": "cluster-1",
        }
    )
    create = {"name": "c", "dimension": 2, "metric": "l2"}
    assert node.request("POST", "/v1/collections", create)[0] == 401
    assert node.request("POST", "/v1/collections", create, headers=_auth("ro-1"))[0] == 403
    assert node.request("POST", "/v1/collections", create, headers=_auth("rw-1"))[0] == 201
    upsert = {"vectors": [{"id": "a", "vector": [1, 2]}]}
    status, body = node.request("PUT", "/v1/collections/c/vectors", upsert, headers=_auth("ro-1"))
    assert status == 403 and body["error"]["code"] == "read_only"
    assert node.request("PUT", "/v1/collections/c/vectors", upsert, headers=_auth("rw-1"))[0] == 200
    search = {"vector": [1, 2], "k": 1}
    for token, expected in [(None, 401), ("wrong", 403), ("ro-1", 200), ("rw-1", 200)]:
        # A fresh connection per call: the first request of a connection goes to the fast lane.
        status, body = node.request(
            "POST", "/v1/collections/c/search", search, headers=_auth(token)
        )
        assert status == expected, (token, body)
    assert node.request("GET", "/v1/collections/c/vectors/a", headers=_auth("ro-1"))[0] == 200
    assert node.request("DELETE", "/v1/collections/c", headers=_auth("ro-1"))[0] == 403
    assert node.request("POST", "/v1/admin/fence", {"epoch": 5}, headers=_auth("rw-1"))[0] == 403
    assert node.request("GET", "/v1/status", headers=_auth("cluster-1"))[0] == 200
    assert node.request("GET", "/healthz")[0] == 200

    # Rotation: the new key opens the API as soon as the folder says so, the old one keeps
    # working until it is removed, without a restart.
    (secrets / "apiKey").write_text("rw-2\nrw-1\n")
    deadline = time.monotonic() + 10
    while node.request("GET", "/v1/collections", headers=_auth("rw-2"))[0] != 200:
        assert time.monotonic() < deadline, "the new key was not taken up"
        time.sleep(0.1)
    assert node.request("GET", "/v1/collections", headers=_auth("rw-1"))[0] == 200
    (secrets / "apiKey").write_text("rw-2\n")
    while node.request("GET", "/v1/collections", headers=_auth("rw-1"))[0] != 403:
        assert time.monotonic() < deadline, "the removed key still opens the API"
        time.sleep(0.1)
