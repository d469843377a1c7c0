"""report.html: the benchmark report as one self-contained page (inline CSS, plots as data: URIs, no JS).

render_html(report) takes the dict written to report.json and never raises on missing or null fields
(a failed artifact row may have only name/status/symbol/reason). Every string that comes from the
report goes through html.escape; numbers are formatted here and right-aligned.
"""
from __future__ import annotations

import base64
import html as _html
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from edgekit.atomic import write_text

STATUS_TEXT = {"passed": "passed", "outside_tolerance": "outside tolerance", "failed": "failed"}
STATUS_SYMBOL = {"passed": "✅", "outside_tolerance": "❎", "failed": "❌"}
LEGEND = "✅ exported and validated · ❎ exported, outside tolerance · ❌ failed"
KINDS = ("bare", "run", "e2e")
KIND_TEXT = {"bare": "bare invoke()", "run": "runtime run()", "e2e": "end to end"}
KIND_HELP = {"bare": "the engine's own invoke() on an input already set",
             "run": "Classifier.run on preprocessed input: quantize → invoke → dequantize",
             "e2e": "JPEG decode → resize → normalise → run → top-k"}
COLD_PARTS = (("interpreter_s", "interpreter start"), ("import_s", "runtime import"),
              ("engine_import_s", "engine import"), ("load_s", "model load"),
              ("first_inference_s", "first inference"))
COLD_COLOURS = ("#9ecae1", "#6baed6", "#4292c6", "#2171b5", "#08519c")


# ------------------------------------------------------------------------------------------ helpers

def e(x: Any) -> str:
    """Escape anything for HTML text or a quoted attribute."""
    return _html.escape("" if x is None else str(x), quote=True)


def _d(x: Any) -> dict:
    return x if isinstance(x, dict) else {}


def _l(x: Any) -> list:
    return x if isinstance(x, list) else []


def num(x: Any) -> Optional[float]:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    x = float(x)
    return x if x == x and x not in (float("inf"), float("-inf")) else None


def f_pct(v: Any, digits: int = 2) -> str:
    v = num(v)
    return "" if v is None else f"{100 * v:.{digits}f} %"


def f_ms(v: Any) -> str:
    v = num(v)
    if v is None:
        return ""
    return f"{v:.3f}" if v < 10 else f"{v:.2f}" if v < 1000 else f"{v:,.0f}"


def f_size(v: Any) -> str:
    v = num(v)
    if not v:
        return ""
    return f"{v / 1e6:.2f} MB" if v >= 1e6 else f"{v / 1e3:.1f} kB"


def f_macs(v: Any) -> str:
    v = num(v)
    if not v:
        return ""
    return f"{v / 1e9:.2f} G" if v >= 1e9 else f"{v / 1e6:.1f} M" if v >= 1e6 else f"{v / 1e3:.1f} k"


def f_s(v: Any) -> str:
    v = num(v)
    if v is None:
        return ""
    return f"{v * 1000:.0f} ms" if v < 1 else f"{v:.2f} s"


def f_num(v: Any, fmt: str = "{:,.1f}") -> str:
    v = num(v)
    return "" if v is None else fmt.format(v)


def f_date(s: Any) -> str:
    if not s:
        return ""
    try:
        dt = datetime.fromisoformat(str(s))
    except ValueError:
        return str(s)
    off = dt.utcoffset()
    zone = "" if off is None else " UTC" if not off else " " + dt.strftime("%z")
    return dt.strftime("%Y-%m-%d %H:%M") + zone


def _list_text(v: Any) -> str:
    return ", ".join(str(x) for x in v) if isinstance(v, (list, tuple)) else "" if v is None else str(v)


def status_of(row: dict) -> str:
    s = row.get("status")
    return s if s in STATUS_TEXT else "failed" if row.get("reason") and not row.get("accuracy") else "unknown"


def badge(row: dict, short: bool = False) -> str:
    """The status as a coloured pill: symbol and word, or (short) the symbol alone with a tooltip."""
    s = status_of(row)
    sym = row.get("symbol") or STATUS_SYMBOL.get(s, "?")
    word = "" if short else e(STATUS_TEXT.get(s, s))
    return (f'<span class="badge {e(s)}{" short" if short else ""}" title="{e(STATUS_TEXT.get(s, s))}">'
            f'<span class="sym">{e(sym)}</span>{word}</span>')


def rows_of(report: dict) -> List[dict]:
    return [r for r in _l(report.get("rows")) if isinstance(r, dict)]


def measured(row: dict) -> List[dict]:
    return [x for x in _l(row.get("latency")) if isinstance(x, dict) and not x.get("skipped")]


def headline(row: dict) -> Optional[dict]:
    entries = measured(row)
    h = _d(row.get("headline"))
    for x in entries:
        if x.get("threads") == h.get("threads") and x.get("batch") == h.get("batch"):
            return x
    return entries[0] if entries else None


