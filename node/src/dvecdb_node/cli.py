"""``dvecdb-node``: run one node. Flags override ``DVECDB_*`` environment variables."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from dvecdb_node.api import serve
from dvecdb_node.api.app import create_app
from dvecdb_node.replication.install import install as install_replication
from dvecdb_node.settings import NodeSettings
from dvecdb_node.storage.engine import FsyncMode

log = logging.getLogger("dvecdb_node")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dvecdb-node",
        description="d-vecDB node: HNSW vector search over a write-ahead log.",
        argument_default=argparse.SUPPRESS,
    )
    add = parser.add_argument
    add("--host", help="listen address [DVECDB_HOST, 127.0.0.1]")
    add("--port", type=int, help="listen port [DVECDB_PORT, 8080]")
    add("--data-dir", help="folder for WAL and checkpoints [DVECDB_DATA_DIR, ./data]")
    add("--node-id", help="this member's name [DVECDB_NODE_ID]")
    add("--standalone", action="store_true", help="leader from the start, no cluster")
    add("--advertise-url", help="URL others reach this node at [DVECDB_ADVERTISE_URL]")
    add("--fsync", choices=[m.value for m in FsyncMode], help="durability mode [batch]")
    add("--default-ack", choices=["leader", "one", "quorum"], help="ack level [one]")
    add("--api-key", help="bearer keys for the data API, comma-separated [DVECDB_API_KEY]")
    add(
        "--read-only-key",
        help="bearer keys that may only list, get and search [DVECDB_READ_ONLY_KEY]",
    )
    add("--cluster-token", help="bearer token for admin/replication [DVECDB_CLUSTER_TOKEN]")
    add(
        "--secrets-dir",
        help="folder of files apiKey, readOnlyKey, clusterToken, re-read while running",
    )
    add("--log-level", help="logging level [INFO]")
    add("--checkpoint-interval-seconds", type=float, help="checkpoint at least this often")
    add("--checkpoint-wal-bytes", type=int, help="checkpoint after this much WAL")
    add("--wal-segment-bytes", type=int, help="roll WAL segments at this size")
    add("--max-body-bytes", type=int, help="largest request body")
    add("--max-batch", type=int, help="most vectors in one upsert or delete")
    add(
        "--search-threads",
        type=int,
        help="most cores searches use: one costly search each, or one batch split over them",
    )
    add(
        "--fast-search",
        action=argparse.BooleanOptionalAction,
        help="answer plain search connections without aiohttp's request machinery [true]",
    )
    add(
        "--checkpoint-on-shutdown",
        action=argparse.BooleanOptionalAction,
        help="checkpoint at SIGTERM so the next start need not replay [true]",
    )
    add("--ack-timeout-seconds", type=float, help="wait for ack=one/quorum this long [5]")
    add("--cluster-size", type=int, help="members ack=quorum takes a majority of [seen]")
    add("--replication-retention-seconds", type=float, help="keep log for absent followers")
    add(
        "--lease-seconds",
        type=float,
        help="a leader that heard from neither a majority nor the operator this long stops "
        "acknowledging writes and serving strong reads [DVECDB_LEASE_SECONDS, 5]",
    )
    add(
        "--max-read-staleness-seconds",
        type=float,
        help="a follower serves eventual reads this long after it last heard from a leader "
        "[DVECDB_MAX_READ_STALENESS_SECONDS, 60]",
    )
    return parser


def load_settings(argv: Sequence[str] | None = None) -> NodeSettings:
    """Environment first, then explicit flags on top."""
    args: dict[str, Any] = vars(build_parser().parse_args(argv))
    return NodeSettings(**args)


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = load_settings(argv)
    except ValidationError as exc:
        print(f"dvecdb-node: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    _install_uvloop()
    app = create_app(settings, extra_routes=[install_replication])
    log.info(
        "starting node %s on %s:%d (data %s, fsync=%s, standalone=%s, GLIBC_TUNABLES=%s)",
        settings.node_id,
        settings.host,
        settings.port,
        settings.data_dir,
        settings.fsync.value,
        settings.standalone,
        # glibc.malloc.hugetlb=1 (the image's) puts the index on huge pages: faster searches.
        os.environ.get("GLIBC_TUNABLES", ""),
    )
    # SIGTERM/SIGINT: stop accepting, let in-flight requests finish, then the engine closes
    # (waits for writes, fsyncs) in its cleanup context.
    serve.run(app, settings)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
