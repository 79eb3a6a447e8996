"""`make bench`: every figure of issue 6 in one run, each beside its in-process baseline.

Order: data and exact ground truth; the in-process hnswlib baseline (pinned like the server;
its search figures are taken right before d-vecDB's searches); the bare aiohttp floor; the
transport alone (canned answers, no search); d-vecDB ingest and searches, replication with a
follower, restarts, then the 8-client search with server and wrk sharing the CPUs; Chroma on
the same data; then the real-text set. Every process is started through one `Processes` owner
that kills them all on the way out, whatever happens.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from dvecbench import (
    chroma,
    config,
    inprocess,
    machine,
    nodeapi,
    profile,
    replication,
    report,
    restart,
    searchload,
    textset,
    transport,
)
from dvecbench import wrk as wrkmod
from dvecbench.datasets import Dataset, make_clustered
from dvecbench.httpc import Client, HttpError
from dvecbench.ingest import AckLog, IngestResult, paced, timed
from dvecbench.procs import Processes, free_port, signals_raise
from dvecbench.report import Figure, Side, Target
from dvecbench.searchload import SHARED, LoadResult, Phases, SearchApi, measure

REPO = Path(__file__).resolve().parents[2]
TOKEN = "bench-cluster-token"


class Progress:
    """Timestamped progress lines; phase headers also sample the machine's load average."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.loads: list[dict[str, object]] = []

    def __call__(self, message: str) -> None:
        elapsed = time.monotonic() - self.started
        print(f"[bench +{elapsed:6.1f}s] {message}", flush=True)
        if not message.startswith(" "):
            load1 = os.getloadavg()[0]
            self.loads.append({"t": round(elapsed, 1), "phase": message[:70], "load1": load1})

    def load_summary(self) -> str:
        values = [float(str(x["load1"])) for x in self.loads]
        if not values:
            return "n/a"
        return f"{min(values):.2f}-{max(values):.2f} (mean {sum(values) / len(values):.2f})"


def _latency_side(r: LoadResult) -> Side:
    extra = {"p50_ms": r.latency.p50, "p99_ms": r.latency.p99, "cpu_us": r.cpu_us_per_query}
    return Side(r.qps, r.recall, extra)


def shared_search(
    cfg: config.Config,
    api: SearchApi,
    ds: Dataset,
    phases: Phases,
    progress: Callable[[str], None],
    cpu: Callable[[], float],
) -> LoadResult:
    """8 clients, single vector, wrk (and the recall client) on the shared CPUs too."""
    cpus = cfg.shared_cpus
    with inprocess.pinned(cpus):
        return measure(
            api,
            ds,
            k=cfg.hnsw.k,
            connections=8,
            batch=1,
            phases=dataclasses.replace(phases, cpus=cpus),
            progress=progress,
            cpu=cpu,
        )


def _cpu_list(cpus: frozenset[int] | None) -> str:
    return ",".join(map(str, sorted(cpus))) if cpus else "any"


class Baseline:
    """In-process hnswlib numbers, measured on the server's CPUs.

    The search figures are measured by :meth:`measure_search` right before d-vecDB's, and
    measured again by :meth:`check_drift` right after: this VM's speed drifts by 10-20% over
    minutes, so a ratio compares figures taken close together, and the report shows how far
    the in-process figure moved while d-vecDB's were taken.
    """

    def __init__(self, cfg: config.Config, ds: Dataset, say: Progress) -> None:
        self.cfg, self.ds, self.say = cfg, ds, say
        threads = cfg.server_threads
        with inprocess.pinned(cfg.server_cpus):
            say(f"hnswlib add_items of {ds.size:,} vectors with {threads} thread(s)")
            self.build = inprocess.build(ds, cfg.hnsw, threads=threads)
            say(f"  {self.build.rate:,.0f} vectors/s")
            self.load_seconds = restart.hnswlib_load_seconds(
                self.build.index, space=ds.metric, dim=ds.dimension, ef=cfg.hnsw.ef_search
            )
            say(f"  load_index: {self.load_seconds:.3f} s")
        # Set by measure_search, right before d-vecDB's searches: a figure taken here, minutes
        # earlier, would only be replaced.
        self.single: inprocess.SearchResult
        self.batched: inprocess.SearchResult
        self.after: tuple[float, float] | None = None  # (single, batched) QPS after d-vecDB's

    def _search_figures(self) -> tuple[inprocess.SearchResult, inprocess.SearchResult]:
        cfg, ds, say = self.cfg, self.ds, self.say
        index, threads = self.build.index, cfg.server_threads
        with inprocess.pinned(cfg.server_cpus):
            single = inprocess.single(index, ds, cfg.hnsw, seconds=cfg.seconds)
            lat = single.latency
            assert lat is not None
            say(
                f"  hnswlib 1 thread, 1 query per call: {single.qps:,.0f} QPS, p50 {lat.p50:.3f}"
                f" ms, p99 {lat.p99:.3f} ms, recall {single.recall:.4f}"
            )
            batched = inprocess.batched(
                index, ds, cfg.hnsw, threads=threads, batch=cfg.batch, seconds=cfg.seconds
            )
            say(f"  hnswlib {cfg.batch}/call, {threads} thread(s): {batched.qps:,.0f} QPS")
        return single, batched

    def measure_search(self) -> None:
        """The search figures the ratios use, taken just before d-vecDB's searches."""
        self.say("in-process hnswlib search, just before d-vecDB's")
        self.single, self.batched = self._search_figures()

    def check_drift(self) -> None:
        """The same figures again just after d-vecDB's searches, for the report's drift note."""
        self.say("in-process hnswlib search again, just after d-vecDB's")
        single, batched = self._search_figures()
        self.after = (single.qps, batched.qps)

    def drift_note(self) -> str:
        if self.after is None:
            return ""
        single, batched = self.after
        return (
            f"; measured again right after d-vecDB's searches: {single:,.0f} QPS "
            f"({single / self.single.qps - 1:+.0%}), batched {batched:,.0f} QPS "
            f"({batched / self.batched.qps - 1:+.0%})"
        )


