"""A small numpy engine for the fast test tier: a linear classifier in an .npz file, registered with the
runtime the way an engine of one's own would be (`edgekit_runtime.engines.register_engine`, by the test
module's fixture, which removes it again).

It lets the runtime's Classifier and `edge-run predict/info` run in milliseconds in the test's own process,
without LiteRT, ONNX Runtime or TensorFlow, on real image files. The model file carries its labels and
preprocessing as the ONNX and TFLite exports do (one `edgekit` metadata entry).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Dict, List, Sequence

import numpy as np

from edgekit_runtime.engines import Engine, TensorInfo
from edgekit_runtime.errors import ModelError
from edgekit_runtime.native import first_line


class NumpyEngine(Engine):
    name, module, extra, package, suffixes = "numpy", "numpy", "", "numpy", (".npz",)

    def _open(self, lib) -> None:
        try:
            with np.load(self.path, allow_pickle=False) as f:
                self._w, self._b = f["weights"].astype(np.float32), f["bias"].astype(np.float32)
                shape = tuple(int(d) for d in f["input_shape"])
                self._meta = str(f["metadata"]) if "metadata" in f.files else ""
        except (OSError, ValueError, KeyError) as exc:
            raise ModelError(f"{self.path}: not a numpy model ({first_line(exc)}).") from None
        self.input = TensorInfo("image", (None, *shape), np.dtype(np.float32))
        self.output = TensorInfo("probabilities", (None, self._w.shape[1]), np.dtype(np.float32))

    def _invoke(self, x: np.ndarray) -> np.ndarray:
        logits = x.reshape(len(x), -1) @ self._w + self._b
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)

    def invoker(self, x: np.ndarray) -> Callable[[], object]:
        x = self._own_input(x)
        return lambda: self._invoke(x)

    def metadata(self) -> Dict[str, bytes]:
        return {"edgekit": self._meta.encode("utf-8")} if self._meta else {}


def mean_colour_model(path: Path, labels: Sequence[str], colours: Dict[str, Sequence[int]], size: int = 32,
                      embed: bool = True) -> Path:
    """A classifier of the dominant colour: each class scores how close the image's mean colour is to its own
    (a linear function of the pixels, input scaled to 0..1)."""
    centres = np.array([colours[label] for label in labels], np.float32) / 255.0       # K x 3
    per_pixel = np.tile(centres.T[None, None], (size, size, 1, 1)) / (size * size)   # H x W x 3 x K
    weights = 20.0 * per_pixel.reshape(size * size * 3, len(labels))
    bias = -10.0 * (centres ** 2).sum(axis=1)   # -|c|^2 / 2, scaled like the weights: nearest centre wins
    spec = {"height": size, "width": size, "scale": [1 / 255] * 3, "offset": [0.0] * 3, "channel_order": "RGB"}
    meta = json.dumps({"labels": list(labels), "preprocess": spec}) if embed else ""
    np.savez(path, weights=weights, bias=bias, input_shape=np.array([size, size, 3]), metadata=np.array(meta))
    return Path(path)


def expected_top1(images: List[np.ndarray], labels: Sequence[str], colours) -> List[str]:
    """What the mean-colour model must answer, computed without the runtime."""
    centres = np.array([colours[label] for label in labels], np.float32) / 255.0
    out = []
    for img in images:
        mean = img.reshape(-1, 3).mean(axis=0) / 255.0
        out.append(labels[int(np.argmax(mean @ centres.T - 0.5 * (centres ** 2).sum(axis=1)))])
    return out
