"""The report's main table, one column list for every renderer: each row's cells as text, which columns there
are and which align right, and the console's choice of them."""
from __future__ import annotations

from typing import Dict, NamedTuple, Optional

from edgekit.benchmarks.report.fields import headline_entry
from edgekit.benchmarks.report.schema import Report, Row
from edgekit.convert.manifest import LEGEND
from edgekit.helpers import fmt_size


def fmt_macs(n: Optional[int]) -> str:
    if not n:
        return ""
    return f"{n / 1e9:.2f} G" if n >= 1e9 else f"{n / 1e6:.1f} M"


def summary_cells(row: Row) -> Dict[str, str]:
    """The main table's cells for one row, shared by the console, Markdown and HTML tables."""
    acc = row.get("accuracy") or {}
    lat = headline_entry(row) or {}
    run = lat.get("run") or {}
    pct = lambda v: f"{v:.2%}" if isinstance(v, (int, float)) else ""  # noqa: E731
    ms = lambda v: f"{v:.2f}" if isinstance(v, (int, float)) else ""  # noqa: E731
    cold = (row.get("cold") or {}).get("cold_start_s")
    rss = (row.get("memory") or {}).get("peak_rss_mb")
    return {"status": row.get("symbol", ""), "artifact": row.get("name", ""), "device": row.get("device", ""),
            "engine": row.get("engine") or "", "size": fmt_size(row.get("size_bytes")), "MACs": fmt_macs(row.get("macs")),
            "top-1": pct(acc.get("top1")), "top-5": pct(acc.get("top5")), "agree": pct(acc.get("agreement")),
            "p50 ms": ms(run.get("p50_ms")), "p90 ms": ms(run.get("p90_ms")), "p99 ms": ms(run.get("p99_ms")),
            "img/s": f"{lat['throughput_ips']:.1f}" if lat.get("throughput_ips") else "",
            "e2e p50": ms((lat.get("e2e") or {}).get("p50_ms")),
            "overhead": f"{lat['overhead_pct']:+.1f}%" if isinstance(lat.get("overhead_pct"), (int, float)) else "",
            "cold s": f"{cold:.3f}" if isinstance(cold, (int, float)) else "",
            "RSS MB": f"{rss:.0f}" if isinstance(rss, (int, float)) else "",
            "threads×batch": f"{lat['threads']}×{lat['batch']}" if lat else "",
            "note": row.get("reason") or ""}


class Column(NamedTuple):
    """One column of the main table, for every renderer: its cell (summary_cells' key, the console's and
    Markdown's header), the HTML table's key and header, whether it holds a number (right-aligned), its tooltip."""
    cell: str
    html: str
    html_header: str
    number: bool
    tip: str = ""


_LATENCY = "runtime predict() latency per call, headline setting"
SPECS = [
    Column("status", "status", "Status", False),
    Column("artifact", "name", "Artifact", False),
    Column("device", "device", "Device", False),
    Column("engine", "engine", "Engine", False),
    Column("size", "size", "Size", True, "file size"),
    Column("MACs", "macs", "MACs", True, "multiply-accumulates per image"),
    Column("top-1", "top1", "Top-1", True, "top-1 accuracy on the test split"),
    Column("top-5", "top5", "Top-5", True, "top-5 accuracy on the test split"),
    Column("agree", "agree", "Agree", True, "top-1 agreement with the Keras model"),
    Column("threads×batch", "setting", "Thr×batch", True, "threads × batch of the headline latency setting"),
    Column("p50 ms", "p50", "p50 ms", True, _LATENCY),
    Column("p90 ms", "p90", "p90 ms", True, _LATENCY),
    Column("p99 ms", "p99", "p99 ms", True, _LATENCY),
    Column("img/s", "ips", "img/s", True, "throughput of predict() at the headline setting"),
    Column("e2e p50", "e2e", "e2e p50 ms", True, "JPEG decode → resize → normalise → run → top-k"),
    Column("overhead", "overhead", "Overhead", True, "runtime predict() p50 over the bare interpreter invoke() p50"),
    Column("cold s", "cold", "Cold start", True, "process start → first prediction (imports, model load, first inference)"),
    Column("RSS MB", "rss", "Peak RSS", True, "peak resident memory of the benchmark process"),
    Column("note", "reason", "Note", False),
]
COLUMNS = [c.cell for c in SPECS]
RIGHT = {c.cell for c in SPECS if c.number}


# The console gets the columns that decide which artifact ships; report.md/.html have them all.
# Reasons go under the table, one line each: a wrapped note column would squeeze every other column.
CONSOLE = ["status", "artifact", "device", "engine", "size", "top-1", "agree", "p50 ms", "p99 ms", "img/s", "e2e p50",
           "overhead", "cold s", "RSS MB"]


def console_table(report: Report, title: str = ""):
    from rich.table import Table
    devices = {r.get("device") for r in report["rows"]}
    cols = [c for c in CONSOLE if c != "device" or len(devices) > 1]
    from rich.markup import escape
    notes = [escape(f"{r.get('symbol', '')} {r.get('name')}" + (f" on {r.get('device')}" if len(devices) > 1 else "")
             + f": {r['reason']}") for r in report["rows"] if r.get("reason")]
    t = Table(title=title or None, title_justify="left", caption="\n".join([LEGEND, *notes]), caption_justify="left")
    for c in cols:
        t.add_column(c, justify="right" if c in RIGHT else ("center" if c == "status" else "left"),
                     no_wrap=c != "note", overflow="fold")
    for row in report["rows"]:
        cells = summary_cells(row)
        t.add_row(*(cells[c] for c in cols))
    return t
