"""The checker: from a history and the healed replicas alone, which promises a trial broke.

Pure (no I/O, no clock), after Jepsen's ``set`` checker: a write acknowledged is a record that
must be there at the end; a record there at the end must have been attempted and not refused.
The promises (DESIGN.md, "What an acknowledgement promises") give the fault budget:

- ``ack=quorum``: never lost while a majority keeps its disks. The nemesis never destroys a
  disk (a full disk is freed again), so any quorum loss is a violation.
- ``ack=one``: never lost when at most one member was faulty at a time. The budget is read from
  the history's fault operations; a trial with two members faulty at once reports its ``one``
  losses as allowed, not as violations.
- ``ack=leader``: may be lost; reported, never a violation.
- No phantoms: every record on a replica (and every record a read returned) was attempted, was
  not refused, and was attempted before the read that saw it ended.
- Replicas identical once healed: same records, same position, every member readable.
- One epoch, one leader: no two acknowledged writes carry the same (epoch, seq) token.
- ``ack`` of any level is never given by a member already told of a newer epoch: a write sent
  after the member answered the operator's promote/follow/fence at E carries no epoch below E.
- A ``strong`` read contains every write acknowledged before it began that the cluster kept;
  a ``min_seq`` read contains the write whose token it carried.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from .history import ADMIN, FAIL, FAULT, OK, READ, WRITE, Op, Replica

ACK_LEVELS = ("leader", "one", "quorum")


@dataclass
class Result:
    """Counts and the evidence behind them; ``valid`` is what a trial asserts."""

    ops: int = 0
    writes: int = 0
    reads: int = 0
    acked: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    reads_ok: Counter[str] = field(default_factory=Counter)  # by consistency level
    reads_tried: Counter[str] = field(default_factory=Counter)
    max_faulty: int = 0
    lost: list[tuple[str, str]] = field(default_factory=list)  # (id, ack): violations
    lost_allowed: list[tuple[str, str]] = field(default_factory=list)
    phantoms: list[tuple[str, str]] = field(default_factory=list)  # (where, id)
    divergence: list[str] = field(default_factory=list)
    stale_strong: list[int] = field(default_factory=list)  # history indices of the reads
    stale_min_seq: list[int] = field(default_factory=list)
    token_conflicts: list[tuple[int, int]] = field(default_factory=list)  # (epoch, seq) twice
    # (write id, member, its epoch, the newer epoch the member had been told before it began)
    acked_after_newer_epoch: list[tuple[str, str, int, int]] = field(default_factory=list)
    indeterminate_kept: int = 0  # writes that completed ``info`` and are there in the end

    @property
    def valid(self) -> bool:
        return not (
            self.lost
            or self.phantoms
            or self.divergence
            or self.stale_strong
            or self.stale_min_seq
            or self.token_conflicts
            or self.acked_after_newer_epoch
        )

    def problems(self) -> list[str]:
        out = []
        if self.lost:
            out.append(f"{len(self.lost)} acknowledged writes lost: {self.lost[:5]}")
        if self.phantoms:
            out.append(f"{len(self.phantoms)} phantom records: {self.phantoms[:5]}")
        out += [f"replicas differ: {d}" for d in self.divergence[:5]]
        if self.stale_strong:
            out.append(f"{len(self.stale_strong)} stale strong reads: ops {self.stale_strong[:5]}")
        if self.stale_min_seq:
            out.append(f"{len(self.stale_min_seq)} min_seq reads without their write")
        if self.token_conflicts:
            out.append(f"write tokens answered twice: {self.token_conflicts[:5]}")
        if self.acked_after_newer_epoch:
            out.append(
                f"{len(self.acked_after_newer_epoch)} writes acknowledged at an epoch older than"
                f" their member had been told: {self.acked_after_newer_epoch[:3]}"
            )
        return out


def max_concurrent_faulty(faults: Iterable[Op], end: float) -> int:
    """The most distinct members faulty at one instant (a fault lasts invoke..complete)."""
    spans = [(op.invoke, op.complete if op.complete is not None else end, op) for op in faults]
    best = 0
    for start, _, _ in spans:
        members = {
            m for s, e, op in spans if s <= start < e or (s == start == e) for m in op.members
        }
        best = max(best, len(members))
    return best


def reference_replica(final: Mapping[str, Replica]) -> tuple[str | None, list[str]]:
    """The replica the others are compared with: the leader, else the most advanced one."""
    notes: list[str] = []
    readable = {n: r for n, r in final.items() if r.ids is not None}
    leaders = [n for n, r in readable.items() if r.role == "leader"]
    if len(leaders) == 1:
        return leaders[0], notes
    notes.append(f"{len(leaders)} readable leaders after healing: {sorted(leaders)}")
    if not readable:
        return None, notes
    best = max(readable, key=lambda n: (readable[n].epoch, readable[n].last_seq, n))
    return best, notes


def check(ops: list[Op], final: Mapping[str, Replica]) -> Result:
    result = Result(ops=len(ops))
    writes = {op.id: op for op in ops if op.f == WRITE and op.id is not None}
    faults = [op for op in ops if op.f == FAULT]
    end = max([op.complete or op.invoke for op in ops] or [0.0])
    result.writes = len(writes)
    for op in ops:
        if op.f == READ:
            result.reads += 1
            result.reads_tried[op.consistency or "?"] += 1
            result.reads_ok[op.consistency or "?"] += op.type == OK
    result.faults.update(op.kind or "?" for op in faults)
    result.max_faulty = max_concurrent_faulty(faults, end)

    reference, notes = reference_replica(final)
    result.divergence += notes
    kept: frozenset[str] = frozenset()
    if reference is not None:
        kept = final[reference].ids or frozenset()

    _check_losses(result, writes.values(), kept, have_reference=reference is not None)
    _check_phantoms(result, ops, writes, final)
    _check_identical(result, final, reference)
    _check_reads(result, ops, writes, kept)
    _check_tokens(result, writes.values())
    _check_epoch_acks(result, ops, writes.values())
    return result


def _check_epoch_acks(result: Result, ops: list[Op], writes: Iterable[Op]) -> None:
    """A member that has answered a promote, follow or fence at epoch E acknowledges nothing
    at an older epoch: no write sent to it after that answer may carry one (any ack level)."""
    told: dict[str, list[tuple[float, int]]] = {}
    for op in ops:
        if op.f == ADMIN and op.type == OK and op.node and op.epoch is not None and op.complete:
            told.setdefault(op.node, []).append((op.complete, op.epoch))
    for write in writes:
        if write.type != OK or write.epoch is None or write.node not in told:
            continue
        newer = [e for at, e in told[write.node] if at < write.invoke and e > write.epoch]
        if newer:
            assert write.id is not None
            result.acked_after_newer_epoch.append((write.id, write.node, write.epoch, max(newer)))


def _check_tokens(result: Result, writes: Iterable[Op]) -> None:
    """Two acknowledged writes never get the same (epoch, seq): one epoch has one leader."""
    seen: Counter[tuple[int, int]] = Counter(
        (op.epoch, op.seq)
        for op in writes
        if op.type == OK and op.epoch is not None and op.seq is not None
    )
    result.token_conflicts += sorted(token for token, n in seen.items() if n > 1)


def _check_losses(
    result: Result, writes: Iterable[Op], kept: frozenset[str], *, have_reference: bool
) -> None:
    for op in writes:
        if op.type == OK:
            result.acked[op.ack or "?"] += 1
        elif op.type != FAIL and op.id in kept:
            result.indeterminate_kept += 1
        if op.type != OK or not have_reference or op.id in kept:
            continue
        assert op.id is not None
        violation = op.ack == "quorum" or (op.ack == "one" and result.max_faulty <= 1)
        (result.lost if violation else result.lost_allowed).append((op.id, op.ack or "?"))


def _check_phantoms(
    result: Result, ops: list[Op], writes: Mapping[str, Op], final: Mapping[str, Replica]
) -> None:
    def unexpected(record: str, before: float | None) -> bool:
        write = writes.get(record)
        if write is None or write.type == FAIL:
            return True
        return before is not None and write.invoke > before  # seen before it was attempted

    for name, replica in sorted(final.items()):
        for record in sorted(replica.ids or ()):
            if unexpected(record, None):
                result.phantoms.append((name, record))
    for index, op in enumerate(ops):
        if op.f == READ and op.type == OK:
            for record in op.ids or ():
                if unexpected(record, op.complete):
                    result.phantoms.append((f"read#{index}", record))


def _check_identical(result: Result, final: Mapping[str, Replica], reference: str | None) -> None:
    if reference is None:
        result.divergence.append("no replica could be read")
        return
    ref = final[reference]
    for name, replica in sorted(final.items()):
        if replica.ids is None:
            result.divergence.append(f"{name} could not be read")
            continue
        if replica.count is not None and replica.count != len(replica.ids):
            result.divergence.append(
                f"{name} counts {replica.count} records but serves {len(replica.ids)}"
            )
        if name == reference:
            continue
        missing, extra = ref.ids - replica.ids, replica.ids - ref.ids  # type: ignore[operator]
        if missing or extra:
            result.divergence.append(
                f"{name} vs {reference}: {len(missing)} missing {sorted(missing)[:3]}, "
                f"{len(extra)} extra {sorted(extra)[:3]}"
            )
        if (replica.last_seq, replica.epoch) != (ref.last_seq, ref.epoch):
            result.divergence.append(
                f"{name} at (seq {replica.last_seq}, epoch {replica.epoch}) vs {reference} at "
                f"(seq {ref.last_seq}, epoch {ref.epoch})"
            )


def _check_reads(
    result: Result, ops: list[Op], writes: Mapping[str, Op], kept: frozenset[str]
) -> None:
    acked = sorted(
        (op for op in writes.values() if op.type == OK and op.complete is not None),
        key=lambda op: op.complete or 0.0,
    )
    for index, read in enumerate(ops):
        if read.f != READ or read.type != OK:
            continue
        seen = set(read.ids or ())
        if read.consistency == "strong":
            for write in acked:
                assert write.complete is not None
                if write.complete >= read.invoke:
                    break
                if write.id in kept and write.id not in seen:
                    result.stale_strong.append(index)
                    break
        elif read.consistency == "min_seq" and read.of is not None and read.of not in seen:
            result.stale_min_seq.append(index)
