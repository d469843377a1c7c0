"""The overview sections of report.html: highlights, device cards, the summary table, the plots, the baseline.

Each function returns its HTML ("" when the report has nothing for it); html.py puts them in order.
"""
from __future__ import annotations

import base64
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from edgekit.benchmarks.report.fields import as_dict, as_list, headline_entry, num, stat, threads_text
from edgekit.status import LEGEND
from edgekit.benchmarks.report.html_format import (badge, e, f_macs, f_ms, f_num, f_pct, f_s, f_size, status_of,
                                            table, td)
from edgekit.benchmarks.report.schema import Report, Row
from edgekit.benchmarks.report.table import SPECS


def highlights(rows: List[Row], several: bool, recommended: List[dict] = ()) -> str:
    """A few figures a reader looks for first: best artifacts, int8 vs fp32 speed-up, overhead, cold start."""
    arts = [r for r in rows if r.get("kind") != "reference" and status_of(r) != "failed"]
    items = []
    for rec in recommended:
        at = f' <span class="muted">@ {e(rec.get("device"))}</span>' if several else ""
        items.append(f"<b>★ Recommended{at}: {e(rec.get('artifact'))}</b>, the fastest ✅ artifact ({e(rec.get('metric'))}) "
                     f"within {e(f_num(rec.get('max_accuracy_drop_pp'), '{:g}'))} pp of the reference's top-1; "
                     "<code>edge select</code> weighs other budgets")

    def label(r: dict) -> str:
        return f"<b>{e(r.get('name'))}</b>" + (f' <span class="muted">@ {e(r.get("device"))}</span>' if several else "")

    with_p50 = [(stat(headline_entry(r), "run", "p50_ms"), r) for r in arts]
    with_p50 = [(v, r) for v, r in with_p50 if v]
    if with_p50:
        v, r = min(with_p50, key=lambda x: x[0])
        items.append(f"Fastest: {label(r)}, p50 {e(f_ms(v))} ms")
    with_acc = [(num(as_dict(r.get("accuracy")).get("top1")), r) for r in arts]
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
        a, b = stat(headline_entry(r), "run", "p50_ms"), stat(headline_entry(fp32 or {}), "run", "p50_ms")
        if a and b:
            items.append(f"{label(r)} vs <b>{e(fp32.get('name'))}</b>: p50 {e(f_ms(a))} vs {e(f_ms(b))} ms "
                         f"= <b>{b / a:.2f}×</b> faster" if a < b else
                         f"{label(r)} vs <b>{e(fp32.get('name'))}</b>: p50 {e(f_ms(a))} vs {e(f_ms(b))} ms "
                         f"= <b>{a / b:.2f}×</b> slower")
        over, e2e, bare = num(as_dict(headline_entry(r)).get("overhead_pct")), \
            stat(headline_entry(r), "e2e", "p50_ms"), stat(headline_entry(r), "bare", "p50_ms")
        if over is not None or (e2e and bare):
            txt = f"{label(r)}: runtime overhead over bare invoke() {e(f_num(over, '{:+.1f}'))} %" \
                if over is not None else f"{label(r)}:"
            if e2e and bare:
                txt += f"; end to end {e(f_ms(e2e))} ms vs bare {e(f_ms(bare))} ms"
            items.append(txt)
        cold = num(as_dict(r.get("cold")).get("cold_start_s"))
        if cold is not None:
            items.append(f"{label(r)}: cold start (process start → first prediction) {e(f_s(cold))}")
    if not items:
        return ""
    return '<section><h2>Highlights</h2><ul class="highlights">' + "".join(f"<li>{i}</li>" for i in items) + "</ul></section>"


# ----------------------------------------------------------------------------------------- devices

def device_cards(devices: List[dict]) -> str:
    if not devices:
        return '<p class="note">No device information in this report.</p>'
    cards = []
    for i, d in enumerate(devices):
        fp = as_dict(d.get("fingerprint"))
        freq = as_dict(fp.get("cpu_freq"))
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
        pk = as_dict(fp.get("packages"))
        if pk:
            add("packages", ", ".join(f"{e(k)} <b>{e(v)}</b>" for k, v in pk.items() if v) or None, raw=True)
        hb, ha = as_dict(d.get("health_before")), as_dict(d.get("health_after"))
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
# the main table's columns, in table.SPECS' order: (key, header, css, tooltip)
MAIN_COLS = [(c.html, c.html_header, "num" if c.number else "", c.tip) for c in SPECS]


