"""The bench's rows, built from measurement records without servers (`dvecbench.figures`).

Each builder is given made-up measurements with round numbers, so every value, ratio, bound and
verdict in its row can be checked by hand.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from dvecbench import config, figures, report
from dvecbench.datasets import Dataset
from dvecbench.figures import InProcess, Measured, Replicated, Restarted, Served
from dvecbench.ingest import IngestResult
from dvecbench.inprocess import SearchResult
from dvecbench.restart import RestartResult
from dvecbench.searchload import SHARED, LoadResult
from dvecbench.stats import Latency

pytestmark = pytest.mark.unit


def cfg(
    *extra: str, server: set[int] | None = None, client: set[int] | None = None
) -> config.Config:
    """A quick run's options, server on CPU 0 and client on CPU 1 unless told (set here, not
    parsed, so the tests do not depend on this machine's CPUs)."""
    parsed = config.parse(["--quick", "--server-cpus", "none", "--client-cpus", "none", *extra])
    return dataclasses.replace(
        parsed, server_cpus=frozenset(server or {0}), client_cpus=frozenset(client or {1})
    )


def load(qps: float, p50: float = 1.0, recall: float = 0.99) -> LoadResult:
    return LoadResult(qps, Latency(p50, p50 * 3, p50), recall, int(qps), 1.0, 50.0)


HNSWLIB = InProcess(
    single=SearchResult(4000.0, Latency(0.2, 0.4, 0.25), 0.98, 1000, 240.0),
    batched=SearchResult(10000.0, None, 0.97, 5000, 190.0),
    build_rate=20000.0,
    build_cpu_us=90.0,
    load_seconds=0.5,
)
NODE = Served(
    search={
        "single_1": load(2000.0, p50=0.25),
        "single_8": load(3800.0),
        "batch": load(9500.0),
        "batch_json": load(6000.0),
    },
    ingest=IngestResult(vectors=20000, requests=20, acked_seconds=0.8, searchable_seconds=1.0),
    ingest_cpu_us=70.0,
)
CHROMA = Served(
    search={"single_1": load(300.0, recall=0.9), "single_8": load(700.0), "batch": load(500.0)},
    ingest=IngestResult(vectors=20000, requests=40, acked_seconds=2.0, searchable_seconds=4.0),
    ingest_cpu_us=300.0,
)
FLOOR = {
    "single_1": load(2500.0),
    "single_8": load(3900.0),
    "batch": load(7000.0),
    SHARED: load(3000.0),
}
LAG = {
    "p50_ms": 4.0,
    "p99_ms": 120.0,
    "max_ms": 150.0,
    "writes": 60,
    "vectors_per_write": 125,
    "seen": 60,
    "achieved_rate": 9800.0,
    "target_rate": 10000.0,
    "poll_interval_ms": 2.0,
}
REPLICATED = Replicated(
    ingest=IngestResult(vectors=20000, requests=20, acked_seconds=1.5, searchable_seconds=2.0),
    recall=0.985,
    lag=LAG,
)
RESTARTED = Restarted(
    graceful=RestartResult(seconds=2.0, checkpoint_seq=0, last_seq=20),
    checkpoint=RestartResult(seconds=1.0, checkpoint_seq=20, last_seq=20),
    recall=0.99,
)


def measured(**changes: object) -> Measured:
    fields: dict[str, object] = {
        "cfg": cfg(),
        "hnswlib": HNSWLIB,
        "node": NODE,
        "replicated": REPLICATED,
        "restarted": RESTARTED,
    }
    fields.update(changes)
    return Measured(**fields)  # type: ignore[arg-type]


def row(m: Measured, key: str) -> report.Figure:
    fig = figures.BUILDERS[key](m)
    assert fig is not None
    return fig


def test_a_fully_measured_run_has_every_row_in_table_order() -> None:
    shared = Served({**NODE.search, SHARED: load(3500.0)}, NODE.ingest, NODE.ingest_cpu_us)
    table = figures.table(measured(node=shared, chroma=CHROMA, floor=FLOOR))
    assert [f.key for f in table] == list(figures.BUILDERS)
    assert all(f.skipped is None for f in table)


def test_single_client_row_judges_p50_against_in_process_p50() -> None:
    fig = row(measured(), "search_1_client")
    assert (fig.dvecdb.value, fig.dvecdb.recall) == (2000.0, 0.99)  # type: ignore[union-attr]
    assert fig.hnswlib is not None and fig.hnswlib.extra["threads"] == 1
    assert fig.ratio == pytest.approx(0.5)
    [target] = fig.targets
    assert target.bound == pytest.approx(0.30) and target.direction == "lower" and target.met
    slower = Served({**NODE.search, "single_1": load(2000.0, p50=0.31)}, NODE.ingest)
    assert not row(measured(node=slower), "search_1_client").targets[0].met


