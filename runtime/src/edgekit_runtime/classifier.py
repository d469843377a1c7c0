"""Classifier: images in, class probabilities out, with whichever engine the device has.

Quantization of the model's input and output (uint8/int8, int16 for 16x8) is handled here, not by
the caller: `run` always takes the float model input that preprocess.json describes and always
returns float32 probabilities, so a quantized artifact can be swapped in for a float one unchanged.
Not thread-safe: one Classifier per thread (the engines themselves use `threads` cores).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image

from .artifacts import ModelInfo, gather, resolve_model, verify_model
from .engines import Engine, load_engine
from .errors import InputError, ModelError, SpecError
from .files import MiB, budget_under
from .image import enlarge, is_enlargement, load_rgb, resize_rgb
from .pixel_table import PixelTable, luma, snap_to_clip
from .preprocess import PreprocessSpec

ImageLike = Union[str, os.PathLike, bytes, Image.Image, np.ndarray]
Images = Union[ImageLike, Sequence[ImageLike]]

_INPUT_DTYPES = (np.float32, np.float16, np.uint8, np.int8, np.int16)
# Memory one image's decode may take by default: with the OS, Python and an engine this fits a 1 GB board.
DEFAULT_DECODE_BUDGET = 256 * MiB


def _fmt_shape(shape) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"


class Classifier:
    """An image classifier artifact (.tflite or .onnx) with its labels and preprocessing."""

    def __init__(self, engine: Engine, labels: List[str], spec: PreprocessSpec, info: ModelInfo,
                 num_classes: int) -> None:
        self._engine, self._labels, self._spec, self.info = engine, labels, spec, info
        self._num_classes = num_classes
        _, h, w, c = engine.input.shape
        self._input_shape = (h or spec.height, w or spec.width, c)
        self._buffers: Dict[str, np.ndarray] = {}
        self._normalize = spec.normalizer()  # constants bound once, for the decode path and the camera path
        self._table = self._pixel_table()
        # The camera path's two steps are chosen here, once: right after an invoke() every Python step
        # costs microseconds (the model has evicted the interpreter's own code and data from the caches).
        if self._table is not None:
            self._fill = self._table.fill
        elif c == 3 and engine.input.dtype == np.float32:
            self._fill = self._normalize
        else:
            self._fill = self._fill_float
        self._to_probabilities = _output_converter(engine.output)
        self.decode_budget = DEFAULT_DECODE_BUDGET

    # ---------------------------------------------------------------- loading
    @classmethod
    def load(cls, path: "str | os.PathLike", threads: Optional[int] = None, engine: Optional[str] = None,
             format: Optional[str] = None, labels: Optional[Sequence[str]] = None,
             spec: "PreprocessSpec | dict | str | os.PathLike | None" = None, verify: bool = True,
             max_memory_mb: Optional[float] = None) -> "Classifier":
        """Load a .tflite/.onnx file, or the artifact `format` of an export directory.

        `threads` defaults to the CPUs available; `engine` is litert, tflite or onnx (default: the
        first installed that runs the file). `labels` and `spec` override what the files say.
        With `verify` (default) a model that manifest.json beside it lists with a sha256 must match it
        (ModelError otherwise; verify=False for a model edited by hand). `max_memory_mb`: see
        set_memory_limit (default: DEFAULT_DECODE_BUDGET for decoding one image).
        """
        model = resolve_model(path, format)
        digest = verify_model(model) if verify else None
        eng = load_engine(model, threads, engine)
        info = gather(model, eng.metadata())
        info.integrity = (f"sha256 {digest} matches manifest.json" if digest else "not checked (verify off)"
                          if not verify else "no sha256 recorded for it in a manifest.json beside it")
        if labels is not None:
            info.labels, info.labels_source = [str(v) for v in labels], "given"
        if spec is not None:
            info.spec, info.spec_source = _as_spec(spec), "given"
        _check_input(eng, model)
        if info.spec is None:
            raise SpecError(f"{model}: no preprocess.json beside the model and no preprocessing embedded in it; "
                            "put the export's preprocess.json next to the model.")
        _, h, w, _ = eng.input.shape
        if (h is not None and h != info.spec.height) or (w is not None and w != info.spec.width):
            raise ModelError(f"{info.spec_source} gives input size {info.spec.height}x{info.spec.width} "
                             f"but {model.name} takes {h}x{w}.")
        k = _num_classes(eng, model, info)
        if info.labels is None:
            info.labels, info.labels_source = [str(i) for i in range(k)], "class numbers (no labels found)"
        elif len(info.labels) != k:
            raise ModelError(f"{info.labels_source} lists {len(info.labels)} labels but {model.name} "
                             f"outputs {k} classes.")
        clf = cls(eng, info.labels, info.spec, info, k)
        if max_memory_mb is not None:
            clf.set_memory_limit(max_memory_mb)
        return clf

    def set_memory_limit(self, max_memory_mb: float) -> int:
        """Keep this process under `max_memory_mb` while decoding images: what it holds now (model, engine,
        Python) is measured and the rest, less a reserve, becomes `decode_budget`, the bytes one image's decode
        may take. Larger images are decoded within it (JPEG at a reduced scale, PNG in strips) or refused with
        ImageError. A planning limit, not one the kernel enforces. Returns the budget in bytes."""
        self.decode_budget = budget_under(max_memory_mb)
        return self.decode_budget

    # ------------------------------------------------------------- properties
    @property
    def labels(self) -> List[str]:
        return list(self._labels)

    @property
    def spec(self) -> PreprocessSpec:
        return self._spec

    @property
    def input_dtype(self) -> np.dtype:
        return self._engine.input.dtype

    @property
    def input_shape(self) -> Tuple[int, int, int]:
        """(height, width, channels) of one model input."""
        return self._input_shape

    @property
    def num_classes(self) -> int:
        return self._num_classes

    @property
    def engine_name(self) -> str:
        return self._engine.name

    @property
    def engine(self) -> Engine:
        return self._engine

    @property
    def path(self) -> Path:
        return self._engine.path

    def __repr__(self) -> str:
        return (f"<Classifier {self.path.name} engine={self.engine_name} input={_fmt_shape(self._input_shape)}"
                f"{' (model NCHW)' if self._engine.layout == 'NCHW' else ''} "
                f"{self.input_dtype} classes={self._num_classes}>")

    # -------------------------------------------------------------- inference
    def run(self, batch: np.ndarray) -> np.ndarray:
        """Float model input (N, H, W, C), already preprocessed → float32 probabilities (N, K)."""
        x = np.asarray(batch)
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or x.shape[1:] != self._input_shape:
            raise InputError(f"run() takes model input of shape (N, {', '.join(map(str, self._input_shape))}), "
                             f"got {x.shape}.")
        if x.dtype.kind != "f":
            raise InputError(f"run() takes float model input (preprocessed), got {x.dtype}; "
                             "use predict() for uint8 pixels.")
        y = self._engine.run(self._to_model_dtype(x))
        return self._to_probabilities(y)

    def predict(self, images: Images, batch_size: int = 32) -> np.ndarray:
        """Paths, bytes, PIL images or uint8 HxWx3 arrays (any size) → float32 probabilities (N, K).

        Images are decoded and resized `batch_size` at a time, which bounds memory on long lists.
        """
        if batch_size < 1:
            raise InputError(f"batch_size must be at least 1, got {batch_size}.")
        frames = self._frames(images)
        if frames is not None and len(frames) <= batch_size:
            # A camera loop's case: frames already at the model's size go straight into the engine's input.
            return self._to_probabilities(self._engine.run_filled(frames, self._fill))
        items = _as_items(images)
        out = np.empty((len(items), self._num_classes), np.float32)
        for start in range(0, len(items), batch_size):
            chunk = items[start:start + batch_size]
            pixels = self._decoded(chunk, reuse=True)
            if pixels.dtype == np.uint8:
                y = self._engine.run_filled(pixels, self._fill)
                out[start:start + len(chunk)] = self._to_probabilities(y)
            else:
                out[start:start + len(chunk)] = self.run(self._normalized(pixels, reuse=True))
        return out

    def top_k(self, images: Images, k: int = 3) -> List[List[Tuple[str, float]]]:
        """The k most probable (label, probability) pairs per image, most probable first."""
        probs = self.predict(images)
        return [[(self._labels[j], float(row[j])) for j in top_indices(row, k)] for row in probs]

    def preprocess(self, images: Images) -> np.ndarray:
        """The float model input `predict` would feed for these images (N, H, W, C), as a new array."""
        return self._normalized(self._decoded(_as_items(images), reuse=False), reuse=False)

    # --------------------------------------------------------------- helpers
    def _buffer(self, key: str, shape: Tuple[int, ...], dtype) -> np.ndarray:
        # One scratch array per role, replaced only when the batch shape changes: a device loop
        # predicting frame after frame allocates nothing after the first call.
        buf = self._buffers.get(key)
        if buf is None or buf.shape != shape or buf.dtype != np.dtype(dtype):
            buf = self._buffers[key] = np.empty(shape, dtype)
        return buf

    def _decoded(self, items: list, reuse: bool) -> np.ndarray:
        """(N, H, W, 3) pixels at the model's size: uint8, or float32 when an image had to be enlarged."""
        h, w, _ = self._input_shape
        arrays = [self._pixels(item, (h, w)) for item in items]
        dtype = np.uint8 if all(a.dtype == np.uint8 for a in arrays) else np.float32
        shape = (len(arrays), h, w, 3)
        pixels = self._buffer(f"pixels_{dtype.__name__}", shape, dtype) if reuse else np.empty(shape, dtype)
        for i, a in enumerate(arrays):
            pixels[i] = a
        return pixels

    def _normalized(self, pixels: np.ndarray, reuse: bool) -> np.ndarray:
        n, h, w, _ = pixels.shape
        c = self._input_shape[2]
        out = self._buffer("input", (n, h, w, c), np.float32) if reuse else np.empty((n, h, w, c), np.float32)
        if c == 3:
            self._normalize(pixels, out)
            return out
        np.copyto(out[..., 0], luma(pixels), casting="unsafe")
        out *= np.float32(self._spec.scale[0])
        out += np.float32(self._spec.offset[0])
        return out

    def _pixel_table(self) -> Optional[PixelTable]:
        """For integer-input models, the pixel → model input table (pixel_table.py), computed through `run`'s
        own normalise-then-quantize arithmetic, so both paths give the same integers except on exact rounding
        ties (see snap_to_clip). Float models need none: they are normalised straight into their float input."""
        if self._engine.input.dtype.kind == "f":
            return None
        info = self._engine.input
        levels = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1).reshape(1, 1, 256, 3)
        x = self._normalized(levels, reuse=False)
        table = np.ascontiguousarray(_quantize(x, info).reshape(256, -1).T)
        if info.quantized:
            # the unrounded input per model channel in float64: where the table sits on a rounding tie, either
            # neighbour is as near, and snap_to_clip takes the one that makes the table a cheap clip
            c = table.shape[0]
            scale, offset = np.array(self._spec.scale[:c])[:, None], np.array(self._spec.offset[:c])[:, None]
            exact = (np.arange(256.0)[None, :] * scale + offset) / info.scale + info.zero_point
            table = snap_to_clip(table, exact)
        return PixelTable(table, bgr=self._spec.channel_order == "BGR")

    def _frames(self, images: Images) -> Optional[np.ndarray]:
        """uint8 frames already at the model's size, as one (N, H, W, 3) array without copying, else None."""
        h, w, _ = self._input_shape
        if isinstance(images, (list, tuple)):
            if len(images) != 1 or not isinstance(images[0], np.ndarray) or images[0].ndim != 3:
                return None
            images = images[0][None]
        if isinstance(images, np.ndarray) and images.dtype == np.uint8:
            if images.ndim == 3:
                images = images[None]
            if images.ndim == 4 and images.shape[1:] == (h, w, 3):
                return images
        return None

    def _fill_float(self, pixels: np.ndarray, dst: np.ndarray) -> None:
        """A float16 or one-channel model's input for uint8 pixels at the model's size, written into `dst` (the
        engine's buffer); float32 RGB models fill through spec.normalizer(), integer ones through their table."""
        np.copyto(dst, self._to_model_dtype(self._normalized(pixels, reuse=True)))

    def _pixels(self, item: ImageLike, size: Tuple[int, int]) -> np.ndarray:
        """One image at the model's size: enlarged in float (as training does), otherwise Pillow-resized uint8."""
        if isinstance(item, np.ndarray):
            if item.dtype != np.uint8:
                raise InputError(f"image arrays must hold uint8 pixels 0..255, got {item.dtype}; "
                                 "feed preprocessed float input to run() instead.")
            if item.shape == size + (3,):
                return item
            arr = item[..., 0] if item.ndim == 3 and item.shape[-1] == 1 else item
            if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] in (3, 4))):
                raise InputError(f"cannot read an array of shape {item.shape} as an image; expected HxWx3.")
            img = load_rgb(Image.fromarray(np.ascontiguousarray(arr)))
        elif isinstance(item, Image.Image):
            img = load_rgb(item)
        elif isinstance(item, (str, os.PathLike, bytes, bytearray)):
            # target_size lets a huge JPEG decode at 1/2, 1/4 or 1/8 scale instead of in full.
            img = load_rgb(bytes(item) if isinstance(item, bytearray) else item, target_size=size,
                           budget=self.decode_budget)
        else:
            raise InputError(f"cannot use a {type(item).__name__} as an image; give a path, bytes, "
                             "a PIL image or a uint8 HxWx3 array.")
        if is_enlargement(img.size[0], img.size[1], size):
            return enlarge(np.asarray(img, dtype=np.uint8), size)
        return resize_rgb(img, size)

    def _to_model_dtype(self, x: np.ndarray) -> np.ndarray:
        info = self._engine.input
        if info.dtype.kind == "f":
            return np.ascontiguousarray(x, dtype=info.dtype)
        return _quantize(x, info, self._buffer("quant", x.shape, np.float32), self._buffer("q", x.shape, info.dtype))


