"""The process kubelet: registers a Node, schedules, runs pods as processes, binds claims.

Run as ``python -m localkube.kubelet ...`` by the plane (one process, logs to a file). It polls
the API server once a second: binds pending pods to its node, starts a ``PodWorker`` for each
new pod on the node, passes updates (deletion) to existing ones, and binds pending PVCs. On
SIGTERM it stops every pod's processes and removes their namespaces before it exits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from localkube import net, node, pvbinder
from localkube.images import DEFAULT_IMAGES
from localkube.kubeclient import ApiError, Credentials, KubeClient
from localkube.netplan import NetPlan
from localkube.worker import NodeContext, PodWorker, pod_path

Json = dict[str, Any]
log = logging.getLogger("localkube.kubelet")

SYNC_SECONDS = 1.0
HEARTBEAT_SECONDS = 20.0
SHUTDOWN_SECONDS = 40.0


class Kubelet:
    def __init__(self, ctx: NodeContext, version: str) -> None:
        self.ctx = ctx
        self.version = version
        self.workers: dict[str, PodWorker] = {}
        self.finished: set[str] = set()
        self.node_labels = node.labels(ctx.node_name)
        self._last_heartbeat = 0.0

    async def start(self) -> None:
        await node.register(
            self.ctx.client,
            self.ctx.node_name,
            self.ctx.plan.bridge_ip,
            self.ctx.allocatable,
            self.version,
        )
        self._last_heartbeat = time.monotonic()

    async def sync(self) -> None:
        """One pass: schedule, start/update/forget pod workers, bind claims, heartbeat."""
        client = self.ctx.client
        pods = await client.items("/api/v1/pods")
        seen: set[str] = set()
        for pod in pods:
            meta, spec = pod["metadata"], pod.get("spec", {})
            if node.schedulable(pod, self.node_labels):
                try:
                    await node.bind(client, pod, self.ctx.node_name)
                except ApiError as err:
                    if err.status not in (404, 409):
                        raise
                continue
            if spec.get("nodeName") != self.ctx.node_name:
                continue
            uid = meta["uid"]
            seen.add(uid)
            worker = self.workers.get(uid)
            if worker is not None:
                worker.update(pod)
                continue
            if uid in self.finished or meta.get("deletionTimestamp"):
                # Deleted before (or after) it ever ran here: nothing to stop, let it go.
                with contextlib.suppress(ApiError):
                    await client.delete(
                        pod_path(pod), {"gracePeriodSeconds": 0, "preconditions": {"uid": uid}}
                    )
                continue
            if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                continue
            worker = PodWorker(self.ctx, pod)
            self.workers[uid] = worker
            log.info("starting pod %s (%s)", worker.key, uid)
            worker.start()
        for uid, worker in list(self.workers.items()):
            if uid not in seen:
                worker.vanished()
            if worker.task is not None and worker.task.done():
                self.workers.pop(uid)
                self.finished.add(uid)
                log.info("pod %s (%s) is gone", worker.key, uid)
        await pvbinder.sync(client, self.ctx.state_dir)
        if time.monotonic() - self._last_heartbeat > HEARTBEAT_SECONDS:
            await node.heartbeat(
                client,
                self.ctx.node_name,
                self.ctx.plan.bridge_ip,
                self.ctx.allocatable,
                self.version,
            )
            self._last_heartbeat = time.monotonic()

    async def shutdown(self) -> None:
        for worker in self.workers.values():
            worker.shutdown()
        tasks = [w.task for w in self.workers.values() if w.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=SHUTDOWN_SECONDS)
        for worker in self.workers.values():
            net.delete_pod_network(worker.uid)


async def serve(args: argparse.Namespace) -> None:
    creds = Credentials(
        server=args.server,
        ca_cert=Path(args.ca),
        client_cert=Path(args.cert),
        client_key=Path(args.key),
    )
    images = dict(DEFAULT_IMAGES)
    for item in args.image:
        name, _, program = item.partition("=")
        images[name] = program
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with KubeClient(creds) as client, aiohttp.ClientSession() as session:
        ctx = NodeContext(
            client=client,
            session=session,
            plan=NetPlan(bridge=args.bridge, block=args.block),
            node_name=args.node_name,
            state_dir=Path(args.state_dir),
            images=images,
            api_port=args.api_port,
            allocatable=node.allocatable(),
            ip_tool=shutil.which("ip") or "ip",
            unshare_tool=shutil.which("unshare") or "unshare",
        )
        kubelet = Kubelet(ctx, args.version)
        await kubelet.start()
        log.info("node %s registered; running pods on %s", ctx.node_name, ctx.plan.bridge)
        while not stop.is_set():
            try:
                await kubelet.sync()
            except (ApiError, aiohttp.ClientError, TimeoutError) as err:
                log.warning("sync: %s", err)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SYNC_SECONDS):
                    await stop.wait()
        log.info("stopping: ending %d pods", len(kubelet.workers))
        await kubelet.shutdown()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m localkube.kubelet", description=__doc__)
    parser.add_argument("--server", required=True, help="API server URL")
    parser.add_argument("--ca", required=True, help="CA certificate of the API server")
    parser.add_argument("--cert", required=True, help="client certificate")
    parser.add_argument("--key", required=True, help="client key")
    parser.add_argument("--state-dir", required=True, help="folder for pods' logs and volumes")
    parser.add_argument("--node-name", default="localkube")
    parser.add_argument("--bridge", default=NetPlan.bridge)
    parser.add_argument("--block", default=NetPlan.block)
    parser.add_argument("--api-port", type=int, required=True)
    parser.add_argument("--version", default="v0.0.0-localkube")
    parser.add_argument(
        "--image", action="append", default=[], metavar="REPO=PROGRAM", help="extra image mapping"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    asyncio.run(serve(parse_args(argv)))


if __name__ == "__main__":
    main()
