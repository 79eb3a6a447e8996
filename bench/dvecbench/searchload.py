"""Search figures over HTTP, the same way for every server: a recall pass, then timed wrk runs.

The recall pass sends every query once through the Python client and scores the answers
against exact ground truth; the timed runs replay the same queries (pre-rendered bodies) with
wrk at 1 and 8 connections, and the batch form at a fixed number of connections. A server
API whose bodies are binary (any content type but JSON) has them handed to wrk as hex lines.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable
from pathlib import Path

from dvecbench import wrk
from dvecbench.datasets import F32, Dataset, recall_at_k
from dvecbench.httpc import Client
from dvecbench.stats import Latency

# The key of the 8-client search with server and wrk sharing the server's and client's CPUs.
SHARED = "single_8_shared"


@dataclasses.dataclass(frozen=True)
class SearchApi:
    """How to search one server: its path, body encoding and answer decoding.

    `ids` (the recall pass) must send the same encoding as `body` (the timed runs).
    """

    base_url: str
    path: str
    body: Callable[[F32, int], bytes]
    ids: Callable[[Client, F32, int], list[list[int]]]
    content_type: str = wrk.JSON

    @property
    def binary(self) -> bool:
        return self.content_type != wrk.JSON


@dataclasses.dataclass(frozen=True)
class LoadResult:
    qps: float
    latency: Latency
    recall: float | None
    requests: int
    seconds: float
    cpu_us_per_query: float | None


@dataclasses.dataclass(frozen=True)
class Phases:
    """Durations (seconds) and shapes of the timed runs."""

    seconds: float
    warmup: float
    batch: int
    batch_connections: int
    cpus: frozenset[int] | None


def recall(api: SearchApi, ds: Dataset, *, k: int, batch: int) -> float:
    client = Client(api.base_url)
    try:
        found: list[list[int]] = []
        for start in range(0, len(ds.queries), batch):
            found.extend(api.ids(client, ds.queries[start : start + batch], k))
    finally:
        client.close()
    return recall_at_k(found, ds.ground_truth, k=k)


def _bodies(api: SearchApi, ds: Dataset, k: int, batch: int, workdir: Path) -> Path:
    chunks = (ds.queries[i : i + batch] for i in range(0, len(ds.queries) - batch + 1, batch))
    return wrk.write_bodies(
        workdir / f"bodies-{batch}.txt", (api.body(c, k) for c in chunks), hex_lines=api.binary
    )


def measure(
    api: SearchApi,
    ds: Dataset,
    *,
    k: int,
    connections: int,
    batch: int,
    phases: Phases,
    progress: Callable[[str], None],
    cpu: Callable[[], float] | None = None,
    score: bool = True,
) -> LoadResult:
    """Recall pass, warm-up, then one timed wrk run; QPS counts queries, not requests.

    `score=False` skips the recall pass, for a server whose answers are canned (recall None).
    """
    hit_rate = recall(api, ds, k=k, batch=batch) if score else None
    with tempfile.TemporaryDirectory(prefix="dvecbench-") as tmp:
        bodies = _bodies(api, ds, k, batch, Path(tmp))
        url = api.base_url + api.path
        if phases.warmup > 0:
            wrk.run(
                url=url,
                bodies=bodies,
                connections=connections,
                seconds=phases.warmup,
                cpus=phases.cpus,
                content_type=api.content_type,
                hex_lines=api.binary,
            )
        cpu_before = cpu() if cpu else 0.0
        result = wrk.run(
            url=url,
            bodies=bodies,
            connections=connections,
            seconds=phases.seconds,
            cpus=phases.cpus,
            content_type=api.content_type,
            hex_lines=api.binary,
        )
        # wrk counts requests completed in its window; the server's CPU meter also covers
        # wrk's connect and close, so this slightly over-states CPU per query.
        per_query = (cpu() - cpu_before) / (result.requests * batch) * 1e6 if cpu else None
    qps = result.rps * batch
    cpu_text = f", server CPU {per_query:.0f} us/query" if per_query is not None else ""
    recall_text = f"recall@{k} {hit_rate:.4f}" if hit_rate is not None else "canned answers"
    body = "binary" if api.binary else "JSON"
    progress(
        f"{connections} conn, batch {batch}, {body} body: {qps:,.0f} QPS, "
        f"p50 {result.latency.p50:.3f} ms, p99 {result.latency.p99:.3f} ms, "
        f"{recall_text}{cpu_text}"
    )
    return LoadResult(
        qps=qps,
        latency=result.latency,
        recall=hit_rate,
        requests=result.requests,
        seconds=result.seconds,
        cpu_us_per_query=per_query,
    )
