"""``python -m demo`` (``make demo``): a replicated d-vecDB cluster on local real Kubernetes
survives the death of its leader's process with every acknowledged write.

Starts (or reuses) the local plane, installs the operator with Helm, applies the example
DVecCluster, loads sample vectors with ``ack=one`` through the read-write Service's endpoint,
searches, SIGKILLs the leader's process and shows the failover live, measures the time from
the kill to the first write acknowledged through the read-write Service, checks that every
acknowledged vector is on the new leader; then (``--no-sharded`` skips it) a two-shard
cluster behind its router: a shard's failover and an online reshard to three shards
(``demo.sharded``). Leaves the clusters running.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from demo import setup, sharded, view
from demo.kube import DemoError, Json, Kube
from demo.probe import NODE_PORT, Ack, ProbeWriter
from dvecdb_client import NodeError, SyncNodeClient
from localkube import dns, net
from localkube.build import BuildError
from localkube.cli import env_lines
from localkube.nodeconfig import CLUSTER_DOMAIN
from localkube.plane import PlaneError, default_state_dir

NAMESPACE = "dvecdb-demo"
COLLECTION = "demo"
HEALTHY_TIMEOUT = 300.0
SEARCH_BATCH = 100  # the node's limit of query vectors per search request


def step(text: str) -> None:
    print(f"==> {text}", flush=True)


def say(text: str) -> None:
    print(f"    {text}", flush=True)


@dataclass(frozen=True)
class Options:
    state_dir: Path
    manifest: Path
    detection_seconds: int | None
    count: int
    dim: int
    chunk: int
    teardown: bool
    sharded: bool


class Demo:
    """One run; the attributes are what later steps need from earlier ones."""

    def __init__(self, kube: Kube, cluster: str, options: Options) -> None:
        self.kube = kube
        self.cluster = cluster
        self.options = options
        self.rng = np.random.default_rng(2024)
        self.vectors: npt.NDArray[np.float32] = self.rng.standard_normal(
            (options.count, options.dim)
        ).astype(np.float32)
        self.ids = [f"vec-{i:06d}" for i in range(options.count)]
        self.api_key: str | None = None  # read from the cluster's Secret once it exists
        # The cluster's CA (Secret NAME-tls, ca.crt) when it serves TLS (spec.tls, on by
        # default): clients verify the members against it.
        self.ca: bytes | None = None
        self.rw_ip: str | None = None  # the rw Service's ClusterIP, once resolved

    @property
    def scheme(self) -> str:
        return "http" if self.ca is None else "https"

    # -- reads ------------------------------------------------------------------------------

    def status(self) -> Json:
        found = self.kube.cluster(NAMESPACE, self.cluster) or {}
        return dict(found.get("status") or {})

    def rw_addresses(self) -> list[str]:
        return view.ready_addresses(self.kube.service_slices(NAMESPACE, f"{self.cluster}-rw"))

    def member_url(self, name: str) -> str:
        ip = view.pod_ip(self.kube.pod(NAMESPACE, name))
        if ip is None:
            raise DemoError(f"pod {name} has no IP")
        return f"{self.scheme}://{ip}:{NODE_PORT}"

    def node_status(self, name: str) -> Json | None:
        try:
            with self.client(self.member_url(name), timeout=2.0, retries=0) as client:
                result: Json = client.status()
                return result
        except (NodeError, DemoError):
            return None

    def client(self, url: str, **options: float) -> SyncNodeClient:
        """A client of ``url``; by the rw Service's address, its certificate is checked
        against the Service's name (members' certificates carry their Services' names)."""
        by_service = self.rw_ip is not None and url.split("://", 1)[-1].startswith(f"{self.rw_ip}:")
        return SyncNodeClient(
            url,
            api_key=self.api_key,
            ca=self.ca,
            server_hostname=self.rw_name() if by_service else None,
            **options,
        )

    # -- steps ------------------------------------------------------------------------------

    def read_keys(self) -> None:
        """The API key from the Secret the operator made, as the chart's NOTES show; then
        a request without it, to show the cluster is closed."""
        secret = f"{self.cluster}-token"
        step(f"the API key from Secret {secret} (the operator generated it)")
        say(
            f"kubectl -n {NAMESPACE} get secret {secret} -o jsonpath='{{.data.apiKey}}' | base64 -d"
        )
        self.api_key = setup.wait_for(
            lambda: self.kube.secret_value(NAMESPACE, secret, "apiKey"),
            60,
            f"apiKey in Secret {secret}",
        )
        tls = self.status().get("tls")  # written before the cluster is Healthy
        if not tls:
            say("TLS off (spec.tls.enabled: false): plain HTTP")
        else:
            name = tls["secretName"]
            step(f"the CA from Secret {name}: clients verify the members' certificates")
            say(f"kubectl -n {NAMESPACE} get secret {name} -o jsonpath='{{.data.ca\\.crt}}'")
            ca = setup.wait_for(
                lambda: self.kube.secret_value(NAMESPACE, name, "ca.crt"), 60, f"ca.crt in {name}"
            )
            self.ca = ca.encode()
        url = self.rw_url()
        try:
            with SyncNodeClient(
                url, timeout=5.0, retries=0, ca=self.ca, server_hostname=self.rw_name()
            ) as anonymous:
                anonymous.list_collections()
        except NodeError as err:
            if err.status != 401:
                raise
            say(f"without a key: {err.status} {err.code} (the data API is closed by default)")
        else:
            raise DemoError(f"{url} answered a request without a key: the cluster is open")

    def wait_healthy(self, timeout: float, not_leader: str | None = None) -> Json:
        started, last_row = time.monotonic(), ""
        while time.monotonic() - started < timeout:
            status = self.status()
            row = view.status_row(status)
            if row != last_row:
                say(view.status_row(status, time.monotonic() - started))
                last_row = row
            leader = view.healthy_leader(status)
            if leader and leader != not_leader:
                return status
            time.sleep(1.0)
        raise DemoError(
            f"the cluster was not Healthy within {timeout:.0f}s "
            f"(pod logs: `.venv/bin/localkube logs {NAMESPACE}/{self.cluster}-0`)"
        )

    def rw_name(self) -> str:
        return f"{self.cluster}-rw.{NAMESPACE}.svc.{CLUSTER_DOMAIN}"

    def rw_url(self) -> str:
        """The read-write Service by its name: CoreDNS gives its address and the node's
        kube-proxy forwards to its one ready endpoint, the leader."""
        setup.wait_for(
            lambda: len(self.rw_addresses()) == 1,
            60,
            f"the {self.cluster}-rw Service to have exactly one ready endpoint",
        )
        found = setup.wait_for(
            lambda: dns.resolve(self.kube.dns_server, self.rw_name()),
            30,
            f"{self.rw_name()} in the cluster DNS",
        )
        self.rw_ip = found[0]
        return f"{self.scheme}://{found[0]}:{NODE_PORT}"

    def load(self) -> None:
        url = self.rw_url()
        step(f"loading {self.options.count:,} vectors with ack=one through {self.cluster}-rw")
        say(f"{self.rw_name()} -> {url} (CoreDNS; kube-proxy forwards to the leader)")
        with self.client(url, timeout=30.0) as client:
            client.create_collection(
                COLLECTION, self.options.dim, "l2", hnsw={"m": 16, "ef_construction": 100}
            )
            started = time.perf_counter()
            for start in range(0, self.options.count, self.options.chunk):
                stop = min(start + self.options.chunk, self.options.count)
                meta = [{"group": i % 10} for i in range(start, stop)]
                body = client.upsert_bulk(
                    COLLECTION, self.ids[start:stop], self.vectors[start:stop], meta, ack="one"
                )
                say(f"{stop:>7,}/{self.options.count:,} acknowledged (seq {body['seq']})")
            rate = self.options.count / (time.perf_counter() - started)
            say(f"ingest with ack=one: {rate:,.0f} vectors/s")

    def search(self) -> None:
        step(f"searching through {self.cluster}-rw")
        with self.client(self.rw_url(), timeout=10.0) as client:
            found = client.search(COLLECTION, self.vectors[42], k=3, include_metadata=True)
            for hit in found["results"][0]:
                say(f"{hit['id']}  distance {hit['distance']:.4f}  metadata {hit.get('metadata')}")
            if found["results"][0][0]["id"] != self.ids[42]:
                raise DemoError("vector 42 did not find itself first")
            filtered = client.search(COLLECTION, self.vectors[42], k=3, filter={"group": 3})
            say(
                "with filter group=3: "
                + ", ".join(h["id"] for h in filtered["results"][0])
                + f" (read at seq {filtered['seq']})"
            )

    def kill_leader(self, writer: ProbeWriter) -> tuple[str, int, float]:
        status = self.status()
        leader, epoch = str(status["leader"]), int(status["epoch"])
        pod = self.kube.pod(NAMESPACE, leader)
        pid = view.container_pid(pod)
        if pid is None:
            raise DemoError(f"cannot find the process of pod {leader} in its status")
        step("replication positions before the kill (received = a follower's last_seq)")
        for member in status.get("members") or []:
            node = self.node_status(str(member["name"])) or {}
            say(
                f"{member['name']}: role {node.get('role', '?')}, epoch {node.get('epoch', '?')}, "
                f"received {node.get('last_seq', '?')}, applied {node.get('applied_seq', '?')}"
            )
        step(f"writing one vector at a time with ack=one through {self.cluster}-rw")
        writer.start()
        time.sleep(1.5)
        say(f"{len(writer.snapshot())} writes acknowledged so far by {leader}")
        step(f"SIGKILL the leader {leader} (pid {pid}, epoch {epoch})")
        killed_at = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        return leader, epoch, killed_at

    def watch_failover(
        self, writer: ProbeWriter, old: str, epoch: int, killed_at: float
    ) -> tuple[Json, Ack]:
        """The live table every ~0.5 s until a new leader is elected and has acknowledged."""
        bound = 120.0 + (self.options.detection_seconds or 10)
        print(f"    {'time':>8}  {'phase':<11} leader  epoch members", flush=True)
        elected: float | None = None
        routed: float | None = None
        status: Json = {}
        ack: Ack | None = None
        while True:
            now = time.monotonic()
            if now - killed_at > bound:
                raise DemoError(
                    f"no new leader acknowledged a write within {bound:.0f}s of the kill "
                    f"(last writer error: {writer.last_error}; operator logs: "
                    f"`.venv/bin/localkube logs {setup.OPERATOR_NAMESPACE}/<operator pod>`)"
                )
            status = self.status()
            say(view.status_row(status, now - killed_at))
            new = status.get("leader")
            if elected is None and new and new != old and int(status.get("epoch") or 0) > epoch:
                elected = now
            new_ip = view.pod_ip(self.kube.pod(NAMESPACE, str(new))) if elected else None
            if routed is None and new_ip is not None and self.rw_addresses() == [new_ip]:
                routed = now
            ack = writer.first_ack_sent_after(killed_at)
            if elected is not None and ack is not None:
                break
            time.sleep(max(0.0, 0.5 - (time.monotonic() - now)))
        step("failover")
        say(view.failover_summary(status.get("lastFailover")))
        say(
            f"new leader seen in the DVecCluster status: {elected - killed_at:6.2f}s after the kill"
        )
        if routed is not None:
            say(f"{self.cluster}-rw EndpointSlice moved to it:  {routed - killed_at:6.2f}s")
        say(
            f"kill -> first write acknowledged through {self.cluster}-rw: "
            f"{ack.acked - killed_at:.2f}s (by {ack.address}, seq {ack.seq})"
        )
        return status, ack

    def verify(self, leader: str, writer: ProbeWriter) -> None:
        acks = writer.snapshot()
        expected = self.options.count + len(acks)
        step(f"checking every acknowledged vector on the new leader {leader}")
        with self.client(self.member_url(leader), timeout=10.0) as client:
            count = int(client.get_collection(COLLECTION)["count"])
            say(f"count {count:,} (loaded {self.options.count:,} + {len(acks)} probe writes)")
            missing = [a.item_id for a in acks if not self._holds(client, a)]
            exact = self._self_matches(client)
        say(f"{len(acks) - len(missing)}/{len(acks)} acknowledged probe writes present")
        say(f"{exact:,}/{self.options.count:,} loaded vectors find themselves (distance 0)")
        if missing or count != expected or exact != self.options.count:
            shown = ", ".join(missing[:5])
            raise DemoError(
                f"acknowledged writes lost: count {count} != {expected} or missing [{shown}] "
                f"or {self.options.count - exact} loaded vectors not found"
            )
        say("no acknowledged write was lost")

    @staticmethod
    def _holds(client: SyncNodeClient, ack: Ack) -> bool:
        found = client.get(COLLECTION, ack.item_id)
        if found is None:
            return False
        return bool(np.allclose(np.asarray(found["vector"]), np.asarray(ack.vector)))

    def _self_matches(self, client: SyncNodeClient) -> int:
        exact = 0
        for start in range(0, self.options.count, SEARCH_BATCH):
            stop = min(start + SEARCH_BATCH, self.options.count)
            found = client.search(COLLECTION, vectors=self.vectors[start:stop], k=1)
            for offset, row in enumerate(found["results"]):
                if row and row[0]["id"] == self.ids[start + offset] and row[0]["distance"] == 0.0:
                    exact += 1
        return exact

    def old_leader_rejoins(self, old: str, new: str, epoch: int, writer: ProbeWriter) -> None:
        """The killed leader follows at the new epoch and holds exactly the new leader's data.

        It may have logged a write it never got acknowledged before it died; rejoining must
        drop that tail (the leader answers `log_diverged`), not keep it beside the new log.
        """
        step(f"waiting for {old} (process restarted by the kubelet) to follow at epoch {epoch}")
        top = int((self.node_status(new) or {}).get("last_seq") or 0)

        def following() -> Json | None:
            node = self.node_status(old)
            if (
                node
                and node.get("role") == "follower"
                and node.get("epoch") == epoch
                and int(node.get("applied_seq") or 0) >= top
            ):
                return node
            return None

        node = setup.wait_for(following, 120, f"{old} to follow at epoch {epoch}, caught up")
        restarts = view.restart_count(self.kube.pod(NAMESPACE, old))
        say(
            f"{old}: follower of {node.get('leader')} at epoch {epoch}, "
            f"applied {node.get('applied_seq')} (container restarts: {restarts})"
        )
        acks = writer.snapshot()
        with (
            self.client(self.member_url(old), timeout=10.0) as there,
            self.client(self.member_url(new), timeout=10.0) as here,
        ):
            counts = [int(c.get_collection(COLLECTION)["count"]) for c in (there, here)]
            missing = [a.item_id for a in acks if not self._holds(there, a)]
        if counts[0] != counts[1] or missing:
            raise DemoError(
                f"{old} diverged from {new} after rejoining: {counts[0]} vectors vs "
                f"{counts[1]}, acknowledged writes missing: {missing[:5]}"
            )
        say(f"{old} holds the same {counts[0]:,} vectors as {new}, every acknowledged write")


