"""`spec.tls` against the API server: the CA and members' certificates kept current, the
user's Secret or cert-manager's Certificate checked, and the CA the operator verifies members
against (`tlsplan` decides what; this module reads and writes).

Run before the workloads in each reconcile (a member's certificate exists before its pod)
and on every monitoring pass: a pod that got its IP, a new member, a certificate due for
renewal are handled within a pass. Writes are merge patches preconditioned on the Secret's
resourceVersion, so two operators never interleave half-written pairs.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import kopf

from dvecdb_operator import certificates as certs
from dvecdb_operator import kube as kube_api
from dvecdb_operator import tlsdefault
from dvecdb_operator import tlsplan as plan
from dvecdb_operator.builders.common import ClusterRef, selector_labels
from dvecdb_operator.builders.router import router_labels
from dvecdb_operator.spec import ClusterSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TlsState:
    """What a pass found: the mode, the CA members are verified against (PEM), and what is
    wrong, if anything (also in `status.tls` and an Event)."""

    mode: str | None = None
    secret: str | None = None
    ca_pem: bytes | None = None
    problem: str | None = None
    renew_at: str | None = None
    # TLS off although spec.tls does not say so: why (`tlsdefault.KEPT_OFF`).
    off_note: str | None = None
    # When the CA ends, and what to do about it once that is near (`ca_expiry_warning`).
    ca_expires_at: str | None = None
    ca_warning: str | None = None

    def status(self) -> dict[str, Any] | None:
        if self.mode is None:
            if self.off_note is None:
                return None
            return {
                "enabled": False,
                "mode": None,
                "secretName": None,
                "ready": False,
                "message": self.off_note,
                "renewAt": None,
            }
        return {
            "enabled": True,
            "mode": self.mode,
            "secretName": self.secret,
            "ready": self.problem is None and self.ca_pem is not None,
            "message": self.problem or self.ca_warning or "certificates in place",
            "renewAt": self.renew_at,
            "caExpiresAt": self.ca_expires_at,
        }

    def client_context(self) -> ssl.SSLContext | None:
        """Verifies members against the cluster's CA (None: TLS off or no CA yet)."""
        if self.ca_pem is None:
            return None
        return ssl.create_default_context(cadata=self.ca_pem.decode())


async def settle_tls(
    kube: kube_api.Kube, body: Mapping[str, Any], ref: ClusterRef, spec: ClusterSpec
) -> tuple[ClusterSpec, tlsdefault.TlsChoice]:
    """`spec` with TLS on or off as `tlsdefault` decides, and the choice. The cluster's
    default is recorded first (before any child is written: a new cluster's first pass) and
    read from `status.tlsDefault` afterwards; a failed record raises (the pass is retried)."""
    default = tlsdefault.recorded_default(body.get("status"))
    if default is None:
        default = await _record_default(kube, body, ref)
    annotations = (body.get("metadata") or {}).get("annotations") or {}
    choice = tlsdefault.choose(spec, annotations, default)
    return tlsdefault.effective_spec(spec, choice), choice


async def _record_default(kube: kube_api.Kube, body: Mapping[str, Any], ref: ClusterRef) -> str:
    """Decide and write `status.tlsDefault` once, on a fresh read (another pass may have
    written it since `body` was read), preconditioned on that read."""
    for _ in range(3):
        fresh = await kube.get_cluster(ref.namespace, ref.name)
        found = tlsdefault.recorded_default(fresh.get("status"))
        if found is not None:
            return found
        sets = [
            s
            for group in ref.groups
            if (s := await kube.get("apps/v1", "StatefulSet", ref.namespace, group.statefulset))
        ]
        default = tlsdefault.first_default(fresh.get("status"), sets)
        version = (fresh.get("metadata") or {}).get("resourceVersion")
        try:
            await kube.patch_cluster_status(
                ref.namespace, ref.name, {tlsdefault.STATUS_KEY: default}, resource_version=version
            )
        except kube_api.ConflictError:
            continue
        log.info("cluster %s/%s: TLS by default: %s", ref.namespace, ref.name, default)
        if default == tlsdefault.DISABLED:
            kube_api.post_event(
                body, reason="TlsKeptOff", message=tlsdefault.KEPT_OFF, warning=True
            )
        return default
    raise kube_api.ConflictError(409, "status.tlsDefault: the cluster kept changing")


