"""Bearer-token checks (DESIGN.md "Access"; the secrets are :mod:`dvecdb_node.credentials`).

- ``/v1/admin`` and ``/v1/replication`` need a cluster token when one is set.
- Other ``/v1`` paths, once an API key or a read-only key is set, need an API key or a
  cluster token, or a read-only key for reads: ``GET`` and searches. A read-only key on a
  write answers 403 ``read_only``.
- Health, metrics and the OpenAPI document stay open for probes.
"""

from __future__ import annotations

import hmac

from aiohttp import web

from dvecdb_node.api.errors import Handler
from dvecdb_node.api.keys import CREDENTIALS
from dvecdb_node.credentials import Credentials
from dvecdb_node.errors import Forbidden, Unauthorized

_CLUSTER_PREFIXES = ("/v1/admin", "/v1/replication")


def parse_bearer(header: str) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` value, or None."""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return None
    return token.strip()


def bearer_token(request: web.Request) -> str | None:
    return parse_bearer(request.headers.get("Authorization", ""))


def is_read(method: str, path: str) -> bool:
    """Requests a read-only key may make: GETs and searches."""
    return method in ("GET", "HEAD") or (method == "POST" and path.endswith("/search"))


def _any_matches(token: str, secrets: tuple[str, ...]) -> bool:
    # Every secret is compared (no early exit), in constant time each.
    return sum(hmac.compare_digest(token, secret) for secret in secrets) > 0


def check_access(method: str, path: str, token: str | None, creds: Credentials) -> None:
    """Pure decision: raise 401/403 unless ``token`` opens ``method path``."""
    if not path.startswith("/v1/"):
        return
    if path.startswith(_CLUSTER_PREFIXES):
        if not creds.cluster_tokens:
            return
        allowed = creds.cluster_tokens
    else:
        if not creds.data_closed:
            return
        allowed = creds.api_keys + creds.cluster_tokens
    if token is None:
        raise Unauthorized("missing bearer token")
    if _any_matches(token, allowed):
        return
    if (
        creds.read_only_keys
        and _any_matches(token, creds.read_only_keys)
        and not path.startswith(_CLUSTER_PREFIXES)
    ):
        if is_read(method, path):
            return
        raise Forbidden("this key may only read (list, get, search)", code="read_only")
    raise Forbidden("invalid token")


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    creds = request.app[CREDENTIALS].current
    check_access(request.method, request.path, bearer_token(request), creds)
    return await handler(request)
