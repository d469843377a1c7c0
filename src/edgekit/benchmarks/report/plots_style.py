"""What every plot of report.html shares: the Agg backend, style constants, and figure, axis and label helpers.

The plots themselves are in plots.py (pareto) and plots_latency.py (distributions, thread scaling, throughput).
"""
from __future__ import annotations

import io
import math
import sys
from typing import Any, Iterable, List, Sequence

import matplotlib

if "matplotlib.pyplot" not in sys.modules:  # Agg before pyplot is ever imported; never switch a live session
    matplotlib.use("Agg")
# Figures are built with the object API (Figure + FigureCanvasAgg), not pyplot: no global state, no GUI.
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter  # noqa: E402

from edgekit.benchmarks.report.fields import as_dict, as_list, headline_entry, rows_of, threads_text  # noqa: E402
from edgekit.benchmarks.report.schema import Report, Row

DPI = 110    # layout resolution: fonts and sizes are chosen for it
SCALE = 1.6  # PNGs are rendered at DPI × SCALE; the HTML shows them at 1/SCALE for sharp high-density screens
DEVICE_MARKERS = ("o", "s", "^", "D", "v", "P", "X")
DEVICE_LINESTYLES = ("-", "--", ":", "-.")
WIDE = 8.0  # max/min ratio beyond which a latency axis goes logarithmic
RC = {"font.size": 10, "axes.titlesize": 12, "axes.labelsize": 10.5, "legend.fontsize": 9,
      "xtick.labelsize": 9, "ytick.labelsize": 9, "axes.spines.top": False, "axes.spines.right": False,
      "text.usetex": False}


def device_ids(report: Report) -> List[str]:
    """Devices in report order (devices[0] is the primary), plus any only named by a row."""
    ids: List[str] = []
    for d in as_list(as_dict(report).get("devices")):
        i = as_dict(d).get("id")
        if i is not None and str(i) not in ids:
            ids.append(str(i))
    for r in rows_of(report):
        i = r.get("device")
        if i is not None and str(i) not in ids:
            ids.append(str(i))
    return ids


def is_reference(row: Row) -> bool:
    return row.get("kind") == "reference"


def name_of(row: Row) -> str:
    return str(row.get("name") if row.get("name") is not None else "?")


def plain(text: Any, limit: int = 40) -> str:
    """Text for matplotlib: no mathtext ($), no runaway lengths."""
    s = str(text).replace("\n", " ")
    if len(s) > limit:
        s = s[: limit - 1] + "…"
    return s.replace("$", r"\$")


def ratio_wide(values: Iterable[float]) -> bool:
    vals = [v for v in values if v and v > 0]
    return bool(vals) and max(vals) / min(vals) >= WIDE


def _fmt_ms(v: float, _pos=None) -> str:
    if v <= 0:
        return "0"
    if v >= 100:
        return f"{v:,.0f}"
    return f"{v:.3g}"


def log_axis(axis, values: Sequence[float] = ()) -> None:
    """Logarithmic axis labelled with plain numbers on a 1-2-5 grid (more ticks for a narrow range)."""
    lo, hi = axis.get_view_interval()
    lo, hi = min(lo, hi), max(lo, hi)
    if lo <= 0:
        lo = min([v for v in values if v > 0] or [hi / 10])
    ticks: List[float] = []
    for steps in ((1, 2, 5), (1, 2, 3, 5, 7), tuple(range(1, 10))):
        ticks = [m * 10.0 ** k for k in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1)
                 for m in steps if lo <= m * 10.0 ** k <= hi]
        if len(ticks) >= 4:
            break
    axis.set_major_locator(FixedLocator(ticks))
    axis.set_major_formatter(FuncFormatter(_fmt_ms))
    axis.set_minor_locator(LogLocator(subs="all"))
    axis.set_minor_formatter(NullFormatter())


def new_figure(w: float, h: float) -> Figure:
    fig = Figure(figsize=(w, h), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def to_png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI * SCALE, bbox_inches="tight", pad_inches=0.15, facecolor="white")
    return buf.getvalue()


def headline_text(report: Report, rs: List[dict]) -> str:
    """'threads 1, batch 1' when every plotted row uses the same headline setting."""
    settings = set()
    for r in rs:
        e = headline_entry(r)
        if e:
            settings.add((e.get("threads"), e.get("batch")))
    if len(settings) == 1:
        t, b = settings.pop()
        return f"{threads_text(t)}, batch {b}"
    return ""

