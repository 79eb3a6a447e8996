"""The HTTP API through the app factory and aiohttp's test client (a real loopback server)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from dvecdb_client import bulk
from dvecdb_node.api.app import create_app
from dvecdb_node.api.keys import RECOVERED, ROLE
from dvecdb_node.settings import NodeSettings

pytestmark = pytest.mark.integration

ClientFactory = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]
Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def make_client(aiohttp_client: ClientFactory, tmp_path: Path) -> Callable[..., Any]:
    async def make(**overrides: Any) -> Client:
        fields: dict[str, Any] = {"data_dir": tmp_path / "data", "standalone": True, **overrides}
        app = create_app(NodeSettings(**fields))
        client = await aiohttp_client(app)
        await app[RECOVERED].wait()
        return client

    return make


@pytest.fixture
async def client(make_client: Callable[..., Any]) -> Client:
    c: Client = await make_client(max_batch=100, max_body_bytes=256 * 1024)
    resp = await c.post("/v1/collections", json={"name": "c", "dimension": 3, "metric": "l2"})
    assert resp.status == 201
    return c


async def _error(resp: Any, status: int, code: str) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    body: dict[str, Any] = await resp.json()
    assert body["error"]["code"] == code
    return body


async def _snapshot(client: Client) -> Any:
    status = await (await client.get("/v1/status")).json()
    described = await (await client.get("/v1/collections/c")).json()
    return status["last_seq"], described["count"]


async def test_crud_search_roundtrip(client: Client) -> None:
    resp = await client.put(
        "/v1/collections/c/vectors",
        json={
            "vectors": [
                {"id": "a", "vector": [0, 0, 0], "metadata": {"g": "x"}},
                {"id": "b", "vector": [1, 1, 1], "metadata": {"g": "y"}},
                {"id": "c", "vector": [2, 2, 2]},
            ]
        },
    )
    assert (await resp.json()) == {"seq": 2, "epoch": 1, "count": 3}
    got = await (await client.get("/v1/collections/c/vectors/b")).json()
    assert got == {"id": "b", "vector": [1, 1, 1], "metadata": {"g": "y"}}
    resp = await client.post(
        "/v1/collections/c/search",
        json={"vector": [0.9, 0.9, 0.9], "k": 2, "include_metadata": True},
    )
    body = await resp.json()
    assert [h["id"] for h in body["results"][0]] == ["b", "a"]
    assert body["results"][0][0]["metadata"] == {"g": "y"} and body["seq"] == 2
    resp = await client.post(
        "/v1/collections/c/search",
        json={"vectors": [[0, 0, 0], [2, 2, 2]], "k": 1, "filter": {"g": {"in": ["x", "y"]}}},
    )
    assert [[h["id"] for h in row] for row in (await resp.json())["results"]] == [["a"], ["b"]]
    resp = await client.post("/v1/collections/c/vectors/delete", json={"ids": ["a", "zz"]})
    assert (await resp.json()) == {"seq": 3, "epoch": 1, "count": 1}
    await _error(await client.get("/v1/collections/c/vectors/a"), 404, "vector_not_found")
    listed = await (await client.get("/v1/collections")).json()
    assert listed["collections"][0]["count"] == 2
    resp = await client.delete("/v1/collections/c")
    assert resp.status == 200
    await _error(await client.get("/v1/collections/c"), 404, "collection_not_found")


async def test_binary_bulk_upsert(client: Client) -> None:
    vectors = np.random.default_rng(1).random((50, 3), dtype=np.float32)
    ids = [f"v{i}" for i in range(50)]
    body = bulk.encode_batch(ids, vectors, [{"i": i} for i in range(50)])
    resp = await client.put(
        "/v1/collections/c/vectors?ack=leader",
        data=body,
        headers={"Content-Type": bulk.CONTENT_TYPE},
    )
    assert (await resp.json())["count"] == 50
    got = await (await client.get("/v1/collections/c/vectors/v7")).json()
    assert np.array_equal(np.array(got["vector"], np.float32), vectors[7])
    resp = await client.post(
        "/v1/collections/c/search", json={"vector": vectors[7].tolist(), "k": 1}
    )
    assert (await resp.json())["results"][0][0]["id"] == "v7"


BAD_UPSERTS: list[tuple[Any, int, str]] = [
    ({"vectors": [{"id": "a", "vector": [1, 2]}]}, 400, "dimension_mismatch"),
    ({"vectors": [{"id": "a", "vector": [1, "x", 2]}]}, 400, "invalid_vector"),
    ({"vectors": [{"id": "a", "vector": [1, 2, 1e300]}]}, 400, "non_finite"),
    ({"vectors": []}, 400, "empty_batch"),
    ({"vectors": [{"id": f"{i}", "vector": [1, 2, 3]} for i in range(101)]}, 413,
     "batch_too_large"),
    ({"vectors": [{"id": "", "vector": [1, 2, 3]}]}, 400, "invalid_id"),
    ({"vectors": [{"id": "a", "vector": [1, 2, 3], "metadata": {"k": "v" * 20000}}]}, 413,
     "metadata_too_large"),
    ({"vectors": [{"id": "a", "vector": [1, 2, 3]}], "ack": "all"}, 400, "invalid_ack"),
    ([1, 2], 400, "invalid_input"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "status", "code"), BAD_UPSERTS)
async def test_bad_upserts_change_nothing(
    client: Client, body: Any, status: int, code: str
) -> None:
    before = await _snapshot(client)
    await _error(await client.put("/v1/collections/c/vectors", json=body), status, code)
    assert await _snapshot(client) == before


async def test_malformed_and_oversized_bodies(client: Client) -> None:
    before = await _snapshot(client)
    resp = await client.put(
        "/v1/collections/c/vectors", data=b"{nope", headers={"Content-Type": "application/json"}
    )
    await _error(resp, 400, "malformed_json")
    resp = await client.put(
        "/v1/collections/c/vectors",
        data=b"x" * (300 * 1024),
        headers={"Content-Type": "application/json"},
    )
    await _error(resp, 413, "payload_too_large")
    resp = await client.put(
        "/v1/collections/c/vectors", data=b"DVB1junk", headers={"Content-Type": bulk.CONTENT_TYPE}
    )
    await _error(resp, 400, "malformed_batch")
    assert await _snapshot(client) == before


async def test_collection_errors(client: Client) -> None:
    await _error(
        await client.post("/v1/collections", json={"name": "c", "dimension": 3}),
        409,
        "collection_exists",
    )
    await _error(
        await client.post("/v1/collections", json={"name": "bad name", "dimension": 3}),
        400,
        "invalid_name",
    )
    await _error(
        await client.put("/v1/collections/nope/vectors", json={}), 404, "collection_not_found"
    )
    await _error(
        await client.post("/v1/collections/nope/search", json={}), 404, "collection_not_found"
    )
    await _error(await client.get("/no/such/path"), 404, "not_found")
    await _error(await client.patch("/v1/collections"), 405, "method_not_allowed")


async def test_ids_with_slashes_and_unicode_are_retrievable(client: Client) -> None:
    body = {"vectors": [{"id": "a/b c", "vector": [1, 2, 3]}, {"id": "ü", "vector": [3, 2, 1]}]}
    assert (await client.put("/v1/collections/c/vectors", json=body)).status == 200
    assert (await (await client.get("/v1/collections/c/vectors/a%2Fb%20c")).json())["id"] == "a/b c"
    assert (await (await client.get("/v1/collections/c/vectors/%C3%BC")).json())["vector"] == [
        3,
        2,
        1,
    ]


async def test_duplicate_ids_in_a_batch_last_wins(client: Client) -> None:
    body = {
        "vectors": [
            {"id": "d", "vector": [1, 1, 1]},
            {"id": "d", "vector": [2, 2, 2], "metadata": {"v": 2}},
        ]
    }
    assert (await (await client.put("/v1/collections/c/vectors", json=body)).json())["count"] == 1
    got = await (await client.get("/v1/collections/c/vectors/d")).json()
    assert got["vector"] == [2, 2, 2] and got["metadata"] == {"v": 2}


async def test_standby_refuses_writes_but_serves_reads(make_client: Callable[..., Any]) -> None:
    client: Client = await make_client(standalone=False)
    body = await _error(
        await client.post("/v1/collections", json={"name": "c", "dimension": 3}), 409, "not_leader"
    )
    assert body["leader"] is None
    status = await (await client.get("/v1/status")).json()
    assert status["role"] == "standby"
    assert (await client.get("/readyz")).status == 200
    client.app[ROLE].leader_url = "http://127.0.0.9:1"
    resp = await client.post("/v1/collections", json={"name": "c", "dimension": 3})
    assert resp.headers["X-DVec-Leader"] == "http://127.0.0.9:1"


async def test_consistency_levels(client: Client) -> None:
    query = {"vector": [0, 0, 0], "k": 1}
    assert (
        await client.post("/v1/collections/c/search", json={**query, "consistency": "strong"})
    ).status == 200
    assert (
        await client.post("/v1/collections/c/search", json={**query, "min_seq": 1})
    ).status == 200
    resp = await client.post(
        "/v1/collections/c/search", json={**query, "consistency": "min_seq", "min_seq": 99}
    )
    await _error(resp, 409, "stale")


async def test_api_key_guards_data_routes(make_client: Callable[..., Any]) -> None:
    client: Client = await make_client(api_key="secret")
    assert (await client.get("/healthz")).status == 200
    await _error(await client.get("/v1/collections"), 401, "unauthorized")
    await _error(
        await client.get("/v1/collections", headers={"Authorization": "Bearer nope"}),
        403,
        "forbidden",
    )
    ok = await client.get("/v1/collections", headers={"Authorization": "Bearer secret"})
    assert ok.status == 200


async def test_status_metrics_openapi(client: Client) -> None:
    await client.put(
        "/v1/collections/c/vectors", json={"vectors": [{"id": "a", "vector": [1, 2, 3]}]}
    )
    status = await (await client.get("/v1/status")).json()
    assert {"node_id", "role", "epoch", "last_seq", "applied_seq", "durable_seq", "leader",
            "followers"} <= set(status)  # fmt: skip
    assert status["role"] == "leader" and status["epoch"] == 1 and status["last_seq"] == 2
    text = await (await client.get("/metrics")).text()
    for name in (
        "dvecdb_http_request_duration_seconds_bucket",
        'dvecdb_collection_vectors{collection="c"} 1.0',
        'dvecdb_filter_value_graphs{collection="c"} 0.0',
        "dvecdb_wal_written_bytes_total",
        "dvecdb_wal_fsync_duration_seconds_count",
        "dvecdb_last_seq 2.0",
        "dvecdb_applied_seq 2.0",
        "dvecdb_checkpoint_duration_seconds",
        'dvecdb_http_request_duration_seconds_count{method="PUT",'
        'route="/v1/collections/{name}/vectors",status="200"} 1.0',
    ):
        assert name in text, name
    doc = await (await client.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.")
    assert (
        bulk.CONTENT_TYPE
        in doc["paths"]["/v1/collections/{name}/vectors"]["put"]["requestBody"]["content"]
    )


async def test_restart_keeps_data(make_client: Callable[..., Any]) -> None:
    client: Client = await make_client()
    await client.post("/v1/collections", json={"name": "c", "dimension": 3, "metric": "cosine"})
    await client.put(
        "/v1/collections/c/vectors", json={"vectors": [{"id": "a", "vector": [1, 2, 3]}]}
    )
    await client.close()
    again: Client = await make_client()
    got = await (await again.get("/v1/collections/c/vectors/a")).json()
    assert got["vector"] == [1, 2, 3]


async def test_undeclared_methods_answer_405_with_allow(client: Client) -> None:
    resp = await client.patch("/v1/collections")
    await _error(resp, 405, "method_not_allowed")
    assert set(resp.headers["Allow"].split(",")) == {"GET", "HEAD", "POST"}
    resp = await client.request("TRACE", "/v1/collections/c/search")
    await _error(resp, 405, "method_not_allowed")
    assert resp.headers["Allow"] == "POST"


async def test_the_delete_path_is_not_a_vector_id(client: Client) -> None:
    """OpenAPI matches ``/vectors/delete`` before ``/vectors/{id}``: a GET there is 405."""
    body = {
        "vectors": [{"id": "delete", "vector": [1, 2, 3]}, {"id": "x/delete", "vector": [3, 2, 1]}]
    }
    assert (await client.put("/v1/collections/c/vectors", json=body)).status == 200
    resp = await client.get("/v1/collections/c/vectors/delete")
    await _error(resp, 405, "method_not_allowed")
    assert resp.headers["Allow"] == "POST"
    assert (await client.get("/v1/collections/c/vectors/x%2Fdelete")).status == 200


async def test_the_ack_query_parameter_is_checked_and_taken_by_json_upserts(
    client: Client,
) -> None:
    body = {"vectors": [{"id": "a", "vector": [1, 2, 3]}]}
    before = await _snapshot(client)
    resp = await client.put("/v1/collections/c/vectors?ack=all", json=body)
    await _error(resp, 400, "invalid_ack")
    resp = await client.put("/v1/collections/c/vectors?ack=", json={**body, "ack": "leader"})
    await _error(resp, 400, "invalid_ack")
    assert await _snapshot(client) == before
    assert (await client.put("/v1/collections/c/vectors?ack=leader", json=body)).status == 200


async def test_the_document_is_openapi_3_1_with_this_node_limits(client: Client) -> None:
    doc = await (await client.get("/openapi.json")).json()
    assert doc["openapi"] == "3.1.0"
    upsert = doc["components"]["schemas"]["Upsert"]
    assert upsert["properties"]["vectors"]["maxItems"] == 100  # the fixture's max_batch
