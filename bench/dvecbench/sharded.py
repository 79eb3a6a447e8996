"""``python -m dvecbench.sharded``: the router's cost and what a second shard buys, one run.

Three set-ups on the same data, one after another on the same cores:

- ``direct``: one standalone node, the bench talks to it;
- ``router-1``: the same kind of node behind a ``dvecdb-router`` (the cluster's client endpoint);
- ``router-2``: two nodes (shards), each holding the slots the even map gives it, behind a router.

Each is measured the same way: JSON ingest of every vector (batches of ``--batch``, 4 requests
in flight, the router splitting each batch by slot), then single and batch searches with wrk
(the recall pass first, against exact ground truth). The rows give each figure and its ratio to
``direct`` measured in the same run. The router's JSON-only writes are compared with JSON writes
to the member (the member's binary bulk form is faster still, and is in the main bench table).

Cores: every node is pinned to ``--server-cpus`` (two shards share them, as they would share a
machine's cores), the router and wrk to ``--client-cpus``. On a two-core machine this shows the
router's overhead and the fan-out's cost honestly, not the capacity a second machine adds.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from dvecbench import ingest, nodeapi
from dvecbench.datasets import Dataset, make_clustered
from dvecbench.httpc import Client, HttpError
from dvecbench.inprocess import HnswParams
from dvecbench.procs import Processes, free_port, parse_cpus
from dvecbench.searchload import LoadResult, Phases, measure
from dvecdb_client.slots import SlotMap

SETUPS = ("direct", "router-1", "router-2")


@dataclass(frozen=True)
class Row:
    setup: str
    ingest_rate: float
    single: LoadResult
    batch: LoadResult

    def as_dict(self) -> dict[str, Any]:
        def load(r: LoadResult) -> dict[str, Any]:
            return {
                "qps": round(r.qps, 1),
                "p50_ms": round(r.latency.p50, 3),
                "p99_ms": round(r.latency.p99, 3),
                "recall": None if r.recall is None else round(r.recall, 4),
            }

        return {
            "setup": self.setup,
            "ingest_vectors_per_s": round(self.ingest_rate, 1),
            "single": load(self.single),
            "batch": load(self.batch),
        }


def router_binary() -> str:
    beside = Path(sys.executable).with_name("dvecdb-router")
    if not beside.exists():
        raise RuntimeError("dvecdb-router is not installed: run `make dev`")
    return str(beside)


def json_bodies(ds: Dataset, batch: int) -> list[bytes]:
    out = []
    for start in range(0, len(ds.base), batch):
        rows = ds.base[start : start + batch]
        vectors = [{"id": str(start + j), "vector": row.tolist()} for j, row in enumerate(rows)]
        out.append(orjson.dumps({"vectors": vectors}))
    return out


def send_json(client: Client, body: bytes) -> None:
    path = nodeapi.upsert_path("leader")
    status, data = client.request("PUT", path, body)
    if status != 200:
        raise HttpError("PUT", path, status, data)


def start(
    procs: Processes,
    setup: str,
    workdir: Path,
    server_cpus: frozenset[int] | None,
    client_cpus: frozenset[int] | None,
) -> tuple[str, list[str]]:
    """Start the set-up's processes; returns the URL the bench talks to and the members'."""
    shards = 2 if setup == "router-2" else 1
    members = []
    for shard in range(shards):
        port = free_port()
        name = f"{setup}-node-{shard}"
        argv = nodeapi.server_argv(port=port, data_dir=workdir / name, node_id=name)
        procs.start(name, argv, cpus=server_cpus)
        url = f"http://127.0.0.1:{port}"
        procs.wait_ready(name, url + "/readyz", timeout=60)
        members.append(url)
    if setup == "direct":
        return members[0], members
    port = free_port()
    argv = [router_binary(), "--host", "127.0.0.1", "--port", str(port)]
    for url in members:
        argv += ["--shard", url]
    procs.start(f"{setup}-router", argv, cpus=client_cpus)
    url = f"http://127.0.0.1:{port}"
    procs.wait_ready(f"{setup}-router", url + "/readyz", timeout=60)
    return url, members


def run_setup(
    setup: str,
    ds: Dataset,
    params: HnswParams,
    phases: Phases,
    *,
    batch: int,
    server_cpus: frozenset[int] | None,
    client_cpus: frozenset[int] | None,
    say: Callable[[str], None],
) -> Row:
    with tempfile.TemporaryDirectory(prefix=f"dvec-{setup}-") as tmp, Processes(Path(tmp)) as procs:
        url, members = start(procs, setup, Path(tmp), server_cpus, client_cpus)
        client = Client(url)
        nodeapi.create_collection(client, ds, params)
        client.close()
        bodies = json_bodies(ds, batch)
        probe_ids = [len(ds.base) - 1]
        loaded = ingest.timed(
            url,
            bodies,
            send_json,
            vectors=len(ds.base),
            concurrency=4,
            searchable=lambda c: nodeapi.self_match(c, ds.base[probe_ids], probe_ids),
        )
        say(f"{setup}: ingest {loaded.rate:,.0f} vectors/s (JSON, batches of {batch})")
        api = nodeapi.search_api(url)
        k = 10
        single = measure(
            api,
            ds,
            k=k,
            connections=8,
            batch=1,
            phases=phases,
            progress=lambda m: say(f"{setup}: single, {m}"),
        )
        batched = measure(
            api,
            ds,
            k=k,
            connections=phases.batch_connections,
            batch=phases.batch,
            phases=phases,
            progress=lambda m: say(f"{setup}: batch, {m}"),
        )
        held = [_count(url) for url in members]
        expected = _expected(ds, len(members))
        say(f"{setup}: vectors per member {held} (the even slot map gives {expected})")
        if held != expected:
            raise RuntimeError(f"{setup}: members hold {held}, the slot map gives {expected}")
        return Row(setup, loaded.rate, single, batched)


def _count(url: str) -> int:
    client = Client(url)
    try:
        return nodeapi.count(client)
    finally:
        client.close()


def _expected(ds: Dataset, shards: int) -> list[int]:
    split = SlotMap.even(shards).split(str(i) for i in range(len(ds.base)))
    return [len(split.get(s, [])) for s in range(shards)]


def table(rows: list[dict[str, Any]]) -> str:
    """Rows (:meth:`Row.as_dict`) with each figure's ratio to ``direct``, the first row."""
    direct = rows[0]
    lines = [
        "| set-up | ingest vec/s (ratio) | single 8 conn QPS (ratio) p50/p99 ms · recall "
        "| batch QPS (ratio) p50/p99 ms · recall |",
        "|---|---|---|---|",
    ]

    def cell(r: dict[str, Any], base: dict[str, Any]) -> str:
        recall = "" if r["recall"] is None else f" · {r['recall']:.3f}"
        return (
            f"{r['qps']:,.0f} ({r['qps'] / base['qps']:.2f}x) "
            f"{r['p50_ms']:.2f}/{r['p99_ms']:.2f}{recall}"
        )

    for row in rows:
        rate, base_rate = row["ingest_vectors_per_s"], direct["ingest_vectors_per_s"]
        lines.append(
            f"| {row['setup']} | {rate:,.0f} ({rate / base_rate:.2f}x) "
            f"| {cell(row['single'], direct['single'])} | {cell(row['batch'], direct['batch'])} |"
        )
    return "\n".join(lines)


