"""`edge summary`: one aligned row per run directory, from the files each run wrote (nothing recomputed)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List

import yaml

from edgekit_runtime.artifacts import PREPROCESS_FILE
from edgekit.layout import RunLayout

COLUMNS = ["run", "model", "input", "phases", "test top-1", "train time", "before 1st epoch", "whole run", "budget",
           "cache"]


def _fmt_seconds(s) -> str:
    if s is None:
        return "-"
    return f"{s / 60:.1f} min" if s >= 120 else f"{s:.1f} s"


def summarize(run_dir: Path) -> Dict[str, str]:
    m = json.loads(RunLayout(run_dir).metrics.read_text())
    cfg = yaml.safe_load(RunLayout(run_dir).config.read_text())
    pre = json.loads((run_dir / PREPROCESS_FILE).read_text())
    model = "hub:" + Path(cfg["hub"]).name if cfg.get("hub") else cfg["preset"]
    phases = ", ".join(f"{name} {p['epochs']} ep" for name, p in m.get("phases", {}).items())
    hit = m.get("feature_cache_hit")
    kind = "features"
    if m.get("activation_cache_hit") is not None:
        hit, kind = m["activation_cache_hit"], f"activations at {m.get('cut')}"
    budget = cfg.get("time_budget") or 0
    return {
        "run": run_dir.name, "model": model, "input": f"{pre['height']}x{pre['width']}", "phases": phases,
        "test top-1": f"{m['test']['top1']:.2%} ({m['test']['images']:,})",
        "train time": _fmt_seconds(m.get("train_seconds")),
        "before 1st epoch": _fmt_seconds(m.get("seconds_before_first_epoch")),
        "whole run": _fmt_seconds(m.get("total_seconds")),
        "budget": f"{budget:g} min" if budget else "-",
        "cache": "-" if hit is None else f"{kind} {'hit' if hit else 'miss'}",
    }


def find_runs(paths: List[Path]) -> List[Path]:
    found = []
    for p in paths:
        if RunLayout(p).metrics.is_file():
            found.append(p)
        elif p.is_dir():
            found.extend(sorted(d for d in p.iterdir() if RunLayout(d).metrics.is_file()))
    return found


def markdown(rows: List[Dict[str, str]]) -> str:
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in COLUMNS}
    line = lambda cells: "| " + " | ".join(cells[c].ljust(widths[c]) for c in COLUMNS) + " |"  # noqa: E731
    return "\n".join([line({c: c for c in COLUMNS}), "|" + "|".join("-" * (widths[c] + 2) for c in COLUMNS) + "|",
                      *(line(r) for r in rows)])