class NodeRun:
    """d-vecDB's figures (search, ingest, restart, replication)."""

    FOLLOWER_COLLECTION = "bench_ack_one"
    LAG_COLLECTION = "bench_lag"

    def __init__(
        self,
        cfg: config.Config,
        ds: Dataset,
        procs: Processes,
        say: Progress,
        *,
        tag: str = "",
        profile: bool = False,
    ):
        self.cfg, self.ds, self.procs, self.say = cfg, ds, procs, say
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = procs.log_dir / f"node-leader{tag}"
        self.argv = nodeapi.server_argv(port=self.port, data_dir=self.data_dir)
        self.env = {"DVECDB_CLUSTER_TOKEN": TOKEN}
        self.ingest: IngestResult | None = None
        self.ingest_cpu_us: float | None = None
        self.ingest_recall: float | None = None
        self.search: dict[str, LoadResult] = {}
        self.restarts: tuple[restart.RestartResult, restart.RestartResult] | None = None
        self.restart_recall: float | None = None
        self.follower_ingest: IngestResult | None = None
        self.follower_recall: float | None = None
        self.lag: dict[str, float] | None = None
        self.replication_skipped: str | None = None
        self.profile: list[str] | None = None
        self.want_profile = profile

    def start(self, *, shared: bool = False) -> None:
        cpus = self.cfg.shared_cpus if shared else self.cfg.server_cpus
        self.procs.start("node", self.argv, cpus=cpus, env=self.env)
        self.procs.wait_ready("node", self.url + "/readyz", timeout=120)

    def run_shared(self, phases: Phases) -> None:
        """The 8-client search again, with the node restarted on the shared CPUs.

        Restarted, not moved: the node decides at start-up whether it has the CPUs for
        search worker threads.
        """
        self.say(
            f"d-vecDB search {SHARED}: node restarted on CPU {_cpu_list(self.cfg.shared_cpus)}, "
            "wrk there too"
        )
        self.procs.stop("node")
        self.start(shared=True)
        self.search[SHARED] = shared_search(
            self.cfg,
            self.api(),
            self.ds,
            phases,
            lambda m: self.say("  " + m),
            lambda: self.procs.cpu_seconds("node"),
        )

    def api(self, *, binary: bool = False) -> SearchApi:
        return nodeapi.search_api(self.url, binary=binary)

    def run_ingest(self) -> None:
        cfg, ds = self.cfg, self.ds
        client = Client(self.url)
        nodeapi.create_collection(client, ds, cfg.hnsw)
        client.close()
        bodies = list(nodeapi.upsert_bodies(ds.base, batch=cfg.ingest_batch))
        probe = list(range(ds.size - 5, ds.size))
        self.say(
            f"d-vecDB ingest: {ds.size:,} vectors, {len(bodies)} binary bodies, "
            f"{cfg.ingest_concurrency} in flight, fsync=batch, ack=leader"
        )
        cpu_before = self.procs.cpu_seconds("node")
        with inprocess.pinned(cfg.client_cpus):
            self.ingest = timed(
                self.url,
                bodies,
                lambda c, b: _discard(nodeapi.upsert(c, b, ack="leader")),
                vectors=ds.size,
                concurrency=cfg.ingest_concurrency,
                searchable=lambda c: nodeapi.self_match(c, ds.base[probe], probe),
            )
        self.ingest_cpu_us = (self.procs.cpu_seconds("node") - cpu_before) / ds.size * 1e6
        client = Client(self.url)
        stored = nodeapi.count(client)
        client.close()
        if stored != ds.size:
            raise RuntimeError(f"d-vecDB holds {stored} vectors after ingesting {ds.size}")
        self.say(
            f"  {self.ingest.rate:,.0f} vectors/s until searchable, "
            f"server CPU {self.ingest_cpu_us:.0f} us/vector"
        )

    def run_search(self, phases: Phases) -> None:
        """Single-vector searches (JSON), then the batch form with each body encoding."""
        api, k = self.api(), self.cfg.hnsw.k
        binary = self.api(binary=True)
        with inprocess.pinned(self.cfg.client_cpus):
            for key, conns, batch, how in (
                ("single_1", 1, 1, api),
                ("single_8", 8, 1, api),
                ("batch", self.cfg.batch_connections, self.cfg.batch, binary),
                ("batch_json", self.cfg.batch_connections, self.cfg.batch, api),
            ):
                self.say(f"d-vecDB search {key}")
                self.search[key] = measure(
                    how,
                    self.ds,
                    k=k,
                    connections=conns,
                    batch=batch,
                    phases=phases,
                    progress=lambda m: self.say("  " + m),
                    cpu=lambda: self.procs.cpu_seconds("node"),
                )
        self.ingest_recall = self.search["single_1"].recall
        if self.want_profile:
            out = self.cfg.out_dir / f"{self.cfg.stem}-profile-search8.txt"
            self.say(f"profiling 8-client search with py-spy -> {out}")
            with inprocess.pinned(self.cfg.client_cpus):
                self.profile = profile.profile_search(
                    pid=self.procs.pid("node"),
                    api=api,
                    ds=self.ds,
                    k=k,
                    seconds=self.cfg.seconds,
                    cpus=self.cfg.client_cpus,
                    out=out,
                )
            for line in self.profile[:10]:
                self.say("  " + line)

    def run_restart(self) -> None:
        self.say("d-vecDB restart: SIGTERM then start; checkpoint, SIGKILL, start")
        self.restarts = restart.restarts(
            self.procs, "node", self.argv, base_url=self.url, cpus=self.cfg.server_cpus
        )
        graceful, ckpt = self.restarts
        client = Client(self.url)
        try:
            stored = nodeapi.count(client)
        finally:
            client.close()
        if stored != self.ds.size:
            raise RuntimeError(f"d-vecDB holds {stored} vectors after restart, not {self.ds.size}")
        with inprocess.pinned(self.cfg.client_cpus):
            self.restart_recall = searchload.recall(self.api(), self.ds, k=self.cfg.hnsw.k, batch=1)
        self.say(
            f"  after SIGTERM {graceful.seconds:.2f} s (checkpoint seq {graceful.checkpoint_seq}"
            f"/{graceful.last_seq}); from checkpoint {ckpt.seconds:.2f} s, "
            f"recall {self.restart_recall:.4f}"
        )

    def run_replication(self, max_rate: float) -> None:
        cfg, say = self.cfg, self.say
        port = free_port()
        furl = f"http://127.0.0.1:{port}"
        argv = nodeapi.server_argv(
            port=port,
            data_dir=self.procs.log_dir / "node-follower",
            node_id="bench-1",
            standalone=False,
        )
        self.procs.start("follower", argv, cpus=cfg.follower_cpus, env=self.env)
        # A member booted in standby is not ready until it has reconciled with a leader
        # (it may hold records no leader acknowledged): wait for it to serve, then follow.
        self.procs.wait_ready("follower", furl + "/healthz", timeout=120)
        leader, follower = Client(self.url), Client(furl)
        try:
            status = nodeapi.status(leader)
            try:
                replication.follow(
                    follower, leader_url=self.url, epoch=int(status["epoch"]), token=TOKEN
                )
            except HttpError as exc:
                if exc.status in (404, 405, 501):
                    self.replication_skipped = f"node has no replication yet ({exc.status})"
                    say(f"replication skipped: {self.replication_skipped}")
                    return
                raise
            say("follower catching up with the leader's log")
            replication.wait_following(
                follower, applied_at_least=int(status["last_seq"]), timeout=300
            )
            follower_api = dataclasses.replace(self.api(), base_url=furl)
            with inprocess.pinned(cfg.client_cpus):
                self.follower_recall = searchload.recall(
                    follower_api, self.ds, k=cfg.hnsw.k, batch=1
                )
            say(f"  follower serves the replicated index: recall {self.follower_recall:.4f}")
            self._ingest_with_follower()
            self._lag(furl, max_rate)
        finally:
            leader.close()
            follower.close()
            self.procs.stop("follower")
        # The restart figures that follow are about the main collection alone.
        client = Client(self.url)
        try:
            for name in (self.FOLLOWER_COLLECTION, self.LAG_COLLECTION):
                client.json("DELETE", f"/v1/collections/{name}?ack=leader", ok=(200, 404))
        finally:
            client.close()

    def _second_collection(self, name: str) -> None:
        client = Client(self.url)
        try:
            nodeapi.create_collection(client, self.ds, self.cfg.hnsw, name=name, ack="one")
        finally:
            client.close()

    def _ingest_with_follower(self) -> None:
        cfg, ds = self.cfg, self.ds
        name = self.FOLLOWER_COLLECTION
        self._second_collection(name)
        bodies = list(nodeapi.upsert_bodies(ds.base, batch=cfg.ingest_batch))
        self.say(f"d-vecDB ingest with a follower: {ds.size:,} vectors, ack=one")
        probe = list(range(ds.size - 5, ds.size))

        def send(c: Client, body: bytes) -> None:
            nodeapi.upsert(c, body, ack="one", collection=name)

        def searchable(c: Client) -> bool:
            return nodeapi.self_match(c, ds.base[probe], probe, collection=name)

        with inprocess.pinned(cfg.client_cpus):
            self.follower_ingest = timed(
                self.url,
                bodies,
                send,
                vectors=ds.size,
                concurrency=cfg.ingest_concurrency,
                searchable=searchable,
            )
        self.say(f"  {self.follower_ingest.rate:,.0f} vectors/s (ack=one)")

    def _lag(self, furl: str, max_rate: float) -> None:
        cfg, ds = self.cfg, self.ds
        name = self.LAG_COLLECTION
        self._second_collection(name)
        target_rate = max_rate / 2
        # About 40 writes a second: enough acks for a p99, each still a real batch.
        per_request = max(1, min(cfg.ingest_batch, round(target_rate / 40)))
        total = min(ds.size, int(target_rate * cfg.lag_seconds))
        bodies = list(nodeapi.upsert_bodies(ds.base[:total], batch=per_request))
        acks = AckLog()
        poller = replication.AppliedPoller(furl)
        leader = Client(self.url)
        self.say(
            f"replication lag at {target_rate:,.0f} vectors/s (half the leader's maximum), "
            f"{len(bodies)} writes of {per_request}"
        )

        def send(body: bytes) -> None:
            acks.record(nodeapi.upsert(leader, body, ack="leader", collection=name))

        with inprocess.pinned(cfg.client_cpus):
            poller.start()
            try:
                took = paced(bodies, send, per_second=target_rate / per_request)
                last = acks.acks[-1][0]
                deadline = time.monotonic() + 60
                while (not poller.samples or poller.samples[-1][1] < last) and (
                    time.monotonic() < deadline
                ):
                    time.sleep(0.01)
            finally:
                poller.stop()
                leader.close()
        values = replication.lags(acks.acks, poller.samples)
        if not values:
            raise RuntimeError("the follower applied none of the paced writes")
        arr = np.asarray(values) * 1000
        self.lag = {
            "p50_ms": float(np.percentile(arr, 50)),
            "p99_ms": float(np.percentile(arr, 99)),
            "max_ms": float(arr.max()),
            "writes": len(acks.acks),
            "vectors_per_write": per_request,
            "seen": len(values),
            "achieved_rate": total / took,
            "target_rate": target_rate,
            "poll_interval_ms": poller.interval * 1000,
        }
        self.say(
            f"  lag p50 {self.lag['p50_ms']:.1f} ms, p99 {self.lag['p99_ms']:.1f} ms "
            f"({len(values)}/{len(acks.acks)} writes seen)"
        )


