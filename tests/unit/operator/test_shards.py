"""Shards: names per group, the slot map, where each group's status lives, the aggregate,
the router's objects, and two groups failing over independently through the same code."""

from __future__ import annotations

import time
from typing import Any

import kopf
import orjson
import pytest

from dvecdb_client.slots import SlotMap
from dvecdb_operator import constants as c
from dvecdb_operator import kube as kube_api
from dvecdb_operator import routerfile, runtime
from dvecdb_operator.aggregate import aggregate_status, cluster_phase
from dvecdb_operator.builders.common import ClusterRef, shard_of_pod
from dvecdb_operator.builders.router import (
    build_router_deployment,
    build_router_service,
    router_members,
)
from dvecdb_operator.builders.services import build_services
from dvecdb_operator.builders.statefulset import build_statefulset
from dvecdb_operator.groups import GroupScope
from dvecdb_operator.members import Members
from dvecdb_operator.monitor import ClusterMonitor, MonitorSettings, observe_cluster
from dvecdb_operator.publish import Publisher
from dvecdb_operator.reconcile import desired_children, reconcile_children
from dvecdb_operator.slotmap import SLOTS, even_ranges, slot_map_status
from dvecdb_operator.spec import InvalidSpecError, parse_spec, router_image
from dvecdb_router.config import parse_config
from tests.support.operator_fakes import FakeKube, FakeNode

pytestmark = pytest.mark.unit

# A status as the operator before shards wrote it (one group, fields at the top level).
TODAYS_STATUS: dict[str, Any] = {
    "phase": "Healthy",
    "message": "",
    "leader": "db-1",
    "epoch": 4,
    "readyMembers": "3/3",
    "replicas": 3,
    "healthyReplicas": 3,
    "selector": "app.kubernetes.io/name=dvecdb,dvecdb.io/cluster=db",
    "members": [
        {"name": "db-0", "role": "follower", "ready": True, "last_seq": 7},
        {"name": "db-1", "role": "leader", "ready": True, "lastSeq": 9, "appliedSeq": 9},
        {"name": "db-2", "role": "follower", "ready": True, "lastSeq": 9},
    ],
    "conditions": [{"type": "Ready", "status": "True", "reason": "Healthy", "message": ""}],
    "lastFailover": {"from": "db-0", "to": "db-1", "reason": "pod missing", "kind": "failover"},
    "leaderPod": {"name": "db-1", "uid": "u1", "restarts": 0},
    "observedGeneration": 2,
}


# --- names ---------------------------------------------------------------------------------


def test_shard_zero_keeps_the_names_of_a_one_shard_cluster() -> None:
    ref = ClusterRef("db", "ns", shards=3)
    names = [(g.statefulset, g.rw_service, g.ro_service, g.pod(1)) for g in ref.groups]
    assert names == [
        ("db", "db-rw", "db-ro", "db-1"),
        ("db-s1", "db-s1-rw", "db-s1-ro", "db-s1-1"),
        ("db-s2", "db-s2-rw", "db-s2-ro", "db-s2-1"),
    ]
    assert (ref.router, ref.router_service, ref.headless_service) == (
        "db-router",
        "db",
        "db-headless",
    )
    assert [shard_of_pod(ref, p) for p in ("db-0", "db-s1-4", "db-s2-0", "db-s3-0", "other-0")] == [
        0,
        1,
        2,
        None,
        None,
    ]


def test_a_one_shard_clusters_objects_carry_no_shard_label() -> None:
    """Upgrading the operator must not change a one-shard StatefulSet's selector (immutable)
    nor its pod template (a rolling restart of every existing cluster)."""
    spec = parse_spec({})
    sts = build_statefulset(ClusterRef("db", "ns"), spec, auth_secret="db-token")
    assert sts["spec"]["selector"]["matchLabels"] == {
        c.LABEL_NAME: c.APP_NAME,
        c.LABEL_CLUSTER: "db",
    }
    assert c.LABEL_SHARD not in sts["spec"]["template"]["metadata"]["labels"]
    rw = build_services(ClusterRef("db", "ns"))[1]
    assert rw["metadata"]["name"] == "db-rw" and c.LABEL_SHARD not in rw["spec"]["selector"]


