"""Export: one artifact per format, each in isolation so that one failure never stops the others.

`export_format` returns an `Exported` record whether or not the converter succeeded; a failure
carries one line saying why (❌). Validation is a separate step (validate.py) on the files written.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable, List, Optional, Sequence

from edgekit.convert.context import ExportContext, Exported, ExportError
from edgekit.convert.formats import Format
from edgekit_runtime.native import first_line


def export_format(fmt: Format, ctx: ExportContext, out_dir: Path) -> Exported:
    """Write `out_dir/<fmt.file_name>`; never raises for a format-specific failure."""
    from edgekit.convert import export_onnx, export_tflite
    exporters = {".tflite": export_tflite.export, ".onnx": export_onnx.export}
    path = Path(out_dir) / fmt.file_name
    t0 = time.perf_counter()
    try:
        reason = fmt.unsupported_reason("onnx" if ctx.onnx_source is not None else "keras")
        if reason:
            raise ExportError(reason)
        made = exporters[fmt.suffix](fmt, ctx, path)  # notes, or (notes, details)
        notes, details = made if isinstance(made, tuple) else (made or [], {})
        return Exported(fmt, path, time.perf_counter() - t0, notes=list(notes), details=dict(details))
    except KeyboardInterrupt:
        raise
    except ExportError as exc:
        error = str(exc)
    except Exception as exc:  # a converter bug or an unforeseen model: reported per format, not fatal
        if os.environ.get("EDGE_DEBUG"):
            raise
        error = f"{type(exc).__name__}: {first_line(exc)}"
    path.unlink(missing_ok=True)
    return Exported(fmt, None, time.perf_counter() - t0, error=error)


def export_all(formats: Sequence[Format], ctx: ExportContext, out_dir: Path,
               on_start: Optional[Callable[[Format], None]] = None,
               on_done: Optional[Callable[[Exported], None]] = None) -> List[Exported]:
    results = []
    for fmt in formats:
        if on_start:
            on_start(fmt)
        result = export_format(fmt, ctx, out_dir)
        if on_done:
            on_done(result)
        results.append(result)
    return results