def _discard(_: object) -> None:
    return None


class FloorRun:
    """The bare aiohttp handler with inline hnswlib (see `floor_server.py`), same searches."""

    SCRIPT = Path(__file__).with_name("floor_server.py")

    def __init__(self, cfg: config.Config, ds: Dataset, procs: Processes, say: Progress):
        self.cfg, self.ds, self.procs, self.say = cfg, ds, procs, say
        self.search: dict[str, LoadResult] = {}

    def run(self, phases: Phases) -> None:
        cfg, ds = self.cfg, self.ds
        base = self.procs.log_dir / "floor-base.npy"
        np.save(base, ds.base)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        h = cfg.hnsw
        argv = [sys.executable, "-I", str(self.SCRIPT), str(port), str(base), ds.metric]
        argv += [str(h.m), str(h.ef_construction), str(h.ef_search)]
        self.say("bare aiohttp floor: building its index in-process, then the same searches")
        self.procs.start("floor", argv, cpus=cfg.server_cpus, cwd=self.procs.log_dir)
        self.procs.wait_ready("floor", url + "/readyz", timeout=900)
        api = nodeapi.search_api(url)  # JSON bodies only
        with inprocess.pinned(cfg.client_cpus):
            for key, conns, batch in (
                ("single_1", 1, 1),
                ("single_8", 8, 1),
                ("batch", cfg.batch_connections, cfg.batch),
            ):
                self.search[key] = measure(
                    api,
                    ds,
                    k=h.k,
                    connections=conns,
                    batch=batch,
                    phases=phases,
                    progress=lambda m: self.say(f"  floor {m}"),
                    cpu=lambda: self.procs.cpu_seconds("floor"),
                )
        if cfg.shared:
            # One thread, nothing sized from the CPU count: moving it equals starting it there.
            self.procs.set_cpus("floor", cfg.shared_cpus)
            self.search[SHARED] = shared_search(
                cfg,
                api,
                ds,
                phases,
                lambda m: self.say(f"  floor {SHARED} {m}"),
                lambda: self.procs.cpu_seconds("floor"),
            )
        self.procs.stop("floor")
        base.unlink()


