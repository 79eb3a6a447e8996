"""`livesettings`: when the operator sweeps a new default ef into live collections, what it
records in `status.efSearch`, and what it says when a leader refuses."""

from __future__ import annotations

from typing import Any

import pytest

from dvecdb_client import NodeError
from dvecdb_operator import constants as c
from dvecdb_operator import kube as kube_api
from dvecdb_operator import livesettings
from tests.support.operator_fakes import FakeKube

pytestmark = pytest.mark.unit
NOW = "2026-11-30T18:00:00Z"


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, bool]]:
    seen: list[tuple[str, str, bool]] = []
    monkeypatch.setattr(
        kube_api,
        "post_event",
        lambda body, *, reason, message, warning=False: seen.append((reason, message, warning)),
    )
    return seen


class Leader:
    """A leader's collections API: PATCHes change the default ef; `fail_on` refuses one."""

    def __init__(self, efs: dict[str, int], fail_on: str | None = None) -> None:
        self.efs = dict(efs)
        self.fail_on = fail_on
        self.patched: list[tuple[str, int]] = []

    async def list_collections(self) -> list[dict[str, Any]]:
        return [{"name": n, "hnsw": {"ef_search": ef}} for n, ef in self.efs.items()]

    async def update_collection(
        self, name: str, *, ef_search: int, ack: str | None = None
    ) -> dict[str, Any]:
        if name == self.fail_on:
            raise NodeError(503, "lease_expired", "the lease lapsed")
        self.patched.append((name, ef_search))
        self.efs[name] = ef_search
        return {"name": name, "hnsw": {"ef_search": ef_search}, "seq": 9, "epoch": 1}


def cluster(record: dict[str, Any] | None) -> FakeKube:
    body: dict[str, Any] = {
        "apiVersion": c.API_VERSION,
        "kind": c.KIND,
        "metadata": {"name": "db", "namespace": "ns"},
        "spec": {},
    }
    if record is not None:
        body["status"] = {"efSearch": record}
    return FakeKube(body)


@pytest.mark.parametrize(
    ("record", "action"),
    [
        (None, "baseline"),
        ({"desired": 50}, "baseline"),  # never finished one: nothing known to sweep from
        ({"applied": 50}, "none"),
        ({"applied": 64}, "sweep"),
    ],
)
def test_the_plan_sweeps_only_when_the_value_changed(
    record: dict[str, Any] | None, action: str
) -> None:
    status = None if record is None else {"efSearch": record}
    assert livesettings.plan(50, status).action == action


def test_only_collections_without_the_value_are_patched() -> None:
    found = [
        {"name": "b", "hnsw": {"ef_search": 10}},
        {"name": "a", "hnsw": {"ef_search": 99}},
        {"name": "c", "hnsw": {"ef_search": 99}},
    ]
    assert livesettings.to_patch(99, found) == ["b"]


async def test_first_sight_records_a_baseline_and_calls_no_member(events: list[Any]) -> None:
    kube = cluster(None)
    leader = Leader({"a": 10})
    assert await livesettings.sync(kube, kube.cluster, 50, {"db-0": leader}, now=NOW)  # type: ignore[arg-type]
    assert kube.status["efSearch"] == {
        "desired": 50,
        "applied": 50,
        "time": NOW,
        "collections": 0,
        "message": "",
    }
    assert leader.patched == [] and events == []


async def test_a_change_is_swept_once_with_an_event(events: list[Any]) -> None:
    kube = cluster({"desired": 50, "applied": 50})
    leader = Leader({"a": 50, "b": 20, "c": 120})
    assert await livesettings.sync(kube, kube.cluster, 120, {"db-0": leader}, now=NOW)  # type: ignore[arg-type]
    assert leader.patched == [("a", 120), ("b", 120)]
    record = kube.status["efSearch"]
    assert (record["applied"], record["collections"], record["time"]) == (120, 2, NOW)
    [(reason, message, warning)] = events
    assert reason == "EfSearchApplied" and not warning and "db-0/a, db-0/b" in message
    again = kube.cluster
    assert not await livesettings.sync(kube, again, 120, {"db-0": leader}, now=NOW)  # type: ignore[arg-type]
    assert len(leader.patched) == 2


async def test_without_a_leader_the_status_says_it_waits(events: list[Any]) -> None:
    kube = cluster({"desired": 50, "applied": 50})
    assert not await livesettings.sync(kube, kube.cluster, 80, {}, now=NOW)  # type: ignore[arg-type]
    record = kube.status["efSearch"]
    assert (record["applied"], record["desired"]) == (50, 80)
    assert "waiting for a leader" in record["message"]
    patches = len(kube.status_patches)
    await livesettings.sync(kube, kube.cluster, 80, {}, now=NOW)  # type: ignore[arg-type]
    assert len(kube.status_patches) == patches  # the same message is not written again
    assert events == []


