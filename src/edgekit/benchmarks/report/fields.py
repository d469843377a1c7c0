"""Null-safe reading of a report dict (the one written to report.json), shared by report.html and its plots.

Any field may be missing or null (a failed artifact row has only name/status/symbol/reason): these
readers return None or an empty dict/list instead of raising.
"""
from __future__ import annotations

import math
from typing import Any, List, Optional
from edgekit.benchmarks.report.schema import Report, Row


def as_dict(x: Any) -> dict:
    return x if isinstance(x, dict) else {}


def as_list(x: Any) -> list:
    return x if isinstance(x, list) else []


def num(x: Any) -> Optional[float]:
    """A finite float, or None for null / NaN / strings / booleans."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def rows_of(report: Report) -> List[dict]:
    return [r for r in as_list(as_dict(report).get("rows")) if isinstance(r, dict)]


def latency_entries(row: Row) -> List[dict]:
    """The measured (not skipped) latency settings of a row."""
    return [e for e in as_list(row.get("latency")) if isinstance(e, dict) and not e.get("skipped")]


def headline_entry(row: Row) -> Optional[dict]:
    """The latency entry named by row['headline'], else the first measured one."""
    entries = latency_entries(row)
    head = as_dict(row.get("headline"))
    for e in entries:
        if e.get("threads") == head.get("threads") and e.get("batch") == head.get("batch"):
            return e
    return entries[0] if entries else None


def stat(entry: Optional[dict], kind: str, key: str) -> Optional[float]:
    """One statistic of one kind (bare/run/e2e) of a latency entry, e.g. stat(entry, "run", "p50_ms")."""
    return num(as_dict(as_dict(entry).get(kind)).get(key))


def threads_text(t: Any) -> str:
    """'1 thread', '4 threads', or 'default threads' when the engine chose (threads null)."""
    return "default threads" if t is None else f"{t} thread{'' if t == 1 else 's'}"