class ChromaRun:
    def __init__(self, cfg: config.Config, ds: Dataset, procs: Processes, say: Progress):
        self.cfg, self.ds, self.procs, self.say = cfg, ds, procs, say
        self.cli = chroma.ensure_installed(REPO)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.collection = ""
        self.ingest: IngestResult | None = None
        self.ingest_cpu_us: float | None = None
        self.search: dict[str, LoadResult] = {}

    def run(self, phases: Phases) -> None:
        cfg, ds, say = self.cfg, self.ds, self.say
        argv = chroma.server_argv(self.cli, data_dir=self.procs.log_dir / "chroma", port=self.port)
        self.procs.start("chroma", argv, cpus=cfg.server_cpus, cwd=self.procs.log_dir)
        self.procs.wait_ready("chroma", self.url + "/api/v2/heartbeat", timeout=120)
        client = Client(self.url)
        try:
            self.collection = chroma.create_collection(client, ds, cfg.hnsw)
            batch = min(chroma.max_batch(client), cfg.ingest_batch)
        finally:
            client.close()
        bodies = list(chroma.add_bodies(ds.base, batch=batch))
        add = chroma.add_path(self.collection)
        probe = list(range(ds.size - 5, ds.size))
        say(f"Chroma ingest: {ds.size:,} vectors, {len(bodies)} base64 bodies")

        def send(c: Client, body: bytes) -> None:
            status, data = c.request("POST", add, body)
            if status not in (200, 201):
                raise HttpError("POST", add, status, data)

        def searchable(c: Client) -> bool:
            if chroma.unindexed(c, self.collection):
                return False
            top = chroma.search_ids(c, self.collection, ds.base[probe], 10)
            return nodeapi.each_found(top, probe)

        cpu_before = self.procs.cpu_seconds("chroma")
        with inprocess.pinned(cfg.client_cpus):
            self.ingest = timed(
                self.url,
                bodies,
                send,
                vectors=ds.size,
                concurrency=cfg.ingest_concurrency,
                searchable=searchable,
            )
        self.ingest_cpu_us = (self.procs.cpu_seconds("chroma") - cpu_before) / ds.size * 1e6
        say(
            f"  {self.ingest.rate:,.0f} vectors/s until searchable, "
            f"server CPU {self.ingest_cpu_us:.0f} us/vector"
        )
        api = SearchApi(
            base_url=self.url,
            path=chroma.query_path(self.collection),
            body=chroma.query_body,
            ids=lambda c, q, k: chroma.search_ids(c, self.collection, q, k),
        )
        with inprocess.pinned(cfg.client_cpus):
            for key, conns, b in (
                ("single_1", 1, 1),
                ("single_8", 8, 1),
                ("batch", cfg.batch_connections, cfg.batch),
            ):
                say(f"Chroma search {key}")
                self.search[key] = measure(
                    api,
                    ds,
                    k=cfg.hnsw.k,
                    connections=conns,
                    batch=b,
                    phases=phases,
                    progress=lambda m: say("  " + m),
                    cpu=lambda: self.procs.cpu_seconds("chroma"),
                )
        self.procs.stop("chroma")


