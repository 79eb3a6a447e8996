"""What TLS costs (spec.tls is on by default): the same leader and follower pair measured over
plain HTTP and over HTTPS in one run, each figure as a ratio of HTTPS to HTTP.

Rows: ingest with ``ack=one`` (each write waits for the follower, so replication runs over
TLS too; with the CPU both nodes spent per 1,000 vectors), search on kept-alive connections
(the handshake paid once: a pooled client, the router), and search with a new connection per
request (a handshake each: an unpooled client); each search row with the leader's CPU per
search, which hardly depends on the machine's other load, unlike the rates. The
certificates are the ones the operator issues (``dvecdb_operator.certificates``), verified as
a client verifies them. Modes alternate (http, https, http, https, ...) and each
figure is the median of its rounds, so a load change on the machine falls on both.

``python -m dvecbench.tlscost`` from bench/ (``--quick`` for a smoke run); ``make bench`` runs
it as its `tls` rows.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from dvecbench import nodeapi
from dvecbench.datasets import clustered
from dvecbench.procs import Processes, free_port, parse_cpus
from dvecdb_client.bulk import CONTENT_TYPE
from dvecdb_operator import certificates as certs
from dvecdb_operator.builders.common import ClusterRef

TOKEN = "bench-cluster-token"
HOST = "127.0.0.1"
COLLECTION = "tls"


class Pair:
    """A leader and its follower, over HTTP or HTTPS."""

    def __init__(self, procs: Processes, folder: Path, tls: bool, round_: int, cpus: Any) -> None:
        self.tls = tls
        self.scheme = "https" if tls else "http"
        self.context: Any = None
        env: dict[str, str] = {"DVECDB_CLUSTER_TOKEN": TOKEN}
        self.ports = [free_port(), free_port()]
        self.names = [f"tls{int(tls)}-r{round_}-{i}" for i in range(2)]
        for i, name in enumerate(self.names):
            node_env = dict(env)
            if tls:
                node_env.update(_issue(folder, i))
            procs.start(
                name,
                nodeapi.server_argv(
                    port=self.ports[i],
                    data_dir=folder / name,
                    node_id=name,
                    standalone=False,
                ),
                cpus=cpus[i],
                env=node_env,
            )
        if tls:
            import ssl

            self.context = ssl.create_default_context(cafile=str(folder / "ca.crt"))
        for i in range(2):
            self._wait(i)
        admin = {"Authorization": f"Bearer {TOKEN}"}
        self.call(0, "POST", "/v1/admin/promote", {"epoch": 1, "members": 2}, admin)
        self.call(1, "POST", "/v1/admin/follow", {"leader": self.url(0), "epoch": 1}, admin)

    def url(self, i: int) -> str:
        return f"{self.scheme}://{HOST}:{self.ports[i]}"

    def connection(self, i: int = 0) -> http.client.HTTPConnection:
        if self.tls:
            return http.client.HTTPSConnection(
                HOST, self.ports[i], timeout=60, context=self.context
            )
        return http.client.HTTPConnection(HOST, self.ports[i], timeout=60)

    def call(
        self,
        i: int,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        conn = self.connection(i)
        try:
            data = None if body is None else orjson.dumps(body)
            conn.request(
                method, path, data, {"Content-Type": "application/json", **(headers or {})}
            )
            resp = conn.getresponse()
            raw = resp.read()
            if resp.status >= 300:
                raise RuntimeError(f"{method} {path}: {resp.status} {raw[:300]!r}")
            return orjson.loads(raw) if raw else None
        finally:
            conn.close()

    def _wait(self, i: int) -> None:
        deadline = time.monotonic() + 60
        while True:
            try:
                self.call(i, "GET", "/healthz")
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


def _issue(folder: Path, ordinal: int) -> dict[str, str]:
    ca_cert, ca_key = _ca(folder)
    leaf = certs.member_leaf(ClusterRef("bench", "bench"), ordinal, HOST)
    cert, key = certs.issue_leaf(ca_cert, ca_key, leaf, dt.datetime.now(dt.UTC))
    (folder / leaf.cert_key).write_bytes(cert)
    (folder / leaf.key_key).write_bytes(key)
    return {
        "DVECDB_TLS_CERT_FILE": str(folder / leaf.cert_key),
        "DVECDB_TLS_KEY_FILE": str(folder / leaf.key_key),
        "DVECDB_TLS_CA_FILE": str(folder / "ca.crt"),
    }


def _ca(folder: Path) -> tuple[bytes, bytes]:
    cert_path, key_path = folder / "ca.crt", folder / "ca.key"
    if not cert_path.exists():
        cert, key = certs.new_ca("bench CA", dt.datetime.now(dt.UTC))
        key_path.write_bytes(key)
        cert_path.write_bytes(cert)
    return cert_path.read_bytes(), key_path.read_bytes()


def ingest(pair: Pair, base: np.ndarray, *, batch: int, concurrency: int) -> float:
    """Vectors per second with ack=one (the follower has it before the answer)."""
    bodies = list(nodeapi.upsert_bodies(base, batch=batch))
    path = nodeapi.upsert_path("one", COLLECTION)
    position = iter(range(len(bodies)))
    lock = threading.Lock()

    def worker() -> None:
        conn = pair.connection()
        try:
            while True:
                with lock:
                    i = next(position, None)
                if i is None:
                    return
                conn.request("PUT", path, bodies[i], {"Content-Type": CONTENT_TYPE})
                resp = conn.getresponse()
                raw = resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"upsert: {resp.status} {raw[:300]!r}")
        finally:
            conn.close()

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        for fut in [pool.submit(worker) for _ in range(concurrency)]:
            fut.result()
    return len(base) / (time.perf_counter() - started)


def _cpu(procs: Processes, names: Sequence[str]) -> float:
    return sum(procs.cpu_seconds(name) for name in names)


def search(
    pair: Pair, queries: np.ndarray, *, seconds: float, clients: int, keep_alive: bool
) -> tuple[int, float, float, float]:
    """(searches, queries per second, median and p99 latency in ms) of single-query
    searches for `seconds`."""
    path = f"/v1/collections/{COLLECTION}/search"
    bodies = [orjson.dumps({"vector": q.tolist(), "k": 10}) for q in queries]
    latencies: list[float] = []
    lock = threading.Lock()
    stop = time.perf_counter() + seconds
    headers = {"Content-Type": "application/json"}

    def worker(offset: int) -> None:
        mine: list[float] = []
        conn = pair.connection() if keep_alive else None
        i = offset
        try:
            while time.perf_counter() < stop:
                sent = time.perf_counter()
                use = conn or pair.connection()
                use.request("POST", path, bodies[i % len(bodies)], headers)
                resp = use.getresponse()
                resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"search: {resp.status}")
                if conn is None:
                    use.close()
                mine.append(time.perf_counter() - sent)
                i += clients
        finally:
            if conn is not None:
                conn.close()
        with lock:
            latencies.extend(mine)

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for fut in [pool.submit(worker, n) for n in range(clients)]:
            fut.result()
    took = time.perf_counter() - started
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    median = statistics.median(latencies) * 1000
    return len(latencies), len(latencies) / took, median, p99 * 1000


def measure(
    *,
    vectors: int = 20_000,
    dim: int = 64,
    seconds: float = 5.0,
    rounds: int = 2,
    clients: int = 4,
    server_cpus: Sequence[frozenset[int] | None] = (None, None),
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """The figures of both modes and their HTTPS/HTTP ratios (see the module docstring)."""
    base, queries = clustered(n=vectors, dim=dim, n_queries=500)
    found: dict[str, dict[str, list[float]]] = {"http": {}, "https": {}}
    with tempfile.TemporaryDirectory(prefix="dvecbench-tls-") as tmp, Processes(Path(tmp)) as procs:
        folder = Path(tmp)
        for round_ in range(rounds):
            for tls in (False, True):
                mode = "https" if tls else "http"
                pair = Pair(procs, folder, tls, round_, server_cpus)
                pair.call(
                    0,
                    "POST",
                    "/v1/collections?ack=one",
                    {"name": COLLECTION, "dimension": dim, "metric": "l2"},
                )
                # CPU per request hardly depends on what else runs on the machine, unlike
                # rates: the steadier figure of what TLS costs on a shared machine.
                cpu = _cpu(procs, pair.names)
                rows = {"ingest_ack_one_vps": ingest(pair, base, batch=500, concurrency=2)}
                rows["ingest_cpu_ms_per_1k"] = (_cpu(procs, pair.names) - cpu) / len(base) * 1e6
                for label, keep in (("keepalive", True), ("new_conn", False)):
                    cpu = _cpu(procs, pair.names[:1])
                    count, qps, p50, p99 = search(
                        pair, queries, seconds=seconds, clients=clients, keep_alive=keep
                    )
                    rows[f"search_{label}_qps"] = qps
                    rows[f"search_{label}_p50_ms"] = p50
                    rows[f"search_{label}_p99_ms"] = p99
                    spent = _cpu(procs, pair.names[:1]) - cpu
                    rows[f"search_{label}_cpu_us"] = spent / count * 1e6
                for key, value in rows.items():
                    found[mode].setdefault(key, []).append(value)
                say(
                    f"  {mode:5} round {round_ + 1}: "
                    + ", ".join(f"{k} {v:,.1f}" for k, v in rows.items())
                )
                for name in pair.names:
                    procs.stop(name)
    medians = {
        mode: {k: statistics.median(v) for k, v in rows.items()} for mode, rows in found.items()
    }
    ratios = {k: medians["https"][k] / medians["http"][k] for k in medians["http"]}
    return {
        "vectors": vectors,
        "dim": dim,
        "rounds": rounds,
        "clients": clients,
        "seconds": seconds,
        "http": medians["http"],
        "https": medians["https"],
        "https_over_http": ratios,
    }


def table(result: dict[str, Any]) -> str:
    lines = [
        "| figure | HTTP | HTTPS | HTTPS / HTTP |",
        "|---|---:|---:|---:|",
    ]
    for key, ratio in result["https_over_http"].items():
        lines.append(
            f"| {key} | {result['http'][key]:,.1f} | {result['https'][key]:,.1f} | {ratio:.2f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m dvecbench.tlscost", description=__doc__.split("\n")[0]
    )
    p.add_argument("--quick", action="store_true", help="5,000 vectors, 2 s phases, one round")
    p.add_argument("--vectors", type=int, default=None)
    p.add_argument("--seconds", type=float, default=None)
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--leader-cpus", default="none", help="CPUs of the leader ('none': any)")
    p.add_argument("--follower-cpus", default="none", help="CPUs of the follower")
    p.add_argument("--out", type=Path, help="also write the figures here (JSON)")
    a = p.parse_args(argv)
    result = measure(
        vectors=a.vectors or (5_000 if a.quick else 20_000),
        seconds=a.seconds or (2.0 if a.quick else 5.0),
        rounds=a.rounds or (1 if a.quick else 2),
        clients=a.clients,
        server_cpus=(parse_cpus(a.leader_cpus), parse_cpus(a.follower_cpus)),
    )
    print(table(result))
    if a.out:
        a.out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
