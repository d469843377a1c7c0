"""One small interface over the inference engines a device may have: LiteRT, tflite_runtime, ONNX Runtime.

Each engine is imported only when a model is loaded with it, so `import edgekit_runtime` costs
nothing on a board that has just one of them. An engine takes the model's own input dtype
(quantization is the Classifier's job) and hands back a fresh array it will not touch again.
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple, Type

import numpy as np

from .errors import EngineUnavailable, InputError, ModelError
from .native import first_line

Shape = Tuple[Optional[int], ...]  # None marks a dimension the model leaves open


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: Shape
    dtype: np.dtype
    scale: float = 0.0
    zero_point: int = 0

    @property
    def quantized(self) -> bool:
        return self.scale != 0.0 and self.dtype.kind in "iu"


def default_threads() -> int:
    """CPUs this process may use (respects taskset/cgroups affinity where the OS reports it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def install_hint(engine: "Type[Engine]") -> str:
    """The pip command that installs an engine: its edgekit-runtime extra, else (a registered engine) its package."""
    return f"pip install 'edgekit-runtime[{engine.extra}]'" if engine.extra else f"pip install {engine.package}"


class Engine:
    """Base class: a loaded model with one input and one output tensor."""

    name = ""          # what --engine / engine= calls it
    module = ""        # the import that must succeed
    extra = ""         # the edgekit-runtime extra that installs it
    package = ""       # the PyPI distribution of the engine itself
    suffixes: Tuple[str, ...] = ()

    input: TensorInfo      # always channels-last (N, H, W, C): what the runtime fills
    output: TensorInfo
    path: Path
    threads: int
    layout: str = "NHWC"   # the model's own input layout; NCHW models get their input transposed at the call
    _fill_buffer: Optional[np.ndarray] = None  # run_filled's input, kept while the batch shape holds
    _nchw: Optional[np.ndarray] = None         # the transposed input of an NCHW model, reused likewise

    @classmethod
    def available(cls) -> bool:
        try:
            importlib.import_module(cls.module)
            return True
        except Exception:  # a broken install (ABI, numpy mismatch) counts as not installed
            return False

    @classmethod
    def load(cls, path: "str | os.PathLike", threads: Optional[int] = None) -> "Engine":
        try:
            lib = importlib.import_module(cls.module)
        except Exception as exc:
            raise EngineUnavailable(f"engine {cls.name!r} is not usable here ({type(exc).__name__}: {exc}); "
                                    f"install it with: {install_hint(cls)}") from None
        if threads is not None and int(threads) < 1:
            raise InputError(f"threads must be at least 1, got {threads}.")
        engine = cls.__new__(cls)
        engine.path = Path(path)
        engine.threads = int(threads) if threads is not None else default_threads()
        engine._open(lib)
        engine._adopt_layout()
        return engine

    def _adopt_layout(self) -> None:
        """A channels-first image input (N, 1|3, H, W), as PyTorch exports it, is presented channels-last."""
        shape = self.input.shape
        if len(shape) == 4 and shape[1] in (1, 3) and shape[3] not in (1, 3):
            n, c, h, w = shape
            self.layout, self.input = "NCHW", replace(self.input, shape=(n, h, w, c))

    def _native(self, x: np.ndarray) -> np.ndarray:
        """Channels-last input in the model's own layout (one transpose into a reused buffer for NCHW)."""
        if self.layout == "NHWC":
            return x
        shape = (x.shape[0], x.shape[3], x.shape[1], x.shape[2])
        buf = self._nchw
        if buf is None or buf.shape != shape or buf.dtype != x.dtype:
            buf = self._nchw = np.empty(shape, x.dtype)
        np.copyto(buf, x.transpose(0, 3, 1, 2))
        return buf

    def _own_input(self, x: np.ndarray) -> np.ndarray:
        """`x` as the engine takes it, in an array of its own (an invoker keeps it across calls)."""
        return np.array(self._native(np.ascontiguousarray(x, dtype=self.input.dtype)))

    def _open(self, lib) -> None:
        raise NotImplementedError

    @property
    def dynamic_batch(self) -> bool:
        return self.input.shape[0] is None

    def metadata(self) -> Dict[str, bytes]:
        """Key → value pairs the exporter embedded in the model file (may be empty)."""
        return {}

    def run(self, x: np.ndarray) -> np.ndarray:
        """Model input of shape (N, *input.shape[1:]) in input.dtype → output of shape (N, ...)."""
        x = np.ascontiguousarray(x, dtype=self.input.dtype)
        self._check_shape(x.shape)
        n = x.shape[0]
        if n == 0:
            return np.empty((0,) + self._output_tail(), self.output.dtype)
        if self.dynamic_batch:
            return self._invoke(self._native(x))
        batch = self.input.shape[0]
        out = None
        # A fixed-batch model sees the images in slices of its own batch; the last one is zero-padded.
        for start in range(0, n, batch):
            chunk = x[start:start + batch]
            if len(chunk) < batch:
                chunk = np.concatenate([chunk, np.zeros((batch - len(chunk),) + x.shape[1:], x.dtype)])
            y = self._invoke(self._native(chunk))
            if out is None:
                out = np.empty((n,) + y.shape[1:], y.dtype)
            out[start:start + batch] = y[:min(batch, n - start)]
        return out

    def run_filled(self, pixels: np.ndarray, fill: Callable[[np.ndarray, np.ndarray], None]) -> np.ndarray:
        """Like run(), with the model input for `pixels` (N, H, W, 3) written by `fill(pixels, buffer)` into a
        buffer the engine owns and reuses: a camera loop's path, which allocates and copies nothing per frame
        and skips run()'s checks, since right after an invoke() every extra numpy call costs ten times what it
        does in isolation."""
        shape = pixels.shape[:-1] + (self.input.shape[-1],)
        buf = self._fill_buffer
        if buf is None or buf.shape != shape:
            buf = self._fill_buffer = np.empty(shape, self.input.dtype)
        fill(pixels, buf)
        if self.input.shape[0] in (None, len(buf)):
            return self._invoke(self._native(buf))
        return self.run(buf)  # a fixed-batch model: run() slices and pads

    def _output_tail(self) -> Tuple[int, ...]:
        return tuple(d if d is not None else 0 for d in self.output.shape[1:])

    def _check_shape(self, shape: Tuple[int, ...]) -> None:
        want = self.input.shape
        if len(shape) != len(want) or any(w is not None and w != s for w, s in zip(want[1:], shape[1:])):
            pretty = ", ".join("?" if d is None else str(d) for d in want[1:])
            raise InputError(f"model input must be (batch, {pretty}), got {tuple(shape)}.")

    def _invoke(self, x: np.ndarray) -> np.ndarray:
        """Run the model on `x` in its own layout."""
        raise NotImplementedError

    def invoker(self, x: np.ndarray) -> Callable[[], object]:
        """A no-argument call running only the interpreter on `x` (channels-last, in input.dtype, set up front).

        Benchmarks time it as the bare engine cost the runtime's own overhead is measured against.
        """
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.path.name} threads={self.threads}>"