def test_each_shard_has_its_statefulset_and_services_selecting_only_its_members() -> None:
    spec = parse_spec({"shards": 2, "replicas": 2})
    ref = ClusterRef("db", "ns", shards=2)
    wanted, _ = desired_children(ref, spec, replicas=[2, 3])
    by_name = {(m["kind"], m["metadata"]["name"]): m for m in wanted}
    for shard, name, size in ((0, "db", 2), (1, "db-s1", 3)):
        sts = by_name[("StatefulSet", name)]
        assert sts["spec"]["replicas"] == size
        assert sts["spec"]["selector"]["matchLabels"][c.LABEL_SHARD] == str(shard)
        assert sts["spec"]["template"]["metadata"]["labels"][c.LABEL_SHARD] == str(shard)
        assert sts["spec"]["serviceName"] == "db-headless"
        term = sts["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
        spread = term["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
        assert spread["labelSelector"]["matchLabels"][c.LABEL_SHARD] == str(shard)
        rw = by_name[("Service", f"{name}-rw")]["spec"]["selector"]
        assert rw == {
            c.LABEL_NAME: c.APP_NAME,
            c.LABEL_CLUSTER: "db",
            c.LABEL_SHARD: str(shard),
            c.LABEL_ROLE: c.ROLE_LEADER,
        }
    assert ("Service", "db") in by_name and ("Deployment", "db-router") in by_name
    assert ("Service", "db-s1-headless") not in by_name


def test_shards_is_bounded_and_the_router_defaults_to_two_replicas() -> None:
    assert parse_spec({}).shards == 1 and parse_spec({}).router.replicas == 2
    for bad in (0, 65):
        with pytest.raises(InvalidSpecError, match="shards"):
            parse_spec({"shards": bad})
    with pytest.raises(InvalidSpecError, match=r"router\.resources"):
        parse_spec({"router": {"resources": {"limits": {"cpu": "lots"}}}})


# --- slot map ------------------------------------------------------------------------------


@pytest.mark.parametrize("shards", range(1, 65))
def test_the_published_map_is_the_routers(shards: int) -> None:
    routers = SlotMap.even(shards)
    assert even_ranges(shards) == [tuple(routers.ranges(i)[0]) for i in range(shards)]
    assert sum(last - first + 1 for first, last in even_ranges(shards)) == SLOTS


def test_slot_map_status_names_its_hash_version_and_owners() -> None:
    assert slot_map_status(SlotMap.even(2)) == {
        "version": 1,
        "slots": 4096,
        "hash": "crc32(utf8(id)) % 4096",
        "shards": 2,
        "owners": [[0, 2047, 0], [2048, 4095, 1]],
        "ranges": ["0-2047", "2048-4095"],
    }


# --- where a group's status lives ----------------------------------------------------------


def test_a_status_written_by_the_operator_before_shards_is_read_as_shard_zero() -> None:
    scope = GroupScope(0, 1)
    assert scope.view(TODAYS_STATUS) == TODAYS_STATUS
    assert scope.wrap({"epoch": 5, "phase": "FailingOver"}) == {"epoch": 5, "phase": "FailingOver"}


async def test_observing_a_cluster_left_by_the_older_operator_keeps_its_leader() -> None:
    body = {
        "metadata": {"name": "db", "namespace": "ns", "annotations": {}},
        "spec": {"replicas": 3},
        "status": TODAYS_STATUS,
    }
    kube = FakeKube(body)
    for i in range(3):
        kube.add_pod(f"db-{i}", f"10.0.0.{i + 1}")
    nodes = {f"http://10.0.0.{i + 1}:8080": FakeNode(f"db-{i}") for i in range(3)}
    seen = await observe_cluster(
        kube,  # type: ignore[arg-type]
        Members(lambda u: nodes[u]),
        kube.cluster,
        parse_spec(body["spec"]),
    )
    assert (seen.name, seen.leader, seen.epoch) == ("db", "db-1", 4)
    assert seen.recorded_seqs == {"db-0": 7, "db-1": 9, "db-2": 9}
    assert seen.leader_pod is not None and seen.leader_pod.uid == "u1"
    assert seen.healthy_replicas == 3 and seen.previous_phase == "Healthy"


def test_shard_zero_of_several_keeps_its_fields_at_the_top_but_not_the_phase() -> None:
    zero, one = GroupScope(0, 2), GroupScope(1, 2)
    patch = {"phase": "Healthy", "message": "", "leader": "db-0", "epoch": 1, "selector": "x"}
    assert zero.wrap(patch) == {
        "leader": "db-0",
        "epoch": 1,
        "selector": "x",
        "groups": {"0": {"phase": "Healthy", "message": ""}},
    }
    wrapped = one.wrap(patch)
    assert wrapped == {
        "groups": {"1": {"phase": "Healthy", "message": "", "leader": "db-0", "epoch": 1}}
    }
    status = {
        "phase": "Degraded",  # the aggregate
        "leader": "db-0",
        "epoch": 3,
        "shards": [],
        "groups": {"0": {"phase": "Healthy"}, "1": {"phase": "Degraded", "epoch": 7}},
    }
    assert zero.view(status) == {"leader": "db-0", "epoch": 3, "shards": [], "phase": "Healthy"}
    assert one.view(status) == {"phase": "Degraded", "epoch": 7}
    assert one.view({}) == {}


# --- the aggregate -------------------------------------------------------------------------


def group(phase: str, leader: str, epoch: int, ready: str = "True") -> dict[str, Any]:
    return {
        "phase": phase,
        "leader": leader,
        "epoch": epoch,
        "readyMembers": "2/2",
        "message": "" if phase == "Healthy" else f"{leader} is busy",
        "conditions": [
            {"type": "Ready", "status": ready, "reason": "R", "message": "m"},
            {"type": "LeaderElected", "status": "True", "reason": "L", "message": ""},
        ],
    }


def test_the_cluster_is_healthy_only_when_every_shard_is() -> None:
    statefulsets = ["db", "db-s1"]
    healthy = aggregate_status(statefulsets, [group("Healthy", "db-0", 1)] * 2)
    assert healthy["phase"] == "Healthy" and healthy["message"] == ""
    assert healthy["readyShards"] == "2/2" and healthy["leaders"] == "db-0,db-0"
    mixed = aggregate_status(
        statefulsets, [group("Healthy", "db-0", 1), group("FailingOver", "db-s1-0", 2, "False")]
    )
    assert mixed["phase"] == "FailingOver" and mixed["readyShards"] == "1/2"
    assert mixed["message"] == "shard 1 FailingOver: db-s1-0 is busy"
    ready = {cond["type"]: cond for cond in mixed["conditions"]}
    assert ready["Ready"]["status"] == "False" and ready["Ready"]["message"] == "shard 1: m"
    assert ready["LeaderElected"]["status"] == "True"
    assert [line["slots"] for line in mixed["shards"]] == [["0-2047"], ["2048-4095"]]
    assert mixed["shards"][1] | {"slots": None} == {
        "shard": 1,
        "statefulSet": "db-s1",
        "phase": "FailingOver",
        "leader": "db-s1-0",
        "epoch": 2,
        "readyMembers": "2/2",
        "slots": None,
        "message": "db-s1-0 is busy",
    }


def test_a_one_shard_cluster_keeps_its_groups_phase() -> None:
    patch = aggregate_status(["db"], [group("Degraded", "db-0", 1)])
    assert "phase" not in patch and "conditions" not in patch
    assert patch["readyShards"] == "0/1" and patch["leaders"] == "db-0"


@pytest.mark.parametrize(
    ("phases", "expected"),
    [
        (["Healthy", "Healthy"], "Healthy"),
        (["Healthy", None], "Creating"),
        (["Degraded", "Scaling"], "Scaling"),
        (["Upgrading", "Failed"], "Failed"),
        (["Healthy", "Degraded"], "Degraded"),
    ],
)
def test_cluster_phase_names_what_matters_most(phases: list[str | None], expected: str) -> None:
    assert cluster_phase(phases) == expected


# --- the router's objects ------------------------------------------------------------------


def test_router_image_follows_the_members_image() -> None:
    assert router_image(parse_spec({})) == "dvecdb/router:0.1.0"
    assert router_image(parse_spec({"image": "reg:5000/x/dvecdb-node:2"})) == (
        "reg:5000/x/dvecdb-router:2"
    )
    assert router_image(parse_spec({"image": "reg/node@sha256:ab"})) == "reg/router"
    assert router_image(parse_spec({"image": "all-in-one:3"})) == "all-in-one:3"
    assert router_image(parse_spec({"router": {"image": "mine:1"}})) == "mine:1"


def test_the_router_deployment_reads_the_members_file_and_the_cluster_token() -> None:
    spec = parse_spec({"shards": 2, "router": {"replicas": 3, "resources": {"limits": {"cpu": 1}}}})
    ref = ClusterRef("db", "ns", shards=2)
    deployment = build_router_deployment(ref, spec, auth_secret="keys")
    pod = deployment["spec"]["template"]
    [container] = pod["spec"]["containers"]
    assert deployment["metadata"]["name"] == "db-router" and deployment["spec"]["replicas"] == 3
    assert container["command"] == ["dvecdb-router"] and container["image"] == "dvecdb/router:0.1.0"
    args = container["args"]
    assert args[args.index("--members-file") + 1] == "/etc/dvecdb/router/members.json"
    assert args[args.index("--cluster-token-file") + 1] == f"{c.AUTH_DIR}/{c.CLUSTER_TOKEN_KEY}"
    assert container["resources"] == {"limits": {"cpu": 1}}
    members, auth = pod["spec"]["volumes"]
    assert members == {"name": "members", "configMap": {"name": "db-router"}}
    assert auth["secret"]["secretName"] == "keys"
    assert auth["secret"]["items"] == [{"key": c.CLUSTER_TOKEN_KEY, "path": c.CLUSTER_TOKEN_KEY}]
    # The router's pods are not members: nothing selecting members may select them.
    assert c.LABEL_CLUSTER not in pod["metadata"]["labels"]
    service = build_router_service(ref)
    assert service["metadata"]["name"] == "db"
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


def test_the_members_file_is_what_the_router_parses() -> None:
    ref = ClusterRef("db", "ns", shards=2)
    doc = router_members(ref, {0: ["http://10.0.0.2:8080", "http://10.0.0.1:8080"], 1: []})
    config = parse_config(orjson.dumps(doc))
    assert config.version == 1
    assert config.shards == (("http://10.0.0.1:8080", "http://10.0.0.2:8080"), ())
    assert doc["shards"][1]["statefulSet"] == "db-s1"
    assert doc["shards"][1]["slots"] == [[2048, 4095]]


# --- two groups, one code path -------------------------------------------------------------


class TwoShards:
    """A two-shard cluster of two members each on the fake API server and fake nodes."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.kube = FakeKube(
            {
                "apiVersion": c.API_VERSION,
                "kind": c.KIND,
                "metadata": {"name": "db", "namespace": "ns"},
                "spec": {"replicas": 2, "shards": 2, "failover": {"detectionSeconds": 10}},
            }
        )
        self.nodes: dict[str, FakeNode] = {}
        address = 1
        for sts in ("db", "db-s1"):
            self.kube.objects[("StatefulSet", sts)] = {"status": {"updateRevision": "r1"}}
            for i in range(2):
                name = f"{sts}-{i}"
                self.kube.add_pod(name, f"10.0.0.{address}")
                self.kube.pods[name]["metadata"]["uid"] = f"uid-{name}"
                self.kube.pods[name]["status"]["containerStatuses"] = [
                    {"name": "node", "restartCount": 0, "state": {"running": {}}}
                ]
                node = FakeNode(name)
                node.promote_at_fenced_epoch = True
                self.nodes[f"http://10.0.0.{address}:8080"] = node
                address += 1
        self.events: list[tuple[str, str]] = []
        monkeypatch.setattr(
            kube_api,
            "post_event",
            lambda body, *, reason, message, warning=False: self.events.append((reason, message)),
        )
        self.monitors = [
            ClusterMonitor(
                self.kube,  # type: ignore[arg-type]
                Members(lambda u: self.nodes[u]),
                namespace="ns",
                name="db",
                settings=MonitorSettings(),
                clock=time.monotonic,
                scope=GroupScope(i, 2),
            )
            for i in range(2)
        ]
        self.publisher = Publisher(self.kube)  # type: ignore[arg-type]

    def node(self, name: str) -> FakeNode:
        return next(n for n in self.nodes.values() if n.name == name)

    async def tick(self) -> None:
        for monitor in self.monitors:
            await monitor.tick()
        await self.publisher.publish(ClusterRef("db", "ns", 0, 2), self.monitors)


async def test_two_groups_bootstrap_and_fail_over_independently(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = TwoShards(monkeypatch)
    await h.tick()
    await h.tick()  # the positions the bootstrap changed
    status = h.kube.status
    assert (status["leader"], status["epoch"]) == ("db-0", 1)
    assert (status["groups"]["1"]["leader"], status["groups"]["1"]["epoch"]) == ("db-s1-0", 1)
    assert {m["name"] for m in status["members"]} == {"db-0", "db-1"}
    assert {m["name"] for m in status["groups"]["1"]["members"]} == {"db-s1-0", "db-s1-1"}
    assert h.node("db-s1-1").calls[-1][0] in ("follow", "confirm")
    assert ("follow", ("http://10.0.0.3:8080", 1)) in h.node("db-s1-1").calls
    assert status["phase"] == "Healthy" and status["readyShards"] == "2/2"
    assert status["leaders"] == "db-0,db-s1-0"
    assert h.kube.role_labels() == {
        "db-0": "leader",
        "db-1": "follower",
        "db-s1-0": "leader",
        "db-s1-1": "follower",
    }
    members = h.kube.objects[("ConfigMap", "db-router")]["data"][c.ROUTER_CONFIG_KEY]
    assert parse_config(members.encode()).shards == (
        ("http://10.0.0.1:8080", "http://10.0.0.2:8080"),
        ("http://10.0.0.3:8080", "http://10.0.0.4:8080"),
    )

    # Shard 1's leader process restarts: shard 1 fails over at once, shard 0 is untouched.
    shard0_calls = {n: len(h.node(n).calls) for n in ("db-0", "db-1")}
    for name, seq in (("db-s1-0", 8), ("db-s1-1", 9)):
        node = h.node(name)
        node.last_seq = node.applied_seq = seq
        node.last_epoch = 1
    h.node("db-s1-0").role = "standby"
    h.kube.pods["db-s1-0"]["status"]["containerStatuses"][0]["restartCount"] += 1
    await h.monitors[1].tick()
    await h.publisher.publish(ClusterRef("db", "ns", 0, 2), h.monitors)
    status = h.kube.status
    assert (status["groups"]["1"]["leader"], status["groups"]["1"]["epoch"]) == ("db-s1-1", 2)
    assert status["groups"]["1"]["lastFailover"]["from"] == "db-s1-0"
    assert (status["leader"], status["epoch"]) == ("db-0", 1) and "lastFailover" not in status
    assert {n: len(h.node(n).calls) for n in ("db-0", "db-1")} == shard0_calls
    assert status["leaders"] == "db-0,db-s1-1"
    await h.tick()
    assert h.kube.status["phase"] == "Healthy"


async def test_a_switchover_annotation_is_acted_on_by_its_members_group_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = TwoShards(monkeypatch)
    await h.tick()
    await h.tick()
    leader, target = h.node("db-s1-0"), h.node("db-s1-1")
    target.last_seq = target.applied_seq = leader.last_seq  # caught up
    target.last_epoch = leader.last_epoch
    h.kube.cluster["metadata"]["annotations"] = {c.ANNOTATION_SWITCHOVER: "db-s1-1"}
    for _ in range(3):
        await h.tick()
    status = h.kube.status
    assert (status["groups"]["1"]["leader"], status["groups"]["1"]["epoch"]) == ("db-s1-1", 2)
    assert (status["leader"], status["epoch"]) == ("db-0", 1)
    assert c.ANNOTATION_SWITCHOVER not in (h.kube.cluster["metadata"].get("annotations") or {})


# --- a new shard count ----------------------------------------------------------------------


async def test_reconcile_creates_the_new_shards_and_keeps_shard_zeros_selector(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A one-shard cluster growing to three: shard 0's StatefulSet selector cannot change
    (it has no shard label), its template gets the label; the new groups are created."""
    monkeypatch.setattr(kube_api, "post_event", lambda body, **_: None)
    body = {
        "apiVersion": c.API_VERSION,
        "kind": c.KIND,
        "metadata": {"name": "db", "namespace": "ns"},
        "spec": {"replicas": 2, "shards": 3},
        "status": {"slotMap": {"shards": 1, "version": 1}},
    }
    kube = FakeKube(body)
    one = build_statefulset(ClusterRef("db", "ns"), parse_spec({"replicas": 2}), auth_secret="k")
    kube.objects[("StatefulSet", "db")] = one
    await reconcile_children(kube, kube.cluster, parse_spec(body["spec"]))  # type: ignore[arg-type]
    statefulsets = sorted(name for kind, name in kube.objects if kind == "StatefulSet")
    assert statefulsets == ["db", "db-s1", "db-s2"]
    sts = kube.objects[("StatefulSet", "db")]
    assert sts["spec"]["selector"] == one["spec"]["selector"]
    assert c.LABEL_SHARD not in sts["spec"]["selector"]["matchLabels"]
    assert sts["spec"]["template"]["metadata"]["labels"][c.LABEL_SHARD] == "0"
    assert (
        kube.objects[("StatefulSet", "db-s2")]["spec"]["selector"]["matchLabels"][c.LABEL_SHARD]
        == "2"
    )


async def test_reconcile_keeps_the_shards_a_shrink_has_not_emptied(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(kube_api, "post_event", lambda body, **_: None)
    body = {
        "apiVersion": c.API_VERSION,
        "kind": c.KIND,
        "metadata": {"name": "db", "namespace": "ns"},
        "spec": {"replicas": 2, "shards": 1},
        "status": {"slotMap": {"shards": 2, "version": 1}},
    }
    kube = FakeKube(body)
    await reconcile_children(kube, kube.cluster, parse_spec(body["spec"]))  # type: ignore[arg-type]
    assert sorted(name for kind, name in kube.objects if kind == "StatefulSet") == ["db", "db-s1"]


async def test_an_older_operators_refusal_is_cleared(monkeypatch: pytest.MonkeyPatch) -> None:
    h = TwoShards(monkeypatch)
    await h.tick()
    h.kube.status["specRefused"] = "spec.shards 3 refused: ..."
    await h.publisher.publish(ClusterRef("db", "ns", 0, 2), h.monitors)
    assert "specRefused" not in h.kube.status


async def test_the_publisher_never_sends_routers_back_to_an_older_map(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = TwoShards(monkeypatch)
    await h.tick()
    newer = router_members(
        ClusterRef("db", "ns", 0, 2), {}, slot_map=SlotMap(5, SlotMap.even(2).owners)
    )
    h.kube.objects[("ConfigMap", "db-router")]["data"] = {
        c.ROUTER_CONFIG_KEY: orjson.dumps(newer).decode()
    }
    h.publisher._members = None
    await h.publisher.publish(ClusterRef("db", "ns", 0, 2), h.monitors)
    text = h.kube.objects[("ConfigMap", "db-router")]["data"][c.ROUTER_CONFIG_KEY]
    assert parse_config(text.encode()).version == 5


async def test_a_users_own_service_named_like_the_cluster_is_left_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[tuple[str, str]] = []
    monkeypatch.setattr(
        kube_api,
        "post_event",
        lambda body, *, reason, message, warning=False: seen.append((reason, message)),
    )
    kube = FakeKube(
        {
            "apiVersion": c.API_VERSION,
            "kind": c.KIND,
            "metadata": {"name": "db", "namespace": "ns"},
            "spec": {},
        }
    )
    theirs = {"metadata": {"name": "db"}, "spec": {"selector": {"app": "mine"}}}
    kube.objects[("Service", "db")] = theirs
    written = await reconcile_children(kube, kube.cluster, parse_spec({}))  # type: ignore[arg-type]
    assert "Service/db" not in written and kube.objects[("Service", "db")] == theirs
    assert ("NameTaken", "Service/db exists and is not this cluster's: the router needs it") in seen
    assert "Deployment/db-router" in written and "StatefulSet/db" in written


class Passes:
    """kopf's `stopped` flag, set after a number of passes."""

    def __init__(self, passes: int) -> None:
        self.left = passes

    def __bool__(self) -> bool:
        return self.left <= 0

    async def wait(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 (kopf API)
        self.left -= 1


async def test_the_daemon_runs_a_monitor_per_shard_and_one_more_for_a_new_shard(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kube = FakeKube(
        {
            "apiVersion": c.API_VERSION,
            "kind": c.KIND,
            "metadata": {"name": "db", "namespace": "ns"},
            "spec": {"replicas": 2, "shards": 2},
        }
    )
    nodes: dict[str, FakeNode] = {}
    for index, name in enumerate(["db-0", "db-1", "db-s1-0", "db-s1-1"]):
        kube.add_pod(name, f"10.0.0.{index + 1}")
        nodes[f"http://10.0.0.{index + 1}:8080"] = FakeNode(name)
    monkeypatch.setattr(runtime, "client_factory", lambda **_: lambda url: nodes[url])
    reasons: list[str] = []
    monkeypatch.setattr(kube_api, "post_event", lambda body, *, reason, **_: reasons.append(reason))
    memo = kopf.Memo(kube=kube, node_session=None, config=runtime.RuntimeConfig())
    await runtime.monitor(memo, "ns", "db", Passes(3))
    status = kube.status
    assert ("StatefulSet", "db") in kube.objects and ("StatefulSet", "db-s1") in kube.objects
    assert (status["leader"], status["groups"]["1"]["leader"]) == ("db-0", "db-s1-0")
    assert status["phase"] == "Healthy" and status["slotMap"]["shards"] == 2
    assert ("ConfigMap", "db-router") in kube.objects

    kube.cluster["spec"]["shards"] = 3
    for index, name in enumerate(["db-s2-0", "db-s2-1"]):
        kube.add_pod(name, f"10.0.0.{index + 5}")
        nodes[f"http://10.0.0.{index + 5}:8080"] = FakeNode(name)
    await runtime.monitor(memo, "ns", "db", Passes(3))
    assert ("StatefulSet", "db-s2") in kube.objects
    status = kube.status
    assert status["groups"]["1"]["leader"] == "db-s1-0"
    assert status["groups"]["2"]["leader"] == "db-s2-0"
    # No slot has moved yet: the new shard owns none, the map is the one it was.
    assert [line["slots"] for line in status["shards"]] == [["0-2047"], ["2048-4095"], []]
    assert status["slotMap"]["owners"] == [[0, 2047, 0], [2048, 4095, 1]]
    members = orjson.loads(kube.objects[("ConfigMap", "db-router")]["data"][c.ROUTER_CONFIG_KEY])
    assert [len(s["members"]) for s in members["shards"]] == [2, 2, 2]
    assert members["slotMap"]["shards"] == 3


async def test_a_rewritten_members_file_makes_the_routers_kubelets_refresh_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A member's new IP reaches the routers at their kubelet's next pod sync, a minute by
    default: the publisher changes the router pods with the new file's digest."""
    h = TwoShards(monkeypatch)
    h.kube.pods["db-router-a"] = {
        "metadata": {"name": "db-router-a", "labels": {c.LABEL_ROUTER: "db"}},
        "status": {"podIP": "10.9.0.1"},
    }
    await h.tick()
    await h.tick()

    def published() -> tuple[str, str]:
        data = h.kube.objects[("ConfigMap", "db-router")]["data"]
        annotations = h.kube.pods["db-router-a"]["metadata"].get("annotations") or {}
        return annotations.get(c.ANNOTATION_MEMBERS_FILE, ""), routerfile.digest(data)

    first, wanted = published()
    assert first == wanted
    h.kube.pods["db-s1-1"]["status"]["podIP"] = "10.0.0.9"  # recreated elsewhere
    h.nodes["http://10.0.0.9:8080"] = h.nodes.pop("http://10.0.0.4:8080")
    await h.tick()
    now, wanted = published()
    assert now == wanted and now != first
    text = h.kube.objects[("ConfigMap", "db-router")]["data"][c.ROUTER_CONFIG_KEY]
    assert "http://10.0.0.9:8080" in text
