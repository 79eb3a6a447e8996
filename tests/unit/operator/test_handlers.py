"""Handlers only delegate; startup settings put kopf's state under dvecdb.io; the CLI runs
kopf with the scope, peering and liveness it was given."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import kopf
import pytest

from dvecdb_operator import cli, handlers, runtime
from dvecdb_operator import constants as c
from dvecdb_operator import kube as kube_api
from dvecdb_operator.monitor import PassResult
from tests.support.operator_fakes import FakeKube

pytestmark = pytest.mark.unit


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __call__(self, name: str) -> Any:
        async def record(*args: Any, **kwargs: Any) -> None:
            self.calls.append((name, (*args, *kwargs.values())))

        return record


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    rec = Recorder()
    for name in ("startup", "cleanup", "reconcile", "monitor", "child_changed"):
        monkeypatch.setattr(runtime, name, rec(name))
    return rec


async def test_handlers_delegate_to_runtime(recorder: Recorder) -> None:
    memo = kopf.Memo()
    settings = kopf.OperatorSettings()
    body = kopf.Body({"metadata": {"name": "db"}})
    spec = body.spec
    stopped: Any = object()
    await handlers.startup(settings=settings, memo=memo)
    await handlers.reconcile(memo=memo, body=body, spec=spec)
    await handlers.monitor(memo=memo, namespace="ns", name="db", uid="u1", stopped=stopped)
    await handlers.child_changed(memo=memo, type="DELETED", labels={"a": "b"}, namespace="ns")
    await handlers.cleanup(memo=memo)
    assert recorder.calls == [
        ("startup", (settings, memo)),
        ("reconcile", (memo, body, spec)),
        ("monitor", (memo, "ns", "db", stopped, "u1")),
        ("child_changed", (memo, "DELETED", {"a": "b"}, "ns")),
        ("cleanup", (memo,)),
    ]


def test_startup_settings_use_our_group_and_bounded_watches() -> None:
    settings = kopf.OperatorSettings()
    runtime.apply_settings(settings, runtime.RuntimeConfig(watch_server_timeout=120))
    assert settings.persistence.finalizer == "dvecdb.io/finalizer"
    progress = settings.persistence.progress_storage
    assert isinstance(progress, kopf.AnnotationsProgressStorage)
    assert progress.prefix == "dvecdb.io"
    diffbase = settings.persistence.diffbase_storage
    assert isinstance(diffbase, kopf.AnnotationsDiffBaseStorage)
    assert diffbase.prefix == "dvecdb.io"
    assert settings.watching.server_timeout == 120
    assert settings.watching.client_timeout == 150


async def test_reconcile_refuses_an_invalid_spec_permanently() -> None:
    memo = kopf.Memo(kube=None)
    with pytest.raises(kopf.PermanentError, match=r"spec\.replicas"):
        await runtime.reconcile(memo, {"metadata": {"name": "db"}}, {"replicas": 0})


async def test_child_changed_reconciles_only_modified_or_deleted_children(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kube = FakeKube(
        {"apiVersion": c.API_VERSION, "kind": c.KIND, "metadata": {"name": "db", "namespace": "ns"}}
    )
    monkeypatch.setattr(kube_api, "post_event", lambda *a, **k: None)
    memo = kopf.Memo(kube=kube)
    labels = {c.LABEL_CLUSTER: "db"}
    await runtime.child_changed(memo, "ADDED", labels, "ns")
    await runtime.child_changed(memo, "DELETED", {}, "ns")
    assert kube.applied == []
    await runtime.child_changed(memo, "DELETED", labels, "ns")
    assert ("StatefulSet", "db") in kube.objects
    applied = list(kube.applied)
    await runtime.child_changed(memo, "MODIFIED", {c.LABEL_CLUSTER: "gone"}, "ns")
    assert kube.applied == applied  # a child of a cluster that is gone changes nothing


def test_cli_runs_kopf_with_scope_peering_and_liveness(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}
    monkeypatch.setattr(kopf, "run", lambda **kwargs: seen.update(kwargs))
    monkeypatch.setattr(cli.logs, "configure", lambda **kwargs: None)
    assert cli.main(["-n", "a", "-n", "b", "--priority", "7", "--monitor-interval", "0.5"]) == 0
    assert seen["namespaces"] == ["a", "b"] and seen["clusterwide"] is False
    assert seen["peering_name"] == "dvecdb-operator" and seen["priority"] == 7
    assert seen["liveness_endpoint"] == "http://0.0.0.0:8081/healthz"
    assert seen["memo"].config.monitor_interval == 0.5
    assert seen["memo"].config.peering_name == "dvecdb-operator"
    assert seen["memo"].config.namespaces == ("a", "b")
    assert cli.main(["--all-namespaces", "--standalone", "--liveness", ""]) == 0
    assert seen["clusterwide"] is True and seen["namespaces"] == []
    assert seen["standalone"] is True and seen["liveness_endpoint"] is None
    assert seen["memo"].config.peering_name is None
    # The chart ships the peering: kopf still uses it, the operator does not create it.
    assert cli.main(["-n", "a", "--no-create-peering"]) == 0
    assert seen["peering_name"] == "dvecdb-operator" and seen["standalone"] is False
    assert seen["memo"].config.peering_name is None


def test_cli_default_priorities_differ_between_processes() -> None:
    priorities = {cli.build_parser().parse_args([]).priority for _ in range(20)}
    assert len(priorities) > 1


class PeeringKube:
    def __init__(self, fail: bool = False) -> None:
        self.created: list[tuple[str, str | None]] = []
        self.fail = fail

    async def ensure_peering(self, name: str, namespace: str | None) -> bool:
        if self.fail:
            raise kube_api.ApiError(403, "forbidden")
        self.created.append((name, namespace))
        return True


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (runtime.RuntimeConfig(peering_name=None), []),
        (runtime.RuntimeConfig(peering_name="p"), [("p", None)]),
        (
            runtime.RuntimeConfig(peering_name="p", namespaces=("a", "team-*", "b")),
            [("p", "a"), ("p", "b")],
        ),
    ],
)
async def test_startup_creates_the_peering_object_kopf_waits_for(
    config: runtime.RuntimeConfig, expected: list[tuple[str, str | None]]
) -> None:
    kube = PeeringKube()
    await runtime.ensure_peering(kube, config)  # type: ignore[arg-type]
    assert kube.created == expected


async def test_peering_creation_failure_is_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    kube = PeeringKube(fail=True)
    await runtime.ensure_peering(kube, runtime.RuntimeConfig(peering_name="p"))  # type: ignore[arg-type]
    assert "cannot create peering p: forbidden" in caplog.text


class Passes:
    """kopf's `stopped` flag, set after a number of passes."""

    def __init__(self, passes: int) -> None:
        self.left = passes

    def __bool__(self) -> bool:
        return self.left <= 0

    async def wait(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 (kopf API)
        self.left -= 1


async def test_monitor_daemon_converges_children_then_bootstraps_with_the_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dvecdb_operator.builders.secret import read_cluster_token
    from tests.support.operator_fakes import FakeNode

    kube = FakeKube(
        {
            "apiVersion": c.API_VERSION,
            "kind": c.KIND,
            "metadata": {"name": "db", "namespace": "ns"},
            "spec": {"replicas": 2},
        }
    )
    for i in range(2):
        kube.add_pod(f"db-{i}", f"10.0.0.{i + 1}")
    nodes = {f"http://10.0.0.{i + 1}:8080": FakeNode(f"db-{i}") for i in range(2)}
    made: list[str | None] = []  # the token of every client made

    def factory(*, token: str | None, timeout: float, session: Any, **_: Any) -> Any:
        def make(url: str) -> Any:
            made.append(token)
            return nodes[url]

        return make

    monkeypatch.setattr(runtime, "client_factory", factory)
    monkeypatch.setattr(kube_api, "post_event", lambda *a, **k: None)
    memo = kopf.Memo(kube=kube, node_session=None, config=runtime.RuntimeConfig())
    await runtime.monitor(memo, "ns", "db", Passes(2))
    assert ("StatefulSet", "db") in kube.objects
    token = read_cluster_token(kube.objects[("Secret", "db-token")])
    assert token and set(made) == {token}
    assert (kube.status["leader"], kube.status["epoch"]) == ("db-0", 1)
    assert kube.status["phase"] == "Healthy"


class RotateAfterFirstPass(Passes):
    """Edits the Secret's clusterToken (new value first) once the first pass is done."""

    def __init__(self, passes: int, kube: FakeKube) -> None:
        super().__init__(passes)
        self.kube = kube

    async def wait(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 (kopf API)
        if self.left == 3:
            secret = self.kube.objects[("Secret", "db-token")]
            secret["data"][c.CLUSTER_TOKEN_KEY] = base64.b64encode(b"new,old").decode()
        await super().wait(timeout)


async def test_monitor_uses_a_rotated_cluster_token_from_the_next_pass_keeping_its_state(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Members re-read the Secret; an operator that kept the old token would find every
    member refusing its status reads once the old value is removed, i.e. all unreachable."""
    from tests.support.operator_fakes import FakeNode

    kube = FakeKube(
        {
            "apiVersion": c.API_VERSION,
            "kind": c.KIND,
            "metadata": {"name": "db", "namespace": "ns"},
            "spec": {"replicas": 2},
        }
    )
    for i in range(2):
        kube.add_pod(f"db-{i}", f"10.0.0.{i + 1}")
    nodes = {f"http://10.0.0.{i + 1}:8080": FakeNode(f"db-{i}") for i in range(2)}
    made: list[str | None] = []
    monitors: list[Any] = []

    def factory(*, token: str | None, timeout: float, session: Any, **_: Any) -> Any:
        def make(url: str) -> Any:
            made.append(token)
            return nodes[url]

        return make

    real_monitor = runtime.ClusterMonitor

    def tracking_monitor(*args: Any, **kwargs: Any) -> Any:
        monitors.append(real_monitor(*args, **kwargs))
        return monitors[-1]

    monkeypatch.setattr(runtime, "client_factory", factory)
    monkeypatch.setattr(runtime, "ClusterMonitor", tracking_monitor)
    monkeypatch.setattr(kube_api, "post_event", lambda *a, **k: None)
    memo = kopf.Memo(kube=kube, node_session=None, config=runtime.RuntimeConfig())
    await runtime.monitor(memo, "ns", "db", RotateAfterFirstPass(4, kube))
    first = made[0]
    assert first and first != "new"
    assert made[:2] == [first, first]
    assert set(made[2:]) == {"new"} and len(made) == 4  # one new client per member
    assert len(monitors) == 1


async def test_monitor_daemon_reports_an_invalid_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    kube = FakeKube(
        {
            "apiVersion": c.API_VERSION,
            "kind": c.KIND,
            "metadata": {"name": "db", "namespace": "ns"},
            "spec": {"replicas": -1},
        }
    )
    monkeypatch.setattr(runtime, "client_factory", lambda **_: lambda u: None)
    memo = kopf.Memo(kube=kube, node_session=None, config=runtime.RuntimeConfig())
    await runtime.monitor(memo, "ns", "db", Passes(1))
    assert kube.objects == {}
    assert kube.status["phase"] == "Failed"


async def test_monitor_daemon_ends_when_the_cluster_is_gone() -> None:
    kube = FakeKube({"apiVersion": c.API_VERSION, "kind": c.KIND, "metadata": {"name": "x"}})
    memo = kopf.Memo(kube=kube, node_session=None, config=runtime.RuntimeConfig())
    passes = Passes(100)
    await runtime.monitor(memo, "ns", "db", passes)
    assert passes.left > 0  # it returned on NotFound, not because kopf stopped it


async def test_monitor_daemon_ends_when_the_cluster_is_replaced_by_one_of_the_same_name() -> None:
    """No finalizer stops it first: a daemon of a deleted object must not serve its successor."""
    kube = FakeKube(
        {
            "apiVersion": c.API_VERSION,
            "kind": c.KIND,
            "metadata": {"name": "db", "namespace": "ns", "uid": "new"},
            "spec": {"replicas": 1},
        }
    )
    memo = kopf.Memo(kube=kube, node_session=None, config=runtime.RuntimeConfig())
    passes = Passes(100)
    await runtime.monitor(memo, "ns", "db", passes, uid="old")
    assert passes.left > 0 and kube.objects == {} and kube.status == {}


def test_clusters_carry_no_finalizer_so_deleting_one_never_waits_for_the_operator() -> None:
    """Issue #15: deleting a cluster after the operator was uninstalled hung on the finalizer
    kopf puts on every object a daemon serves; nothing outside Kubernetes needs cleaning."""
    spawning = kopf.get_default_registry()._spawning.get_all_handlers()
    assert [h.id for h in spawning] == ["monitor", "reshard"]
    assert all(h.requires_finalizer is False for h in spawning)


async def test_converging_one_cluster_twice_at_once_runs_one_after_the_other(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The create handler and the monitor's first pass both converge a new cluster: at once,
    both create its Services and the API server warns IPAddressWrongReference."""
    running: list[str] = []
    overlaps: list[tuple[str, bool]] = []  # (cluster, another one ran meanwhile)

    async def slow(kube: Any, body: Any, spec: Any, **_: Any) -> None:
        name = body["metadata"]["name"]
        overlaps.append((name, name in running))
        running.append(name)
        await asyncio.sleep(0.05)
        running.remove(name)

    monkeypatch.setattr(runtime, "reconcile_children", slow)
    memo = kopf.Memo(kube=None)
    body = {"metadata": {"name": "db", "namespace": "ns"}}
    other = {"metadata": {"name": "other", "namespace": "ns"}}
    spec: Any = None
    await asyncio.gather(
        runtime.converge(memo, body, spec),
        runtime.converge(memo, body, spec),
        runtime.converge(memo, other, spec),
    )
    assert sorted(overlaps) == [("db", False), ("db", False), ("other", False)]
    assert len(running) == 0


async def test_a_childs_event_and_the_clusters_daemon_share_the_converge_lock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """kopf hands each object's handlers a shallow copy of the operator's memo: a child's
    event (another object) converged the cluster beside its daemon, and both created the
    router's Service `NAME` at once (IPAddressWrongReference in the upgrade e2e)."""
    import copy

    running: list[str] = []
    overlaps: list[bool] = []

    async def slow(kube: Any, body: Any, spec: Any, **_: Any) -> None:
        overlaps.append(bool(running))
        running.append("x")
        await asyncio.sleep(0.05)
        running.remove("x")

    class Session:
        async def close(self) -> None:
            return None

    async def connect() -> Any:
        return None

    monkeypatch.setattr(runtime, "reconcile_children", slow)
    monkeypatch.setattr(kube_api.Kube, "connect", staticmethod(connect))
    monkeypatch.setattr(runtime.aiohttp, "ClientSession", Session)
    memo = kopf.Memo(config=runtime.RuntimeConfig())
    await runtime.startup(kopf.OperatorSettings(), memo)
    daemon, child_event = copy.copy(memo), copy.copy(memo)
    body = {"metadata": {"name": "db", "namespace": "ns"}}
    spec: Any = None
    await asyncio.gather(
        runtime.converge(daemon, body, spec), runtime.converge(child_event, body, spec)
    )
    assert overlaps == [False, False]


class AnnotateAfterFirstPass(Passes):
    """Opts the cluster in to TLS (`dvecdb.io/tls=enabled`) once the first pass is done."""

    def __init__(self, passes: int, kube: FakeKube) -> None:
        super().__init__(passes)
        self.kube = kube
        self.env_after_first: set[str] = set()

    async def wait(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 (kopf API)
        if self.left == 2:
            self.env_after_first = member_env(self.kube)
            self.kube.cluster["metadata"]["annotations"] = {"dvecdb.io/tls": "enabled"}
        await super().wait(timeout)


def member_env(kube: FakeKube) -> set[str]:
    template = kube.objects[("StatefulSet", "db")]["spec"]["template"]["spec"]
    return {v["name"] for v in template["containers"][0]["env"]}


async def test_the_tls_annotation_converges_in_the_next_pass(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Opting a cluster made before TLS in is an annotation, no spec change (no handler runs,
    and kopf ignores annotations under its own prefix): the monitor converges on the pass that
    finds TLS turned on, not at its safety net `reconcile_every` later."""
    kube = FakeKube(
        {
            "apiVersion": c.API_VERSION,
            "kind": c.KIND,
            "metadata": {"name": "db", "namespace": "ns"},
            "spec": {"replicas": 2},
            "status": {"phase": "Healthy", "leader": "db-0", "epoch": 1},
        }
    )
    monkeypatch.setattr(kube_api, "post_event", lambda *a, **k: None)

    async def quiet_pass(self: Any, body: Any = None, spec: Any = None) -> PassResult:
        return PassResult()  # a pass that changed nothing: no reconcile follows it

    monkeypatch.setattr(runtime.ClusterMonitor, "tick", quiet_pass)
    config = runtime.RuntimeConfig(reconcile_every=3600.0)
    memo = kopf.Memo(kube=kube, node_session=None, config=config)
    passes = AnnotateAfterFirstPass(2, kube)
    await runtime.monitor(memo, "ns", "db", passes)
    assert kube.status["tlsDefault"] == "disabled"
    assert "DVECDB_TLS_CERT_FILE" not in passes.env_after_first
    assert "DVECDB_TLS_CERT_FILE" in member_env(kube)
    assert kube.status["tls"]["enabled"] is True