def run(options: Options) -> None:
    manifest, cluster = setup.cluster_manifest(options.manifest, options.detection_seconds)
    step("local Kubernetes plane")
    started_plane = setup.ensure_plane(options.state_dir, say)
    kube = Kube.from_state(options.state_dir)
    try:
        demo_cluster(kube, cluster, manifest, options)
    finally:
        if options.teardown:
            step("teardown")
            setup.teardown(kube, NAMESPACE, cluster, started_plane, say)
    if not options.teardown:
        inspect(options.state_dir, cluster)


def demo_cluster(kube: Kube, cluster: str, manifest: str, options: Options) -> None:
    step(f"namespace {NAMESPACE} and the operator")
    setup.fresh_namespace(kube, NAMESPACE, cluster, say)
    setup.install_operator(kube, NAMESPACE, say)
    step(f"kubectl apply -f {options.manifest} -n {NAMESPACE}")
    kube.run("kubectl", "apply", "-n", NAMESPACE, "-f", "-", stdin=manifest)
    demo = Demo(kube, cluster, options)
    step("waiting for the cluster to be Healthy (bootstrap: ordinal 0 leads at epoch 1)")
    demo.wait_healthy(HEALTHY_TIMEOUT)
    demo.read_keys()
    demo.load()
    demo.search()
    writer = ProbeWriter(
        demo.rw_addresses, COLLECTION, options.dim, api_key=demo.api_key, ca=demo.ca
    )
    try:
        old, epoch, killed_at = demo.kill_leader(writer)
        status, _ = demo.watch_failover(writer, old, epoch, killed_at)
        time.sleep(1.0)  # a few writes on the new leader too
    finally:
        writer.stop()
    new, new_epoch = str(status["leader"]), int(status["epoch"])
    say(f"{len(writer.snapshot())} probe writes acknowledged, {writer.failures} refused or failed")
    demo.verify(new, writer)
    demo.old_leader_rejoins(old, new, new_epoch, writer)
    step("the cluster now")
    final = demo.wait_healthy(120)
    say(f"leader {final['leader']} at epoch {final['epoch']}, {final.get('readyMembers')} ready")
    if options.sharded:
        sharded.run(kube, NAMESPACE, count=options.count, dim=options.dim, chunk=options.chunk)


