"""``python -m dvecbench.mixed_run``: the mixed rows against one standalone node.

Loads the clustered set with metadata ``{"g": i % 7}`` into a fresh node pinned like every
bench server, then measures :mod:`dvecbench.mixed` and prints its table and JSON.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dvecbench import mixed, nodeapi, qdrant
from dvecbench.datasets import clustered
from dvecbench.httpc import Client
from dvecbench.inprocess import HnswParams
from dvecbench.procs import Processes, free_port, parse_cpus
from dvecdb_client.bulk import CONTENT_TYPE, encode_batch


def load_node(client: Client, base: mixed.F32, params: HnswParams, batch: int = 2000) -> None:
    client.json(
        "POST",
        "/v1/collections",
        {
            "name": nodeapi.COLLECTION,
            "dimension": int(base.shape[1]),
            "metric": "l2",
            "hnsw": {
                "m": params.m,
                "ef_construction": params.ef_construction,
                "ef_search": params.ef_search,
            },
        },
    )
    groups = mixed.groups_of(len(base))
    for start in range(0, len(base), batch):
        rows = range(start, min(start + batch, len(base)))
        body = encode_batch(
            [str(i) for i in rows], base[start : rows.stop], [{"g": int(groups[i])} for i in rows]
        )
        status, data = client.request(
            "PUT", nodeapi.upsert_path("leader"), body, content_type=CONTENT_TYPE
        )
        if status != 200:
            raise RuntimeError(f"load failed: {status} {data[:300]!r}")


# Qdrant builds a segment's HNSW index once it holds this many KB of vectors (default 20,000).
INDEXING_THRESHOLD_KB = 1000


def load_qdrant(client: Client, base: mixed.F32, params: HnswParams, batch: int = 1000) -> None:
    """The same vectors and metadata into Qdrant: HNSW with the same M and ef_construction,
    a payload index on ``g``, then wait until the optimizer has indexed every segment."""
    name = nodeapi.COLLECTION
    client.json(
        "PUT",
        f"/collections/{name}",
        {
            "vectors": {"size": int(base.shape[1]), "distance": "Euclid"},
            "hnsw_config": {"m": params.m, "ef_construct": params.ef_construction},
            # Index from the first MB (its default waits for 20 MB of vectors per segment).
            "optimizers_config": {"indexing_threshold": INDEXING_THRESHOLD_KB},
        },
    )
    client.json(
        "PUT",
        f"/collections/{name}/index?wait=true",
        {"field_name": "g", "field_schema": "integer"},
    )
    api = mixed.qdrant_api(client.base_url, name, ef=params.ef_search)
    groups = mixed.groups_of(len(base))
    for start in range(0, len(base), batch):
        rows = list(range(start, min(start + batch, len(base))))
        api.upsert(client, rows, base[start : rows[-1] + 1], [int(groups[i]) for i in rows])
    deadline = time.monotonic() + 600
    while True:
        info = client.json("GET", f"/collections/{name}")["result"]
        # Segments under the indexing threshold are searched exactly, as Qdrant intends.
        per_segment = base.nbytes / max(1, int(info.get("segments_count") or 1))
        indexed = (info.get("indexed_vectors_count") or 0) >= len(base)
        if info.get("status") == "green" and (
            indexed or per_segment < INDEXING_THRESHOLD_KB * 1024
        ):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"Qdrant did not finish indexing: {info}")
        time.sleep(1)


def measure_all(
    *,
    n: int = 50_000,
    dim: int = 64,
    seconds: float = 10.0,
    server_cpus: frozenset[int] | None,
    client_cpus: frozenset[int] | None,
    with_qdrant: bool,
    say: Callable[[str], None] = print,
) -> dict[str, dict[str, dict[str, Any]]]:
    """Every mixed row for a fresh standalone node and, with ``with_qdrant``, the cached
    Qdrant binary (:mod:`dvecbench.qdrant`), one after the other on the same cores."""
    base, queries = clustered(n=n, dim=dim, n_queries=1000)
    params = HnswParams(m=16, ef_construction=100, ef_search=64)
    cfg = mixed.MixedConfig(seconds=seconds)
    results: dict[str, dict[str, dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="dvec-mixed-") as tmp, Processes(Path(tmp)) as procs:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        argv_node = nodeapi.server_argv(port=port, data_dir=Path(tmp) / "data")
        procs.start("node", argv_node, cpus=server_cpus)
        procs.wait_ready("node", url + "/readyz", timeout=60)
        client = Client(url)
        say(f"loading {n:,} x {dim}-d into the node")
        load_node(client, base, params)
        client.close()
        api = mixed.node_api(url, nodeapi.COLLECTION)
        results["d-vecDB"] = mixed.measure(api, base, queries, cfg, cpus=client_cpus, progress=say)
        procs.stop("node")
    if with_qdrant:
        with qdrant.running(cpus=server_cpus) as (url, _):
            client = Client(url)
            say(f"loading {n:,} x {dim}-d into Qdrant {qdrant.VERSION}")
            load_qdrant(client, base, params)
            client.close()
            api = mixed.qdrant_api(url, nodeapi.COLLECTION, ef=params.ef_search)
            results["Qdrant"] = mixed.measure(
                api, base, queries, cfg, cpus=client_cpus, progress=say
            )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--server-cpus", default="0", help="cores the server is pinned to")
    parser.add_argument("--client-cpus", default="1", help="cores wrk and the writer use")
    parser.add_argument("--out", type=Path, help="write the rows as JSON here")
    parser.add_argument(
        "--qdrant",
        action="store_true",
        help="measure the cached Qdrant binary too (dvecbench.qdrant)",
    )
    args = parser.parse_args(argv)
    results = measure_all(
        n=args.n,
        dim=args.dim,
        seconds=args.seconds,
        server_cpus=parse_cpus(args.server_cpus),
        client_cpus=parse_cpus(args.client_cpus),
        with_qdrant=args.qdrant,
    )
    print(mixed.table(results))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
