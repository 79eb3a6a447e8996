"""The Python client against real nodes: leader redirects, read-your-writes on a follower,
errors, auth on admin endpoints, retries and the blocking wrapper."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from dvecdb_client import NodeClient, NodeError, NotLeader, SyncNodeClient

from .conftest import DIM, TOKEN, Group

pytestmark = pytest.mark.integration


async def test_client_follows_the_leader_and_reads_its_writes(group: Group) -> None:
    group.start(2)
    await group.client(0).promote(1)
    await group.client(1).follow(group.nodes[0].url, 1)
    leader_url, follower_url = group.nodes[0].url, group.nodes[1].url

    async with NodeClient(follower_url, token=TOKEN) as client:
        created = await client.create_collection("c", DIM, "cosine", hnsw={"m": 8}, ack="one")
        assert created["name"] == "c" and client.leader_url == leader_url
        wrote = await client.upsert(
            "c", [{"id": "x", "vector": [1.0] * DIM, "metadata": {"k": "v"}}], ack="leader"
        )
        assert wrote["count"] == 1 and client.last_write_seq == wrote["seq"]
        # Reads still go to the member the client was made for: the follower.
        found = await client.search(
            "c", np.ones(DIM), k=1, include_metadata=True, consistency="min_seq"
        )
        assert found["results"][0][0]["id"] == "x" and found["seq"] >= wrote["seq"]
        assert found["results"][0][0]["metadata"] == {"k": "v"}
        strong = await client.search("c", np.ones(DIM), k=1, consistency="strong")
        assert strong["results"][0][0]["id"] == "x"
        assert (await client.get("c", "x")) is not None
        assert await client.get("c", "absent") is None
        deleted = await client.delete("c", ["x"], ack="one")
        assert deleted["count"] == 1
        with pytest.raises(NodeError) as bad:
            await client.upsert("c", [{"id": "y", "vector": [1.0]}])
        assert bad.value.status == 400 and bad.value.code == "dimension_mismatch"

    async with NodeClient(follower_url, token=TOKEN, follow_leader=False) as pinned:
        with pytest.raises(NotLeader) as info:
            await pinned.upsert("c", [{"id": "z", "vector": [0.5] * DIM}])
        assert info.value.leader == leader_url
        with pytest.raises(NotLeader) as strong_read:
            await pinned.search("c", np.ones(DIM), consistency="strong")
        assert strong_read.value.leader == leader_url and strong_read.value.status == 409

    async with NodeClient(leader_url, token=TOKEN) as client:
        result = await client.search("c", np.ones(DIM), consistency="quorum")
        assert result["results"] == [[]]
        status = await client.status()
        assert status["role"] == "leader" and status["followers"][0]["node_id"] == "n1"


async def test_admin_needs_the_cluster_token(group: Group) -> None:
    group.start(1)
    url = group.nodes[0].url
    async with NodeClient(url) as anonymous:
        with pytest.raises(NodeError) as missing:
            await anonymous.promote(1)
        assert missing.value.status == 401
    async with NodeClient(url, token="wrong") as wrong:
        with pytest.raises(NodeError) as denied:
            await wrong.fence(1)
        assert denied.value.status == 403
    async with NodeClient(url, token=TOKEN) as admin:
        with pytest.raises(NodeError) as invalid:
            await admin.request("POST", "/v1/admin/promote", json={"epoch": "1"}, admin=True)
        assert invalid.value.status == 400 and invalid.value.code == "invalid_epoch"
        with pytest.raises(NodeError) as standby:
            await admin.create_collection("c", DIM)
        assert isinstance(standby.value, NotLeader) and standby.value.leader is None


async def test_unreachable_member_is_retried_then_reported() -> None:
    client = NodeClient("http://127.0.0.1:9", timeout=0.5, retries=2, retry_delay=0.01)
    started = asyncio.get_running_loop().time()
    with pytest.raises(NodeError) as info:
        await client.status()
    assert info.value.status == 0 and info.value.code == "unreachable"
    assert asyncio.get_running_loop().time() - started < 10
    await client.close()


def test_sync_wrapper(node_factory) -> None:  # type: ignore[no-untyped-def]
    node = node_factory(standalone=True)
    with SyncNodeClient(node.url, token=TOKEN) as client:
        client.create_collection("s", 4)
        wrote = client.upsert_bulk("s", ["a", "b"], np.eye(2, 4), ack="one")
        assert wrote["count"] == 2
        hits = client.search("s", [1, 0, 0, 0], k=1)["results"][0]
        assert hits[0]["id"] == "a"
        assert client.status()["role"] == "leader"
