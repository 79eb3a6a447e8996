"""Handing batches to the follower's apply stage never waits forever on a stage that is gone."""

from __future__ import annotations

import asyncio

import pytest

from dvecdb_node.replication.follower import Pending, hand_over

pytestmark = pytest.mark.unit


async def test_hand_over_queues_while_the_stage_runs() -> None:
    pending: Pending = asyncio.Queue(maxsize=1)
    taken: list[object] = []

    async def stage() -> None:
        while (item := await pending.get()) is not None:
            taken.append(item)

    applier = asyncio.create_task(stage())
    assert await hand_over(pending, [], applier)
    assert await hand_over(pending, [], applier)  # waits for the stage to take the first
    assert await hand_over(pending, None, applier)
    async with asyncio.timeout(5):
        await applier
    assert taken == [[], []]


async def test_hand_over_returns_when_the_stage_dies_on_a_full_queue() -> None:
    pending: Pending = asyncio.Queue(maxsize=1)
    pending.put_nowait([])
    release = asyncio.Event()

    async def failing_stage() -> None:
        await release.wait()
        raise RuntimeError("apply failed")

    applier = asyncio.create_task(failing_stage())
    handing = asyncio.create_task(hand_over(pending, None, applier))
    await asyncio.sleep(0.05)
    assert not handing.done()  # the queue is full and the stage is alive: it waits
    release.set()
    async with asyncio.timeout(5):
        assert await handing is False
    assert pending.qsize() == 1  # nothing was lost from the queue
    with pytest.raises(RuntimeError):
        await applier


async def test_hand_over_to_a_finished_stage_is_refused_at_once() -> None:
    pending: Pending = asyncio.Queue(maxsize=1)
    applier = asyncio.create_task(asyncio.sleep(0))
    await applier
    assert await hand_over(pending, [], applier) is False
    assert pending.empty()
