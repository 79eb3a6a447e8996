"""The read gate: data reads answer 503 while any registered check refuses them.

Replication registers a check (a follower still reconciling its log with its leader must
not serve rows its leader may truncate); the aiohttp middleware and the fast lane both ask.
"""

from __future__ import annotations

from aiohttp import web
from dvecdb_node.api.errors import Handler
from dvecdb_node.api.keys import READ_GATES

_DATA_PREFIX = "/v1/collections"


def is_data_read(method: str, path: str) -> bool:
    return path.startswith(_DATA_PREFIX) and (method == "GET" or path.endswith("/search"))


def check_reads(app: web.Application) -> None:
    """Raise the first registered refusal, if any."""
    for gate in app[READ_GATES]:
        gate()


@web.middleware
async def read_gate(request: web.Request, handler: Handler) -> web.StreamResponse:
    if is_data_read(request.method, request.path):
        check_reads(request.app)
    return await handler(request)
