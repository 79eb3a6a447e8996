"""A trial's history: every operation with its invocation and completion, as Jepsen keeps one.

An operation is invoked at ``invoke`` and completes at ``complete`` as ``ok`` (it happened),
``fail`` (it certainly did not: a refusal such as 409 ``not_leader`` or a 400) or ``info`` (it
may or may not have: a timeout, a 503, a cut connection). The nemesis's faults are operations
too (``process == "nemesis"``), so the checker can tell from the history alone how many members
were faulty at once; so are the operator's promote/follow/fence calls (``process ==
"operator"``), so it can tell when a member had been told of an epoch. Plain data: the
history is written as JSON next to a failing trial.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Final, Literal

Outcome = Literal["invoke", "ok", "fail", "info"]
OK: Final = "ok"
FAIL: Final = "fail"
INFO: Final = "info"

WRITE = "write"
READ = "read"
FAULT = "fault"
ADMIN = "admin"  # the operator told a member an epoch (kind: promote, follow, fence)


@dataclass
class Op:
    """One operation: a write of one record, a read, or a fault of the nemesis."""

    process: str
    f: str
    invoke: float
    complete: float | None = None
    type: Outcome = "invoke"
    node: str | None = None
    # writes: the record's id, the ack level asked for; the token answered (seq, epoch)
    id: str | None = None
    ack: str | None = None
    seq: int | None = None
    epoch: int | None = None
    # reads: consistency level; for min_seq, the write whose token it carried (``of``)
    consistency: str | None = None
    of: str | None = None
    ids: list[str] | None = None
    # faults: kind and the members it makes faulty (a link cut counts its one named end)
    kind: str | None = None
    members: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass
class Replica:
    """What one member holds once everything is healed and has had time to converge."""

    ids: frozenset[str] | None  # None: the member could not be read
    last_seq: int = 0
    epoch: int = 0
    role: str | None = None
    count: int | None = None


@dataclass
class History:
    ops: list[Op] = field(default_factory=list)

    def invoke(self, op: Op) -> Op:
        self.ops.append(op)
        return op

    def to_json(self) -> str:
        return json.dumps([asdict(op) for op in self.ops])

    def dump(self, path: Path, final: dict[str, Replica]) -> None:
        replicas = {
            name: {**asdict(r), "ids": None if r.ids is None else sorted(r.ids)}
            for name, r in final.items()
        }
        path.write_text(json.dumps({"ops": [asdict(op) for op in self.ops], "final": replicas}))


def complete(op: Op, outcome: Outcome, at: float, **fields: object) -> Op:
    op.type = outcome
    op.complete = at
    for key, value in fields.items():
        setattr(op, key, value)
    return op
