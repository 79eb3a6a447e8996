"""Resharding online, the operator's side: the pure steps (`resharding`) and their execution
(`resharder`) on the fake API server with a fake mover that follows the contract's call."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import orjson
import pytest

from dvecdb_client.slots import SlotMap
from dvecdb_operator import constants as c
from dvecdb_operator import kube as kube_api
from dvecdb_operator import resharder as resharder_module
from dvecdb_operator import resharding as rs
from dvecdb_operator import routerfile
from dvecdb_operator.aggregate import aggregate_status
from dvecdb_operator.builders.common import ClusterRef
from dvecdb_operator.groups import GroupScope
from dvecdb_operator.publish import listed_shards
from dvecdb_operator.resharder import PodMembers, Resharder, contract_parts
from dvecdb_operator.slotmap import map_from_status, slot_map_status
from dvecdb_router.config import parse_config
from tests.support.operator_fakes import FakeKube

pytestmark = pytest.mark.unit

NOW = 1_800_000_000.0


# The real planner (`reshard.plan`), as the operator wires it.
even_planner, _ = contract_parts()


def led(shards: int, *, without: tuple[int, ...] = ()) -> dict[str, Any]:
    """A status whose groups (of `shards` running) have leaders, but those in `without`."""
    status: dict[str, Any] = {"leader": "db-0", "epoch": 1, "groups": {}}
    for shard in range(1, shards):
        if shard not in without:
            status["groups"][str(shard)] = {"leader": f"db-s{shard}-0", "epoch": 1}
    return status


def step(spec: int, status: dict[str, Any], now: float = NOW) -> rs.Step:
    return rs.next_step(rs.Inputs(spec, status, now), even_planner)


# --- the groups to run ----------------------------------------------------------------------


def test_groups_run_for_every_shard_that_owns_or_will_own_slots() -> None:
    assert rs.running_shards(2, {}) == 2  # new cluster
    assert rs.running_shards(3, {"slotMap": {"shards": 2}}) == 3  # grow: created first
    assert rs.running_shards(1, {"slotMap": {"shards": 3}}) == 3  # shrink: not yet moved
    record = rs.Record(3, 1, rs.PHASE_MOVING, tuple(even_planner(SlotMap.even(3), 1)), "t")
    assert rs.running_shards(1, {"resharding": record.to_status()}) == 3
    shrinking = rs.Record(3, 1, rs.PHASE_SHRINKING, record.moves, "t", index=2)
    assert rs.running_shards(1, {"resharding": shrinking.to_status()}) == 1
    # A record that grows while the spec was set back still runs every group it made.
    growing = rs.Record(2, 4, rs.PHASE_GROWING, (), "t")
    assert rs.running_shards(2, {"resharding": growing.to_status()}) == 4


def test_an_older_status_without_owners_is_the_even_map_of_its_count() -> None:
    assert map_from_status({"slotMap": {"shards": 3, "version": 4}}, 1) == SlotMap.even(3, 4)
    owners = slot_map_status(SlotMap(7, (0,) * 2048 + (1,) * 2048))
    assert map_from_status({"slotMap": owners}, 5) == SlotMap(7, (0,) * 2048 + (1,) * 2048)
    assert map_from_status({}, 2) == SlotMap.even(2)


# --- the steps ------------------------------------------------------------------------------


def test_no_change_no_resharding() -> None:
    assert isinstance(step(2, {"slotMap": {"shards": 2}}), rs.Idle)


def test_growing_starts_waits_for_the_new_leaders_then_moves_one_at_a_time() -> None:
    status: dict[str, Any] = {"slotMap": slot_map_status(SlotMap.even(2)), **led(2)}
    start = step(3, status)
    assert isinstance(start, rs.Start)
    record = start.record
    assert (record.from_, record.to, record.phase) == (2, 3, rs.PHASE_GROWING)
    assert [(m.source, m.target) for m in record.moves] == [(0, 1), (1, 2)]
    assert record.slots_total == sum(m.slots for m in record.moves) > 0
    status["resharding"] = record.to_status()
    wait = step(3, status)
    assert isinstance(wait, rs.Wait) and "new shard(s) 2" in wait.reason
    status.update(led(3))
    advance = step(3, status)
    assert isinstance(advance, rs.Advance) and advance.record.phase == rs.PHASE_MOVING
    status["resharding"] = advance.record.to_status()
    first = step(3, status)
    assert isinstance(first, rs.RunMove)
    assert (first.move, first.phase, first.map_version) == (record.moves[0], rs.MOVE_COPY, 2)


def test_a_failover_in_a_new_shard_holds_the_moves_back() -> None:
    status = {"slotMap": {"shards": 1}, **led(2)}
    record = rs.Record(1, 2, rs.PHASE_GROWING, tuple(even_planner(SlotMap.even(1), 2)), "t")
    status["resharding"] = record.to_status()
    status["groups"]["1"]["failover"] = {"epoch": 2, "phase": "fencing"}
    assert isinstance(step(2, status), rs.Wait)


def test_no_move_starts_copying_while_a_shard_rolls_to_a_new_image() -> None:
    moves = tuple(even_planner(SlotMap.even(2), 3))
    status: dict[str, Any] = {"slotMap": {"shards": 2}, **led(3)}
    status["shards"] = [{"shard": 0, "phase": "Healthy"}, {"shard": 1, "phase": "Upgrading"}]
    record = rs.Record(2, 3, rs.PHASE_MOVING, moves, "t")
    status["resharding"] = record.to_status()
    held = step(3, status)
    assert isinstance(held, rs.Wait) and "shard(s) 1 are upgrading" in held.reason
    # A published move only purges (its fence is already in every member's log): it goes on.
    status["resharding"] = replace(record, move_phase=rs.MOVE_PURGE).to_status()
    assert isinstance(step(3, status), rs.RunMove)
    status["shards"][1]["phase"] = "Healthy"
    status["resharding"] = record.to_status()
    assert isinstance(step(3, status), rs.RunMove)


def test_a_restart_resumes_each_move_from_its_recorded_phase_never_copying_after_publish() -> None:
    moves = tuple(even_planner(SlotMap.even(2), 3))
    for phase in (rs.MOVE_COPY, rs.MOVE_PUBLISH, rs.MOVE_PURGE):
        record = rs.Record(2, 3, rs.PHASE_MOVING, moves, "t", index=1, move_phase=phase)
        again = rs.Record.from_status(orjson.loads(orjson.dumps(record.to_status())))
        assert again == record
        resumed = step(3, {"slotMap": {"shards": 2}, "resharding": record.to_status()})
        assert isinstance(resumed, rs.RunMove)
        assert (resumed.move, resumed.phase) == (moves[1], phase)
    # A late progress report does not take a published move back to copying.
    record = rs.Record(2, 3, rs.PHASE_MOVING, moves, "t", move_phase=rs.MOVE_PURGE)
    assert rs.progressed(record, rs.MOVE_COPY, 10).move_phase == rs.MOVE_PURGE
    assert rs.published(rs.progressed(record, "publish", 5), SlotMap.even(3)).move_phase == (
        rs.MOVE_PURGE
    )


def test_after_the_last_move_a_grow_finishes_and_a_shrink_removes_its_shards() -> None:
    grow = rs.Record(2, 3, rs.PHASE_MOVING, tuple(even_planner(SlotMap.even(2), 3)), "t")
    grow = rs.moved(rs.moved(grow, NOW), NOW)
    assert isinstance(step(3, {"resharding": grow.to_status()}), rs.Finish)
    shrink = rs.Record(3, 1, rs.PHASE_MOVING, tuple(even_planner(SlotMap.even(3), 1)), "t")
    for _ in shrink.moves:
        shrink = rs.moved(shrink, NOW)
    advance = step(1, {"resharding": shrink.to_status()})
    assert isinstance(advance, rs.Advance) and advance.record.phase == rs.PHASE_SHRINKING
    remove = step(1, {"resharding": advance.record.to_status()})
    assert isinstance(remove, rs.RemoveShards) and remove.shards == (1, 2)
    assert rs.removed_groups_patch(shrink) == {"groups": None}
    assert rs.removed_groups_patch(rs.Record(4, 2, rs.PHASE_SHRINKING, (), "t")) == {
        "groups": {"2": None, "3": None}
    }


def test_a_spec_changed_again_is_taken_up_after_the_resharding_in_flight() -> None:
    record = rs.Record(2, 3, rs.PHASE_MOVING, tuple(even_planner(SlotMap.even(2), 3)), "t")
    assert isinstance(step(4, {"resharding": record.to_status()}), rs.RunMove)
    done = {"slotMap": slot_map_status(SlotMap.even(3, 3))}
    again = step(4, done)
    assert isinstance(again, rs.Start) and (again.record.from_, again.record.to) == (3, 4)


def test_a_failed_move_waits_a_growing_backoff_and_keeps_one_line_of_error() -> None:
    record = rs.Record(2, 3, rs.PHASE_MOVING, tuple(even_planner(SlotMap.even(2), 3)), "t")
    trace = "Traceback (most recent call last):\n  File x\nOSError: boom"
    failed = rs.failed(record, "ClientConnectorError: cannot connect\n" + trace, NOW)
    assert failed.last_error == "ClientConnectorError: cannot connect"
    assert failed.attempts == 1 and failed.retry_at == rs.iso(NOW + 5)
    status = {"resharding": failed.to_status()}
    wait = step(3, status, NOW + 1)
    assert isinstance(wait, rs.Wait) and wait.seconds == pytest.approx(4)
    assert isinstance(step(3, status, NOW + 6), rs.RunMove)
    assert [rs.backoff(n) for n in (1, 2, 3, 10)] == [5.0, 10.0, 20.0, 300.0]
    assert rs.moved(failed, NOW).last_error is None  # a success clears it


def test_the_status_says_how_far_it_is() -> None:
    moves = tuple(even_planner(SlotMap.even(2), 3))
    record = rs.Record(2, 3, rs.PHASE_MOVING, moves, rs.iso(NOW))
    record = rs.progressed(record, rs.MOVE_COPY, 40)
    done = rs.moved(record, NOW + 10)
    shown = done.to_status()
    assert shown["move"] == "2/2" and shown["slotsMoved"] == moves[0].slots
    assert shown["slotsTotal"] == moves[0].slots + moves[1].slots
    assert shown["itemsCopied"] == 40 and shown["startedAt"] == "2027-01-15T08:00:00Z"
    assert shown["etaSeconds"] == round(10 / moves[0].slots * moves[1].slots)
    assert shown["summary"] == "2->3 2/2 copy"
    assert rs.Record(1, 2, rs.PHASE_GROWING, moves, "t").summary() == "1->2 growing"
    last = rs.finished_status(rs.moved(done, NOW + 20), NOW + 20)
    assert (last["seconds"], last["itemsCopied"]) == (20.0, 40)


def test_the_aggregate_shows_the_resharding_and_leaves_the_map_to_the_resharder() -> None:
    groups = [{"phase": "Healthy", "leader": f"l{i}", "conditions": []} for i in range(3)]
    record = rs.Record(2, 3, rs.PHASE_MOVING, tuple(even_planner(SlotMap.even(2), 3)), "t")
    status = {"resharding": record.to_status()}
    patch = aggregate_status(["db", "db-s1", "db-s2"], groups, status=status)
    assert patch["phase"] == "Resharding" and "slotMap" not in patch
    assert patch["message"].startswith("resharding 2->3 1/2 copy")
    [cond] = [c for c in patch["conditions"] if c["type"] == "Resharding"]
    assert cond["status"] == "True" and cond["reason"] == rs.PHASE_MOVING
    failing = rs.failed(record, "boom", NOW).to_status()
    [cond] = [
        c
        for c in aggregate_status(["a", "b", "c"], groups, status={"resharding": failing})[
            "conditions"
        ]
        if c["type"] == "Resharding"
    ]
    assert cond["reason"] == "MoveFailing" and "boom" in cond["message"]
    uneven = SlotMap(3, (0,) * 1000 + (2,) * 96 + (0,) * 1000 + (1,) * 2000)
    patch = aggregate_status(["db", "db-s1", "db-s2"], groups, slot_map=uneven)
    assert [line["slots"] for line in patch["shards"]] == [
        ["0-999", "1096-2095"],
        ["2096-4095"],
        ["1000-1095"],
    ]
    assert patch["slotMap"]["owners"][:2] == [[0, 999, 0], [1000, 1095, 2]]


# --- the resharder on the fake API server ----------------------------------------------------


class FakeMover:
    """`run_move` as the contract gives it: progress, then `publish` (step 8), then purge.
    `fail`: raise this many times before working; `block`: wait for it before publishing."""

    def __init__(self, slot_map: SlotMap) -> None:
        self.map = slot_map  # the mover's own idea of the map: the plan's, moved
        self.calls: list[tuple[rs.PlannedMove, str, int]] = []
        self.fail = 0
        self.block: asyncio.Event | None = None
        self.stop_after_publish = False
        self.copied: list[rs.PlannedMove] = []
        self.purged: list[rs.PlannedMove] = []
        self.members: dict[int, list[str]] = {}

    async def __call__(
        self,
        move: rs.PlannedMove,
        groups: PodMembers,
        *,
        map_version: int,
        phase: str,
        on_progress: Callable[[Any], Awaitable[None]],
        publish: Callable[[SlotMap], Awaitable[None]],
        current: SlotMap,
    ) -> None:
        self.calls.append((move, phase, map_version))
        assert map_version == current.version + 1
        self.members = {s: groups.members(s) for s in (move.source, move.target)}
        if self.fail:
            self.fail -= 1
            raise ConnectionError("shard 1 leader unreachable")
        if phase == rs.MOVE_COPY:
            progress = type("Progress", (), {"phase": "copy", "items_copied": move.slots * 2})
            await on_progress(progress())
            self.copied.append(move)
            phase = rs.MOVE_PUBLISH
        if self.block is not None:
            await self.block.wait()
        if phase == rs.MOVE_PUBLISH:
            self.map = rs.apply_move(SlotMap(map_version - 1, self.map.owners), move)
            await publish(self.map)
            if self.stop_after_publish:
                raise asyncio.CancelledError  # the operator stops here
        self.purged.append(move)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


class Harness:
    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, shards: int, spec: int) -> None:
        self.kube = FakeKube(
            {
                "apiVersion": c.API_VERSION,
                "kind": c.KIND,
                "metadata": {"name": "db", "namespace": "ns"},
                "spec": {"replicas": 2, "shards": spec},
                "status": {
                    "slotMap": slot_map_status(SlotMap.even(shards)),
                    **led(max(shards, spec)),
                },
            }
        )
        address = 1
        for shard in range(max(shards, spec)):
            for i in range(2):
                sts = "db" if shard == 0 else f"db-s{shard}"
                self.kube.add_pod(f"{sts}-{i}", f"10.0.{shard}.{address}")
                address += 1
        self.events: list[tuple[str, str]] = []
        monkeypatch.setattr(
            kube_api,
            "post_event",
            lambda body, *, reason, message, warning=False: self.events.append((reason, message)),
        )
        self.mover = FakeMover(SlotMap.even(shards))
        self.clock = Clock()

    def resharder(self) -> Resharder:
        async def token(body: Any) -> str:
            return "tok"

        return Resharder(
            self.kube,  # type: ignore[arg-type]
            "ns",
            "db",
            plan=even_planner,
            run_move=self.mover,
            token=token,
            clock=self.clock,
        )

    async def run(self, resharder: Resharder, steps: int = 20) -> None:
        for _ in range(steps):
            await resharder.step()
            if "resharding" not in self.kube.status and "lastResharding" in self.kube.status:
                return

    def reasons(self) -> list[str]:
        return [reason for reason, _ in self.events]


async def test_growing_two_to_three_moves_and_publishes_each_map(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = Harness(monkeypatch, shards=2, spec=3)
    h.kube.cluster["status"]["groups"].pop("2", None)
    resharder = h.resharder()
    await resharder.step()  # start
    assert h.kube.status["resharding"]["phase"] == rs.PHASE_GROWING
    await resharder.step()  # no leader in shard 2 yet: waits
    assert h.mover.calls == []
    h.kube.cluster["status"]["groups"]["2"] = {"leader": "db-s2-0", "epoch": 1}
    await h.run(resharder)
    status = h.kube.status
    assert "resharding" not in status
    assert [(m.source, m.target, p) for m, p, _ in h.mover.calls] == [
        (0, 1, "copy"),
        (1, 2, "copy"),
    ]
    assert [v for _, _, v in h.mover.calls] == [2, 3]  # the version each move publishes
    assert map_from_status(status, 3) == SlotMap.even(3, 3)
    last = status["lastResharding"]
    assert (last["from"], last["to"], last["slotsMoved"]) == (2, 3, 682 + 1365)
    assert last["itemsCopied"] == 2 * last["slotsMoved"]
    text = h.kube.objects[("ConfigMap", "db-router")]["data"][c.ROUTER_CONFIG_KEY]
    config = parse_config(text.encode())
    assert config.version == 3
    assert h.reasons() == [
        "ReshardingStarted",
        "ReshardingMove",
        "ReshardingPublished",
        "RoutersFollowed",
        "ReshardingMoved",
        "ReshardingMove",
        "ReshardingPublished",
        "RoutersFollowed",
        "ReshardingMoved",
        "ReshardingFinished",
    ]
    # The mover is given each group's members by their pods.
    assert h.mover.members[2] == ["http://10.0.2.5:8080", "http://10.0.2.6:8080"]
    # Every status write that changed the map also recorded the move as published.
    for patch in h.kube.status_patches:
        if "slotMap" in patch:
            assert patch["resharding"]["movePhase"] == rs.MOVE_PURGE


async def test_a_failed_move_is_retried_after_its_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(monkeypatch, shards=2, spec=3)
    h.mover.fail = 2
    resharder = h.resharder()
    await resharder.step()  # start
    await resharder.step()  # every shard led: moving
    await resharder.step()  # fails
    record = h.kube.status["resharding"]
    assert record["attempts"] == 1 and record["lastError"].startswith("ConnectionError")
    assert "Traceback" not in str(record)
    assert await resharder.step() > 0 and len(h.mover.calls) == 1  # backing off
    h.clock.now += 5
    await resharder.step()  # fails again: 10 s now
    assert h.kube.status["resharding"]["retryAt"] == rs.iso(h.clock.now + 10)
    h.clock.now += 10
    await h.run(resharder)
    assert "resharding" not in h.kube.status and map_from_status(h.kube.status, 3).version == 3
    assert h.reasons().count("ReshardingMoveFailed") == 2


async def test_an_operator_restart_after_publish_only_purges(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = Harness(monkeypatch, shards=2, spec=3)
    h.mover.stop_after_publish = True
    first = h.resharder()
    await first.step()
    await first.step()
    with pytest.raises(asyncio.CancelledError):
        await first.step()
    record = h.kube.status["resharding"]
    assert (record["move"], record["movePhase"]) == ("1/2", rs.MOVE_PURGE)
    assert map_from_status(h.kube.status, 3).version == 2
    h.mover.stop_after_publish = False
    await h.run(h.resharder())  # a new operator
    moves = [(m.source, m.target, p) for m, p, _ in h.mover.calls]
    assert moves == [(0, 1, "copy"), (0, 1, "purge"), (1, 2, "copy")]
    assert len(h.mover.copied) == 2 and map_from_status(h.kube.status, 3) == SlotMap.even(3, 3)


async def test_shrinking_moves_the_slots_off_then_deletes_the_shards_objects(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = Harness(monkeypatch, shards=3, spec=2)
    owner = [{"uid": "uid-1"}]
    for kind, name in (
        ("StatefulSet", "db-s2"),
        ("Service", "db-s2-rw"),
        ("Service", "db-s2-ro"),
        ("StatefulSet", "db-s1"),
    ):
        h.kube.objects[(kind, name)] = {"metadata": {"name": name, "ownerReferences": owner}}
    resharder = h.resharder()
    await resharder.step()
    assert h.kube.status["resharding"]["phase"] == rs.PHASE_MOVING  # no new shard to wait for
    await h.run(resharder)
    status = h.kube.status
    assert map_from_status(status, 2).owners == SlotMap.even(2).owners
    assert {s for m, _, _ in h.mover.calls for s in (m.source,)} >= {2}
    assert ("StatefulSet", "db-s2") not in h.kube.objects
    assert ("Service", "db-s2-rw") not in h.kube.objects
    assert ("StatefulSet", "db-s1") in h.kube.objects
    assert "2" not in status["groups"] and "1" in status["groups"]
    assert "ShardRemoved" in h.reasons() and h.reasons()[-1] == "ReshardingFinished"


async def test_a_move_in_flight_does_not_hold_the_groups_failover_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The move and the monitor share nothing but the status: a monitor pass (here shard 1
    failing over) runs while a move waits, and the move's writes keep its fields."""
    from tests.unit.operator.test_shards import TwoShards

    shards = TwoShards(monkeypatch)
    await shards.tick()
    await shards.tick()
    shards.kube.cluster["spec"]["shards"] = 3
    mover = FakeMover(SlotMap.even(2))
    mover.block = asyncio.Event()
    shards.kube.cluster["status"]["groups"]["2"] = {"leader": "db-s2-0", "epoch": 1}

    async def token(body: Any) -> str:
        return "tok"

    resharder = Resharder(
        shards.kube,  # type: ignore[arg-type]
        "ns",
        "db",
        plan=even_planner,
        run_move=mover,
        token=token,
    )
    await resharder.step()
    await resharder.step()
    moving = asyncio.create_task(resharder.step())
    for _ in range(50):
        await asyncio.sleep(0)
    assert not moving.done() and mover.calls  # the move waits
    for name, seq in (("db-s1-0", 8), ("db-s1-1", 9)):
        node = shards.node(name)
        node.last_seq = node.applied_seq = seq
        node.last_epoch = 1
    shards.node("db-s1-0").role = "standby"
    shards.kube.pods["db-s1-0"]["status"]["containerStatuses"][0]["restartCount"] += 1
    started = time.monotonic()
    async with asyncio.timeout(5):
        await shards.monitors[1].tick()
    assert time.monotonic() - started < 5
    assert GroupScope(1, 2).view(shards.kube.status)["leader"] == "db-s1-1"
    mover.block.set()
    async with asyncio.timeout(5):
        await moving
    status = shards.kube.status
    assert status["groups"]["1"]["leader"] == "db-s1-1"
    assert status["resharding"]["move"] == "2/2" and map_from_status(status, 3).version == 2