def kstat(entry: Optional[dict], kind: str, key: str) -> Optional[float]:
    return num(_d(_d(entry).get(kind)).get(key))


def table(header: Sequence[Tuple[str, str, str]], body: Iterable[str], cls: str = "") -> str:
    """header: (text, css class, tooltip); body: ready <tr> strings."""
    ths = "".join(f'<th class="{c}"' + (f' title="{e(t)}"' if t else "") + f">{e(h)}</th>" for h, c, t in header)
    return (f'<div class="scroll"><table class="{cls}"><thead><tr>{ths}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>")


def td(text: str, cls: str = "", title: str = "", raw: bool = False, extra: str = "") -> str:
    attrs = (f' class="{cls}"' if cls else "") + (f' title="{e(title)}"' if title else "") + extra
    return f"<td{attrs}>{text if raw else e(text)}</td>"


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


def render_html(report: dict) -> str:
    report = _d(report)
    rows = rows_of(report)
    devices = [d for d in _l(report.get("devices")) if isinstance(d, dict)]
    several = len({str(r.get("device")) for r in rows if r.get("device") is not None}
                  | {str(d.get("id")) for d in devices}) > 1
    run_dir = report.get("run_dir") or "?"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta name="color-scheme" content="light">',
        f"<title>edge bench · {e(run_dir)}</title>",
        f"<style>{CSS}</style></head><body><main>",
        _header(report, rows),
        _highlights(rows, several),
        _section("Devices", _devices(devices)),
        _section("Summary", _main_table(rows, several)),
        _comparison(report.get("comparison")),
        _section("Plots", _plots(report)),
        _section("Recall per class", _recall_overview(report, rows, several)),
        _section("Artifacts in detail", _details(report, rows, several)),
        _footer(report),
        "</main></body></html>",
    ]
    return "\n".join(p for p in parts if p) + "\n"


def write_html(report: dict, path: Path) -> None:
    write_text(Path(path), render_html(report))


def _section(title: str, body: str) -> str:
    return f"<section><h2>{e(title)}</h2>\n{body}</section>" if body else ""


# ------------------------------------------------------------------------------------------ header

