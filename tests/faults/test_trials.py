"""Randomized nemesis trials against three real nodes and the operator's real failover pass.

``DVECDB_FAULT_TRIALS`` trials (20 by default; ``make faults`` runs 300), each with its printed
seed; ``DVECDB_FAULT_SEED=<seed>`` replays that trial on a fresh cluster (then one trial unless
``DVECDB_FAULT_TRIALS`` says more, seeds counting up from it). Every trial must keep the
promises within its fault budget (see ``checker``); the table at the end sums them all.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from . import network, summary
from .cluster import PORT, Cluster
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


def _reaches(source_ns: int | None, ip: str, *, bind: str | None = None) -> bool:
    """Whether a TCP connection to ``ip``'s node opens within half a second, from the host
    (from ``bind``'s address) or from inside node ``source_ns``'s namespace."""
    code = (
        "import socket,sys\n"
        "s=socket.socket()\n"
        "s.settimeout(0.5)\n"
        + (f"s.bind(({bind!r},0))\n" if bind else "")
        + f"sys.exit(s.connect_ex(({ip!r},{PORT})))"
    )
    prefix = network.exec_prefix(source_ns) if source_ns is not None else []
    return subprocess.run([*prefix, sys.executable, "-c", code]).returncode == 0


def test_partitions_cut_only_the_chosen_links(cluster: Cluster) -> None:
    cluster.reset()
    for node in cluster.nodes:
        node.start()
    try:
        deadline = time.monotonic() + 60
        while not all(_reaches(None, n.ip) for n in cluster.nodes):
            assert time.monotonic() < deadline, "nodes did not start"
            time.sleep(0.1)
        net, (a, b, c) = cluster.net, cluster.nodes
        # operator <-> a only: clients and the other members still reach a.
        rules = net.cut(a.index, network.OPERATOR_IP)
        assert not _reaches(None, a.ip)
        assert _reaches(None, a.ip, bind=network.CLIENT_IP)
        assert _reaches(None, b.ip) and _reaches(b.index, a.ip)
        net.restore(rules)
        assert _reaches(None, a.ip)
        # a <-> b only.
        rules = net.cut(a.index, b.ip)
        assert not _reaches(b.index, a.ip) and not _reaches(a.index, b.ip)
        assert _reaches(c.index, a.ip) and _reaches(a.index, c.ip)
        net.restore(rules)
        # One way: a hears nothing from b; b's connection attempts die, a's to c are fine.
        rules = net.cut(a.index, b.ip, send=False, receive=True)
        assert not _reaches(b.index, a.ip) and _reaches(c.index, a.ip)
        # Two faults holding one rule: the link returns when both have ended.
        again = net.cut(a.index, b.ip, send=False, receive=True)
        net.restore(rules)
        assert not _reaches(b.index, a.ip)
        net.restore(again)
        assert _reaches(b.index, a.ip) and _reaches(a.index, b.ip)
        # A full disk takes every byte; freeing it gives them back.
        a.fill_disk()
        assert os.statvfs(a.mount).f_bavail == 0
        a.free_disk()
        assert os.statvfs(a.mount).f_bavail > 0
    finally:
        cluster.stop_all()
        cluster.net.heal()


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
