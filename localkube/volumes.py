"""Materialise a pod's volumes as host folders; the launcher bind-mounts them at mountPath.

PVC volumes resolve to the hostPath folder of the PersistentVolume the claim is bound to, so
their data outlive the pod; emptyDir, Secret, ConfigMap, Downward API and projected volumes
live in the pod's own folder and go with it. Secret and ConfigMap volumes are brought up to
date while the pod runs (`refresh`), as the kubelet does (file by file here, each replaced
by a rename, where the kubelet swaps a `..data` symlink to a new folder). The projected
service-account volume that the API server's admission adds to every pod gets a real bound
token from the TokenRequest API, so in-cluster clients (the operator) authenticate as the
pod's service account.
"""

from __future__ import annotations

import base64
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localkube.kubeclient import ApiError, KubeClient
from localkube.podspec import ConfigError, Json, Objects, field_ref

DEFAULT_MODE = 0o644
MOUNTPOINT_LEDGER = "mountpoints.txt"


class VolumeNotReady(Exception):
    """A volume cannot be set up yet (for example its claim is not bound); retry later."""


@dataclass(frozen=True)
class Mount:
    """One bind mount in a container: host ``source`` appears at ``target``."""

    source: Path
    target: str
    read_only: bool


def _write_file(folder: Path, rel: str, data: bytes, mode: int) -> None:
    path = (folder / rel).resolve()
    if folder.resolve() not in path.parents:
        raise ConfigError(f"volume item path {rel!r} escapes its volume")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)