def _output_converter(info) -> Callable[[np.ndarray], np.ndarray]:
    """Engine output (N, ...) → float32 probabilities (N, K). Engines return a fresh array (LiteRT's get_tensor
    copies, ONNX Runtime allocates), so a float32 output is passed on without another copy."""
    def flat(y: np.ndarray) -> np.ndarray:
        return y if y.ndim == 2 else y.reshape(len(y), -1)
    if info.quantized and info.dtype.itemsize == 1:
        # float32 probability per raw byte, by _dequantize's arithmetic; 'wrap' reads int8 -5 as byte 251
        take = _dequantize(np.arange(256, dtype=np.uint8).view(info.dtype), info).take
        return lambda y: take(flat(y), mode="wrap")
    if info.quantized:
        return lambda y: _dequantize(flat(y), info)
    if info.dtype == np.float32:
        return flat
    return lambda y: flat(y).astype(np.float32)


def _quantize(x: np.ndarray, info, tmp: Optional[np.ndarray] = None, q: Optional[np.ndarray] = None) -> np.ndarray:
    """Float model input → integer input as TFLite does: q = round(x / scale) + zero_point, saturated.

    An integer input without parameters (raw-pixel ONNX models) is taken as scale 1.
    """
    scale, zero_point = (info.scale, info.zero_point) if info.quantized else (1.0, 0)
    limits = np.iinfo(info.dtype)
    tmp = np.empty(x.shape, np.float32) if tmp is None else tmp
    np.divide(x, np.float32(scale), out=tmp, casting="unsafe")
    np.rint(tmp, out=tmp)
    tmp += zero_point
    np.clip(tmp, limits.min, limits.max, out=tmp)
    q = np.empty(x.shape, info.dtype) if q is None else q
    np.copyto(q, tmp, casting="unsafe")
    return q


