"""Validation: run each artifact through the device runtime and compare it with the Keras model.

Inference goes through edgekit_runtime.Classifier, the code that will run on the device, so a
passing artifact is one the device handles correctly, quantized input/output included. Float formats
are judged by the absolute difference of probabilities, quantized formats by top-1 agreement and the
accuracy they lose; each format's limits live in the formats table. Every mismatch is collected
(like HF optimum's exporters) and reported together, as one ValidationError when asked to raise.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edgekit_runtime.native import first_line, quiet_native_stderr
from edgekit.convert.formats import Format
from edgekit.errors import EdgeError
from edgekit_runtime.exits import Exit

if TYPE_CHECKING:
    from edgekit.convert.calibration import Images


@dataclass
class Reference:
    """The Keras model's probabilities on the validation images."""

    images: "Images"
    probs: np.ndarray

    @property
    def accuracy(self) -> Optional[float]:
        y = self.images.y
        return float((self.probs.argmax(1) == y).mean()) if y is not None and len(y) else None


def reference(model, images: "Images", batch_size: int = 64) -> Reference:
    probs = [np.asarray(model(b, training=False), np.float32) for b in images.batches(batch_size)]
    return Reference(images, np.concatenate(probs) if probs else np.zeros((0, 0), np.float32))


@dataclass
class Parity:
    images: int
    max_abs: float          # largest |p_artifact - p_keras|
    mean_abs: float
    agreement: float        # share of images with the same top-1 class
    accuracy: Optional[float]
    keras_accuracy: Optional[float]
    seconds: float

    @property
    def accuracy_delta(self) -> Optional[float]:
        if self.accuracy is None or self.keras_accuracy is None:
            return None
        return self.accuracy - self.keras_accuracy

    def to_dict(self) -> dict:
        return {"images": self.images, "max_abs_diff": self.max_abs, "mean_abs_diff": self.mean_abs,
                "top1_agreement": self.agreement, "accuracy": self.accuracy, "keras_accuracy": self.keras_accuracy,
                "accuracy_delta": self.accuracy_delta, "seconds": self.seconds}


@dataclass
class Mismatch:
    format: str
    metric: str
    value: Optional[float]
    limit: Optional[float]
    detail: str = ""

    def __str__(self) -> str:
        if self.detail:
            return f"{self.format}: {self.detail}"
        worse = ">" if self.metric in ("max_abs_diff", "mean_abs_diff", "accuracy_drop") else "<"
        return f"{self.format}: {self.metric} {_fmt(self.value)} {worse} limit {_fmt(self.limit)}"

    def to_dict(self) -> dict:
        return {"metric": self.metric, "value": self.value, "limit": self.limit, "message": str(self)}


def _fmt(v: Optional[float]) -> str:
    return "n/a" if v is None else (f"{v:.3g}" if abs(v) < 0.01 or math.isnan(v) else f"{v:.4f}")


class ValidationError(EdgeError):
    """One or more artifacts are outside their tolerance; `mismatches` lists every one."""

    exit_code = Exit.OUTSIDE_TOLERANCE

    def __init__(self, mismatches: Sequence[Mismatch]):
        self.mismatches = list(mismatches)
        super().__init__(f"{len(self.mismatches)} validation mismatch(es): " + "; ".join(map(str, self.mismatches)))


@dataclass
class FormatValidation:
    format: str
    parity: Optional[Parity]
    mismatches: List[Mismatch] = field(default_factory=list)
    engine: Optional[str] = None

    @property
    def passed(self) -> bool:
        return self.parity is not None and not self.mismatches


@dataclass
class ValidationReport:
    results: Dict[str, FormatValidation]
    keras_accuracy: Optional[float] = None

    @property
    def mismatches(self) -> List[Mismatch]:
        return [m for r in self.results.values() for m in r.mismatches]

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results.values())

    def raise_for_mismatch(self) -> None:
        if self.mismatches:
            raise ValidationError(self.mismatches)


