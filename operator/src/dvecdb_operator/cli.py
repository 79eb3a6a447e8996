"""`dvecdb-operator`: run the operator (kopf) with d-vecDB's handlers.

High availability: run two or more replicas with the same `--peering` name. kopf's peering
lets only the replica with the highest `--priority` act; the others pause (equal priorities
would pause each other, so the default is a random priority per process). A replica that
stops refreshing its peering record for `--peering-lifetime` seconds is presumed dead and the
next one resumes. Peering is eventually consistent, so the one dangerous step, the epoch bump
of a failover, is also guarded by a resourceVersion precondition on the cluster's status.
"""

from __future__ import annotations

import argparse
import os
import random
from collections.abc import Sequence

import kopf

from dvecdb_operator import logs
from dvecdb_operator.builders.networkpolicy import OperatorIdentity
from dvecdb_operator.runtime import RuntimeConfig

DEFAULT_PEERING = "dvecdb-operator"


def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    parser = argparse.ArgumentParser(prog="dvecdb-operator", description=__doc__.splitlines()[0])
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[n for n in env("DVECDB_OPERATOR_NAMESPACES", "").split(",") if n],
        help="serve this namespace (repeatable; glob patterns allowed)",
    )
    scope.add_argument(
        "-A", "--all-namespaces", action="store_true", help="serve every namespace (default)"
    )
    parser.add_argument("--peering", default=env("DVECDB_OPERATOR_PEERING", DEFAULT_PEERING))
    parser.add_argument(
        "--standalone", action="store_true", help="no peering: only for a single replica"
    )
    parser.add_argument(
        "--no-create-peering",
        dest="create_peering",
        action="store_false",
        default=env("DVECDB_OPERATOR_CREATE_PEERING", "true").lower() not in ("0", "false"),
        help="do not create the peering object at start-up (the Helm chart ships it; both "
        "creating it made `helm install` fail with 'already exists' when the pod won the race)",
    )
    parser.add_argument(
        "--priority",
        type=int,
        default=int(env("DVECDB_OPERATOR_PRIORITY", "0")) or random.randint(1, 1_000_000),
        help="peering priority; the highest live replica acts (default: random)",
    )
    parser.add_argument(
        "--liveness",
        default=env("DVECDB_OPERATOR_LIVENESS", "http://0.0.0.0:8081/healthz"),
        help="kopf's liveness endpoint URL ('' to disable)",
    )
    parser.add_argument("--monitor-interval", type=float, default=2.0)
    parser.add_argument("--node-timeout", type=float, default=3.0)
    parser.add_argument("--catchup-timeout", type=float, default=30.0)
    parser.add_argument(
        "--max-lag-seq",
        type=int,
        default=100,
        help="a follower lacking more records of the leader's log than this does not count: "
        "the phase is not Healthy and a rolling upgrade waits before the next restart",
    )
    parser.add_argument("--watch-timeout", type=int, default=300)
    parser.add_argument(
        "--log-format",
        choices=["text", "json"],
        default=env("DVECDB_OPERATOR_LOG_FORMAT", "text"),
        help="text (full logger names) or one JSON object per line",
    )
    parser.add_argument(
        "--pod-namespace",
        default=env("POD_NAMESPACE", ""),
        help="the namespace the operator's pods run in (the Helm chart sets POD_NAMESPACE): "
        "each cluster's NetworkPolicy admits them",
    )
    parser.add_argument(
        "--pod-labels",
        type=parse_labels,
        default=parse_labels(env("DVECDB_OPERATOR_POD_LABELS", "")),
        help="labels selecting the operator's pods, k=v[,k=v] (the chart sets them); without "
        "these and --pod-namespace the NetworkPolicy has no operator peer",
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


def parse_labels(text: str) -> dict[str, str]:
    """`a=b,c=d` -> {"a": "b", "c": "d"}."""
    labels: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"not a label k=v: {item!r}")
        labels[key.strip()] = value.strip()
    return labels


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure(log_format=args.log_format, verbose=args.verbose)

    from dvecdb_operator import handlers  # noqa: F401  (registers the handlers)

    namespaces = [] if args.all_namespaces else list(args.namespace)
    config = RuntimeConfig(
        monitor_interval=args.monitor_interval,
        node_timeout=args.node_timeout,
        catchup_timeout=args.catchup_timeout,
        max_lag_seq=args.max_lag_seq,
        watch_server_timeout=args.watch_timeout,
        peering_name=None if args.standalone or not args.create_peering else args.peering,
        namespaces=tuple(namespaces),
        identity=OperatorIdentity(namespace=args.pod_namespace or None, labels=args.pod_labels),
    )
    kopf.run(
        standalone=args.standalone,
        priority=args.priority,
        peering_name=args.peering,
        liveness_endpoint=args.liveness or None,
        clusterwide=not namespaces,
        namespaces=namespaces,
        memo=kopf.Memo(config=config),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