def _dequantize(y: np.ndarray, info) -> np.ndarray:
    return (y.astype(np.float32) - np.float32(info.zero_point)) * np.float32(info.scale)


def top_indices(row: np.ndarray, k: int) -> List[int]:
    """Indices of the k largest values, largest first; ties keep the lower index first."""
    if k < 1:
        raise InputError(f"k must be at least 1, got {k}.")
    return [int(j) for j in np.argsort(-row, kind="stable")[:k]]


def _as_items(images: Images) -> list:
    if isinstance(images, (str, os.PathLike, bytes, bytearray, Image.Image)):
        return [images]
    if isinstance(images, np.ndarray):
        if images.ndim == 4:
            return list(images)
        if images.ndim == 2 or (images.ndim == 3 and images.shape[-1] in (1, 3, 4)):
            return [images]
        raise InputError(f"cannot read an array of shape {images.shape} as images; "
                         "expected HxWx3 or NxHxWx3 uint8 pixels.")
    try:
        return list(images)
    except TypeError:
        raise InputError(f"cannot use a {type(images).__name__} as images; give paths, PIL images "
                         "or uint8 arrays (one or a list).") from None


def _as_spec(spec) -> PreprocessSpec:
    if isinstance(spec, PreprocessSpec):
        return spec
    if isinstance(spec, dict):
        return PreprocessSpec.from_dict(spec)
    return PreprocessSpec.load(spec)


