"""The one path every write endpoint takes: write gate, engine, acknowledgement level."""

from __future__ import annotations

from aiohttp import web
from dvecdb_node.api.keys import ENGINE, HOOKS, ROLE, SETTINGS
from dvecdb_node.api.validation import parse_ack
from dvecdb_node.storage.engine import WriteResult
from dvecdb_node.storage.records import Change


async def write(request: web.Request, change: Change, ack: object = None) -> WriteResult:
    """Check leadership, log and apply ``change``, then wait for the ``ack`` level."""
    app = request.app
    level = parse_ack(ack, app[SETTINGS].default_ack)
    epoch = app[ROLE].require_leader()
    result = await app[ENGINE].submit(change, epoch=epoch)
    await app[HOOKS].wait_ack(result.seq, level)
    return result
