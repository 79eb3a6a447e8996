"""The results table: figures with their baselines, ratios and targets, as JSON and Markdown.

Decisions only (no I/O besides `write`): a figure is a measured value with its recall, the
in-process hnswlib value beside it, and optionally Chroma's; targets are judged here from the
numbers of the same run, never from constants measured elsewhere.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from dvecbench import mixed, reshard, sharded, tlscost

Direction = Literal["higher", "lower"]

if TYPE_CHECKING:
    from dvecbench.config import Config
    from dvecbench.datasets import Dataset


@dataclasses.dataclass
class Side:
    """One engine's measurement of a figure."""

    value: float
    recall: float | None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"value": self.value, "recall": self.recall, **self.extra}


@dataclasses.dataclass
class Target:
    """A pass/fail rule: `metric` compared with `bound` in the figure's direction."""

    text: str
    metric: float
    bound: float
    direction: Direction

    @property
    def met(self) -> bool:
        if self.direction == "higher":
            return self.metric >= self.bound
        return self.metric <= self.bound

    def as_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "metric": self.metric,
            "bound": self.bound,
            "met": self.met,
        }


@dataclasses.dataclass
class Figure:
    key: str
    label: str
    unit: str
    direction: Direction
    dvecdb: Side | None
    hnswlib: Side | None = None
    chroma: Side | None = None
    targets: list[Target] = dataclasses.field(default_factory=list)
    floor: Side | None = None
    note: str = ""
    skipped: str | None = None

    @property
    def ratio(self) -> float | None:
        """d-vecDB over the in-process figure (for 'lower is better' units, inverted)."""
        return _ratio(self.dvecdb, self.hnswlib, self.direction)

    @property
    def vs_chroma(self) -> float | None:
        return _ratio(self.dvecdb, self.chroma, self.direction)

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "label": self.label,
            "unit": self.unit,
            "better": self.direction,
            "dvecdb": self.dvecdb.as_dict() if self.dvecdb else None,
            "hnswlib": self.hnswlib.as_dict() if self.hnswlib else None,
            "ratio": self.ratio,
            "chroma": self.chroma.as_dict() if self.chroma else None,
            "vs_chroma": self.vs_chroma,
            "floor": self.floor.as_dict() if self.floor else None,
            "targets": [t.as_dict() for t in self.targets],
            "note": self.note,
            "skipped": self.skipped,
        }


def _ratio(ours: Side | None, theirs: Side | None, direction: Direction) -> float | None:
    if ours is None or theirs is None or ours.value <= 0 or theirs.value <= 0:
        return None
    return ours.value / theirs.value if direction == "higher" else theirs.value / ours.value


def _num(value: float | None, unit: str = "") -> str:
    if value is None:
        return "—"
    if unit in ("ms", "s"):
        text = f"{value:.3f}" if value < 10 else f"{value:.1f}"
    elif abs(value) >= 1000:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.3f}"
    return f"{text} {unit}".strip()


def _side(side: Side | None, unit: str) -> str:
    if side is None:
        return "—"
    parts = [_num(side.value, unit)]
    if "p50_ms" in side.extra:
        parts.append(f"(p50 {side.extra['p50_ms']:.3f} / p99 {side.extra['p99_ms']:.3f} ms)")
    if side.extra.get("cpu_us") is not None:
        parts.append(f"[{side.extra['cpu_us']:.0f} µs CPU each]")
    return " ".join(parts)


def _recall(side: Side | None) -> str:
    return "—" if side is None or side.recall is None else f"{side.recall:.4f}"


def _ratio_text(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}x"


def markdown(result: dict[str, Any], figures: list[Figure]) -> str:
    """The human table; JSON carries the same numbers with more detail."""
    m = result["machine"]
    lines = [
        f"# d-vecDB benchmark — {result['date']}",
        "",
        f"- Mode: {result['mode']}; data set: {result['dataset']['description']}",
        *(
            [f"- Text set (rows marked [text set]): {result['text_dataset']}"]
            if result.get("text_dataset")
            else []
        ),
        f"- HNSW: M {result['hnsw']['m']}, ef_construction {result['hnsw']['ef_construction']}, "
        f"ef {result['hnsw']['ef_search']}, k {result['hnsw']['k']}",
        f"- Machine: {m['nproc']} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB, "
        f"kernel {m['kernel']}; load average at start {m['load_start']}, at end {m['load_end']}"
        f", 1-minute load at each phase {m.get('load_during', 'n/a')} (2 CPUs: above 2 means "
        "other work shared the cores)",
        f"- Memory: malloc {m.get('malloc', 'n/a')} for every engine (node, in-process hnswlib, "
        f"Chroma); transparent huge pages {m.get('thp', 'n/a')}",
        f"- Pinning: {result['pinning']['text']}",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in result["versions"].items()),
        "",
        "Ratios are d-vecDB ÷ in-process hnswlib (for times: hnswlib ÷ d-vecDB), so 1.0 means "
        "no overhead; recall@10 is against exact search. [µs CPU each] is the server process's "
        "CPU time per query (or per vector for ingest), which other load on the machine hardly "
        "changes, unlike throughput.",
        "",
    ]
    floor = any(f.floor is not None for f in figures)
    head = [
        "figure",
        "d-vecDB",
        "recall",
        "hnswlib in-process",
        "recall",
        "ratio",
        "Chroma",
        "recall",
        "vs Chroma",
    ]
    if floor:
        head.append("bare aiohttp floor (ratio to hnswlib)")
    head.append("targets")
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for f in figures:
        if f.skipped:
            lines.append(f"| {f.label} | skipped: {f.skipped} |" + " |" * (len(head) - 2))
            continue
        targets = "; ".join(f"{'✅' if t.met else '❌'} {t.text}" for t in f.targets) or "—"
        cells = [
            f.label,
            _side(f.dvecdb, f.unit),
            _recall(f.dvecdb),
            _side(f.hnswlib, f.unit),
            _recall(f.hnswlib),
            _ratio_text(f.ratio),
            _side(f.chroma, f.unit),
            _recall(f.chroma),
            _ratio_text(f.vs_chroma),
        ]
        if floor:
            cells.append(
                f"{_side(f.floor, f.unit)} ({_ratio_text(_ratio(f.floor, f.hnswlib, f.direction))})"
                if f.floor
                else "—"
            )
        cells.append(targets)
        lines.append("| " + " | ".join(cells) + " |")
    lines += transport_lines(result.get("transport"))
    notes = [f"- **{f.label}**: {f.note}" for f in figures if f.note]
    if notes:
        lines += ["", "Notes:", "", *notes]
    if result.get("mixed"):
        lines += mixed.section(result["mixed"]["rows"], result["mixed"].get("note", ""))
    if result.get("sharded"):
        lines += sharded.section(result["sharded"])
    if result.get("reshard"):
        lines += reshard.section(result["reshard"])
    if result.get("tls"):
        lines += ["", "### TLS cost (HTTPS / HTTP, same run; dvecbench.tlscost)", ""]
        lines += [tlscost.table(result["tls"])]
    return "\n".join(lines) + "\n"


