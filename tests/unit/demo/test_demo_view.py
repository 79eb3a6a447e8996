"""The cluster demo's pure decisions: endpoints, pids, the live table, the manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from demo import cluster, view
from demo.kube import DemoError
from demo.setup import DEFAULT_MANIFEST, cluster_manifest

pytestmark = pytest.mark.unit


def slice_of(*endpoints: tuple[str, bool]) -> dict[str, object]:
    return {
        "endpoints": [
            {"addresses": [ip], "conditions": {"ready": ready}} for ip, ready in endpoints
        ]
    }


def test_ready_addresses_keeps_only_ready_endpoints_across_slices() -> None:
    slices = {
        "items": [
            slice_of(("10.213.0.4", True), ("10.213.0.3", False)),
            slice_of(("10.213.0.2", True)),
            {"endpoints": None},
        ]
    }
    assert view.ready_addresses(slices) == ["10.213.0.2", "10.213.0.4"]
    assert view.ready_addresses({"items": []}) == []


def test_container_pid_reads_the_container_id() -> None:
    assert view.container_pid({"status": {"containerStatuses": [{}]}}) is None
    assert view.container_pid({"status": {}}) is None
    other = {"status": {"containerStatuses": [{"containerID": "containerd://not-running"}]}}
    assert view.container_pid(other) is None


def test_healthy_leader_needs_the_healthy_phase() -> None:
    assert view.healthy_leader({"phase": "Healthy", "leader": "demo-1"}) == "demo-1"
    assert view.healthy_leader({"phase": "FailingOver", "leader": "demo-0"}) is None
    assert view.healthy_leader({"phase": "Healthy"}) is None


def test_status_row_shows_phase_leader_epoch_and_members() -> None:
    status = {
        "phase": "FailingOver",
        "leader": "demo-0",
        "epoch": 1,
        "members": [
            {"name": "demo-0", "role": "unreachable", "ready": False},
            {"name": "demo-1", "role": "follower", "ready": True, "lagSeq": 3},
            {"name": "demo-2", "role": "follower", "ready": True, "lag_seq": 4},  # older operator
        ],
    }
    row = view.status_row(status, 2.25)
    assert row.split()[:4] == ["t+2.2s", "FailingOver", "leader=demo-0", "epoch=1"]
    assert "demo-0 unreachable not-ready lag ?" in row
    assert "demo-1 follower ready lag 3" in row
    assert "demo-2 follower ready lag 4" in row
    assert view.status_row({}).startswith("-")


def test_failover_summary() -> None:
    last = {"from": "demo-0", "to": "demo-1", "fromSeq": 7, "toSeq": 9, "reason": "gone"}
    assert view.failover_summary(last) == "demo-0 -> demo-1 (seq 7 -> 9): gone"
    assert view.failover_summary(None) == "no failover recorded"


def test_cluster_manifest_overrides_the_detection_bound_only_when_asked() -> None:
    text, name = cluster_manifest(DEFAULT_MANIFEST, 3)
    doc = yaml.safe_load(text)
    assert name == doc["metadata"]["name"]
    assert doc["spec"]["failover"]["detectionSeconds"] == 3
    untouched, _ = cluster_manifest(DEFAULT_MANIFEST, None)
    assert "failover" not in yaml.safe_load(untouched)["spec"]


def test_cluster_manifest_refuses_other_objects(tmp_path: Path) -> None:
    other = tmp_path / "cm.yaml"
    other.write_text("kind: ConfigMap\nmetadata: {name: x}\n")
    with pytest.raises(DemoError, match="not a DVecCluster"):
        cluster_manifest(other, None)
    with pytest.raises(DemoError, match="cannot read"):
        cluster_manifest(tmp_path / "missing.yaml", None)


def test_a_half_dead_plane_is_one_clear_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = {"pids": {"etcd": 2**22 + 1}, "markers": {"etcd": "/no/such/etcd"}}
    (tmp_path / "state.json").write_text(json.dumps(state))
    with pytest.raises(SystemExit) as exit_info:
        cluster.main(["--state-dir", str(tmp_path)])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("demo: error: a plane is recorded in")
    assert "etcd is not running" in err[0] and "make cluster-down" in err[0]
    assert err[1].startswith("demo: logs:") and len(err) == 2


def test_a_bad_manifest_fails_before_touching_the_plane(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        cluster.main(["--state-dir", str(tmp_path), "--manifest", str(tmp_path / "none.yaml")])
    assert "demo: error: cannot read the cluster manifest" in capsys.readouterr().err
    assert not (tmp_path / "state.json").exists()
