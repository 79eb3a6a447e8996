"""The leader lease with real processes: idle followers keep it, losing them lapses it,
the operator's confirmation renews it (DESIGN.md "Leader lease")."""

from __future__ import annotations

import asyncio
import signal

import numpy as np
import pytest

from dvecdb_client import NodeError

from .conftest import DIM, Group, wait_for

pytestmark = pytest.mark.integration

LEASE = 1.0


async def test_idle_followers_keep_the_lease_and_losing_them_lapses_it(group: Group) -> None:
    group.start(3, args=["--lease-seconds", str(LEASE)])
    leader, f1, f2 = group.clients
    await leader.promote(1, members=3)
    await f1.follow(group.nodes[0].url, 1)
    await f2.follow(group.nodes[0].url, 1)
    await leader.create_collection("c", DIM, ack="quorum")

    # Nothing is written for three leases: the followers' acks alone keep the lease.
    await asyncio.sleep(3 * LEASE)
    status = await leader.status()
    assert status["lease"]["valid"] is True
    await leader.upsert("c", [{"id": "a", "vector": [1.0] * DIM}], ack="leader")

    # One follower frozen: the other and the leader are still a majority of three.
    group.nodes[1].signal(signal.SIGSTOP)
    try:
        await asyncio.sleep(2 * LEASE)
        await leader.upsert("c", [{"id": "b", "vector": [1.0] * DIM}], ack="one")

        # Both frozen: no majority, no operator: every level is refused, strong reads too.
        group.nodes[2].signal(signal.SIGSTOP)
        await asyncio.sleep(2 * LEASE)
        for level in ("leader", "one", "quorum"):
            with pytest.raises(NodeError) as refused:
                await leader.upsert(
                    "c", [{"id": "c", "vector": [1.0] * DIM}], ack=level, retry=False
                )
            assert (refused.value.status, refused.value.code) == (503, "lease_expired")
        with pytest.raises(NodeError) as strong:
            await leader.search("c", np.ones(DIM), consistency="strong")
        assert strong.value.code == "lease_expired"
        assert (await leader.search("c", np.ones(DIM), k=2))["results"][0]  # eventual: served

        # The operator confirms the epoch: the lease runs again for ack=leader.
        confirmed = await leader.confirm(1)
        assert confirmed["lease"]["valid"] is True
        await leader.upsert("c", [{"id": "d", "vector": [1.0] * DIM}], ack="leader")
        await leader.search("c", np.ones(DIM), consistency="strong")
    finally:
        group.nodes[1].signal(signal.SIGCONT)
        group.nodes[2].signal(signal.SIGCONT)

    # The followers are back: their acks renew the lease without the operator.
    async def lease_held_by_followers() -> bool:
        await asyncio.sleep(LEASE)
        return bool((await leader.status())["lease"]["valid"])

    await wait_for(lease_held_by_followers, 20, "the followers' acks to renew the lease")

    # Fenced, a follower says how long ago it last acked: the old leader's lease may run up
    # to lease_seconds past that (the operator waits it out before promoting).
    fenced = await f1.fence(2)
    assert 0 <= fenced["last_ack_seconds"] < 2 * LEASE