def core_figures(
    cfg: config.Config,
    base: Baseline,
    node: NodeRun,
    peer: ChromaRun | None,
    *,
    key_prefix: str = "",
    label_prefix: str = "",
) -> list[Figure]:
    """Search and ingest figures of one data set; targets are the issue's, from this run."""
    single_lat = base.single.latency
    assert single_lat is not None
    hn_single = Side(
        base.single.qps,
        base.single.recall,
        {
            "p50_ms": single_lat.p50,
            "p99_ms": single_lat.p99,
            "cpu_us": base.single.cpu_us_per_query,
            "threads": 1,
        },
    )
    out: list[Figure] = []

    s1, s8 = node.search["single_1"], node.search["single_8"]
    c = peer.search if peer else {}
    f1 = Figure(
        key_prefix + "search_1_client",
        label_prefix + "Search QPS, 1 client (single vector)",
        "QPS",
        "higher",
        _latency_side(s1),
        hn_single,
        _latency_side(c["single_1"]) if "single_1" in c else None,
        note="hnswlib: one knn_query per query on 1 thread" + base.drift_note(),
    )
    f1.targets.append(
        Target(
            "p50 ≤ in-process p50 + 0.10 ms",
            s1.latency.p50,
            single_lat.p50 + 0.10,
            "lower",
        )
    )
    f8 = Figure(
        key_prefix + "search_8_clients",
        label_prefix + "Search QPS, 8 clients (single vector)",
        "QPS",
        "higher",
        _latency_side(s8),
        hn_single,
        _latency_side(c["single_8"]) if "single_8" in c else None,
    )
    f8.targets.append(
        Target("≥ 0.9 x in-process 1-thread QPS", s8.qps, 0.9 * base.single.qps, "higher")
    )
    for f in (f1, f8):
        if f.vs_chroma is not None:
            f.targets.append(Target("≥ 5 x Chroma QPS", f.vs_chroma, 5.0, "higher"))
    out += [f1, f8, *batch_figures(cfg, base, node.search, c, key_prefix, label_prefix)]

    assert node.ingest is not None
    hn_build = Side(
        base.build.rate,
        base.single.recall,
        {"threads": cfg.server_threads, "cpu_us": base.build.cpu_us_per_vector},
    )
    fi = Figure(
        key_prefix + "ingest",
        label_prefix + "Bulk ingest, vectors/s (binary, fsync=batch, ack=leader)",
        "vectors/s",
        "higher",
        Side(
            node.ingest.rate,
            node.ingest_recall,
            {
                "ack_rate": node.ingest.ack_rate,
                "requests": node.ingest.requests,
                "cpu_us": node.ingest_cpu_us,
            },
        ),
        hn_build,
        Side(
            peer.ingest.rate,
            c["single_1"].recall,
            {"ack_rate": peer.ingest.ack_rate, "cpu_us": peer.ingest_cpu_us},
        )
        if peer and peer.ingest and "single_1" in c
        else None,
        note=(
            f"{cfg.ingest_batch} vectors per request, {cfg.ingest_concurrency} in flight, timed "
            "until the last vectors are searchable; hnswlib: one add_items call"
        ),
    )
    fi.targets.append(
        Target("≥ 0.85 x hnswlib add_items", node.ingest.rate, 0.85 * base.build.rate, "higher")
    )
    if fi.vs_chroma is not None:
        fi.targets.append(Target("≥ 1 x Chroma ingest", fi.vs_chroma, 1.0, "higher"))
    out.append(fi)
    return out


