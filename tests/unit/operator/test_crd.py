"""The CRD: a valid, structural CustomResourceDefinition whose defaults and validation agree
with the operator's spec model; the examples validate against it; the chart ships a copy."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from dvecdb_operator import constants as c
from dvecdb_operator.observation import (
    ClusterObservation,
    FailoverRecord,
    LeaderPod,
    MemberObservation,
)
from dvecdb_operator.spec import ClusterSpec, InvalidSpecError, parse_spec
from dvecdb_operator.status import compute_status

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]
CRD_PATH = ROOT / "crds" / "dvecdb.io_dvecclusters.yaml"
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def crd() -> dict[str, Any]:
    return dict(yaml.safe_load(CRD_PATH.read_text()))


def schema() -> dict[str, Any]:
    return dict(crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


def with_defaults(node: dict[str, Any], value: Any) -> Any:
    """Apply structural-schema defaults the way the API server does on admission."""
    if node.get("type") != "object" or not isinstance(value, dict):
        return value
    out = dict(value)
    for key, sub in (node.get("properties") or {}).items():
        if key not in out and "default" in sub:
            out[key] = copy.deepcopy(sub["default"])
        if key in out:
            out[key] = with_defaults(sub, out[key])
    return out


def check(obj: dict[str, Any]) -> None:
    jsonschema.validate(obj, schema())


def test_crd_is_a_valid_custom_resource_definition() -> None:
    doc = crd()
    kubernetes_validate.validate(doc, "1.31", strict=True)
    assert doc["metadata"]["name"] == f"{c.PLURAL}.{c.GROUP}"
    version = doc["spec"]["versions"][0]
    assert (version["name"], doc["spec"]["names"]["kind"]) == (c.VERSION, c.KIND)
    assert version["subresources"]["status"] == {}
    assert version["subresources"]["scale"]["specReplicasPath"] == ".spec.replicas"
    columns = {col["name"]: col["jsonPath"] for col in version["additionalPrinterColumns"]}
    assert columns == {
        "Phase": ".status.phase",
        "Leader": ".status.leader",
        "Epoch": ".status.epoch",
        "Ready": ".status.readyMembers",
        "Shards": ".status.readyShards",
        "Resharding": ".status.resharding.summary",
        "Leaders": ".status.leaders",
        "Age": ".metadata.creationTimestamp",
    }


def test_crd_schema_is_structural() -> None:
    """Every node has a type (or int-or-string / preserve-unknown), as structural schemas need."""

    def walk(node: dict[str, Any], path: str) -> None:
        assert (
            "type" in node
            or node.get("x-kubernetes-int-or-string")
            or node.get("x-kubernetes-preserve-unknown-fields")
        ), path
        for key, sub in (node.get("properties") or {}).items():
            walk(sub, f"{path}.{key}")
        if isinstance(node.get("items"), dict):
            walk(node["items"], f"{path}[]")
        if isinstance(node.get("additionalProperties"), dict):
            walk(node["additionalProperties"], f"{path}{{}}")

    walk(schema(), "")


def test_crd_defaults_equal_the_spec_model_defaults() -> None:
    defaulted = with_defaults(schema(), {"spec": {}})["spec"]
    model = ClusterSpec().model_dump(by_alias=True, exclude_none=True)
    model.pop("resources")  # no default: the container then sets none
    model["router"].pop("resources")
    model["auth"] = {}
    assert defaulted == model


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_validate_against_crd_and_model(path: Path) -> None:
    doc = yaml.safe_load(path.read_text())
    assert (doc["apiVersion"], doc["kind"]) == (c.API_VERSION, c.KIND)
    check(doc)
    parse_spec(with_defaults(schema(), doc)["spec"])


@pytest.mark.parametrize(
    "bad",
    [
        {"replicas": 0},
        {"replicas": "three"},
        {"storage": {"size": "ten gigs"}},
        {"node": {"fsync": "sometimes"}},
        {"node": {"defaultAck": "all"}},
        {"antiAffinity": "maybe"},
        {"failover": {"detectionSeconds": 0}},
        {"failover": {"leaseSeconds": 0}},
        {"failover": {"maxReadStalenessSeconds": -1}},
        {"monitoring": {"interval": "soon"}},
        {"resources": {"limits": {"cpu": "2 cores"}}},
        {"resources": {"requests": {"memory": "lots"}}},
    ],
)
def test_invalid_specs_are_refused_by_crd_and_model(bad: dict[str, Any]) -> None:
    with pytest.raises(jsonschema.ValidationError):
        check({"apiVersion": c.API_VERSION, "kind": c.KIND, "spec": bad})
    with pytest.raises(InvalidSpecError):
        parse_spec(bad)


def test_status_schema_accepts_what_the_operator_writes() -> None:
    status = {
        "phase": "Healthy",
        "leader": "demo-0",
        "epoch": 3,
        "readyMembers": "3/3",
        "replicas": 3,
        "selector": "app.kubernetes.io/name=dvecdb,dvecdb.io/cluster=demo",
        "message": "",
        "observedGeneration": 2,
        "members": [
            {"name": "demo-0", "role": "leader", "ready": True, "lastSeq": 9, "appliedSeq": 9}
        ],
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "AllMembersReady",
                "message": "3/3",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }
        ],
        "lastFailover": {
            "time": "2026-01-01T00:00:00Z",
            "from": "demo-0",
            "to": "demo-1",
            "fromSeq": 9,
            "toSeq": 9,
            "reason": "x",
            "kind": "failover",
            "fenced": ["demo-1", "demo-2"],
            "forced": False,
        },
        "failover": {
            k: v
            for k, v in FailoverRecord(
                epoch=4,
                kind="failover",
                phase="promoting",
                from_="demo-1",
                reason="leader unreachable",
                candidate="demo-2",
                fenced=("demo-0", "demo-2"),
                started="2026-01-01T00:00:00Z",
            )
            .to_status()
            .items()
            if v is not None  # None deletes the key in the merge patch
        },
        "leaderPod": LeaderPod("demo-0", "uid-1", 2).to_status(),
    }
    check({"status": status})
    with pytest.raises(jsonschema.ValidationError):
        check({"status": {"phase": "Sleeping"}})


def test_chart_ships_the_same_crds() -> None:
    chart_crds = ROOT / "charts" / "dvecdb-operator" / "crds"
    for name in ("dvecdb.io_dvecclusters.yaml", "kopf-peerings.yaml"):
        assert (chart_crds / name).read_text() == (ROOT / "crds" / name).read_text()


def test_a_lease_longer_than_the_detection_window_is_refused() -> None:
    """A leader must have stopped acknowledging before a failover can begin."""
    with pytest.raises(InvalidSpecError, match="leaseSeconds"):
        parse_spec({"failover": {"detectionSeconds": 4, "leaseSeconds": 5}})
    rules = schema()["properties"]["spec"]["properties"]["failover"]["x-kubernetes-validations"]
    assert any("leaseSeconds <= self.detectionSeconds" in r["rule"] for r in rules)
    spec = parse_spec({"failover": {"detectionSeconds": 4}})
    assert spec.failover.lease == 2.0  # half the detection window by default
    assert parse_spec({"failover": {"leaseSeconds": 1.5}}).failover.lease == 1.5


def test_spec_model_error_names_every_bad_field() -> None:
    with pytest.raises(InvalidSpecError) as info:
        parse_spec({"replicas": 0, "node": {"fsync": "x"}})
    assert "spec.replicas" in str(info.value) and "spec.node.fsync" in str(info.value)


def undeclared(node: dict[str, Any], value: Any, path: str = "status") -> list[str]:
    """Keys of `value` the structural schema does not declare: the API server prunes them."""
    if isinstance(value, dict) and node.get("type") == "object":
        props = node.get("properties") or {}
        if node.get("x-kubernetes-preserve-unknown-fields"):
            return []
        out = [f"{path}.{k}" for k in value if k not in props]
        return out + [
            miss for k, v in value.items() if k in props
            for miss in undeclared(props[k], v, f"{path}.{k}")
        ]  # fmt: skip
    if isinstance(value, list) and node.get("type") == "array":
        return [miss for item in value for miss in undeclared(node["items"], item, f"{path}[]")]
    return []


@pytest.mark.parametrize("revision", ["r1", "r2"])
def test_every_status_field_the_pass_writes_is_declared_and_valid(revision: str) -> None:
    """A field the schema does not declare would be pruned silently (phases included)."""
    url = "http://10.0.0.1:8080"
    members = (
        MemberObservation("db-0", 0, "10.0.0.1", pod_ready=True, reachable=True, role="leader",
                          epoch=2, last_seq=9, applied_seq=9, revision=revision, pod_uid="u0",
                          restarts=0),
        MemberObservation("db-1", 1, "10.0.0.2", pod_ready=True, reachable=True, role="follower",
                          epoch=2, last_seq=9, applied_seq=8, leader_url=url, revision="r2"),
    )  # fmt: skip
    cluster = ClusterObservation(
        name="db", namespace="ns", replicas=2, epoch=2, leader="db-0", members=members,
        update_revision="r2", previous_phase="Healthy",
    )  # fmt: skip
    status = compute_status(cluster, generation=3, now="2026-01-01T00:00:00Z")
    assert status["phase"] == ("Upgrading" if revision == "r1" else "Healthy")
    check({"status": status})
    assert undeclared(schema()["properties"]["status"], status) == []


def test_the_status_schema_still_declares_the_snake_case_member_fields_older_operators_wrote() -> (
    None
):
    """Pruned on read, they could not be read by the operator that upgrades an older one."""
    item = schema()["properties"]["status"]["properties"]["members"]["items"]["properties"]
    assert {"last_seq", "applied_seq", "lag_seq", "lastSeq", "appliedSeq", "lagSeq"} <= set(item)