def test_baseline_drift_is_noted_on_the_single_client_row() -> None:
    assert "measured again" not in row(measured(), "search_1_client").note
    drifted = InProcess(**{**HNSWLIB.__dict__, "after": (4400.0, 9000.0)})
    note = row(measured(hnswlib=drifted), "search_1_client").note
    assert "4,400 QPS (+10%)" in note and "batched 9,000 QPS (-10%)" in note


def test_chroma_and_floor_sit_beside_the_single_vector_rows_where_measured() -> None:
    alone = row(measured(), "search_8_clients")
    assert alone.chroma is None and alone.floor is None
    assert [t.text for t in alone.targets] == ["≥ 0.9 x in-process 1-thread QPS"]
    fig = row(measured(chroma=CHROMA, floor=FLOOR), "search_8_clients")
    assert fig.floor is not None and fig.floor.value == 3900.0
    assert fig.vs_chroma == pytest.approx(3800.0 / 700.0)
    assert [(t.text, t.met) for t in fig.targets] == [
        ("≥ 0.9 x in-process 1-thread QPS", True),  # 3,800 ≥ 3,600
        ("≥ 5 x Chroma QPS", True),
    ]


def test_shared_row_only_when_measured_and_named_by_its_cpus() -> None:
    assert figures.BUILDERS["search_8_clients_shared"](measured()) is None
    node = Served({**NODE.search, SHARED: load(3500.0)}, NODE.ingest)
    fig = row(measured(node=node, floor=FLOOR), "search_8_clients_shared")
    assert fig.label == "Search QPS, 8 clients, server and wrk sharing both CPUs"
    assert fig.floor is not None and fig.floor.value == 3000.0
    assert fig.targets[0].bound == pytest.approx(3600.0) and not fig.targets[0].met
    wider = cfg(server={0, 1}, client={2})
    assert (
        "sharing CPUs 0,1,2" in row(measured(node=node, cfg=wider), "search_8_clients_shared").label
    )


def test_json_only_servers_sit_on_the_json_batch_row_alone() -> None:
    m = measured(chroma=CHROMA, floor=FLOOR)
    binary, text = row(m, "batch_search"), row(m, "batch_search_json")
    assert binary.chroma is None and binary.floor is None
    assert text.chroma is not None and text.chroma.value == 500.0
    assert text.floor is not None and text.floor.value == 7000.0
    assert binary.label == "Batch search QPS (100 queries/request, binary body, 2 clients)"
    assert text.label == "Batch search QPS (100 queries/request, JSON body, 2 clients)"
    assert binary.hnswlib is not None and binary.hnswlib.value == 10000.0
    assert binary.targets[0].bound == pytest.approx(9000.0) and binary.targets[0].met
    assert not text.targets[0].met  # 6,000 < 9,000
    assert '"k": 10' in text.note


def test_a_batch_row_is_absent_when_its_load_did_not_run() -> None:
    node = Served({k: v for k, v in NODE.search.items() if k != "batch_json"}, NODE.ingest)
    keys = [f.key for f in figures.table(measured(node=node))]
    assert "batch_search" in keys and "batch_search_json" not in keys


def test_ingest_row_against_add_items_and_chroma() -> None:
    fig = row(measured(chroma=CHROMA), "ingest")
    assert fig.dvecdb is not None
    assert (fig.dvecdb.value, fig.dvecdb.recall) == (20000.0, 0.99)  # recall of single_1
    assert fig.dvecdb.extra == {"ack_rate": 25000.0, "requests": 20, "cpu_us": 70.0}
    assert fig.hnswlib is not None and fig.hnswlib.extra == {"threads": 1, "cpu_us": 90.0}
    assert fig.chroma is not None and (fig.chroma.value, fig.chroma.recall) == (5000.0, 0.9)
    assert [(t.text, t.bound, t.met) for t in fig.targets] == [
        ("≥ 0.85 x hnswlib add_items", 17000.0, True),
        ("≥ 1 x Chroma ingest", 1.0, True),
    ]


def test_follower_rows_skip_with_their_reason() -> None:
    off = measured(cfg=cfg("--no-replication"), replicated=None)
    for key in ("ingest_follower", "replication_lag"):
        assert row(off, key).skipped == "--no-replication"
        assert row(measured(replicated=None), key).skipped == "not measured"


def test_follower_rows_when_measured() -> None:
    m = measured()
    ingest = row(m, "ingest_follower")
    assert ingest.dvecdb is not None and (ingest.dvecdb.value, ingest.dvecdb.recall) == (
        10000.0,
        0.985,
    )
    assert ingest.ratio == pytest.approx(0.5)  # against add_items
    lag = row(m, "replication_lag")
    assert lag.direction == "lower" and lag.hnswlib is None
    assert lag.dvecdb is not None and lag.dvecdb.value == 120.0 and lag.dvecdb.extra == LAG
    [target] = lag.targets
    assert (target.bound, target.met) == (100.0, False)
    assert "60 paced writes of 125 vectors at 9,800 vectors/s" in lag.note


