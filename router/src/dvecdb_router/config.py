"""The shards' members from a file that someone else keeps current (the operator's ConfigMap).

The file is JSON: ``{"slotMap": {"version": V, "shards": N, "owners": [[first, last, shard],
...]}, "shards": [{"shard": 0, "members": ["http://10.0.0.5:8080", ...]}, ...]}``; ``owners``
absent means the even map over the listed shards. The operator rewrites it whenever a member's
address changes (a restarted pod gets a new IP) and whenever a resharding move publishes a new
map (which may list more or fewer shards); the kubelet then updates the mounted file, and the
router re-reads it before each poll, and at once when a write was refused ``slot_moved``.
Leaders are not in the file: the router learns them from the members' ``/v1/status``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from dvecdb_client.secrets import key_values
from dvecdb_client.slots import MAX_SHARDS, SlotMap

log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """The file does not describe 1..64 shards of http(s) member URLs."""


@dataclass(frozen=True, slots=True)
class ShardsConfig:
    slot_map: SlotMap
    shards: tuple[tuple[str, ...], ...]

    @property
    def version(self) -> int:
        return self.slot_map.version


def parse_config(raw: bytes) -> ShardsConfig:
    """Pure: the file's bytes to the member URLs per shard (in shard order)."""
    try:
        doc: Any = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"not JSON: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("shards"), list):
        raise ConfigError("expected an object with a list `shards`")
    entries = doc["shards"]
    if not 1 <= len(entries) <= MAX_SHARDS:
        raise ConfigError(f"1..{MAX_SHARDS} shards, not {len(entries)}")
    shards: list[tuple[str, ...]] = []
    for index, entry in enumerate(entries):
        members = entry.get("members") if isinstance(entry, dict) else None
        if not isinstance(members, list) or not all(isinstance(u, str) for u in members):
            raise ConfigError(f"shard {index}: `members` must be a list of URLs")
        for url in members:
            if not url.startswith(("http://", "https://")):
                raise ConfigError(f"shard {index}: {url!r} must start with http:// or https://")
        shards.append(tuple(u.rstrip("/") for u in members))
    return ShardsConfig(parse_slot_map(doc.get("slotMap"), len(shards)), tuple(shards))


def parse_slot_map(doc: Any, listed: int) -> SlotMap:
    """``slotMap`` to a SlotMap whose owners are all among the ``listed`` shards."""
    if doc is None:
        return SlotMap.even(listed)
    if not isinstance(doc, dict):
        raise ConfigError("`slotMap` must be an object")
    version = doc.get("version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ConfigError(f"slotMap.version must be a positive integer, not {version!r}")
    owners = doc.get("owners")
    try:
        if owners is None:
            count = doc.get("shards", listed)
            if not isinstance(count, int) or not 1 <= count <= listed:
                raise ConfigError(f"slotMap.shards is {count!r} but {listed} shards are listed")
            return SlotMap.even(count, version)
        if not isinstance(owners, list) or not all(
            isinstance(r, list) and len(r) == 3 and all(isinstance(v, int) for v in r)
            for r in owners
        ):
            raise ConfigError("slotMap.owners must be a list of [first, last, shard]")
        slot_map = SlotMap.from_owner_ranges(version, [(r[0], r[1], r[2]) for r in owners])
    except ConfigError:
        raise
    except ValueError as exc:
        raise ConfigError(f"slotMap: {exc}") from exc
    if slot_map.shards > listed:
        raise ConfigError(f"slotMap gives slots to shard {slot_map.shards - 1}; {listed} listed")
    return slot_map


class FileSource:
    """Reads the file again only when its bytes changed; keeps the last good config."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._raw: bytes | None = None
        self.current: ShardsConfig | None = None

    def read(self) -> ShardsConfig | None:
        """The config if it changed since the last call (None: unchanged or unreadable)."""
        try:
            raw = self.path.read_bytes()
        except OSError as exc:
            if self.current is None:
                raise ConfigError(f"cannot read {self.path}: {exc}") from exc
            log.warning("cannot read %s (keeping the last members): %s", self.path, exc)
            return None
        if raw == self._raw:
            return None
        self._raw = raw
        try:
            config = parse_config(raw)
        except ConfigError:
            if self.current is None:
                raise
            log.exception("ignoring a bad %s (keeping the last members)", self.path)
            return None
        self.current = config
        return config


class TokenFile:
    """The cluster token from a mounted Secret key, read again whenever the file changes,
    so that a rotated token is used without a restart (the members re-read theirs too).
    Several values (comma or newline separated, during a rotation): the first is sent."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._stamp: tuple[int, int] | None = None
        self._token: str | None = None

    def current(self) -> str | None:
        try:
            stat = self.path.stat()
            stamp = (stat.st_mtime_ns, stat.st_size)
            if stamp != self._stamp:
                self._token = first_token(self.path.read_text())
                self._stamp = stamp
        except OSError as exc:
            if self._stamp is not None:
                log.warning("cannot read the cluster token %s: %s", self.path, exc)
            self._stamp = None
        return self._token


def first_token(text: str | None) -> str | None:
    """The first non-blank of comma- or newline-separated values."""
    return next(iter(key_values(text)), None)
