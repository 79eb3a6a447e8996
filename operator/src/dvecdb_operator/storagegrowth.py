"""Growing `spec.storage.size`: the members' claims, then the StatefulSet's claim template.

What a user gets (as with CloudNativePG, which resizes claims directly):

- Each member's PersistentVolumeClaim is patched to the new `spec.resources.requests.storage`
  when its StorageClass says `allowVolumeExpansion: true`. The volume driver then grows the
  volume; some drivers grow the file system only when the pod next starts (the claim's
  `FileSystemResizePending` condition), which the operator does not force.
- A StatefulSet's `volumeClaimTemplates` cannot change in place, so once the claims are
  patched the StatefulSet is deleted with `propagationPolicy: Orphan` (`kubectl delete sts
  --cascade=orphan`): its pods and claims stay, untouched and running. The next
  reconciliation creates it again with the new template; it adopts the pods (same selector;
  the pod template is unchanged, so is the revision: no member restarts), and members added
  later get claims of the new size.
- When the class does not allow expansion (or the claim names no class, or the class is
  gone), nothing is changed: `status.storage.message` and a Warning Event
  `StorageNotExpandable` say which claims keep which size and why. Shrinking is refused at
  admission (CEL); should it reach the operator, it is reported the same way.

`plan` is the pure decision; `reconcile` does the reads and writes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from dvecdb_operator import constants as c
from dvecdb_operator import kube as kube_api
from dvecdb_operator.quantity import InvalidQuantityError, parse_quantity

STATUS_KEY = "storage"


@dataclass(frozen=True)
class Claim:
    name: str
    requested: str | None
    storage_class: str | None


@dataclass(frozen=True)
class Plan:
    grow: tuple[str, ...] = ()  # claims to patch to `desired`
    recreate_statefulset: bool = False  # orphan-delete it: its template asks for less
    blocked: str | None = None  # why nothing can be done (the message users read)


def _size(text: str | None) -> float | None:
    try:
        return float(parse_quantity(text)) if text is not None else None
    except InvalidQuantityError:
        return None


def plan(
    desired: str,
    template_size: str | None,
    claims: Sequence[Claim],
    expandable: Mapping[str, bool | None],
) -> Plan:
    """What to do so that every claim and the template ask for `desired`.

    `expandable` maps each StorageClass a claim names to its `allowVolumeExpansion` (None:
    the class does not exist).
    """
    want = _size(desired)
    if want is None:
        return Plan(blocked=f"storage.size {desired} is not a quantity")
    template = _size(template_size)
    if template is not None and template > want:
        return Plan(
            blocked=f"storage.size {desired} is smaller than the claims' {template_size}: "
            "volumes cannot shrink"
        )
    small = [m for m in claims if (_size(m.requested) or 0.0) < want]
    reasons: list[str] = []
    for claim in small:
        if claim.storage_class is None:
            reasons.append(f"{claim.name} names no StorageClass")
        elif expandable.get(claim.storage_class) is None:
            reasons.append(f"{claim.name}: StorageClass {claim.storage_class} does not exist")
        elif not expandable[claim.storage_class]:
            reasons.append(
                f"{claim.name}: StorageClass {claim.storage_class} does not allow volume "
                "expansion (allowVolumeExpansion is not true)"
            )
    if reasons:
        keep = sorted({m.requested or "?" for m in small})
        return Plan(
            blocked=f"storage.size {desired} cannot be applied, the claims keep "
            f"{', '.join(keep)}: {'; '.join(reasons)}"
        )
    return Plan(
        grow=tuple(sorted(m.name for m in small)),
        recreate_statefulset=template is not None and template < want,
    )


def member_claims(
    items: Sequence[Mapping[str, Any]], statefulset: str, template: str = c.DATA_VOLUME
) -> list[Claim]:
    """The StatefulSet's claims among a namespace's (`<template>-<sts>-<ordinal>`)."""
    pattern = re.compile(rf"^{re.escape(template)}-{re.escape(statefulset)}-\d+$")
    found = []
    for item in items:
        name = str((item.get("metadata") or {}).get("name") or "")
        if not pattern.match(name):
            continue
        spec = item.get("spec") or {}
        found.append(
            Claim(
                name=name,
                requested=((spec.get("resources") or {}).get("requests") or {}).get("storage"),
                storage_class=spec.get("storageClassName") or None,
            )
        )
    return sorted(found, key=lambda m: m.name)


def template_size(statefulset: Mapping[str, Any]) -> str | None:
    for claim in (statefulset.get("spec") or {}).get("volumeClaimTemplates") or []:
        if (claim.get("metadata") or {}).get("name") == c.DATA_VOLUME:
            requests = ((claim.get("spec") or {}).get("resources") or {}).get("requests") or {}
            size = requests.get("storage")
            return str(size) if size is not None else None
    return None


def needed(desired: str, live_sts: Mapping[str, Any], status: Mapping[str, Any] | None) -> bool:
    """Whether a pass should look at the claims: the template or the last record differs."""
    record = (status or {}).get(STATUS_KEY)
    recorded = record.get("size") if isinstance(record, Mapping) else None
    want = _size(desired)
    return _size(template_size(live_sts)) != want or (
        recorded is not None and _size(recorded) != want
    )


async def _storage_classes(kube: kube_api.Kube, names: set[str]) -> dict[str, bool | None]:
    found: dict[str, bool | None] = {}
    for name in sorted(names):
        try:
            item = await kube.request("GET", f"/apis/storage.k8s.io/v1/storageclasses/{name}")
        except kube_api.NotFoundError:
            found[name] = None
            continue
        found[name] = item.get("allowVolumeExpansion") is True
    return found


async def reconcile(
    kube: kube_api.Kube,
    body: Mapping[str, Any],
    live_sts: Mapping[str, Any],
    desired: str,
    *,
    now: str | None = None,
) -> bool:
    """Grow the claims (and the template) to `desired` where possible; True when the
    StatefulSet was deleted (orphaning its pods) to be created again with the new template."""
    meta = body["metadata"]
    namespace, sts_name = meta["namespace"], live_sts["metadata"]["name"]
    listed = await kube.request("GET", f"/api/v1/namespaces/{namespace}/persistentvolumeclaims")
    claims = member_claims(listed.get("items") or [], sts_name)
    classes = {m.storage_class for m in claims if m.storage_class}
    step = plan(desired, template_size(live_sts), claims, await _storage_classes(kube, classes))
    previous = (body.get("status") or {}).get(STATUS_KEY) or {}
    if step.blocked is not None:
        kube_api.post_event(body, reason="StorageNotExpandable", message=step.blocked, warning=True)
        record = {
            "requested": desired,
            "size": template_size(live_sts),
            "message": step.blocked,
            "time": previous.get("time"),
        }
        if {k: previous.get(k) for k in record} != record:
            await kube.patch_cluster_status(namespace, meta["name"], {STATUS_KEY: record})
        return False
    for name in step.grow:
        patch = {"spec": {"resources": {"requests": {"storage": desired}}}}
        await kube.merge_patch("v1", "PersistentVolumeClaim", namespace, name, patch)
    if step.grow:
        kube_api.post_event(
            body,
            reason="StorageExpanding",
            message=f"claims {', '.join(step.grow)} now ask for {desired}; the volume driver "
            "grows them (some grow the file system only at the pod's next start)",
        )
    if step.recreate_statefulset:
        await _orphan_delete(kube, live_sts)
        kube_api.post_event(
            body,
            reason="StatefulSetRecreated",
            message=f"StatefulSet {sts_name} deleted with --cascade=orphan (its pods and claims "
            f"stay) to be created again with claims of {desired}; no member restarts",
        )
    when = now or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    record = {"requested": desired, "size": desired, "message": "", "time": when}
    await kube.patch_cluster_status(namespace, meta["name"], {STATUS_KEY: record})
    return step.recreate_statefulset


async def _orphan_delete(kube: kube_api.Kube, live_sts: Mapping[str, Any]) -> None:
    """Delete the StatefulSet, not its pods; only the object read (uid and version), so a
    StatefulSet changed or made again meanwhile is left alone (409, retried next pass)."""
    meta = live_sts["metadata"]
    preconditions = {"uid": meta.get("uid"), "resourceVersion": meta.get("resourceVersion")}
    await kube.request(
        "DELETE",
        kube_api.object_path("apps/v1", "StatefulSet", meta["namespace"], meta["name"]),
        body={
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "propagationPolicy": "Orphan",
            "preconditions": {k: v for k, v in preconditions.items() if v},
        },
    )
