"""The runners: each starts its engine, puts the same loads on it and keeps what it measured.

`Baseline` is hnswlib in this process, pinned to the server's CPUs; `NodeRun` is d-vecDB over
HTTP (searches, ingest, a follower, restarts); `FloorRun` is a bare aiohttp handler calling
hnswlib, the least a Python HTTP server can add; `ChromaRun` is a Chroma server. Each hands its
numbers to `figures` as plain records; the rows are built there.
Every process is started through the one `Processes` owner, which stops them all on the way out.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from dvecbench import chroma, config, inprocess, nodeapi, profile, replication, restart, searchload
from dvecbench.datasets import Dataset
from dvecbench.figures import InProcess, Replicated, Restarted, Served, cpu_list
from dvecbench.httpc import Client, HttpError
from dvecbench.ingest import AckLog, IngestResult, paced, timed
from dvecbench.procs import Processes, free_port
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


def shared_search(
    cfg: config.Config,
    api: SearchApi,
    ds: Dataset,
    phases: Phases,
    progress: Callable[[str], None],
    cpu: Callable[[], float],
) -> LoadResult:
    """8 clients, one vector per request, with wrk and the recall client on the server's
    CPUs too: the server competes with its load for the cores, as it would in a pod."""
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
        # earlier, would be compared with a machine that has drifted since.
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

    def measured(self) -> InProcess:
        return InProcess(
            single=self.single,
            batched=self.batched,
            build_rate=self.build.rate,
            build_cpu_us=self.build.cpu_us_per_vector,
            load_seconds=self.load_seconds,
            after=self.after,
        )


class NodeRun:
    """d-vecDB over HTTP: ingest, searches, a follower, restarts, and the shared-CPU search."""

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
        self.search: dict[str, LoadResult] = {}
        self.replicated: Replicated | None = None
        self.restarted: Restarted | None = None
        self.profile: list[str] | None = None
        self.want_profile = profile

    def served(self) -> Served:
        return Served(self.search, self.ingest, self.ingest_cpu_us)

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
            f"d-vecDB search {SHARED}: node restarted on CPU {cpu_list(self.cfg.shared_cpus)}, "
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
        graceful, ckpt = restart.restarts(
            self.procs, "node", self.argv, base_url=self.url, cpus=self.cfg.server_cpus
        )
        client = Client(self.url)
        try:
            stored = nodeapi.count(client)
        finally:
            client.close()
        if stored != self.ds.size:
            raise RuntimeError(f"d-vecDB holds {stored} vectors after restart, not {self.ds.size}")
        with inprocess.pinned(self.cfg.client_cpus):
            recall = searchload.recall(self.api(), self.ds, k=self.cfg.hnsw.k, batch=1)
        self.restarted = Restarted(graceful=graceful, checkpoint=ckpt, recall=recall)
        self.say(
            f"  after SIGTERM {graceful.seconds:.2f} s (checkpoint seq {graceful.checkpoint_seq}"
            f"/{graceful.last_seq}); from checkpoint {ckpt.seconds:.2f} s, recall {recall:.4f}"
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
            replication.follow(
                follower, leader_url=self.url, epoch=int(status["epoch"]), token=TOKEN
            )
            say("follower catching up with the leader's log")
            replication.wait_following(
                follower, applied_at_least=int(status["last_seq"]), timeout=300
            )
            follower_api = dataclasses.replace(self.api(), base_url=furl)
            with inprocess.pinned(cfg.client_cpus):
                recall = searchload.recall(follower_api, self.ds, k=cfg.hnsw.k, batch=1)
            say(f"  follower serves the replicated index: recall {recall:.4f}")
            ingest = self._ingest_with_follower()
            lag = self._lag(furl, max_rate)
            self.replicated = Replicated(ingest=ingest, recall=recall, lag=lag)
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

    def _ingest_with_follower(self) -> IngestResult:
        """Bulk ingest into a second collection at ack=one: each write waits for the
        follower's append, so the figure shows what replication costs the writer."""
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
            result = timed(
                self.url,
                bodies,
                send,
                vectors=ds.size,
                concurrency=cfg.ingest_concurrency,
                searchable=searchable,
            )
        self.say(f"  {result.rate:,.0f} vectors/s (ack=one)")
        return result

    def _lag(self, furl: str, max_rate: float) -> dict[str, float]:
        """Writes paced at half the leader's maximum ingest, each acked by the leader alone;
        a poller samples the follower's applied seq, and each write's lag is the time from its
        ack to the first sample covering it."""
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
        lag = {
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
            f"  lag p50 {lag['p50_ms']:.1f} ms, p99 {lag['p99_ms']:.1f} ms "
            f"({len(values)}/{len(acks.acks)} writes seen)"
        )
        return lag


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
    """A Chroma server on the server's CPUs: the same ingest (base64 bodies, its own API,
    timed until searchable) and the same search loads with its JSON query."""

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

    def served(self) -> Served:
        return Served(self.search, self.ingest, self.ingest_cpu_us)
