"""--baseline: compare a report with an earlier one and say whether anything regressed (for CI gates).

Rows are matched by (artifact, device). A regression is: top-1 down by more than the allowed
percentage points, headline p50 latency up by more than the allowed percent (same threads×batch
only: other settings are not comparable), a row that passed before and does not now, or (when every
artifact was benchmarked, not a --formats selection) a passing row that is gone.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Tuple

from edgekit.benchmarks.report.fields import headline_entry
from edgekit.benchmarks.report.rows import PASSED, load_report
from edgekit.errors import EdgeError
from edgekit.benchmarks.report.schema import Report


def compare(report: Report, baseline: Path, max_accuracy_drop: float, max_latency_growth: float,
            complete: bool = True) -> dict:
    """`complete`: every artifact was benchmarked, so a row the baseline has and this report lacks is a loss."""
    try:
        old = load_report(baseline)
    except EdgeError as exc:
        raise EdgeError(f"baseline {exc}") from None
    old_rows: Dict[Tuple[str, str], dict] = {(r.get("name"), r.get("device")): r for r in old["rows"]}
    checks: List[dict] = []
    for row in report["rows"]:
        prev = old_rows.get((row.get("name"), row.get("device")))
        if prev is None:
            continue
        if prev.get("status") == PASSED and row.get("status") != PASSED:
            checks.append({"name": row["name"], "metric": "status", "old": prev.get("symbol"), "new": row.get("symbol"),
                           "change": "no longer passes", "limit": "passes", "ok": False})
        a_old, a_new = (prev.get("accuracy") or {}).get("top1"), (row.get("accuracy") or {}).get("top1")
        if a_old is not None and a_new is not None:
            drop = (a_old - a_new) * 100
            checks.append({"name": row["name"], "metric": "top1", "old": round(a_old * 100, 2),
                           "new": round(a_new * 100, 2), "change": f"{-drop:+.2f} pp",
                           "limit": f"-{max_accuracy_drop:g} pp", "ok": drop <= max_accuracy_drop + 1e-9})
        l_old, l_new = headline_entry(prev), headline_entry(row)
        if l_old and l_new and (l_old["threads"], l_old["batch"]) == (l_new["threads"], l_new["batch"]):
            p_old, p_new = l_old["run"]["p50_ms"], l_new["run"]["p50_ms"]
            growth = (p_new / p_old - 1) * 100 if p_old else 0.0
            checks.append({"name": row["name"], "metric": f"p50_ms@{l_new['threads']}x{l_new['batch']}",
                           "old": p_old, "new": p_new, "change": f"{growth:+.1f}%", "limit": f"+{max_latency_growth:g}%",
                           "ok": growth <= max_latency_growth + 1e-9})
    new_keys = {(r.get("name"), r.get("device")) for r in report["rows"]}
    for key, prev in old_rows.items() if complete else ():
        if key not in new_keys and prev.get("status") == PASSED:
            checks.append({"name": key[0], "metric": "present", "old": "row", "new": "missing",
                           "change": "not benchmarked", "limit": "present", "ok": False})
    return {"baseline": str(baseline), "max_accuracy_drop_pp": max_accuracy_drop,
            "max_latency_growth_pct": max_latency_growth, "passed": all(c["ok"] for c in checks), "checks": checks}
