"""A cluster member's HTTP API in process (replication installed, no peers): positions in
status and admin answers, the leader lease, the write epoch under the write lock, the read
gate, and honest answers while recovering."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from dvecdb_node.api.app import create_app
from dvecdb_node.api.keys import RECOVERED
from dvecdb_node.replication.install import install
from dvecdb_node.settings import NodeSettings

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
    assert (fenced["role"], fenced["epoch"], fenced["last_epoch"], fenced["last_seq"]) == (
        "standby",
        4,
        3,
        1,
    )
