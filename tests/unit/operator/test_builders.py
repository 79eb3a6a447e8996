"""Builders: every manifest validates against the Kubernetes OpenAPI schema (strict), and
carries what the design asks for."""

from __future__ import annotations

import base64
from typing import Any

import kubernetes_validate
import pytest

from dvecdb_operator import constants as c
from dvecdb_operator.builders.common import ClusterRef, ordinal_of
from dvecdb_operator.builders.pdb import build_pdb
from dvecdb_operator.builders.secret import build_token_secret, new_token, read_token
from dvecdb_operator.builders.services import build_services
from dvecdb_operator.builders.statefulset import build_statefulset
from dvecdb_operator.spec import parse_spec

pytestmark = pytest.mark.unit

K8S_VERSION = "1.31"
REF = ClusterRef(name="demo", namespace="prod")


def validate(manifest: dict[str, Any]) -> None:
    try:
        kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{manifest['kind']} invalid at {list(exc.absolute_path)}: {exc.message}")


def container(sts: dict[str, Any]) -> dict[str, Any]:
    return dict(sts["spec"]["template"]["spec"]["containers"][0])


def env(sts: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(sts)["env"]}


@pytest.mark.parametrize(
    "raw",
    [
        {},
        {"replicas": 1, "antiAffinity": "none", "storage": {"size": "5Gi"}},
        {
            "replicas": 5,
            "antiAffinity": "required",
            "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": 2}},
            "storage": {"size": "10Gi", "storageClassName": "ssd", "reclaimPolicy": "Delete"},
        },
    ],
)
def test_statefulset_validates(raw: dict[str, Any]) -> None:
    validate(build_statefulset(REF, parse_spec(raw), token_secret="demo-token"))


def test_scale_down_policy_decides_whether_a_removed_members_claim_goes() -> None:
    """Issue #15: claims left by a scale-down were kept silently; now it is the spec's say."""
    spec = parse_spec({"storage": {"scaleDownPolicy": "Delete", "reclaimPolicy": "Delete"}})
    sts = build_statefulset(REF, spec, token_secret="demo-token")
    policy = sts["spec"]["persistentVolumeClaimRetentionPolicy"]
    assert policy == {"whenDeleted": "Delete", "whenScaled": "Delete"}


def test_statefulset_shape() -> None:
    spec = parse_spec({"replicas": 4, "storage": {"size": "3Gi", "storageClassName": "fast"}})
    sts = build_statefulset(REF, spec, token_secret="demo-token")
    assert sts["metadata"]["namespace"] == "prod"
    s = sts["spec"]
    assert s["replicas"] == 4
    assert s["serviceName"] == "demo-headless"
    assert s["podManagementPolicy"] == "Parallel"
    assert s["updateStrategy"] == {"type": "OnDelete"}
    assert s["selector"]["matchLabels"] == {c.LABEL_NAME: "dvecdb", c.LABEL_CLUSTER: "demo"}
    assert s["selector"]["matchLabels"].items() <= s["template"]["metadata"]["labels"].items()
    claim = s["volumeClaimTemplates"][0]
    assert claim["metadata"]["name"] == c.DATA_VOLUME
    assert claim["spec"]["resources"]["requests"]["storage"] == "3Gi"
    assert claim["spec"]["storageClassName"] == "fast"
    assert s["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Retain",
        "whenScaled": "Retain",
    }
    ctr = container(sts)
    assert ctr["image"] == "dvecdb/node:0.1.0"
    assert "command" not in ctr  # the image's entry point is dvecdb-node
    assert ctr["args"] == [
        "--host",
        "0.0.0.0",
        "--port",
        "8080",
        "--data-dir",
        "/data",
        "--node-id",
        "$(POD_NAME)",
    ]
    assert {"name": c.DATA_VOLUME, "mountPath": "/data"} in ctr["volumeMounts"]


