"""What every exporter is handed (ExportContext: the model, labels, preprocessing, calibration and shared
expensive parts) and hands back (Exported, or ExportError's one-line reason)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional

from edgekit.errors import EdgeError
from edgekit.convert.formats import Format
from edgekit_runtime import PreprocessSpec
from edgekit.helpers import file_digest

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
    search_images: Optional["Images"] = None    # where int8 chooses its ranges, mixed searches (None: calibration)
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
