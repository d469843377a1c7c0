"""PNG plots of a benchmark report (the dict written to report.json), for report.html.

Every function takes the report dict and returns PNG bytes, or None when the report holds nothing to
plot (no latency measured, a single thread count, a single batch size). They never raise on missing or
null fields: a failed artifact row has only name/status/symbol/reason.

- pareto: top-1 accuracy vs p50 latency of the headline setting, point area ∝ file size, status colours,
  the Pareto front (rows no other row beats on both accuracy and latency) connected and ringed, the Keras
  reference row as a dashed horizontal line. One marker shape per device when there are several.
- latency_distributions: box plots of the headline setting's samples, bare / run / e2e per artifact.
- thread_scaling: p50 (run) vs threads, one line per artifact, one panel per batch size.
- throughput: images/s vs batch, one line per artifact, one panel per thread count.
"""
from __future__ import annotations

import io
import math
import sys
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import matplotlib

if "matplotlib.pyplot" not in sys.modules:  # Agg before pyplot is ever imported; never switch a live session
    matplotlib.use("Agg")
# Figures are built with the object API (Figure + FigureCanvasAgg), not pyplot: no global state, no GUI.
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.text import Text  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter  # noqa: E402
from matplotlib.transforms import Bbox, blended_transform_factory  # noqa: E402

from edgekit.atomic import write_with  # noqa: E402

DPI = 110    # layout resolution: fonts and sizes are chosen for it
SCALE = 1.6  # PNGs are rendered at DPI × SCALE; the HTML shows them at 1/SCALE for sharp high-density screens
KINDS = ("bare", "run", "e2e")
KIND_LABELS = {"bare": "bare invoke()", "run": "runtime run()", "e2e": "end to end (JPEG → top-k)"}
KIND_COLOURS = {"bare": "#4C78A8", "run": "#F58518", "e2e": "#54A24B"}
STATUS_COLOURS = {"passed": "#2CA02C", "outside_tolerance": "#E6A000", "failed": "#D62728"}
STATUS_LABELS = {"passed": "passed", "outside_tolerance": "outside tolerance", "failed": "failed"}
DEVICE_MARKERS = ("o", "s", "^", "D", "v", "P", "X")
DEVICE_LINESTYLES = ("-", "--", ":", "-.")
MIN_BOX = 10  # fewer samples than this are drawn as dots, not as a box plot
WIDE = 8.0  # max/min ratio beyond which a latency axis goes logarithmic
RC = {"font.size": 10, "axes.titlesize": 12, "axes.labelsize": 10.5, "legend.fontsize": 9,
      "xtick.labelsize": 9, "ytick.labelsize": 9, "axes.spines.top": False, "axes.spines.right": False,
      "text.usetex": False}


# ----------------------------------------------------------------------------------------------- data

def _dict(x: Any) -> dict:
    return x if isinstance(x, dict) else {}


def _list(x: Any) -> list:
    return x if isinstance(x, list) else []


