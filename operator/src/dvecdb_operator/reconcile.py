"""One ordered, idempotent pass over a cluster's children: auth Secret, workload (a
StatefulSet per shard), Services, the router, NetworkPolicy, PDB, monitoring. Each child is
built by a pure builder, adopted by the DVecCluster (owner reference, so deleting the
cluster collects it) and applied only when it drifted.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import kopf

from dvecdb_operator import constants as c
from dvecdb_operator import kube as kube_api
from dvecdb_operator import storagegrowth
from dvecdb_operator.builders.common import ClusterRef, ordinal_of
from dvecdb_operator.builders.monitoring import (
    build_dashboard_configmap,
    build_prometheus_rule,
    build_router_service_monitor,
    build_service_monitor,
)
from dvecdb_operator.builders.networkpolicy import OperatorIdentity, build_network_policy
from dvecdb_operator.builders.nodedefaults import build_node_defaults, keep_literal_ef_search
from dvecdb_operator.builders.pdb import build_pdb
from dvecdb_operator.builders.router import (
    build_router_deployment,
    build_router_pdb,
    build_router_service,
)
from dvecdb_operator.builders.secret import (
    added_keys_patch,
    build_auth_secret,
    missing_values,
    secret_values,
)
from dvecdb_operator.builders.services import build_services
from dvecdb_operator.builders.statefulset import build_statefulset
from dvecdb_operator.decisions import effective_replicas
from dvecdb_operator.drift import drifted
from dvecdb_operator.groups import GroupScope
from dvecdb_operator.resharding import running_shards
from dvecdb_operator.spec import ClusterSpec
from dvecdb_operator.tlsplan import tls_mounts
from dvecdb_operator.tlsreconcile import ensure_tls, settle_tls

log = logging.getLogger(__name__)


def auth_secret_name(ref: ClusterRef, spec: ClusterSpec) -> str:
    return spec.auth.secret_name or ref.default_auth_secret


def cluster_ref(body: Mapping[str, Any], spec: ClusterSpec) -> ClusterRef:
    """The cluster and its groups: every shard that owns slots or will (`running_shards`)."""
    meta = body["metadata"]
    shards = running_shards(spec.shards, body.get("status"))
    return ClusterRef(name=meta["name"], namespace=meta["namespace"], shards=shards)


def desired_children(
    ref: ClusterRef,
    spec: ClusterSpec,
    *,
    replicas: int | Sequence[int],
    operator: OperatorIdentity | None = None,
) -> tuple[list[dict[str, Any]], list[tuple[str, str, str]]]:
    """The manifests to apply, and (apiVersion, kind, name) of optional children to remove.

    `replicas`: each group's StatefulSet size, in shard order (one number: every group's).
    """
    secret = auth_secret_name(ref, spec)
    tls = tls_mounts(ref, spec)
    sizes = [replicas] * ref.shards if isinstance(replicas, int) else list(replicas)
    wanted: list[dict[str, Any]] = [
        # Before the StatefulSets: the members' environment refers to it.
        build_node_defaults(ref, spec),
        *(
            build_statefulset(group, spec, auth_secret=secret, replicas=sizes[group.shard], tls=tls)
            for group in ref.groups
        ),
        *build_services(ref),
        build_router_deployment(ref, spec, auth_secret=secret, tls=tls),
        build_router_service(ref),
    ]
    absent: list[tuple[str, str, str]] = []
    policy = build_network_policy(
        ref, operator=operator or OperatorIdentity(), allow_from=spec.network_policy.allow_from
    )
    optional = [
        (spec.network_policy.enabled, policy),
        (spec.pod_disruption_budget, build_pdb(ref)),
        (spec.pod_disruption_budget and spec.router.replicas > 1, build_router_pdb(ref)),
        (
            spec.monitoring.service_monitor,
            build_service_monitor(ref, interval=spec.monitoring.interval),
        ),
        (
            spec.monitoring.service_monitor,
            build_router_service_monitor(ref, interval=spec.monitoring.interval),
        ),
        (spec.monitoring.prometheus_rule, build_prometheus_rule(ref)),
        (spec.monitoring.grafana_dashboard, build_dashboard_configmap(ref)),
    ]
    for enabled, manifest in optional:
        if enabled:
            wanted.append(manifest)
        else:
            absent.append((manifest["apiVersion"], manifest["kind"], manifest["metadata"]["name"]))
    return wanted, absent


def leader_ordinal(status: Mapping[str, Any] | None) -> int | None:
    """The highest ordinal that leads or may lead: the recorded leader, or while a change is
    in flight (no leader is recorded at its epoch yet) the one it replaces and its candidate."""
    status = status or {}
    change = status.get("failover")
    if not isinstance(change, Mapping):
        change = {}
    names = [status.get("leader"), change.get("from"), change.get("candidate")]
    ordinals = [ordinal_of(n) for n in names if isinstance(n, str) and ordinal_of(n) >= 0]
    return max(ordinals) if ordinals else None


async def ensure_auth_secret(
    kube: kube_api.Kube, body: Mapping[str, Any], ref: ClusterRef, spec: ClusterSpec
) -> str:
    """Create the auth Secret if absent, else add the keys it lacks; returns its name.

    A Secret this creates is owned by the cluster and goes with it; one the user made stays
    theirs (never adopted). Values already there are never changed, and keys are added with
    a resourceVersion precondition: of two writers one wins, the other re-reads next pass.
    """
    name = auth_secret_name(ref, spec)
    live = await kube.get("v1", "Secret", ref.namespace, name)
    if live is None:
        manifest = build_auth_secret(ref, name, missing_values({}))
        kopf.adopt(manifest, owner=dict(body))  # type: ignore[arg-type]
        if await kube.create(manifest):
            kube_api.post_event(
                body, reason="SecretCreated", message=f"auth Secret {name} with new keys"
            )
        return name
    added = missing_values(secret_values(live))
    if added:
        version = (live.get("metadata") or {}).get("resourceVersion")
        try:
            await kube.merge_patch(
                "v1", "Secret", ref.namespace, name, added_keys_patch(added, version)
            )
        except kube_api.ConflictError:
            return name  # changed meanwhile: the next pass looks again
        kube_api.post_event(
            body,
            reason="SecretKeysAdded",
            message=f"auth Secret {name}: added {', '.join(sorted(added))}",
        )
    return name


async def _fit_immutable(
    kube: kube_api.Kube, body: Mapping[str, Any], sts: dict[str, Any], spec: ClusterSpec
) -> bool:
    """Keep the live volumeClaimTemplates (the API refuses to change them on a StatefulSet),
    once a larger `storage.size` has grown the claims (`storagegrowth`).

    False when the StatefulSet must not be applied in this pass: it was just deleted with its
    pods orphaned, to be created again with the larger template once it is gone.
    """
    meta = sts["metadata"]
    live = await kube.get("apps/v1", "StatefulSet", meta["namespace"], meta["name"])
    if live is None:
        return True
    if live.get("metadata", {}).get("deletionTimestamp"):
        return False  # going (orphan deletion): created again once it is gone
    keep_literal_ef_search(live, sts)
    if storagegrowth.needed(spec.storage.size, live, body.get("status")):
        if await storagegrowth.reconcile(kube, body, live, spec.storage.size):
            return False
    keep_selector(live, sts)
    live_vct = live.get("spec", {}).get("volumeClaimTemplates")
    if live_vct and live_vct != sts["spec"]["volumeClaimTemplates"]:
        sts["spec"]["volumeClaimTemplates"] = [
            {k: v for k, v in t.items() if k in ("apiVersion", "kind", "metadata", "spec")}
            for t in live_vct
        ]
    return True


def keep_selector(live: Mapping[str, Any], sts: dict[str, Any]) -> None:
    """Keep the live StatefulSet's selector (immutable), and its labels on the pod template.

    A group's pods carry the shard label only on a cluster of several shards: a cluster that
    grows from one shard keeps shard 0's selector without it (its pods get the label from
    the template at their next restart), one that shrinks to one keeps it (no restart).
    """
    selector = (live.get("spec") or {}).get("selector")
    wanted = sts["spec"].get("selector")
    if not isinstance(selector, Mapping) or selector == wanted:
        return
    sts["spec"]["selector"] = dict(selector)
    labels = sts["spec"]["template"]["metadata"]["labels"]
    for key, value in (selector.get("matchLabels") or {}).items():
        labels.setdefault(key, value)


async def reconcile_children(
    kube: kube_api.Kube,
    body: Mapping[str, Any],
    spec: ClusterSpec,
    *,
    operator: OperatorIdentity | None = None,
) -> list[str]:
    """Create or patch back every child; returns the kinds/names that were written."""
    ref = cluster_ref(body, spec)
    await ensure_auth_secret(kube, body, ref, spec)
    replicas = [
        effective_replicas(
            spec.replicas, leader_ordinal(GroupScope(i, ref.shards).view(body.get("status")))
        )
        for i in range(ref.shards)
    ]
    # Before the workloads: whether TLS is on (an operator upgrade never turns it on), then
    # the certificates members and the router mount.
    spec, choice = await settle_tls(kube, body, ref, spec)
    await ensure_tls(
        kube, body, ref, spec, [max(spec.replicas, n) for n in replicas], choice=choice
    )
    wanted, absent = desired_children(ref, spec, replicas=replicas, operator=operator)
    written: list[str] = []
    for manifest in wanted:
        kopf.adopt(manifest, owner=dict(body))  # type: ignore[arg-type]
        if manifest["kind"] == "StatefulSet" and not await _fit_immutable(
            kube, body, manifest, spec
        ):
            continue
        label = f"{manifest['kind']}/{manifest['metadata']['name']}"
        router = manifest["metadata"]["labels"].get(c.LABEL_COMPONENT) == "router"
        try:
            live = await kube.get(
                manifest["apiVersion"],
                manifest["kind"],
                ref.namespace,
                manifest["metadata"]["name"],
            )
            if router and live is not None and not owned_by(live, body):
                # The router's names are new to clusters made before shards: an object of
                # the user's that has one (a Service `NAME` fronting the cluster) stays theirs.
                kube_api.post_event(
                    body,
                    reason="NameTaken",
                    message=f"{label} exists and is not this cluster's: the router needs it",
                    warning=True,
                )
                continue
            if drifted(live, manifest):
                await kube.apply(manifest)
                written.append(label)
        except kube_api.ApiError as exc:
            # A missing optional CRD (ServiceMonitor without prometheus-operator) must not
            # stop the database children from converging.
            kube_api.post_event(
                body, reason="ApplyFailed", message=f"{label}: {exc.message}", warning=True
            )
            if manifest["kind"] in ("StatefulSet", "Service") and not router:
                raise
    for api_version, kind, name in absent:
        await _remove_owned(kube, body, api_version, kind, ref.namespace, name)
    if written:
        log.info("applied %s", ", ".join(written))
    return written


def owned_by(live: Mapping[str, Any], body: Mapping[str, Any]) -> bool:
    uid = body["metadata"].get("uid")
    owners = live.get("metadata", {}).get("ownerReferences") or []
    return any(o.get("uid") == uid for o in owners)


async def _remove_owned(
    kube: kube_api.Kube,
    body: Mapping[str, Any],
    api_version: str,
    kind: str,
    namespace: str,
    name: str,
) -> None:
    """Delete an optional child that was switched off, only if this cluster owns it."""
    try:
        live = await kube.get(api_version, kind, namespace, name)
    except kube_api.ApiError:
        return  # e.g. the monitoring CRDs are not installed: nothing to remove
    if live is None:
        return
    uid = body["metadata"].get("uid")
    owners = live.get("metadata", {}).get("ownerReferences") or []
    if any(o.get("uid") == uid for o in owners):
        await kube.request("DELETE", kube_api.object_path(api_version, kind, namespace, name))
