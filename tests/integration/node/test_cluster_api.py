"""A cluster member's HTTP API in process (replication installed, no peers): positions in
status and admin answers, the leader lease, the write epoch under the write lock, the read
gate, and honest answers while recovering."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from dvecdb_client import NodeClient, querybody
from dvecdb_client import NodeError as ClientNodeError
from dvecdb_node.api.app import create_app
from dvecdb_node.api.keys import ENGINE, RECOVERED
from dvecdb_node.replication.install import install
from dvecdb_node.settings import NodeSettings
from dvecdb_node.storage.engine import Engine

pytestmark = pytest.mark.integration

TOKEN = "cluster-secret"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
ClientFactory = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]
Client = TestClient[web.Request, web.Application]
POSITIONS = {"role", "epoch", "last_epoch", "last_seq", "received_seq", "applied_seq"}


@pytest.fixture
async def make_member(aiohttp_client: ClientFactory, tmp_path: Path) -> Callable[..., Any]:
    async def make(**overrides: Any) -> Client:
        fields: dict[str, Any] = {
            "data_dir": tmp_path / "data",
            "node_id": "m0",
            "cluster_token": TOKEN,
            **overrides,
        }
        app = create_app(NodeSettings(**fields), extra_routes=[install])
        client = await aiohttp_client(app)
        await app[RECOVERED].wait()
        return client

    return make


async def admin(client: Client, action: str, **body: Any) -> tuple[int, dict[str, Any]]:
    resp = await client.post(f"/v1/admin/{action}", json=body, headers=ADMIN)
    return resp.status, await resp.json()


async def test_status_and_admin_answers_carry_log_positions(
    make_member: Callable[..., Any],
) -> None:
    member: Client = await make_member()
    status = await (await member.get("/v1/status")).json()
    assert POSITIONS <= set(status)
    assert (status["role"], status["last_epoch"], status["last_seq"]) == ("standby", 0, 0)
    code, promoted = await admin(member, "promote", epoch=3)
    assert code == 200 and POSITIONS <= set(promoted)
    # The promote opened epoch 3 in the log with a Noop record.
    assert (promoted["role"], promoted["epoch"], promoted["last_epoch"]) == ("leader", 3, 3)
    assert promoted["last_seq"] == promoted["received_seq"] == promoted["applied_seq"] == 1
    code, fenced = await admin(member, "fence", epoch=4)
    assert code == 200 and POSITIONS <= set(fenced)
    # It never acked a leader: the age is bounded by the time since the process started.
    assert 0 <= fenced["last_ack_seconds"] < 60
    assert (fenced["role"], fenced["epoch"], fenced["last_epoch"], fenced["last_seq"]) == (
        "standby",
        4,
        3,
        1,
    )


class _SlowRecovery(Engine):
    """An engine whose recovery waits until the test lets it finish."""

    release: asyncio.Event

    async def recover(self) -> None:
        await self.release.wait()
        await super().recover()


async def test_a_recovering_node_answers_503_recovering_not_wrong_facts(
    aiohttp_client: ClientFactory, tmp_path: Path
) -> None:
    settings = NodeSettings(data_dir=tmp_path, standalone=True)
    first = create_app(settings)
    client = await aiohttp_client(first)
    await first[RECOVERED].wait()
    created = await client.post("/v1/collections", json={"name": "c", "dimension": 2})
    assert created.status == 201
    await client.close()

    engine = _SlowRecovery(tmp_path, settings.engine_options())
    engine.release = asyncio.Event()
    again = await aiohttp_client(create_app(settings, engine=engine))
    calls = [
        again.get("/v1/collections"),
        again.get("/v1/collections/c"),
        again.get("/v1/collections/c/vectors/a"),
        again.post("/v1/collections/c/search", json={"vector": [0, 0]}),
        again.post("/v1/collections", json={"name": "d", "dimension": 2}),
        again.put("/v1/collections/c/vectors", json={"vectors": [{"id": "a", "vector": [1, 1]}]}),
        again.delete("/v1/collections/c"),
    ]
    for call in calls:
        resp = await call
        assert resp.status == 503, await resp.text()
        assert (await resp.json())["error"]["code"] == "recovering"
        assert resp.headers["Retry-After"] == "1"
    assert (await again.get("/readyz")).status == 503
    engine.release.set()
    await again.app[RECOVERED].wait()
    listed = await (await again.get("/v1/collections")).json()
    assert [c["name"] for c in listed["collections"]] == ["c"]


async def test_a_storage_error_is_named_by_readyz_status_and_data_calls(
    make_member: Callable[..., Any],
) -> None:
    member: Client = await make_member(standalone=True)
    assert (await member.get("/readyz")).status == 200
    # What the engine reports after an fsync failure or a corrupt log.
    member.app[ENGINE]._storage_error = "fsync of wal/00000001.seg failed: EIO"
    ready = await member.get("/readyz")
    assert ready.status == 503
    assert "EIO" in (await ready.json())["error"]["message"]
    status = await (await member.get("/v1/status")).json()
    assert "EIO" in status["storage_error"]
    for call in (
        member.get("/v1/collections"),
        member.post("/v1/collections", json={"name": "d", "dimension": 2}),
    ):
        resp = await call
        body = await resp.json()
        assert resp.status == 503 and body["error"]["code"] == "storage_error"
        assert "EIO" in body["error"]["message"]


async def test_confirm_renews_only_the_leader_at_exactly_that_epoch(
    make_member: Callable[..., Any],
) -> None:
    member: Client = await make_member()
    code, body = await admin(member, "confirm", epoch=1)
    assert code == 409 and body["error"]["code"] == "not_leader"
    assert (await admin(member, "promote", epoch=2))[0] == 200
    code, body = await admin(member, "confirm", epoch=2)
    assert code == 200 and POSITIONS <= set(body)
    assert body["lease"]["valid"] is True and body["lease"]["expires_in_seconds"] > 0
    code, body = await admin(member, "confirm", epoch=1)
    assert code == 409 and body["error"]["code"] == "stale_epoch"
    # A higher epoch: the operator moved on; this leader steps down at once.
    code, body = await admin(member, "confirm", epoch=3)
    assert code == 409 and body["error"]["code"] == "not_leader"
    status = await (await member.get("/v1/status")).json()
    assert (status["role"], status["epoch"]) == ("standby", 3)
    assert "lease" not in status


async def _error_code(resp: Any) -> tuple[int, str]:
    return resp.status, (await resp.json())["error"]["code"]


async def test_a_leader_whose_lease_lapsed_acknowledges_nothing_until_confirmed(
    make_member: Callable[..., Any],
) -> None:
    member: Client = await make_member(lease_seconds=0.3)
    assert (await admin(member, "promote", epoch=1))[0] == 200
    made = await member.post("/v1/collections?ack=leader", json={"name": "c", "dimension": 2})
    assert made.status == 201
    before = await (await member.get("/v1/status")).json()
    await asyncio.sleep(0.4)  # nobody (no follower, no operator) confirmed within the lease
    status = await (await member.get("/v1/status")).json()
    assert status["lease"]["valid"] is False and status["lease"]["expires_in_seconds"] == 0
    upsert = {"vectors": [{"id": "a", "vector": [1, 1]}], "ack": "leader"}
    assert await _error_code(await member.put("/v1/collections/c/vectors", json=upsert)) == (
        503,
        "lease_expired",
    )
    assert (await member.get("/v1/status")).status == 200
    assert (await (await member.get("/v1/status")).json())["last_seq"] == status["last_seq"]
    query = {"vector": [0, 0], "k": 1}
    for consistency in ("strong", "quorum"):
        resp = await member.post(
            "/v1/collections/c/search", json={**query, "consistency": consistency}
        )
        assert await _error_code(resp) == (503, "lease_expired")
    assert (await member.post("/v1/collections/c/search", json=query)).status == 200
    # A confirmation based on a status older than the lease proves nothing new.
    token = before["lease"]["token"]
    assert (await admin(member, "confirm", epoch=1, lease_token=token))[0] == 200
    assert (await member.put("/v1/collections/c/vectors", json=upsert)).status == 503
    # A fresh one renews the lease.
    token = status["lease"]["token"] + 10_000  # a token from the future counts as now
    assert (await admin(member, "confirm", epoch=1, lease_token=token))[0] == 200
    assert (await member.put("/v1/collections/c/vectors", json=upsert)).status == 200
    strong = await member.post("/v1/collections/c/search", json={**query, "consistency": "strong"})
    assert strong.status == 200


async def test_a_deposed_leader_serves_no_reads_and_sends_strong_reads_away(
    make_member: Callable[..., Any],
) -> None:
    member: Client = await make_member()
    # Booted in standby: its log may hold records no leader acknowledged.
    assert await _error_code(await member.get("/v1/collections")) == (503, "not_agreed")
    assert (await member.get("/readyz")).status == 503
    assert (await admin(member, "promote", epoch=1))[0] == 200
    made = await member.post("/v1/collections?ack=leader", json={"name": "c", "dimension": 2})
    assert made.status == 201
    upsert = {"vectors": [{"id": "a", "vector": [1, 1]}], "ack": "leader"}
    assert (await member.put("/v1/collections/c/vectors", json=upsert)).status == 200
    assert (await member.get("/readyz")).status == 200
    assert (await admin(member, "fence", epoch=2))[0] == 200

    query = {"vector": [0, 0], "k": 1}
    for call in (
        member.get("/v1/collections"),
        member.get("/v1/collections/c"),
        member.get("/v1/collections/c/vectors/a"),
        member.post("/v1/collections/c/search", json=query),
        member.post("/v1/collections/c/search", json={**query, "min_seq": 1}),
    ):
        assert await _error_code(await call) == (503, "not_agreed")
    for consistency in ("strong", "quorum"):
        resp = await member.post(
            "/v1/collections/c/search", json={**query, "consistency": consistency}
        )
        assert await _error_code(resp) == (409, "not_leader")
    binary = querybody.encode_queries(np.zeros((1, 2), np.float32), {"consistency": "strong"})
    resp = await member.post(
        "/v1/collections/c/search",
        data=binary,
        headers={"Content-Type": querybody.CONTENT_TYPE},
    )
    assert await _error_code(resp) == (409, "not_leader")
    ready = await member.get("/readyz")
    assert ready.status == 503 and "acknowledged" in (await ready.json())["error"]["message"]


async def test_writes_queued_behind_the_write_lock_are_refused_after_a_fence(
    make_member: Callable[..., Any],
) -> None:
    member: Client = await make_member()
    assert (await admin(member, "promote", epoch=1))[0] == 200
    made = await member.post("/v1/collections?ack=leader", json={"name": "c", "dimension": 2})
    assert made.status == 201
    engine = member.app[ENGINE]
    last = engine.last_seq
    upsert = {"vectors": [{"id": "a", "vector": [1, 1]}], "ack": "leader"}
    # A frozen leader: writers queue for the write lock; meanwhile it is fenced at epoch 2.
    async with engine._write_lock:
        queued = [
            asyncio.create_task(member.put("/v1/collections/c/vectors", json=upsert))
            for _ in range(5)
        ]
        await asyncio.sleep(0.2)
        assert (await admin(member, "fence", epoch=2))[0] == 200
    for task in queued:
        assert await _error_code(await task) == (409, "not_leader")
    assert engine.last_seq == last  # nothing was appended at the old epoch


async def test_write_tokens_carry_the_epoch_and_a_lost_write_reads_as_stale(
    make_member: Callable[..., Any],
) -> None:
    member: Client = await make_member()
    assert (await admin(member, "promote", epoch=1))[0] == 200
    made = await member.post("/v1/collections?ack=leader", json={"name": "c", "dimension": 2})
    assert (await made.json())["epoch"] == 1
    upsert = {"vectors": [{"id": "a", "vector": [1, 1]}], "ack": "leader"}
    wrote = await (await member.put("/v1/collections/c/vectors", json=upsert)).json()
    assert wrote["epoch"] == 1 and wrote["count"] == 1
    deleted = await member.post(
        "/v1/collections/c/vectors/delete", json={"ids": ["zz"], "ack": "leader"}
    )
    assert (await deleted.json())["epoch"] == 1
    query = {"vector": [0, 0], "k": 1}
    token = {"min_seq": wrote["seq"], "min_epoch": wrote["epoch"]}
    found = await member.post("/v1/collections/c/search", json={**query, **token})
    assert found.status == 200 and (await found.json())["results"][0][0]["id"] == "a"
    # The token of a write made at epoch 2 at that seq, which this log does not hold: the
    # write was lost here (another leader's record sits at that seq).
    lost = {"min_seq": wrote["seq"], "min_epoch": 2}
    resp = await member.post("/v1/collections/c/search", json={**query, **lost})
    assert await _error_code(resp) == (409, "stale")
    binary = querybody.encode_queries(np.zeros((1, 2), np.float32), lost)
    resp = await member.post(
        "/v1/collections/c/search", data=binary, headers={"Content-Type": querybody.CONTENT_TYPE}
    )
    assert await _error_code(resp) == (409, "stale")
    dropped = await member.delete("/v1/collections/c?ack=leader")
    assert (await dropped.json())["epoch"] == 1


async def test_the_client_confirms_from_a_fresh_status_token(
    make_member: Callable[..., Any],
) -> None:
    member: Client = await make_member(lease_seconds=0.3)
    async with NodeClient(str(member.make_url("")), token=TOKEN) as client:
        await client.promote(1)
        old_token = (await client.status())["lease"]["token"]
        await asyncio.sleep(0.4)
        late = await client.confirm(1, lease_token=old_token)  # a confirmation that arrived late
        assert late["lease"]["valid"] is False
        fresh = await client.confirm(1)
        assert fresh["lease"]["valid"] is True
        with pytest.raises(ClientNodeError) as moved_on:
            await client.confirm(2)  # the operator moved to epoch 2: this leader steps down
        assert moved_on.value.code == "not_leader"
        assert (await client.status())["role"] == "standby"


async def test_a_promote_that_arrives_late_makes_a_leader_whose_lease_already_lapsed(
    make_member: Callable[..., Any],
) -> None:
    # E.g. it sat in a frozen member's socket while the operator moved to a newer epoch.
    member: Client = await make_member(lease_seconds=0.3)
    async with NodeClient(str(member.make_url("")), token=TOKEN) as client:
        token = (await client.status())["lease_token"]
        await asyncio.sleep(0.4)
        promoted = await client.promote(1, lease_token=token)
        assert promoted["role"] == "leader" and promoted["lease"]["valid"] is False
        with pytest.raises(ClientNodeError) as refused:
            await client.create_collection("c", 2, ack="leader")
        assert refused.value.code == "lease_expired"
        # A promote read from a fresh status (the client's default) starts a valid lease.
        assert (await client.promote(1))["lease"]["valid"] is True
        await client.create_collection("c", 2, ack="leader")


async def test_replication_query_integers_beyond_64_bits_are_refused(
    make_member: Callable[..., Any],
) -> None:
    """An epoch beyond 2**63-1 reached the epoch file and answered 500 (found by schemathesis)."""
    member: Client = await make_member()
    for path in (
        f"/v1/replication/snapshot?epoch={2**70}",
        f"/v1/replication/stream?from_seq=1&epoch={2**63}&node_id=f",
    ):
        resp = await member.get(path, headers=ADMIN)
        assert resp.status == 400, await resp.text()
        assert (await resp.json())["error"]["code"] == "invalid_input"
    assert (await (await member.get("/v1/status")).json())["epoch"] == 0
