"""preprocess.json: how to turn 0..255 RGB pixels into a model's input tensor.

model_input = pixel_0_to_255 * scale + offset, per channel, after resizing to (height, width) and
reordering channels. Training writes it; every consumer (convert, runtime, benchmarks) reads it.
"""
from __future__ import annotations

import json
import math
import numbers
import os
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np

from .errors import SpecError
from .files import read_capped

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
        # Checked here, not only when a file is read, so that specs built in Python (convert's command line,
        # training's presets) meet the same limits as the preprocess.json the device reads.
        check_spec({f: getattr(self, f) for f in _FIELDS}, "preprocess")

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
    def from_dict(cls, d: object, source: str = "preprocess") -> "PreprocessSpec":
        """A spec from parsed JSON, validated as a whole: SpecError naming `source` and the key, never TypeError."""
        if not isinstance(d, dict):
            raise SpecError(f"{source}: must hold a JSON object with height, width, scale and offset, "
                            f"not {_kind(d)}.")
        missing = {"height", "width", "scale", "offset"} - set(d)
        if missing:
            raise SpecError(f"{source}: missing field(s) {', '.join(sorted(missing))}.")
        version = d.get("schema_version", SCHEMA_VERSION)
        if not _is_int(version) or not 1 <= version <= SCHEMA_VERSION:
            raise SpecError(f"{source}: 'schema_version' must be 1 to {SCHEMA_VERSION} (this runtime's), "
                            f"not {_short(version)}.")
        known = {k: d[k] for k in _FIELDS if k in d}
        for key in ("height", "width"):  # 224.0 written by hand is 224
            if isinstance(known[key], float) and known[key].is_integer() and abs(known[key]) < 1e9:
                known[key] = int(known[key])
        if known.get("notes") is None:
            known.pop("notes", None)
        check_spec(known, source)
        known["scale"], known["offset"] = tuple(known["scale"]), tuple(known["offset"])
        return cls(**known)

    @classmethod
    def load(cls, path: "str | os.PathLike") -> "PreprocessSpec":
        """preprocess.json (a regular file of at most 1 MB, UTF-8 JSON), validated: SpecError otherwise."""
        raw = read_capped(path, SPEC_FILE_LIMIT, SpecError, "preprocess.json")
        return cls.from_dict(parse_json(raw, f"{path}", SpecError, "preprocess.json"), str(path))


SPEC_FILE_LIMIT = 1 << 20
MAX_SIDE = 4096                      # pixels per side of a model input; larger is a typo or a hostile file
SCALE_RANGE = (1e-6, 1e4)            # |scale|: 1/255 and 1/127.5 are usual, 1.0 raw pixels, 257 16-bit ones
MAX_OFFSET = 1e6                     # |offset|: Caffe-style mean subtraction is about -124
_FIELDS = ("height", "width", "scale", "offset", "channel_order", "resize_method", "layout", "keep_aspect_ratio",
           "notes")
_CHOICES = {"channel_order": ("RGB", "BGR"), "layout": ("NHWC", "NCHW"), "resize_method": ("bilinear",)}


def check_spec(fields: dict, source: str) -> None:
    """SpecError with one sentence naming `source` and the first key whose value cannot be right."""
    for key in ("height", "width"):
        v = fields[key]
        if not _is_int(v) or not 1 <= v <= MAX_SIDE:
            raise SpecError(f"{source}: {key!r} must be a whole number of pixels from 1 to {MAX_SIDE}, "
                            f"not {_short(v)}.")
    for key, (low, high) in (("scale", SCALE_RANGE), ("offset", (0.0, MAX_OFFSET))):
        values = fields[key]
        if (isinstance(values, (str, bytes, dict)) or not hasattr(values, "__len__") or len(values) != 3
                or not all(_is_number(v) for v in values)):
            raise SpecError(f"{source}: {key!r} must be a list of 3 numbers (one per channel), not {_short(values)}.")
        for v in values:
            if not low <= abs(_as_float(v)) <= high:  # NaN fails every comparison
                bound = f"from {low:g} to {high:g} in size" if low else f"at most {high:g} in size"
                raise SpecError(f"{source}: {key!r} holds {_short(v)}; each value must be finite and {bound}.")
    for key, choices in _CHOICES.items():
        v = fields.get(key, choices[0])
        if not isinstance(v, str) or v not in choices:
            raise SpecError(f"{source}: {key!r} must be {' or '.join(map(repr, choices))}, not {_short(v)}.")
    if not isinstance(fields.get("keep_aspect_ratio", False), bool):
        raise SpecError(f"{source}: 'keep_aspect_ratio' must be true or false, not "
                        f"{_short(fields['keep_aspect_ratio'])}.")
    if not isinstance(fields.get("notes", ""), str):
        raise SpecError(f"{source}: 'notes' must be text, not {_short(fields['notes'])}.")


def parse_json(raw: bytes, source: str, error, what: str):
    """JSON from bytes (UTF-8, a BOM tolerated), or `error` with one sentence: never UnicodeDecodeError,
    RecursionError (deep nesting) or ValueError. NaN and Infinity parse, for the checks to name them."""
    try:
        return json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise error(f"{source}: not a {what} (not UTF-8 text: byte {exc.start}).") from None
    except RecursionError:
        raise error(f"{source}: not a {what} (JSON nested too deeply).") from None
    except ValueError as exc:  # JSONDecodeError, and Python's limit on the digits of an integer
        raise error(f"{source}: not a valid {what} ({str(exc).splitlines()[0][:120]}).") from None


def _as_float(v) -> float:
    try:
        return float(v)
    except OverflowError:  # an integer of 400 digits
        return math.inf


def _is_int(v: object) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_number(v: object) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _kind(v: object) -> str:
    return {list: "a list", str: "a string", type(None): "null", bool: "true/false"}.get(type(v), "a number")


def _short(v: object, limit: int = 60) -> str:
    try:
        text = json.dumps(v) if isinstance(v, (list, dict, str, bool, type(None))) else repr(v)
    except (TypeError, ValueError, RecursionError):
        text = repr(type(v).__name__)
    return text if len(text) <= limit else text[:limit - 3] + "..."
