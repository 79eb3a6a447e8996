"""The end-of-run table: trials, faults by kind, operations, acknowledgements and violations."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from .trial import TrialResult


def table(trials: Sequence[TrialResult], seconds: float) -> str:
    faults: Counter[str] = Counter()
    acked: Counter[str] = Counter()
    lost: Counter[str] = Counter()
    allowed: Counter[str] = Counter()
    reads_ok: Counter[str] = Counter()
    reads_tried: Counter[str] = Counter()
    writes = 0
    ops = phantoms = strong = min_seq = diverged = kept = tokens = after_epoch = 0
    for trial in trials:
        r = trial.result
        faults.update(r.faults)
        acked.update(r.acked)
        lost.update(ack for _, ack in r.lost)
        allowed.update(ack for _, ack in r.lost_allowed)
        ops += r.ops
        writes += r.writes
        reads_ok.update(r.reads_ok)
        reads_tried.update(r.reads_tried)
        phantoms += len(r.phantoms)
        strong += len(r.stale_strong)
        min_seq += len(r.stale_min_seq)
        diverged += bool(r.divergence) or not trial.converged
        kept += r.indeterminate_kept
        tokens += len(r.token_conflicts)
        after_epoch += len(r.acked_after_newer_epoch)
    failing = [t for t in trials if not t.valid or not t.converged]
    modes = Counter(t.mode for t in trials)
    rows = [
        ("trials", f"{len(trials)} ({modes['one']} ack=one budget, {modes['quorum']} quorum)"),
        ("time", f"{seconds:.0f} s ({seconds / max(len(trials), 1):.1f} s a trial)"),
        ("faults", ", ".join(f"{k} {v}" for k, v in sorted(faults.items())) or "none"),
        ("failovers (epoch bumps)", str(sum(t.failovers for t in trials))),
        ("operations", str(ops)),
        ("writes", str(writes)),
        ("acknowledged writes", _levels(acked)),
        (
            "reads answered",
            ", ".join(
                f"{level} {reads_ok[level]}/{reads_tried[level]}"
                for level in ("eventual", "strong", "min_seq")
            ),
        ),
        ("lost (violations)", _levels(lost)),
        ("lost (allowed)", _levels(allowed)),
        ("unsure writes kept", str(kept)),
        ("phantom records", str(phantoms)),
        ("replicas differ", f"{diverged} trials"),
        ("stale strong reads", str(strong)),
        ("stale min_seq reads", str(min_seq)),
        ("tokens answered twice", str(tokens)),
        ("acks at a superseded epoch", str(after_epoch)),
        ("failing seeds", " ".join(str(t.seed) for t in failing) or "none"),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def _levels(counts: Counter[str]) -> str:
    total = sum(counts.values())
    parts = ", ".join(f"{level} {counts[level]}" for level in ("leader", "one", "quorum"))
    return f"{total} ({parts})"


def line(index: int, trial: TrialResult) -> str:
    r = trial.result
    verdict = "ok" if trial.valid and trial.converged else "FAIL"
    faults = ",".join(f"{k}x{v}" for k, v in sorted(r.faults.items())) or "-"
    text = (
        f"trial {index} seed={trial.seed} mode={trial.mode} {verdict} {trial.seconds:.1f}s "
        f"fresh={trial.fresh} failovers={trial.failovers} ops={r.ops} "
        f"acked={sum(r.acked.values())} lost={len(r.lost)} "
        f"phantoms={len(r.phantoms)} stale={len(r.stale_strong)}/{len(r.stale_min_seq)} "
        f"faults={faults}"
    )
    problems = r.problems() + trial.notes
    return (
        text + "".join(f"\n    {p}" for p in problems) if problems and verdict == "FAIL" else text
    )
