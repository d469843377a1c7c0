"""report.html: the benchmark report as one self-contained page (inline CSS, plots as data: URIs, no JS).

render_html(report) takes the dict written to report.json and never raises on missing or null fields
(a failed artifact row may have only name/status/symbol/reason). Every string that comes from the
report goes through html.escape; numbers are formatted in Python and right-aligned.

This module assembles the page: CSS, header, the sections in order, footer. html_sections.py writes the
overview sections, html_details.py the per-artifact ones, html_format.py the pieces they all use.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

from edgekit.atomic import write_text
from edgekit.benchmarks.report.fields import as_dict, as_list, num, rows_of
from edgekit.benchmarks.report.html_details import artifact_details, recall_overview
from edgekit.benchmarks.report.html_format import STATUS_TEXT, SYMBOLS, e, f_date, f_num, status_of
from edgekit.benchmarks.report.html_layers import CSS as LAYERS_CSS, layers_section
from edgekit.benchmarks.report.html_sections import comparison, device_cards, highlights, plots_section, summary_table
from edgekit.benchmarks.report.schema import Report, Row


# --------------------------------------------------------------------------------------- the page

CSS = """
:root { --fg:#1f2328; --muted:#656d76; --line:#d0d7de; --bg:#ffffff; --panel:#f6f8fa; --accent:#0969da;
  --ok:#1a7f37; --okbg:#dafbe1; --warn:#9a6700; --warnbg:#fff8c5; --bad:#cf222e; --badbg:#ffebe9; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--fg); line-height: 1.45;
  font: 14px/1.45 -apple-system, BlinkMacSystemFont, "Segoe UI", "Noto Sans", Helvetica, Arial, sans-serif; }
/* no emoji fonts in the list: browsers find ✅/❎/❌ by fallback, and a named emoji font can take over
   digits and spaces (Noto Color Emoji has keycap glyphs for them) */
