"""The sharded part of ``make demo``: two shards behind the router, one shard's leader killed
while clients search and write through the router, then an online reshard from 2 to 3 shards
with its progress as ``kubectl get dvc`` shows it.

Everything goes through the Service ``NAME`` (the router Deployment), resolved by the cluster
DNS the way a client in the cluster would: writes are split by slot and sent to each shard's
leader, searches go to one member per shard and come back merged with their ``coverage``. A
writer and a searcher run in threads through the failover and the reshard; afterwards every
acknowledged write must read back through the router, and no answer may have held an id twice.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from demo import setup, view
from demo.kube import DemoError, Json, Kube
from demo.probe import NODE_PORT
from dvecdb_client import NodeError, SyncNodeClient
from localkube import dns
from localkube.nodeconfig import CLUSTER_DOMAIN

MANIFEST = Path(__file__).resolve().parent.parent / "examples" / "sharded.yaml"
COLLECTION = "sharded"
READY_TIMEOUT = 420.0
RESHARD_TIMEOUT = 600.0


def step(text: str) -> None:
    print(f"==> {text}", flush=True)


def say(text: str) -> None:
    print(f"    {text}", flush=True)


def shard_pod(cluster: str, shard: int, ordinal: int) -> str:
    """Shard 0's pods keep the one-shard names (``NAME-0``); shard i's are ``NAME-si-0``."""
    return f"{cluster}-{ordinal}" if shard == 0 else f"{cluster}-s{shard}-{ordinal}"


def shards_row(status: Json) -> str:
    """``Healthy  s0 demo-0@1 [0-2047]  s1 ...`` from the cluster's status (pure)."""
    cells = [
        f"s{line.get('shard')} {line.get('leader') or '-'}@{line.get('epoch', '-')} "
        f"[{','.join(line.get('slots') or []) or 'no slots'}]"
        for line in status.get("shards") or []
    ]
    resharding = (status.get("resharding") or {}).get("summary")
    tail = f"  resharding: {resharding}" if resharding else ""
    return f"{status.get('phase') or '-':<10} " + "  ".join(cells) + tail


