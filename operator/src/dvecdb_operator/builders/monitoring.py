"""Monitoring children: ServiceMonitor, PrometheusRule and the Grafana dashboard ConfigMap.

The ServiceMonitor copies the pods' `dvecdb.io/cluster`, `dvecdb.io/shard` and `dvecdb.io/role`
labels onto every scraped series (as `dvecdb_io_cluster`, `dvecdb_io_shard` and
`dvecdb_io_role`), so the "no leader" and "member down" alerts need nothing from the node but
the scrape itself; "no leader" is per shard (a one-shard cluster's pods have no shard label:
its one group is the empty value). The same rule and dashboard
builders produce the Helm chart's cluster-wide files (`python -m
dvecdb_operator.builders.monitoring rules|dashboard`), and a unit test keeps them equal.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import yaml

from dvecdb_operator import constants as c
from dvecdb_operator.builders.common import ClusterRef, metadata, selector_labels

# Series the node exports (node/ metrics module); one place to follow a rename.
METRIC_REQUEST_SECONDS = "dvecdb_http_request_duration_seconds"
METRIC_VECTORS = "dvecdb_collection_vectors"
METRIC_LAST_SEQ = "dvecdb_last_seq"
METRIC_APPLIED_SEQ = "dvecdb_applied_seq"
METRIC_LAG_SEQ = "dvecdb_replication_lag_seq"
METRIC_LAG_SECONDS = "dvecdb_replication_lag_seconds"
METRIC_FSYNC_SECONDS = "dvecdb_wal_fsync_duration_seconds"
METRIC_CHECKPOINT_SECONDS = "dvecdb_checkpoint_duration_seconds"
METRIC_CHECKPOINT_PAUSE = "dvecdb_checkpoint_write_pause_seconds"
METRIC_FASTLANE_BATCH = "dvecdb_fastlane_batch_searches"
METRIC_LEASE_VALID = "dvecdb_leader_lease_valid"
METRIC_READY = "dvecdb_ready"
# Seconds a checkpoint may hold writes back (p99) before the alert fires.
CHECKPOINT_PAUSE_THRESHOLD = 1.0

CLUSTER_LABEL = "dvecdb_io_cluster"
ROLE_LABEL = "dvecdb_io_role"
SHARD_LABEL = "dvecdb_io_shard"
ROUTER_LABEL = "dvecdb_io_router"
METRIC_ROUTER_UNAVAILABLE = "dvecdb_router_shard_unavailable_total"
# Matches every d-vecDB target, whichever cluster: used by the chart-wide rules.
ALL_CLUSTERS = f'{CLUSTER_LABEL}!=""'
# Every router's series (they carry the router's label, not the members' cluster label).
ALL_ROUTERS = f'{ROUTER_LABEL}!=""'

LAG_SECONDS_THRESHOLD = 30
FSYNC_P99_THRESHOLD = 0.1


def cluster_matcher(cluster: ClusterRef) -> str:
    return f'namespace="{cluster.namespace}",{CLUSTER_LABEL}="{cluster.name}"'


def router_matcher(cluster: ClusterRef) -> str:
    return f'namespace="{cluster.namespace}",{ROUTER_LABEL}="{cluster.name}"'


def build_router_service_monitor(cluster: ClusterRef, *, interval: str = "30s") -> dict[str, Any]:
    """The router's pods, scraped through the Service `NAME`; series carry
    `dvecdb_io_router` (the cluster's name) and the router's own `shard` label."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": metadata(cluster, cluster.router, component="monitoring"),
        "spec": {
            "selector": {"matchLabels": {**selector_labels(cluster), c.LABEL_SERVICE: "router"}},
            "namespaceSelector": {"matchNames": [cluster.namespace]},
            "podTargetLabels": [c.LABEL_ROUTER],
            "endpoints": [
                {"port": c.NODE_PORT_NAME, "path": "/metrics", "interval": interval},
            ],
        },
    }


