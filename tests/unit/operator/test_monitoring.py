"""Monitoring builders: ServiceMonitor, PrometheusRule (checked and unit-tested by promtool),
the Grafana dashboard, and the chart's copies of the rules and dashboard."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from dvecdb_operator import constants as c
from dvecdb_operator.builders import monitoring
from dvecdb_operator.builders.common import ClusterRef

pytestmark = pytest.mark.unit

REF = ClusterRef(name="demo", namespace="prod")
CHART_FILES = Path(__file__).resolve().parents[3] / "charts" / "dvecdb-operator" / "files"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not installed (apt-get install prometheus; `make test` installs it)",
)


def test_service_monitor_scrapes_headless_service_with_pod_labels() -> None:
    sm = monitoring.build_service_monitor(REF, interval="15s")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["namespace"] == "prod"
    spec = sm["spec"]
    assert spec["selector"]["matchLabels"][c.LABEL_SERVICE] == "headless"
    assert spec["selector"]["matchLabels"][c.LABEL_CLUSTER] == "demo"
    assert spec["namespaceSelector"] == {"matchNames": ["prod"]}
    assert spec["podTargetLabels"] == [c.LABEL_CLUSTER, c.LABEL_SHARD, c.LABEL_ROLE]
    assert spec["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "15s"}]


def test_prometheus_rule_targets_only_its_cluster() -> None:
    rule = monitoring.build_prometheus_rule(REF)
    alerts = {r["alert"]: r for r in rule["spec"]["groups"][0]["rules"]}
    assert set(alerts) == {
        "DVecDBNoLeader",
        "DVecDBMemberDown",
        "DVecDBReplicationLagHigh",
        "DVecDBFsyncLatencyHigh",
        "DVecDBCheckpointPausesWrites",
        "DVecDBLeaderLeaseLost",
        "DVecDBMemberNotRecovered",
        "DVecDBShardUnavailable",
    }
    for name, alert in alerts.items():
        label = "dvecdb_io_router" if name == "DVecDBShardUnavailable" else "dvecdb_io_cluster"
        assert f'namespace="prod",{label}="demo"' in alert["expr"]
        assert alert["labels"]["severity"] in ("critical", "warning")


def test_the_routers_service_monitor_scrapes_the_router_service_only() -> None:
    monitor = monitoring.build_router_service_monitor(REF, interval="15s")
    assert monitor["metadata"]["name"] == "demo-router"
    assert monitor["spec"]["selector"]["matchLabels"][c.LABEL_SERVICE] == "router"
    assert monitor["spec"]["podTargetLabels"] == [c.LABEL_ROUTER]


def test_dashboard_configmap_is_valid_and_labelled_for_the_sidecar() -> None:
    cm = monitoring.build_dashboard_configmap(REF)
    kubernetes_validate.validate(cm, "1.31", strict=True)
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    board = json.loads(cm["data"]["dvecdb.json"])
    assert board["uid"] == "dvecdb-prod-demo"
    exprs = [t["expr"] for p in board["panels"] for t in p["targets"]]
    assert all('dvecdb_io_cluster="demo"' in e for e in exprs)
    assert len({p["id"] for p in board["panels"]}) == len(board["panels"])


def test_chart_files_match_the_builders() -> None:
    """Regenerate with `python -m dvecdb_operator.builders.monitoring rules|dashboard`."""
    assert (CHART_FILES / "rules.yaml").read_text() == monitoring.chart_rules_file()
    assert (CHART_FILES / "dashboard.json").read_text() == monitoring.chart_dashboard_file()


def test_main_prints_files_and_refuses_unknown_arguments(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert monitoring.main(["rules"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["groups"][0]["name"] == "dvecdb"
    assert monitoring.main(["bogus"]) == 2


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], capture_output=True, text=True, timeout=60, check=False
    )


@needs_promtool
def test_promtool_accepts_chart_and_cluster_rules(tmp_path: Path) -> None:
    cluster_rules = tmp_path / "cluster.yaml"
    cluster_rules.write_text(yaml.safe_dump(monitoring.build_prometheus_rule(REF)["spec"]))
    done = promtool("check", "rules", str(CHART_FILES / "rules.yaml"), str(cluster_rules))
    assert done.returncode == 0, done.stdout + done.stderr


def _series(labels: dict[str, str], values: str) -> dict[str, Any]:
    name = labels.pop("__name__")
    inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{inner}}}", "values": values}


@needs_promtool
def test_promtool_alerts_fire_on_no_leader_member_down_and_lag(tmp_path: Path) -> None:
    """promtool's rule unit tests: synthetic scrapes in, expected alerts out."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(monitoring.build_prometheus_rule(REF)["spec"]))
    base = {"namespace": "prod", "dvecdb_io_cluster": "demo", "job": "demo"}

    def up(pod: str, role: str, values: str) -> dict[str, Any]:
        return _series({"__name__": "up", **base, "pod": pod, "dvecdb_io_role": role}, values)

    lag = {"__name__": monitoring.METRIC_LAG_SECONDS, **base, "pod": "demo-1"}
    tests = {
        "rule_files": [str(rules)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    up("demo-0", "follower", "1x10"),  # nobody is the leader
                    up("demo-1", "follower", "1x10"),
                    up("demo-2", "follower", "0x10"),  # down
                    _series(lag, "60x10"),
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "5m",
                        "alertname": "DVecDBNoLeader",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "critical",
                                    "namespace": "prod",
                                    "dvecdb_io_cluster": "demo",
                                },
                                "exp_annotations": {
                                    "summary": "d-vecDB cluster demo has no leader",
                                    "description": "No member of prod/demo is an up leader: "
                                    "writes to its slots fail until the operator promotes a "
                                    "follower.",
                                },
                            }
                        ],
                    },
                    {
                        "eval_time": "5m",
                        "alertname": "DVecDBMemberDown",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "critical",
                                    **base,
                                    "pod": "demo-2",
                                    "dvecdb_io_role": "follower",
                                },
                                "exp_annotations": {
                                    "summary": "d-vecDB member demo-2 is down",
                                    "description": "Prometheus cannot scrape prod/demo-2; "
                                    "the cluster runs with one member less.",
                                },
                            }
                        ],
                    },
                    {
                        "eval_time": "5m",
                        "alertname": "DVecDBReplicationLagHigh",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "warning",
                                    "namespace": "prod",
                                    "dvecdb_io_cluster": "demo",
                                    "pod": "demo-1",
                                },
                                "exp_annotations": {
                                    "summary": "d-vecDB follower demo-1 lags",
                                    "description": "demo-1 is 1m 0s behind its leader; a "
                                    "failover now would promote a stale member or wait for it.",
                                },
                            }
                        ],
                    },
                ],
            },
            {
                "interval": "1m",
                "input_series": [up("demo-0", "leader", "1x10"), up("demo-1", "follower", "1x10")],
                "alert_rule_test": [
                    {"eval_time": "5m", "alertname": "DVecDBNoLeader", "exp_alerts": []},
                    {"eval_time": "5m", "alertname": "DVecDBMemberDown", "exp_alerts": []},
                ],
            },
        ],
    }
    fsync = f"{monitoring.METRIC_FSYNC_SECONDS}_bucket"
    slow = {"__name__": fsync, **base, "pod": "demo-0"}
    tests["tests"].append(
        {
            "interval": "1m",
            # Every fsync lands in the 0.5s bucket: p99 far above the threshold.
            "input_series": [
                _series({**slow, "le": "0.01"}, "0x20"),
                _series({**slow, "le": "0.5"}, "0+10x20"),
                _series({**slow, "le": "+Inf"}, "0+10x20"),
            ],
            "alert_rule_test": [
                {
                    "eval_time": "16m",
                    "alertname": "DVecDBFsyncLatencyHigh",
                    "exp_alerts": [
                        {
                            "exp_labels": {
                                "severity": "warning",
                                "namespace": "prod",
                                "pod": "demo-0",
                            },
                            "exp_annotations": {
                                "summary": "d-vecDB WAL fsync is slow on demo-0",
                                "description": "The p99 WAL fsync latency of demo-0 is "
                                "495.1ms: every acknowledged write waits for it.",
                            },
                        }
                    ],
                }
            ],
        }
    )
    pause = f"{monitoring.METRIC_CHECKPOINT_PAUSE}_bucket"
    paused = {"__name__": pause, **base, "pod": "demo-1"}
    tests["tests"].append(
        {
            "interval": "1m",
            # Every checkpoint holds writes for 1-2 s: p99 above the 1 s threshold.
            "input_series": [
                _series({**paused, "le": "1"}, "0x40"),
                _series({**paused, "le": "2"}, "0+1x40"),
                _series({**paused, "le": "+Inf"}, "0+1x40"),
            ],
            "alert_rule_test": [
                {"eval_time": "3m", "alertname": "DVecDBCheckpointPausesWrites", "exp_alerts": []},
                {
                    "eval_time": "20m",
                    "alertname": "DVecDBCheckpointPausesWrites",
                    "exp_alerts": [
                        {
                            "exp_labels": {
                                "severity": "warning",
                                "namespace": "prod",
                                "pod": "demo-1",
                            },
                            "exp_annotations": {
                                "summary": "d-vecDB checkpoints hold writes back on demo-1",
                                "description": "Checkpoints of demo-1 pause writes (and a "
                                "follower's apply) for 1.99s at p99: collections above "
                                "DVECDB_CHECKPOINT_COPY_BYTES are written under the lock, "
                                "or the copy is slow.",
                            },
                        }
                    ],
                },
            ],
        }
    )
    lease = {"__name__": monitoring.METRIC_LEASE_VALID, **base}
    ready = {"__name__": monitoring.METRIC_READY, **base}
    tests["tests"].append(
        {
            "interval": "1m",
            # demo-0 is labelled leader and its lease lapsed; demo-1 (a follower) always reads
            # 0; demo-2 is up but its store refused to recover.
            "input_series": [
                _series({**lease, "pod": "demo-0", "dvecdb_io_role": "leader"}, "1 1 0x10"),
                _series({**lease, "pod": "demo-1", "dvecdb_io_role": "follower"}, "0x12"),
                _series({**ready, "pod": "demo-1"}, "1x20"),
                _series({**ready, "pod": "demo-2"}, "0x20"),
                up("demo-1", "follower", "1x20"),
                up("demo-2", "follower", "1x20"),
            ],
            "alert_rule_test": [
                {"eval_time": "2m", "alertname": "DVecDBLeaderLeaseLost", "exp_alerts": []},
                {
                    "eval_time": "4m",
                    "alertname": "DVecDBLeaderLeaseLost",
                    "exp_alerts": [
                        {
                            "exp_labels": {
                                "severity": "critical",
                                **base,
                                "pod": "demo-0",
                                "dvecdb_io_role": "leader",
                            },
                            "exp_annotations": {
                                "summary": "d-vecDB leader demo-0 has lost its lease",
                                "description": "demo-0 is labelled leader but has heard from "
                                "neither a majority of members nor the operator within its "
                                "lease: it acknowledges no write and serves no strong read. "
                                "Check the network between the members and the operator's "
                                "failover (status.failover, events).",
                            },
                        }
                    ],
                },
                {"eval_time": "5m", "alertname": "DVecDBMemberNotRecovered", "exp_alerts": []},
                {
                    "eval_time": "15m",
                    "alertname": "DVecDBMemberNotRecovered",
                    "exp_alerts": [
                        {
                            "exp_labels": {"severity": "critical", **base, "pod": "demo-2"},
                            "exp_annotations": {
                                "summary": "d-vecDB member demo-2 has not recovered its store",
                                "description": "demo-2 serves but its store is not ready after "
                                "10 minutes: a refused recovery (a corrupt WAL record) or a "
                                "failed fsync. GET /v1/status names the file and offset; it can "
                                "neither lead nor follow until fixed.",
                            },
                        }
                    ],
                },
            ],
        }
    )
    # A router found no member of shard 1 for a while; shard 0 always answered.
    unavailable = {
        "__name__": monitoring.METRIC_ROUTER_UNAVAILABLE,
        "namespace": "prod",
        "dvecdb_io_router": "demo",
        "pod": "demo-router-x",
    }
    tests["tests"].append(
        {
            "interval": "1m",
            "input_series": [
                _series({**unavailable, "shard": "0"}, "0x10"),
                _series({**unavailable, "shard": "1"}, "0 0 5 9 20 30 40 50 60 70 80"),
            ],
            "alert_rule_test": [
                {
                    "eval_time": "6m",
                    "alertname": "DVecDBShardUnavailable",
                    "exp_alerts": [
                        {
                            "exp_labels": {
                                "severity": "critical",
                                "namespace": "prod",
                                "dvecdb_io_router": "demo",
                                "shard": "1",
                            },
                            "exp_annotations": {
                                "summary": "d-vecDB cluster demo shard 1 is unavailable to "
                                "its routers",
                                "description": "Routers of prod/demo found no member of shard "
                                "1 to serve requests: writes to its slots and searches without "
                                "allow_partial fail.",
                            },
                        }
                    ],
                }
            ],
        }
    )
    # Two shards: shard 0 has its leader, shard 1 none; the alert names shard 1 only.
    tests["tests"].append(
        {
            "interval": "1m",
            "input_series": [
                _series(
                    {"__name__": "up", **base, "pod": p, "dvecdb_io_shard": s, "dvecdb_io_role": r},
                    "1x10",
                )
                for p, s, r in (
                    ("demo-0", "0", "leader"),
                    ("demo-1", "0", "follower"),
                    ("demo-s1-0", "1", "standby"),
                    ("demo-s1-1", "1", "follower"),
                )
            ],
            "alert_rule_test": [
                {
                    "eval_time": "5m",
                    "alertname": "DVecDBNoLeader",
                    "exp_alerts": [
                        {
                            "exp_labels": {
                                "severity": "critical",
                                "namespace": "prod",
                                "dvecdb_io_cluster": "demo",
                                "dvecdb_io_shard": "1",
                            },
                            "exp_annotations": {
                                "summary": "d-vecDB cluster demo shard 1 has no leader",
                                "description": "No member of prod/demo shard 1 is an up "
                                "leader: writes to its slots fail until the operator "
                                "promotes a follower.",
                            },
                        }
                    ],
                }
            ],
        }
    )
    spec = tmp_path / "tests.yaml"
    spec.write_text(yaml.safe_dump(tests, sort_keys=False))
    done = promtool("test", "rules", str(spec))
    assert done.returncode == 0, done.stdout + done.stderr
