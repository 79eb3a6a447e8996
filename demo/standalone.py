"""``python -m demo.standalone``: a standalone node survives SIGKILL with every vector intact.

Starts ``dvecdb-node --standalone`` in a temp folder, creates a collection, upserts 10,000
vectors with the binary bulk body, searches, SIGKILLs the node, restarts it, and checks that
the count is 10,000 and that every vector's nearest neighbour is itself (distance 0). Ends by
comparing search latency over HTTP with in-process hnswlib on the same data.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import hnswlib
import numpy as np

from dvecdb_client.bulk import CONTENT_TYPE, encode_batch

COLLECTION = "demo"


class _NoDelayConnection(http.client.HTTPConnection):
    """http.client sends headers and body in two writes; without TCP_NODELAY, Nagle's
    algorithm holds the body until the server's delayed ACK (milliseconds per request)."""

    def connect(self) -> None:
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class Http:
    """A keep-alive JSON client on one connection (what a single user's client does)."""

    def __init__(self, port: int) -> None:
        self.conn = _NoDelayConnection("127.0.0.1", port, timeout=60)

    def call(
        self, method: str, path: str, body: Any = None, *, raw: bytes | None = None
    ) -> tuple[int, Any]:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        ctype = CONTENT_TYPE if raw is not None else "application/json"
        self.conn.request(method, path, body=data, headers={"Content-Type": ctype})
        resp = self.conn.getresponse()
        payload = resp.read()
        return resp.status, json.loads(payload) if payload else None

    def close(self) -> None:
        self.conn.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_node(data_dir: Path, port: int, log_path: Path) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable, "-m", "dvecdb_node", "--standalone", "--host", "127.0.0.1",
        "--port", str(port), "--data-dir", str(data_dir), "--node-id", "demo-0",
    ]  # fmt: skip
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"node exited early; see {log_path}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/readyz")
            if conn.getresponse().status == 200:
                return proc
        except OSError:
            pass
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    raise SystemExit("node did not become ready")


def step(text: str) -> None:
    print(f"==> {text}", flush=True)


def check(condition: bool, text: str) -> None:
    print(f"    [{'ok' if condition else 'FAIL'}] {text}", flush=True)
    if not condition:
        raise SystemExit(1)


def p50_ms(samples: list[float]) -> float:
    return float(np.percentile(np.asarray(samples) * 1000, 50))


def run(count: int, dim: int, chunk: int, queries: int) -> None:
    rng = np.random.default_rng(2024)
    vectors = rng.standard_normal((count, dim)).astype(np.float32)
    ids = [f"vec-{i:06d}" for i in range(count)]
    with tempfile.TemporaryDirectory(prefix="dvecdb-demo-") as tmp:
        data_dir, log_path, port = Path(tmp) / "data", Path(tmp) / "node.log", free_port()
        step(f"starting dvecdb-node --standalone on 127.0.0.1:{port} (data {data_dir})")
        proc = start_node(data_dir, port, log_path)
        try:
            client = Http(port)
            status, body = client.call(
                "POST",
                "/v1/collections",
                {"name": COLLECTION, "dimension": dim, "metric": "l2",
                 "hnsw": {"m": 16, "ef_construction": 200, "ef_search": 64}},
            )  # fmt: skip
            check(status == 201, f"created collection {COLLECTION!r} (dim {dim}, l2)")

            step(f"upserting {count:,} vectors with the binary bulk body ({chunk} per request)")
            started = time.perf_counter()
            for start in range(0, count, chunk):
                stop = min(start + chunk, count)
                body_bytes = encode_batch(ids[start:stop], vectors[start:stop])
                status, body = client.call(
                    "PUT", f"/v1/collections/{COLLECTION}/vectors", raw=body_bytes
                )
                check(status == 200, f"{stop:>6,}/{count:,} acknowledged at seq {body['seq']}")
            elapsed = time.perf_counter() - started
            print(f"    ingest: {count / elapsed:,.0f} vectors/s", flush=True)

            step("searching for vector 42")
            status, body = client.call(
                "POST", f"/v1/collections/{COLLECTION}/search",
                {"vector": vectors[42].tolist(), "k": 3},
            )  # fmt: skip
            for hit in body["results"][0]:
                print(f"    {hit['id']}  distance {hit['distance']:.4f}")
            check(body["results"][0][0]["id"] == ids[42], "vector 42 finds itself first")
            client.close()

            step(f"SIGKILL node (pid {proc.pid}) and restart it on the same data")
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            started = time.perf_counter()
            proc = start_node(data_dir, port, log_path)
            print(f"    recovered and ready in {time.perf_counter() - started:.2f}s", flush=True)
            client = Http(port)
            status, body = client.call("GET", f"/v1/collections/{COLLECTION}")
            check(body["count"] == count, f"count after restart: {body['count']:,}")

            step(f"checking that all {count:,} vectors find themselves (exact self-match)")
            exact = 0
            for start in range(0, count, 100):
                stop = min(start + 100, count)
                status, body = client.call(
                    "POST", f"/v1/collections/{COLLECTION}/search",
                    {"vectors": vectors[start:stop].tolist(), "k": 1},
                )  # fmt: skip
                for offset, row in enumerate(body["results"]):
                    if row and row[0]["id"] == ids[start + offset] and row[0]["distance"] == 0.0:
                        exact += 1
                if stop % 2000 == 0:
                    print(f"    {stop:>6,}/{count:,} checked", flush=True)
            check(exact == count, f"{exact:,}/{count:,} exact self-matches")

            step(f"search latency, one client, k=10, ef=64, {queries} queries")
            probes = rng.standard_normal((queries, dim)).astype(np.float32)
            exact_top10 = [
                set(np.argsort(((vectors - q) ** 2).sum(axis=1))[:10].tolist()) for q in probes
            ]
            http_samples, http_hits = [], 0
            for query, truth in zip(probes, exact_top10, strict=True):
                payload = {"vector": query.tolist(), "k": 10}
                started = time.perf_counter()
                _, body = client.call("POST", f"/v1/collections/{COLLECTION}/search", payload)
                http_samples.append(time.perf_counter() - started)
                http_hits += len(truth & {int(h["id"][4:]) for h in body["results"][0]})
            index = hnswlib.Index(space="l2", dim=dim)
            index.init_index(max_elements=count, M=16, ef_construction=200, random_seed=100)
            index.add_items(vectors, np.arange(count))
            index.set_ef(64)
            local_samples, local_hits = [], 0
            for query, truth in zip(probes, exact_top10, strict=True):
                started = time.perf_counter()
                labels, _ = index.knn_query(query[None, :], k=10, num_threads=1)
                local_samples.append(time.perf_counter() - started)
                local_hits += len(truth & set(labels[0].tolist()))
            total = 10 * len(probes)
            print(
                f"    HTTP search p50:        {p50_ms(http_samples):.3f} ms  "
                f"(recall@10 {http_hits / total:.3f})"
            )
            print(
                f"    in-process hnswlib p50: {p50_ms(local_samples):.3f} ms  "
                f"(recall@10 {local_hits / total:.3f})"
            )
            client.close()
            step("done: the node kept every acknowledged vector across SIGKILL")
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m demo.standalone", description=__doc__)
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--chunk", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=500)
    args = parser.parse_args(argv)
    run(args.count, args.dim, args.chunk, args.queries)


if __name__ == "__main__":
    main()