def router_rules(matcher: str) -> list[dict[str, Any]]:
    """Alerts on what the routers see, per shard."""
    return [
        {
            "alert": "DVecDBShardUnavailable",
            "expr": (
                f"sum by (namespace, {ROUTER_LABEL}, shard) "
                f"(increase({METRIC_ROUTER_UNAVAILABLE}{{{matcher}}}[5m])) > 0"
            ),
            "for": "2m",
            "labels": {"severity": "critical"},
            "annotations": {
                "summary": (
                    "d-vecDB cluster {{ $labels.dvecdb_io_router }} shard {{ $labels.shard }} "
                    "is unavailable to its routers"
                ),
                "description": (
                    "Routers of {{ $labels.namespace }}/{{ $labels.dvecdb_io_router }} found no "
                    "member of shard {{ $labels.shard }} to serve requests: writes to its slots "
                    "and searches without allow_partial fail."
                ),
            },
        }
    ]


def build_service_monitor(cluster: ClusterRef, *, interval: str = "30s") -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": metadata(cluster, cluster.name, component="monitoring"),
        "spec": {
            "selector": {"matchLabels": {**selector_labels(cluster), c.LABEL_SERVICE: "headless"}},
            "namespaceSelector": {"matchNames": [cluster.namespace]},
            "podTargetLabels": [c.LABEL_CLUSTER, c.LABEL_SHARD, c.LABEL_ROLE],
            "endpoints": [
                {"port": c.NODE_PORT_NAME, "path": "/metrics", "interval": interval},
            ],
        },
    }


def alert_rules(matcher: str) -> list[dict[str, Any]]:
    """The alerting rules for the targets selected by `matcher` (PromQL label matchers)."""
    by = f"namespace, {CLUSTER_LABEL}, {SHARD_LABEL}"
    return [
        {
            "alert": "DVecDBNoLeader",
            "expr": (
                f"count by ({by}) (up{{{matcher}}})"
                f' unless count by ({by}) (up{{{matcher},{ROLE_LABEL}="leader"}} == 1)'
            ),
            "for": "1m",
            "labels": {"severity": "critical"},
            "annotations": {
                "summary": (
                    "d-vecDB cluster {{ $labels.dvecdb_io_cluster }}"
                    "{{ if $labels.dvecdb_io_shard }} shard {{ $labels.dvecdb_io_shard }}"
                    "{{ end }} has no leader"
                ),
                "description": (
                    "No member of {{ $labels.namespace }}/{{ $labels.dvecdb_io_cluster }}"
                    "{{ if $labels.dvecdb_io_shard }} shard {{ $labels.dvecdb_io_shard }}"
                    "{{ end }} is an up leader: writes to its slots fail until the operator "
                    "promotes a follower."
                ),
            },
        },
        {
            "alert": "DVecDBMemberDown",
            "expr": f"up{{{matcher}}} == 0",
            "for": "2m",
            "labels": {"severity": "critical"},
            "annotations": {
                "summary": "d-vecDB member {{ $labels.pod }} is down",
                "description": (
                    "Prometheus cannot scrape {{ $labels.namespace }}/{{ $labels.pod }}; the "
                    "cluster runs with one member less."
                ),
            },
        },
        {
            "alert": "DVecDBReplicationLagHigh",
            "expr": f"max by ({by}, pod) ({METRIC_LAG_SECONDS}{{{matcher}}})"
            f" > {LAG_SECONDS_THRESHOLD}",
            "for": "2m",
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": "d-vecDB follower {{ $labels.pod }} lags",
                "description": (
                    "{{ $labels.pod }} is {{ $value | humanizeDuration }} behind its leader; "
                    "a failover now would promote a stale member or wait for it."
                ),
            },
        },
        {
            "alert": "DVecDBLeaderLeaseLost",
            "expr": f'{METRIC_LEASE_VALID}{{{matcher},{ROLE_LABEL}="leader"}} == 0',
            "for": "1m",
            "labels": {"severity": "critical"},
            "annotations": {
                "summary": "d-vecDB leader {{ $labels.pod }} has lost its lease",
                "description": (
                    "{{ $labels.pod }} is labelled leader but has heard from neither a majority "
                    "of members nor the operator within its lease: it acknowledges no write "
                    "and serves no strong read. Check the network between the members and "
                    "the operator's failover (status.failover, events)."
                ),
            },
        },
        {
            "alert": "DVecDBMemberNotRecovered",
            "expr": f"({METRIC_READY}{{{matcher}}} == 0) and on (namespace, pod) "
            f"(up{{{matcher}}} == 1)",
            "for": "10m",
            "labels": {"severity": "critical"},
            "annotations": {
                "summary": "d-vecDB member {{ $labels.pod }} has not recovered its store",
                "description": (
                    "{{ $labels.pod }} serves but its store is not ready after 10 minutes: a "
                    "refused recovery (a corrupt WAL record) or a failed fsync. "
                    "GET /v1/status names the file and offset; it can neither lead nor follow "
                    "until fixed."
                ),
            },
        },
        {
            "alert": "DVecDBFsyncLatencyHigh",
            "expr": (
                "histogram_quantile(0.99, sum by (le, namespace, pod) "
                f"(rate({METRIC_FSYNC_SECONDS}_bucket{{{matcher}}}[5m])))"
                f" > {FSYNC_P99_THRESHOLD}"
            ),
            "for": "10m",
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": "d-vecDB WAL fsync is slow on {{ $labels.pod }}",
                "description": (
                    "The p99 WAL fsync latency of {{ $labels.pod }} is "
                    "{{ $value | humanizeDuration }}: every "
                    "acknowledged write waits for it."
                ),
            },
        },
        {
            "alert": "DVecDBCheckpointPausesWrites",
            "expr": (
                "histogram_quantile(0.99, sum by (le, namespace, pod) "
                f"(rate({METRIC_CHECKPOINT_PAUSE}_bucket{{{matcher}}}[30m])))"
                f" > {CHECKPOINT_PAUSE_THRESHOLD}"
            ),
            "for": "5m",
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": "d-vecDB checkpoints hold writes back on {{ $labels.pod }}",
                "description": (
                    "Checkpoints of {{ $labels.pod }} pause writes (and a follower's apply) "
                    "for {{ $value | humanizeDuration }} at p99: collections above "
                    "DVECDB_CHECKPOINT_COPY_BYTES are written under the lock, or the copy is slow."
                ),
            },
        },
    ]