def test_statefulset_probes_use_health_and_readiness_endpoints() -> None:
    ctr = container(build_statefulset(REF, parse_spec({}), token_secret="t"))
    assert ctr["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert ctr["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert ctr["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert ctr["readinessProbe"]["httpGet"]["port"] == c.NODE_PORT_NAME


def test_statefulset_env_from_spec_and_token_secret() -> None:
    spec = parse_spec(
        {"node": {"fsync": "always", "defaultAck": "quorum", "hnsw": {"m": 24, "efSearch": 80}}}
    )
    values = env(build_statefulset(REF, spec, token_secret="my-token"))
    assert values["DVECDB_FSYNC"] == "always"
    assert values["DVECDB_DEFAULT_ACK"] == "quorum"
    assert values["DVECDB_HNSW_M"] == "24"
    assert values["DVECDB_HNSW_EF_SEARCH"] == "80"
    assert values["DVECDB_HNSW_EF_CONSTRUCTION"] == "200"
    assert values["DVECDB_CLUSTER_TOKEN"] == {
        "secretKeyRef": {"name": "my-token", "key": c.TOKEN_KEY}
    }
    assert values["POD_NAME"] == {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}


def test_statefulset_advertises_the_pod_ip() -> None:
    """Kubernetes expands $(POD_IP) only from variables defined earlier in the list."""
    names = [
        e["name"]
        for e in container(build_statefulset(REF, parse_spec({}), token_secret="t"))["env"]
    ]
    values = env(build_statefulset(REF, parse_spec({}), token_secret="t"))
    assert values["DVECDB_ADVERTISE_URL"] == "http://$(POD_IP):8080"
    assert names.index("POD_IP") < names.index("DVECDB_ADVERTISE_URL")


@pytest.mark.parametrize(
    ("mode", "key"),
    [
        ("required", "requiredDuringSchedulingIgnoredDuringExecution"),
        ("preferred", "preferredDuringSchedulingIgnoredDuringExecution"),
        ("none", None),
    ],
)
def test_anti_affinity_modes(mode: str, key: str | None) -> None:
    pod = build_statefulset(REF, parse_spec({"antiAffinity": mode}), token_secret="t")["spec"][
        "template"
    ]["spec"]
    if key is None:
        assert "affinity" not in pod
    else:
        assert list(pod["affinity"]["podAntiAffinity"]) == [key]


def test_resources_passed_through_and_replicas_override() -> None:
    resources = {"requests": {"cpu": "1", "memory": "2Gi"}}
    sts = build_statefulset(REF, parse_spec({"resources": resources}), token_secret="t", replicas=5)
    assert container(sts)["resources"] == resources
    assert sts["spec"]["replicas"] == 5
    assert "resources" not in container(build_statefulset(REF, parse_spec({}), token_secret="t"))


def test_services_validate_and_select_the_right_pods() -> None:
    headless, rw, ro = build_services(REF)
    for svc in (headless, rw, ro):
        validate(svc)
        assert svc["spec"]["ports"][0]["port"] == c.NODE_PORT
    assert headless["metadata"]["name"] == "demo-headless"
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True
    assert rw["metadata"]["name"] == "demo-rw"
    assert rw["spec"]["selector"][c.LABEL_ROLE] == c.ROLE_LEADER
    assert ro["metadata"]["name"] == "demo-ro"
    assert c.LABEL_ROLE not in ro["spec"]["selector"]
    assert ro["spec"]["selector"][c.LABEL_CLUSTER] == "demo"


def test_pdb_validates_and_allows_one_disruption() -> None:
    pdb = build_pdb(REF)
    validate(pdb)
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"][c.LABEL_CLUSTER] == "demo"


def test_secret_round_trips_a_fresh_token() -> None:
    token = new_token()
    assert len(token) >= 40 and token != new_token()
    secret = build_token_secret(REF, "demo-token", token)
    validate(secret)
    assert read_token(secret) == token
    assert base64.b64decode(secret["data"][c.TOKEN_KEY]).decode() == token
    assert read_token({"data": {}}) is None
    assert read_token({"data": {c.TOKEN_KEY: "%%%"}}) is None


def test_every_child_carries_common_labels() -> None:
    children = [
        build_statefulset(REF, parse_spec({}), token_secret="t"),
        *build_services(REF),
        build_pdb(REF),
        build_token_secret(REF, "x", "y"),
    ]
    for child in children:
        labels = child["metadata"]["labels"]
        assert labels[c.LABEL_MANAGED_BY] == c.MANAGER
        assert labels[c.LABEL_INSTANCE] == "demo"


@pytest.mark.parametrize(("name", "ordinal"), [("db-0", 0), ("my-db-12", 12), ("db", -1)])
def test_ordinal_of(name: str, ordinal: int) -> None:
    assert ordinal_of(name) == ordinal
