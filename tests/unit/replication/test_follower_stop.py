"""A follower's ack task ends when cancelled, even if it is woken in the same loop step.

Python 3.11's ``asyncio.wait_for`` returned the inner result and dropped such a cancellation;
the ack loop then ran forever and ``follow``/``promote`` waited on it (a CI failure).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from dvecdb_node.storage.engine import Engine

from .repl_helpers import make_follower

pytestmark = pytest.mark.unit


async def test_ack_loop_ends_when_cancelled_as_progress_is_signalled(tmp_path: Path) -> None:
    engine = Engine(tmp_path)
    follower = make_follower(engine, ack_interval=30.0)
    async with aiohttp.ClientSession() as session:
        for _ in range(20):
            acker = asyncio.create_task(follower._ack_loop(session))
            await asyncio.sleep(0.01)  # parked in the wait for progress
            follower._progress.set()
            acker.cancel()
            await asyncio.wait({acker}, timeout=5)  # never cancels the task it watches
            assert acker.cancelled(), "the ack task ignored its cancellation"
