"""Growing `spec.storage.size` (issue #15): the decision, and the reconciliation's calls
against a fake API server that holds the claims and StorageClasses."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from dvecdb_operator import constants as c
from dvecdb_operator import kube as kube_api
from dvecdb_operator.reconcile import reconcile_children
from dvecdb_operator.spec import parse_spec
from dvecdb_operator.storagegrowth import Claim, member_claims, plan
from tests.support.operator_fakes import FakeKube

pytestmark = pytest.mark.unit


def claims(*sizes: str, klass: str | None = "fast") -> list[Claim]:
    return [Claim(f"data-db-{i}", size, klass) for i, size in enumerate(sizes)]


def test_claims_below_the_size_grow_then_the_template_is_recreated() -> None:
    step = plan("5Gi", "1Gi", claims("1Gi", "5Gi", "1024Mi"), {"fast": True})
    assert step.grow == ("data-db-0", "data-db-2") and step.recreate_statefulset
    assert step.blocked is None


def test_equal_quantities_in_other_units_are_not_growth() -> None:
    step = plan("1Gi", "1024Mi", claims("1024Mi"), {"fast": True})
    assert step.grow == () and not step.recreate_statefulset and step.blocked is None


@pytest.mark.parametrize(
    ("found", "klass", "why"),
    [
        ({"fast": False}, "fast", "StorageClass fast does not allow volume expansion"),
        ({}, "fast", "StorageClass fast does not exist"),
        ({}, None, "data-db-0 names no StorageClass"),
    ],
)
def test_a_class_that_cannot_expand_blocks_everything_and_says_why(
    found: dict[str, bool | None], klass: str | None, why: str
) -> None:
    step = plan("5Gi", "1Gi", claims("1Gi", "1Gi", klass=klass), found)
    assert step.grow == () and not step.recreate_statefulset
    assert step.blocked is not None and why in step.blocked
    assert "storage.size 5Gi cannot be applied, the claims keep 1Gi" in step.blocked


def test_shrinking_is_refused() -> None:
    step = plan("1Gi", "5Gi", claims("5Gi"), {"fast": True})
    assert step.blocked is not None and "cannot shrink" in step.blocked


def test_only_the_statefulsets_own_claims_count() -> None:
    items = [
        {"metadata": {"name": n}, "spec": {"resources": {"requests": {"storage": "1Gi"}}}}
        for n in ("data-db-0", "data-db-1", "data-dbx-0", "data-db-0-old", "other-db-0")
    ]
    assert [m.name for m in member_claims(items, "db")] == ["data-db-0", "data-db-1"]


class StorageKube(FakeKube):
    """FakeKube with claims, StorageClasses and orphan deletion of the StatefulSet."""

    def __init__(self, cluster: dict[str, Any], expandable: bool | None) -> None:
        super().__init__(cluster)
        self.classes = {} if expandable is None else {"fast": {"allowVolumeExpansion": expandable}}
        self.delete_bodies: list[Any] = []

    def add_claims(self, count: int, size: str) -> None:
        for i in range(count):
            self.objects[("PersistentVolumeClaim", f"data-db-{i}")] = {
                "metadata": {"name": f"data-db-{i}", "namespace": "ns"},
                "spec": {
                    "storageClassName": "fast",
                    "resources": {"requests": {"storage": size}},
                },
            }

    async def request(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        if method == "GET" and path.endswith("/persistentvolumeclaims"):
            items = [
                copy.deepcopy(o)
                for (kind, _), o in self.objects.items()
                if kind == "PersistentVolumeClaim"
            ]
            return {"items": items}
        if method == "GET" and "/storageclasses/" in path:
            name = path.rsplit("/", 1)[-1]
            if name not in self.classes:
                raise kube_api.NotFoundError(404, name)
            return dict(self.classes[name])
        if method == "DELETE":
            self.delete_bodies.append(kw.get("body"))
        return await super().request(method, path, **kw)


def make(expandable: bool | None) -> StorageKube:
    return StorageKube(
        {
            "apiVersion": c.API_VERSION,
            "kind": c.KIND,
            "metadata": {"name": "db", "namespace": "ns"},
            "spec": {"storage": {"size": "1Gi", "storageClassName": "fast"}},
            "status": {},
        },
        expandable,
    )


async def run(kube: FakeKube) -> list[str]:
    body = await kube.get_cluster("ns", "db")
    return await reconcile_children(kube, body, parse_spec(body["spec"]))  # type: ignore[arg-type]


def template(kube: FakeKube) -> str:
    sts = kube.objects[("StatefulSet", "db")]
    return str(sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"])


def claim_size(kube: FakeKube, i: int) -> str:
    claim = kube.objects[("PersistentVolumeClaim", f"data-db-{i}")]
    return str(claim["spec"]["resources"]["requests"]["storage"])


async def test_growth_patches_each_claim_and_recreates_the_statefulset_orphaning_pods(
    events: list[tuple[str, str]],
) -> None:
    kube = make(expandable=True)
    await run(kube)
    kube.objects[("StatefulSet", "db")]["metadata"].update(uid="sts-1", resourceVersion="7")
    kube.add_claims(3, "1Gi")
    assert await run(kube) == []  # nothing to grow: no claim read beyond the template
    kube.cluster["spec"]["storage"]["size"] = "5Gi"
    written = await run(kube)
    assert [claim_size(kube, i) for i in range(3)] == ["5Gi"] * 3
    assert ("StatefulSet", "db") not in kube.objects and "StatefulSet/db" not in written
    [options] = kube.delete_bodies
    assert options["propagationPolicy"] == "Orphan"
    assert options["preconditions"] == {"uid": "sts-1", "resourceVersion": "7"}
    reasons = [r for r, _ in events]
    assert "StorageExpanding" in reasons and "StatefulSetRecreated" in reasons
    record = kube.status["storage"]
    assert (record["requested"], record["size"], record["message"]) == ("5Gi", "5Gi", "")
    # The next pass creates it again with the new claim template.
    assert "StatefulSet/db" in await run(kube)
    assert template(kube) == "5Gi"
    assert await run(kube) == []  # and then it is steady


async def test_a_class_without_expansion_changes_nothing_and_says_so(
    events: list[tuple[str, str]],
) -> None:
    kube = make(expandable=False)
    await run(kube)
    kube.add_claims(2, "1Gi")
    kube.cluster["spec"]["storage"]["size"] = "5Gi"
    await run(kube)
    assert [claim_size(kube, i) for i in range(2)] == ["1Gi", "1Gi"]
    assert template(kube) == "1Gi" and kube.delete_bodies == []
    record = kube.status["storage"]
    assert (record["requested"], record["size"]) == ("5Gi", "1Gi")
    assert "StorageClass fast does not allow volume expansion" in record["message"]
    assert ("StorageNotExpandable", record["message"]) in events
    patches = len(kube.status_patches)
    await run(kube)
    assert len(kube.status_patches) == patches  # the same record is not written again
    # Once the class allows it, the next pass grows everything.
    kube.classes["fast"]["allowVolumeExpansion"] = True
    await run(kube)
    assert [claim_size(kube, i) for i in range(2)] == ["5Gi", "5Gi"]
    assert kube.status["storage"]["message"] == ""
