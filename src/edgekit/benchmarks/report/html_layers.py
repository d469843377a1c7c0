"""report.html's "Where int8 hurts" section: per quantized artifact, the error int8 adds at each layer as
horizontal bars, worst first (convert's per-layer diagnosis, carried into the rows as `layers`), with the
layers a mixed artifact kept in float tagged. Bars are plain HTML, so they scale with the page and print."""
from __future__ import annotations

from typing import List

from edgekit.benchmarks.report.fields import as_dict, as_list, num
from edgekit.benchmarks.report.html_format import badge, e, table, td
from edgekit.benchmarks.report.schema import Row

SHOWN = 12          # bars per artifact
NAME_CHARS = 70     # a layer name longer than this is cut (the full name is its tooltip)

CSS = """
.bars td.bar { width: 45%; min-width: 160px; }
.bars .track { background: #f6f8fa; border-radius: 3px; height: 14px; }
.bars .fill { background: #cf222e; border-radius: 3px; height: 14px; }
.bars .fill.kept { background: #0969da; }
.bars td.layer { font-family: ui-monospace, monospace; font-size: 12px; }
"""


def layers_section(rows: List[Row]) -> str:
    seen, parts = set(), []
    for r in rows:
        layers = as_dict(r.get("layers"))
        errors = [x for x in as_list(layers.get("errors")) if isinstance(x, dict)]
        if not errors or r.get("name") in seen:   # the diagnosis is convert's: one chart per artifact
            continue
        seen.add(r.get("name"))
        parts.append(_chart(r, errors[:SHOWN], {str(k) for k in as_list(layers.get("kept_in_float"))}))
    if not parts:
        return ""
    intro = ('<p class="note">The error int8 adds at each layer by itself (the float op run on the same quantized '
             "input), per output channel relative to that channel's spread over the calibration images, worst "
             "first: 0 is exact, 1 is the signal lost. Blue bars: layers the mixed artifact keeps in float.</p>")
    return intro + "".join(parts)


def _chart(row: Row, errors: List[dict], kept: set) -> str:
    values = [num(x.get("error")) for x in errors]
    top = max([v for v in values if v is not None] + [1e-9])
    body = []
    for i, (x, v) in enumerate(zip(errors, values), 1):
        name = str(x.get("layer", ""))
        short = name if len(name) <= NAME_CHARS else name[:NAME_CHARS - 1] + "…"
        width = 100.0 if v is None else max(0.5, 100.0 * v / top)
        cls = "fill kept" if name in kept else "fill"
        bar = f'<div class="track"><div class="{cls}" style="width: {width:.1f}%"></div></div>'
        body.append("<tr>" + td(str(i), "num") + td(str(x.get("op", ""))) + td(short, "layer", title=name)
                    + td(bar, "bar", raw=True) + td("∞" if v is None else f"{v:.3f}", "num")
                    + td("kept in float" if name in kept else "") + "</tr>")
    header = [("#", "num", ""), ("op", "", "TFLite op type"), ("layer", "", "the op's output tensor"),
              ("error", "", "RMSE / channel spread"), ("", "num", ""), ("", "", "")]
    return (f"<h3>{e(row.get('name'))} {badge(row, short=True)}</h3>"
            + table(header, body, cls="bars"))
