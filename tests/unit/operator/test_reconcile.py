"""Children reconciliation: created once and owned, re-applied only on drift, optional
children added and removed with the spec, the StatefulSet kept above the leader."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from dvecdb_operator import constants as c
from dvecdb_operator import kube as kube_api
from dvecdb_operator.builders.secret import read_cluster_token, secret_values
from dvecdb_operator.reconcile import reconcile_children
from dvecdb_operator.spec import parse_spec
from tests.support.operator_fakes import FakeKube

pytestmark = pytest.mark.unit


def make(spec: dict[str, Any] | None = None, status: dict[str, Any] | None = None) -> FakeKube:
    return FakeKube(
        {
            "apiVersion": c.API_VERSION,
            "kind": c.KIND,
            "metadata": {"name": "db", "namespace": "ns"},
            "spec": spec or {},
            "status": status or {},
        }
    )


async def run(kube: FakeKube) -> list[str]:
    body = await kube.get_cluster("ns", "db")
    return await reconcile_children(kube, body, parse_spec(body["spec"]))  # type: ignore[arg-type]


def kinds(kube: FakeKube) -> set[tuple[str, str]]:
    return set(kube.objects)


async def test_first_pass_creates_every_child_owned_by_the_cluster(
    events: list[tuple[str, str]],
) -> None:
    kube = make()
    written = await run(kube)
    assert written == [
        "ConfigMap/db-node-defaults",
        "StatefulSet/db",
        "Service/db-headless",
        "Service/db-rw",
        "Service/db-ro",
        "Deployment/db-router",
        "Service/db",
        "NetworkPolicy/db",
        "PodDisruptionBudget/db",
        "PodDisruptionBudget/db-router",
    ]
    assert kinds(kube) == {
        ("Secret", "db-token"),
        ("ConfigMap", "db-node-defaults"),
        ("StatefulSet", "db"),
        ("Service", "db-headless"),
        ("Service", "db-rw"),
        ("Service", "db-ro"),
        ("Deployment", "db-router"),
        ("Service", "db"),
        ("PodDisruptionBudget", "db-router"),
        ("NetworkPolicy", "db"),
        ("PodDisruptionBudget", "db"),
        # spec.tls is on by default: the kept CA (owned by no one) and the members' certificates.
        ("Secret", "db-ca"),
        ("Secret", "db-tls"),
    }
    assert "ownerReferences" not in kube.objects[("Secret", "db-ca")]["metadata"]
    for key, obj in kube.objects.items():
        if key == ("Secret", "db-ca"):
            continue
        owner = obj["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["name"], owner["uid"]) == (c.KIND, "db", "uid-1")
        assert owner["controller"] is True
    keys = secret_values(kube.objects[("Secret", "db-token")])
    assert set(keys) == {c.API_KEY, c.READ_ONLY_KEY, c.CLUSTER_TOKEN_KEY} and all(keys.values())
    assert ("SecretCreated", "auth Secret db-token with new keys") in events


async def test_second_pass_is_a_no_op_and_keeps_the_keys(events: list[tuple[str, str]]) -> None:
    kube = make()
    await run(kube)
    keys = secret_values(kube.objects[("Secret", "db-token")])
    assert await run(kube) == []
    assert secret_values(kube.objects[("Secret", "db-token")]) == keys


def _secret(name: str, values: dict[str, str]) -> dict[str, Any]:
    data = {k: base64.b64encode(v.encode()).decode() for k, v in values.items()}
    meta = {"name": name, "namespace": "ns", "resourceVersion": "7"}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": meta, "data": data}


async def test_a_users_secret_gets_the_missing_keys_and_keeps_its_own(
    events: list[tuple[str, str]],
) -> None:
    kube = make({"auth": {"secretName": "mine"}})
    kube.objects[("Secret", "mine")] = _secret("mine", {c.API_KEY: "my-key", c.READ_ONLY_KEY: ""})
    await run(kube)
    secret = kube.objects[("Secret", "mine")]
    keys = secret_values(secret)
    assert keys[c.API_KEY] == "my-key" and keys[c.READ_ONLY_KEY] == ""
    assert len(keys[c.CLUSTER_TOKEN_KEY]) >= 40
    assert "ownerReferences" not in secret["metadata"]  # the user's, not adopted
    assert ("SecretKeysAdded", "auth Secret mine: added clusterToken") in events
    await run(kube)
    assert secret_values(kube.objects[("Secret", "mine")]) == keys


async def test_a_legacy_token_secret_keeps_its_token_as_the_cluster_token(
    events: list[tuple[str, str]],
) -> None:
    kube = make()
    kube.objects[("Secret", "db-token")] = _secret("db-token", {c.LEGACY_TOKEN_KEY: "old"})
    await run(kube)
    secret = kube.objects[("Secret", "db-token")]
    assert read_cluster_token(secret) == "old"
    assert secret_values(secret)[c.LEGACY_TOKEN_KEY] == "old"


async def test_keys_are_not_added_over_a_concurrent_edit(events: list[tuple[str, str]]) -> None:
    """The patch carries the resourceVersion read: a Secret changed meanwhile is left alone
    (the next pass reads it again) instead of getting a second, different token."""
    kube = make()
    kube.objects[("Secret", "db-token")] = _secret("db-token", {c.API_KEY: "k"})
    real_get = kube.get

    async def stale_get(*args: Any) -> dict[str, Any] | None:
        found = await real_get(*args)
        if found and found["kind"] == "Secret":
            found["metadata"]["resourceVersion"] = "6"
        return found

    kube.get = stale_get  # type: ignore[method-assign]
    await run(kube)
    assert secret_values(kube.objects[("Secret", "db-token")]) == {c.API_KEY: "k"}
    assert not [e for e in events if e[0] == "SecretKeysAdded"]


async def test_edited_child_is_patched_back(events: list[tuple[str, str]]) -> None:
    kube = make()
    await run(kube)
    kube.objects[("Service", "db-rw")]["spec"]["selector"] = {"app": "hijacked"}
    assert await run(kube) == ["Service/db-rw"]
    assert kube.objects[("Service", "db-rw")]["spec"]["selector"][c.LABEL_ROLE] == "leader"


async def test_an_absent_user_named_secret_is_created_owned_and_mounted(
    events: list[tuple[str, str]],
) -> None:
    kube = make({"auth": {"secretName": "mine"}})
    await run(kube)
    secret = kube.objects[("Secret", "mine")]
    assert secret["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    volumes = kube.objects[("StatefulSet", "db")]["spec"]["template"]["spec"]["volumes"]
    assert volumes[0]["secret"]["secretName"] == "mine"


async def test_the_network_policy_follows_the_spec(events: list[tuple[str, str]]) -> None:
    kube = make({"networkPolicy": {"allowFrom": [{"ipBlock": {"cidr": "10.9.0.0/16"}}]}})
    await run(kube)
    rule = kube.objects[("NetworkPolicy", "db")]["spec"]["ingress"][0]
    assert rule["from"][-1] == {"ipBlock": {"cidr": "10.9.0.0/16"}}
    kube.cluster["spec"] = {"networkPolicy": {"enabled": False}}
    await run(kube)
    assert ("NetworkPolicy", "db") not in kinds(kube)


async def test_monitoring_children_follow_the_spec(events: list[tuple[str, str]]) -> None:
    kube = make(
        {"monitoring": {"serviceMonitor": True, "prometheusRule": True, "grafanaDashboard": True}}
    )
    await run(kube)
    assert {("ServiceMonitor", "db"), ("PrometheusRule", "db"), ("ConfigMap", "db-dashboard")} <= (
        kinds(kube)
    )
    kube.cluster["spec"] = {"podDisruptionBudget": False}
    await run(kube)
    remaining = kinds(kube)
    assert ("ServiceMonitor", "db") not in remaining
    assert ("PrometheusRule", "db") not in remaining
    assert ("ConfigMap", "db-dashboard") not in remaining
    assert ("PodDisruptionBudget", "db") not in remaining


async def test_missing_monitoring_crd_does_not_block_the_database(
    events: list[tuple[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    kube = make({"monitoring": {"serviceMonitor": True}})
    real_apply = kube.apply

    async def apply(manifest: dict[str, Any]) -> dict[str, Any]:
        if manifest["kind"] == "ServiceMonitor":
            raise kube_api.NotFoundError(404, "the server could not find the requested resource")
        return await real_apply(manifest)

    monkeypatch.setattr(kube, "apply", apply)
    written = await run(kube)
    assert "StatefulSet/db" in written and "ServiceMonitor/db" not in written
    assert any(reason == "ApplyFailed" for reason, _ in events)


async def test_scale_down_keeps_the_leaders_ordinal(events: list[tuple[str, str]]) -> None:
    kube = make({"replicas": 2}, {"leader": "db-2"})
    await run(kube)
    assert kube.objects[("StatefulSet", "db")]["spec"]["replicas"] == 3
    kube.cluster["status"]["leader"] = "db-0"
    await run(kube)
    assert kube.objects[("StatefulSet", "db")]["spec"]["replicas"] == 2


async def test_a_leader_change_in_flight_keeps_the_statefulset_up_to_its_members(
    events: list[tuple[str, str]],
) -> None:
    """While a change is in flight no leader is recorded at its epoch: the one it replaces
    and its candidate still count, or a scale-down would take them mid-switchover."""
    kube = make({"replicas": 2}, {"failover": {"from": "db-2", "candidate": "db-1"}})
    await run(kube)
    assert kube.objects[("StatefulSet", "db")]["spec"]["replicas"] == 3