def rule_groups(matcher: str, routers: str | None = None) -> dict[str, Any]:
    """A Prometheus rules file body (`groups:`), as promtool and PrometheusRule expect;
    `routers`: the matcher of the routers' series, whose alerts then follow."""
    rules = alert_rules(matcher) + (router_rules(routers) if routers else [])
    return {"groups": [{"name": "dvecdb", "rules": rules}]}


def build_prometheus_rule(cluster: ClusterRef) -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": metadata(cluster, cluster.name, component="monitoring"),
        "spec": rule_groups(cluster_matcher(cluster), router_matcher(cluster)),
    }


def _panel(
    panel_id: int, title: str, exprs: list[tuple[str, str]], unit: str, x: int, y: int
) -> dict[str, Any]:
    return {
        "id": panel_id,
        "type": "timeseries",
        "title": title,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": 12, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [
            {"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend}
            for i, (expr, legend) in enumerate(exprs)
        ],
    }


def dashboard(matcher: str) -> dict[str, Any]:
    """The Grafana dashboard JSON model for the targets selected by `matcher`."""
    m = matcher
    rate = f"rate({METRIC_REQUEST_SECONDS}_count{{{m}}}[1m])"
    panels = [
        _panel(1, "Requests per second", [(f"sum by (pod) ({rate})", "{{pod}}")], "reqps", 0, 0),
        _panel(
            2,
            "Request latency p99",
            [
                (
                    "histogram_quantile(0.99, sum by (le, pod) "
                    f"(rate({METRIC_REQUEST_SECONDS}_bucket{{{m}}}[5m])))",
                    "{{pod}}",
                )
            ],
            "s",
            12,
            0,
        ),
        _panel(
            3,
            "Log position",
            [
                (f"{METRIC_LAST_SEQ}{{{m}}}", "last {{pod}}"),
                (f"{METRIC_APPLIED_SEQ}{{{m}}}", "applied {{pod}}"),
            ],
            "short",
            0,
            8,
        ),
        _panel(
            4,
            "Replication lag",
            [
                (f"{METRIC_LAG_SEQ}{{{m}}}", "seq {{pod}}"),
                (f"{METRIC_LAG_SECONDS}{{{m}}}", "seconds {{pod}}"),
            ],
            "short",
            12,
            8,
        ),
        _panel(
            5, "Vectors", [(f"sum by (pod) ({METRIC_VECTORS}{{{m}}})", "{{pod}}")], "short", 0, 16
        ),
        _panel(
            6,
            "WAL fsync, checkpoint and checkpoint write pause p99",
            [
                (
                    "histogram_quantile(0.99, sum by (le, pod) "
                    f"(rate({METRIC_FSYNC_SECONDS}_bucket{{{m}}}[5m])))",
                    "fsync {{pod}}",
                ),
                (
                    "histogram_quantile(0.99, sum by (le, pod) "
                    f"(rate({METRIC_CHECKPOINT_SECONDS}_bucket{{{m}}}[30m])))",
                    "checkpoint {{pod}}",
                ),
                (
                    "histogram_quantile(0.99, sum by (le, pod) "
                    f"(rate({METRIC_CHECKPOINT_PAUSE}_bucket{{{m}}}[30m])))",
                    "writes paused {{pod}}",
                ),
            ],
            "s",
            12,
            16,
        ),
        _panel(
            7,
            "Members up (role)",
            [(f"up{{{m}}}", "{{pod}} {{" + ROLE_LABEL + "}}")],
            "short",
            0,
            24,
        ),
        _panel(
            8,
            "Fast lane: search requests per index search",
            [
                (
                    f"sum by (pod) (rate({METRIC_FASTLANE_BATCH}_sum{{{m}}}[5m])) / "
                    f"sum by (pod) (rate({METRIC_FASTLANE_BATCH}_count{{{m}}}[5m]))",
                    "{{pod}}",
                )
            ],
            "short",
            12,
            24,
        ),
    ]
    return {
        "title": "d-vecDB",
        "uid": "dvecdb-overview",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "tags": ["dvecdb"],
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "type": "datasource",
                    "query": "prometheus",
                    "label": "Data source",
                }
            ]
        },
        "panels": panels,
    }


