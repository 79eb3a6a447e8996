"""The results table, row by row: one pure builder per figure, keyed by the figure's name.

A builder takes what the runners measured (`Measured`) and returns its row, or None when the
run did not measure it; nothing here starts a process or reads a clock. Every row sets d-vecDB
over HTTP beside in-process hnswlib on the same data, `ef` and CPUs, with recall@10 against
exact search, and judges its targets from the numbers of the same run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping

from dvecbench.config import Config
from dvecbench.ingest import IngestResult
from dvecbench.inprocess import SearchResult
from dvecbench.report import Figure, Side, Target
from dvecbench.restart import RestartResult
from dvecbench.searchload import SHARED, LoadResult


@dataclasses.dataclass(frozen=True)
class InProcess:
    """hnswlib in the bench's own process, pinned to the server's CPUs: the baseline."""

    single: SearchResult  # one knn_query per query, 1 thread
    batched: SearchResult  # `cfg.batch` queries per knn_query, the server's thread count
    build_rate: float  # add_items, vectors/s
    build_cpu_us: float  # CPU per vector of add_items
    load_seconds: float  # load_index of the same index
    # The single and batched QPS measured again right after d-vecDB's searches: the VM's
    # speed drifts over minutes, so the report shows how far the baseline moved meanwhile.
    after: tuple[float, float] | None = None


@dataclasses.dataclass(frozen=True)
class Served:
    """A server's searches (keyed as `NodeRun.search`) and its bulk ingest."""

    search: Mapping[str, LoadResult]
    ingest: IngestResult | None = None
    ingest_cpu_us: float | None = None  # server CPU per vector ingested


@dataclasses.dataclass(frozen=True)
class Replicated:
    """The leader with one follower: ingest at ack=one and the follower's apply lag."""

    ingest: IngestResult
    recall: float  # of searches served by the follower from its replicated index
    lag: Mapping[str, float]  # p50_ms, p99_ms, max_ms, writes, vectors_per_write, ...


@dataclasses.dataclass(frozen=True)
class Restarted:
    graceful: RestartResult  # SIGTERM, then start to ready
    checkpoint: RestartResult  # SIGKILL after a checkpoint, then start to ready
    recall: float  # of searches right after the restarts


@dataclasses.dataclass(frozen=True)
class Measured:
    """Everything one data set's rows are built from."""

    cfg: Config
    hnswlib: InProcess
    node: Served
    chroma: Served | None = None
    floor: Mapping[str, LoadResult] | None = None  # the bare aiohttp handler's searches
    replicated: Replicated | None = None
    restarted: Restarted | None = None


def latency_side(r: LoadResult) -> Side:
    extra = {"p50_ms": r.latency.p50, "p99_ms": r.latency.p99, "cpu_us": r.cpu_us_per_query}
    return Side(r.qps, r.recall, extra)


def cpu_list(cpus: frozenset[int] | None) -> str:
    return ",".join(map(str, sorted(cpus))) if cpus else "any"


def hnswlib_single(h: InProcess) -> Side:
    lat = h.single.latency
    assert lat is not None
    extra = {"p50_ms": lat.p50, "p99_ms": lat.p99, "cpu_us": h.single.cpu_us_per_query}
    return Side(h.single.qps, h.single.recall, {**extra, "threads": 1})


def drift_note(h: InProcess) -> str:
    if h.after is None:
        return ""
    single, batched = h.after
    return (
        f"; measured again right after d-vecDB's searches: {single:,.0f} QPS "
        f"({single / h.single.qps - 1:+.0%}), batched {batched:,.0f} QPS "
        f"({batched / h.batched.qps - 1:+.0%})"
    )


def _peer(served: Served | None, key: str) -> Side | None:
    if served is None or key not in served.search:
        return None
    return latency_side(served.search[key])


def _floor(m: Measured, key: str) -> Side | None:
    """The floor's figure for a row; it takes JSON bodies only."""
    if m.floor is None or key not in m.floor:
        return None
    return latency_side(m.floor[key])


def _vs_chroma(fig: Figure, text: str, times: float) -> Figure:
    """Chroma's target, where Chroma was measured: `times` its figure or better."""
    if fig.vs_chroma is not None:
        fig.targets.append(Target(text, fig.vs_chroma, times, "higher"))
    return fig


def search_1_client(m: Measured) -> Figure:
    """One client, one vector per request: latency is the target (p50 within 0.1 ms)."""
    s1 = m.node.search["single_1"]
    hn = hnswlib_single(m.hnswlib)
    fig = Figure(
        "search_1_client",
        "Search QPS, 1 client (single vector)",
        "QPS",
        "higher",
        latency_side(s1),
        hn,
        _peer(m.chroma, "single_1"),
        floor=_floor(m, "single_1"),
        note="hnswlib: one knn_query per query on 1 thread" + drift_note(m.hnswlib),
    )
    lat = m.hnswlib.single.latency
    assert lat is not None
    fig.targets.append(
        Target("p50 ≤ in-process p50 + 0.10 ms", s1.latency.p50, lat.p50 + 0.10, "lower")
    )
    return _vs_chroma(fig, "≥ 5 x Chroma QPS", 5.0)


