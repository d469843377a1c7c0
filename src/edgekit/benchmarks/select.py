"""`edge select`: which artifact to ship, chosen from bench reports by a budget and one latency metric.

Candidates are the artifact rows of one or more report.json files (several runs, several devices),
restricted to one device. An artifact fits when it passed (✅), its top-1 is within the allowed drop
from its own report's reference row, and its size and peak RAM are within the limits; the fitting ones
are ranked by the metric, and every other one gets one line saying why it lost.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from edgekit.benchmarks.report.fields import as_dict, headline_entry, num, rows_of
from edgekit.benchmarks.report.rows import load_report
from edgekit.convert.manifest import PASSED, SYMBOLS
from edgekit.errors import EdgeError
from edgekit.benchmarks.report.schema import Report, Row
from edgekit.layout import REPORT_JSON, RunLayout
from edgekit.atomic import write_json as atomic_write

# metric name → (what it is, how to read it from a row, unit)
METRICS = {
    "p50": "median latency of one inference (headline threads×batch)",
    "p99": "99th-percentile latency of one inference (headline threads×batch)",
    "e2e": "median latency from image file to label (decode, resize, inference)",
    "cold": "cold start: a fresh process's import, load and first inference",
}


@dataclass(frozen=True)
class Budget:
    max_accuracy_drop_pp: float = 1.0
    max_size_mb: Optional[float] = None
    max_ram_mb: Optional[float] = None
    metric: str = "p50"
    min_accuracy_pct: Optional[float] = None   # top-1 of at least this, whatever the artifact's own reference

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise EdgeError(f"unknown metric '{self.metric}'; choose one of {', '.join(METRICS)}.")
        for name in ("max_accuracy_drop_pp", "max_size_mb", "max_ram_mb", "min_accuracy_pct"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise EdgeError(f"{name.replace('_', '-')} must not be negative, got {value:g}.")


@dataclass
class Candidate:
    artifact: str
    device: str
    report: str                      # the report.json it comes from
    run_dir: Optional[str]
    symbol: str
    fits: bool = False
    rank: Optional[int] = None
    why: str = ""                    # one line: why it won or lost
    value_ms: Optional[float] = None  # the chosen metric, in milliseconds
    top1: Optional[float] = None
    drop_pp: Optional[float] = None
    size_mb: Optional[float] = None
    ram_mb: Optional[float] = None
    file: Optional[str] = None


@dataclass
class Selection:
    device: str
    budget: Budget
    candidates: List[Candidate] = field(default_factory=list)  # fitting ones first, by rank

    @property
    def best(self) -> Optional[Candidate]:
        return self.candidates[0] if self.candidates and self.candidates[0].fits else None

    def to_dict(self) -> dict:
        best = self.best
        return {"device": self.device, "budget": asdict(self.budget), "metric": METRICS[self.budget.metric],
                "recommended": asdict(best) if best else None, "candidates": [asdict(c) for c in self.candidates]}


def report_path(source: Path) -> Path:
    """A report.json, or a run directory holding bench/report.json."""
    source = Path(source)
    if source.is_dir():
        for p in (RunLayout(source).report, source / REPORT_JSON):
            if p.is_file():
                return p
        raise EdgeError(f"{source}: no bench/report.json here; run `edge bench {source}` first.")
    if not source.is_file():
        raise EdgeError(f"{source}: no such run directory or report.json.")
    return source


def metric_ms(row: Row, metric: str) -> Optional[float]:
    if metric == "cold":
        s = num(as_dict(row.get("cold")).get("cold_start_s"))
        return None if s is None else s * 1e3
    lat = headline_entry(row) or {}
    kind, key = ("e2e", "p50_ms") if metric == "e2e" else ("run", f"{metric}_ms")
    return num(as_dict(lat.get(kind)).get(key))


def select(sources: Sequence[Path], budget: Budget, device: Optional[str] = None) -> Selection:
    """Read the reports (run directories or report.json files) and select among their artifacts."""
    return select_in([(str(p), load_report(p)) for p in map(report_path, sources)], budget, device)


def devices_of(reports: Sequence[Tuple[str, dict]]) -> List[str]:
    found: Dict[str, None] = {}
    for _, rep in reports:
        for row in rows_of(rep):
            if row.get("kind") != "reference" and row.get("device"):
                found.setdefault(str(row["device"]), None)
    return list(found)


def select_in(reports: Sequence[Tuple[str, dict]], budget: Budget, device: Optional[str] = None) -> Selection:
    """Select among (name, report dict) pairs already in memory (`edge bench` marks its own report this way)."""
    devices = devices_of(reports)
    if not devices:
        raise EdgeError("the reports hold no artifact rows; run `edge bench` on an exported run.")
    if device is None:
        if len(devices) > 1:
            raise EdgeError(f"the reports cover several devices ({', '.join(devices)}); choose one with --device.")
        device = devices[0]
    elif device not in devices:
        raise EdgeError(f"no device '{device}' in the reports; they cover: {', '.join(devices)}.")
    out = Selection(device, budget)
    for path, rep in reports:
        ref = next((r for r in rows_of(rep) if r.get("kind") == "reference"), None)
        ref_top1 = num(as_dict((ref or {}).get("accuracy")).get("top1"))
        for row in rows_of(rep):
            if row.get("kind") == "reference" or row.get("device") != device:
                continue
            out.candidates.append(_judge(row, path, rep, ref_top1, budget))
    _rank(out.candidates, budget.metric, several=len(reports) > 1)
    return out


def recommendations(report: Report, budget: Budget = Budget()) -> List[dict]:
    """For a fresh bench report: per device, the artifact `edge select` picks with the default budget."""
    out = []
    for device in devices_of([("", report)]):
        best = select_in([("", report)], budget, device).best
        if best is not None:
            out.append({"device": device, "artifact": best.artifact, "metric": budget.metric,
                        "max_accuracy_drop_pp": budget.max_accuracy_drop_pp, "value_ms": best.value_ms})
    return out


def _judge(row: Row, path: str, rep: dict, ref_top1: Optional[float], b: Budget) -> Candidate:
    acc = as_dict(row.get("accuracy"))
    top1, agreement = num(acc.get("top1")), num(acc.get("agreement"))
    # benchmarked on images without labels: the share of images where it disagrees with the reference bounds
    # how far its accuracy can differ from the reference's, so it stands in for the accuracy drop
    unlabelled = top1 is None and acc.get("labelled") is False and agreement is not None
    size, ram = num(row.get("size_bytes")), num(as_dict(row.get("memory")).get("peak_rss_mb"))
    c = Candidate(str(row.get("name")), str(row.get("device")), str(path), rep.get("run_dir"),
                  row.get("symbol") or SYMBOLS.get(row.get("status"), "?"), value_ms=metric_ms(row, b.metric),
                  top1=top1, drop_pp=round((1 - agreement) * 100, 3) if unlabelled else
                  None if top1 is None or ref_top1 is None else round((ref_top1 - top1) * 100, 3),
                  size_mb=None if size is None else size / 1e6, ram_mb=ram,
                  file=str(Path(rep.get("export_dir") or "") / row["file"]) if row.get("file") else None)
    if row.get("status") != PASSED:
        c.why = f"{c.symbol} did not pass: {row.get('reason') or row.get('status')}"
    elif c.drop_pp is None:
        c.why = "no accuracy against the reference in its report (bench with labelled test images)"
    elif unlabelled and c.drop_pp > b.max_accuracy_drop_pp + 1e-9:
        c.why = (f"too far from the reference: disagrees on {c.drop_pp:.2f} % of the unlabelled images, which bounds "
                 f"its accuracy change (limit {b.max_accuracy_drop_pp:g} pp)")
    elif unlabelled and b.min_accuracy_pct is not None:
        c.why = "--min-accuracy needs labelled images; this report has none (agreement only)"
    elif c.drop_pp > b.max_accuracy_drop_pp + 1e-9:
        c.why = f"too inaccurate: top-1 {top1:.2%} is {c.drop_pp:.2f} pp below the reference (limit {b.max_accuracy_drop_pp:g} pp)"
    elif b.min_accuracy_pct is not None and top1 * 100 < b.min_accuracy_pct - 1e-9:
        c.why = f"not accurate enough: top-1 {top1:.2%} (at least {b.min_accuracy_pct:g} %)"
    elif b.max_size_mb is not None and (c.size_mb is None or c.size_mb > b.max_size_mb):
        c.why = f"too big: {_mb(c.size_mb)} (limit {b.max_size_mb:g} MB)"
    elif b.max_ram_mb is not None and (c.ram_mb is None or c.ram_mb > b.max_ram_mb):
        c.why = f"needs too much memory: peak {_mb(c.ram_mb, 0)} (limit {b.max_ram_mb:g} MB)"
    elif c.value_ms is None:
        c.why = f"no {b.metric} latency measured"
    else:
        c.fits = True
    return c


def _mb(v: Optional[float], digits: int = 2) -> str:
    return "unknown" if v is None else f"{v:.{digits}f} MB"


def _rank(cands: List[Candidate], metric: str, several: bool = False) -> None:
    fitting = sorted((c for c in cands if c.fits), key=lambda c: (c.value_ms, -(c.top1 or 0), c.size_mb or 0))
    others = [c for c in cands if not c.fits]
    for i, c in enumerate(fitting, 1):
        c.rank = i
        if i == 1:
            c.why = "the fastest that passed and fits the budget"
        else:
            best = fitting[0]
            ratio = c.value_ms / best.value_ms if best.value_ms else float("inf")
            name = f"{best.artifact} ({Path(best.run_dir or best.report).name})" if several else best.artifact
            c.why = f"too slow: {ratio:.2f}× the {metric} of {name}"
    cands[:] = fitting + others


def write_json(selection: Selection, path: Path) -> None:
    atomic_write(Path(path), selection.to_dict())


def dumps(selection: Selection) -> str:
    return json.dumps(selection.to_dict(), indent=2)


def console_table(sel: Selection):
    """Ranked candidates, one line each, the winner first; the reason column says why each lost."""
    from rich.table import Table
    from rich.text import Text   # cells are plain text: a report's names and reasons may hold [markup]
    several = len({c.report for c in sel.candidates}) > 1
    t = Table(title=Text(f"edge select · device {sel.device} · by {sel.budget.metric}: {METRICS[sel.budget.metric]}"),
              title_justify="left")
    for col, just in (("#", "right"), ("", "center"), ("artifact", "left"), *((("run", "left"),) if several else ()),
                      (f"{sel.budget.metric} ms", "right"), ("top-1", "right"), ("Δ pp", "right"), ("size", "right"),
                      ("RAM MB", "right"), ("why", "left")):
        t.add_column(col, justify=just, no_wrap=col != "why")
    for c in sel.candidates:
        cells = [str(c.rank or ""), "★" if c is sel.best else c.symbol, c.artifact,
                 *((Path(c.run_dir or c.report).name,) if several else ()),
                 "" if c.value_ms is None else f"{c.value_ms:.3f}", "" if c.top1 is None else f"{c.top1:.2%}",
                 "" if c.drop_pp is None else f"{0.0 - c.drop_pp:+.2f}", "" if c.size_mb is None else f"{c.size_mb:.2f} MB",
                 "" if c.ram_mb is None else f"{c.ram_mb:.0f}", c.why]
        t.add_row(*map(Text, cells), style="bold green" if c is sel.best else None)
    return t