async def test_the_mover_gets_each_groups_members_from_its_pods() -> None:
    kube = FakeKube({"metadata": {"name": "db", "namespace": "ns"}})
    kube.add_pod("db-0", "10.0.0.1")
    kube.add_pod("db-s1-0", "10.0.0.2")
    kube.add_pod("db-s10-0", "10.0.0.3")
    kube.add_pod("other-0", "10.0.0.4")
    access = PodMembers(kube, ClusterRef("db", "ns", 0, 11), "tok")  # type: ignore[arg-type]
    await access.refresh()
    assert access.members(1) == ["http://10.0.0.2:8080"]
    assert access.members(0) == ["http://10.0.0.1:8080"]
    assert access.members(10) == ["http://10.0.0.3:8080"] and access.members(2) == []
    kube.pods["db-s1-0"]["status"]["podIP"] = "10.0.0.9"  # a restarted pod
    await access.refresh()
    assert access.members(1) == ["http://10.0.0.9:8080"]


async def test_with_tls_the_mover_calls_members_over_https_trusting_the_clusters_ca() -> None:
    from dvecdb_operator import certificates
    from dvecdb_operator.resharder import Resharder
    from dvecdb_operator.tlsplan import serving_scheme

    kube = FakeKube({"metadata": {"name": "db", "namespace": "ns"}})
    kube.add_pod("db-0", "10.0.0.1")
    kube.pods["db-0"]["spec"] = {
        "containers": [{"env": [{"name": "DVECDB_TLS_CERT_FILE", "value": "/tls/db-0.crt"}]}]
    }
    ca_pem, _ = certificates.new_ca("test CA", dt.datetime.now(dt.UTC))
    kube.objects[("Secret", "db-tls")] = {"data": {"ca.crt": base64.b64encode(ca_pem).decode()}}
    resharder = Resharder(
        kube,  # type: ignore[arg-type]
        "ns",
        "db",
        plan=even_planner,
        run_move=lambda *a, **k: None,  # type: ignore[arg-type,return-value]
        token=lambda body: None,  # type: ignore[arg-type,return-value]
    )
    context = await resharder._ca({"tls": {"secretName": "db-tls"}})
    assert context is not None and context.get_ca_certs()[0]["subject"] == (
        (("commonName", "test CA"),),
    )
    assert await resharder._ca({}) is None  # plain HTTP: no CA
    access = PodMembers(kube, ClusterRef("db", "ns", 0, 1), "tok", context)  # type: ignore[arg-type]
    await access.refresh()
    assert access.members(0) == ["https://10.0.0.1:8080"]
    router = {"spec": {"containers": [{"args": ["--port", "8080", "--tls-cert-file", "/x"]}]}}
    assert serving_scheme(router) == "https" and serving_scheme({"spec": {}}) == "http"


