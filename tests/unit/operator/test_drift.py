"""Drift: live objects carry server defaults; only our own fields decide a re-apply."""

from __future__ import annotations

import pytest

from dvecdb_operator.drift import contains, drifted

pytestmark = pytest.mark.unit

DESIRED = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "db-rw", "labels": {"a": "1"}, "ownerReferences": [{"uid": "u"}]},
    "spec": {"selector": {"role": "leader"}, "ports": [{"port": 8080, "name": "http"}]},
}


def live(**spec_changes: object) -> dict[str, object]:
    spec = {
        "selector": {"role": "leader"},
        "ports": [{"port": 8080, "name": "http", "protocol": "TCP", "targetPort": 8080}],
        "clusterIP": "10.1.2.3",
        "sessionAffinity": "None",
        **spec_changes,
    }
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "db-rw",
            "labels": {"a": "1", "extra": "x"},
            "ownerReferences": [{"uid": "u", "kind": "DVecCluster"}],
            "resourceVersion": "9",
        },
        "spec": spec,
        "status": {},
    }


def test_server_defaults_are_not_drift() -> None:
    assert not drifted(live(), DESIRED)


def test_missing_object_is_drift() -> None:
    assert drifted(None, DESIRED)


@pytest.mark.parametrize(
    "change",
    [
        {"selector": {"role": "follower"}},
        {"selector": {}},
        {"ports": [{"port": 9090, "name": "http"}]},
        {"ports": []},
    ],
)
def test_edited_fields_are_drift(change: dict[str, object]) -> None:
    assert drifted(live(**change), DESIRED)


def test_removed_label_or_owner_is_drift() -> None:
    obj = live()
    obj["metadata"]["labels"] = {"extra": "x"}  # type: ignore[index]
    assert drifted(obj, DESIRED)
    obj = live()
    obj["metadata"]["ownerReferences"] = []  # type: ignore[index]
    assert drifted(obj, DESIRED)


@pytest.mark.parametrize(
    ("actual", "desired", "expected"),
    [
        (1, 1.0, True),
        (True, 1, False),
        ("1", 1, False),
        ({"a": 1, "b": 2}, {"a": 1}, True),
        ([1, 2], [1], False),
        (None, {}, False),
    ],
)
def test_contains(actual: object, desired: object, expected: bool) -> None:
    assert contains(actual, desired) is expected


@pytest.mark.parametrize(
    ("live_amounts", "expected"),
    [
        ({"cpu": "1500m", "memory": "1Gi"}, False),  # the API server's canonical forms
        ({"cpu": "1.5", "memory": "1024Mi"}, False),  # as asked
        ({"cpu": "2", "memory": "1Gi"}, True),  # a real change
        ({"cpu": "1500m", "memory": "1G"}, True),  # 1G is not 1Gi
        ({"cpu": "lots", "memory": "1Gi"}, True),  # unreadable: re-apply ours
    ],
)
def test_resource_quantities_compare_by_value(live_amounts: dict[str, str], expected: bool) -> None:
    """Stored quantities are canonicalised (2 -> "2", "1.5" -> "1500m"); that is not drift,
    or every reconcile would patch the StatefulSet again."""
    desired = {"limits": {"cpu": 1.5, "memory": "1024Mi"}}
    live = {"limits": live_amounts, "claims": []}
    assert (not contains(live, desired)) is expected


def test_quantity_text_elsewhere_still_compares_as_text() -> None:
    assert not contains({"image": "db:1.50"}, {"image": "db:1.5"})
    assert not contains({"labels": {"v": "1500m"}}, {"labels": {"v": "1.5"}})
