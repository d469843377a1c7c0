"""The pieces every part of report.html is built from: escaping, null-safe number formatting, cells, badges.

Every string that comes from the report goes through e() (html.escape); numbers are formatted here.
"""
from __future__ import annotations

import html as _html
from datetime import datetime
from typing import Any, Iterable, Sequence, Tuple

from edgekit.benchmarks.report.fields import num
from edgekit.benchmarks.report.table import fmt_macs
from edgekit.helpers import fmt_size
from edgekit.status import SYMBOLS
from edgekit.status import TEXT as STATUS_TEXT
from edgekit.benchmarks.report.schema import Row
KIND_HELP = {"bare": "the engine's own invoke() on an input already set",
             "run": "Classifier.predict on uint8 frames at the model's size: normalise/quantize → invoke → dequantize",
             "e2e": "JPEG decode → resize → normalise → run → top-k"}


def e(x: Any) -> str:
    """Escape anything for HTML text or a quoted attribute."""
    return _html.escape("" if x is None else str(x), quote=True)


def f_pct(v: Any, digits: int = 2) -> str:
    v = num(v)
    return "" if v is None else f"{100 * v:.{digits}f} %"


def f_ms(v: Any) -> str:
    v = num(v)
    if v is None:
        return ""
    return f"{v:.3f}" if v < 10 else f"{v:.2f}" if v < 1000 else f"{v:,.0f}"


def f_size(v: Any) -> str:
    return fmt_size(num(v))


def f_macs(v: Any) -> str:
    """As report.fmt_macs, and in thousands below a million (fmt_macs would show 0.0 M)."""
    v = num(v)
    return f"{v / 1e3:.1f} k" if v and v < 1e6 else fmt_macs(v)


def f_s(v: Any) -> str:
    v = num(v)
    if v is None:
        return ""
    return f"{v * 1000:.0f} ms" if v < 1 else f"{v:.2f} s"


def f_num(v: Any, fmt: str = "{:,.1f}") -> str:
    v = num(v)
    return "" if v is None else fmt.format(v)


def f_date(s: Any) -> str:
    if not s:
        return ""
    try:
        dt = datetime.fromisoformat(str(s))
    except ValueError:
        return str(s)
    off = dt.utcoffset()
    zone = "" if off is None else " UTC" if not off else " " + dt.strftime("%z")
    return dt.strftime("%Y-%m-%d %H:%M") + zone


def status_of(row: Row) -> str:
    s = row.get("status")
    return s if s in STATUS_TEXT else "failed" if row.get("reason") and not row.get("accuracy") else "unknown"


def badge(row: Row, short: bool = False) -> str:
    """The status as a coloured pill: symbol and word, or (short) the symbol alone with a tooltip."""
    s = status_of(row)
    sym = row.get("symbol") or SYMBOLS.get(s, "?")
    word = "" if short else e(STATUS_TEXT.get(s, s))
    return (f'<span class="badge {e(s)}{" short" if short else ""}" title="{e(STATUS_TEXT.get(s, s))}">'
            f'<span class="sym">{e(sym)}</span>{word}</span>')


def table(header: Sequence[Tuple[str, str, str]], body: Iterable[str], cls: str = "") -> str:
    """header: (text, css class, tooltip); body: ready <tr> strings."""
    ths = "".join(f'<th class="{c}"' + (f' title="{e(t)}"' if t else "") + f">{e(h)}</th>" for h, c, t in header)
    return (f'<div class="scroll"><table class="{cls}"><thead><tr>{ths}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>")


def td(text: str, cls: str = "", title: str = "", raw: bool = False, extra: str = "") -> str:
    attrs = (f' class="{cls}"' if cls else "") + (f' title="{e(title)}"' if title else "") + extra
    return f"<td{attrs}>{text if raw else e(text)}</td>"
