"""`make bench --quick` end to end: real node, real wrk, and the results table it writes.

Small sizes (5,000 vectors, 1 s phases) keep it near two minutes. Chroma is compared only where
its private venv already exists (installing it takes minutes); wrk is installed by the bench
itself when apt-get can, else the test is skipped.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
RUN = REPO / "bench" / "run.py"
NODE = Path(sys.executable).with_name("dvecdb-node")
CHROMA = REPO / ".venv-bench-chroma" / "bin" / "chroma"

SEARCH = ("search_1_client", "search_8_clients", "batch_search", "batch_search_json")
EVERY = (*SEARCH, "ingest", "ingest_follower", "replication_lag", "restart_checkpoint")


def _run_bench(out: Path, *extra: str, timeout: float = 420.0) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, str(RUN), "--quick", "--out-dir", str(out)]
    argv += ["--vectors", "5000", "--queries", "100", "--seconds", "1"]
    proc = subprocess.Popen(
        [*argv, "--stem", "t", *extra],
        cwd=out,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        stdout, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        # SIGTERM lets the bench stop the servers it started; SIGKILL only if it hangs.
        proc.send_signal(signal.SIGTERM)
        try:
            stdout, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, _ = proc.communicate()
        pytest.fail(f"bench --quick took over {timeout:.0f}s:\n{stdout[-4000:]}")
    return subprocess.CompletedProcess(argv, proc.returncode, stdout, "")


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if not NODE.exists():
        pytest.skip("dvecdb-node is not installed in this venv")
    if shutil.which("wrk") is None and shutil.which("apt-get") is None:
        pytest.skip("wrk is absent and cannot be installed here")
    out = tmp_path_factory.mktemp("bench")
    extra = [] if CHROMA.exists() else ["--no-chroma"]
    proc = _run_bench(out, *extra)
    assert proc.returncode == 0, proc.stdout[-6000:]
    assert "[bench" in proc.stdout  # progress lines
    md = (out / "t.md").read_text()
    assert "| figure | d-vecDB |" in md
    data: dict[str, Any] = json.loads((out / "t.json").read_text())
    data["_chroma"] = CHROMA.exists()
    return data


def test_in_process_drift_around_the_node_searches_is_reported(table: dict[str, Any]) -> None:
    """The in-process figures are taken right before d-vecDB's searches and again right after;
    the report says how far they moved."""
    note = _figures(table)["search_1_client"]["note"]
    assert "measured again right after d-vecDB's searches" in note and "%" in note


def _figures(table: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["key"]: f for f in table["figures"]}


def test_every_figure_is_present(table: dict[str, Any]) -> None:
    figures = _figures(table)
    assert set(EVERY) <= set(figures)
    for key in EVERY:
        fig = figures[key]
        assert fig["skipped"] is None, fig
        assert fig["dvecdb"]["value"] > 0, fig
        assert fig["targets"] or key == "ingest_follower" or key.startswith("restart"), fig


def test_recall_is_reported_with_every_figure(table: dict[str, Any]) -> None:
    for fig in table["figures"]:
        if fig["skipped"]:
            continue
        for side in ("dvecdb", "hnswlib", "chroma", "floor"):
            if fig[side] is not None:
                recall = fig[side]["recall"]
                assert recall is not None and 0.0 < recall <= 1.0, (fig["key"], side)


def test_served_results_are_accurate(table: dict[str, Any]) -> None:
    """The clustered set is easy at this size: a broken server would show here first."""
    figures = _figures(table)
    for key in SEARCH:
        for side in ("dvecdb", "hnswlib", "floor"):
            if side == "floor" and key == "batch_search":
                assert figures[key]["floor"] is None  # the floor takes JSON bodies only
                continue
            assert figures[key][side]["recall"] >= 0.95, (key, side, figures[key])


def test_ratios_and_targets_are_consistent(table: dict[str, Any]) -> None:
    figures = _figures(table)
    s8 = figures["search_8_clients"]
    assert s8["ratio"] == pytest.approx(s8["dvecdb"]["value"] / s8["hnswlib"]["value"])
    target = s8["targets"][0]
    assert target["bound"] == pytest.approx(0.9 * s8["hnswlib"]["value"])
    assert target["met"] == (s8["dvecdb"]["value"] >= target["bound"])
    if table["_chroma"]:
        assert s8["chroma"] is not None and s8["vs_chroma"] is not None


def test_machine_and_versions_are_recorded(table: dict[str, Any]) -> None:
    assert table["machine"]["nproc"] >= 1
    assert table["machine"]["cpu_model"]
    assert table["machine"]["malloc"] and table["machine"]["thp"]
    for name in ("python", "hnswlib", "dvecdb", "wrk"):
        assert table["versions"][name]


# The harness's own arithmetic, checked without servers (cheap, so it rides along here).


@pytest.fixture(scope="module")
def dvecbench() -> Any:
    import dvecbench.datasets
    import dvecbench.replication
    import dvecbench.report
    import dvecbench.wrk

    return dvecbench


@pytest.mark.parametrize("metric", ["l2", "cosine", "ip"])
def test_exact_knn_matches_a_full_sort(dvecbench: Any, metric: str) -> None:
    import numpy as np

    rng = np.random.default_rng(1)
    base = rng.standard_normal((500, 16)).astype(np.float32)
    queries = rng.standard_normal((7, 16)).astype(np.float32)
    got = dvecbench.datasets.exact_knn(base, queries, k=5, metric=metric, block=3)
    if metric == "cosine":
        b = base / np.linalg.norm(base, axis=1, keepdims=True)
        q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
        score = -(q @ b.T)
    elif metric == "ip":
        score = -(queries @ base.T)
    else:
        score = ((queries[:, None, :] - base[None, :, :]) ** 2).sum(axis=2)
    assert got.tolist() == np.argsort(score, axis=1, kind="stable")[:, :5].tolist()


def test_recall_counts_hits_in_the_top_k(dvecbench: Any) -> None:
    import numpy as np

    truth = np.array([[1, 2, 3], [4, 5, 6]])
    recall = dvecbench.datasets.recall_at_k([[3, 2, 9], [6, 5, 4]], truth, k=3)
    assert recall == pytest.approx(5 / 6)


def test_lag_is_time_from_ack_to_first_sample_covering_it(dvecbench: Any) -> None:
    acks = [(1, 10.0), (2, 10.5), (3, 11.0), (9, 12.0)]
    samples = [(9.9, 1), (10.6, 1), (10.7, 2), (11.05, 3)]
    # seq 1 was applied before its ack (0), seq 2 seen 0.2 s after, seq 3 0.05 s, seq 9 never.
    lags = dvecbench.replication.lags(acks, samples)
    assert lags == pytest.approx([0.0, 0.2, 0.05])


def test_wrk_summary_is_parsed_and_errors_counted(dvecbench: Any) -> None:
    out = (
        "Running 1s test\n"
        'WRK_SUMMARY {"requests": 500, "duration_us": 2000000, "bytes": 1, "p50_us": 1500, '
        '"p90_us": 2000, "p99_us": 4000, "mean_us": 1600.5, "max_us": 9000, '
        '"connect_errors": 0, "read_errors": 1, "write_errors": 0, "status_errors": 2, '
        '"timeouts": 0}\n'
    )
    result = dvecbench.wrk.parse_summary(out)
    assert result.rps == pytest.approx(250.0)
    assert (result.latency.p50, result.latency.p99) == (1.5, 4.0)
    assert result.errors == 3


def test_targets_respect_their_direction(dvecbench: Any) -> None:
    target = dvecbench.report.Target
    assert target("t", 9.0, 10.0, "lower").met
    assert not target("t", 11.0, 10.0, "lower").met
    assert target("t", 10.0, 10.0, "higher").met
    assert not target("t", 9.9, 10.0, "higher").met