def _key_bytes(obj: Json) -> dict[str, bytes]:
    if obj.get("kind") == "Secret":
        return {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
    data = {k: v.encode() for k, v in (obj.get("data") or {}).items()}
    data.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
    return data


def _write_keys(
    folder: Path, kind: str, source: Json, name: str, objects: Objects, default_mode: int
) -> None:
    obj = objects.get((kind, name))
    if obj is None:
        if source.get("optional"):
            return
        raise VolumeNotReady(f'{kind.lower()} "{name}" not found')
    data = _key_bytes(obj)
    items = source.get("items")
    if items:
        for item in items:
            key = item["key"]
            if key not in data:
                if source.get("optional"):
                    continue
                raise ConfigError(f"{kind} {name} has no key {key!r}")
            _write_file(folder, item["path"], data[key], int(item.get("mode", default_mode)))
    else:
        for key, value in data.items():
            _write_file(folder, key, value, default_mode)


def _write_downward(folder: Path, pod: Json, items: list[Json], default_mode: int) -> None:
    for item in items:
        if "fieldRef" not in item:
            raise ConfigError("downwardAPI volumes support fieldRef items only")
        value = field_ref(pod, item["fieldRef"]["fieldPath"])
        _write_file(folder, item["path"], value.encode(), int(item.get("mode", default_mode)))


async def _token(client: KubeClient, pod: Json, source: Json) -> bytes:
    meta = pod["metadata"]
    account = pod["spec"].get("serviceAccountName") or "default"
    spec: dict[str, Any] = {
        "expirationSeconds": int(source.get("expirationSeconds", 3607)),
        "boundObjectRef": {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": meta["name"],
            "uid": meta["uid"],
        },
    }
    if source.get("audience"):
        spec["audiences"] = [source["audience"]]
    path = f"/api/v1/namespaces/{meta['namespace']}/serviceaccounts/{account}/token"
    try:
        result = await client.create(path, {"apiVersion": "authentication.k8s.io/v1", "spec": spec})
    except ApiError as err:
        raise VolumeNotReady(f"service account token for {account}: {err.message}") from err
    return str(result["status"]["token"]).encode()


def _ensure_dir(folder: Path, fresh: bool = False) -> Path:
    if fresh and folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _host_path(source: Json) -> Path:
    path = Path(source["path"])
    if source.get("type") == "DirectoryOrCreate":
        path.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        raise VolumeNotReady(f"hostPath {path} does not exist")
    return path


async def _pvc_folder(client: KubeClient, namespace: str, claim: str) -> Path:
    pvc = await client.get_or_none(f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/{claim}")
    if pvc is None:
        raise VolumeNotReady(f'persistentvolumeclaim "{claim}" not found')
    if (pvc.get("status") or {}).get("phase") != "Bound":
        raise VolumeNotReady(f'persistentvolumeclaim "{claim}" is not bound yet')
    pv = await client.get_or_none(f"/api/v1/persistentvolumes/{pvc['spec']['volumeName']}")
    host_path = ((pv or {}).get("spec") or {}).get("hostPath", {}).get("path")
    if not host_path:
        raise ConfigError(f"volume of claim {claim} is not a hostPath volume localkube can mount")
    return _ensure_dir(Path(host_path))


async def prepare(
    client: KubeClient, pod: Json, pod_dir: Path, objects: Objects
) -> dict[str, Path]:
    """Create every volume of the pod; returns volume name -> host folder."""
    result: dict[str, Path] = {}
    namespace = pod["metadata"]["namespace"]
    for volume in pod["spec"].get("volumes") or []:
        name = volume["name"]
        folder = pod_dir / "volumes" / name
        if "persistentVolumeClaim" in volume:
            claim = volume["persistentVolumeClaim"]["claimName"]
            result[name] = await _pvc_folder(client, namespace, claim)
            continue
        if "hostPath" in volume:
            result[name] = _host_path(volume["hostPath"])
            continue
        # Content volumes are rewritten on every (re)start; an emptyDir keeps its data.
        result[name] = _ensure_dir(folder, fresh="emptyDir" not in volume)
        if "emptyDir" in volume:
            continue
        if "secret" in volume:
            source = volume["secret"]
            mode = int(source.get("defaultMode", DEFAULT_MODE))
            _write_keys(folder, "Secret", source, source["secretName"], objects, mode)
        elif "configMap" in volume:
            source = volume["configMap"]
            mode = int(source.get("defaultMode", DEFAULT_MODE))
            _write_keys(folder, "ConfigMap", source, source["name"], objects, mode)
        elif "downwardAPI" in volume:
            source = volume["downwardAPI"]
            mode = int(source.get("defaultMode", DEFAULT_MODE))
            _write_downward(folder, pod, source.get("items") or [], mode)
        elif "projected" in volume:
            projected = volume["projected"]
            mode = int(projected.get("defaultMode", DEFAULT_MODE))
            for source in projected.get("sources") or []:
                if "serviceAccountToken" in source:
                    token_source = source["serviceAccountToken"]
                    token = await _token(client, pod, token_source)
                    _write_file(
                        folder, token_source["path"], token, 0o600 if mode > 0o644 else mode
                    )
                elif "configMap" in source:
                    ref = source["configMap"]
                    _write_keys(folder, "ConfigMap", ref, ref["name"], objects, mode)
                elif "secret" in source:
                    ref = source["secret"]
                    _write_keys(folder, "Secret", ref, ref["name"], objects, mode)
                elif "downwardAPI" in source:
                    _write_downward(folder, pod, source["downwardAPI"].get("items") or [], mode)
                else:
                    raise ConfigError(f"unsupported projected source {sorted(source)}")
        else:
            kinds = sorted(k for k in volume if k != "name")
            raise ConfigError(f"volume {name}: unsupported volume type {kinds}")
    return result


def _same_file(a: Path, b: Path) -> bool:
    return (
        b.is_file()
        and a.read_bytes() == b.read_bytes()
        and (a.stat().st_mode & 0o7777) == (b.stat().st_mode & 0o7777)
    )


def _sync_folder(fresh: Path, live: Path) -> bool:
    """Make `live` hold exactly the files of `fresh`: changed ones replaced by a rename (a
    reader sees the old or the new content, never a mix), gone ones removed. True if any
    file changed."""
    changed = False
    wanted = {p.relative_to(fresh) for p in fresh.rglob("*") if p.is_file()}
    for rel in sorted(wanted):
        source, target = fresh / rel, live / rel
        if _same_file(source, target):
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        staged = target.parent / f".{target.name}.localkube-tmp"
        shutil.copyfile(source, staged)
        staged.chmod(source.stat().st_mode & 0o7777)
        os.replace(staged, target)
        changed = True
    for path in sorted(live.rglob("*"), reverse=True):
        if path.is_file() and path.relative_to(live) not in wanted:
            path.unlink()
            changed = True
    return changed


def refresh(pod: Json, volumes: dict[str, Path], objects: Objects) -> list[str]:
    """Rewrite the pod's Secret and ConfigMap volumes from the objects as they are now;
    returns the names of the volumes that changed. A missing object leaves its volume as it
    was (the kubelet keeps the last content too); projected volumes are not refreshed."""
    changed = []
    for volume in pod["spec"].get("volumes") or []:
        name = volume["name"]
        if name not in volumes or not ("secret" in volume or "configMap" in volume):
            continue
        kind, source = (
            ("Secret", volume["secret"])
            if "secret" in volume
            else ("ConfigMap", volume["configMap"])
        )
        ref = source["secretName"] if kind == "Secret" else source["name"]
        if objects.get((kind, ref)) is None:
            continue
        with tempfile.TemporaryDirectory(prefix="localkube-volume-") as tmp:
            staged = Path(tmp)
            try:
                mode = int(source.get("defaultMode", DEFAULT_MODE))
                _write_keys(staged, kind, source, ref, objects, mode)
            except (VolumeNotReady, ConfigError):
                continue
            if _sync_folder(staged, volumes[name]):
                changed.append(name)
    return changed


def mounts(container: Json, volumes: dict[str, Path]) -> list[Mount]:
    """The container's volumeMounts as bind mounts (subPath resolved and created)."""
    result = []
    for mount in container.get("volumeMounts") or []:
        name = mount["name"]
        if name not in volumes:
            raise ConfigError(f"volumeMount {name!r} names no volume of the pod")
        source = volumes[name]
        sub = mount.get("subPath")
        if sub:
            source = (source / sub).resolve()
            if volumes[name].resolve() not in [source, *source.parents]:
                raise ConfigError(f"subPath {sub!r} escapes volume {name}")
            if not source.exists():
                source.mkdir(parents=True)
        result.append(Mount(source, mount["mountPath"], bool(mount.get("readOnly", False))))
    return result


def ensure_mountpoint(mount: Mount, ledger: Path) -> None:
    """Create a missing mountPath on the host (bind mounts need one), noting it in ``ledger``.

    The mount itself lives only in the container's private namespace; the empty folder (or
    file) it needs does not, so the plane removes what the ledger lists when it stops.
    """
    target = Path(mount.target)
    if target.exists():
        return
    top = target
    while not top.parent.exists():
        top = top.parent
    with ledger.open("a") as notes:
        notes.write(f"{top}\n")
    if mount.source.is_dir():
        target.mkdir(parents=True, exist_ok=True)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.touch()


def remove_mountpoints(ledger: Path) -> list[str]:
    """Remove the mountpoints a plane created, if they are still empty; returns them."""
    if not ledger.exists():
        return []
    removed = []
    for line in sorted(set(ledger.read_text().splitlines()), key=len, reverse=True):
        path = Path(line)
        if not line or not path.is_absolute():
            continue
        if _remove_if_empty(path):
            removed.append(line)
    ledger.unlink()
    return removed


def _remove_if_empty(path: Path) -> bool:
    """rmdir a tree of empty folders / unlink an empty file; leave anything with data."""
    if path.is_symlink() or not path.exists():
        return False
    if path.is_file():
        if path.stat().st_size == 0:
            path.unlink()
            return True
        return False
    for child in path.iterdir():
        _remove_if_empty(child)
    try:
        path.rmdir()
    except OSError:
        return False
    return True


def remove_pod_dir(pod_dir: Path) -> None:
    """Drop the pod's own volumes (emptyDir and the rest); logs beside them stay."""
    volumes = pod_dir / "volumes"
    if volumes.exists():
        shutil.rmtree(volumes, ignore_errors=True)