def search_8_clients(m: Measured) -> Figure:
    """Eight clients, one vector per request, against hnswlib's 1-thread throughput."""
    s8 = m.node.search["single_8"]
    fig = Figure(
        "search_8_clients",
        "Search QPS, 8 clients (single vector)",
        "QPS",
        "higher",
        latency_side(s8),
        hnswlib_single(m.hnswlib),
        _peer(m.chroma, "single_8"),
        floor=_floor(m, "single_8"),
    )
    fig.targets.append(
        Target("≥ 0.9 x in-process 1-thread QPS", s8.qps, 0.9 * m.hnswlib.single.qps, "higher")
    )
    return _vs_chroma(fig, "≥ 5 x Chroma QPS", 5.0)


def search_8_clients_shared(m: Measured) -> Figure | None:
    """The 8-client load with server and wrk on the same CPUs, as a deployment would run."""
    result = m.node.search.get(SHARED)
    if result is None:
        return None
    hn = hnswlib_single(m.hnswlib)
    cpus = m.cfg.shared_cpus
    where = "both CPUs" if cpus and len(cpus) == 2 else f"CPUs {cpu_list(cpus)}"
    fig = Figure(
        "search_8_clients_shared",
        f"Search QPS, 8 clients, server and wrk sharing {where}",
        "QPS",
        "higher",
        latency_side(result),
        hn,
        floor=_floor(m, SHARED),
        note=(
            f"server and wrk both allowed on CPU {cpu_list(cpus)}, the scheduler shares them; "
            "the server may use 2 cores here (the node runs searches in worker threads when it "
            "has more than one CPU) while the hnswlib baseline is 1 thread on 1 core; the "
            "floor is single-threaded"
        ),
    )
    fig.targets.append(
        Target("≥ 0.9 x in-process 1-thread QPS", result.qps, 0.9 * hn.value, "higher")
    )
    return fig


def _batch(m: Measured, search_key: str, key: str, body: str, note: str) -> Figure | None:
    result = m.node.search.get(search_key)
    if result is None:
        return None
    cfg, h = m.cfg, m.hnswlib
    hn = Side(
        h.batched.qps,
        h.batched.recall,
        {"threads": cfg.server_threads, "cpu_us": h.batched.cpu_us_per_query},
    )
    shape = f"{cfg.batch} queries/request, {body}, {cfg.batch_connections} clients"
    hn_note = f"hnswlib: knn_query of {cfg.batch} queries per call, {cfg.server_threads} thread(s)"
    # Chroma and the floor take JSON only, so their batch figures sit on the JSON row: a row
    # compares one body encoding.
    json_row = search_key == "batch_json"
    fig = Figure(
        key,
        f"Batch search QPS ({shape})",
        "QPS",
        "higher",
        latency_side(result),
        hn,
        _peer(m.chroma, "batch") if json_row else None,
        floor=_floor(m, "batch") if json_row else None,
        note=f"{hn_note}; {note}",
    )
    fig.targets.append(
        Target("≥ 0.9 x in-process batched knn_query", result.qps, 0.9 * hn.value, "higher")
    )
    return fig


def batch_search(m: Measured) -> Figure | None:
    """Batch search with the node's binary query body (float32 rows, no JSON)."""
    return _batch(
        m,
        "batch",
        "batch_search",
        "binary body",
        "body `application/x-dvec-queries` (float32 rows, no JSON); the bare aiohttp floor and "
        "Chroma, where measured, take JSON only: their batch figures are on the JSON row",
    )


def batch_search_json(m: Measured) -> Figure | None:
    """The same batch load with JSON bodies, where the JSON-only servers sit beside it."""
    return _batch(
        m,
        "batch_json",
        "batch_search_json",
        "JSON body",
        f'body `{{"vectors": [...], "k": {m.cfg.hnsw.k}}}`, the same for the floor; Chroma, '
        "where measured, gets its own JSON query",
    )


def _hnswlib_build(m: Measured) -> Side:
    h = m.hnswlib
    return Side(
        h.build_rate,
        h.single.recall,
        {"threads": m.cfg.server_threads, "cpu_us": h.build_cpu_us},
    )


def ingest(m: Measured) -> Figure:
    """Bulk ingest, timed until the last vectors are searchable, against one add_items call."""
    cfg, node, chroma = m.cfg, m.node, m.chroma
    assert node.ingest is not None
    theirs = None
    if chroma is not None and chroma.ingest is not None and "single_1" in chroma.search:
        theirs = Side(
            chroma.ingest.rate,
            chroma.search["single_1"].recall,
            {"ack_rate": chroma.ingest.ack_rate, "cpu_us": chroma.ingest_cpu_us},
        )
    fig = Figure(
        "ingest",
        "Bulk ingest, vectors/s (binary, fsync=batch, ack=leader)",
        "vectors/s",
        "higher",
        Side(
            node.ingest.rate,
            # Ingest's recall is that of the searches right after it, on the index it built.
            node.search["single_1"].recall if "single_1" in node.search else None,
            {
                "ack_rate": node.ingest.ack_rate,
                "requests": node.ingest.requests,
                "cpu_us": node.ingest_cpu_us,
            },
        ),
        _hnswlib_build(m),
        theirs,
        note=(
            f"{cfg.ingest_batch} vectors per request, {cfg.ingest_concurrency} in flight, timed "
            "until the last vectors are searchable; hnswlib: one add_items call"
        ),
    )
    fig.targets.append(
        Target(
            "≥ 0.85 x hnswlib add_items", node.ingest.rate, 0.85 * m.hnswlib.build_rate, "higher"
        )
    )
    return _vs_chroma(fig, "≥ 1 x Chroma ingest", 1.0)