async def _service_ips(kube: kube_api.Kube, ref: ClusterRef) -> dict[str, str]:
    """The ClusterIPs allocated to the Services the certificates name, by Service name."""
    found: dict[str, str] = {}
    for name in certs.service_names_of(ref):
        service = await kube.get("v1", "Service", ref.namespace, name)
        ip = ((service or {}).get("spec") or {}).get("clusterIP")
        if ip and ip != "None":
            found[name] = ip
    return found


async def _wanted_leaves(
    kube: kube_api.Kube, ref: ClusterRef, replicas: Sequence[int]
) -> list[certs.Leaf]:
    """Every certificate with the names known now (pod and Service IPs as allocated)."""
    members = await kube.list_pods(ref.namespace, selector_labels(ref))
    routers = await kube.list_pods(ref.namespace, router_labels(ref))
    return certs.wanted_leaves(
        ref,
        dict(enumerate(replicas)),
        _ips(members),
        _ips(routers).values(),
        await _service_ips(kube, ref),
    )


def _ips(pods: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    found: dict[str, str] = {}
    for pod in pods:
        ip = (pod.get("status") or {}).get("podIP")
        if ip:
            found[pod["metadata"]["name"]] = ip
    return found


async def _ensure_ca(
    kube: kube_api.Kube, body: Mapping[str, Any], ref: ClusterRef, now: dt.datetime
) -> tuple[bytes, bytes] | str:
    """The kept CA (created once), or what is wrong with the one that is there."""
    name = plan.ca_secret_name(ref)
    live = await kube.get("v1", "Secret", ref.namespace, name)
    if live is None:
        cert, key = certs.new_ca(f"{ref.namespace}/{ref.name} d-vecDB CA", now)
        if await kube.create(plan.build_ca_secret(ref, cert, key)):
            kube_api.post_event(body, reason="CaCreated", message=f"TLS CA in Secret {name}")
            return cert, key
        live = await kube.get("v1", "Secret", ref.namespace, name)
    held = plan.decode_data(live)
    found, secret_key = held.get("tls.crt"), held.get("tls.key")
    if found is None or secret_key is None or not certs.ca_pair_valid(found, secret_key, now):
        return f"Secret {name} holds no valid CA (tls.crt, tls.key): fix or delete it"
    return found, secret_key


async def _generated(
    kube: kube_api.Kube,
    body: Mapping[str, Any],
    ref: ClusterRef,
    mounts: plan.TlsMounts,
    replicas: Sequence[int],
    now: dt.datetime,
) -> TlsState:
    ca = await _ensure_ca(kube, body, ref, now)
    if isinstance(ca, str):
        return TlsState(plan.MODE_GENERATED, mounts.secret, problem=ca)
    ca_cert, ca_key = ca
    leaves = await _wanted_leaves(kube, ref, replicas)
    live = await kube.get("v1", "Secret", ref.namespace, mounts.secret)
    held = plan.decode_data(live)
    todo = plan.plan_leaves(held, leaves, ca_cert, ca_key, now)
    if live is None:
        manifest = plan.build_leaf_secret(ref, mounts.secret, todo.data)
        kopf.adopt(manifest, owner=dict(body))  # type: ignore[arg-type]
        await kube.create(manifest)
        held = dict(todo.data)
    elif todo.data or todo.removed:
        version = (live.get("metadata") or {}).get("resourceVersion")
        try:
            await kube.merge_patch(
                "v1",
                "Secret",
                ref.namespace,
                mounts.secret,
                plan.leaf_secret_patch(todo, version),
            )
        except kube_api.ConflictError:
            return TlsState(plan.MODE_GENERATED, mounts.secret, ca_cert)  # next pass
        held = {k: v for k, v in {**held, **todo.data}.items() if k not in todo.removed}
    if todo.reasons:
        issued = ", ".join(f"{n} ({r})" for n, r in sorted(todo.reasons.items()))
        log.info("cluster %s/%s: certificates issued: %s", ref.namespace, ref.name, issued)
        kube_api.post_event(body, reason="CertificatesIssued", message=issued)
    due = certs.next_renewal(held[leaf.cert_key] for leaf in leaves if leaf.cert_key in held)
    return TlsState(
        plan.MODE_GENERATED,
        mounts.secret,
        ca_cert,
        renew_at=None if due is None else due.strftime("%Y-%m-%dT%H:%M:%SZ"),
    )


async def _given(kube: kube_api.Kube, ref: ClusterRef, mounts: plan.TlsMounts) -> TlsState:
    live = await kube.get("v1", "Secret", ref.namespace, mounts.secret)
    held = plan.decode_data(live)
    missing = [k for k in ("tls.crt", "tls.key", certs.CA_CERT_KEY) if k not in held]
    if live is None or missing:
        what = "does not exist" if live is None else f"lacks {', '.join(missing)}"
        waiting = " (cert-manager writes it)" if mounts.mode == plan.MODE_CERT_MANAGER else ""
        return TlsState(
            mounts.mode, mounts.secret, problem=f"Secret {mounts.secret} {what}{waiting}"
        )
    due = certs.next_renewal([held["tls.crt"]])
    return TlsState(
        mounts.mode,
        mounts.secret,
        held[certs.CA_CERT_KEY],
        renew_at=None if due is None else due.strftime("%Y-%m-%dT%H:%M:%SZ"),
    )


async def _cert_manager(
    kube: kube_api.Kube,
    body: Mapping[str, Any],
    ref: ClusterRef,
    spec: ClusterSpec,
    mounts: plan.TlsMounts,
    replicas: Sequence[int],
) -> TlsState:
    try:
        await kube.request(
            "GET",
            f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{plan.CERT_MANAGER_CRD}",
        )
    except kube_api.NotFoundError:
        return TlsState(
            plan.MODE_CERT_MANAGER,
            mounts.secret,
            problem=(
                "spec.tls.issuerRef needs cert-manager: the CRD"
                f" {plan.CERT_MANAGER_CRD} is not installed"
            ),
        )
    leaves = await _wanted_leaves(kube, ref, replicas)
    manifest = plan.build_certificate(ref, spec, leaves)
    kopf.adopt(manifest, owner=dict(body))  # type: ignore[arg-type]
    try:
        await kube.apply(manifest)
    except kube_api.ApiError as exc:
        return TlsState(
            plan.MODE_CERT_MANAGER, mounts.secret, problem=f"Certificate: {exc.message}"
        )
    return await _given(kube, ref, mounts)


async def ensure_tls(
    kube: kube_api.Kube,
    body: Mapping[str, Any],
    ref: ClusterRef,
    spec: ClusterSpec,
    replicas: Sequence[int],
    *,
    now: dt.datetime | None = None,
    choice: tlsdefault.TlsChoice | None = None,
) -> TlsState:
    """Bring the cluster's certificates in line with `spec.tls` (see the module docstring),
    `spec` as `settle_tls` made it (`choice`: why TLS is off, said in `status.tls`); a
    problem is reported in `status.tls` and as a Warning Event, never raised."""
    mounts = plan.tls_mounts(ref, spec)
    if mounts is None:
        state = TlsState(off_note=choice.why if choice is not None and choice.kept_off else None)
    elif mounts.mode == plan.MODE_GENERATED:
        state = await _generated(kube, body, ref, mounts, replicas, now or dt.datetime.now(dt.UTC))
    elif mounts.mode == plan.MODE_CERT_MANAGER:
        state = await _cert_manager(kube, body, ref, spec, mounts, replicas)
    else:
        state = await _given(kube, ref, mounts)
    if state.ca_pem is not None:
        end = certs.expires_at(state.ca_pem)
        state = dataclasses.replace(
            state,
            ca_expires_at=None if end is None else end.strftime("%Y-%m-%dT%H:%M:%SZ"),
            ca_warning=certs.ca_expiry_warning(state.ca_pem, now or dt.datetime.now(dt.UTC)),
        )
    await _publish(kube, body, ref, state)
    return state


async def _publish(
    kube: kube_api.Kube, body: Mapping[str, Any], ref: ClusterRef, state: TlsState
) -> None:
    """`status.tls` when it changed (renewAt moves only on renewal: few writes)."""
    if state.problem:
        kube_api.post_event(body, reason="TlsNotReady", message=state.problem, warning=True)
    if state.ca_warning:
        kube_api.post_event(body, reason="CaExpiring", message=state.ca_warning, warning=True)
    wanted = state.status()
    current = (body.get("status") or {}).get("tls")
    if wanted == current:
        return
    try:
        await kube.patch_cluster_status(ref.namespace, ref.name, {"tls": wanted})
    except kube_api.ApiError as exc:
        log.warning("cluster %s/%s: status.tls not written: %s", ref.namespace, ref.name, exc)
