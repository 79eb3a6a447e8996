"""Reads through a failover with real processes (DESIGN.md "Reads while there is no leader"):
followers stay ready and serve eventual reads while there is no leader; the old leader,
restarted, serves nothing until it has reconciled with the new one. Searches go through the
fast lane (a fresh connection whose first request is a search)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from dvecdb_client import NodeClient, NodeError, NotLeader

from .conftest import DIM, TOKEN, Group, wait_converged, wait_for

pytestmark = pytest.mark.integration


async def _search(url: str, consistency: str | None = None) -> dict[str, object]:
    async with NodeClient(url, token=TOKEN, retries=0, follow_leader=False) as client:
        return await client.search("c", np.ones(DIM), k=3, consistency=consistency)


async def test_followers_serve_through_a_failover_and_a_deposed_leader_does_not(
    group: Group,
) -> None:
    group.start(3)
    old, n1, n2 = group.clients
    await old.promote(1, members=3)
    await n1.follow(group.nodes[0].url, 1)
    await n2.follow(group.nodes[0].url, 1)
    await old.create_collection("c", DIM, ack="quorum")
    rng = np.random.default_rng(7)
    ids = [f"v{i}" for i in range(30)]
    await old.upsert_bulk("c", ids, rng.standard_normal((30, DIM)), ack="quorum")
    await wait_converged(group.clients)

    # The leader dies: for a while there is no leader. Followers stay ready and serve.
    group.nodes[0].kill()
    for _ in range(10):
        for index in (1, 2):
            assert await group.clients[index].readyz(), f"n{index} not ready"
            found = await _search(group.nodes[index].url)
            assert len(found["results"][0]) == 3  # type: ignore[index]
        await asyncio.sleep(0.3)

    # The old leader restarts on its own log: nothing is served from it, strong reads go away.
    group.nodes[0].start()
    assert not await old.readyz()
    with pytest.raises(NodeError) as refused:
        await _search(group.nodes[0].url)
    assert (refused.value.status, refused.value.code) == (503, "not_agreed")
    with pytest.raises(NotLeader):
        await _search(group.nodes[0].url, "strong")

    # Fence, then choose: fenced followers still serve eventual reads.
    for client in (old, n1, n2):
        await client.fence(2)
    assert await n2.readyz() and await n1.readyz()
    await _search(group.nodes[2].url)
    await n1.promote(2, members=3)
    await n2.follow(group.nodes[1].url, 2)
    await old.follow(group.nodes[1].url, 2)
    await wait_converged([n1, n2, old])

    async def old_serves() -> bool:
        return await old.readyz()

    await wait_for(old_serves, 20, "the old leader to serve once reconciled")
    assert len((await _search(group.nodes[0].url))["results"][0]) == 3  # type: ignore[index]
