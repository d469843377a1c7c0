"""Writing a report: report.json (the data), report.md and report.html (its renderings), each atomically."""
from __future__ import annotations

from pathlib import Path

from edgekit.atomic import write_json, write_text
from edgekit.benchmarks.report.html import write_html
from edgekit.benchmarks.report.markdown import render_markdown
from edgekit.benchmarks.report.schema import Report
from edgekit.layout import REPORT_HTML, REPORT_JSON, REPORT_MD


def write_all(report: Report, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / REPORT_JSON, report)
    write_text(out_dir / REPORT_MD, render_markdown(report))
    write_html(report, out_dir / REPORT_HTML)
