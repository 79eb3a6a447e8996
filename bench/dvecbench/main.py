"""`make bench`: d-vecDB over HTTP beside in-process hnswlib on the same data, one run.

Order: data and exact ground truth; the in-process hnswlib baseline (pinned like the server;
its search figures are taken right before d-vecDB's searches and again right after); the bare
aiohttp floor; the transport alone (canned answers, no search); d-vecDB ingest and searches,
replication with a follower, restarts, then the 8-client search with server and wrk sharing the
CPUs; Chroma on the same data; then the real-text set. The runners (`runners.py`) measure, the
builders (`figures.py`) turn their records into the table's rows, `report.py` writes it.
"""

from __future__ import annotations

import datetime
import sys
import tempfile
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dvecbench import (
    chroma,
    config,
    figures,
    machine,
    mixed_run,
    qdrant,
    report,
    reshard,
    sharded,
    textset,
    tlscost,
    transport,
)
from dvecbench import wrk as wrkmod
from dvecbench.datasets import make_clustered
from dvecbench.procs import Processes, signals_raise
from dvecbench.report import Figure
from dvecbench.runners import Baseline, ChromaRun, FloorRun, NodeRun, Progress
from dvecbench.searchload import Phases


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
            measured = figures.Measured(
                cfg=cfg,
                hnswlib=base.measured(),
                node=node.served(),
                chroma=peer.served() if peer else None,
                floor=floor.search if floor else None,
                replicated=node.replicated,
                restarted=node.restarted,
            )
            table = figures.table(measured)
            text_description = None
            if cfg.text:
                text_table, text_description = text_figures(cfg, procs, phases, say)
                table += text_table
            mixed_rows = mixed_figures(cfg, say) if cfg.mixed else None
            sharded_rows = sharded_figures(cfg, say) if cfg.sharded else None
            reshard_row = reshard_figures(cfg, say) if cfg.reshard else None
            tls_rows = None
            if cfg.tls:
                say("TLS cost: a leader and follower over HTTP, then HTTPS, alternating")
                tls_rows = tlscost.measure(
                    dim=cfg.dim,
                    seconds=cfg.seconds,
                    server_cpus=(cfg.server_cpus, cfg.follower_cpus),
                    say=say,
                )
        except BaseException:
            _dump_logs(procs)
            raise
    mach["load_end"] = machine.load()
    mach["load_during"] = say.load_summary()
    mach["load_samples"] = say.loads
    result = report.header(
        date=started.strftime("%Y-%m-%d %H:%M UTC"),
        cfg=cfg,
        machine=mach,
        versions=machine.versions(wrk=wrk_path, chroma=chroma.VERSION if cfg.chroma else None),
        dataset=ds,
        text_dataset=text_description,
        profile=node.profile,
        transport=trans.summary(base.single) if trans else None,
    )
    if mixed_rows is not None:
        result["mixed"] = mixed_rows
    if sharded_rows is not None:
        result["sharded"] = sharded_rows
    if reshard_row is not None:
        result["reshard"] = reshard_row
    if tls_rows is not None:
        result["tls"] = tls_rows
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
    measured = figures.Measured(cfg=cfg, hnswlib=tbase.measured(), node=tnode.served())
    table = figures.table(measured, figures.CORE, key_prefix="text_", label_prefix="[text set] ")
    return table, tds.description


def mixed_figures(cfg: config.Config, say: Progress) -> dict[str, Any]:
    """The rows under a filter and beside a writer (:mod:`dvecbench.mixed`), with Qdrant in
    the same run when its binary is cached here."""
    try:
        qdrant.cached_binary()
        note = ""
    except FileNotFoundError as exc:
        note = f"Qdrant not measured: {exc}"
        say(note)
    say("mixed rows: 50,000 clustered 64-d vectors with metadata, filter, writer")
    rows = mixed_run.measure_all(
        server_cpus=cfg.server_cpus,
        client_cpus=cfg.client_cpus,
        seconds=cfg.seconds,
        with_qdrant=not note,
        say=say,
    )
    return {"rows": rows, "note": note}


def sharded_figures(cfg: config.Config, say: Progress) -> list[dict[str, Any]]:
    """The router's cost and two shards against one member (:mod:`dvecbench.sharded`)."""
    say("router rows: 50,000 clustered 64-d vectors, direct / router-1 / router-2")
    rows = sharded.measure_all(
        n=50_000,
        dim=64,
        seconds=cfg.seconds,
        batch=500,
        server_cpus=cfg.server_cpus,
        client_cpus=cfg.client_cpus,
        say=say,
    )
    return [row.as_dict() for row in rows]


def reshard_figures(cfg: config.Config, say: Progress) -> dict[str, Any]:
    """A reshard 1 -> 2 of 30,000 vectors under searches and writes (:mod:`dvecbench.reshard`)."""
    row = reshard.measure(
        n=30_000,
        dim=64,
        baseline=cfg.seconds / 2,
        server_cpus=cfg.server_cpus,
        client_cpus=cfg.client_cpus,
        say=say,
    )
    return row.as_dict()


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
