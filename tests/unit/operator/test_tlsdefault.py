"""An operator upgrade never turns TLS on (`tlsdefault`): the pure rule, then the record
written once against a fake API and what `reconcile_children` builds from it."""

from __future__ import annotations

from typing import Any

import pytest

from dvecdb_operator import tlsdefault as td
from dvecdb_operator import tlsplan
from dvecdb_operator.builders.common import ClusterRef
from dvecdb_operator.builders.statefulset import build_statefulset
from dvecdb_operator.reconcile import reconcile_children
from dvecdb_operator.spec import parse_spec
from tests.support.operator_fakes import FakeKube

pytestmark = pytest.mark.unit

REF = ClusterRef("db", "ns", 0, 1)
# What the operators before TLS left in a running cluster's status (status.py then).
OLD_STATUS = {
    "phase": "Healthy",
    "readyMembers": "3/3",
    "replicas": 3,
    "leader": "db-0",
    "epoch": 2,
    "members": [{"name": "db-0", "role": "leader", "ready": True, "lastSeq": 10}],
    "conditions": [{"type": "Ready", "status": "True", "reason": "Healthy", "message": ""}],
}


def sts(tls: bool) -> dict[str, Any]:
    spec = parse_spec({} if tls else {"tls": {"enabled": False}})
    return build_statefulset(REF, spec, auth_secret="t", tls=tlsplan.tls_mounts(REF, spec))


def test_the_first_default_follows_what_runs_then_the_status() -> None:
    assert td.first_default({}, []) == td.ENABLED  # a new cluster
    assert td.first_default(None, []) == td.ENABLED
    assert td.first_default({"kopf": {"progress": {}}}, []) == td.ENABLED  # kopf's only
    assert td.first_default(OLD_STATUS, []) == td.DISABLED  # an older operator ran it
    assert td.first_default({}, [sts(tls=False)]) == td.DISABLED  # plain HTTP runs
    # A TLS cluster whose record was lost keeps TLS, whatever its status says.
    assert td.first_default(OLD_STATUS, [sts(tls=True)]) == td.ENABLED


def test_choose_in_order_spec_off_then_explicit_sources_then_annotation_then_default() -> None:
    default = parse_spec({})
    assert td.choose(default, {}, td.ENABLED).enabled
    kept = td.choose(default, {}, td.DISABLED)
    assert not kept.enabled and kept.kept_off and td.ANNOTATION_TLS in kept.why
    # `enabled: true` cannot be told from the default: it does not opt a pre-TLS cluster in.
    assert td.choose(parse_spec({"tls": {"enabled": True}}), {}, td.DISABLED).kept_off
    on = {td.ANNOTATION_TLS: "enabled"}
    assert td.choose(default, on, td.DISABLED).enabled
    assert not td.choose(default, {td.ANNOTATION_TLS: "disabled"}, td.ENABLED).enabled
    for named in ({"secretName": "mine"}, {"issuerRef": {"name": "ca"}}):
        assert td.choose(parse_spec({"tls": named}), {}, td.DISABLED).enabled
    off = td.choose(parse_spec({"tls": {"enabled": False}}), on, td.ENABLED)
    assert not off.enabled and not off.kept_off


def test_the_effective_spec_only_changes_tls_enabled() -> None:
    spec = parse_spec({"replicas": 5})
    assert td.effective_spec(spec, td.TlsChoice(True, "")) is spec
    off = td.effective_spec(spec, td.TlsChoice(False, td.KEPT_OFF))
    assert not off.tls.enabled and off.replicas == 5 and tlsplan.tls_mounts(REF, off) is None


def cluster(status: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "dvecdb.io/v1alpha1",
        "kind": "DVecCluster",
        "metadata": {"name": "db", "namespace": "ns"},
        "spec": {"replicas": 3},
    }
    if status is not None:
        body["status"] = status
    return body


def member_env(kube: FakeKube) -> set[str]:
    template = kube.objects[("StatefulSet", "db")]["spec"]["template"]["spec"]
    return {v["name"] for v in template["containers"][0]["env"]}


async def test_a_cluster_left_by_an_older_operator_keeps_tls_off_until_annotated(
    events: list[tuple[str, str]],
) -> None:
    kube = FakeKube(cluster(dict(OLD_STATUS)))
    body = await kube.get_cluster("ns", "db")
    await reconcile_children(kube, body, parse_spec(body["spec"]))  # type: ignore[arg-type]
    assert kube.status["tlsDefault"] == "disabled"
    assert "DVECDB_TLS_CERT_FILE" not in member_env(kube)
    assert ("Secret", "db-tls") not in kube.objects and ("Secret", "db-ca") not in kube.objects
    assert kube.status["tls"]["enabled"] is False
    assert td.ANNOTATION_TLS in kube.status["tls"]["message"]
    assert [r for r, _ in events].count("TlsKeptOff") == 1

    # The next pass reads the record: no second Event, nothing else written.
    patches = len(kube.status_patches)
    body = await kube.get_cluster("ns", "db")
    await reconcile_children(kube, body, parse_spec(body["spec"]))  # type: ignore[arg-type]
    assert len(kube.status_patches) == patches and [r for r, _ in events].count("TlsKeptOff") == 1

    # The user opts in: certificates, then members started with them.
    await kube.patch_cluster_annotations("ns", "db", {td.ANNOTATION_TLS: "enabled"})
    body = await kube.get_cluster("ns", "db")
    await reconcile_children(kube, body, parse_spec(body["spec"]))  # type: ignore[arg-type]
    assert "DVECDB_TLS_CERT_FILE" in member_env(kube)
    assert ("Secret", "db-tls") in kube.objects
    assert kube.status["tls"]["enabled"] is True and kube.status["tls"]["mode"] == "generated"
    assert kube.status["tlsDefault"] == "disabled"  # the record itself never changes


async def test_a_new_cluster_is_recorded_tls_on_and_gets_tls(
    events: list[tuple[str, str]],
) -> None:
    kube = FakeKube(cluster())
    body = await kube.get_cluster("ns", "db")
    await reconcile_children(kube, body, parse_spec(body["spec"]))  # type: ignore[arg-type]
    assert kube.status["tlsDefault"] == "enabled"
    assert kube.status_patches[0] == {"tlsDefault": "enabled"}  # before anything else
    assert "DVECDB_TLS_CERT_FILE" in member_env(kube)
    assert ("Secret", "db-tls") in kube.objects
    assert "TlsKeptOff" not in [r for r, _ in events]


async def test_a_stale_body_reads_the_record_another_pass_wrote(
    events: list[tuple[str, str]],
) -> None:
    kube = FakeKube(cluster())
    stale = await kube.get_cluster("ns", "db")
    await reconcile_children(kube, stale, parse_spec({}))  # type: ignore[arg-type]
    writes = len(kube.status_patches)
    # The monitor's first pass held the object from before the create handler's record:
    # it finds the TLS StatefulSet's record, writes nothing, turns nothing off.
    await reconcile_children(kube, stale, parse_spec({}))  # type: ignore[arg-type]
    assert kube.status["tlsDefault"] == "enabled" and "DVECDB_TLS_CERT_FILE" in member_env(kube)
    assert [p for p in kube.status_patches[writes:] if "tlsDefault" in p] == []