def batch_figures(
    cfg: config.Config,
    base: Baseline,
    ours: dict[str, LoadResult],
    chroma_search: dict[str, LoadResult],
    key_prefix: str,
    label_prefix: str,
) -> list[Figure]:
    """The batch rows: the node's binary query body, then the same load with JSON bodies.

    Chroma's batch (JSON, its own API) sits on the JSON row only, like the floor's (see
    `figures`): those servers take no binary body, and a row compares one encoding.
    """
    hn = Side(
        base.batched.qps,
        base.batched.recall,
        {"threads": cfg.server_threads, "cpu_us": base.batched.cpu_us_per_query},
    )
    shape = f"{cfg.batch} queries/request"
    clients = f"{cfg.batch_connections} clients"
    hn_note = f"hnswlib: knn_query of {cfg.batch} queries per call, {cfg.server_threads} thread(s)"
    rows = (
        (
            "batch",
            "batch_search",
            "binary body",
            None,
            f"{hn_note}; body `application/x-dvec-queries` (float32 rows, no JSON); the bare "
            "aiohttp floor and Chroma, where measured, take JSON only: their batch figures are "
            "on the JSON row",
        ),
        (
            "batch_json",
            "batch_search_json",
            "JSON body",
            chroma_search.get("batch"),
            f'{hn_note}; body `{{"vectors": [...], "k": {cfg.hnsw.k}}}`, the same for the '
            "floor; Chroma, where measured, gets its own JSON query",
        ),
    )
    out: list[Figure] = []
    for search_key, key, body, peer, note in rows:
        result = ours.get(search_key)
        if result is None:
            continue
        fig = Figure(
            key_prefix + key,
            label_prefix + f"Batch search QPS ({shape}, {body}, {clients})",
            "QPS",
            "higher",
            _latency_side(result),
            hn,
            _latency_side(peer) if peer else None,
            note=note,
        )
        fig.targets.append(
            Target("≥ 0.9 x in-process batched knn_query", result.qps, 0.9 * hn.value, "higher")
        )
        out.append(fig)
    return out


# The floor's search keys beside the figures that show them (it takes JSON bodies only).
FLOOR_ROWS = {
    "search_1_client": "single_1",
    "search_8_clients": "single_8",
    "batch_search_json": "batch",
}