def _header(report: dict, rows: List[dict]) -> str:
    s = _d(report.get("settings"))
    ts = _d(report.get("test_set"))
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
    pills = "".join(f'<span class="pill {e(k)}">{e(STATUS_SYMBOL.get(k, ""))} {n} {e(STATUS_TEXT.get(k, k))}</span>'
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


def _highlights(rows: List[dict], several: bool) -> str:
    """A few figures a reader looks for first: best artifacts, int8 vs fp32 speed-up, overhead, cold start."""
    arts = [r for r in rows if r.get("kind") != "reference" and status_of(r) != "failed"]
    items = []

    def label(r: dict) -> str:
        return f"<b>{e(r.get('name'))}</b>" + (f' <span class="muted">@ {e(r.get("device"))}</span>' if several else "")

    with_p50 = [(kstat(headline(r), "run", "p50_ms"), r) for r in arts]
    with_p50 = [(v, r) for v, r in with_p50 if v]
    if with_p50:
        v, r = min(with_p50, key=lambda x: x[0])
        items.append(f"Fastest: {label(r)}, p50 {e(f_ms(v))} ms")
    with_acc = [(num(_d(r.get("accuracy")).get("top1")), r) for r in arts]
    with_acc = [(v, r) for v, r in with_acc if v is not None]
    if with_acc:
        v, r = max(with_acc, key=lambda x: x[0])
        items.append(f"Most accurate: {label(r)}, top-1 {e(f_pct(v))}")
    with_size = [(num(r.get("size_bytes")), r) for r in arts]
    with_size = [(v, r) for v, r in with_size if v]
    if with_size:
        v, r = min(with_size, key=lambda x: x[0])
        items.append(f"Smallest: {label(r)}, {e(f_size(v))}")
    by_key = {(str(r.get("device")), str(r.get("name"))): r for r in arts}
    for (dev, name), r in by_key.items():
        if not name.endswith("-int8"):
            continue
        fp32 = by_key.get((dev, name[: -len("int8")] + "fp32"))
        a, b = kstat(headline(r), "run", "p50_ms"), kstat(headline(fp32 or {}), "run", "p50_ms")
        if a and b:
            items.append(f"{label(r)} vs <b>{e(fp32.get('name'))}</b>: p50 {e(f_ms(a))} vs {e(f_ms(b))} ms "
                         f"= <b>{b / a:.2f}×</b> faster" if a < b else
                         f"{label(r)} vs <b>{e(fp32.get('name'))}</b>: p50 {e(f_ms(a))} vs {e(f_ms(b))} ms "
                         f"= <b>{a / b:.2f}×</b> slower")
        over, e2e, bare = num(_d(headline(r)).get("overhead_pct")), kstat(headline(r), "e2e", "p50_ms"), \
            kstat(headline(r), "bare", "p50_ms")
        if over is not None or (e2e and bare):
            txt = f"{label(r)}: runtime overhead over bare invoke() {e(f_num(over, '{:+.1f}'))} %" \
                if over is not None else f"{label(r)}:"
            if e2e and bare:
                txt += f"; end to end {e(f_ms(e2e))} ms vs bare {e(f_ms(bare))} ms"
            items.append(txt)
        cold = num(_d(r.get("cold")).get("cold_start_s"))
        if cold is not None:
            items.append(f"{label(r)}: cold start (process start → first prediction) {e(f_s(cold))}")
    if not items:
        return ""
    return '<section><h2>Highlights</h2><ul class="highlights">' + "".join(f"<li>{i}</li>" for i in items) + "</ul></section>"


# ----------------------------------------------------------------------------------------- devices

def _devices(devices: List[dict]) -> str:
    if not devices:
        return '<p class="note">No device information in this report.</p>'
    cards = []
    for i, d in enumerate(devices):
        fp = _d(d.get("fingerprint"))
        freq = _d(fp.get("cpu_freq"))
        items: List[Tuple[str, str]] = []

        def add(k: str, v: Any, raw: bool = False) -> None:
            if v not in (None, "", [], {}):
                items.append((k, v if raw else e(v)))

        add("host", fp.get("hostname") or d.get("host"))
        add("board", fp.get("board"))
        add("CPU", fp.get("cpu"))
        add("architecture", fp.get("architecture"))
        if fp.get("cores") is not None or fp.get("usable_cores") is not None:
            usable, cores = fp.get("usable_cores"), fp.get("cores")
            add("cores", f"{usable} usable of {cores}" if usable is not None and usable != cores else cores or usable)
        if freq:
            f = []
            if freq.get("governor"):
                f.append(f"governor {freq['governor']}")
            mhz = [(k, num(freq.get(f"{k}_mhz"))) for k in ("cur", "min", "max")]
            if any(v for _, v in mhz):
                f.append(" / ".join(f"{k} {v:,.0f}" for k, v in mhz if v) + " MHz")
            add("frequency", " · ".join(f))
        mem = num(fp.get("memory_mb"))
        add("memory", f"{mem / 1024:.1f} GB" if mem and mem >= 1024 else f"{mem:.0f} MB" if mem else None)
        add("OS", fp.get("os"))
        add("kernel", fp.get("kernel"))
        add("Python", fp.get("python"))
        pk = _d(fp.get("packages"))
        if pk:
            add("packages", ", ".join(f"{e(k)} <b>{e(v)}</b>" for k, v in pk.items() if v) or None, raw=True)
        hb, ha = _d(d.get("health_before")), _d(d.get("health_after"))
        if hb or ha:
            t0, t1 = num(hb.get("temperature_c")), num(ha.get("temperature_c"))
            if t0 is not None or t1 is not None:
                add("temperature", f"{f_num(t0) or '?'} → {f_num(t1) or '?'} °C (before → after)")
            th0, th1 = hb.get("throttled"), ha.get("throttled")
            if th0 is not None or th1 is not None:
                bad = any(x not in (None, "0x0", "0", 0) for x in (th0, th1))
                txt = f"{e(th0 if th0 is not None else '?')} → {e(th1 if th1 is not None else '?')}"
                add("throttled", f'<span class="warn-text">{txt} (throttling or under-voltage seen)</span>'
                    if bad else txt, raw=True)
        if num(d.get("seconds")):
            add("bench time", f_s(d.get("seconds")))
        title = e(d.get("id") or f"device {i + 1}") + (' <span class="tag">primary</span>' if i == 0 and len(devices) > 1 else "")
        kv = "".join(f"<dt>{e(k)}</dt><dd>{v}</dd>" for k, v in items) or "<dt>fingerprint</dt><dd>not recorded</dd>"
        cards.append(f'<div class="card"><h3>{title}</h3><dl class="kv">{kv}</dl></div>')
    return f'<div class="cards">{"".join(cards)}</div>'


# -------------------------------------------------------------------------------------- main table

MAIN_COLS = [
    # key, header, css, tooltip
    ("status", "Status", "", ""),
    ("name", "Artifact", "", ""),
    ("device", "Device", "", ""),
    ("engine", "Engine", "", ""),
    ("size", "Size", "num", "file size"),
    ("macs", "MACs", "num", "multiply-accumulates per image"),
    ("top1", "Top-1", "num", "top-1 accuracy on the test split"),
    ("top5", "Top-5", "num", "top-5 accuracy on the test split"),
    ("agree", "Agree", "num", "top-1 agreement with the Keras model"),
    ("setting", "Thr×batch", "num", "threads × batch of the headline latency setting"),
    ("p50", "p50 ms", "num", "runtime run() latency per call, headline setting"),
    ("p90", "p90 ms", "num", "runtime run() latency per call, headline setting"),
    ("p99", "p99 ms", "num", "runtime run() latency per call, headline setting"),
    ("e2e", "e2e p50 ms", "num", KIND_HELP["e2e"]),
    ("ips", "img/s", "num", "throughput of run() at the headline setting"),
    ("cold", "Cold start", "num", "process start → first prediction (imports, model load, first inference)"),
    ("rss", "Peak RSS", "num", "peak resident memory of the benchmark process"),
    ("overhead", "Overhead", "num", "runtime run() p50 over the bare interpreter invoke() p50"),
    ("reason", "Note", "", ""),
]


def _cells(row: dict) -> Dict[str, Tuple[str, Optional[float]]]:
    """Cell text plus the raw value used to find the best in a column."""
    acc = _d(row.get("accuracy"))
    h = headline(row)
    hd = _d(h)
    cold = num(_d(row.get("cold")).get("cold_start_s"))
    rss = num(_d(row.get("memory")).get("peak_rss_mb"))
    over = num(hd.get("overhead_pct"))
    p = lambda k: (f_ms(kstat(h, "run", k)), kstat(h, "run", k))  # noqa: E731
    return {
        "size": (f_size(row.get("size_bytes")), num(row.get("size_bytes"))),
        "macs": (f_macs(row.get("macs")), None),
        "top1": (f_pct(acc.get("top1")), num(acc.get("top1"))),
        "top5": (f_pct(acc.get("top5")), num(acc.get("top5"))),
        "agree": (f_pct(acc.get("agreement")), None),
        "setting": (f"{'auto' if hd.get('threads') is None else hd.get('threads')}×{hd.get('batch')}" if h else "",
                    None),
        "p50": p("p50_ms"), "p90": p("p90_ms"), "p99": p("p99_ms"),
        "e2e": (f_ms(kstat(h, "e2e", "p50_ms")), kstat(h, "e2e", "p50_ms")),
        "ips": (f_num(hd.get("throughput_ips")), num(hd.get("throughput_ips"))),
        "cold": (f_s(cold), cold),
        "rss": (f"{rss:,.0f} MB" if rss is not None else "", None),
        "overhead": (f"{over:+.1f} %" if over is not None else "", None),
    }


BEST = {"top1": max, "top5": max, "p50": min, "e2e": min, "ips": max, "size": min, "cold": min}


def _main_table(rows: List[dict], several: bool) -> str:
    if not rows:
        return '<p class="note">The report has no rows.</p>'
    settings = {(_d(headline(r)).get("threads"), _d(headline(r)).get("batch")) for r in rows if headline(r)}
    same = len(settings) == 1
    cols = [c for c in MAIN_COLS
            if c[0] != "reason" and (c[0] != "device" or several) and (c[0] != "setting" or not same)]
    cells = [_cells(r) for r in rows]
    best: Dict[str, float] = {}
    for key, pick in BEST.items():
        vals = [c[key][1] for c, r in zip(cells, rows)
                if c[key][1] is not None and r.get("kind") != "reference" and status_of(r) != "failed"]
        if len(vals) > 1 and len(set(vals)) > 1:  # a column where all are equal has no best
            best[key] = pick(vals)
    n_metric = sum(1 for c in cols if c[2] == "num")
    body = []
    for row, c in zip(rows, cells):
        st = status_of(row)
        has_numbers = any(v[0] for v in c.values())
        cls = "reference" if row.get("kind") == "reference" else ""
        tds = []
        for key, _, css, _ in cols:
            if key == "status":
                tds.append(td(badge(row, short=True), "status", raw=True))
            elif key == "name":
                title = row.get("summary") or row.get("file") or ""
                tds.append(td(row.get("name") or "?", "name", title=str(title)))
            elif key == "device":
                tds.append(td(row.get("device") or ""))
            elif key == "engine":
                tds.append(td(row.get("engine") or ""))
            elif has_numbers:
                text, raw = c[key]
                is_best = key in best and raw is not None and raw == best[key] and row.get("kind") != "reference"
                tds.append(td(text, "num best" if is_best else "num"))
        reason = row.get("reason")
        if not has_numbers:  # nothing measured: the reason spans the empty metric columns
            tds.append(td(reason or "no measurements", f"reason {st}", extra=f' colspan="{n_metric}"'))
            body.append(f'<tr class="{cls}">{"".join(tds)}</tr>')
            continue
        body.append(f'<tr class="{cls}{" has-reason" if reason else ""}">{"".join(tds)}</tr>')
        if reason:  # a note goes on its own line under the row, not in a column that widens the table
            note = td("↳ " + str(reason), f"reason {st}", extra=f' colspan="{len(cols) - 1}"')
            body.append(f'<tr class="reason-row {cls}"><td></td>{note}</tr>')
    header = [(h, css, tip) for _, h, css, tip in cols]
    setting = ""
    if same and settings:
        t, b = next(iter(settings))
        setting = f" ({e('default threads' if t is None else f'{t} thread' + ('' if t == 1 else 's'))}, batch {e(b)})"
    return (table(header, body, "main")
            + f'<p class="legend">{e(LEGEND)}. Latency: per call of the runtime\'s <code>run()</code> on preprocessed '
              f"input at the headline setting{setting}; e2e adds JPEG decode, preprocessing and top-k; overhead is "
              "run() over the bare interpreter <code>invoke()</code>. <b class=\"best-key\">Bold blue</b>: best in "
              "its column. The Keras reference row (shaded) has no latency.</p>")


# -------------------------------------------------------------------------------------------- plots

def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def png_size(png: bytes) -> Optional[Tuple[int, int]]:
    """Width and height from the PNG header (IHDR), or None for anything else."""
    if len(png) < 24 or png[:8] != b"\x89PNG\r\n\x1a\n" or png[12:16] != b"IHDR":
        return None
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def _figure(png: Optional[bytes], alt: str, caption: str, scale: float = 1.0) -> str:
    """An embedded plot; drawn at `scale`× its CSS size so it stays sharp on high-density screens."""
    if not png:
        return ""
    size = png_size(png)
    dims = f' width="{round(size[0] / scale)}" height="{round(size[1] / scale)}"' if size else ""
    return (f'<figure><img alt="{e(alt)}"{dims} src="{data_uri(png)}">'
            f"<figcaption>{caption}</figcaption></figure>")


def _plots(report: dict) -> str:
    try:
        from edgekit.benchmarks import plots
    except Exception as exc:  # matplotlib missing or broken: the report still renders
        return f'<p class="note bad">Plots unavailable: {e(type(exc).__name__)}: {e(exc)}</p>'

    def make(fn: Callable[[dict], Optional[bytes]]) -> Tuple[Optional[bytes], str]:
        try:
            return fn(report), ""
        except Exception as exc:  # one broken plot must not cost the whole report
            return None, f'<p class="note bad">The {e(fn.__name__)} plot failed: {e(type(exc).__name__)}: {e(exc)}</p>'

    scale = float(getattr(plots, "SCALE", 1.0))
    figure = lambda png, alt, caption: _figure(png, alt, caption, scale)  # noqa: E731
    out = []
    png, err = make(plots.pareto)
    out.append(err or figure(png, "accuracy vs p50 latency",
                              "Top-1 accuracy against p50 latency of the runtime's <code>run()</code>. Marker area "
                              "is proportional to file size, colour is the status; ringed points joined by the line "
                              "form the Pareto front (no other artifact is both faster and more accurate). The "
                              "dashed line is the Keras reference model.")
               or '<p class="note">No artifact has both accuracy and latency: nothing to plot.</p>')
    png, err = make(plots.latency_distributions)
    out.append(err or figure(png, "latency distributions",
                              "Latency per call at the headline setting: bare interpreter <code>invoke()</code>, "
                              "the runtime's <code>run()</code>, and end to end (JPEG decode → preprocessing → "
                              "inference → top-k). Boxes span the quartiles with the median marked; whiskers reach "
                              "p1 and p99; dots are the rest.")
               or '<p class="note">No latency samples recorded.</p>')
    png, err = make(plots.thread_scaling)
    out.append(err or figure(png, "thread scaling", "p50 latency of <code>run()</code> per thread count, one panel "
                                                     "per batch size. A flat line means extra threads do not help.")
               or '<p class="note">Thread scaling: one thread count measured: pass <code>--threads 1,2,4</code>.</p>')
    fn = getattr(plots, "throughput", None)
    if fn is not None:
        png, err = make(fn)
        out.append(err or figure(png, "throughput vs batch", "Images per second of <code>run()</code> against the "
                                                              "batch size, one panel per thread count.")
                   or '<p class="note">Throughput: one batch size measured: pass <code>--batch 1,8</code>.</p>')
    return "\n".join(out)


# ------------------------------------------------------------------------------------------ details

def _heat(rgb: Tuple[int, int, int], alpha: float) -> str:
    """An inline background of `rgb` at `alpha` (0..1), with white text on the darker shades."""
    alpha = max(0.0, min(1.0, alpha))
    fg = "#ffffff" if alpha > 0.55 else "#1f2328"
    return f' style="background: rgba({rgb[0]},{rgb[1]},{rgb[2]},{alpha:.2f}); color: {fg}"'


def _score_heat(v: float) -> str:
    """Light green for a score in [0, 1]: darker is better, low scores stand out pale."""
    return _heat(GREEN, (v - 0.5) / 0.5 * 0.4)


def _delta_heat(pp: float) -> str:
    """Red for a loss, green for a gain (percentage points), saturating at 5 pp."""
    return _heat(RED if pp < 0 else GREEN, min(abs(pp) / 5, 1) * 0.5) if abs(pp) >= 0.05 else ""


BLUE, RED, GREEN = (9, 105, 218), (207, 34, 46), (26, 127, 55)


def _labels(report: dict, row: Optional[dict] = None) -> List[str]:
    labels = [str(x) for x in _l(report.get("labels"))]
    if not labels and row is not None:
        labels = [str(k) for k in _d(_d(row.get("accuracy")).get("per_class"))]
    return labels


def _recall_overview(report: dict, rows: List[dict], several: bool) -> str:
    with_pc = [r for r in rows if _d(_d(r.get("accuracy")).get("per_class"))]
    labels = _labels(report, with_pc[0] if with_pc else None)
    if not with_pc or not labels or len(labels) > 40:
        return ""
    refs = [r for r in with_pc if r.get("kind") == "reference"]
    ref_pc = _d(_d(refs[0].get("accuracy")).get("per_class")) if refs else {}
    header = [("Artifact", "", "")] + [(lab, "num", f"recall of class {lab}") for lab in labels]
    body = []
    for r in with_pc:
        pc = _d(_d(r.get("accuracy")).get("per_class"))
        tds = [td(r.get("name") or "?" if not several else f"{r.get('name')} @ {r.get('device')}", "name")]
        for lab in labels:
            v = num(_d(pc.get(lab)).get("recall"))
            ref_v = num(_d(ref_pc.get(lab)).get("recall"))
            if v is None:
                tds.append(td("", "num"))
            elif ref_pc and r.get("kind") != "reference" and ref_v is not None:
                d = 100 * (v - ref_v)
                tds.append(f'<td class="heat"{_delta_heat(d)} title="{d:+.1f} pp vs Keras">{e(f_pct(v, 1))}</td>')
            else:
                tds.append(f'<td class="heat">{e(f_pct(v, 1))}</td>')
        cls = ' class="reference"' if r.get("kind") == "reference" else ""
        body.append(f"<tr{cls}>{''.join(tds)}</tr>")
    note = ('<p class="legend">Colour: recall gained (green) or lost (red) against the Keras reference, '
            "saturating at 5 percentage points; hover a cell for the difference.</p>") if ref_pc else ""
    return table(header, body, "recall") + note


def _per_class(report: dict, row: dict, ref: Optional[dict]) -> str:
    pc = _d(_d(row.get("accuracy")).get("per_class"))
    if not pc:
        return ""
    ref_pc = _d(_d(_d(ref).get("accuracy")).get("per_class")) if ref is not None and ref is not row else {}
    labels = [lab for lab in _labels(report, row) if lab in pc] + [k for k in pc if k not in _labels(report, row)]
    header = [("Class", "", ""), ("Precision", "num", ""), ("Recall", "num", ""), ("F1", "num", ""),
              ("Support", "num", "test images of this class")]
    if ref_pc:
        header.append(("Δ recall vs Keras", "num", "recall here minus the Keras model's, percentage points"))
    body = []
    for lab in labels:
        m = _d(pc.get(lab))
        tds = [td(lab)]
        for k in ("precision", "recall", "f1"):
            v = num(m.get(k))
            tds.append(f'<td class="heat"{_score_heat(v)}>{e(f_pct(v, 1))}</td>' if v is not None
                       else td("", "num"))
        tds.append(td(f_num(m.get("support"), "{:,.0f}"), "num"))
        if ref_pc:
            a, b = num(m.get("recall")), num(_d(ref_pc.get(lab)).get("recall"))
            if a is None or b is None:
                tds.append(td("", "num"))
            else:
                d = 100 * (a - b)
                tds.append(f'<td class="heat"{_delta_heat(d)}>{d:+.1f} pp</td>')
        body.append(f"<tr>{''.join(tds)}</tr>")
    mf1 = num(_d(row.get("accuracy")).get("macro_f1"))
    return ("<div><h3>Per-class precision and recall</h3>" + table(header, body)
            + (f'<p class="small muted">Macro F1 {e(f_pct(mf1))}</p>' if mf1 is not None else "") + "</div>")


def _confusion(report: dict, row: dict) -> str:
    cm = _l(_d(row.get("accuracy")).get("confusion_matrix"))
    cm = [[num(v) or 0.0 for v in _l(r)] for r in cm]
    k = len(cm)
    if not k or k > 40 or any(len(r) != k for r in cm):
        return ""
    labels = _labels(report, row)
    if len(labels) != k:
        labels = [str(i) for i in range(k)]
    rates = [[v / max(sum(r), 1) for v in r] for r in cm]
    off = max([rates[i][j] for i in range(k) for j in range(k) if i != j] or [0]) or 1
    head = '<th class="row">true ↓ / predicted →</th>' + "".join(f'<th class="col">{e(lab)}</th>' for lab in labels)
    body = []
    for i in range(k):
        tds = [f'<th class="row">{e(labels[i])}</th>']
        for j in range(k):
            rate = rates[i][j]
            style = _heat(BLUE, rate) if i == j else _heat(RED, rate / off * 0.8 if cm[i][j] else 0)
            tip = f"true {labels[i]} → predicted {labels[j]}: {cm[i][j]:,.0f} ({100 * rate:.1f} % of the class)"
            tds.append(f'<td{style} title="{e(tip)}">{cm[i][j]:,.0f}</td>')
        body.append(f"<tr>{''.join(tds)}</tr>")
    return ('<div><h3>Confusion matrix</h3><div class="scroll"><table class="cm"><thead><tr>' + head
            + f"</tr></thead><tbody>{''.join(body)}</tbody></table></div>"
            '<p class="small muted">Rows: true class; blue: correct (share of the class); red: confusions, '
            "scaled to the largest one.</p></div>")


def _latency_table(row: dict) -> str:
    entries = [x for x in _l(row.get("latency")) if isinstance(x, dict)]
    if not entries:
        return ""
    h = headline(row)
    header = [("Threads", "num", ""), ("Batch", "num", ""), ("Kind", "", ""), ("n", "num", "timed calls"),
              ("p50", "num", ""), ("p90", "num", ""), ("p99", "num", ""), ("mean", "num", ""), ("std", "num", ""),
              ("min", "num", ""), ("max", "num", ""), ("Overhead", "num", "run() p50 over bare invoke() p50"),
              ("img/s", "num", ""), ("GMAC/s", "num", "")]
    body = []
    for x in entries:
        t, b = e("auto" if x.get("threads") is None else x.get("threads")), e(x.get("batch"))
        if x.get("skipped"):
            body.append(f'<tr>{td(t, "num")}{td(b, "num")}'
                        f'<td colspan="12" class="muted">skipped: {e(x.get("skipped"))}</td></tr>')
            continue
        kinds = [k for k in KINDS if isinstance(x.get(k), dict)] or [None]
        span = len(kinds)
        for n, k in enumerate(kinds):
            tds = []
            if n == 0:
                tag = ' <span class="tag">headline</span>' if x is h else ""
                tds += [f'<td class="num" rowspan="{span}">{t}</td>',
                        f'<td class="num" rowspan="{span}">{b}{tag}</td>']
            st = _d(x.get(k)) if k else {}
            tds.append(td(KIND_TEXT.get(k, k or ""), title=KIND_HELP.get(k or "", "")))
            tds.append(td(f_num(st.get("n"), "{:,.0f}"), "num"))
            for key in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "min_ms", "max_ms"):
                tds.append(td(f_ms(st.get(key)), "num"))
            if n == 0:
                over = num(x.get("overhead_pct"))
                tds += [f'<td class="num" rowspan="{span}">{e(f"{over:+.1f} %" if over is not None else "")}</td>',
                        f'<td class="num" rowspan="{span}">{e(f_num(x.get("throughput_ips")))}</td>',
                        f'<td class="num" rowspan="{span}">{e(f_num(x.get("gmacs_per_s"), "{:,.2f}"))}</td>']
            body.append(f"<tr>{''.join(tds)}</tr>")
    return ("<h3>Latency, every setting (ms per call)</h3>" + table(header, body, "latency"))