def _replication_skipped(m: Measured, key: str, label: str) -> Figure:
    reason = "--no-replication" if not m.cfg.replication else "not measured"
    return Figure(key, label, "", "higher", None, skipped=reason)


def ingest_follower(m: Measured) -> Figure:
    """Ingest at ack=one: each write waits for the follower's append."""
    r = m.replicated
    if r is None:
        return _replication_skipped(m, "ingest_follower", "Ingest with a follower (ack=one)")
    return Figure(
        "ingest_follower",
        "Ingest with a follower, vectors/s (ack=one)",
        "vectors/s",
        "higher",
        Side(r.ingest.rate, r.recall),
        _hnswlib_build(m),
        note="recall: searches served by the follower from its replicated index",
    )


def replication_lag(m: Measured) -> Figure:
    """Time from the leader's ack to the follower showing the write applied, at a paced rate."""
    label = "Follower lag p99 at half the leader's maximum ingest"
    r = m.replicated
    if r is None:
        return _replication_skipped(m, "replication_lag", label)
    lag = r.lag
    fig = Figure(
        "replication_lag",
        label,
        "ms",
        "lower",
        Side(lag["p99_ms"], r.recall, dict(lag)),
        note=(
            f"{lag['writes']} paced writes of {lag['vectors_per_write']} vectors at "
            f"{lag['achieved_rate']:,.0f} vectors/s; lag from "
            f"leader ack to the follower showing the seq applied, polled every "
            f"{lag['poll_interval_ms']:.0f} ms"
        ),
    )
    fig.targets.append(Target("p99 < 100 ms", lag["p99_ms"], 100.0, "lower"))
    return fig


def _hnswlib_load(m: Measured) -> Side:
    return Side(m.hnswlib.load_seconds, m.hnswlib.single.recall)


def _restart_side(r: RestartResult, recall: float) -> Side:
    return Side(r.seconds, recall, {"checkpoint_seq": r.checkpoint_seq, "last_seq": r.last_seq})


def restart_checkpoint(m: Measured) -> Figure:
    """SIGKILL after a checkpoint covering the last write, then start to ready."""
    r = m.restarted
    if r is None:
        return Figure(
            "restart_checkpoint",
            "Restart from a checkpoint",
            "s",
            "lower",
            None,
            skipped="--no-restart",
        )
    return Figure(
        "restart_checkpoint",
        "Restart from a checkpoint (SIGKILL, start → ready), s",
        "s",
        "lower",
        _restart_side(r.checkpoint, r.recall),
        _hnswlib_load(m),
        note="includes interpreter start-up; hnswlib: load_index of the same index",
    )


def restart_graceful(m: Measured) -> Figure | None:
    """SIGTERM, then start to ready: whatever the node does on shutdown shows here."""
    r = m.restarted
    if r is None:
        return None  # restart_checkpoint's row already says --no-restart
    return Figure(
        "restart_graceful",
        "Restart after SIGTERM (start → ready), s",
        "s",
        "lower",
        _restart_side(r.graceful, r.recall),
        _hnswlib_load(m),
    )


Builder = Callable[[Measured], Figure | None]

# The table's rows in order. A data set measured with searches and ingest only (the text set)
# takes the CORE rows.
BUILDERS: dict[str, Builder] = {
    "search_1_client": search_1_client,
    "search_8_clients": search_8_clients,
    "search_8_clients_shared": search_8_clients_shared,
    "batch_search": batch_search,
    "batch_search_json": batch_search_json,
    "ingest": ingest,
    "ingest_follower": ingest_follower,
    "replication_lag": replication_lag,
    "restart_checkpoint": restart_checkpoint,
    "restart_graceful": restart_graceful,
}
CORE = ("search_1_client", "search_8_clients", "batch_search", "batch_search_json", "ingest")


def table(
    m: Measured,
    keys: Iterable[str] = BUILDERS,
    *,
    key_prefix: str = "",
    label_prefix: str = "",
) -> list[Figure]:
    """The rows `keys` names that the run measured, keys and labels prefixed (for a second
    data set's rows in the same table)."""
    out: list[Figure] = []
    for key in keys:
        fig = BUILDERS[key](m)
        if fig is not None:
            fig.key = key_prefix + fig.key
            fig.label = label_prefix + fig.label
            out.append(fig)
    return out