def shared_figure(
    cfg: config.Config, result: LoadResult, hn_single: Side, floor: FloorRun | None
) -> Figure:
    """The 8-client row with server and wrk on the same CPUs, against the 1-thread baseline."""
    cpus = cfg.shared_cpus
    where = "both CPUs" if cpus and len(cpus) == 2 else f"CPUs {_cpu_list(cpus)}"
    fig = Figure(
        "search_8_clients_shared",
        f"Search QPS, 8 clients, server and wrk sharing {where}",
        "QPS",
        "higher",
        _latency_side(result),
        hn_single,
        floor=_latency_side(floor.search[SHARED]) if floor and SHARED in floor.search else None,
        note=(
            f"server and wrk both allowed on CPU {_cpu_list(cpus)}, the scheduler shares them; "
            "the server may use 2 cores here (the node runs searches in worker threads when it "
            "has more than one CPU) while the hnswlib baseline is 1 thread on 1 core; the "
            "floor is single-threaded"
        ),
    )
    fig.targets.append(
        Target("≥ 0.9 x in-process 1-thread QPS", result.qps, 0.9 * hn_single.value, "higher")
    )
    return fig


def figures(
    cfg: config.Config,
    base: Baseline,
    node: NodeRun,
    peer: ChromaRun | None,
    floor: FloorRun | None,
) -> list[Figure]:
    """The main data set's whole table: search, ingest, replication and restart."""
    out = core_figures(cfg, base, node, peer)
    if floor is not None:
        for fig in out:
            if fig.key in FLOOR_ROWS:
                fig.floor = _latency_side(floor.search[FLOOR_ROWS[fig.key]])
    if SHARED in node.search:
        hn_single = out[1].hnswlib
        assert hn_single is not None
        out.insert(2, shared_figure(cfg, node.search[SHARED], hn_single, floor))
    hn_build = next(f.hnswlib for f in out if f.key == "ingest")
    assert hn_build is not None
    skipped = None if cfg.replication else "--no-replication"
    skipped = skipped or node.replication_skipped
    if skipped is None and node.follower_ingest is not None and node.lag is not None:
        out.append(
            Figure(
                "ingest_follower",
                "Ingest with a follower, vectors/s (ack=one)",
                "vectors/s",
                "higher",
                Side(node.follower_ingest.rate, node.follower_recall),
                hn_build,
                note="recall: searches served by the follower from its replicated index",
            )
        )
        lag = node.lag
        fl = Figure(
            "replication_lag",
            "Follower lag p99 at half the leader's maximum ingest",
            "ms",
            "lower",
            Side(lag["p99_ms"], node.follower_recall, lag),
            note=(
                f"{lag['writes']} paced writes of {lag['vectors_per_write']} vectors at "
                f"{lag['achieved_rate']:,.0f} vectors/s; lag from "
                f"leader ack to the follower showing the seq applied, polled every "
                f"{lag['poll_interval_ms']:.0f} ms"
            ),
        )
        fl.targets.append(Target("p99 < 100 ms", lag["p99_ms"], 100.0, "lower"))
        out.append(fl)
    else:
        for key, label in (
            ("ingest_follower", "Ingest with a follower (ack=one)"),
            ("replication_lag", "Follower lag p99 at half the leader's maximum ingest"),
        ):
            out.append(Figure(key, label, "", "higher", None, skipped=skipped or "not measured"))

    if node.restarts is not None:
        graceful, ckpt = node.restarts
        hn_load = Side(base.load_seconds, base.single.recall)
        out.append(
            Figure(
                "restart_checkpoint",
                "Restart from a checkpoint (SIGKILL, start → ready), s",
                "s",
                "lower",
                Side(
                    ckpt.seconds,
                    node.restart_recall,
                    {"checkpoint_seq": ckpt.checkpoint_seq, "last_seq": ckpt.last_seq},
                ),
                hn_load,
                note="includes interpreter start-up; hnswlib: load_index of the same index",
            )
        )
        out.append(
            Figure(
                "restart_graceful",
                "Restart after SIGTERM (start → ready), s",
                "s",
                "lower",
                Side(
                    graceful.seconds,
                    node.restart_recall,
                    {"checkpoint_seq": graceful.checkpoint_seq, "last_seq": graceful.last_seq},
                ),
                hn_load,
            )
        )
    else:
        out.append(
            Figure(
                "restart_checkpoint",
                "Restart from a checkpoint",
                "s",
                "lower",
                None,
                skipped="--no-restart",
            )
        )
    return out


