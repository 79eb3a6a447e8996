"""The auth Secret: the cluster's API key, read-only key and cluster token.

Members mount it and re-read it while running, so editing it rotates a key without a restart;
the operator reads the cluster token from it for its admin calls. A reconcile only adds what
is missing (`missing_values`) and never changes a value that is there: a user's key, or a
token members are using mid-stream. A Secret written by an operator from before the access
keys holds only `token`; its value becomes `clusterToken`, so members keep trusting each
other through the rolling restart that moves them to the mounted Secret.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Mapping
from typing import Any

from dvecdb_client.secrets import key_values
from dvecdb_operator import constants as c
from dvecdb_operator.builders.common import ClusterRef, metadata

TOKEN_BYTES = 32


def new_token() -> str:
    """A fresh URL-safe token with 256 bits of entropy."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def _encode(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


def _decode(encoded: object) -> str | None:
    if not isinstance(encoded, str):
        return None
    try:
        return base64.b64decode(encoded, validate=True).decode()
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None


def secret_values(secret: Mapping[str, Any] | None) -> dict[str, str]:
    """Every decodable key of a Secret object as returned by the API (`data`, base64)."""
    found: dict[str, str] = {}
    for key, encoded in ((secret or {}).get("data") or {}).items():
        value = _decode(encoded)
        if value is not None:
            found[key] = value
    return found


def missing_values(present: Mapping[str, str], *, generate: Any = new_token) -> dict[str, str]:
    """The auth keys to add to a Secret holding `present`: a fresh value for each one absent
    (the legacy `token` for `clusterToken` when there is one). An empty value is a value."""
    added: dict[str, str] = {}
    for key in c.AUTH_KEYS:
        if key in present:
            continue
        legacy = present.get(c.LEGACY_TOKEN_KEY)
        added[key] = legacy if key == c.CLUSTER_TOKEN_KEY and legacy else generate()
    return added


def build_auth_secret(cluster: ClusterRef, name: str, values: Mapping[str, str]) -> dict[str, Any]:
    """A new auth Secret holding `values` (see `missing_values`)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(cluster, name, component="auth"),
        "type": "Opaque",
        "data": {key: _encode(value) for key, value in values.items()},
    }


def added_keys_patch(values: Mapping[str, str], resource_version: str | None) -> dict[str, Any]:
    """A merge patch adding `values` to an existing Secret, refused (409) if it changed
    since it was read: two operators never both add a different cluster token."""
    patch: dict[str, Any] = {"data": {key: _encode(value) for key, value in values.items()}}
    if resource_version:
        patch["metadata"] = {"resourceVersion": resource_version}
    return patch


def read_cluster_token(secret: Mapping[str, Any] | None) -> str | None:
    """The cluster token the operator sends: the first value of `clusterToken` (members send
    the first too; rotation puts the new value first once every member accepts it), else the
    legacy `token`. "" when the key is there but empty (the admin API is then open); None when
    the Secret has neither key yet."""
    values = secret_values(secret)
    for key in (c.CLUSTER_TOKEN_KEY, c.LEGACY_TOKEN_KEY):
        if key in values:
            found = key_values(values[key])
            return found[0] if found else ""
    return None