def _cold(row: dict) -> str:
    cold, mem = _d(row.get("cold")), _d(row.get("memory"))
    if not cold and not mem:
        return ""
    out = ['<div><h3>Cold start and memory</h3>']
    parts = [(label, num(cold.get(k)), colour) for (k, label), colour in zip(COLD_PARTS, COLD_COLOURS)]
    parts = [(label, v, colour) for label, v, colour in parts if v is not None and v >= 0]
    total = sum(v for _, v, _ in parts)
    if total > 0:
        bar = "".join(f'<span style="width:{100 * v / total:.2f}%; background:{c}" title="{e(lab)}: {e(f_s(v))}"></span>'
                      for lab, v, c in parts)
        key = "".join(f'<span class="swatch" style="background:{c}"></span>{e(lab)} {e(f_s(v))}' for lab, v, c in parts)
        out.append(f'<div class="coldbar">{bar}</div><div class="small muted">{key}</div>')
    items = [("cold start", f_s(cold.get("cold_start_s")), "process start → first prediction")]
    if total <= 0:
        items += [(lab, f_s(cold.get(k)), "") for k, lab in COLD_PARTS]
    items += [("peak RSS after model load", f_num(mem.get("peak_rss_after_load_mb"), "{:,.1f} MB"), ""),
              ("peak RSS", f_num(mem.get("peak_rss_mb"), "{:,.1f} MB"), "whole benchmark process")]
    kv = "".join(f"<dt>{e(k)}</dt><dd><b>{e(v)}</b>" + (f' <span class="muted">{e(n)}</span>' if n else "") + "</dd>"
                 for k, v, n in items if v)
    out.append(f'<dl class="kv" style="margin-top:8px">{kv}</dl></div>')
    return "".join(out)


