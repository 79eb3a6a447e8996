"""Command-line options of `make bench` and the sizes of a full and a `--quick` run."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from pathlib import Path

from dvecbench.inprocess import HnswParams
from dvecbench.procs import parse_cpus

RESULTS = Path(__file__).resolve().parent.parent / "results"


@dataclasses.dataclass(frozen=True)
class Config:
    mode: str
    vectors: int
    queries: int
    dim: int
    seconds: float
    warmup: float
    lag_seconds: float
    hnsw: HnswParams
    batch: int
    batch_connections: int
    ingest_batch: int
    ingest_concurrency: int
    server_cpus: frozenset[int] | None
    client_cpus: frozenset[int] | None
    follower_cpus: frozenset[int] | None
    chroma: bool
    replication: bool
    restart: bool
    text: bool
    floor: bool
    transport: bool
    shared: bool
    mixed: bool
    sharded: bool
    reshard: bool
    tls: bool
    profile: bool
    out_dir: Path
    stem: str

    @property
    def server_threads(self) -> int:
        """Threads the in-process baseline gets: as many as the server has CPUs."""
        return len(self.server_cpus) if self.server_cpus else 2

    @property
    def shared_cpus(self) -> frozenset[int] | None:
        """CPUs of the shared-cores rows: the server's and the client's together (None: any)."""
        if self.server_cpus is None or self.client_cpus is None:
            return None
        return self.server_cpus | self.client_cpus

    def pinning_text(self) -> str:
        def show(cpus: frozenset[int] | None) -> str:
            return ",".join(map(str, sorted(cpus))) if cpus else "any"

        return (
            f"server (d-vecDB leader, Chroma) on CPU {show(self.server_cpus)}; wrk and the "
            f"Python client on CPU {show(self.client_cpus)}; follower on CPU "
            f"{show(self.follower_cpus)}; in-process hnswlib on CPU {show(self.server_cpus)} "
            f"with {self.server_threads} thread(s) where threads apply"
            + (
                f"; rows 'sharing' the CPUs: server and wrk both on CPU {show(self.shared_cpus)}"
                if self.shared
                else ""
            )
        )


def parse(argv: Sequence[str] | None = None) -> Config:
    p = argparse.ArgumentParser(
        prog="make bench",
        description="d-vecDB over HTTP vs in-process hnswlib vs a Chroma server, same data.",
    )
    p.add_argument("--quick", action="store_true", help="20,000 vectors and short phases")
    p.add_argument("--vectors", type=int, help="base vectors (default 100,000; quick 20,000)")
    p.add_argument("--queries", type=int, help="held-out queries (default 1,000; quick 200)")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--seconds", type=float, help="each timed load phase (default 10; quick 2)")
    p.add_argument("--m", type=int, default=16)
    p.add_argument("--ef-construction", type=int, default=100)
    p.add_argument("--ef", type=int, default=64)
    p.add_argument("--batch", type=int, default=100, help="queries per batch-search request")
    p.add_argument("--batch-connections", type=int, default=2)
    p.add_argument("--ingest-batch", type=int, default=1000, help="vectors per upsert request")
    p.add_argument("--ingest-concurrency", type=int, default=2, help="upserts in flight")
    p.add_argument("--server-cpus", default="1", help="CPUs for servers ('none' = unpinned)")
    p.add_argument("--client-cpus", default="0", help="CPUs for wrk and the Python client")
    p.add_argument("--follower-cpus", default="0", help="CPUs for the replication follower")
    p.add_argument("--no-chroma", action="store_true", help="skip the Chroma comparison")
    p.add_argument("--no-replication", action="store_true", help="skip the follower figures")
    p.add_argument("--no-restart", action="store_true", help="skip the restart figures")
    p.add_argument("--no-floor", action="store_true", help="skip the bare aiohttp reference server")
    p.add_argument(
        "--no-transport",
        action="store_true",
        help="skip the transport-alone reference server (canned answers, no search)",
    )
    p.add_argument(
        "--no-shared",
        action="store_true",
        help="skip the 8-client rows with server and wrk sharing the server and client CPUs",
    )
    p.add_argument(
        "--no-mixed",
        action="store_true",
        help="skip the rows under a filter and beside a writer (d-vecDB and Qdrant; full runs)",
    )
    p.add_argument(
        "--no-sharded",
        action="store_true",
        help="skip the router and two-shard rows (dvecbench.sharded; full runs)",
    )
    p.add_argument(
        "--no-reshard",
        action="store_true",
        help="skip the reshard 1 -> 2 row under load (dvecbench.reshard; full runs)",
    )
    p.add_argument(
        "--no-tls",
        action="store_true",
        help="skip the TLS cost rows (HTTPS over HTTP: ingest ack=one, search; full runs)",
    )
    p.add_argument("--profile", action="store_true", help="py-spy the node under 8-client load")
    p.add_argument(
        "--text",
        action=argparse.BooleanOptionalAction,
        help="also run the real-text (LSA) set: search and ingest figures (default: full runs)",
    )
    p.add_argument("--out-dir", type=Path, default=RESULTS)
    p.add_argument("--stem", help="output file name stem (default latest; quick: quick)")
    a = p.parse_args(argv)
    quick = bool(a.quick)
    vectors = a.vectors or (20_000 if quick else 100_000)
    queries = a.queries or (200 if quick else 1_000)
    if vectors < 1000 or queries < a.batch:
        p.error("need at least 1,000 vectors and one batch of queries")
    return Config(
        mode="quick" if quick else "full",
        vectors=vectors,
        queries=queries,
        dim=a.dim,
        seconds=a.seconds or (2.0 if quick else 10.0),
        warmup=1.0 if quick else 2.0,
        lag_seconds=3.0 if quick else 15.0,
        hnsw=HnswParams(m=a.m, ef_construction=a.ef_construction, ef_search=a.ef),
        batch=a.batch,
        batch_connections=a.batch_connections,
        ingest_batch=a.ingest_batch,
        ingest_concurrency=a.ingest_concurrency,
        server_cpus=parse_cpus(a.server_cpus),
        client_cpus=parse_cpus(a.client_cpus),
        follower_cpus=parse_cpus(a.follower_cpus),
        chroma=not a.no_chroma,
        replication=not a.no_replication,
        restart=not a.no_restart,
        text=(not quick) if a.text is None else bool(a.text),
        floor=not a.no_floor,
        transport=not a.no_transport,
        shared=not a.no_shared,
        mixed=not (quick or a.no_mixed),
        sharded=not (quick or a.no_sharded),
        reshard=not (quick or a.no_reshard),
        tls=not (quick or a.no_tls),
        profile=bool(a.profile),
        out_dir=a.out_dir,
        stem=a.stem or ("quick" if quick else "latest"),
    )
