"""Builders: every manifest validates against the Kubernetes OpenAPI schema (strict), and
carries what the design asks for."""

from __future__ import annotations

import base64
from typing import Any

import kubernetes_validate
import pytest

from dvecdb_operator import constants as c
from dvecdb_operator.builders.common import ClusterRef, ordinal_of
from dvecdb_operator.builders.networkpolicy import OperatorIdentity, build_network_policy
from dvecdb_operator.builders.nodedefaults import build_node_defaults
from dvecdb_operator.builders.pdb import build_pdb
from dvecdb_operator.builders.router import router_labels
from dvecdb_operator.builders.secret import (
    added_keys_patch,
    build_auth_secret,
    missing_values,
    new_token,
    read_cluster_token,
    secret_values,
)
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
    validate(build_statefulset(REF, parse_spec(raw), auth_secret="demo-token"))


def test_scale_down_policy_decides_whether_a_removed_members_claim_goes() -> None:
    """Issue #15: claims left by a scale-down were kept silently; now it is the spec's say."""
    spec = parse_spec({"storage": {"scaleDownPolicy": "Delete", "reclaimPolicy": "Delete"}})
    sts = build_statefulset(REF, spec, auth_secret="demo-token")
    policy = sts["spec"]["persistentVolumeClaimRetentionPolicy"]
    assert policy == {"whenDeleted": "Delete", "whenScaled": "Delete"}


def test_statefulset_shape() -> None:
    spec = parse_spec({"replicas": 4, "storage": {"size": "3Gi", "storageClassName": "fast"}})
    sts = build_statefulset(REF, spec, auth_secret="demo-token")
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
    ctr = container(build_statefulset(REF, parse_spec({}), auth_secret="t"))
    assert ctr["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert ctr["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert ctr["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert ctr["readinessProbe"]["httpGet"]["port"] == c.NODE_PORT_NAME


def test_statefulset_env_from_spec() -> None:
    spec = parse_spec(
        {"node": {"fsync": "always", "defaultAck": "quorum", "hnsw": {"m": 24, "efSearch": 80}}}
    )
    values = env(build_statefulset(REF, spec, auth_secret="my-token"))
    assert values["DVECDB_FSYNC"] == "always"
    assert values["DVECDB_DEFAULT_ACK"] == "quorum"
    assert values["DVECDB_HNSW_M"] == "24"
    assert values["DVECDB_HNSW_EF_SEARCH"] == {
        "configMapKeyRef": {"name": "demo-node-defaults", "key": "DVECDB_HNSW_EF_SEARCH"}
    }
    defaults = build_node_defaults(REF, spec)
    validate(defaults)
    assert defaults["metadata"]["name"] == "demo-node-defaults"
    assert defaults["data"] == {"DVECDB_HNSW_EF_SEARCH": "80"}
    assert values["DVECDB_HNSW_EF_CONSTRUCTION"] == "200"
    assert values["POD_NAME"] == {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}


def test_a_new_ef_search_changes_the_defaults_configmap_not_the_pod_template() -> None:
    """The StatefulSet's revision stays, so no member restarts for it (issue #15)."""
    before, after = parse_spec({}), parse_spec({"node": {"hnsw": {"efSearch": 300}}})
    assert build_statefulset(REF, before, auth_secret="t") == build_statefulset(
        REF, after, auth_secret="t"
    )
    assert build_node_defaults(REF, before) != build_node_defaults(REF, after)


def test_members_mount_the_auth_secret_and_read_keys_from_it_not_from_env() -> None:
    """Keys in variables would need a restart to rotate; a mounted Secret is updated in place
    and the node re-reads the folder (DVECDB_SECRETS_DIR)."""
    sts = build_statefulset(REF, parse_spec({}), auth_secret="my-keys")
    pod = sts["spec"]["template"]["spec"]
    values = env(sts)
    assert values["DVECDB_SECRETS_DIR"] == c.AUTH_DIR
    assert not {"DVECDB_CLUSTER_TOKEN", "DVECDB_API_KEY", "DVECDB_READ_ONLY_KEY"} & set(values)
    assert {"name": c.AUTH_VOLUME, "secret": {"secretName": "my-keys", "defaultMode": 0o440}} in (
        pod["volumes"]
    )
    mount = {"name": c.AUTH_VOLUME, "mountPath": c.AUTH_DIR, "readOnly": True}
    assert mount in container(sts)["volumeMounts"]


def test_statefulset_advertises_the_pod_ip() -> None:
    """Kubernetes expands $(POD_IP) only from variables defined earlier in the list."""
    names = [
        e["name"] for e in container(build_statefulset(REF, parse_spec({}), auth_secret="t"))["env"]
    ]
    values = env(build_statefulset(REF, parse_spec({}), auth_secret="t"))
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
    pod = build_statefulset(REF, parse_spec({"antiAffinity": mode}), auth_secret="t")["spec"][
        "template"
    ]["spec"]
    if key is None:
        assert "affinity" not in pod
    else:
        assert list(pod["affinity"]["podAntiAffinity"]) == [key]


def test_resources_passed_through_and_replicas_override() -> None:
    resources = {"requests": {"cpu": "1", "memory": "2Gi"}}
    sts = build_statefulset(REF, parse_spec({"resources": resources}), auth_secret="t", replicas=5)
    assert container(sts)["resources"] == resources
    assert sts["spec"]["replicas"] == 5
    assert "resources" not in container(build_statefulset(REF, parse_spec({}), auth_secret="t"))


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


def test_a_new_auth_secret_holds_three_distinct_random_keys() -> None:
    token = new_token()
    assert len(token) >= 40 and token != new_token()
    values = missing_values({})
    assert set(values) == {c.API_KEY, c.READ_ONLY_KEY, c.CLUSTER_TOKEN_KEY}
    assert len(set(values.values())) == 3
    secret = build_auth_secret(REF, "demo-token", values)
    validate(secret)
    assert secret_values(secret) == values
    assert read_cluster_token(secret) == values[c.CLUSTER_TOKEN_KEY]


def test_only_missing_keys_are_added_and_a_set_value_is_never_replaced() -> None:
    present = {c.API_KEY: "mine", c.READ_ONLY_KEY: ""}
    assert missing_values(present, generate=lambda: "fresh") == {c.CLUSTER_TOKEN_KEY: "fresh"}
    assert missing_values({c.API_KEY: "a", c.READ_ONLY_KEY: "r", c.CLUSTER_TOKEN_KEY: "t"}) == {}


def test_the_legacy_token_becomes_the_cluster_token() -> None:
    """A Secret an older operator wrote holds only `token`: members keep trusting each other
    while they move to the mounted Secret."""
    added = missing_values({c.LEGACY_TOKEN_KEY: "old"}, generate=lambda: "new")
    assert added == {c.API_KEY: "new", c.READ_ONLY_KEY: "new", c.CLUSTER_TOKEN_KEY: "old"}
    legacy = build_auth_secret(REF, "demo-token", {c.LEGACY_TOKEN_KEY: "old"})
    assert read_cluster_token(legacy) == "old"


def test_the_operator_sends_the_first_of_several_cluster_tokens() -> None:
    secret = build_auth_secret(REF, "s", {c.CLUSTER_TOKEN_KEY: " new , old\n"})
    assert read_cluster_token(secret) == "new"
    assert read_cluster_token(build_auth_secret(REF, "s", {c.CLUSTER_TOKEN_KEY: ""})) == ""
    assert read_cluster_token({"data": {}}) is None
    assert read_cluster_token(None) is None
    assert read_cluster_token({"data": {c.CLUSTER_TOKEN_KEY: "%%%"}}) is None


def test_adding_keys_is_conditional_on_the_version_read() -> None:
    patch = added_keys_patch({c.API_KEY: "k"}, "42")
    assert patch["metadata"] == {"resourceVersion": "42"}
    assert base64.b64decode(patch["data"][c.API_KEY]).decode() == "k"


OPERATOR = OperatorIdentity(namespace="dvecdb-system", labels={"app.kubernetes.io/name": "op"})


def _peers(policy: dict[str, Any]) -> list[dict[str, Any]]:
    [rule] = policy["spec"]["ingress"]
    assert rule["ports"] == [{"port": c.NODE_PORT, "protocol": "TCP"}]
    return list(rule["from"])


def test_network_policy_admits_members_operator_and_the_namespace_by_default() -> None:
    policy = build_network_policy(REF, operator=OPERATOR)
    validate(policy)
    assert policy["spec"]["podSelector"] == {
        "matchLabels": {c.LABEL_NAME: "dvecdb", c.LABEL_CLUSTER: "demo"}
    }
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert _peers(policy) == [
        {"podSelector": {"matchLabels": {c.LABEL_NAME: "dvecdb", c.LABEL_CLUSTER: "demo"}}},
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "dvecdb-system"}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "op"}},
        },
        {"podSelector": {"matchLabels": router_labels(REF)}},  # the cluster's client endpoint
        {"podSelector": {}},
    ]


