"""report.md: the benchmark report as Markdown tables that also line up as plain text."""
from __future__ import annotations

import unicodedata
from typing import List, Sequence

from edgekit.benchmarks.report.table import COLUMNS, LEGEND, RIGHT, summary_cells
from edgekit.helpers import fmt_size
from edgekit.benchmarks.report.schema import Report, Row


def _width(text: str) -> int:
    # ✅/❎/❌ take two columns in a terminal or editor; count them so the pipes line up.
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 0 if unicodedata.combining(ch) else 1
               for ch in text)


def table(header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[str] = ()) -> str:
    cells = [[str(c).replace("|", "\\|").replace("\n", " ") for c in r] for r in [list(header), *rows]]
    widths = [max(_width(r[i]) for r in cells) for i in range(len(header))]

    def line(r: List[str]) -> str:
        parts = []
        for i, c in enumerate(r):
            pad = " " * (widths[i] - _width(c))
            parts.append(pad + c if header[i] in right else c + pad)
        return "| " + " | ".join(parts) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if h in right else "-" * (w + 2) for h, w in zip(header, widths)) + "|"
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


def _device_lines(report: Report) -> List[str]:
    out = []
    for d in report.get("devices") or []:
        fp = d.get("fingerprint") or {}
        freq = fp.get("cpu_freq") or {}
        pk = fp.get("packages") or {}
        engines = ", ".join(f"{k} {v}" for k, v in pk.items() if v)
        hb, ha = d.get("health_before") or {}, d.get("health_after") or {}
        health = ""
        if hb.get("temperature_c") is not None:
            health = f"; temperature {hb['temperature_c']} → {ha.get('temperature_c')} °C"
        if hb.get("throttled") is not None:
            health += f"; throttled {hb['throttled']} → {ha.get('throttled')}"
        out.append(f"- **{d['id']}**: {fp.get('board') or fp.get('cpu') or '?'} ({fp.get('architecture')}, "
                   f"{fp.get('usable_cores')}/{fp.get('cores')} cores, governor {freq.get('governor') or 'n/a'}"
                   f"{', max ' + str(freq['max_mhz']) + ' MHz' if freq.get('max_mhz') else ''}), {fp.get('os')}, "
                   f"Python {fp.get('python')}; {engines}{health}")
    return out


def _latency_table(rows: List[Row]) -> str:
    header = ["artifact", "device", "threads", "batch", "bare p50", "run p50", "run p90", "run p99", "e2e p50",
              "overhead", "img/s", "GMAC/s"]
    body = []
    f = lambda v: f"{v:.3f}" if isinstance(v, (int, float)) else ""  # noqa: E731
    for row in rows:
        for r in row.get("latency") or []:
            if "skipped" in r:
                body.append([row["name"], row["device"], str(r["threads"]), str(r["batch"]), "", "", "", "", "", "",
                             "", "skipped: " + r["skipped"]])
                continue
            body.append([row["name"], row["device"], str(r["threads"]), str(r["batch"]), f(r["bare"]["p50_ms"]),
                         f(r["run"]["p50_ms"]), f(r["run"]["p90_ms"]), f(r["run"]["p99_ms"]), f(r["e2e"]["p50_ms"]),
                         f"{r['overhead_pct']:+.1f}%" if r.get("overhead_pct") is not None else "",
                         f"{r['throughput_ips']:.1f}", f"{r['gmacs_per_s']:.2f}" if r.get("gmacs_per_s") else ""])
    return table(header, body, right=header[2:])


def _cold_table(rows: List[Row]) -> str:
    keys = ["interpreter_s", "import_s", "engine_import_s", "load_s", "first_inference_s", "cold_start_s"]
    header = ["artifact", "device", "python start", "import", "engine import", "model load", "first inference",
              "cold start", "peak RSS"]
    body = []
    for row in rows:
        c = row.get("cold")
        if not c:
            continue
        rss = (row.get("memory") or {}).get("peak_rss_mb")
        body.append([row["name"], row["device"], *(f"{c[k]:.3f} s" for k in keys), f"{rss:.0f} MB" if rss else ""])
    return table(header, body, right=header[2:])


def _recall_table(report: Report, rows: List[Row]) -> str:
    labels = report.get("labels") or []
    header = ["artifact", "device", *labels]
    body = []
    for row in rows:
        pc = (row.get("accuracy") or {}).get("per_class") or {}
        if pc:
            body.append([row["name"], row["device"], *(f"{pc[l]['recall']:.1%}" if l in pc else "" for l in labels)])
    return table(header, body, right=labels)


def render_markdown(report: Report) -> str:
    rows = report.get("rows") or []
    multi = len({r.get("device") for r in rows}) > 1
    cols = [c for c in COLUMNS if c != "device" or multi]
    main = table(cols, [[summary_cells(r)[c] for c in cols] for r in rows], right=RIGHT)
    measured = [r for r in rows if r.get("latency")]
    s = report.get("settings") or {}
    parts = [f"# Benchmark: {report.get('run_dir')}", "",
             f"{report.get('created')} · {report['test_set']['images']:,} test images · threads {s.get('threads')} · "
             f"batch {s.get('batch')} · {s.get('runs')} timed runs after {s.get('warmup')} warm-up"
             + (f" · `{report['command']}`" if report.get("command") else ""), "",
             "## Devices", "", *_device_lines(report), "",
             "## Summary", "", main, "", LEGEND + ". Latency columns: the headline setting (threads×batch), "
             "`run` = the runtime's predict on uint8 frames at the model's size; "
             "e2e = JPEG decode + preprocessing + inference + top-k; "
             "overhead = runtime call over the bare interpreter invoke().", ""]
    if measured:
        parts += ["## Latency, every setting (ms)", "", _latency_table(measured), "",
                  "## Cold start and memory", "", _cold_table(measured), "",
                  "## Recall per class", "", _recall_table(report, [r for r in rows if r.get("accuracy")]), ""]
    cmp = report.get("comparison")
    if cmp:
        header = ["artifact", "metric", "old", "new", "change", "limit", "ok"]
        body = [[c["name"], c["metric"], str(c["old"]), str(c["new"]), c["change"], c["limit"], "✅" if c["ok"] else "❌"]
                for c in cmp.get("checks", [])]
        parts += [f"## Against baseline {cmp.get('baseline')}: {'passed' if cmp.get('passed') else 'REGRESSION'}", "",
                  table(header, body, right=["old", "new", "change", "limit"]), ""]
    sizes = [f"{r['name']} {fmt_size(r.get('size_bytes'))}" for r in rows if r.get("size_bytes")]
    if sizes:
        parts += [f"Files: {', '.join(sizes)}.", ""]
    return "\n".join(parts)