def _where(cpus: list[int] | None) -> str:
    return ",".join(map(str, cpus)) if cpus else "any"


def transport_lines(t: dict[str, Any] | None) -> list[str]:
    """The small transport-alone table under the main one, with the one-core bound it implies."""
    if not t:
        return []
    lines = [
        "",
        f"Transport alone (no search): {t['server']}, answering every search with one real "
        f"10-hit answer ({t['answer_bytes']} bytes) rendered once; the same wrk loads and "
        "pinning as the servers above. Transport CPU + in-process hnswlib CPU = the least CPU "
        "per query any Python server can spend on one core, hence the best QPS ratio "
        "reachable on one pinned core (last row: hnswlib CPU ÷ that sum). wrk's own core "
        "can cap these QPS, so the CPU per request is the transport's figure.",
        "",
        "| load | QPS | p50 / p99 | server CPU per request |",
        "|---|---|---|---|",
    ]
    for row in t["rows"].values():
        where = f"server CPU {_where(row['server_cpus'])}, wrk CPU {_where(row['wrk_cpus'])}"
        cpu = "—" if row["cpu_us"] is None else f"{row['cpu_us']:.0f} µs"
        lines.append(
            f"| transport, {row['label']} ({where}) | {_num(row['qps'])} | "
            f"{row['p50_ms']:.3f} / {row['p99_ms']:.3f} ms | {cpu} |"
        )
    h = t["inprocess"]
    lines.append(
        f"| in-process hnswlib, 1 thread, 1 query per call | {_num(h['qps'])} | "
        f"{h['p50_ms']:.3f} / {h['p99_ms']:.3f} ms | {h['cpu_us']:.0f} µs |"
    )
    b = t.get("bound")
    if b:
        p50_bound = h["p50_ms"] + 0.10
        qps_ok = "✅ 0.9x reachable" if b["best_ratio"] >= 0.9 else "❌ 0.9x out of reach"
        p50_ok = "✅" if b["least_p50_ms"] <= p50_bound else "❌"
        lines.append(
            f"| best on one core: transport (8 clients) + hnswlib, CPU added | "
            f"{_num(b['best_qps'])} on an idle core = {b['best_ratio']:.2f}x in-process "
            f"({qps_ok}) | 1 client ≥ {b['least_p50_ms']:.3f} ms ({p50_ok} "
            f"target ≤ {p50_bound:.3f}) | {b['least_cpu_us']:.0f} µs |"
        )
    return lines


def header(
    *,
    date: str,
    cfg: Config,
    machine: dict[str, Any],
    versions: dict[str, Any],
    dataset: Dataset,
    text_dataset: str | None,
    profile: list[str] | None,
    transport: dict[str, Any] | None,
) -> dict[str, Any]:
    """The result document's fields besides the figures: what ran, where, on which data."""
    return {
        "date": date,
        "mode": cfg.mode,
        "machine": machine,
        "versions": versions,
        "pinning": {
            "server_cpus": sorted(cfg.server_cpus or []),
            "client_cpus": sorted(cfg.client_cpus or []),
            "follower_cpus": sorted(cfg.follower_cpus or []),
            "text": cfg.pinning_text(),
        },
        "hnsw": {
            "m": cfg.hnsw.m,
            "ef_construction": cfg.hnsw.ef_construction,
            "ef_search": cfg.hnsw.ef_search,
            "k": cfg.hnsw.k,
        },
        "dataset": {
            "name": dataset.name,
            "description": dataset.description,
            "vectors": dataset.size,
            "queries": len(dataset.queries),
            "dimension": dataset.dimension,
        },
        "text_dataset": text_dataset,
        "profile_search8_gil_self": profile,
        "transport": transport,
        "phase_seconds": cfg.seconds,
    }


def write(out_dir: Path, stem: str, result: dict[str, Any], figures: list[Figure]) -> Path:
    """Write `<stem>.json` and `<stem>.md` atomically; returns the Markdown path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {**result, "figures": [f.as_dict() for f in figures]}
    md_path = out_dir / f"{stem}.md"
    for path, text in (
        (out_dir / f"{stem}.json", json.dumps(payload, indent=2, sort_keys=False) + "\n"),
        (md_path, markdown(result, figures)),
    ):
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    return md_path
