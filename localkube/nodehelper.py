"""The real node's helper daemon: volumes for claims and names for pods' namespaces.

The kubelet does neither here (no storage provisioner, containerd names namespaces itself): this
process does both, once a second: ``pvbinder`` gives each pending claim a hostPath volume (a
world-writable folder under the plane's state dir, as kind's local-path provisioner makes it:
the kubelet applies no fsGroup to hostPath volumes) and ``podnetns`` keeps
``/run/netns/lk-<uid>`` for each sandbox. Run as ``python -m localkube.nodehelper ...``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp

from localkube import pvbinder
from localkube.kubeclient import ApiError, Credentials, KubeClient
from localkube.nodeconfig import CONTAINERD_NAMESPACE
from localkube.podnetns import Ctr, Linker

SYNC_SECONDS = 1.0
FOLDER_MODE = 0o777

log = logging.getLogger("localkube.nodehelper")


def ctr_runner(ctr: str, socket: str) -> Ctr:
    def run(*args: str) -> str:
        result = subprocess.run(
            [ctr, "--address", socket, "--namespace", CONTAINERD_NAMESPACE, *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"ctr {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout

    return run


async def serve(args: argparse.Namespace) -> None:
    creds = Credentials(
        server=args.server,
        ca_cert=Path(args.ca),
        client_cert=Path(args.cert),
        client_key=Path(args.key),
    )
    linker = Linker(ctr_runner(args.ctr, args.containerd), Path(args.node_root))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with KubeClient(creds) as client:
        while not stop.is_set():
            try:
                await pvbinder.sync(client, Path(args.state_dir), FOLDER_MODE)
            except (ApiError, aiohttp.ClientError, TimeoutError) as err:
                log.warning("volumes: %s", err)
            try:
                await asyncio.to_thread(linker.sync)
            except (RuntimeError, OSError, ValueError, subprocess.TimeoutExpired) as err:
                log.warning("pod namespaces: %s", err)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SYNC_SECONDS):
                    await stop.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m localkube.nodehelper", description=__doc__)
    parser.add_argument("--server", required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--state-dir", required=True, help="claims' folders go in volumes/")
    parser.add_argument("--node-root", required=True, help="the node's state (containerd's)")
    parser.add_argument("--ctr", required=True, help="the ctr binary")
    parser.add_argument("--containerd", required=True, help="containerd's socket")
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    asyncio.run(serve(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
