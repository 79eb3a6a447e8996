"""The bearer secrets a node accepts, and where they come from.

Three kinds (DESIGN.md "Access"): API keys (read and write the data API), read-only keys
(list, describe, get and search; writes and drops answer 403 ``read_only``) and cluster
tokens (admin and replication; also accepted on the data API so cluster components can read
status). Each kind may hold several values, so a secret is rotated without downtime: add the
new value, move the clients, remove the old one. A node sends the first cluster token.

Sources: the settings (``DVECDB_API_KEY``, ``DVECDB_READ_ONLY_KEY``, ``DVECDB_CLUSTER_TOKEN``;
comma-separated), or a folder holding the files ``apiKey``, ``readOnlyKey`` and
``clusterToken`` (a Kubernetes Secret mounted as a volume; one value per line). A file there
replaces the setting of its kind, and the folder is read again every ``refresh_seconds``, so
an edited Secret takes effect without a restart.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

from dvecdb_client.secrets import key_values

log = logging.getLogger(__name__)

FILES = {"api_keys": "apiKey", "read_only_keys": "readOnlyKey", "cluster_tokens": "clusterToken"}


@dataclass(frozen=True, slots=True)
class Credentials:
    api_keys: tuple[str, ...] = ()
    read_only_keys: tuple[str, ...] = ()
    cluster_tokens: tuple[str, ...] = ()

    @property
    def cluster_token(self) -> str | None:
        """The cluster token this node sends to other members."""
        return self.cluster_tokens[0] if self.cluster_tokens else None

    @property
    def data_closed(self) -> bool:
        """The data API needs a key (an API key or a read-only key is configured)."""
        return bool(self.api_keys or self.read_only_keys)


def read_folder(folder: Path, base: Credentials) -> Credentials:
    """``base`` with each kind whose file exists in ``folder`` replaced by that file's values."""
    values = {
        "api_keys": base.api_keys,
        "read_only_keys": base.read_only_keys,
        "cluster_tokens": base.cluster_tokens,
    }
    for kind, name in FILES.items():
        path = folder / name
        try:
            values[kind] = key_values(path.read_text())
        except FileNotFoundError:
            continue
    return Credentials(**values)


class CredentialStore:
    """The credentials now in force; :meth:`watch` re-reads the folder."""

    def __init__(self, base: Credentials, folder: Path | None = None) -> None:
        self.base = base
        self.folder = folder
        self.current = base if folder is None else read_folder(folder, base)

    def refresh(self) -> bool:
        """Re-read the folder; True if anything changed. A folder that cannot be read keeps
        the credentials in force (and says so)."""
        if self.folder is None:
            return False
        try:
            fresh = read_folder(self.folder, self.base)
        except OSError as exc:
            log.error(
                "cannot read credentials from %s, keeping the current ones: %s", self.folder, exc
            )
            return False
        if fresh == self.current:
            return False
        self.current = fresh
        log.info(
            "credentials reloaded from %s (%d API keys, %d read-only keys, %d cluster tokens)",
            self.folder,
            len(fresh.api_keys),
            len(fresh.read_only_keys),
            len(fresh.cluster_tokens),
        )
        return True

    async def watch(self, refresh_seconds: float) -> None:
        while True:
            await asyncio.sleep(refresh_seconds)
            self.refresh()