def _check_input(engine: Engine, model: Path) -> None:
    info = engine.input
    if len(info.shape) != 4 or info.shape[3] not in (1, 3):
        raise ModelError(f"{model.name}: model input has shape {_fmt_shape(info.shape)}, not an image batch "
                         "(batch, height, width, 1 or 3 channels, or channels-first: batch, 1 or 3, height, width).")
    if info.dtype not in [np.dtype(t) for t in _INPUT_DTYPES]:
        raise ModelError(f"{model.name}: model input is {info.dtype}; the runtime feeds float32, float16, "
                         "uint8, int8 or int16.")
    out = engine.output
    if out.dtype.kind not in "f" and not out.quantized:
        raise ModelError(f"{model.name}: model output is {out.dtype} without quantization parameters, "
                         "not class probabilities.")


def _num_classes(engine: Engine, model: Path, info: ModelInfo) -> int:
    tail = engine.output.shape[1:]
    if all(d is not None for d in tail):
        return int(np.prod(tail, dtype=np.int64))
    if info.labels is not None:
        return len(info.labels)
    # The exporter left the class dimension symbolic and there are no labels: ask the model.
    _, h, w, c = engine.input.shape
    probe = np.zeros((1, h or info.spec.height, w or info.spec.width, c), engine.input.dtype)
    return int(np.prod(engine.run(probe).shape[1:], dtype=np.int64))