def test_a_new_shard_is_listed_for_the_routers_once_it_has_a_ready_member() -> None:
    """A router is ready only when every listed shard has a ready member."""
    assert listed_shards(2, [True, True, False]) == 2
    assert listed_shards(2, [True, True, True]) == 3
    assert listed_shards(2, [True, True, False, True]) == 2  # in order
    assert listed_shards(2, [False, True, True]) == 3  # owners are always listed
    assert listed_shards(3, [True, True, True]) == 3  # an emptied shard stays until it goes


async def test_growing_from_one_shard_labels_shard_zeros_members(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Shard 0's Services select the shard label once there are two shards: its running
    members get it at once (the template gives it to their next incarnations)."""
    h = Harness(monkeypatch, shards=1, spec=2)
    await h.run(h.resharder())
    labels = {
        name: pod["metadata"]["labels"].get(c.LABEL_SHARD) for name, pod in h.kube.pods.items()
    }
    assert labels == {"db-0": "0", "db-1": "0", "db-s1-0": None, "db-s1-1": None}
    assert map_from_status(h.kube.status, 2) == SlotMap.even(2, 2)


async def test_an_invalid_spec_moves_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(monkeypatch, shards=2, spec=3)
    h.kube.cluster["spec"]["replicas"] = 0
    await h.resharder().step()
    assert "resharding" not in h.kube.status and h.mover.calls == []


async def test_the_source_is_purged_once_every_router_follows_the_new_map(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A router still on the older map reads moved ids at the source: purging it first
    would hide them from that router's reads until its file is updated."""
    h = Harness(monkeypatch, shards=2, spec=3)
    monkeypatch.setattr(resharder_module, "ROUTER_POLL_SECONDS", 0.0)
    for name, ip, ready in (("db-router-a", "10.9.0.1", True), ("db-router-b", "10.9.0.2", False)):
        h.kube.add_pod(name, ip, ready=ready)
        h.kube.pods[name]["metadata"]["labels"] = {c.LABEL_ROUTER: "db"}
    asked: list[tuple[str, int, int]] = []

    async def version(url: str, ssl_context: object = None) -> int | None:
        published = map_from_status(h.kube.status, 3).version
        asked.append((url, published, len(h.mover.purged)))
        lagging = sum(1 for u, v, _ in asked if v == published) < 3
        return published - 1 if lagging else published

    resharder = h.resharder()
    resharder.router_version = version
    await h.run(resharder)
    assert "resharding" not in h.kube.status
    assert {url for url, _, _ in asked} == {"http://10.9.0.1:8080"}  # ready routers only
    # Each move's purge came after the router had answered the new version three times.
    for move in (0, 1):
        answers = [purged for _, v, purged in asked if v == move + 2]
        assert len(answers) == 3 and set(answers) == {move}
    assert "RoutersBehind" not in h.reasons()
    # Each published file was followed by a change to the router pods (their kubelets then
    # refresh the mounted file at once): they carry the last file's digest.
    annotations = h.kube.pods["db-router-a"]["metadata"]["annotations"]
    last_file = h.kube.objects[("ConfigMap", "db-router")]["data"]
    assert annotations[c.ANNOTATION_MEMBERS_FILE] == routerfile.digest(last_file)

    slow = Harness(monkeypatch, shards=2, spec=3)
    slow.kube.add_pod("db-router-a", "10.9.0.1")
    slow.kube.pods["db-router-a"]["metadata"]["labels"] = {c.LABEL_ROUTER: "db"}
    stuck = slow.resharder()
    stuck.router_wait = 0.0

    async def old(url: str, ssl_context: object = None) -> int | None:
        return None  # does not answer

    stuck.router_version = old
    await slow.run(stuck)
    assert "resharding" not in slow.kube.status and slow.reasons().count("RoutersBehind") == 2


def test_a_count_set_again_while_growing_is_planned_afresh_at_once() -> None:
    """A new shard that never gets a leader must not hold the cluster: set back, it goes."""
    status: dict[str, Any] = {"slotMap": slot_map_status(SlotMap.even(2)), **led(3, without=(2,))}
    record = rs.Record(2, 3, rs.PHASE_GROWING, tuple(even_planner(SlotMap.even(2), 3)), "t")
    status["resharding"] = record.to_status()
    back = step(2, status)
    assert isinstance(back, rs.Advance)
    assert (back.record.from_, back.record.to, back.record.moves) == (3, 2, ())
    status["resharding"] = back.record.to_status()
    assert rs.running_shards(2, status) == 3
    shrink = step(2, status)
    assert isinstance(shrink, rs.Advance) and shrink.record.phase == rs.PHASE_SHRINKING
    status["resharding"] = shrink.record.to_status()
    remove = step(2, status)
    assert isinstance(remove, rs.RemoveShards) and remove.shards == (2,)

    status["resharding"] = record.to_status()
    further = step(4, status)
    assert isinstance(further, rs.Advance) and further.record.phase == rs.PHASE_GROWING
    assert (further.record.from_, further.record.to) == (3, 4)
    assert further.record.moves == tuple(even_planner(SlotMap.even(2), 4))
    status["resharding"] = further.record.to_status()
    wait = step(4, status)  # shards 2 and 3 both new: both need a leader
    assert isinstance(wait, rs.Wait) and "2, 3" in wait.reason


def test_once_the_last_move_is_done_the_status_says_done() -> None:
    record = rs.Record(2, 3, rs.PHASE_MOVING, tuple(even_planner(SlotMap.even(2), 3)), "t")
    record = rs.moved(rs.moved(record, NOW), NOW)
    assert record.summary() == "2->3 2/2 done" and record.to_status()["movePhase"] == "done"