def run(cfg: config.Config) -> Path:
    say = Progress()
    started = datetime.datetime.now(datetime.UTC)
    wrk_path = wrkmod.ensure_wrk()
    mach = machine.describe()
    say(f"machine: {mach['nproc']} CPUs {mach['cpu_model']}, load {mach['load_start']}")
    say(f"data: {cfg.vectors:,} clustered {cfg.dim}-d vectors, {cfg.queries:,} queries, exact k-NN")
    ds = make_clustered(n=cfg.vectors, n_queries=cfg.queries, dim=cfg.dim, k=cfg.hnsw.k)
    base = Baseline(cfg, ds, say)
    phases = Phases(
        seconds=cfg.seconds,
        warmup=cfg.warmup,
        batch=cfg.batch,
        batch_connections=cfg.batch_connections,
        cpus=cfg.client_cpus,
    )
    with tempfile.TemporaryDirectory(prefix="dvecbench-") as tmp, Processes(Path(tmp)) as procs:
        try:
            # The floor runs first so its figures and d-vecDB's are taken close together.
            floor: FloorRun | None = None
            if cfg.floor:
                floor = FloorRun(cfg, ds, procs, say)
                floor.run(phases)
            trans: transport.TransportRun | None = None
            if cfg.transport:
                trans = transport.TransportRun(cfg, ds, base.build.index, procs, say)
                trans.run(phases)
            node = NodeRun(cfg, ds, procs, say, profile=cfg.profile)
            node.start()
            node.run_ingest()
            base.measure_search()
            node.run_search(phases)
            base.check_drift()
            if cfg.replication:
                assert node.ingest is not None
                node.run_replication(node.ingest.rate)
            if cfg.restart:
                node.run_restart()
            if cfg.shared:
                node.run_shared(phases)
            procs.stop("node")
            peer: ChromaRun | None = None
            if cfg.chroma:
                peer = ChromaRun(cfg, ds, procs, say)
                peer.run(phases)
            table = figures(cfg, base, node, peer, floor)
            text_description = None
            if cfg.text:
                text_table, text_description = text_figures(cfg, procs, phases, say)
                table += text_table
        except BaseException:
            _dump_logs(procs)
            raise
    mach["load_end"] = machine.load()
    mach["load_during"] = say.load_summary()
    mach["load_samples"] = say.loads
    result = {
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "mode": cfg.mode,
        "machine": mach,
        "versions": machine.versions(wrk=wrk_path, chroma=chroma.VERSION if cfg.chroma else None),
        "pinning": {
            "server_cpus": sorted(cfg.server_cpus or []),
            "client_cpus": sorted(cfg.client_cpus or []),
            "follower_cpus": sorted(cfg.follower_cpus or []),
            "text": cfg.pinning_text(),
        },
        "hnsw": {
            "m": cfg.hnsw.m,
            "ef_construction": cfg.hnsw.ef_construction,
            "ef_search": cfg.hnsw.ef_search,
            "k": cfg.hnsw.k,
        },
        "dataset": {
            "name": ds.name,
            "description": ds.description,
            "vectors": ds.size,
            "queries": len(ds.queries),
            "dimension": ds.dimension,
        },
        "text_dataset": text_description,
        "profile_search8_gil_self": node.profile,
        "transport": trans.summary(base.single) if trans else None,
        "phase_seconds": cfg.seconds,
    }
    path = report.write(cfg.out_dir, cfg.stem, result, table)
    say(f"results: {path} and {path.with_suffix('.json')}")
    print(path.read_text(), flush=True)
    return path


def text_figures(
    cfg: config.Config, procs: Processes, phases: Phases, say: Progress
) -> tuple[list[Figure], str]:
    """The real-text set: in-process baseline, then a fresh node's ingest and searches."""
    say(f"text set: LSA of standard-library lines, {cfg.vectors:,} + {cfg.queries:,} (cached)")
    tds = textset.cached_text(n=cfg.vectors, n_queries=cfg.queries, dim=cfg.dim, k=cfg.hnsw.k)
    say(f"  {tds.description}")
    tbase = Baseline(cfg, tds, say)
    tnode = NodeRun(cfg, tds, procs, say, tag="-text")
    tnode.start()
    tnode.run_ingest()
    tbase.measure_search()
    tnode.run_search(phases)
    tbase.check_drift()
    procs.stop("node")
    table = core_figures(cfg, tbase, tnode, None, key_prefix="text_", label_prefix="[text set] ")
    return table, tds.description


def _dump_logs(procs: Processes) -> None:
    for log in sorted(procs.log_dir.glob("*.log")):
        tail = log.read_text(errors="replace")[-3000:]
        print(f"----- {log.name} (tail) -----\n{tail}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    cfg = config.parse(argv)
    try:
        with signals_raise():
            run(cfg)
    except KeyboardInterrupt:
        print("[bench] interrupted; every started process was stopped", file=sys.stderr)
        return 130
    except Exception:
        traceback.print_exc()
        print("[bench] failed; every started process was stopped", file=sys.stderr)
        return 1
    return 0