def _details(report: dict, rows: List[dict], several: bool) -> str:
    if not rows:
        return ""
    refs = [r for r in rows if r.get("kind") == "reference"]
    ref = refs[0] if refs else None
    out = []
    for r in rows:
        acc, h = _d(r.get("accuracy")), headline(r)
        bits = [b for b in (r.get("engine"), f_size(r.get("size_bytes")),
                            f"top-1 {f_pct(acc.get('top1'))}" if acc.get("top1") is not None else "",
                            f"p50 {f_ms(kstat(h, 'run', 'p50_ms'))} ms" if kstat(h, "run", "p50_ms") else "") if b]
        name = e(r.get("name") or "?") + (f' <span class="muted">@ {e(r.get("device"))}</span>' if several else "")
        info = []
        for k, label in (("summary", "what"), ("file", "file"), ("engine", "engine"), ("reason", "note")):
            if r.get(k):
                cls = ' class="warn-text"' if k == "reason" and status_of(r) == "failed" else ""
                info.append(f"<dt>{e(label)}</dt><dd{cls}>{e(r.get(k))}</dd>")
        if acc.get("images") is not None:
            info.append(f"<dt>images</dt><dd>{e(f_num(acc.get('images'), '{:,.0f}'))}</dd>")
        if r.get("macs"):
            info.append(f"<dt>MACs per image</dt><dd>{e(f_macs(r.get('macs')))}</dd>")
        check = _d(acc.get("convert_check"))
        if check:
            info.append(f"<dt>same as convert</dt><dd>{'yes' if check.get('equal') else 'NO'}: "
                        f"{e(f_pct(check.get('bench')))} here, {e(f_pct(check.get('convert')))} in convert "
                        f"on {e(check.get('images'))} images</dd>")
        top = [f'<div><h3>Artifact</h3><dl class="kv">{"".join(info)}</dl></div>' if info else "", _cold(r)]
        acc_parts = [_per_class(report, r, ref), _confusion(report, r)]
        body = [f'<div class="twocol">{"".join(top)}</div>' if any(top) else "",
                f'<div class="twocol">{"".join(acc_parts)}</div>' if any(acc_parts) else "",
                _latency_table(r)]
        body = [b for b in body if b]
        if not body:
            body = ['<p class="muted">Nothing measured.</p>']
        out.append(f"<details><summary>{badge(r)} <b>{name}</b>"
                   f'<span class="muted">{e(" · ".join(bits))}</span></summary>'
                   f'<div class="body">{"".join(body)}</div></details>')
    return "\n".join(out)


