"""The default ef_search through the node-defaults ConfigMap: a StatefulSet made by an older
operator (a literal value) is not rolled for it; the next rollout that happens anyway moves it."""

from __future__ import annotations

from typing import Any

import pytest

from dvecdb_operator import constants as c
from dvecdb_operator import kube as kube_api
from dvecdb_operator.reconcile import reconcile_children
from dvecdb_operator.spec import parse_spec
from tests.support.operator_fakes import FakeKube

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kube_api, "post_event", lambda *a, **k: None)


def make(spec: dict[str, Any]) -> FakeKube:
    return FakeKube(
        {
            "apiVersion": c.API_VERSION,
            "kind": c.KIND,
            "metadata": {"name": "db", "namespace": "ns"},
            "spec": spec,
            "status": {},
        }
    )


async def run(kube: FakeKube) -> list[str]:
    body = await kube.get_cluster("ns", "db")
    return await reconcile_children(kube, body, parse_spec(body["spec"]))  # type: ignore[arg-type]


def ef_entry(kube: FakeKube) -> dict[str, Any]:
    sts = kube.objects[("StatefulSet", "db")]
    env = sts["spec"]["template"]["spec"]["containers"][0]["env"]
    return dict(next(e for e in env if e["name"] == "DVECDB_HNSW_EF_SEARCH"))


async def test_an_older_operators_literal_stays_until_a_rollout_happens_anyway() -> None:
    kube = make({"image": "node:1"})
    await run(kube)
    # As an operator before the ConfigMap rendered it:
    entry = ef_entry(kube)
    assert "valueFrom" in entry
    env = kube.objects[("StatefulSet", "db")]["spec"]["template"]["spec"]["containers"][0]["env"]
    env[env.index(entry)] = {"name": "DVECDB_HNSW_EF_SEARCH", "value": "50"}

    kube.cluster["spec"] = {"image": "node:1", "node": {"hnsw": {"efSearch": 120}}}
    written = await run(kube)
    assert "StatefulSet/db" not in written  # no new revision: no member restarts
    assert ef_entry(kube) == {"name": "DVECDB_HNSW_EF_SEARCH", "value": "50"}
    configmap = kube.objects[("ConfigMap", "db-node-defaults")]
    assert configmap["data"] == {"DVECDB_HNSW_EF_SEARCH": "120"}

    kube.cluster["spec"]["image"] = "node:2"  # a rollout comes anyway: the entry moves
    assert "StatefulSet/db" in await run(kube)
    assert ef_entry(kube)["valueFrom"]["configMapKeyRef"]["name"] == "db-node-defaults"


async def test_a_new_cluster_changes_nothing_in_its_statefulset_for_a_new_ef() -> None:
    kube = make({})
    await run(kube)
    kube.cluster["spec"] = {"node": {"hnsw": {"efSearch": 300}}}
    assert await run(kube) == ["ConfigMap/db-node-defaults"]
