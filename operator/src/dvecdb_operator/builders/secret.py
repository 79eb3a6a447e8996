"""The cluster-token Secret: the shared bearer token for admin and replication calls.

The token is generated once and never rotated by a reconcile (members would lose each other
mid-stream), so the reconciler only creates this Secret when it is absent.
"""

from __future__ import annotations

import base64
import secrets
from typing import Any

from dvecdb_operator import constants as c
from dvecdb_operator.builders.common import ClusterRef, metadata

TOKEN_BYTES = 32


def new_token() -> str:
    """A fresh URL-safe token with 256 bits of entropy."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def build_token_secret(cluster: ClusterRef, name: str, token: str) -> dict[str, Any]:
    encoded = base64.b64encode(token.encode()).decode()
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(cluster, name, component="auth"),
        "type": "Opaque",
        "data": {c.TOKEN_KEY: encoded},
    }


def read_token(secret: dict[str, Any]) -> str | None:
    """The token inside a Secret object (as returned by the API), if it has one."""
    encoded = (secret.get("data") or {}).get(c.TOKEN_KEY)
    if not encoded:
        return None
    try:
        token = base64.b64decode(encoded, validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    return token or None
