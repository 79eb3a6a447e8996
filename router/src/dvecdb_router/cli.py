"""``dvecdb-router``: serve the data API of a sharded cluster on one port.

Shards are given in order, each as its members' URLs (comma-separated); the slot map spreads
the 4,096 slots evenly over them (``slots.SlotMap.even``)::

    dvecdb-router --port 8080 --shard http://a0:8080,http://a1:8080 --shard http://b0:8080

or, where the members' addresses change (pods on Kubernetes), from a file that the operator
keeps current (``--members-file``, see ``config``), re-read whenever it changes; the file also
carries the slot map, which a resharding move changes (a write refused ``slot_moved`` waits up
to ``--moved-retry-seconds`` for it). A client's ``Authorization`` header goes with its
requests to the members, which check the key.

With ``--tls-cert-file`` and ``--tls-key-file`` the router serves HTTPS only; ``--ca-file`` is
the CA https members are verified against. A renewed certificate and a rotated CA are taken
without a restart (``tls``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from aiohttp import web

from dvecdb_client.slots import MAX_SHARDS
from dvecdb_router.app import create_app
from dvecdb_router.cluster import Cluster
from dvecdb_router.config import ConfigError, FileSource, TokenFile, first_token
from dvecdb_router.tls import RouterTls


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="dvecdb-router", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument(
        "--shard",
        action="append",
        help="one shard's member URLs, comma-separated; repeat in shard order",
    )
    parser.add_argument(
        "--members-file",
        help="JSON file of the shards' member URLs, re-read when it changes (instead of --shard)",
    )
    parser.add_argument("--cluster-token", default=os.environ.get("DVECDB_CLUSTER_TOKEN"))
    parser.add_argument(
        "--cluster-token-file",
        help="file holding the cluster token (a mounted Secret key), re-read when it changes",
    )
    parser.add_argument(
        "--ca-file", help="CA that https members' certificates are verified against"
    )
    parser.add_argument("--tls-cert-file", help="serve HTTPS with this certificate (PEM)")
    parser.add_argument("--tls-key-file", help="the key of --tls-cert-file (PEM)")
    parser.add_argument(
        "--tls-reload-seconds",
        type=float,
        default=5.0,
        help="how often the certificate files are checked for a renewal",
    )
    parser.add_argument("--request-timeout", type=float, default=30.0)
    parser.add_argument(
        "--leader-wait-seconds",
        type=float,
        default=10.0,
        help="how long a write waits for a shard's leader during a failover",
    )
    parser.add_argument("--poll-seconds", type=float, default=1.0)
    parser.add_argument(
        "--moved-retry-seconds",
        type=float,
        default=15.0,
        help="how long a write whose slots are being moved is retried before 503 slot_moving",
    )
    parser.add_argument("--max-body-bytes", type=int, default=64 << 20)
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    if (args.tls_cert_file is None) != (args.tls_key_file is None):
        parser.error("TLS needs both --tls-cert-file and --tls-key-file")
    if (args.shard is None) == (args.members_file is None):
        parser.error("give either --shard (repeated) or --members-file")
    if args.shard is None:
        return args
    if len(args.shard) > MAX_SHARDS:
        parser.error(f"at most {MAX_SHARDS} shards")
    for group in args.shard:
        for url in group.split(","):
            if not url.startswith(("http://", "https://")):
                parser.error(f"member URL {url!r} must start with http:// or https://")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        pass
    source = None if args.members_file is None else FileSource(args.members_file)
    slot_map = None
    if source is None:
        shards = [group.split(",") for group in args.shard]
    else:
        try:
            first = source.read()
        except ConfigError as exc:
            first = None
            print(f"dvecdb-router: {exc}", file=sys.stderr)
        if first is None:
            return 2
        shards = [list(urls) for urls in first.shards]
        slot_map = first.slot_map
    # A Secret's value may hold several tokens while one is rotated: send the first.
    cluster_token: str | TokenFile | None = first_token(args.cluster_token)
    if args.cluster_token_file:
        cluster_token = TokenFile(args.cluster_token_file)
    tls = RouterTls(args.tls_cert_file, args.tls_key_file, args.ca_file)
    cluster = Cluster(
        shards,
        source=source,
        cluster_token=cluster_token,
        request_timeout=args.request_timeout,
        leader_wait_seconds=args.leader_wait_seconds,
        poll_seconds=args.poll_seconds,
        moved_retry_seconds=args.moved_retry_seconds,
        slot_map=slot_map,
        ssl_context=tls.members,
    )
    app = create_app(cluster, max_body_bytes=args.max_body_bytes)
    app.cleanup_ctx.append(tls.watcher(args.tls_reload_seconds))
    web.run_app(
        app,
        host=args.host,
        port=args.port,
        access_log=None,
        print=None,
        ssl_context=tls.serving,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