def test_network_policy_allow_from_replaces_the_namespace_default() -> None:
    router = {"podSelector": {"matchLabels": {"app": "router"}}}
    office = {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}
    policy = build_network_policy(REF, operator=OPERATOR, allow_from=[router, office])
    validate(policy)
    assert _peers(policy)[3:] == [router, office]


def test_network_policy_never_has_an_empty_from_which_would_admit_everyone() -> None:
    """With no operator identity and `allowFrom: []`, only the members and routers remain."""
    policy = build_network_policy(REF, operator=OperatorIdentity(), allow_from=[])
    validate(policy)
    assert _peers(policy) == [
        {"podSelector": {"matchLabels": {c.LABEL_NAME: "dvecdb", c.LABEL_CLUSTER: "demo"}}},
        {"podSelector": {"matchLabels": router_labels(REF)}},
    ]


def test_every_child_carries_common_labels() -> None:
    children = [
        build_statefulset(REF, parse_spec({}), auth_secret="t"),
        *build_services(REF),
        build_pdb(REF),
        build_auth_secret(REF, "x", {"apiKey": "y"}),
        build_network_policy(REF, operator=OPERATOR),
    ]
    for child in children:
        labels = child["metadata"]["labels"]
        assert labels[c.LABEL_MANAGED_BY] == c.MANAGER
        assert labels[c.LABEL_INSTANCE] == "demo"


@pytest.mark.parametrize(("name", "ordinal"), [("db-0", 0), ("my-db-12", 12), ("db", -1)])
def test_ordinal_of(name: str, ordinal: int) -> None:
    assert ordinal_of(name) == ordinal