async def test_a_refusal_leaves_it_pending_with_a_warning_then_a_retry_finishes(
    events: list[Any],
) -> None:
    kube = cluster({"desired": 50, "applied": 50})
    leader = Leader({"a": 50, "b": 50}, fail_on="b")
    await livesettings.sync(kube, kube.cluster, 70, {"db-0": leader}, now=NOW)  # type: ignore[arg-type]
    record = kube.status["efSearch"]
    assert record["applied"] == 50 and "db-0: 503 lease_expired" in record["message"]
    assert record["progress"] == 1  # "a" changed before "b" was refused
    assert events[-1][0] == "EfSearchPending" and events[-1][2]
    leader.fail_on = None
    await livesettings.sync(kube, kube.cluster, 70, {"db-0": leader}, now=NOW)  # type: ignore[arg-type]
    record = kube.status["efSearch"]
    assert (record["applied"], record["collections"], record["message"]) == (70, 2, "")
    assert "progress" not in record
    assert leader.efs == {"a": 70, "b": 70}


async def test_a_long_sweep_spans_passes_within_a_time_budget(
    events: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    ticks = iter(range(1000))
    monkeypatch.setattr(livesettings.time, "monotonic", lambda: float(next(ticks)))
    monkeypatch.setattr(livesettings, "SWEEP_BUDGET_SECONDS", 2.5)
    kube = cluster({"desired": 50, "applied": 50})
    leader = Leader({f"c{i}": 50 for i in range(5)})
    await livesettings.sync(kube, kube.cluster, 90, {"db-0": leader}, now=NOW)  # type: ignore[arg-type]
    record = kube.status["efSearch"]
    assert record["applied"] == 50 and record["progress"] == len(leader.patched) < 5
    assert "so far, going on" in record["message"] and events == []
    while kube.status["efSearch"]["applied"] != 90:
        await livesettings.sync(kube, kube.cluster, 90, {"db-0": leader}, now=NOW)  # type: ignore[arg-type]
    assert kube.status["efSearch"]["collections"] == 5
    assert sorted(leader.efs.values()) == [90] * 5 and len(leader.patched) == 5


async def test_each_shard_sweeps_its_own_leader_and_keeps_its_own_record(
    events: list[Any],
) -> None:
    """With one record for the cluster, the first shard's finished sweep would have marked
    the value applied, and the other shards' collections would never have been patched."""
    from dvecdb_operator.groups import GroupScope

    kube = cluster({"desired": 50, "applied": 50})
    kube.cluster["status"]["groups"] = {"1": {"efSearch": {"desired": 50, "applied": 50}}}
    shard0, shard1 = Leader({"a": 50}), Leader({"b": 50})
    scope0, scope1 = GroupScope(shard=0, shards=2), GroupScope(shard=1, shards=2)
    assert await livesettings.sync(kube, kube.cluster, 90, {"db-0": shard0}, now=NOW, scope=scope0)  # type: ignore[arg-type]
    assert await livesettings.sync(
        kube, kube.cluster, 90, {"db-s1-0": shard1}, now=NOW, scope=scope1
    )  # type: ignore[arg-type]
    assert shard0.patched == [("a", 90)] and shard1.patched == [("b", 90)]
    assert kube.status["efSearch"]["applied"] == 90
    assert kube.status["groups"]["1"]["efSearch"]["applied"] == 90


def test_only_the_serving_leader_of_an_upgraded_group_takes_the_patches() -> None:
    """An older member cannot read the UPDATE_COLLECTION record a PATCH makes: while members
    run different revisions the sweep waits (and says so), as during a failover."""
    from dataclasses import replace

    from tests.unit.operator.test_status import m, obs

    group = obs(m(0, "leader"), m(1), m(2))
    leader, waits = livesettings.applier(group)
    assert leader is not None and leader.name == "db-0" and waits == ""
    upgrading = obs(m(0, "leader"), m(1, revision="r1"), m(2))
    found, waits = livesettings.applier(upgrading)
    assert found is None and "upgrade" in waits
    failing = replace(group, failover=object())  # type: ignore[arg-type]
    assert livesettings.applier(failing)[0] is None
    assert livesettings.applier(obs(m(0), m(1), m(2), leader=None)) == (None, "a leader")
