"""Checkpoints on disk, and their single-file form (a tar) for shipping to a follower.

A checkpoint is a folder ``checkpoints/<seq:020d>/`` holding one sub-folder per collection
(``c<i>/index.bin, vectors.npy, state.json``) and ``manifest.json`` with the seq and epoch it
covers and the size and CRC32 of every file. It is written under ``<seq>.tmp``, every file and
folder fsynced, then renamed into place: a folder without ``.tmp`` is complete, and the CRCs
catch a damaged one, in which case recovery falls back to the previous checkpoint.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from dvecdb_node.storage.index import Collection, FrozenCollection
from dvecdb_node.storage.wal import fsync_path

FORMAT = 1
MANIFEST = "manifest.json"
_TMP = ".tmp"


class CheckpointError(Exception):
    """A checkpoint or snapshot is incomplete, damaged or of an unknown format."""


@dataclass(frozen=True, slots=True)
class CheckpointInfo:
    seq: int
    epoch: int
    path: Path
    # The fenced slots as ``SlotFences.to_json`` runs (None in checkpoints from before them).
    slot_fences: Any = None


def _crc_file(path: Path) -> int:
    crc = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            crc = zlib.crc32(chunk, crc)
    return crc


def _folder_name(seq: int) -> str:
    return f"{seq:020d}"


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Complete-looking checkpoint folders, newest first (not yet verified)."""
    if not root.is_dir():
        return []
    found: list[tuple[int, Path]] = []
    for path in root.iterdir():
        if path.is_dir() and path.name.isdigit():
            found.append((int(path.name), path))
    return sorted(found, reverse=True)


def write_checkpoint(
    root: Path,
    *,
    seq: int,
    epoch: int,
    collections: Iterable[Collection | FrozenCollection],
    slot_fences: Any = None,
) -> CheckpointInfo:
    """Write a checkpoint covering ``seq`` atomically (see the module docstring)."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / _folder_name(seq)
    tmp = root / (_folder_name(seq) + _TMP)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        return _write_checkpoint_files(
            root, tmp, final, seq=seq, epoch=epoch, collections=collections, fences=slot_fences
        )
    except BaseException:
        # A failed checkpoint (a full disk) must not keep holding the space it took.
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write_checkpoint_files(
    root: Path,
    tmp: Path,
    final: Path,
    *,
    seq: int,
    epoch: int,
    collections: Iterable[Collection | FrozenCollection],
    fences: Any = None,
) -> CheckpointInfo:
    """Fill ``tmp``, fsync everything, then rename it to ``final``."""
    entries: list[dict[str, Any]] = []
    for number, collection in enumerate(collections):
        sub = tmp / f"c{number}"
        files = collection.save(sub)
        described: dict[str, Any] = {}
        for path in files:
            fsync_path(path)
            described[path.name] = {"size": path.stat().st_size, "crc32": _crc_file(path)}
        fsync_path(sub)
        entries.append({"name": collection.name, "dir": sub.name, "files": described})
    manifest = {
        "format": FORMAT,
        "seq": seq,
        "epoch": epoch,
        "created": time.time(),
        "collections": entries,
        "slot_fences": fences or [],
    }
    manifest_path = tmp / MANIFEST
    manifest_path.write_bytes(orjson.dumps(manifest))
    fsync_path(manifest_path)
    fsync_path(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    fsync_path(root)
    return CheckpointInfo(seq=seq, epoch=epoch, path=final, slot_fences=fences or [])


def read_manifest(path: Path) -> dict[str, Any]:
    try:
        manifest: dict[str, Any] = orjson.loads((path / MANIFEST).read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise CheckpointError(f"{path.name}: unreadable manifest: {exc}") from exc
    if manifest.get("format") != FORMAT:
        raise CheckpointError(f"{path.name}: unknown checkpoint format {manifest.get('format')}")
    return manifest


def verify_checkpoint(path: Path) -> CheckpointInfo:
    """Check every file's size and CRC32 against the manifest."""
    manifest = read_manifest(path)
    for entry in manifest["collections"]:
        for name, expect in entry["files"].items():
            file = path / entry["dir"] / name
            try:
                size = file.stat().st_size
            except OSError as exc:
                raise CheckpointError(f"{path.name}: missing {file.name}") from exc
            if size != expect["size"] or _crc_file(file) != expect["crc32"]:
                raise CheckpointError(f"{path.name}: {entry['dir']}/{name} is damaged")
    return CheckpointInfo(
        seq=int(manifest["seq"]),
        epoch=int(manifest["epoch"]),
        path=path,
        slot_fences=manifest.get("slot_fences"),
    )


def load_checkpoint(path: Path) -> tuple[CheckpointInfo, dict[str, Collection]]:
    """Verify and load a checkpoint's collections."""
    info = verify_checkpoint(path)
    manifest = read_manifest(path)
    collections: dict[str, Collection] = {}
    try:
        for entry in manifest["collections"]:
            collections[entry["name"]] = Collection.load(path / entry["dir"])
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise CheckpointError(f"{path.name}: cannot load: {exc}") from exc
    return info, collections


def prune_checkpoints(root: Path, *, keep: int, keep_paths: Iterable[Path] = ()) -> list[int]:
    """Delete all but the newest ``keep`` checkpoints and leftover temp folders."""
    pinned = {p.resolve() for p in keep_paths}
    removed: list[int] = []
    for seq, path in list_checkpoints(root)[keep:]:
        if path.resolve() in pinned:
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(seq)
    if root.is_dir():
        for path in root.iterdir():
            if path.name.endswith(_TMP):
                shutil.rmtree(path, ignore_errors=True)
    return removed


def pack_snapshot(checkpoint: Path, dest: Path) -> Path:
    """One uncompressed tar of a checkpoint folder (vectors do not compress much)."""
    with tarfile.open(dest, "w") as tar:
        tar.add(checkpoint, arcname=checkpoint.name)
    return dest


def unpack_snapshot(archive: Path, root: Path) -> CheckpointInfo:
    """Install a snapshot tar as a checkpoint folder under ``root``, verified, atomically."""
    root.mkdir(parents=True, exist_ok=True)
    staging = root / ("incoming" + _TMP)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        with tarfile.open(archive, "r") as tar:
            members = tar.getmembers()
            tops = {Path(m.name).parts[0] for m in members if m.name}
            if len(tops) != 1 or not next(iter(tops)).isdigit():
                raise CheckpointError("snapshot must hold exactly one checkpoint folder")
            tar.extractall(staging, filter="data")
    except (tarfile.TarError, OSError) as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise CheckpointError(f"unreadable snapshot: {exc}") from exc
    folder = staging / next(iter(tops))
    try:
        info = verify_checkpoint(folder)
    except CheckpointError:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    for file in folder.rglob("*"):
        fsync_path(file)
    fsync_path(folder)
    final = root / _folder_name(info.seq)
    if final.exists():
        shutil.rmtree(final)
    os.replace(folder, final)
    fsync_path(root)
    shutil.rmtree(staging, ignore_errors=True)
    return CheckpointInfo(seq=info.seq, epoch=info.epoch, path=final, slot_fences=info.slot_fences)
