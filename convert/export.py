"""Export: one artifact per format, each in isolation so that one failure never stops the others.

`export_format` returns an `Exported` record whether or not the converter succeeded; a failure
carries one line saying why (❌). Validation is a separate step (validate.py) on the files written.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence

from edgekit.errors import EdgeError
from edgekit.convert.formats import Format
from edgekit_runtime import PreprocessSpec
from edgekit_runtime.native import first_line

if TYPE_CHECKING:  # calibration imports TensorFlow; keep this module light for the CLI's early checks
    from edgekit.convert.calibration import Images


class ExportError(EdgeError):
    """A format could not be produced; the message is the one-line reason shown with ❌."""


@dataclass
class ExportContext:
    """Everything an exporter may need; the expensive parts are built on first use and shared."""

    model: Any                                  # tf_keras.Model, float image in, probabilities out
    labels: List[str]
    spec: PreprocessSpec
    calibration: Optional["Images"] = None
    search_images: Optional["Images"] = None    # tflite-int8-mixed's search set (None: the calibration images)
    training_images: Optional[Callable[[], "Images"]] = None  # the whole training split, for QAT
    seed: int = 42
    batch_size: int = 32
    qat_epochs: int = 2
    qat_lr: float = 1e-4
    select_tf_ops: bool = False
    onnx_source: Any = None                     # onnx_source.OnnxReference when the model came as ONNX
    onnx_sha256: str = ""                       # that file's digest, already taken by the source (cache key)
    cache: Dict[str, Any] = field(default_factory=dict)

    def metadata(self) -> Dict[str, Any]:
        """What goes inside every artifact, so a lone model file still knows its labels and preprocessing."""
        return {"labels": list(self.labels), "preprocess": self.spec.to_dict()}

    def tf_model(self) -> Any:
        """The model the TFLite converter takes: the Keras model, or for an ONNX source onnx2tf's channels-last
        SavedModel of it (made once per file content and cached)."""
        if self.onnx_source is None:
            return self.model
        made = self.shared("onnx2tf", lambda: _onnx_as_keras(self.onnx_source, self.onnx_sha256))
        if isinstance(made, ExportError):  # tried once for every TFLite format; each row gives the reason
            raise ExportError(str(made))
        return made

    def require_calibration(self, fmt: Format) -> "Images":
        if self.calibration is None or len(self.calibration) == 0:
            raise ExportError(f"{fmt.name} needs calibration images and none were given.")
        return self.calibration

    def shared(self, key: str, build: Callable[[], Any]) -> Any:
        if key not in self.cache:
            self.cache[key] = build()
        return self.cache[key]


def _onnx_as_keras(ref, digest: str) -> Any:
    from edgekit.convert import onnx_to_tf
    from edgekit.convert.source import _wrap_saved_model
    from edgekit.helpers import file_digest
    try:
        folder = onnx_to_tf.saved_model(ref.path, digest or file_digest(ref.path))
        return _wrap_saved_model(folder, ref.path.stem)
    except EdgeError as exc:
        return ExportError(str(exc))


@dataclass
class Exported:
    fmt: Format
    path: Optional[Path]            # None when the export failed
    seconds: float
    error: Optional[str] = None     # one line, when the export failed
    notes: List[str] = field(default_factory=list)
    details: Dict[str, Any] = field(default_factory=dict)   # per-layer errors, the mixed search (manifest)

    @property
    def ok(self) -> bool:
        return self.error is None and self.path is not None


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
