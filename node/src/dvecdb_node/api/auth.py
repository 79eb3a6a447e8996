"""Bearer-token checks: the cluster token guards admin and replication, the API key the data.

Paths under ``/v1/admin`` and ``/v1/replication`` need the cluster token when one is set;
other ``/v1`` paths need the API key (or the cluster token, so cluster components can read
status) when one is set. Health, metrics and the OpenAPI document stay open for probes.
"""

from __future__ import annotations

import hmac

from aiohttp import web

from dvecdb_node.api.errors import Handler
from dvecdb_node.api.keys import SETTINGS
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


def _matches(token: str | None, secret: str | None) -> bool:
    return token is not None and secret is not None and hmac.compare_digest(token, secret)


def check_access(path: str, token: str | None, api_key: str | None, cluster: str | None) -> None:
    """Pure decision: raise 401/403 unless ``token`` opens ``path``."""
    if not path.startswith("/v1/"):
        return
    if path.startswith(_CLUSTER_PREFIXES):
        allowed = [cluster]
    else:
        allowed = [api_key, cluster] if api_key else []
    if not any(secret for secret in allowed):
        return
    if token is None:
        raise Unauthorized("missing bearer token")
    if not any(_matches(token, secret) for secret in allowed):
        raise Forbidden("invalid token")


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    check_access(request.path, bearer_token(request), settings.api_key, settings.cluster_token)
    return await handler(request)