main { max-width: 1500px; margin: 0 auto; padding: 24px 28px 40px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 34px 0 10px; padding-bottom: 6px; border-bottom: 1px solid var(--line); }
h3 { font-size: 15px; margin: 18px 0 8px; }
code, .mono { font-family: ui-monospace, SFMono-Regular, "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 12.5px; }
code { background: var(--panel); padding: 1px 5px; border-radius: 4px; word-break: break-all; }
.muted { color: var(--muted); }
.small { font-size: 12.5px; }
.meta { color: var(--muted); margin: 2px 0; }
.meta b { color: var(--fg); font-weight: 600; }
.pills { display: flex; flex-wrap: wrap; gap: 8px; margin: 14px 0 0; }
.pill { border: 1px solid var(--line); border-radius: 999px; padding: 3px 12px; background: var(--panel); font-size: 13px; }
.pill.passed { background: var(--okbg); border-color: #aceebb; color: var(--ok); }
.pill.outside_tolerance { background: var(--warnbg); border-color: #eed888; color: var(--warn); }
.pill.failed { background: var(--badbg); border-color: #ffcecb; color: var(--bad); }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(520px, 1fr)); gap: 14px; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 12px 16px; background: var(--panel); }
.card h3 { margin: 0 0 8px; }
.kv { display: grid; grid-template-columns: max-content 1fr; gap: 3px 14px; font-size: 13px; margin: 0; }
.kv dt { color: var(--muted); }
.kv dd { margin: 0; overflow-wrap: anywhere; }
.warn-text { color: var(--bad); font-weight: 600; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 13px; margin: 4px 0 8px; }
th, td { padding: 5px 8px; border-bottom: 1px solid var(--line); vertical-align: top; text-align: left; }
th { background: var(--panel); font-weight: 600; white-space: nowrap; position: sticky; top: 0; }
th[title] { cursor: help; text-decoration: underline dotted #8c959f; text-underline-offset: 3px; }
tbody tr:hover td { background: #f0f6ff; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.name { font-weight: 600; white-space: nowrap; }
td.reason { color: var(--muted); font-size: 12.5px; min-width: 240px; overflow-wrap: break-word; }
td.reason.failed { color: var(--bad); }
td.reason.outside_tolerance { color: var(--warn); }
tr.has-reason td { border-bottom: none; }
tr.reason-row td { padding-top: 0; }
tr.reason-row td.reason { padding-left: 9px; }
td.best { font-weight: 700; color: #0b5394; }
td.recommended { font-weight: 700; color: #1e7a34; }
tr.reference td { background: #f6f3ff; }
.badge { display: inline-flex; align-items: center; gap: 4px; white-space: nowrap; font-size: 12px;
  border-radius: 999px; padding: 1px 9px 1px 6px; border: 1px solid var(--line); }
.badge .sym { font-size: 13px; }
.badge.short { padding: 1px 6px; }
td.status { text-align: center; }
.badge.passed { background: var(--okbg); color: var(--ok); border-color: #aceebb; }
.badge.outside_tolerance { background: var(--warnbg); color: var(--warn); border-color: #eed888; }
.badge.failed { background: var(--badbg); color: var(--bad); border-color: #ffcecb; }
.legend { color: var(--muted); font-size: 12.5px; margin: 4px 0 0; }
.best-key { color: #0b5394; }
figure { margin: 14px 0 22px; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 6px; display: block; }
figcaption { color: var(--muted); font-size: 12.5px; margin-top: 6px; max-width: 1100px; }
.note { border-left: 4px solid var(--line); background: var(--panel); padding: 8px 12px; margin: 10px 0;
  color: var(--muted); border-radius: 0 6px 6px 0; }
.note.bad { border-left-color: var(--bad); background: var(--badbg); color: var(--bad); }
.note.good { border-left-color: var(--ok); background: var(--okbg); color: var(--ok); }
details { border: 1px solid var(--line); border-radius: 8px; margin: 10px 0; background: #fff; }
details > summary { cursor: pointer; padding: 9px 14px; font-size: 14px; list-style-position: inside; }
details > summary .muted { font-size: 13px; margin-left: 6px; }
details[open] > summary { border-bottom: 1px solid var(--line); background: var(--panel); border-radius: 8px 8px 0 0; }
details .body { padding: 4px 16px 14px; }
.twocol { display: flex; flex-wrap: wrap; gap: 4px 48px; align-items: flex-start; }
.twocol > div { min-width: 320px; }
.coldbar { display: flex; height: 18px; width: 420px; max-width: 100%; border-radius: 4px; overflow: hidden;
  border: 1px solid var(--line); margin: 6px 0 4px; }
.coldbar span { display: block; height: 100%; }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin: 0 4px 0 10px; vertical-align: -1px; }
table.cm { font-size: 11.5px; }
table.cm th, table.cm td { padding: 3px 5px; border: 1px solid #eaeef2; text-align: right; min-width: 34px; }
table.cm th.col { writing-mode: vertical-rl; transform: rotate(180deg); text-align: left; vertical-align: bottom;
  padding: 6px 3px; max-height: 110px; }
table.cm th.row { text-align: right; white-space: nowrap; }
table.cm td { font-variant-numeric: tabular-nums; }
table.cm tbody tr:nth-child(even) td, table.cm tbody tr:hover td { background: inherit; }
td.heat { font-variant-numeric: tabular-nums; text-align: right; white-space: nowrap; }
.tag { display: inline-block; font-size: 11px; padding: 0 6px; border-radius: 999px; background: #ddf4ff;
  color: #0550ae; margin-left: 4px; }
footer { margin-top: 40px; padding-top: 12px; border-top: 1px solid var(--line); color: var(--muted); font-size: 12.5px; }
"""


def render_html(report: Report) -> str:
    report = as_dict(report)
    rows = rows_of(report)
    devices = [d for d in as_list(report.get("devices")) if isinstance(d, dict)]
    several = len({str(r.get("device")) for r in rows if r.get("device") is not None}
                  | {str(d.get("id")) for d in devices}) > 1
    run_dir = report.get("run_dir") or "?"
    recommended = [r for r in as_list(report.get("recommendation")) if isinstance(r, dict)]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta name="color-scheme" content="light">',
        f"<title>edge bench · {e(run_dir)}</title>",
        f"<style>{CSS}{LAYERS_CSS}</style></head><body><main>",
        _header(report, rows),
        highlights(rows, several, recommended),
        _section("Devices", device_cards(devices)),
        _section("Summary", summary_table(rows, several, {(r.get("artifact"), r.get("device")) for r in recommended})),
        _section("Comparison with the baseline", comparison(report.get("comparison"))),
        _section("Plots", plots_section(report)),
        _section("Recall per class", recall_overview(report, rows, several)),
        _section("Where int8 hurts", layers_section(rows)),
        _section("Artifacts in detail", artifact_details(report, rows, several)),
        _footer(report),
        "</main></body></html>",
    ]
    return "\n".join(p for p in parts if p) + "\n"


def write_html(report: Report, path: Path) -> None:
    write_text(Path(path), render_html(report))


def _section(title: str, body: str) -> str:
    return f"<section><h2>{e(title)}</h2>\n{body}</section>" if body else ""


# ------------------------------------------------------------------------------------- header/footer

def _list_text(v: Any) -> str:
    return ", ".join(str(x) for x in v) if isinstance(v, (list, tuple)) else "" if v is None else str(v)


def _header(report: Report, rows: List[Row]) -> str:
    s = as_dict(report.get("settings"))
    ts = as_dict(report.get("test_set"))
    bits = []
    if ts.get("images") is not None:
        bits.append(f"<b>{e(f_num(ts.get('images'), '{:,.0f}'))}</b> {e(ts.get('split') or 'test')} images")
    if s:
        if s.get("threads") is not None:
            bits.append(f"threads <b>{e(_list_text(s.get('threads')))}</b>")
        if s.get("batch") is not None:
            bits.append(f"batch <b>{e(_list_text(s.get('batch')))}</b>")
        if s.get("runs") is not None:
            timed = f"<b>{e(s.get('runs'))}</b> timed runs"
            if num(s.get("min_time")):
                timed += f" (at least {e(s.get('min_time'))} s)"
            if s.get("warmup") is not None:
                timed += f" after <b>{e(s.get('warmup'))}</b> warm-up"
            bits.append(timed)
    counts: Dict[str, int] = {}
    for r in rows:
        if r.get("kind") != "reference":
            counts[status_of(r)] = counts.get(status_of(r), 0) + 1
    pills = "".join(f'<span class="pill {e(k)}">{e(SYMBOLS.get(k, ""))} {n} {e(STATUS_TEXT.get(k, k))}</span>'
                    for k, n in sorted(counts.items(), key=lambda kv: list(STATUS_TEXT).index(kv[0])
                                       if kv[0] in STATUS_TEXT else 9))
    cmp = report.get("comparison")
    if isinstance(cmp, dict) and cmp.get("passed") is not None:
        ok = bool(cmp.get("passed"))
        pills += (f'<span class="pill {"passed" if ok else "failed"}">baseline: '
                  f'{"no regression" if ok else "REGRESSION"}</span>')
    run_name = str(report.get("run_dir") or "").replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    return (f"<header><h1>Benchmark report{' — ' + e(run_name) if run_name else ''}</h1>"
            f'<p class="meta">Run <code>{e(report.get("run_dir") or "?")}</code>'
            + (f' · created <b>{e(f_date(report.get("created")))}</b>' if report.get("created") else "")
            + (f' · export <code>{e(report.get("export_dir"))}</code>' if report.get("export_dir") else "")
            + "</p>"
            + (f'<p class="meta">{" · ".join(bits)}</p>' if bits else "")
            + (f'<div class="pills">{pills}</div>' if pills else "")
            + "</header>")


def _footer(report: Report) -> str:
    bits = []
    if report.get("command"):
        bits.append(f"Command <code>{e(report.get('command'))}</code>")
    bits.append(f"report schema v{e(report.get('schema_version') if report.get('schema_version') is not None else '?')}")
    if report.get("created"):
        bits.append(f"created {e(f_date(report.get('created')))}")
    bits.append("generated by <b>edge bench</b>; the same figures are in report.json and report.md")
    return f"<footer>{' · '.join(bits)}</footer>"
