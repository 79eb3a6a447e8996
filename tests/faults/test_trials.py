"""Randomized nemesis trials against three real nodes and the operator's real failover pass.

``DVECDB_FAULT_TRIALS`` trials (20 by default; ``make faults`` runs 300), each with its printed
seed; ``DVECDB_FAULT_SEED=<seed>`` replays that trial on a fresh cluster (then one trial unless
``DVECDB_FAULT_TRIALS`` says more, seeds counting up from it). Every trial must keep the
promises within its fault budget (see ``checker``); the table at the end sums them all.
"""

from __future__ import annotations

import os
import secrets
import sys
import time
from collections.abc import Iterator

import pytest

from . import network, summary
from .cluster import Cluster
from .conftest import SUMMARY
from .trial import Runner, TrialResult

TRIALS = int(os.environ.get("DVECDB_FAULT_TRIALS", "0") or 0)
REPLAY = os.environ.get("DVECDB_FAULT_SEED")
COUNT = TRIALS or (1 if REPLAY else 20)

pytestmark = [pytest.mark.faults, pytest.mark.timeout(120 + 30 * COUNT)]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    reason = network.unsupported()
    if reason:
        pytest.skip(reason)
    cluster = Cluster(size=3).open()
    try:
        yield cluster
    finally:
        cluster.close()


def _say(text: str) -> None:
    print(text, file=sys.__stderr__, flush=True)


async def test_acknowledged_writes_survive_the_nemesis(cluster: Cluster) -> None:
    base = int(REPLAY) if REPLAY else secrets.randbelow(10**9)
    _say(f"\nnemesis: {COUNT} trials from seed {base} (replay one: DVECDB_FAULT_SEED=<seed>)")
    runner = Runner(cluster)
    results: list[TrialResult] = []
    started = time.monotonic()
    try:
        for index in range(COUNT):
            seed = base + index
            trial = await runner.run(seed, force_fresh=REPLAY is not None and index == 0)
            results.append(trial)
            _say(summary.line(index, trial))
    finally:
        await runner.close()
        table = summary.table(results, time.monotonic() - started)
        SUMMARY.append(table)
        _say(table)
    failing = [t for t in results if not t.valid or not t.converged]
    assert not failing, "\n".join(summary.line(i, t) for i, t in enumerate(failing))