def build_dashboard_configmap(cluster: ClusterRef) -> dict[str, Any]:
    body = dashboard(cluster_matcher(cluster))
    body["title"] = f"d-vecDB {cluster.namespace}/{cluster.name}"
    body["uid"] = f"dvecdb-{cluster.namespace}-{cluster.name}"[:40]
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        # Grafana's dashboard sidecar picks up ConfigMaps with this label.
        "metadata": metadata(
            cluster,
            cluster.dashboard_configmap,
            component="monitoring",
            extra_labels={"grafana_dashboard": "1"},
        ),
        "data": {"dvecdb.json": json.dumps(body, indent=2, sort_keys=True)},
    }


def chart_rules_file() -> str:
    """The chart's `files/rules.yaml`: a promtool-checkable rules file for every cluster."""
    return str(yaml.safe_dump(rule_groups(ALL_CLUSTERS, ALL_ROUTERS), sort_keys=False, width=1000))


def chart_dashboard_file() -> str:
    """The chart's `files/dashboard.json`."""
    return json.dumps(dashboard(ALL_CLUSTERS), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Print the chart-wide rules file (`rules`) or dashboard (`dashboard`) to stdout."""
    args = sys.argv[1:] if argv is None else argv
    if args == ["rules"]:
        sys.stdout.write(chart_rules_file())
        return 0
    if args == ["dashboard"]:
        sys.stdout.write(chart_dashboard_file())
        return 0
    print("usage: python -m dvecdb_operator.builders.monitoring rules|dashboard", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
