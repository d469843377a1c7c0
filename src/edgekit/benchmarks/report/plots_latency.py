"""The latency plots of report.html: distributions at the headline setting, thread scaling, throughput vs batch.

Each takes the report dict and returns PNG bytes, or None when there is nothing to plot (see plots.py).
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Tuple

import matplotlib
from matplotlib.lines import Line2D
from matplotlib.ticker import NullFormatter

from edgekit.benchmarks.report.fields import (as_dict, as_list, headline_entry, latency_entries, num, rows_of, stat,
                                       threads_text)
from edgekit.benchmarks.report.plots_style import (DEVICE_LINESTYLES, DEVICE_MARKERS, RC, device_ids, headline_text,
                                            is_reference, log_axis, name_of, new_figure, plain, ratio_wide, to_png)
from edgekit.benchmarks.report.schema import Report, Row

KINDS = ("bare", "run", "e2e")
KIND_LABELS = {"bare": "bare invoke()", "run": "runtime predict()", "e2e": "end to end (JPEG → top-k)"}
KIND_COLOURS = {"bare": "#4C78A8", "run": "#F58518", "e2e": "#54A24B"}
MIN_BOX = 10  # fewer samples than this are drawn as dots, not as a box plot


def _artifact_colours(report: Report) -> Dict[str, str]:
    cmap = matplotlib.colormaps["tab10"]
    names: List[str] = []
    for r in rows_of(report):
        if not is_reference(r) and name_of(r) not in names:
            names.append(name_of(r))
    return {n: matplotlib.colors.to_hex(cmap(i % 10)) for i, n in enumerate(names)}


def _series_label(row: Row, several_devices: bool) -> str:
    return f"{name_of(row)} @ {row.get('device')}" if several_devices and row.get("device") else name_of(row)


# ----------------------------------------------------------------------------- latency distributions

def latency_distributions(report: Report) -> Optional[bytes]:
    """Horizontal box plots of samples_ms for bare/run/e2e at each artifact's headline setting."""
    several = len(device_ids(report)) > 1
    groups = []  # (label, {kind: samples})
    for r in rows_of(report):
        e = headline_entry(r)
        if not e:
            continue
        kinds = {}
        for k in KINDS:
            s = [v for v in (num(x) for x in as_list(as_dict(e.get(k)).get("samples_ms"))) if v is not None and v > 0]
            if s:
                kinds[k] = s
        if kinds:
            label = plain(_series_label(r, several), 34)
            if not headline_text(report, [x for x in rows_of(report) if headline_entry(x)]):
                label += f"\n{threads_text(e.get('threads'))}, batch {e.get('batch')}"
            groups.append((label, kinds))
    if not groups:
        return None
    all_vals = [v for _, ks in groups for s in ks.values() for v in s]
    step, width = 0.27, 0.22
    with matplotlib.rc_context(RC):
        fig = new_figure(10.5, 1.3 + 0.95 * len(groups))
        ax = fig.add_subplot(1, 1, 1)
        log_x = ratio_wide([min(all_vals), max(all_vals)])
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
            log_axis(ax.xaxis, all_vals)
        ax.set_xlabel("latency per call, ms" + (" (log scale)" if log_x else ""))
        ax.grid(axis="x", alpha=0.3, which="major")
        if log_x:
            ax.grid(axis="x", alpha=0.12, which="minor")
        head = headline_text(report, [r for r in rows_of(report) if headline_entry(r)])
        ax.set_title("Latency distributions" + (f" — {head}" if head else "")
                     + "  (box: quartiles, whiskers: p1–p99)", loc="left")
        if any(len(v) < MIN_BOX for _, ks in groups for v in ks.values()):
            ax.text(1.01, 0.0, f"dots: every sample\nwhere fewer than {MIN_BOX}", transform=ax.transAxes,
                    fontsize=8.5, color="#555555", va="bottom")
        handles = [matplotlib.patches.Patch(facecolor=KIND_COLOURS[k], alpha=0.75, edgecolor="#333333",
                                            label=KIND_LABELS[k]) for k in KINDS]
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        return to_png(fig)