def section(rows: list[dict[str, Any]]) -> list[str]:
    """The rows as a Markdown section of the bench report."""
    return [
        "",
        "## The router and a second shard (same run, same cores)",
        "",
        "50,000 clustered 64-d vectors: one member directly, the same member behind a router, "
        "two shards behind a router; JSON ingest (500 a request, 4 in flight), wrk single "
        "searches at 8 connections and batches of 100 at 2; nodes pinned to the server cores, "
        "router and wrk to the client cores (on two cores the shards share one).",
        "",
        table(rows),
    ]


def measure_all(
    *,
    n: int,
    dim: int,
    seconds: float,
    batch: int,
    server_cpus: frozenset[int] | None,
    client_cpus: frozenset[int] | None,
    say: Callable[[str], None] = print,
) -> list[Row]:
    say(f"data: {n:,} clustered {dim}-d vectors, 1,000 queries, exact k-NN")
    ds = make_clustered(n=n, n_queries=1000, dim=dim, k=10)
    params = HnswParams(m=16, ef_construction=100, ef_search=64)
    phases = Phases(
        seconds=seconds, warmup=min(3.0, seconds), batch=100, batch_connections=2, cpus=client_cpus
    )
    return [
        run_setup(
            setup,
            ds,
            params,
            phases,
            batch=batch,
            server_cpus=server_cpus,
            client_cpus=client_cpus,
            say=say,
        )
        for setup in SETUPS
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--batch", type=int, default=500, help="vectors per ingest request")
    parser.add_argument("--server-cpus", default="0", help="cores the nodes are pinned to")
    parser.add_argument("--client-cpus", default="1", help="cores the router and wrk use")
    parser.add_argument("--out", type=Path, help="write the rows as JSON here")
    args = parser.parse_args(argv)
    rows = measure_all(
        n=args.n,
        dim=args.dim,
        seconds=args.seconds,
        batch=args.batch,
        server_cpus=parse_cpus(args.server_cpus),
        client_cpus=parse_cpus(args.client_cpus),
    )
    docs = [row.as_dict() for row in rows]
    print(table(docs))
    if args.out:
        args.out.write_text(json.dumps(docs, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
