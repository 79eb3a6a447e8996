"""The router as the operator runs it: members from a file that changes under it, and the
client's own key carried to real nodes that check it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from dvecdb_router.app import create_app
from dvecdb_router.cluster import Cluster
from dvecdb_router.config import FileSource
from tests.conftest import NodeFactory
from tests.integration.replication.conftest import TOKEN

pytestmark = pytest.mark.integration

API_KEY = "router-test-api-key"
READ_ONLY = "router-test-read-only"
COLLECTION = {"name": "docs", "dimension": 4, "metric": "l2"}


def write_members(path: Path, shards: list[list[str]], version: int = 1) -> None:
    doc = {
        "slotMap": {"version": version, "shards": len(shards)},
        "shards": [{"shard": i, "members": m} for i, m in enumerate(shards)],
    }
    path.write_bytes(orjson.dumps(doc))


@pytest_asyncio.fixture
async def clients() -> AsyncIterator[list[TestClient[Any, Any]]]:
    made: list[TestClient[Any, Any]] = []
    yield made
    for client in made:
        await client.close()


async def test_members_file_changes_and_client_keys_reach_the_members(
    node_factory: NodeFactory, tmp_path: Path, clients: list[TestClient[Any, Any]]
) -> None:
    env = {
        "DVECDB_CLUSTER_TOKEN": TOKEN,
        "DVECDB_API_KEY": API_KEY,
        "DVECDB_READ_ONLY_KEY": READ_ONLY,
    }
    first, second = (node_factory(standalone=True, env=env) for _ in range(2))
    path = tmp_path / "members.json"
    write_members(path, [[first.url], []])  # shard 1's pod has no address yet
    cluster = Cluster(
        [[first.url], []], cluster_token=TOKEN, poll_seconds=0.2, source=FileSource(path)
    )
    client = TestClient(TestServer(create_app(cluster)))
    await client.start_server()
    clients.append(client)
    key = {"Authorization": f"Bearer {API_KEY}"}

    # Without a key the members refuse, with the read-only key they refuse writes.
    assert (await client.get("/v1/collections")).status in (401, 503)
    assert (await client.post("/v1/collections", json=COLLECTION)).status == 503  # shard 1
    write_members(path, [[first.url], [second.url]], version=2)
    for _ in range(50):
        if all(cluster.shards) and (await client.get("/readyz")).status == 200:
            break
        await asyncio.sleep(0.1)
    assert [[m.url for m in s] for s in cluster.shards] == [[first.url], [second.url]]
    assert cluster.slot_map.version == 2
    assert (await client.post("/v1/collections", json=COLLECTION)).status == 401
    resp = await client.post("/v1/collections", json=COLLECTION, headers=key)
    assert resp.status == 201, await resp.text()
    vectors = [{"id": f"v{i}", "vector": [float(i), 0.0, 0.0, 1.0]} for i in range(40)]
    body = {"vectors": vectors, "ack": "leader"}
    read_only = {"Authorization": f"Bearer {READ_ONLY}"}
    assert (await client.put("/v1/collections/docs/vectors", json=body)).status == 401
    assert (
        await client.put("/v1/collections/docs/vectors", json=body, headers=read_only)
    ).status == 403
    resp = await client.put("/v1/collections/docs/vectors", json=body, headers=key)
    assert resp.status == 200, await resp.text()
    query = {"vector": [0.0, 0.0, 0.0, 1.0], "k": 40}
    resp = await client.post("/v1/collections/docs/search", json=query, headers=read_only)
    assert resp.status == 200, await resp.text()
    found = await resp.json()
    assert found["coverage"] == {"shards": 2, "answered": 2}
    assert len(found["results"][0]) == 40