def _horizontal() -> dict:
    major, minor = (int(x) for x in matplotlib.__version__.split(".")[:2])
    return {"orientation": "horizontal"} if (major, minor) >= (3, 10) else {"vert": False}


# ---------------------------------------------------------------------------- thread scaling / batch

def _grid_lines(report: Report, panel_key: str, x_key: str, metric) -> Dict[Any, List[Tuple[dict, list]]]:
    """{panel value: [(row, [(x, y), ...]), ...]} over every artifact row's measured settings."""
    panels: Dict[Any, List[Tuple[dict, list]]] = {}
    for r in rows_of(report):
        by_panel: Dict[Any, list] = {}
        for e in latency_entries(r):
            x, y = num(e.get(x_key)), metric(e)
            if x is None or y is None:
                continue
            by_panel.setdefault(e.get(panel_key), []).append((x, y))
        for p, xy in by_panel.items():
            panels.setdefault(p, []).append((r, sorted(xy)))
    return dict(sorted(panels.items(), key=lambda kv: (num(kv[0]) is None, num(kv[0]) or 0)))


def _line_panels(report: Report, panels: Dict[Any, List[Tuple[dict, list]]], x_key: str, ylabel: str,
                 title: str, panel_title: str, log_y_ok: bool, speedup_note: bool = False) -> bytes:
    several = len(device_ids(report)) > 1
    devices = device_ids(report)
    colours = _artifact_colours(report)
    n = len(panels)
    cols = min(n, 3)
    nrows = math.ceil(n / cols)
    with matplotlib.rc_context(RC):
        fig = new_figure(min(15.0, 1.2 + 4.6 * cols), 0.6 + 3.8 * nrows)
        axes = fig.subplots(nrows, cols, squeeze=False)
        handles: Dict[str, Line2D] = {}
        for ax, (panel, series) in zip(axes.flat, panels.items()):
            xs = sorted({x for _, xy in series for x, _ in xy})
            ys = [y for _, xy in series for _, y in xy]
            for r, xy in series:
                dev = str(r.get("device")) if r.get("device") is not None else None
                d = devices.index(dev) if dev in devices else 0
                label = plain(_series_label(r, several), 40)
                (line,) = ax.plot([x for x, _ in xy], [y for _, y in xy], marker=DEVICE_MARKERS[d % 7], ms=5,
                                  lw=1.6, ls=DEVICE_LINESTYLES[d % 4], color=colours.get(name_of(r), "#444444"),
                                  label=label)
                handles.setdefault(label, line)
            ax.set_xscale("log", base=2)
            ax.set_xticks(xs, [f"{x:g}" for x in xs])
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xlim(min(xs) / 1.25, max(xs) * 1.25)
            if log_y_ok and ratio_wide(ys):
                ax.set_yscale("log")
                ax.set_ylim(min(ys) / 1.15, max(ys) * 1.15)
                log_axis(ax.yaxis, ys)
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
        return to_png(fig)


def thread_scaling(report: Report) -> Optional[bytes]:
    """p50 latency (run kind) vs thread count per artifact, one panel per batch size.

    None when fewer than two thread counts were measured (the HTML then suggests --threads 1,2,4)."""
    threads = {num(e.get("threads")) for r in rows_of(report) for e in latency_entries(r)} - {None}
    if len(threads) < 2:
        return None
    panels = _grid_lines(report, "batch", "threads",
                         lambda e: stat(e, "run", "p50_ms") or stat(e, "bare", "p50_ms"))
    panels = {p: s for p, s in panels.items() if any(len(xy) > 1 for _, xy in s)}
    if not panels:
        return None
    return _line_panels(report, panels, "threads", "p50 latency per call, ms (run)",
                        "Thread scaling — p50 latency vs threads (lower is better)", "batch {}", True)


def throughput(report: Report) -> Optional[bytes]:
    """Images/s vs batch size per artifact, one panel per thread count; None with a single batch size."""
    batches = {num(e.get("batch")) for r in rows_of(report) for e in latency_entries(r)} - {None}
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