def num(x: Any) -> Optional[float]:
    """A finite float, or None for null / NaN / strings / booleans."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def rows(report: dict) -> List[dict]:
    return [r for r in _list(_dict(report).get("rows")) if isinstance(r, dict)]


def device_ids(report: dict) -> List[str]:
    """Devices in report order (devices[0] is the primary), plus any only named by a row."""
    ids: List[str] = []
    for d in _list(_dict(report).get("devices")):
        i = _dict(d).get("id")
        if i is not None and str(i) not in ids:
            ids.append(str(i))
    for r in rows(report):
        i = r.get("device")
        if i is not None and str(i) not in ids:
            ids.append(str(i))
    return ids


def primary_device(report: dict) -> Optional[str]:
    ids = device_ids(report)
    return ids[0] if ids else None


def latency_entries(row: dict) -> List[dict]:
    """The measured (not skipped) latency settings of a row."""
    return [e for e in _list(row.get("latency")) if isinstance(e, dict) and not e.get("skipped")]


def headline_entry(row: dict) -> Optional[dict]:
    """The latency entry named by row['headline'], else the first measured one."""
    entries = latency_entries(row)
    head = _dict(row.get("headline"))
    for e in entries:
        if e.get("threads") == head.get("threads") and e.get("batch") == head.get("batch"):
            return e
    return entries[0] if entries else None


def stat(entry: Optional[dict], kind: str, key: str) -> Optional[float]:
    return num(_dict(_dict(entry).get(kind)).get(key))


def top1_pct(row: dict) -> Optional[float]:
    v = num(_dict(row.get("accuracy")).get("top1"))
    return None if v is None else 100.0 * v


def is_reference(row: dict) -> bool:
    return row.get("kind") == "reference"


def _name(row: dict) -> str:
    return str(row.get("name") if row.get("name") is not None else "?")


def _plain(text: Any, limit: int = 40) -> str:
    """Text for matplotlib: no mathtext ($), no runaway lengths."""
    s = str(text).replace("\n", " ")
    if len(s) > limit:
        s = s[: limit - 1] + "…"
    return s.replace("$", r"\$")


def _artifact_colours(report: dict) -> Dict[str, str]:
    cmap = matplotlib.colormaps["tab10"]
    names: List[str] = []
    for r in rows(report):
        if not is_reference(r) and _name(r) not in names:
            names.append(_name(r))
    return {n: matplotlib.colors.to_hex(cmap(i % 10)) for i, n in enumerate(names)}


def _series_label(row: dict, several_devices: bool) -> str:
    return f"{_name(row)} @ {row.get('device')}" if several_devices and row.get("device") else _name(row)


def _ratio_wide(values: Iterable[float]) -> bool:
    vals = [v for v in values if v and v > 0]
    return bool(vals) and max(vals) / min(vals) >= WIDE


def _fmt_ms(v: float, _pos=None) -> str:
    if v <= 0:
        return "0"
    if v >= 100:
        return f"{v:,.0f}"
    return f"{v:.3g}"


def _log_axis(axis, values: Sequence[float] = ()) -> None:
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


def _new_figure(w: float, h: float) -> Figure:
    fig = Figure(figsize=(w, h), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI * SCALE, bbox_inches="tight", pad_inches=0.15, facecolor="white")
    return buf.getvalue()


def save(png: Optional[bytes], path: Path) -> Optional[Path]:
    """Write PNG bytes atomically (nothing written for None); returns the path written."""
    if png is None:
        return None
    write_with(Path(path), lambda p: p.write_bytes(png))
    return Path(path)


# ------------------------------------------------------------------------------------- label placing

def _overlap(a: Bbox, b: Bbox) -> float:
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return w * h if w > 0 and h > 0 else 0.0


def _place_labels(fig: Figure, ax, points: List[Tuple[float, float, float, str, str]],
                  hlines: Sequence[Tuple[float, str]] = ()) -> None:
    """Annotate each (x, y, radius_pt, text, colour), trying offsets around the point until the label
    overlaps no other label or marker and stays inside the axes. Labels of horizontal lines (y, text)
    go first, at whichever end of the line (above or below it) is free of markers."""
    renderer = fig.canvas.get_renderer()
    pt = fig.dpi / 72.0
    axes_box = ax.get_window_extent(renderer)
    markers = []
    for x, y, r, _, _ in points:
        cx, cy = ax.transData.transform((x, y))
        rr = r * pt
        markers.append(Bbox([[cx - rr, cy - rr], [cx + rr, cy + rr]]))
    placed: List[Bbox] = []
    blend = blended_transform_factory(ax.transAxes, ax.transData)
    for y, text in hlines:
        best = None
        spots = [(0.995, "right"), (0.005, "left"), (0.75, "center"), (0.5, "center"), (0.25, "center")]
        for ax_x, ha in spots:
            for va in ("bottom", "top"):
                t = ax.text(ax_x, y, text, transform=blend, ha=ha, va=va, fontsize=9, color="#444444", zorder=5,
                            bbox=dict(boxstyle="round,pad=0.1", fc="white", ec="none", alpha=0.8))
                box = t.get_window_extent(renderer)
                cost = sum(_overlap(box, m) for m in markers) + sum(_overlap(box, b) for b in placed)
                if best is None or cost < best[2]:
                    if best is not None:
                        best[0].remove()
                    best = (t, box, cost)
                else:
                    t.remove()
        placed.append(best[1])
    order = sorted(range(len(points)), key=lambda i: -points[i][2])  # big markers first
    for i in order:
        x, y, r, text, colour = points[i]
        gap = r + 3
        candidates = [(gap, 0, "left", "center"), (-gap, 0, "right", "center"),
                      (0, gap, "center", "bottom"), (0, -gap, "center", "top"),
                      (gap * .8, gap * .8, "left", "bottom"), (gap * .8, -gap * .8, "left", "top"),
                      (-gap * .8, gap * .8, "right", "bottom"), (-gap * .8, -gap * .8, "right", "top")]
        for extra in (14, 28, 42):
            candidates += [(gap, extra, "left", "bottom"), (gap, -extra, "left", "top"),
                           (-gap, extra, "right", "bottom"), (-gap, -extra, "right", "top")]
        best, best_cost = None, None
        for dx, dy, ha, va in candidates:
            far = abs(dy) > gap + 1
            arrow = dict(arrowstyle="-", color="#999999", lw=0.6, shrinkA=1, shrinkB=r) if far else None
            ann = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", ha=ha, va=va,
                              fontsize=9, color="#222222", zorder=6, arrowprops=arrow,
                              bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.75))
            ann.update_positions(renderer)
            box = Text.get_window_extent(ann, renderer).expanded(1.04, 1.1)  # the text, not the leader
            cost = sum(_overlap(box, b) for b in placed)
            cost += sum(_overlap(box, m) for j, m in enumerate(markers) if j != i)
            outside = (max(0, axes_box.x0 - box.x0) + max(0, box.x1 - axes_box.x1)
                       + max(0, axes_box.y0 - box.y0) + max(0, box.y1 - axes_box.y1))
            cost += outside * box.height * 4 + (1.0 if far else 0.0)  # near beats far when both are free
            if best_cost is None or cost < best_cost:
                if best is not None:
                    best[0].remove()
                best, best_cost = (ann, box), cost
            else:
                ann.remove()
            if cost == 0:
                break
        if best is not None:
            placed.append(best[1])


# -------------------------------------------------------------------------------------------- pareto

def pareto_front(points: Sequence[Tuple[float, float]]) -> List[int]:
    """Indices of (latency, accuracy) points that no other point beats on both (lower latency and
    higher accuracy, at least one strictly), sorted by latency."""
    front = []
    for i, (lat, acc) in enumerate(points):
        dominated = any((l2 <= lat and a2 >= acc) and (l2 < lat or a2 > acc)
                        for j, (l2, a2) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (points[i][0], -points[i][1]))


def pareto(report: dict) -> Optional[bytes]:
    """Top-1 (%) vs p50 latency (ms, run kind of the headline setting); None without any latency."""
    devices = device_ids(report)
    several = len(devices) > 1
    pts = []  # (row, device index, p50, top1)
    for r in rows(report):
        if is_reference(r):
            continue
        p50 = stat(headline_entry(r), "run", "p50_ms")
        if p50 is None:
            p50 = stat(headline_entry(r), "bare", "p50_ms")
        acc = top1_pct(r)
        if p50 is None or acc is None or p50 <= 0:
            continue
        dev = str(r.get("device")) if r.get("device") is not None else None
        if not several and dev is not None and devices and dev != devices[0]:
            continue
        pts.append((r, devices.index(dev) if dev in devices else 0, p50, acc))
    if not pts:
        return None
    refs = [(r, top1_pct(r)) for r in rows(report) if is_reference(r) and top1_pct(r) is not None]
    refs = [(r, a) for r, a in refs if r.get("device") in (None, devices[0] if devices else None)][:1] or refs[:1]

    sizes = [num(r.get("size_bytes")) for r, *_ in pts]
    known = [s for s in sizes if s and s > 0]
    max_size = max(known) if known else None

    def area(s: Optional[float]) -> float:  # marker area (pt²) proportional to file size
        return 60.0 if not s or not max_size else max(30.0, 700.0 * s / max_size)

    with matplotlib.rc_context(RC):
        fig = _new_figure(10.5, 6.2)
        ax = fig.add_subplot(1, 1, 1)
        lats = [p for *_, p, _ in pts]
        accs = [a for *_, a in pts] + [a for _, a in refs]
        log_x = _ratio_wide(lats)
        if log_x:
            ax.set_xscale("log")
        labels = []
        for k, (r, d, p50, acc) in enumerate(pts):
            colour = STATUS_COLOURS.get(str(r.get("status")), "#7F7F7F")
            s = area(sizes[k])
            ax.scatter([p50], [acc], s=s, c=colour, marker=DEVICE_MARKERS[d % len(DEVICE_MARKERS)],
                       edgecolors="white", linewidths=1.0, alpha=0.9, zorder=4)
            labels.append((p50, acc, math.sqrt(s) / 2 + 2, _plain(_name(r), 32), colour))
        for d in sorted({d for _, d, _, _ in pts}):
            idx = [k for k, p in enumerate(pts) if p[1] == d]
            mine = [(pts[k][2], pts[k][3]) for k in idx]
            front = pareto_front(mine)
            fx, fy = [mine[i][0] for i in front], [mine[i][1] for i in front]
            ax.plot(fx, fy, ls=DEVICE_LINESTYLES[d % len(DEVICE_LINESTYLES)], color="#333333", lw=1.3,
                    alpha=0.7, zorder=3)
            for i in front:
                s = area(sizes[idx[i]])
                ax.scatter([mine[i][0]], [mine[i][1]], s=s * 1.9 + 60, facecolors="none",
                           edgecolors="#333333", linewidths=1.4, marker=DEVICE_MARKERS[d % len(DEVICE_MARKERS)],
                           zorder=3)

        # axis limits before labels are placed (placement works in display coordinates)
        lo, hi = min(accs), max(accs)
        pad = max(0.6, (hi - lo) * 0.18)
        top = hi + pad
        if top > 100:  # a little room above a 100 % point, but no tick labels beyond 100 %
            top = min(top, 100 + max(0.15, pad * 0.3))
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: "" if v > 100.0001 else f"{v:g}"))
        ax.set_ylim(lo - pad, top)
        if log_x:
            ax.set_xlim(min(lats) / 1.6, max(lats) * 1.6)
            _log_axis(ax.xaxis, lats)
        else:
            span = max(max(lats) - min(lats), max(lats) * 0.2)
            ax.set_xlim(max(0.0, min(lats) - 0.25 * span), max(lats) + 0.25 * span)

        for _, acc in refs:
            ax.axhline(acc, ls="--", lw=1.2, color="#555555", zorder=2)
        fig.canvas.draw()
        _place_labels(fig, ax, labels, [(acc, f" {_plain(_name(r), 24)} (reference) {acc:.2f} % ") for r, acc in refs])

        ax.set_xlabel("p50 latency, ms (lower is better" + (", log scale)" if log_x else ")"))
        ax.set_ylabel("top-1 accuracy, % (higher is better)")
        head = _headline_text(report, [p[0] for p in pts])
        ax.set_title("Accuracy vs latency" + (f" — {head}" if head else ""), loc="left")
        ax.grid(alpha=0.3, which="major")
        if log_x:
            ax.grid(alpha=0.12, which="minor")

        handles = [Line2D([], [], ls="", marker="o", ms=9, mfc=STATUS_COLOURS[s], mec="white",
                          label=STATUS_LABELS[s])
                   for s in STATUS_COLOURS if any(r.get("status") == s for r, *_ in pts)]
        handles.append(Line2D([], [], color="#333333", lw=1.3, marker="o", ms=10, mfc="none", mec="#333333",
                              label="Pareto front"))
        if refs:
            handles.append(Line2D([], [], color="#555555", ls="--", lw=1.2, label="Keras reference"))
        if several:
            for d in sorted({d for _, d, _, _ in pts}):
                handles.append(Line2D([], [], ls=DEVICE_LINESTYLES[d % len(DEVICE_LINESTYLES)], color="#777777",
                                      marker=DEVICE_MARKERS[d % len(DEVICE_MARKERS)], ms=8,
                                      label=_plain(devices[d], 28)))
        if max_size:
            for frac in (1.0, 0.25):
                s = max_size * frac
                handles.append(Line2D([], [], ls="", marker="o", ms=math.sqrt(area(s)), mfc="#BBBBBB",
                                      mec="white", label=f"{_mb(s)} file"))
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False,
                  labelspacing=1.1, borderaxespad=0.2)
        return _png(fig)


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"


def _headline_text(report: dict, rs: List[dict]) -> str:
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


def threads_text(t: Any) -> str:
    """'1 thread', '4 threads', or 'default threads' when the engine chose (threads null)."""
    return "default threads" if t is None else f"{t} thread{'' if t == 1 else 's'}"


# ----------------------------------------------------------------------------- latency distributions

def latency_distributions(report: dict) -> Optional[bytes]:
    """Horizontal box plots of samples_ms for bare/run/e2e at each artifact's headline setting."""
    several = len(device_ids(report)) > 1
    groups = []  # (label, {kind: samples})
    for r in rows(report):
        e = headline_entry(r)
        if not e:
            continue
        kinds = {}
        for k in KINDS:
            s = [v for v in (num(x) for x in _list(_dict(e.get(k)).get("samples_ms"))) if v is not None and v > 0]
            if s:
                kinds[k] = s
        if kinds:
            label = _plain(_series_label(r, several), 34)
            if not _headline_text(report, [x for x in rows(report) if headline_entry(x)]):
                label += f"\n{threads_text(e.get('threads'))}, batch {e.get('batch')}"
            groups.append((label, kinds))
    if not groups:
        return None
    all_vals = [v for _, ks in groups for s in ks.values() for v in s]
    step, width = 0.27, 0.22
    with matplotlib.rc_context(RC):
        fig = _new_figure(10.5, 1.3 + 0.95 * len(groups))
        ax = fig.add_subplot(1, 1, 1)
        log_x = _ratio_wide([min(all_vals), max(all_vals)])
        for gi, (label, kinds) in enumerate(groups):
            centre = -gi
            for ki, k in enumerate(KINDS):
                if k not in kinds:
                    continue
                y = centre + (1 - ki) * step
                if len(kinds[k]) < MIN_BOX:  # too few samples for quartiles: show every one, and the median
                    vals = sorted(kinds[k])
                    ax.scatter(vals, [y] * len(vals), s=22, color=KIND_COLOURS[k], edgecolors="#333333",
                               linewidths=0.6, zorder=3)
                    med = vals[len(vals) // 2] if len(vals) % 2 else (vals[len(vals) // 2 - 1] + vals[len(vals) // 2]) / 2
                    ax.plot([med, med], [y - width / 2, y + width / 2], color="black", lw=1.3, zorder=4)
                    continue
                bp = ax.boxplot([kinds[k]], positions=[y], widths=width, patch_artist=True, whis=(1, 99),
                                manage_ticks=False, flierprops=dict(marker=".", ms=2.5, alpha=0.4,
                                                                    mfc=KIND_COLOURS[k], mec="none"),
                                medianprops=dict(color="black", lw=1.3), **_horizontal())
                for box in bp["boxes"]:
                    box.set(facecolor=KIND_COLOURS[k], alpha=0.75, edgecolor="#333333", lw=0.8)
                for part in ("whiskers", "caps"):
                    for line in bp[part]:
                        line.set(color="#555555", lw=0.9)
            if gi:
                ax.axhline(centre + 0.5, color="#DDDDDD", lw=0.8)
        ax.set_yticks([-gi for gi in range(len(groups))], [g[0] for g in groups])
        ax.set_ylim(-len(groups) + 0.5, 0.5)
        if log_x:
            ax.set_xscale("log")
            ax.set_xlim(min(all_vals) / 1.1, max(all_vals) * 1.1)
            _log_axis(ax.xaxis, all_vals)
        ax.set_xlabel("latency per call, ms" + (" (log scale)" if log_x else ""))
        ax.grid(axis="x", alpha=0.3, which="major")
        if log_x:
            ax.grid(axis="x", alpha=0.12, which="minor")
        head = _headline_text(report, [r for r in rows(report) if headline_entry(r)])
        ax.set_title("Latency distributions" + (f" — {head}" if head else "")
                     + "  (box: quartiles, whiskers: p1–p99)", loc="left")
        if any(len(v) < MIN_BOX for _, ks in groups for v in ks.values()):
            ax.text(1.01, 0.0, f"dots: every sample\nwhere fewer than {MIN_BOX}", transform=ax.transAxes,
                    fontsize=8.5, color="#555555", va="bottom")
        handles = [matplotlib.patches.Patch(facecolor=KIND_COLOURS[k], alpha=0.75, edgecolor="#333333",
                                            label=KIND_LABELS[k]) for k in KINDS]
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        return _png(fig)


def _horizontal() -> dict:
    major, minor = (int(x) for x in matplotlib.__version__.split(".")[:2])
    return {"orientation": "horizontal"} if (major, minor) >= (3, 10) else {"vert": False}


# ---------------------------------------------------------------------------- thread scaling / batch

def _grid_lines(report: dict, panel_key: str, x_key: str, metric) -> Dict[Any, List[Tuple[dict, list]]]:
    """{panel value: [(row, [(x, y), ...]), ...]} over every artifact row's measured settings."""
    panels: Dict[Any, List[Tuple[dict, list]]] = {}
    for r in rows(report):
        by_panel: Dict[Any, list] = {}
        for e in latency_entries(r):
            x, y = num(e.get(x_key)), metric(e)
            if x is None or y is None:
                continue
            by_panel.setdefault(e.get(panel_key), []).append((x, y))
        for p, xy in by_panel.items():
            panels.setdefault(p, []).append((r, sorted(xy)))
    return dict(sorted(panels.items(), key=lambda kv: (num(kv[0]) is None, num(kv[0]) or 0)))


def _line_panels(report: dict, panels: Dict[Any, List[Tuple[dict, list]]], x_key: str, ylabel: str,
                 title: str, panel_title: str, log_y_ok: bool, speedup_note: bool = False) -> bytes:
    several = len(device_ids(report)) > 1
    devices = device_ids(report)
    colours = _artifact_colours(report)
    n = len(panels)
    cols = min(n, 3)
    nrows = math.ceil(n / cols)
    with matplotlib.rc_context(RC):
        fig = _new_figure(min(15.0, 1.2 + 4.6 * cols), 0.6 + 3.8 * nrows)
        axes = fig.subplots(nrows, cols, squeeze=False)
        handles: Dict[str, Line2D] = {}
        for ax, (panel, series) in zip(axes.flat, panels.items()):
            xs = sorted({x for _, xy in series for x, _ in xy})
            ys = [y for _, xy in series for _, y in xy]
            for r, xy in series:
                dev = str(r.get("device")) if r.get("device") is not None else None
                d = devices.index(dev) if dev in devices else 0
                label = _plain(_series_label(r, several), 40)
                (line,) = ax.plot([x for x, _ in xy], [y for _, y in xy], marker=DEVICE_MARKERS[d % 7], ms=5,
                                  lw=1.6, ls=DEVICE_LINESTYLES[d % 4], color=colours.get(_name(r), "#444444"),
                                  label=label)
                handles.setdefault(label, line)
            ax.set_xscale("log", base=2)
            ax.set_xticks(xs, [f"{x:g}" for x in xs])
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xlim(min(xs) / 1.25, max(xs) * 1.25)
            if log_y_ok and _ratio_wide(ys):
                ax.set_yscale("log")
                ax.set_ylim(min(ys) / 1.15, max(ys) * 1.15)
                _log_axis(ax.yaxis, ys)
            else:
                ax.set_ylim(bottom=0, top=max(ys) * 1.1 if ys else 1)
            ax.set_xlabel(x_key)
            ax.set_ylabel(ylabel)
            ax.set_title(panel_title.format(panel), fontsize=11)
            ax.grid(alpha=0.3)
        for ax in list(axes.flat)[n:]:
            ax.set_visible(False)
        fig.suptitle(title, x=0.01, ha="left", fontsize=12)
        fig.legend(handles=list(handles.values()), loc="upper left", bbox_to_anchor=(1.0, 0.93), frameon=False)
        fig.tight_layout()
        return _png(fig)


def thread_scaling(report: dict) -> Optional[bytes]:
    """p50 latency (run kind) vs thread count per artifact, one panel per batch size.

    None when fewer than two thread counts were measured (the HTML then suggests --threads 1,2,4)."""
    threads = {num(e.get("threads")) for r in rows(report) for e in latency_entries(r)} - {None}
    if len(threads) < 2:
        return None
    panels = _grid_lines(report, "batch", "threads",
                         lambda e: stat(e, "run", "p50_ms") or stat(e, "bare", "p50_ms"))
    panels = {p: s for p, s in panels.items() if any(len(xy) > 1 for _, xy in s)}
    if not panels:
        return None
    return _line_panels(report, panels, "threads", "p50 latency per call, ms (run)",
                        "Thread scaling — p50 latency vs threads (lower is better)", "batch {}", True)


def throughput(report: dict) -> Optional[bytes]:
    """Images/s vs batch size per artifact, one panel per thread count; None with a single batch size."""
    batches = {num(e.get("batch")) for r in rows(report) for e in latency_entries(r)} - {None}
    if len(batches) < 2:
        return None

    def ips(e: dict) -> Optional[float]:
        v = num(e.get("throughput_ips"))
        if v is None:
            mean, b = stat(e, "run", "mean_ms"), num(e.get("batch"))
            v = 1000.0 * b / mean if mean and b else None
        return v

    panels = _grid_lines(report, "threads", "batch", ips)
    panels = {p: s for p, s in panels.items() if any(len(xy) > 1 for _, xy in s)}
    if not panels:
        return None
    return _line_panels(report, panels, "batch", "images / s (run)",
                        "Throughput — images per second vs batch size (higher is better)",
                        "threads: {}", False)


ALL = {"pareto": pareto, "latency_distributions": latency_distributions, "thread_scaling": thread_scaling,
       "throughput": throughput}
