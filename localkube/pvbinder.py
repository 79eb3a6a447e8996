"""Binds PersistentVolumeClaims (there is no storage provisioner): one hostPath PV per claim.

Each claim gets a folder under the plane's state dir and a PV pointing at it, bound both ways
as the PV controller would. The folder lives as long as the claim, so a StatefulSet pod that is
deleted and recreated finds its data again; when the claim is deleted, the PV and its folder go
(reclaim policy Delete).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from localkube.kubeclient import ApiError, KubeClient

Json = dict[str, Any]
log = logging.getLogger("localkube.pvbinder")

PROVISIONED_LABEL = "localkube.dvecdb.io/provisioned"


def pv_name(pvc: Json) -> str:
    return f"pvc-{pvc['metadata']['uid']}"


def claim_folder(root: Path, pvc: Json) -> Path:
    meta = pvc["metadata"]
    return root / "volumes" / f"{meta['namespace']}_{meta['name']}_{meta['uid']}"


def pv_for(pvc: Json, folder: Path) -> Json:
    meta, spec = pvc["metadata"], pvc.get("spec", {})
    size = ((spec.get("resources") or {}).get("requests") or {}).get("storage", "1Gi")
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": pv_name(pvc),
            "labels": {PROVISIONED_LABEL: "true"},
            "annotations": {"pv.kubernetes.io/provisioned-by": "localkube"},
        },
        "spec": {
            "capacity": {"storage": size},
            "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
            "hostPath": {"path": str(folder), "type": "DirectoryOrCreate"},
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": meta["namespace"],
                "name": meta["name"],
                "uid": meta["uid"],
            },
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": spec.get("storageClassName") or "",
            "volumeMode": spec.get("volumeMode") or "Filesystem",
        },
    }


def needs_binding(pvc: Json) -> bool:
    return (
        not pvc.get("metadata", {}).get("deletionTimestamp")
        and not pvc.get("spec", {}).get("volumeName")
        and (pvc.get("status") or {}).get("phase", "Pending") == "Pending"
    )


async def bind(client: KubeClient, root: Path, pvc: Json, folder_mode: int | None = None) -> None:
    meta = pvc["metadata"]
    folder = claim_folder(root, pvc)
    folder.mkdir(parents=True, exist_ok=True)
    if folder_mode is not None:
        folder.chmod(folder_mode)
    pv = pv_for(pvc, folder)
    try:
        await client.create("/api/v1/persistentvolumes", pv)
    except ApiError as err:
        if err.status != 409:
            raise
    name = pv["metadata"]["name"]
    await client.merge_patch(
        f"/api/v1/persistentvolumes/{name}/status", {"status": {"phase": "Bound"}}
    )
    path = f"/api/v1/namespaces/{meta['namespace']}/persistentvolumeclaims/{meta['name']}"
    await client.merge_patch(
        path,
        {
            "metadata": {
                "annotations": {
                    "pv.kubernetes.io/bind-completed": "yes",
                    "pv.kubernetes.io/bound-by-controller": "yes",
                }
            },
            "spec": {"volumeName": name},
        },
    )
    status = {
        "phase": "Bound",
        "accessModes": pv["spec"]["accessModes"],
        "capacity": pv["spec"]["capacity"],
    }
    await client.merge_patch(f"{path}/status", {"status": status})
    log.info("bound %s/%s to %s (%s)", meta["namespace"], meta["name"], name, folder)


async def release(client: KubeClient, pv: Json, claims: dict[str, Json]) -> None:
    """Delete a provisioned PV (and its folder) whose claim no longer exists."""
    ref = pv["spec"].get("claimRef") or {}
    claim = claims.get(f"{ref.get('namespace')}/{ref.get('name')}")
    if claim is not None and claim["metadata"]["uid"] == ref.get("uid"):
        return
    path = pv["spec"].get("hostPath", {}).get("path")
    if path:
        shutil.rmtree(path, ignore_errors=True)
    name = pv["metadata"]["name"]
    try:
        # The pv-protection controller keeps its finalizer while the volume says Bound.
        if (pv.get("status") or {}).get("phase") != "Released":
            await client.merge_patch(
                f"/api/v1/persistentvolumes/{name}/status", {"status": {"phase": "Released"}}
            )
        if not pv["metadata"].get("deletionTimestamp"):
            await client.delete(f"/api/v1/persistentvolumes/{name}")
            log.info(
                "released %s (claim %s/%s is gone)", name, ref.get("namespace"), ref.get("name")
            )
    except ApiError as err:
        if err.status != 404:
            raise


async def sync(client: KubeClient, root: Path, folder_mode: int | None = None) -> None:
    """Bind pending claims, release volumes whose claim is gone. ``folder_mode``: the real
    node gives no fsGroup ownership to hostPath volumes, so there each claim's folder is
    world-writable (0o777), as kind's local-path provisioner makes it."""
    claims = await client.items("/api/v1/persistentvolumeclaims")
    for pvc in claims:
        if needs_binding(pvc):
            await bind(client, root, pvc, folder_mode)
    by_key = {f"{c['metadata']['namespace']}/{c['metadata']['name']}": c for c in claims}
    volumes = await client.items(
        "/api/v1/persistentvolumes", params={"labelSelector": f"{PROVISIONED_LABEL}=true"}
    )
    for pv in volumes:
        await release(client, pv, by_key)
