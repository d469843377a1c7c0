"""The per-artifact parts of report.html: recall per class, confusion matrix, latency table, cold start.

recall_overview() is the page's one table of every artifact's recall per class; artifact_details() is
one collapsible block per row with the rest.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

from edgekit.benchmarks.report.fields import as_dict, as_list, headline_entry, num, stat
from edgekit.benchmarks.report.html_format import (KIND_HELP, badge, e, f_macs, f_ms, f_num, f_pct, f_s, f_size, status_of,
                                            table, td)
from edgekit.benchmarks.report.schema import Report, Row

KINDS = ("bare", "run", "e2e")
KIND_TEXT = {"bare": "bare invoke()", "run": "runtime predict()", "e2e": "end to end"}
COLD_PARTS = (("interpreter_s", "interpreter start"), ("import_s", "runtime import"),
              ("engine_import_s", "engine import"), ("load_s", "model load"),
              ("first_inference_s", "first inference"))
COLD_COLOURS = ("#9ecae1", "#6baed6", "#4292c6", "#2171b5", "#08519c")


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


def _labels(report: Report, row: Optional[Row] = None) -> List[str]:
    labels = [str(x) for x in as_list(report.get("labels"))]
    if not labels and row is not None:
        labels = [str(k) for k in as_dict(as_dict(row.get("accuracy")).get("per_class"))]
    return labels


def recall_overview(report: Report, rows: List[Row], several: bool) -> str:
    with_pc = [r for r in rows if as_dict(as_dict(r.get("accuracy")).get("per_class"))]
    labels = _labels(report, with_pc[0] if with_pc else None)
    if not with_pc or not labels or len(labels) > 40:
        return ""
    refs = [r for r in with_pc if r.get("kind") == "reference"]
    ref_pc = as_dict(as_dict(refs[0].get("accuracy")).get("per_class")) if refs else {}
    header = [("Artifact", "", "")] + [(lab, "num", f"recall of class {lab}") for lab in labels]
    body = []
    for r in with_pc:
        pc = as_dict(as_dict(r.get("accuracy")).get("per_class"))
        tds = [td(r.get("name") or "?" if not several else f"{r.get('name')} @ {r.get('device')}", "name")]
        for lab in labels:
            v = num(as_dict(pc.get(lab)).get("recall"))
            ref_v = num(as_dict(ref_pc.get(lab)).get("recall"))
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


def _per_class(report: Report, row: Row, ref: Optional[dict]) -> str:
    pc = as_dict(as_dict(row.get("accuracy")).get("per_class"))
    if not pc:
        return ""
    ref_pc = (as_dict(as_dict(as_dict(ref).get("accuracy")).get("per_class"))
              if ref is not None and ref is not row else {})
    labels = [lab for lab in _labels(report, row) if lab in pc] + [k for k in pc if k not in _labels(report, row)]
    header = [("Class", "", ""), ("Precision", "num", ""), ("Recall", "num", ""), ("F1", "num", ""),
              ("Support", "num", "test images of this class")]
    if ref_pc:
        header.append(("Δ recall vs Keras", "num", "recall here minus the Keras model's, percentage points"))
    body = []
    for lab in labels:
        m = as_dict(pc.get(lab))
        tds = [td(lab)]
        for k in ("precision", "recall", "f1"):
            v = num(m.get(k))
            tds.append(f'<td class="heat"{_score_heat(v)}>{e(f_pct(v, 1))}</td>' if v is not None
                       else td("", "num"))
        tds.append(td(f_num(m.get("support"), "{:,.0f}"), "num"))
        if ref_pc:
            a, b = num(m.get("recall")), num(as_dict(ref_pc.get(lab)).get("recall"))
            if a is None or b is None:
                tds.append(td("", "num"))
            else:
                d = 100 * (a - b)
                tds.append(f'<td class="heat"{_delta_heat(d)}>{d:+.1f} pp</td>')
        body.append(f"<tr>{''.join(tds)}</tr>")
    mf1 = num(as_dict(row.get("accuracy")).get("macro_f1"))
    return ("<div><h3>Per-class precision and recall</h3>" + table(header, body)
            + (f'<p class="small muted">Macro F1 {e(f_pct(mf1))}</p>' if mf1 is not None else "") + "</div>")


def _confusion(report: Report, row: Row) -> str:
    cm = as_list(as_dict(row.get("accuracy")).get("confusion_matrix"))
    cm = [[num(v) or 0.0 for v in as_list(r)] for r in cm]
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


def _latency_table(row: Row) -> str:
    entries = [x for x in as_list(row.get("latency")) if isinstance(x, dict)]
    if not entries:
        return ""
    h = headline_entry(row)
    header = [("Threads", "num", ""), ("Batch", "num", ""), ("Kind", "", ""), ("n", "num", "timed calls"),
              ("p50", "num", ""), ("p90", "num", ""), ("p99", "num", ""), ("mean", "num", ""), ("std", "num", ""),
              ("min", "num", ""), ("max", "num", ""), ("Overhead", "num", "predict() p50 over bare invoke() p50"),
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
            st = as_dict(x.get(k)) if k else {}
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


def _cold(row: Row) -> str:
    cold, mem = as_dict(row.get("cold")), as_dict(row.get("memory"))
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


def artifact_details(report: Report, rows: List[Row], several: bool) -> str:
    if not rows:
        return ""
    refs = [r for r in rows if r.get("kind") == "reference"]
    ref = refs[0] if refs else None
    out = []
    for r in rows:
        acc, h = as_dict(r.get("accuracy")), headline_entry(r)
        bits = [b for b in (r.get("engine"), f_size(r.get("size_bytes")),
                            f"top-1 {f_pct(acc.get('top1'))}" if acc.get("top1") is not None else "",
                            f"p50 {f_ms(stat(h, 'run', 'p50_ms'))} ms" if stat(h, "run", "p50_ms") else "") if b]
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
        check = as_dict(acc.get("convert_check"))
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
