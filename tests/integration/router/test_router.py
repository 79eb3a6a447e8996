"""The router in front of real node processes: answers equal one node's, writes split by slot,
tokens, partial answers, collections on every shard, writes that follow a failover."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from dvecdb_client import NodeClient, tokens
from dvecdb_client.slots import SlotMap
from dvecdb_router.app import create_app
from dvecdb_router.cluster import Cluster
from tests.conftest import NodeFactory, NodeProcess, free_port
from tests.integration.replication.conftest import TOKEN, Group, wait_converged

pytestmark = pytest.mark.integration

DIM = 16
N = 600
# ef_search above the collection size: every index answers exactly, so a sharded answer must
# equal the single node's id for id and distance for distance.
COLLECTION = {"name": "docs", "dimension": DIM, "metric": "l2", "hnsw": {"ef_search": 1000}}

RouterFactory = Callable[[list[list[str]]], Awaitable[TestClient[Any, Any]]]


@pytest_asyncio.fixture
async def router() -> AsyncIterator[RouterFactory]:
    clients: list[TestClient[Any, Any]] = []

    async def start(shards: list[list[str]], **options: Any) -> TestClient[Any, Any]:
        cluster = Cluster(shards, cluster_token=TOKEN, poll_seconds=0.2, **options)
        client = TestClient(TestServer(create_app(cluster)))
        await client.start_server()
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.close()


@pytest_asyncio.fixture
async def group(node_factory: NodeFactory) -> AsyncIterator[Group]:
    made = Group(node_factory)
    yield made
    await made.close()


def _data() -> tuple[np.ndarray, list[dict[str, Any]]]:
    vectors = np.random.default_rng(3).random((N, DIM), dtype=np.float32)
    items = [
        {"id": f"doc-{i}", "vector": vectors[i].tolist(), "metadata": {"g": i % 5, "i": i}}
        for i in range(N)
    ]
    return vectors, items


async def _load(post: Callable[..., Awaitable[Any]], items: list[dict[str, Any]]) -> None:
    for start in range(0, N, 200):
        await post({"vectors": items[start : start + 200], "ack": "leader"})


def _nodes(factory: NodeFactory, count: int) -> list[NodeProcess]:
    return [factory(standalone=True, env={"DVECDB_CLUSTER_TOKEN": TOKEN}) for _ in range(count)]


@pytest.mark.parametrize("shards", [1, 2, 4])
async def test_a_sharded_answer_equals_one_nodes(
    node_factory: NodeFactory, router: RouterFactory, shards: int
) -> None:
    reference = _nodes(node_factory, 1)[0]
    members = _nodes(node_factory, shards)
    client = await router([[m.url] for m in members])
    vectors, items = _data()
    headers = {"Authorization": f"Bearer {TOKEN}"}

    async def via_router(body: dict[str, Any]) -> Any:
        resp = await client.put("/v1/collections/docs/vectors", json=body)
        assert resp.status == 200, await resp.text()
        return await resp.json()

    async with NodeClient(reference.url, token=TOKEN) as ref:
        assert (await client.post("/v1/collections", json=COLLECTION)).status == 201
        await ref.create_collection(**COLLECTION)  # type: ignore[arg-type]
        await _load(via_router, items)
        for start in range(0, N, 200):
            await ref.upsert("docs", items[start : start + 200], ack="leader")
        described = await (await client.get("/v1/collections/docs")).json()
        assert described["count"] == N and described["shards"]["holding"] == shards
        counts = [
            (await NodeClient(m.url, token=TOKEN).get_collection("docs"))["count"] for m in members
        ]
        assert sum(counts) == N and (shards == 1 or max(counts) < N)
        queries = np.random.default_rng(9).random((12, DIM), dtype=np.float32)
        for options in (
            {},
            {"filter": {"g": 2}},
            {"filter": {"g": {"in": [1, 4]}}, "include_metadata": True},
        ):
            body = {"vectors": queries.tolist(), "k": 10, **options}
            resp = await client.post("/v1/collections/docs/search", json=body)
            assert resp.status == 200, await resp.text()
            routed = await resp.json()
            assert routed["coverage"] == {"shards": shards, "answered": shards}
            status, single = reference.request(
                "POST", "/v1/collections/docs/search", body, headers=headers
            )
            assert status == 200
            for got, want in zip(routed["results"], single["results"], strict=True):
                assert [h["id"] for h in got] == [h["id"] for h in want]
                assert [h["distance"] for h in got] == pytest.approx(
                    [h["distance"] for h in want], abs=1e-6
                )
                assert [h.get("metadata") for h in got] == [h.get("metadata") for h in want]
        # One shard: every answer was the member's bytes, forwarded (nothing to merge).
        metrics = await (await client.get("/metrics")).text()
        forwarded = 3.0 if shards == 1 else 0.0
        assert f"dvecdb_router_searches_forwarded_total {forwarded}" in metrics
        one = await (await client.get("/v1/collections/docs/vectors/doc-7")).json()
        assert one["id"] == "doc-7" and one["metadata"] == {"g": 2, "i": 7}
        assert one["vector"] == pytest.approx(vectors[7].tolist())


async def test_write_tokens_give_read_your_writes_and_bad_ones_are_refused(
    node_factory: NodeFactory, router: RouterFactory
) -> None:
    members = _nodes(node_factory, 2)
    client = await router([[m.url] for m in members])
    assert (await client.post("/v1/collections", json=COLLECTION)).status == 201
    _, items = _data()
    resp = await client.put("/v1/collections/docs/vectors", json={"vectors": items[:50]})
    written = await resp.json()
    assert resp.status == 200 and written["count"] == 50 and written["shards"] == 2
    body = {"vector": items[3]["vector"], "k": 1, "min_token": written["token"]}
    found = await (await client.post("/v1/collections/docs/search", json=body)).json()
    assert found["results"][0][0]["id"] == "doc-3"
    for bad, code in [
        ({"min_token": "t1.nope"}, "invalid_token"),
        ({"min_seq": 3}, "invalid_consistency"),
        ({"allow_partial": "yes"}, "invalid_input"),
    ]:
        resp = await client.post(
            "/v1/collections/docs/search", json={"vector": items[0]["vector"], **bad}
        )
        assert resp.status == 400 and (await resp.json())["error"]["code"] == code
    deleted = await client.post(
        "/v1/collections/docs/vectors/delete", json={"ids": ["doc-3", "doc-4"]}
    )
    assert (await deleted.json())["count"] == 2
    resp = await client.put("/v1/collections/docs/vectors", json={"vectors": [{"vector": [1]}]})
    assert resp.status == 400
    resp = await client.put(
        "/v1/collections/docs/vectors",
        data=b"\x00",
        headers={"Content-Type": "application/x-dvec-batch"},
    )
    assert resp.status == 415
    assert (await client.get("/v1/nothing")).status == 404


async def test_a_shard_with_no_serving_member_fails_the_search_unless_partial_is_allowed(
    node_factory: NodeFactory, router: RouterFactory
) -> None:
    members = _nodes(node_factory, 2)
    client = await router([[m.url] for m in members])
    assert (await client.post("/v1/collections", json=COLLECTION)).status == 201
    _, items = _data()
    await client.put("/v1/collections/docs/vectors", json={"vectors": items[:100]})
    members[1].kill()
    query = {"vector": items[0]["vector"], "k": 5}
    resp = await client.post("/v1/collections/docs/search", json=query)
    assert resp.status == 503
    assert (await resp.json())["error"] == {
        "code": "shard_unavailable",
        "message": (await resp.json())["error"]["message"],
        "shard": 1,
    }
    resp = await client.post("/v1/collections/docs/search", json={**query, "allow_partial": True})
    partial = await resp.json()
    assert resp.status == 200 and partial["coverage"] == {"shards": 2, "answered": 1}
    assert partial["results"][0] and all(
        SlotMap.even(2).shard_of(h["id"]) == 0 for h in partial["results"][0]
    )
    assert (await client.get("/readyz")).status == 503
    metrics = await (await client.get("/metrics")).text()
    assert "dvecdb_router_partial_answers_total 1.0" in metrics


async def test_collections_reach_every_shard_idempotently_and_are_repaired(
    node_factory: NodeFactory, router: RouterFactory
) -> None:
    members = _nodes(node_factory, 3)
    client = await router([[m.url] for m in members])
    assert (await client.post("/v1/collections", json=COLLECTION)).status == 201
    again = await client.post("/v1/collections", json=COLLECTION)
    assert again.status == 409 and (await again.json())["error"]["code"] == "collection_exists"
    other = {**COLLECTION, "dimension": DIM + 1}
    assert (await client.post("/v1/collections", json=other)).status == 409
    assert (await client.delete("/v1/collections/docs")).status == 200
    assert (await client.delete("/v1/collections/docs")).status == 404
    # A create that reached one shard only (a router died half-way): listing repairs it.
    async with NodeClient(members[0].url, token=TOKEN) as first:
        await first.create_collection(name="lonely", dimension=4, metric="cosine")
    listed = await (await client.get("/v1/collections")).json()
    assert [c["name"] for c in listed["collections"]] == ["lonely"]
    for member in members:
        async with NodeClient(member.url, token=TOKEN) as node:
            described = await node.get_collection("lonely")
            assert (described["dimension"], described["metric"]) == (4, "cosine")


async def test_a_live_setting_reaches_every_shard_and_its_token_reads_back(
    node_factory: NodeFactory, router: RouterFactory
) -> None:
    members = _nodes(node_factory, 2)
    client = await router([[m.url] for m in members])
    assert (await client.post("/v1/collections", json=COLLECTION)).status == 201
    answer = await client.patch("/v1/collections/docs", json={"hnsw": {"ef_search": 77}})
    assert answer.status == 200, await answer.text()
    doc = await answer.json()
    assert doc["hnsw"]["ef_search"] == 77 and doc["shards"] == 2 and doc["token"]
    for member in members:
        async with NodeClient(member.url, token=TOKEN) as node:
            assert (await node.get_collection("docs"))["hnsw"]["ef_search"] == 77
    body = {"vector": [0.0] * DIM, "k": 1, "min_token": doc["token"]}
    assert (await client.post("/v1/collections/docs/search", json=body)).status == 200
    fixed = await client.patch("/v1/collections/docs", json={"dimension": 3})
    assert fixed.status == 400  # the node's refusal, relayed


async def test_writes_follow_the_shard_leader_across_a_failover(
    group: Group, router: RouterFactory
) -> None:
    group.start(2)
    first, second = group.clients
    await first.promote(1)
    await second.follow(group.nodes[0].url, 1)
    await wait_converged(group.clients, within=30)
    client = await router([[group.nodes[1].url, group.nodes[0].url]], leader_wait_seconds=15)
    assert (await client.post("/v1/collections", json=COLLECTION)).status == 201
    _, items = _data()
    before = await client.put("/v1/collections/docs/vectors", json={"vectors": items[:10]})
    assert before.status == 200
    # A failover by hand: promote the follower, point the old leader at it.
    await second.promote(2)
    await first.follow(group.nodes[1].url, 2)
    after = await client.put("/v1/collections/docs/vectors", json={"vectors": items[10:20]})
    assert after.status == 200, await after.text()
    [(epoch, _)] = tokens.decode((await after.json())["token"]).values()
    assert epoch == 2
    await wait_converged([second, first], within=30)
    assert (await second.get_collection("docs"))["count"] == 20
    metrics = await (await client.get("/metrics")).text()
    assert 'dvecdb_router_retries_total{reason="' in metrics


def test_the_router_process_serves_on_its_port(node_factory: NodeFactory, tmp_path: Path) -> None:
    """``dvecdb-router`` as users run it: flags in, the data API out, stopped by SIGTERM."""
    members = _nodes(node_factory, 2)
    port = free_port()
    argv = [
        str(Path(sys.executable).parent / "dvecdb-router"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--shard",
        members[0].url,
        "--shard",
        members[1].url,
        "--cluster-token",
        TOKEN,
    ]
    log = (tmp_path / "router.log").open("wb")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, (
                tmp_path / "router.log"
            ).read_text()
            time.sleep(0.05)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/status", timeout=5) as r:
            status = json.loads(r.read())
        assert status["role"] == "router" and len(status["shards"]) == 2
        assert status["shards"][1]["slots"] == [[2048, 4095]]
        # Data through the process (its event loop is uvloop's, unlike this test's).
        base = f"http://127.0.0.1:{port}"
        _, items = _data()

        def call(method: str, path: str, body: dict[str, Any]) -> Any:
            request = urllib.request.Request(
                base + path,
                data=json.dumps(body).encode(),
                method=method,
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=10) as r:
                return json.loads(r.read())

        assert call("POST", "/v1/collections", COLLECTION)["shards"] == 2
        assert call("PUT", "/v1/collections/docs/vectors", {"vectors": items[:40]})["count"] == 40
        query = {"vector": items[5]["vector"], "k": 3}
        found = call("POST", "/v1/collections/docs/search", query)
        assert found["results"][0][0]["id"] == "doc-5" and len(found["results"][0]) == 3
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        log.close()
    bad = subprocess.run(
        [argv[0], "--shard", "ftp://x"], capture_output=True, text=True, timeout=30
    )
    assert bad.returncode == 2 and "must start with http" in bad.stderr


async def test_the_python_client_reads_its_own_writes_through_the_router(
    node_factory: NodeFactory, router: RouterFactory
) -> None:
    members = _nodes(node_factory, 2)
    client = await router([[m.url] for m in members])
    assert (await client.post("/v1/collections", json=COLLECTION)).status == 201
    _, items = _data()
    owners = SlotMap.even(2)
    first = [item for item in items if owners.shard_of(item["id"]) == 0][:5]
    second = [item for item in items if owners.shard_of(item["id"]) == 1][:5]
    async with NodeClient(str(client.make_url("")), token=TOKEN) as via_router:
        await via_router.upsert("docs", first)
        after_first = tokens.decode(via_router.last_write_token or "")
        await via_router.upsert("docs", second)
        combined = tokens.decode(via_router.last_write_token or "")
        # The second write touched shard 1 only; the client's token still covers shard 0.
        assert set(after_first) == {0} and set(combined) == {0, 1}
        assert combined[0] == after_first[0]
        for item in (first[0], second[0]):
            found = await via_router.search("docs", item["vector"], k=1, consistency="min_seq")
            assert found["results"][0][0]["id"] == item["id"]
            assert found["coverage"] == {"shards": 2, "answered": 2}


async def test_one_shard_forwards_its_answer_unless_the_merge_would_change_it(
    node_factory: NodeFactory, router: RouterFactory
) -> None:
    """Equal distances are ordered by id (the merge's rule), as with several shards; options
    the router rewrites (min_token, allow_partial) give the same hits as the client's bytes."""
    [member] = _nodes(node_factory, 1)
    client = await router([[member.url]])
    assert (await client.post("/v1/collections", json=COLLECTION)).status == 201
    _, items = _data()
    await client.put("/v1/collections/docs/vectors", json={"vectors": items[:50]})
    # Five ids at one vector, written in reverse id order: their distances tie exactly.
    same = [5.0] * DIM  # far from the others (in [0, 1))
    twins = [{"id": f"twin-{c}", "vector": same} for c in "edcba"]
    written = await client.put("/v1/collections/docs/vectors", json={"vectors": twins})
    token = (await written.json())["token"]

    async def search(body: dict[str, Any]) -> tuple[list[str], float]:
        resp = await client.post("/v1/collections/docs/search", json=body)
        assert resp.status == 200, await resp.text()
        doc = await resp.json()
        assert set(doc) == {"results", "coverage"}
        assert doc["coverage"] == {"shards": 1, "answered": 1}
        metrics = await (await client.get("/metrics")).text()
        [line] = [
            x
            for x in metrics.splitlines()
            if x.startswith("dvecdb_router_searches_forwarded_total")
        ]
        return [h["id"] for h in doc["results"][0]], float(line.split()[-1])

    ids, forwarded = await search({"vector": same, "k": 5})
    assert ids == [f"twin-{c}" for c in "abcde"] and forwarded == 0.0  # the merge ordered them
    plain = {"vector": items[3]["vector"], "k": 4}
    ids, forwarded = await search(plain)
    assert ids[0] == "doc-3" and forwarded == 1.0
    rewritten = {**plain, "min_token": token, "allow_partial": True}
    again, forwarded = await search(rewritten)
    assert again == ids and forwarded == 2.0