# --------------------------------------------------------------------------------- comparison/footer

def _comparison(cmp: Any) -> str:
    if not isinstance(cmp, dict):
        return ""
    ok = cmp.get("passed")
    verdict = ('<p class="note good">✅ No regression against the baseline.</p>' if ok is True else
               '<p class="note bad">❌ Regression against the baseline.</p>' if ok is False else "")
    limits = []
    if cmp.get("max_accuracy_drop_pp") is not None:
        limits.append(f"accuracy may drop at most <b>{e(cmp.get('max_accuracy_drop_pp'))} pp</b>")
    if cmp.get("max_latency_growth_pct") is not None:
        limits.append(f"p50 latency may grow at most <b>{e(cmp.get('max_latency_growth_pct'))} %</b>")
    head = (f'<p class="meta">Baseline <code>{e(cmp.get("baseline") or "?")}</code>'
            + (f" · {'; '.join(limits)}" if limits else "") + "</p>")
    checks = [c for c in _l(cmp.get("checks")) if isinstance(c, dict)]
    header = [("", "", ""), ("Artifact", "", ""), ("Metric", "", ""), ("Old", "num", ""), ("New", "num", ""),
              ("Change", "num", ""), ("Limit", "num", "")]
    body = []
    for c in checks:
        good = c.get("ok")
        sym = "✅" if good is True else "❌" if good is False else "–"
        fmt = (lambda v: f_pct(v)) if c.get("metric") in ("top1", "top5", "agreement") else \
            (lambda v: f_ms(v) if num(v) is not None else ("" if v is None else str(v)))
        body.append("<tr" + (' class="regression"' if good is False else "") + ">"
                    + td(sym) + td(c.get("name") or "", "name") + td(c.get("metric") or "")
                    + td(fmt(c.get("old")), "num") + td(fmt(c.get("new")), "num")
                    + td(c.get("change") or "", "num" + (" warn-text" if good is False else ""))
                    + td(c.get("limit") or "", "num") + "</tr>")
    return _section("Comparison with the baseline", head + verdict + (table(header, body) if body else ""))


def _footer(report: dict) -> str:
    bits = []
    if report.get("command"):
        bits.append(f"Command <code>{e(report.get('command'))}</code>")
    bits.append(f"report schema v{e(report.get('schema_version') if report.get('schema_version') is not None else '?')}")
    if report.get("created"):
        bits.append(f"created {e(f_date(report.get('created')))}")
    bits.append("generated by <b>edge bench</b>; the same figures are in report.json and report.md")
    return f"<footer>{' · '.join(bits)}</footer>"
