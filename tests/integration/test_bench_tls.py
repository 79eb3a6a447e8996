"""The TLS cost rows (`dvecbench.tlscost`) on real nodes: both modes measured in one run,
ratios as HTTPS / HTTP."""

from __future__ import annotations

import pytest

from dvecbench import tlscost

pytestmark = pytest.mark.integration


def test_tls_rows_measure_both_modes_and_their_ratios() -> None:
    said: list[str] = []
    result = tlscost.measure(
        vectors=2_000, dim=16, seconds=0.5, rounds=1, clients=2, say=said.append
    )
    keys = {
        "ingest_ack_one_vps",
        "ingest_cpu_ms_per_1k",
        "search_keepalive_cpu_us",
        "search_new_conn_cpu_us",
        "search_keepalive_qps",
        "search_keepalive_p50_ms",
        "search_keepalive_p99_ms",
        "search_new_conn_qps",
        "search_new_conn_p50_ms",
        "search_new_conn_p99_ms",
    }
    assert set(result["http"]) == set(result["https"]) == set(result["https_over_http"]) == keys
    for key in keys:
        assert result["http"][key] > 0 and result["https"][key] > 0
        ratio = result["https_over_http"][key]
        assert ratio == pytest.approx(result["https"][key] / result["http"][key])
    # A handshake per request costs more than none: the new-connection latency ratio shows it.
    assert result["https_over_http"]["search_new_conn_p50_ms"] > 1.0
    assert [line.split()[0] for line in said] == ["http", "https"]
    assert "| search_new_conn_qps |" in tlscost.table(result)