def test_restart_rows() -> None:
    m = measured()
    ckpt, graceful = row(m, "restart_checkpoint"), row(m, "restart_graceful")
    assert ckpt.dvecdb is not None and ckpt.dvecdb.extra == {"checkpoint_seq": 20, "last_seq": 20}
    assert ckpt.ratio == pytest.approx(0.5)  # load_index 0.5 s ÷ 1 s
    assert graceful.ratio == pytest.approx(0.25)
    table = figures.table(measured(restarted=None))
    assert [(f.key, f.skipped) for f in table if f.key.startswith("restart")] == [
        ("restart_checkpoint", "--no-restart")
    ]


def test_a_second_data_set_takes_the_core_rows_prefixed() -> None:
    m = Measured(cfg=cfg(), hnswlib=HNSWLIB, node=NODE)
    table = figures.table(m, figures.CORE, key_prefix="text_", label_prefix="[text set] ")
    assert [f.key for f in table] == ["text_" + k for k in figures.CORE]
    assert all(f.label.startswith("[text set] ") for f in table)


def test_the_result_document_round_trips(tmp_path: Path) -> None:
    c = cfg()
    ds = Dataset(
        "clustered",
        "2 blobs",
        "l2",
        np.zeros((3, 4), np.float32),
        np.zeros((2, 4), np.float32),
        np.zeros((2, 1), np.int64),
    )
    head = report.header(
        date="2026-11-30 15:00 UTC",
        cfg=c,
        machine={
            "nproc": 2,
            "cpu_model": "x",
            "memory_gib": 1,
            "kernel": "k",
            "load_start": 0,
            "load_end": 0,
        },
        versions={"python": "3"},
        dataset=ds,
        text_dataset=None,
        profile=None,
        transport=None,
    )
    assert head["dataset"] == {
        "name": "clustered",
        "description": "2 blobs",
        "vectors": 3,
        "queries": 2,
        "dimension": 4,
    }
    assert head["pinning"]["server_cpus"] == [0] and head["mode"] == "quick"
    table = figures.table(measured())
    md = report.write(tmp_path, "t", head, table)
    data = json.loads(md.with_suffix(".json").read_text())
    assert [f["key"] for f in data["figures"]] == [f.key for f in table]
    assert "| Search QPS, 1 client (single vector) |" in md.read_text()


def _mixed_row(rps: float, p99: float) -> dict[str, float]:
    return {"rps": rps, "p50_ms": p99 / 4, "p99_ms": p99, "writes_per_second": 0.0}


def test_the_mixed_goals_are_judged_from_the_rows() -> None:
    from dvecbench import mixed

    ours = {
        "plain_idle": _mixed_row(4000, 2.0),
        "filtered_idle": _mixed_row(1900, 4.0),  # 0.475x: short of half
        "plain_writes": _mixed_row(900, 6.0),  # 3x idle: met
        "filtered_writes": _mixed_row(400, 13.0),  # 3.25x idle: not met
    }
    peer = {"plain_idle": _mixed_row(3000, 3.0), "filtered_idle": _mixed_row(2000, 3.0)}
    judged = dict(mixed.goals({"d-vecDB": ours, "Qdrant": peer}))
    assert judged == {
        "filtered ≥ 0.5x unfiltered QPS (0.47x)": False,
        "plain p99 beside an unpaced writer ≤ 3x idle (3.0x)": True,
        "filtered p99 beside an unpaced writer ≤ 3x idle (3.2x)": False,
        "plain, idle ≥ Qdrant (1.33x)": True,
        "filtered, idle ≥ Qdrant (0.95x)": False,
    }
    text = "\n".join(mixed.section({"d-vecDB": ours, "Qdrant": peer}, "Qdrant note"))
    assert "❌ filtered ≥ 0.5x unfiltered" in text and "| filtered, idle | 1,900" in text
    assert text.rstrip().endswith("Qdrant note")


def test_the_router_rows_give_each_figure_as_a_ratio_to_the_member_directly() -> None:
    from dvecbench import sharded

    rows = [
        sharded.Row("direct", 4000.0, load(2000.0, 1.0, 0.98), load(5000.0, 40.0, 0.98)),
        sharded.Row("router-1", 3000.0, load(1000.0, 2.0, 0.98), load(4000.0, 50.0, 0.98)),
        sharded.Row("router-2", 6000.0, load(500.0, 4.0, 0.99), load(2500.0, 80.0, 0.99)),
    ]
    text = "\n".join(sharded.section([row.as_dict() for row in rows]))
    assert "| direct | 4,000 (1.00x) | 2,000 (1.00x) 1.00/3.00 · 0.980 |" in text
    assert "| router-1 | 3,000 (0.75x) | 1,000 (0.50x) 2.00/6.00 · 0.980 |" in text
    assert "| router-2 | 6,000 (1.50x) | 500 (0.25x) 4.00/12.00 · 0.990 | 2,500 (0.50x)" in text
    assert not cfg().sharded  # quick runs skip the rows
    assert config.parse(["--server-cpus", "none", "--client-cpus", "none"]).sharded