class LiteRTEngine(Engine):
    name, module, extra, suffixes = "litert", "ai_edge_litert.interpreter", "litert", (".tflite",)
    package = "ai-edge-litert"

    def _open(self, lib) -> None:
        try:
            self._interp = lib.Interpreter(model_path=str(self.path), num_threads=self.threads)
            self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"{self.path}: not a loadable TFLite model ({first_line(exc)}).") from None
        ins, outs = self._interp.get_input_details(), self._interp.get_output_details()
        if len(ins) != 1 or len(outs) != 1:
            raise ModelError(f"{self.path}: the model has {len(ins)} inputs and {len(outs)} outputs; "
                             "an image classifier has one of each.")
        self._in, self._out = ins[0], outs[0]
        self.input, self.output = _tflite_info(self._in), _tflite_info(self._out)
        self._current = tuple(int(d) for d in self._in["shape"])

    def _invoke(self, x: np.ndarray) -> np.ndarray:
        self._set_input(x)
        try:
            self._interp.invoke()
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"{self.path.name}: inference failed ({first_line(exc)}).") from None
        return self._interp.get_tensor(self._out["index"])  # a copy: the arena is reused next call

    def invoker(self, x: np.ndarray) -> Callable[[], object]:
        self._set_input(self._own_input(x))
        return self._interp.invoke

    def _set_input(self, x: np.ndarray) -> None:
        # Tensors stay allocated between calls; they are re-planned only when the batch size changes.
        if x.shape != self._current:
            try:
                self._interp.resize_tensor_input(self._in["index"], list(x.shape), strict=True)
                self._interp.allocate_tensors()
            except (ValueError, RuntimeError) as exc:
                raise InputError(f"{self.path.name}: cannot run on input shape {x.shape} "
                                 f"({first_line(exc)}).") from None
            self._current = x.shape
        self._interp.set_tensor(self._in["index"], x)

    def metadata(self) -> Dict[str, bytes]:
        from .tflite_meta import read_metadata
        return read_metadata(self.path)


