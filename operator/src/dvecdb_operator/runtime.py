"""Operator wiring that handlers delegate to: startup settings, shared connections, and the
per-cluster loop that alternates monitoring passes with child reconciliation.

Everything long-lived (the Kubernetes connection, the node HTTP session) lives in kopf's
`memo`, created at startup and closed at cleanup, so handlers stay stateless functions.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import kopf

from dvecdb_operator import constants as c
from dvecdb_operator import kube as kube_api
from dvecdb_operator.builders.common import ClusterRef
from dvecdb_operator.builders.networkpolicy import OperatorIdentity
from dvecdb_operator.builders.secret import read_cluster_token
from dvecdb_operator.groups import GroupScope
from dvecdb_operator.members import Members, client_factory
from dvecdb_operator.monitor import ClusterMonitor, MonitorSettings
from dvecdb_operator.publish import Publisher
from dvecdb_operator.reconcile import auth_secret_name, reconcile_children
from dvecdb_operator.resharder import Resharder, contract_parts
from dvecdb_operator.resharder import run as run_resharder
from dvecdb_operator.resharding import running_shards
from dvecdb_operator.spec import ClusterSpec, InvalidSpecError, parse_spec
from dvecdb_operator.tlsreconcile import TlsState, ensure_tls, settle_tls

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RuntimeConfig:
    """Knobs the CLI sets (see `dvecdb-operator --help`)."""

    monitor_interval: float = 2.0
    node_timeout: float = 3.0
    reconcile_every: float = 30.0
    watch_server_timeout: int = 300
    catchup_timeout: float = 30.0
    max_lag_seq: int = 100
    # The peering object to create at start-up; None: standalone, or someone else (the
    # Helm chart) creates it.
    peering_name: str | None = None
    namespaces: tuple[str, ...] = ()  # empty: cluster-wide
    # The operator's own pods, admitted by every cluster's NetworkPolicy.
    identity: OperatorIdentity = field(default_factory=OperatorIdentity)


def config_of(memo: Any) -> RuntimeConfig:
    config = getattr(memo, "config", None)
    return config if isinstance(config, RuntimeConfig) else RuntimeConfig()


def apply_settings(settings: kopf.OperatorSettings, config: RuntimeConfig) -> None:
    """kopf's own state goes under our API group, and watches are bounded in time.

    Without server/client watch timeouts a watch can hang forever on a silently dropped
    connection (kopf issues #204, #698) and the operator would stop seeing changes.
    """
    settings.persistence.finalizer = f"{c.GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=c.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=c.GROUP, key="last-handled-configuration"
    )
    settings.watching.server_timeout = config.watch_server_timeout
    settings.watching.client_timeout = config.watch_server_timeout + 30
    settings.watching.connect_timeout = 30
    settings.networking.request_timeout = 60
    settings.posting.reporting_component = c.MANAGER
    settings.peering.stealth = True
    settings.background.cancellation_polling = 5


async def startup(settings: kopf.OperatorSettings, memo: Any) -> None:
    config = config_of(memo)
    apply_settings(settings, config)
    memo.kube = await kube_api.Kube.connect()
    memo.node_session = aiohttp.ClientSession()
    # kopf gives each object's handlers a shallow copy of this memo: made here, the locks of
    # `converge` are shared by the cluster's daemon and by the handlers of its children's
    # events (a lazily made dict would be one per object, and they would race).
    memo.converging = {}
    await ensure_peering(memo.kube, config)


async def ensure_peering(kube: kube_api.Kube, config: RuntimeConfig) -> None:
    """Best effort: without the peering CRDs or the RBAC to create, kopf reports it itself."""
    if config.peering_name is None:
        return
    literal = [ns for ns in config.namespaces if not set(ns) & set("*?[]!,")]
    targets: list[str | None] = list(literal) if config.namespaces else [None]
    for namespace in targets:
        try:
            if await kube.ensure_peering(config.peering_name, namespace):
                log.info("created peering %s in %s", config.peering_name, namespace or "cluster")
        except kube_api.ApiError as exc:
            log.warning("cannot create peering %s: %s", config.peering_name, exc.message)


async def cleanup(memo: Any) -> None:
    for name in ("kube",):
        kube = getattr(memo, name, None)
        if kube is not None:
            await kube.close()
    session = getattr(memo, "node_session", None)
    if session is not None:
        await session.close()


async def reconcile(memo: Any, body: Mapping[str, Any], spec: Mapping[str, Any]) -> None:
    """Create/update/resume: validate the spec, then converge the children."""
    try:
        parsed = parse_spec(dict(spec))
    except InvalidSpecError as exc:
        raise kopf.PermanentError(str(exc)) from exc
    await converge(memo, body, parsed)


async def converge(memo: Any, body: Mapping[str, Any], spec: ClusterSpec) -> None:
    """`reconcile_children`, one call per cluster at a time.

    The create handler and the monitor's first pass both converge a new cluster; two
    server-side applies creating the same Service at once make the API server allocate a
    ClusterIP for the loser too, and its repair loop then posts an `IPAddressWrongReference`
    Warning (kubernetes/kubernetes#132321). One after the other, the second finds the
    children there and only patches them.
    """
    meta = body.get("metadata") or {}
    key = (str(meta.get("namespace")), str(meta.get("name")))
    locks: dict[tuple[str, str], asyncio.Lock] | None = getattr(memo, "converging", None)
    if locks is None:
        locks = {}
        memo.converging = locks
    async with locks.setdefault(key, asyncio.Lock()):
        await reconcile_children(memo.kube, body, spec, operator=config_of(memo).identity)


async def child_changed(
    memo: Any, event_type: str | None, labels: Mapping[str, str], namespace: str | None
) -> None:
    """A child was edited or deleted: converge its cluster's children again."""
    cluster = labels.get(c.LABEL_CLUSTER)
    if not cluster or not namespace or event_type not in ("MODIFIED", "DELETED"):
        return
    try:
        body = await memo.kube.get_cluster(namespace, cluster)
    except kube_api.NotFoundError:
        return
    if body.get("metadata", {}).get("deletionTimestamp"):
        return
    try:
        parsed = parse_spec(body.get("spec"))
    except InvalidSpecError:
        return
    await converge(memo, body, parsed)


async def _cluster_token(kube: kube_api.Kube, ref: ClusterRef, spec: ClusterSpec) -> str | None:
    secret = await kube.get("v1", "Secret", ref.namespace, auth_secret_name(ref, spec))
    return read_cluster_token(secret)


def pass_interval(config: RuntimeConfig, spec: ClusterSpec | None) -> float:
    """Seconds between passes: the configured interval, but at most a third of the lease.

    Each pass that finds the leader serving renews its lease; a few passes per lease leave
    room for one slow or failed renewal before the leader stops acknowledging writes.
    """
    if spec is None:
        return config.monitor_interval
    return max(0.05, min(config.monitor_interval, spec.failover.lease / 3))


async def monitor(
    memo: Any, namespace: str, name: str, stopped: Any, *, uid: str | None = None
) -> None:
    """The cluster's daemon: a monitoring pass every interval, children every so often.

    It ends when the object is gone, or replaced by one of the same name (another `uid`):
    the object carries no finalizer (see `handlers`), so kopf may not stop it first.

    Each iteration reads the cluster object once and parses its spec once; the pass gets
    both. Children are converged on the first pass (which creates the auth Secret the
    members need), every `reconcile_every` seconds as a safety net, and right after a pass
    that changed something (a finished switchover may let a held-back scale-down proceed).
    The cluster token is read from the auth Secret on every pass: a rotated token is used
    from the next pass on, with the same monitor (its detection state kept).
    """
    config = config_of(memo)
    kube: kube_api.Kube = memo.kube
    settings = MonitorSettings(
        interval=config.monitor_interval,
        catchup_timeout=config.catchup_timeout,
        max_lag_seq=config.max_lag_seq,
    )
    ref = ClusterRef(name=name, namespace=namespace)
    # One monitor per shard (replica group), each with its own member clients.
    watchers: list[ClusterMonitor] = []
    token: str | None = None
    tls = TlsState()
    tls_on: bool | None = None  # whether the last pass found TLS on (`settle_tls`)
    last_reconcile = 0.0
    reconcile_due = True
    spec: ClusterSpec | None = None
    publisher = Publisher(kube)
    try:
        while not stopped:
            started = time.monotonic()
            try:
                body = await kube.get_cluster(namespace, name)
                if uid is not None and body.get("metadata", {}).get("uid") not in (None, uid):
                    return  # a new object of the same name has its own daemon
                try:
                    spec = parse_spec(body.get("spec"))
                except InvalidSpecError:
                    spec = None  # the monitoring pass reports it in the status
                now = time.monotonic()
                due = reconcile_due or now - last_reconcile >= config.reconcile_every
                fresh = token
                if spec is not None:
                    if due:
                        last_reconcile, reconcile_due = now, False
                        await converge(memo, body, spec)
                    fresh = await _cluster_token(kube, ref, spec)
                shards = (
                    running_shards(spec.shards, body.get("status"))
                    if spec is not None
                    else max(1, len(watchers))
                )
                fresh_tls = tls
                if spec is not None:
                    # Every pass: a pod that got its IP or a certificate due for renewal is
                    # handled within a pass; members are verified against the cluster's CA.
                    # A failed certificate write must not cost the pass (failover goes on
                    # with the CA it has).
                    try:
                        group_ref = ClusterRef(name, namespace, 0, shards)
                        tls_spec, choice = await settle_tls(kube, body, group_ref, spec)
                        if tls_on is not None and choice.enabled != tls_on:
                            # The annotation that opts a cluster in (or out) is no spec
                            # change, so no handler runs: converge in this pass.
                            last_reconcile = time.monotonic()
                            await converge(memo, body, spec)
                        tls_on = choice.enabled
                        fresh_tls = await ensure_tls(
                            kube, body, group_ref, tls_spec, [spec.replicas] * shards,
                            choice=choice,
                        )  # fmt: skip
                    except kube_api.ApiError as exc:
                        log.warning("cluster %s/%s: TLS not reconciled: %s", namespace, name, exc)
                new_ca = fresh_tls.ca_pem != tls.ca_pem
                if len(watchers) != shards or fresh != token or new_ca:
                    factory = client_factory(
                        token=fresh,
                        timeout=config.node_timeout,
                        session=memo.node_session,
                        ssl_context=fresh_tls.client_context(),
                    )
                    if watchers and fresh != token:
                        log.info("cluster %s/%s: the cluster token changed", namespace, name)
                    if watchers and new_ca:
                        log.info("cluster %s/%s: the TLS CA changed", namespace, name)
                    if len(watchers) != shards:
                        # Each monitor's scope names the shard count (fixed once the spec is
                        # valid): a new count means new monitors.
                        for watcher in watchers:
                            await watcher.members.close()
                        watchers.clear()
                    for watcher in watchers:
                        await watcher.members.use(factory)
                    watchers += [
                        ClusterMonitor(
                            kube,
                            Members(factory),
                            namespace=namespace,
                            name=name,
                            settings=settings,
                            scope=GroupScope(i, shards),
                        )
                        for i in range(len(watchers), shards)
                    ]
                    token, tls = fresh, fresh_tls
                if spec is not None and token is None:
                    log.info("cluster %s/%s: waiting for its auth Secret", namespace, name)
                    reconcile_due = True
                elif spec is None:
                    reconcile_due = (await watchers[0].tick(body, spec)).acted
                else:
                    acted = False
                    for index, watcher in enumerate(watchers):
                        # Each group's pass reads the object afresh (the one before may have
                        # written it): its leadership writes are preconditioned on that read.
                        result = await watcher.tick(body if index == 0 else None, spec)
                        acted = acted or result.acted
                    reconcile_due = acted
                    await publisher.publish(ClusterRef(name, namespace, 0, shards), watchers)
            except kube_api.NotFoundError:
                return
            except (kube_api.ApiError, OSError, TimeoutError) as exc:
                log.warning("monitor pass for %s/%s failed: %s", namespace, name, exc)
            # Passes start every interval: one slowed by an unreachable member's timeout
            # is followed at once, so detection is not stretched by the timeouts.
            elapsed = time.monotonic() - started
            await stopped.wait(max(0.0, pass_interval(config, spec) - elapsed))
    finally:
        for watcher in watchers:
            await watcher.members.close()


async def reshard(
    memo: Any, namespace: str, name: str, stopped: Any, *, uid: str | None = None
) -> None:
    """The cluster's resharding daemon (`resharder`), apart from the monitor's: a move runs
    for minutes while the groups' failovers go on."""
    kube: kube_api.Kube = memo.kube
    planner, mover = contract_parts()

    async def token(body: Mapping[str, Any]) -> str | None:
        spec = parse_spec(body.get("spec"))
        return await _cluster_token(kube, ClusterRef(name, namespace), spec)

    del uid  # the daemon ends with its object (NotFoundError), as the monitor's
    resharder = Resharder(kube, namespace, name, plan=planner, run_move=mover, token=token)
    await run_resharder(resharder, stopped)
