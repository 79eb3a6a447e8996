"""The transport-alone reference: the search loads against `transport_server.py`, no search.

The server answers every search with one canned, real 10-hit answer, so what it costs per
request is HTTP framing, the event loop and the socket calls alone. Added to in-process
hnswlib's CPU per query, that is the least CPU any Python server can spend per query, hence
the best QPS ratio a server pinned to one core can reach (`bound`).
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hnswlib
import orjson

from dvecbench import config, inprocess, nodeapi
from dvecbench.datasets import Dataset
from dvecbench.procs import Processes, free_port
from dvecbench.searchload import SHARED, LoadResult, Phases, SearchApi, measure

SCRIPT = Path(__file__).with_name("transport_server.py")
NAME = "transport"


def canned_answer(index: hnswlib.Index, ds: Dataset, *, k: int, seq: int) -> bytes:
    """The first query's real answer, in the node's shape (`search.render`): same size."""
    labels, distances = index.knn_query(ds.queries[:1], k=k, num_threads=1)
    hits = [
        {"id": str(label), "distance": dist}
        for label, dist in zip(labels[0].tolist(), distances[0].tolist(), strict=True)
    ]
    return orjson.dumps({"results": [hits], "seq": seq})


def _cpus(cpus: frozenset[int] | None) -> list[int] | None:
    return sorted(cpus) if cpus else None


def _row(
    label: str, server: frozenset[int] | None, wrk: frozenset[int] | None, r: LoadResult
) -> dict[str, Any]:
    return {
        "label": label,
        "server_cpus": _cpus(server),
        "wrk_cpus": _cpus(wrk),
        "qps": r.qps,
        "p50_ms": r.latency.p50,
        "p99_ms": r.latency.p99,
        "cpu_us": r.cpu_us_per_query,
    }


def bound(
    rows: dict[str, dict[str, Any]], *, inprocess_p50_ms: float, cpu_us: float
) -> dict[str, float] | None:
    """The best one pinned core allows: transport CPU + hnswlib CPU per query, p50s added.

    The 8-client transport CPU is the per-request cost under the load the QPS target names.
    The ratio is taken in CPU time (hnswlib's over both together), which other work on the
    core does not move, unlike the two QPS; `best_qps` is that CPU on an idle core. The
    1-client transport p50 plus hnswlib's is the lowest p50 a one-client search can see.
    """
    eight, one = rows.get("single_8"), rows.get("single_1")
    if eight is None or one is None or eight["cpu_us"] is None or cpu_us <= 0:
        return None
    least = float(eight["cpu_us"]) + cpu_us
    return {
        "least_cpu_us": least,
        "best_qps": 1e6 / least,
        "best_ratio": cpu_us / least,
        "least_p50_ms": float(one["p50_ms"]) + inprocess_p50_ms,
    }


class TransportRun:
    """Start the canned-answer server pinned like the others, then the same wrk loads."""

    def __init__(
        self,
        cfg: config.Config,
        ds: Dataset,
        index: hnswlib.Index,
        procs: Processes,
        say: Callable[[str], None],
    ) -> None:
        self.cfg, self.ds, self.index, self.procs, self.say = cfg, ds, index, procs, say
        self.rows: dict[str, dict[str, Any]] = {}
        self.answer_bytes = 0

    def run(self, phases: Phases) -> None:
        cfg, ds = self.cfg, self.ds
        # The node's seq after the bench's ingest: one per upsert body, one for the create.
        seq = math.ceil(ds.size / cfg.ingest_batch) + 1
        answer = canned_answer(self.index, ds, k=cfg.hnsw.k, seq=seq)
        self.answer_bytes = len(answer)
        path = self.procs.log_dir / "transport-answer.json"
        path.write_bytes(answer)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        argv = [sys.executable, "-I", str(SCRIPT), str(port), str(path)]
        self.say(
            f"transport alone (no search): uvloop Protocol answering a canned "
            f"{len(answer)}-byte 10-hit answer, same loads"
        )
        self.procs.start(NAME, argv, cpus=cfg.server_cpus, cwd=self.procs.log_dir)
        self.procs.wait_ready(NAME, url + "/readyz", timeout=60)
        api = SearchApi(url, nodeapi.search_path(), nodeapi.search_body, nodeapi.search_ids)
        loads = [
            ("single_1", "1 client", 1, cfg.server_cpus, cfg.client_cpus),
            ("single_8", "8 clients", 8, cfg.server_cpus, cfg.client_cpus),
        ]
        if cfg.shared:
            both = cfg.shared_cpus
            loads.append((SHARED, "8 clients, sharing the CPUs", 8, both, both))
        for key, label, conns, server_cpus, client_cpus in loads:
            # The server is one thread: moving it is the same as starting it on these CPUs.
            self.procs.set_cpus(NAME, server_cpus)
            result = self._load(api, key, conns, client_cpus, phases)
            self.rows[key] = _row(label, server_cpus, client_cpus, result)
        self.procs.stop(NAME)
        path.unlink()

    def _load(
        self,
        api: SearchApi,
        key: str,
        connections: int,
        client_cpus: frozenset[int] | None,
        phases: Phases,
    ) -> LoadResult:
        prefix = f"  transport {key} " if key == SHARED else "  transport "
        with inprocess.pinned(client_cpus):
            return measure(
                api,
                self.ds,
                k=self.cfg.hnsw.k,
                connections=connections,
                batch=1,
                phases=dataclasses.replace(phases, cpus=client_cpus),
                progress=lambda m: self.say(prefix + m),
                cpu=lambda: self.procs.cpu_seconds(NAME),
                score=False,
            )

    def summary(self, base: inprocess.SearchResult) -> dict[str, Any]:
        """The JSON section `report.markdown` renders as the transport table."""
        lat = base.latency
        assert lat is not None and base.cpu_us_per_query is not None
        return {
            "server": "transport_server.py (uvloop asyncio.Protocol, canned answer)",
            "answer_bytes": self.answer_bytes,
            "rows": self.rows,
            "inprocess": {
                "qps": base.qps,
                "p50_ms": lat.p50,
                "p99_ms": lat.p99,
                "cpu_us": base.cpu_us_per_query,
            },
            "bound": bound(
                self.rows,
                inprocess_p50_ms=lat.p50,
                cpu_us=base.cpu_us_per_query,
            ),
        }
