"""Children reconciliation: created once and owned, re-applied only on drift, optional
children added and removed with the spec, the StatefulSet kept above the leader."""

from __future__ import annotations

from typing import Any

import pytest

from dvecdb_operator import constants as c
from dvecdb_operator import kube as kube_api
from dvecdb_operator.builders.secret import read_token
from dvecdb_operator.reconcile import reconcile_children
from dvecdb_operator.spec import parse_spec
from tests.support.operator_fakes import FakeKube

pytestmark = pytest.mark.unit


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    seen: list[tuple[str, str]] = []
    monkeypatch.setattr(
        kube_api,
        "post_event",
        lambda body, *, reason, message, warning=False: seen.append((reason, message)),
    )
    return seen


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
        "StatefulSet/db",
        "Service/db-headless",
        "Service/db-rw",
        "Service/db-ro",
        "PodDisruptionBudget/db",
    ]
    assert kinds(kube) == {
        ("Secret", "db-token"),
        ("StatefulSet", "db"),
        ("Service", "db-headless"),
        ("Service", "db-rw"),
        ("Service", "db-ro"),
        ("PodDisruptionBudget", "db"),
    }
    for obj in kube.objects.values():
        owner = obj["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["name"], owner["uid"]) == (c.KIND, "db", "uid-1")
        assert owner["controller"] is True
    assert read_token(kube.objects[("Secret", "db-token")])
    assert ("SecretCreated", "cluster token Secret db-token") in events


async def test_second_pass_is_a_no_op_and_keeps_the_token(events: list[tuple[str, str]]) -> None:
    kube = make()
    await run(kube)
    token = read_token(kube.objects[("Secret", "db-token")])
    assert await run(kube) == []
    assert read_token(kube.objects[("Secret", "db-token")]) == token


async def test_edited_child_is_patched_back(events: list[tuple[str, str]]) -> None:
    kube = make()
    await run(kube)
    kube.objects[("Service", "db-rw")]["spec"]["selector"] = {"app": "hijacked"}
    assert await run(kube) == ["Service/db-rw"]
    assert kube.objects[("Service", "db-rw")]["spec"]["selector"][c.LABEL_ROLE] == "leader"


async def test_user_named_secret_is_created_but_not_owned(events: list[tuple[str, str]]) -> None:
    kube = make({"auth": {"secretName": "mine"}})
    await run(kube)
    secret = kube.objects[("Secret", "mine")]
    assert "ownerReferences" not in secret["metadata"]
    env = kube.objects[("StatefulSet", "db")]["spec"]["template"]["spec"]["containers"][0]["env"]
    token_env = next(e for e in env if e["name"] == "DVECDB_CLUSTER_TOKEN")
    assert token_env["valueFrom"]["secretKeyRef"]["name"] == "mine"


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


async def test_storage_change_keeps_existing_claims_and_warns(
    events: list[tuple[str, str]],
) -> None:
    kube = make({"storage": {"size": "1Gi"}})
    await run(kube)
    kube.cluster["spec"] = {"storage": {"size": "5Gi"}}
    await run(kube)
    claim = kube.objects[("StatefulSet", "db")]["spec"]["volumeClaimTemplates"][0]
    assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
    # Said in plain quantities (issue #15: the Event printed Python dicts).
    assert (
        "StorageUnchanged",
        "storage.size 5Gi not applied: the existing claims keep 1Gi (the operator does not grow"
        " claims yet; a StatefulSet's claim template cannot change)",
    ) in events


async def test_a_leader_change_in_flight_keeps_the_statefulset_up_to_its_members(
    events: list[tuple[str, str]],
) -> None:
    """While a change is in flight no leader is recorded at its epoch: the one it replaces
    and its candidate still count, or a scale-down would take them mid-switchover."""
    kube = make({"replicas": 2}, {"failover": {"from": "db-2", "candidate": "db-1"}})
    await run(kube)
    assert kube.objects[("StatefulSet", "db")]["spec"]["replicas"] == 3
