"""preprocess.json: how to turn 0..255 RGB pixels into a model's input tensor.

model_input = pixel_0_to_255 * scale + offset, per channel, after resizing to (height, width) and
reordering channels. Training writes it; every consumer (convert, runtime, benchmarks) reads it.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np

from .errors import SpecError

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class PreprocessSpec:
    height: int
    width: int
    scale: Sequence[float] = (1.0, 1.0, 1.0)
    offset: Sequence[float] = (0.0, 0.0, 0.0)
    channel_order: str = "RGB"
    resize_method: str = "bilinear"
    layout: str = "NHWC"            # the source model's input layout; each engine feeds a model file as its shape says
    keep_aspect_ratio: bool = False
    notes: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.height < 1 or self.width < 1:
            raise SpecError(f"preprocess: input size must be positive, got {self.height}x{self.width}.")
        if len(self.scale) != 3 or len(self.offset) != 3:
            raise SpecError("preprocess: scale and offset need one value per channel (3 each).")
        if self.channel_order not in ("RGB", "BGR"):
            raise SpecError(f"preprocess: channel_order must be RGB or BGR, not {self.channel_order!r}.")
        if self.layout not in ("NHWC", "NCHW") or self.resize_method != "bilinear":
            raise SpecError("preprocess: layout must be NHWC or NCHW and resizing bilinear.")

    @property
    def size(self):
        return (self.height, self.width)

    def normalize(self, pixels: np.ndarray, out: "np.ndarray | None" = None) -> np.ndarray:
        """uint8 (or float) (..., H, W, 3) RGB pixels → float32 model input.

        `out` (float32, same shape) is filled in place, so a device loop can reuse one buffer. The
        arithmetic is float32 cast, reorder, multiply, then add, element by element.
        """
        if out is None:
            out = np.empty(pixels.shape, np.float32)
        self.normalizer()(pixels, out)
        return out

    def normalizer(self) -> Callable[[np.ndarray, np.ndarray], None]:
        """`fill(pixels, out)`: normalize() into `out` with its constants bound once, for a camera loop, where
        every Python step right after an invoke() costs microseconds (the model evicted the caches)."""
        mul, add = np.multiply, np.add
        scale, offset = [np.float32(v) for v in self.scale], [np.float32(v) for v in self.offset]
        bgr = self.channel_order == "BGR"
        if len(set(scale)) == 1 and len(set(offset)) == 1:  # the usual [0, 1] / [-1, 1]: one pass each
            s, o = scale[0], offset[0]

            def fill(pixels: np.ndarray, out: np.ndarray) -> None:
                mul(pixels[..., ::-1] if bgr else pixels, s, out=out, casting="unsafe")
                add(out, o, out=out)
            return fill

        def fill_per_channel(pixels: np.ndarray, out: np.ndarray) -> None:
            # scalar operations per channel: numpy's broadcast over a last axis of 3 is ~10x slower
            src = pixels[..., ::-1] if bgr else pixels
            for k in range(3):
                mul(src[..., k], scale[k], out=out[..., k], casting="unsafe")
                add(out[..., k], offset[k], out=out[..., k])
        return fill_per_channel

    def to_dict(self) -> dict:
        d = asdict(self)
        d["scale"], d["offset"] = [float(v) for v in self.scale], [float(v) for v in self.offset]
        d["schema_version"] = SCHEMA_VERSION
        d["formula"] = "model_input = pixel_0_to_255 * scale + offset (per channel, after channel_order)"
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "PreprocessSpec":
        known = {k: d[k] for k in ("height", "width", "scale", "offset", "channel_order",
                                   "resize_method", "layout", "keep_aspect_ratio", "notes") if k in d}
        missing = {"height", "width", "scale", "offset"} - set(known)
        if missing:
            raise SpecError(f"preprocess: missing field(s) {', '.join(sorted(missing))}.")
        known["scale"], known["offset"] = tuple(known["scale"]), tuple(known["offset"])
        return cls(**known)

    @classmethod
    def load(cls, path: "str | os.PathLike") -> "PreprocessSpec":
        try:
            with open(path, encoding="utf-8") as fh:
                return cls.from_dict(json.load(fh))
        except FileNotFoundError:
            raise SpecError(f"{path}: no preprocess.json there.") from None
        except (json.JSONDecodeError, TypeError) as exc:
            raise SpecError(f"{path}: not a valid preprocess.json ({exc}).") from None
