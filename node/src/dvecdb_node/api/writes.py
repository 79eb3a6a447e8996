"""The one path every write endpoint takes: write gate, engine, acknowledgement level.

Leadership is checked three times: when the request arrives (a follower answers 409
``not_leader`` at once), under the engine's write lock right before the record gets its
seq (``Engine.submit``'s ``check``), and once the ``ack`` level is met: a member told of a
newer epoch, or whose lease lapsed meanwhile, acknowledges nothing (503, the write may or
may not persist).
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from dvecdb_node.api.keys import ENGINE, HOOKS, METRICS, ROLE, SETTINGS
from dvecdb_node.api.validation import parse_ack
from dvecdb_node.errors import NotLeader, NotReady
from dvecdb_node.storage.records import Change
from dvecdb_node.storage.slotfence import SlotMoved


@dataclass(frozen=True, slots=True)
class Written:
    """An acknowledged write: its token (``seq``, ``epoch``) and how many items it touched."""

    seq: int
    epoch: int
    count: int

    def token(self) -> dict[str, int]:
        return {"seq": self.seq, "epoch": self.epoch}


def unacknowledged(seq: int, reason: str, code: str) -> NotReady:
    return NotReady(f"{reason}; the write may or may not persist", code=code, seq=seq)


async def write(
    request: web.Request, change: Change, ack: object = None, *, fenced_ok: bool = False
) -> Written:
    """Check leadership, log and apply ``change``, then wait for the ``ack`` level.

    An upsert or delete touching a fenced slot is refused (409 ``slot_moved``) unless
    ``fenced_ok`` (resharding's import and purge).
    """
    app = request.app
    level = parse_ack(ack, app[SETTINGS].default_ack)
    role = app[ROLE]
    epoch = role.require_leader()
    role.require_epoch(epoch)
    try:
        result = await app[ENGINE].submit(
            change, epoch=epoch, check=role.require_epoch, fenced_ok=fenced_ok
        )
    except SlotMoved:
        app[METRICS].slot_moved.inc()
        raise
    await app[HOOKS].wait_ack(result.seq, level)
    try:
        role.require_epoch(epoch)
    except NotLeader:
        raise unacknowledged(
            result.seq, f"this member stopped leading at epoch {epoch}", "leadership_lost"
        ) from None
    except NotReady:
        raise unacknowledged(
            result.seq, "this leader's lease expired while the write waited", "lease_expired"
        ) from None
    return Written(result.seq, epoch, result.count)