def _cells(row: Row) -> Dict[str, Tuple[str, Optional[float]]]:
    """Cell text plus the raw value used to find the best in a column."""
    acc = as_dict(row.get("accuracy"))
    h = headline_entry(row)
    hd = as_dict(h)
    cold = num(as_dict(row.get("cold")).get("cold_start_s"))
    rss = num(as_dict(row.get("memory")).get("peak_rss_mb"))
    over = num(hd.get("overhead_pct"))
    p = lambda k: (f_ms(stat(h, "run", k)), stat(h, "run", k))  # noqa: E731
    return {
        "size": (f_size(row.get("size_bytes")), num(row.get("size_bytes"))),
        "macs": (f_macs(row.get("macs")), None),
        "top1": (f_pct(acc.get("top1")), num(acc.get("top1"))),
        "top5": (f_pct(acc.get("top5")), num(acc.get("top5"))),
        "agree": (f_pct(acc.get("agreement")), None),
        "setting": (f"{'auto' if hd.get('threads') is None else hd.get('threads')}×{hd.get('batch')}" if h else "",
                    None),
        "p50": p("p50_ms"), "p90": p("p90_ms"), "p99": p("p99_ms"),
        "e2e": (f_ms(stat(h, "e2e", "p50_ms")), stat(h, "e2e", "p50_ms")),
        "ips": (f_num(hd.get("throughput_ips")), num(hd.get("throughput_ips"))),
        "cold": (f_s(cold), cold),
        "rss": (f"{rss:,.0f} MB" if rss is not None else "", None),
        "overhead": (f"{over:+.1f} %" if over is not None else "", None),
    }


BEST = {"top1": max, "top5": max, "p50": min, "e2e": min, "ips": max, "size": min, "cold": min}


def summary_table(rows: List[Row], several: bool, recommended: Set[Tuple[Any, Any]] = frozenset()) -> str:
    if not rows:
        return '<p class="note">The report has no rows.</p>'
    settings = {(as_dict(headline_entry(r)).get("threads"), as_dict(headline_entry(r)).get("batch"))
                for r in rows if headline_entry(r)}
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
                star = (row.get("name"), row.get("device")) in recommended
                tds.append(td(("★ " if star else "") + (row.get("name") or "?"), "name recommended" if star else "name",
                              title=str(title) + (" (recommended)" if star else "")))
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
        setting = f" ({e(threads_text(t))}, batch {e(b)})"
    return (table(header, body, "main")
            + f'<p class="legend">{e(LEGEND)}. Latency: per call of the runtime\'s <code>predict()</code> on a uint8 '
              f"frame at the model's size, at the headline setting{setting}; e2e adds JPEG decode, resize and top-k; "
              "overhead is predict() over the bare interpreter <code>invoke()</code>. <b class=\"best-key\">Bold blue</b>: best in "
              "its column. ★: the recommended artifact (see Highlights). The Keras reference row (shaded) has no latency.</p>")


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


def plots_section(report: Report) -> str:
    try:
        from edgekit.benchmarks.report import plots
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
                              "Top-1 accuracy against p50 latency of the runtime's <code>predict()</code>. Marker area "
                              "is proportional to file size, colour is the status; ringed points joined by the line "
                              "form the Pareto front (no other artifact is both faster and more accurate). The "
                              "dashed line is the Keras reference model.")
               or '<p class="note">No artifact has both accuracy and latency: nothing to plot.</p>')
    png, err = make(plots.latency_distributions)
    out.append(err or figure(png, "latency distributions",
                              "Latency per call at the headline setting: bare interpreter <code>invoke()</code>, "
                              "the runtime's <code>predict()</code>, and end to end (JPEG decode → preprocessing → "
                              "inference → top-k). Boxes span the quartiles with the median marked; whiskers reach "
                              "p1 and p99; dots are the rest.")
               or '<p class="note">No latency samples recorded.</p>')
    png, err = make(plots.thread_scaling)
    out.append(err or figure(png, "thread scaling", "p50 latency of <code>predict()</code> per thread count, one panel "
                                                     "per batch size. A flat line means extra threads do not help.")
               or '<p class="note">Thread scaling: one thread count measured: pass <code>--threads 1,2,4</code>.</p>')
    fn = getattr(plots, "throughput", None)
    if fn is not None:
        png, err = make(fn)
        out.append(err or figure(png, "throughput vs batch", "Images per second of <code>predict()</code> against the "
                                                              "batch size, one panel per thread count.")
                   or '<p class="note">Throughput: one batch size measured: pass <code>--batch 1,8</code>.</p>')
    return "\n".join(out)


# ---------------------------------------------------------------------------------------- comparison

def comparison(cmp: Any) -> str:
    """The body of the baseline section: limits, verdict and one line per check ("" without a comparison)."""
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
    checks = [c for c in as_list(cmp.get("checks")) if isinstance(c, dict)]
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
    return head + verdict + (table(header, body) if body else "")
