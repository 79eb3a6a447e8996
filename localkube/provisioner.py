"""The real node's volume provisioner: ``pvbinder`` as a daemon of its own.

The process kubelet binds claims in its own loop; the real kubelet does not, and the plane runs
no storage provisioner, so in the real-node mode this process gives each pending claim a
hostPath volume (a world-writable folder under the plane's state dir, as kind's local-path
provisioner does) and releases volumes whose claim is gone. Run as
``python -m localkube.provisioner --server ... --state-dir ...``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path

import aiohttp

from localkube import pvbinder
from localkube.kubeclient import ApiError, Credentials, KubeClient

SYNC_SECONDS = 1.0
FOLDER_MODE = 0o777


async def serve(args: argparse.Namespace) -> None:
    creds = Credentials(
        server=args.server,
        ca_cert=Path(args.ca),
        client_cert=Path(args.cert),
        client_key=Path(args.key),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log = logging.getLogger("localkube.provisioner")
    async with KubeClient(creds) as client:
        while not stop.is_set():
            try:
                await pvbinder.sync(client, Path(args.state_dir), FOLDER_MODE)
            except (ApiError, aiohttp.ClientError, TimeoutError) as err:
                log.warning("sync: %s", err)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SYNC_SECONDS):
                    await stop.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m localkube.provisioner", description=__doc__)
    parser.add_argument("--server", required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--state-dir", required=True, help="claims' folders go in volumes/")
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    asyncio.run(serve(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