class TFLiteRuntimeEngine(LiteRTEngine):
    """tflite_runtime, for boards whose Python or numpy (<2) LiteRT wheels do not cover; same API."""

    name, module, extra, suffixes = "tflite", "tflite_runtime.interpreter", "tflite", (".tflite",)
    package = "tflite-runtime"


class OnnxEngine(Engine):
    name, module, extra, suffixes = "onnx", "onnxruntime", "onnx", (".onnx",)
    package = "onnxruntime"

    def _open(self, ort) -> None:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3  # warnings about unused initializers are noise on a device
        try:
            self._session = ort.InferenceSession(str(self.path), sess_options=opts,
                                                 providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own pybind types (InvalidProtobuf, Fail, ...)
            raise ModelError(f"{self.path}: not a loadable ONNX model ({first_line(exc)}).") from None
        ins, outs = self._session.get_inputs(), self._session.get_outputs()
        if len(ins) != 1 or len(outs) != 1:
            raise ModelError(f"{self.path}: the model has {len(ins)} inputs and {len(outs)} outputs; "
                             "an image classifier has one of each.")
        self.input, self.output = _onnx_info(ins[0], self.path), _onnx_info(outs[0], self.path)

    def _invoke(self, x: np.ndarray) -> np.ndarray:
        try:
            return self._session.run([self.output.name], {self.input.name: x})[0]
        except Exception as exc:
            raise ModelError(f"{self.path.name}: inference failed ({first_line(exc)}).") from None

    def invoker(self, x: np.ndarray) -> Callable[[], object]:
        names, feed = [self.output.name], {self.input.name: self._own_input(x)}
        return lambda: self._session.run(names, feed)

    def metadata(self) -> Dict[str, bytes]:
        props = self._session.get_modelmeta().custom_metadata_map
        return {k: v.encode("utf-8") for k, v in props.items()}


ENGINES: Dict[str, Type[Engine]] = {e.name: e for e in (LiteRTEngine, TFLiteRuntimeEngine, OnnxEngine)}


def register_engine(cls: Type[Engine]) -> Type[Engine]:
    """Add an engine beside the built-in ones: a subclass of Engine with a name, the module it imports, a tuple
    of lower-case file suffixes ('.npz'), `_open`, `_invoke` and `invoker`. The test suite registers a small
    numpy engine this way; a board's own accelerator runtime could be another. It counts in this process only
    (not in the fresh processes `edge-run bench` starts for each artifact)."""
    if not (isinstance(cls, type) and issubclass(cls, Engine) and cls.name and cls.module):
        raise TypeError(f"{cls!r} is not an Engine subclass with a name and a module.")
    if not (isinstance(cls.suffixes, tuple) and cls.suffixes
            and all(isinstance(s, str) and s.startswith(".") and s == s.lower() for s in cls.suffixes)):
        raise TypeError(f"{cls.__name__}.suffixes must be a tuple of lower-case suffixes such as ('.npz',).")
    if ENGINES.get(cls.name, cls) is not cls:
        raise ValueError(f"an engine named {cls.name!r} is already registered ({ENGINES[cls.name].__name__}).")
    ENGINES[cls.name] = cls
    return cls


def model_suffixes() -> Tuple[str, ...]:
    """The model file suffixes some engine runs (.tflite, .onnx and those of registered engines)."""
    return tuple(dict.fromkeys(s for e in ENGINES.values() for s in e.suffixes))


def engines_for(suffix: str) -> List[Type[Engine]]:
    """Engines able to run files with this suffix, in order of preference."""
    return [e for e in ENGINES.values() if suffix.lower() in e.suffixes]


def pick_engine(path: "str | os.PathLike", engine: Optional[str] = None) -> Type[Engine]:
    """The engine class for a model file: the one asked for, else the first installed that fits."""
    suffix = Path(path).suffix.lower()
    candidates = engines_for(suffix)
    if not candidates:
        raise ModelError(f"{path}: not a model file the runtime knows ({' or '.join(model_suffixes())}).")
    if engine is not None:
        if engine not in ENGINES:
            raise EngineUnavailable(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}.")
        cls = ENGINES[engine]
        if cls not in candidates:
            raise EngineUnavailable(f"engine {engine!r} cannot run {suffix} files; use "
                                    f"{' or '.join(c.name for c in candidates)}.")
        if not cls.available():
            raise EngineUnavailable(f"engine {engine!r} is not installed: {install_hint(cls)}")
        return cls
    for cls in candidates:
        if cls.available():
            return cls
    hints = " or ".join(install_hint(c) for c in candidates)
    older = " (tflite-runtime: older boards, numpy<2)" if suffix == ".tflite" else ""
    raise EngineUnavailable(f"no engine for {suffix} models is installed: {hints}{older}.")


def load_engine(path: "str | os.PathLike", threads: Optional[int] = None, engine: Optional[str] = None) -> Engine:
    """Load a .tflite/.onnx file with the requested or best available engine."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"{path}: no such model file.")
    if not path.is_file():
        raise ModelError(f"{path}: not a file.")
    cls = pick_engine(path, engine)
    if path.stat().st_size == 0:
        raise ModelError(f"{path}: the model file is empty.")
    return cls.load(path, threads)


def _tflite_info(d: dict) -> TensorInfo:
    signature = d.get("shape_signature")
    dims = signature if signature is not None and len(signature) else d["shape"]
    scale, zero_point = d.get("quantization", (0.0, 0))
    return TensorInfo(name=d["name"], shape=tuple(None if int(v) < 0 else int(v) for v in dims),
                      dtype=np.dtype(d["dtype"]), scale=float(scale), zero_point=int(zero_point))


_ONNX_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
               "tensor(uint8)": np.uint8, "tensor(int8)": np.int8, "tensor(int16)": np.int16,
               "tensor(int32)": np.int32, "tensor(int64)": np.int64}


def _onnx_info(node, path: Path) -> TensorInfo:
    if node.type not in _ONNX_TYPES:
        raise ModelError(f"{path}: tensor {node.name!r} has type {node.type}, which the runtime does not handle.")
    # Symbolic ('batch', 'unk__12'), None or negative dimensions are all "any size".
    shape = tuple(d if isinstance(d, int) and d > 0 else None for d in (node.shape or []))
    return TensorInfo(name=node.name, shape=shape, dtype=np.dtype(_ONNX_TYPES[node.type]))