def parity(probs: np.ndarray, ref: Reference, seconds: float) -> Parity:
    diff = np.abs(probs.astype(np.float64) - ref.probs.astype(np.float64))
    y = ref.images.y
    accuracy = float((probs.argmax(1) == y).mean()) if y is not None and len(y) else None
    return Parity(len(probs), float(diff.max()) if diff.size else 0.0, float(diff.mean()) if diff.size else 0.0,
                  float((probs.argmax(1) == ref.probs.argmax(1)).mean()), accuracy, ref.accuracy, seconds)


def check(fmt: Format, p: Parity) -> List[Mismatch]:
    """Every limit of the format's tolerance that the figures break (NaN breaks them all)."""
    tol, out = fmt.tolerance, []
    if tol.max_abs is not None and not p.max_abs <= tol.max_abs:
        out.append(Mismatch(fmt.name, "max_abs_diff", p.max_abs, tol.max_abs))
    if tol.mean_abs is not None and not p.mean_abs <= tol.mean_abs:
        out.append(Mismatch(fmt.name, "mean_abs_diff", p.mean_abs, tol.mean_abs))
    if tol.min_agreement is not None and not p.agreement >= tol.min_agreement:
        out.append(Mismatch(fmt.name, "top1_agreement", p.agreement, tol.min_agreement))
    if tol.max_accuracy_drop is not None and p.accuracy_delta is not None and not -p.accuracy_delta <= tol.max_accuracy_drop:
        out.append(Mismatch(fmt.name, "accuracy_drop", -p.accuracy_delta, tol.max_accuracy_drop))
    return out


def run_artifact(path: Path, images: "Images", threads: Optional[int] = None, batch_size: int = 64) -> Tuple[np.ndarray, str]:
    """Probabilities of the artifact on the images, through the device runtime as a device calls it: uint8
    pixels already at the model's size go through Classifier.predict (an integer model's pixel table settles
    rounding ties its own way, see snap_to_clip), others as float model input through Classifier.run (predict
    would enlarge them in float with the same arithmetic)."""
    from edgekit_runtime import Classifier
    with quiet_native_stderr():  # LiteRT announces its XNNPACK delegate on stderr
        # verify=False: the artifact was just written, and a manifest beside it (if any) describes an older one
        clf = Classifier.load(path, threads=threads, engine=None, verify=False)
        if images.x.dtype == np.uint8 and images.x.shape[1:] == tuple(clf.input_shape[:2]) + (3,):
            out = [clf.predict(images.x[i:i + batch_size], batch_size=batch_size)
                   for i in range(0, len(images), batch_size)]
        else:
            out = [np.asarray(clf.run(b), np.float32) for b in images.batches(batch_size)]
    return np.concatenate(out), str(getattr(clf, "engine_name", ""))


def validate_artifact(fmt: Format, path: Path, ref: Reference, threads: Optional[int] = None) -> FormatValidation:
    t0 = time.perf_counter()
    try:
        probs, engine = run_artifact(path, ref.images, threads)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # the runtime refused or crashed on the artifact: that is a failed validation
        return FormatValidation(fmt.name, None, [Mismatch(fmt.name, "runs", None, None,
                                                         f"the runtime could not run it ({type(exc).__name__}: {first_line(exc)})")])
    if probs.shape != ref.probs.shape:
        return FormatValidation(fmt.name, None, [Mismatch(fmt.name, "output_shape", None, None,
                                                         f"output shape {probs.shape} differs from Keras {ref.probs.shape}")],
                                engine)
    p = parity(probs, ref, time.perf_counter() - t0)
    return FormatValidation(fmt.name, p, check(fmt, p), engine)


def validate(artifacts: Sequence[Tuple[Format, Path]], ref: Reference, threads: Optional[int] = None) -> ValidationReport:
    """Validate every artifact; never stops at the first mismatch. Call .raise_for_mismatch() to raise."""
    return ValidationReport({fmt.name: validate_artifact(fmt, Path(path), ref, threads) for fmt, path in artifacts},
                            ref.accuracy)
