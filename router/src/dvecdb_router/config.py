"""The shards' members from a file that someone else keeps current (the operator's ConfigMap).

The file is JSON: ``{"slotMap": {"version": N, "shards": S}, "shards": [{"shard": 0,
"members": ["http://10.0.0.5:8080", ...]}, ...]}``. The operator rewrites it whenever a member's
address changes (a restarted pod gets a new IP); the kubelet then updates the mounted file, and
the router re-reads it before each poll when its content changed. Leaders are not in the file:
the router learns them from the members' ``/v1/status`` as before, so a failover needs no new
file. A file whose shard count differs from the router's is refused (moving slots between
shards is resharding, which the router does not do yet).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from dvecdb_client.secrets import key_values
from dvecdb_client.slots import MAX_SHARDS

log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """The file does not describe 1..64 shards of http(s) member URLs."""


@dataclass(frozen=True, slots=True)
class ShardsConfig:
    version: int
    shards: tuple[tuple[str, ...], ...]


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
    slot_map = doc.get("slotMap")
    version = slot_map.get("version", 1) if isinstance(slot_map, dict) else 1
    return ShardsConfig(version if isinstance(version, int) else 1, tuple(shards))


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