def inspect(state_dir: Path, cluster: str) -> None:
    step("the cluster keeps running; inspect it with")
    for line in env_lines(state_dir).splitlines():
        print(f"    {line}")
    print("    kubectl get dvc -A")
    print(f"    kubectl -n {NAMESPACE} get pods,svc,endpointslices")
    stop = "make cluster-down"
    if state_dir != default_state_dir():
        stop = f".venv/bin/localkube --state-dir {shlex.quote(str(state_dir))} down"
    step(f"stop everything with: {stop}")


def parse(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__)
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=default_state_dir(),
        help="the plane's state folder (default: the one `make cluster-up` uses)",
    )
    parser.add_argument(
        "--manifest",
        type=Path,
        default=setup.DEFAULT_MANIFEST,
        help="the DVecCluster manifest to apply",
    )
    parser.add_argument(
        "--detection-seconds",
        type=int,
        default=None,
        help="override spec.failover.detectionSeconds (manifest default: 10)",
    )
    parser.add_argument("--count", type=int, default=5000, help="sample vectors to load")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--chunk", type=int, default=500, help="vectors per bulk request")
    parser.add_argument(
        "--sharded",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="then a 2-shard cluster behind its router: a shard's failover, a reshard to 3",
    )
    parser.add_argument(
        "--teardown",
        action="store_true",
        help="remove what the demo set up at the end (the plane if it started it)",
    )
    args = parser.parse_args(argv)  # fmt: skip
    if args.count < 43 or args.dim < 1 or args.chunk < 1:
        parser.error("--count must be at least 43 (vector 42 is searched), --dim/--chunk >= 1")
    return Options(
        state_dir=args.state_dir,
        manifest=args.manifest,
        detection_seconds=args.detection_seconds,
        count=args.count,
        dim=args.dim,
        chunk=args.chunk,
        teardown=args.teardown,
        sharded=args.sharded,
    )


def main(argv: list[str] | None = None) -> None:
    options = parse(argv)
    try:
        run(options)
    except (DemoError, PlaneError, BuildError, net.NetError, NodeError, OSError) as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        message = lines[0] if lines else type(err).__name__
        print(f"demo: error: {message}", file=sys.stderr)
        print(
            f"demo: logs: {options.state_dir / 'logs'} (plane), "
            f"`.venv/bin/localkube logs {NAMESPACE}/<pod>` (members); "
            f"state in {options.state_dir}",
            file=sys.stderr,
        )
        sys.exit(1)
    except KeyboardInterrupt:
        print("demo: interrupted; the plane keeps running (`make cluster-down` stops it)")
        sys.exit(130)