@dataclass
class Traffic:
    """A writer (one vector a request) and a searcher (eventual reads) through the router."""

    url: str
    api_key: str | None
    dimension: int
    ca: bytes | None = None
    server_hostname: str | None = None
    acked: dict[str, list[float]] = field(default_factory=dict)
    write_failures: int = 0
    searches: int = 0
    partial: int = 0
    failed_searches: int = 0
    duplicates: int = 0
    last_error: str = ""
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, prefix: str) -> None:
        self._stop.clear()
        self._threads = [
            threading.Thread(target=self._write, args=(prefix,), daemon=True),
            threading.Thread(target=self._search, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _client(self) -> SyncNodeClient:
        return SyncNodeClient(
            self.url,
            api_key=self.api_key,
            ca=self.ca,
            server_hostname=self.server_hostname,
            timeout=10.0,
            retries=0,
        )

    def _write(self, prefix: str) -> None:
        rng = np.random.default_rng(abs(hash(prefix)) % 2**32)
        with self._client() as client:
            n = 0
            while not self._stop.is_set():
                item_id = f"{prefix}-{n:06d}"
                vector = rng.standard_normal(self.dimension).astype(np.float32).tolist()
                try:
                    client.upsert(COLLECTION, [{"id": item_id, "vector": vector}])
                except NodeError as err:
                    with self._lock:
                        self.write_failures += 1
                        self.last_error = f"write {item_id}: {err.status} {err.code}"
                    time.sleep(0.2)
                else:
                    with self._lock:
                        self.acked[item_id] = vector
                n += 1
                time.sleep(0.02)

    def _search(self) -> None:
        rng = np.random.default_rng(11)
        with self._client() as client:
            while not self._stop.is_set():
                query = rng.standard_normal(self.dimension).astype(np.float32)
                try:
                    found = client.search(COLLECTION, query, k=20)
                except NodeError as err:
                    with self._lock:
                        self.failed_searches += 1
                        self.last_error = f"search: {err.status} {err.code}"
                    time.sleep(0.2)
                    continue
                ids = [hit["id"] for hit in found["results"][0]]
                coverage = found.get("coverage") or {}
                with self._lock:
                    self.searches += 1
                    self.duplicates += len(ids) - len(set(ids))
                    if coverage.get("answered") != coverage.get("shards"):
                        self.partial += 1
                time.sleep(0.02)

    def summary(self) -> str:
        with self._lock:
            return (
                f"{len(self.acked):,} writes acknowledged ({self.write_failures} refused), "
                f"{self.searches:,} searches ({self.partial} partial, {self.failed_searches} "
                f"failed, {self.duplicates} duplicate ids)"
                + (f"; last error: {self.last_error}" if self.last_error else "")
            )


class ShardedDemo:
    def __init__(self, kube: Kube, namespace: str, cluster: str, *, count: int, dim: int):
        self.kube = kube
        self.namespace = namespace
        self.cluster = cluster
        self.count = count
        self.dim = dim
        self.rng = np.random.default_rng(7)
        self.vectors: npt.NDArray[np.float32] = self.rng.standard_normal((count, dim)).astype(
            np.float32
        )
        self.ids = [f"doc-{i:06d}" for i in range(count)]
        self.api_key: str | None = None
        self.ca: bytes | None = None  # the cluster's CA when it serves TLS (the default)
        self.url = ""
        self.name = f"{cluster}.{namespace}.svc.{CLUSTER_DOMAIN}"

    def status(self) -> Json:
        found = self.kube.cluster(self.namespace, self.cluster) or {}
        return dict(found.get("status") or {})

    def client(self, **options: float) -> SyncNodeClient:
        """A client of the router by its Service's address; its certificate is checked
        against the Service's name."""
        return SyncNodeClient(
            self.url, api_key=self.api_key, ca=self.ca, server_hostname=self.name, **options
        )

    def traffic(self) -> Traffic:
        return Traffic(self.url, self.api_key, self.dim, self.ca, self.name)

    def wait_ready(self, shards: int, timeout: float) -> Json:
        """Until Healthy with ``shards`` shards, every one owning slots; prints each change."""
        started, last = time.monotonic(), ""
        while time.monotonic() - started < timeout:
            status = self.status()
            row = shards_row(status)
            if row != last:
                say(f"t+{time.monotonic() - started:5.1f}s {row}")
                last = row
            lines = status.get("shards") or []
            if (
                status.get("phase") == "Healthy"
                and not status.get("resharding")
                and len(lines) == shards
                and all(line.get("leader") and line.get("slots") for line in lines)
            ):
                return status
            time.sleep(1.0)
        raise DemoError(
            f"{self.cluster} did not reach {shards} Healthy shards within {timeout:.0f}s "
            f"(`kubectl -n {self.namespace} describe dvc {self.cluster}`)"
        )

    def connect(self) -> None:
        secret = f"{self.cluster}-token"
        self.api_key = setup.wait_for(
            lambda: self.kube.secret_value(self.namespace, secret, "apiKey"),
            60,
            f"apiKey in Secret {secret}",
        )
        tls = self.status().get("tls")
        if tls:
            secret_name = str(tls["secretName"])
            ca = setup.wait_for(
                lambda: self.kube.secret_value(self.namespace, secret_name, "ca.crt"),
                60,
                f"ca.crt in Secret {secret_name}",
            )
            self.ca = ca.encode()
        name = self.name
        found = setup.wait_for(
            lambda: dns.resolve(self.kube.dns_server, name), 30, f"{name} in the cluster DNS"
        )
        self.url = f"{'https' if self.ca else 'http'}://{found[0]}:{NODE_PORT}"
        say(f"router endpoint: {name} -> {self.url} (CoreDNS; kube-proxy to a router pod)")
        setup.wait_for(self._router_ready, 120, "a router to answer through the Service")

    def _router_ready(self) -> bool:
        try:
            with self.client(timeout=3.0, retries=0) as client:
                client.list_collections()
            return True
        except NodeError:
            return False

    def load(self, chunk: int) -> None:
        step(f"loading {self.count:,} vectors through the router (split by slot)")
        with self.client(timeout=30.0) as client:
            client.create_collection(COLLECTION, self.dim, "l2", hnsw={"m": 16})
            started = time.perf_counter()
            for start in range(0, self.count, chunk):
                stop = min(start + chunk, self.count)
                items = [
                    {
                        "id": self.ids[i],
                        "vector": self.vectors[i].tolist(),
                        "metadata": {"g": i % 5},
                    }
                    for i in range(start, stop)
                ]
                client.upsert(COLLECTION, items)
            rate = self.count / (time.perf_counter() - started)
            say(f"{self.count:,} acknowledged, {rate:,.0f} vectors/s (JSON through the router)")
            found = client.search(COLLECTION, self.vectors[42], k=3, consistency="min_seq")
            hits = ", ".join(f"{h['id']} {h['distance']:.3f}" for h in found["results"][0])
            say(f"search for doc-000042 with the writes' token: {hits}")
            say(f"coverage {found['coverage']} (every shard answered)")
            if found["results"][0][0]["id"] != self.ids[42]:
                raise DemoError("doc-000042 did not find itself first through the router")
        for line in self.status().get("shards") or []:
            say(f"shard {line['shard']}: leader {line['leader']}, slots {', '.join(line['slots'])}")

    def kill_shard_leader(self, traffic: Traffic, shard: int) -> None:
        status = self.status()
        line = (status.get("shards") or [])[shard]
        leader, epoch = str(line["leader"]), int(line["epoch"])
        pid = view.container_pid(self.kube.pod(self.namespace, leader))
        if pid is None:
            raise DemoError(f"cannot find the process of pod {leader}")
        traffic.start("failover")
        time.sleep(2.0)
        step(f"SIGKILL shard {shard}'s leader {leader} (pid {pid}, epoch {epoch})")
        killed = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        elected: float | None = None
        shown = ""
        while time.monotonic() - killed < 120:
            status = self.status()
            line = (status.get("shards") or [])[shard]
            row = shards_row(status)
            if row != shown:
                say(f"t+{time.monotonic() - killed:5.1f}s {row}")
                shown = row
            # The kubelet may restart the killed container fast enough for it to be the most
            # advanced member again: a new epoch is the failover, whoever leads it.
            if line.get("leader") and int(line.get("epoch") or 0) > epoch:
                elected = time.monotonic()
                say(f"shard {shard}: {line['leader']} leads at epoch {line['epoch']}")
                break
            time.sleep(0.5)
        if elected is None:
            raise DemoError(f"shard {shard} had no new leader 120 s after the kill")
        time.sleep(2.0)
        traffic.stop()
        say(f"new leader in the status {elected - killed:.1f}s after the kill")
        say(f"through the router so far: {traffic.summary()}")

    def reshard(self, traffic: Traffic, to: int) -> None:
        step(f'kubectl patch dvc {self.cluster} --type merge -p \'{{"spec":{{"shards":{to}}}}}\'')
        traffic.start("reshard")
        started = time.monotonic()
        self.kube.run(
            "kubectl",
            "-n",
            self.namespace,
            "patch",
            "dvc",
            self.cluster,
            "--type",
            "merge",
            "-p",
            f'{{"spec":{{"shards":{to}}}}}',
        )
        try:
            self.wait_ready(to, RESHARD_TIMEOUT)
        finally:
            traffic.stop()
        say(f"resharded to {to} shards in {time.monotonic() - started:.0f}s")
        say(f"through the router so far: {traffic.summary()}")
        say(self.kube.run("kubectl", "-n", self.namespace, "get", "dvc", self.cluster).strip())

    def verify(self, traffic: Traffic) -> None:
        step("every acknowledged write reads back through the router")
        expected = {**dict(zip(self.ids, self.vectors.tolist(), strict=True)), **traffic.acked}
        missing = 0
        with self.client(timeout=30.0) as client:
            for item_id, vector in expected.items():
                got = client.get(COLLECTION, item_id)
                if got is None or not np.allclose(got["vector"], vector, atol=1e-6):
                    missing += 1
            count = client.get_collection(COLLECTION)["count"]
        say(f"{len(expected):,} acknowledged ids, {missing} missing; the router counts {count:,}")
        if missing or traffic.duplicates:
            raise DemoError(
                f"{missing} acknowledged writes missing, {traffic.duplicates} duplicate ids"
            )


def run(kube: Kube, namespace: str, *, count: int, dim: int, chunk: int) -> None:
    manifest = MANIFEST.read_text()
    cluster = "sharded"
    step(f"a sharded cluster: kubectl apply -f examples/{MANIFEST.name} -n {namespace}")
    kube.run("kubectl", "apply", "-n", namespace, "-f", "-", stdin=manifest)
    demo = ShardedDemo(kube, namespace, cluster, count=count, dim=dim)
    step("waiting for 2 Healthy shards (each a replica group with its own leader and epoch)")
    demo.wait_ready(2, READY_TIMEOUT)
    demo.connect()
    demo.load(chunk)
    traffic = demo.traffic()
    demo.kill_shard_leader(traffic, shard=1)
    demo.wait_ready(2, 180)
    demo.reshard(traffic, to=3)
    demo.verify(traffic)
