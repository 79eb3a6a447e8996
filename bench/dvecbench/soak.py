"""Churn soak: does a node under steady replace-and-delete churn hold its memory and speed?

One standalone node holds ``n`` vectors with metadata; a writer deletes ``batch`` random ids
and upserts them back with new vectors, back to back, for ``minutes``; every ``every``
seconds the node's resident memory is read from /proc and wrk searches for a few seconds
(filtered and not, alternately). The row reports RSS at the start and end (growth %), and the
first and last search QPS (drift %): an index that grows without bound under churn, or a
search path that slows as deleted slots pile up, shows here.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from dvecbench import mixed, nodeapi, wrk
from dvecbench.datasets import clustered
from dvecbench.httpc import Client
from dvecbench.inprocess import HnswParams
from dvecbench.mixed_run import load_node
from dvecbench.procs import Processes, free_port, parse_cpus


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--every", type=float, default=60.0, help="seconds between samples")
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--server-cpus", default="0")
    parser.add_argument("--client-cpus", default="1")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    base, queries = clustered(n=args.n, dim=args.dim, n_queries=500)
    params = HnswParams(m=16, ef_construction=100, ef_search=64)
    samples: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="dvec-soak-") as tmp, Processes(Path(tmp)) as procs:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        procs.start(
            "node",
            nodeapi.server_argv(port=port, data_dir=Path(tmp) / "data"),
            cpus=parse_cpus(args.server_cpus),
        )
        procs.wait_ready("node", url + "/readyz", timeout=60)
        client = Client(url)
        load_node(client, base, params)
        client.close()
        api = mixed.node_api(url, nodeapi.COLLECTION)
        bodies = {
            group: wrk.write_bodies(
                Path(tmp) / f"q-{group}.bodies", (api.search_body(q, 10, group) for q in queries)
            )
            for group in (None, mixed.CHOSEN_GROUP)
        }
        started = time.monotonic()
        churn = mixed.Writer(api, base, batch=args.batch, per_second=None, delete_first=True)
        with churn:
            while time.monotonic() - started < args.minutes * 60:
                group = None if len(samples) % 2 == 0 else mixed.CHOSEN_GROUP
                result = wrk.run(
                    url=url + api.search_path,
                    bodies=bodies[group],
                    connections=4,
                    seconds=5,
                    cpus=parse_cpus(args.client_cpus),
                )
                sample = {
                    "minute": round((time.monotonic() - started) / 60, 2),
                    "rss_mb": round(rss_bytes(procs.pid("node")) / 2**20, 1),
                    "search": "filtered" if group is not None else "plain",
                    "qps": round(result.rps, 1),
                    "p99_ms": result.latency.p99,
                    "churned": churn.vectors,
                }
                samples.append(sample)
                print(json.dumps(sample), flush=True)
                if churn.error is not None:
                    raise RuntimeError(f"churn failed: {churn.error}")
                time.sleep(max(0.0, args.every - 5))
    summary = summarize(samples)
    print(json.dumps(summary, indent=2))
    if args.out:
        args.out.write_text(json.dumps({"samples": samples, "summary": summary}, indent=2))
    return 0


def summarize(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """RSS growth and QPS drift between the first and last sample of each search kind."""
    first, last = samples[0], samples[-1]
    out: dict[str, Any] = {
        "minutes": last["minute"],
        "churned_vectors": last["churned"],
        "rss_mb": [first["rss_mb"], last["rss_mb"]],
        "rss_growth_pct": round(100 * (last["rss_mb"] / first["rss_mb"] - 1), 1),
    }
    for kind in ("plain", "filtered"):
        of_kind = [s for s in samples if s["search"] == kind]
        if len(of_kind) >= 2:
            out[f"{kind}_qps"] = [of_kind[0]["qps"], of_kind[-1]["qps"]]
            out[f"{kind}_qps_drift_pct"] = round(
                100 * (of_kind[-1]["qps"] / of_kind[0]["qps"] - 1), 1
            )
    return out


if __name__ == "__main__":
    raise SystemExit(main())
