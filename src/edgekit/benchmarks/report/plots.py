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

This module holds the Pareto plot, save() and ALL (every plot by name); the latency plots are in
plots_latency.py and what they all share in plots_style.py.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import matplotlib
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.text import Text
from matplotlib.ticker import FuncFormatter
from matplotlib.transforms import Bbox, blended_transform_factory

from edgekit.atomic import write_with
from edgekit.status import COLOURS, TEXT
from edgekit.benchmarks.report.fields import as_dict, headline_entry, num, rows_of, stat
from edgekit.benchmarks.report.plots_latency import latency_distributions, thread_scaling, throughput
from edgekit.benchmarks.report.plots_style import (DEVICE_LINESTYLES, DEVICE_MARKERS, RC, SCALE, device_ids, headline_text,
                                            is_reference, log_axis, name_of, new_figure, plain, ratio_wide, to_png)
from edgekit.benchmarks.report.schema import Report, Row

__all__ = ["ALL", "SCALE", "latency_distributions", "pareto", "pareto_front", "save", "thread_scaling", "throughput"]
STATUS_COLOURS, STATUS_LABELS = COLOURS, TEXT


def top1_pct(row: Row) -> Optional[float]:
    v = num(as_dict(row.get("accuracy")).get("top1"))
    return None if v is None else 100.0 * v


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


def pareto(report: Report) -> Optional[bytes]:
    """Top-1 (%) vs p50 latency (ms, run kind of the headline setting); None without any latency."""
    devices = device_ids(report)
    several = len(devices) > 1
    pts = []  # (row, device index, p50, top1)
    for r in rows_of(report):
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
    refs = [(r, top1_pct(r)) for r in rows_of(report) if is_reference(r) and top1_pct(r) is not None]
    refs = [(r, a) for r, a in refs if r.get("device") in (None, devices[0] if devices else None)][:1] or refs[:1]

    sizes = [num(r.get("size_bytes")) for r, *_ in pts]
    known = [s for s in sizes if s and s > 0]
    max_size = max(known) if known else None

    def area(s: Optional[float]) -> float:  # marker area (pt²) proportional to file size
        return 60.0 if not s or not max_size else max(30.0, 700.0 * s / max_size)

    with matplotlib.rc_context(RC):
        fig = new_figure(10.5, 6.2)
        ax = fig.add_subplot(1, 1, 1)
        lats = [p for *_, p, _ in pts]
        accs = [a for *_, a in pts] + [a for _, a in refs]
        log_x = ratio_wide(lats)
        if log_x:
            ax.set_xscale("log")
        labels = []
        for k, (r, d, p50, acc) in enumerate(pts):
            colour = STATUS_COLOURS.get(str(r.get("status")), "#7F7F7F")
            s = area(sizes[k])
            ax.scatter([p50], [acc], s=s, c=colour, marker=DEVICE_MARKERS[d % len(DEVICE_MARKERS)],
                       edgecolors="white", linewidths=1.0, alpha=0.9, zorder=4)
            labels.append((p50, acc, math.sqrt(s) / 2 + 2, plain(name_of(r), 32), colour))
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
            log_axis(ax.xaxis, lats)
        else:
            span = max(max(lats) - min(lats), max(lats) * 0.2)
            ax.set_xlim(max(0.0, min(lats) - 0.25 * span), max(lats) + 0.25 * span)

        for _, acc in refs:
            ax.axhline(acc, ls="--", lw=1.2, color="#555555", zorder=2)
        fig.canvas.draw()
        _place_labels(fig, ax, labels, [(acc, f" {plain(name_of(r), 24)} (reference) {acc:.2f} % ") for r, acc in refs])

        ax.set_xlabel("p50 latency, ms (lower is better" + (", log scale)" if log_x else ")"))
        ax.set_ylabel("top-1 accuracy, % (higher is better)")
        head = headline_text(report, [p[0] for p in pts])
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
                                      label=plain(devices[d], 28)))
        if max_size:
            for frac in (1.0, 0.25):
                s = max_size * frac
                handles.append(Line2D([], [], ls="", marker="o", ms=math.sqrt(area(s)), mfc="#BBBBBB",
                                      mec="white", label=f"{_mb(s)} file"))
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False,
                  labelspacing=1.1, borderaxespad=0.2)
        return to_png(fig)


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"


ALL = {"pareto": pareto, "latency_distributions": latency_distributions, "thread_scaling": thread_scaling,
       "throughput": throughput}
