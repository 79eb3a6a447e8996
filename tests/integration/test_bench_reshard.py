"""The reshard row (`dvecbench.reshard`) on real processes: two nodes, the router, the
operator's mover, searches and writes through the router before and during the move."""

from __future__ import annotations

import math
import os

import pytest

from dvecbench import config, reshard
from dvecdb_client.slots import SlotMap, slot_of

pytestmark = pytest.mark.integration


def test_the_reshard_row_moves_half_the_slots_under_load_and_leaves_no_process() -> None:
    said: list[str] = []
    n = 3_000
    row = reshard.measure(
        n=n, dim=16, baseline=1.0, server_cpus=None, client_cpus=None, say=said.append
    ).as_dict()
    # Shard 1 took slots 2048-4095: exactly the ids there were copied (the run checked that
    # each shard then holds its slots' ids, and that no search or write failed).
    assert row["moved"] == sum(slot_of(str(i)) >= 2048 for i in range(n))
    assert SlotMap.even(2).owners[2048] == 1
    assert row["failed"] == 0 and row["searches"] > 10 and row["writes"] > 10
    for key in ("search_p99_ms_before", "search_p99_ms_during", "write_p99_ms_before"):
        assert math.isfinite(row[key]) and row[key] > 0, key
    assert row["move_vectors_per_s"] > 0 and row["copy_vectors_per_s"] >= row["move_vectors_per_s"]
    text = "\n".join(reshard.section(row))
    assert f"| 3,000 x 16-d | {row['moved']:,} |" in text
    assert said[-1].startswith("reshard: moved")
    # Every process the run started is gone (the Processes context stops them).
    for pid in [int(p) for p in os.listdir("/proc") if p.isdigit()]:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        assert b"dvec-reshard-" not in cmdline, cmdline


def test_quick_runs_skip_the_reshard_row_and_full_runs_have_it() -> None:
    assert not config.parse(["--quick"]).reshard
    assert config.parse([]).reshard and not config.parse(["--no-reshard"]).reshard
