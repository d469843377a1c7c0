"""An ONNX model brought to `edge convert` (PyTorch → ONNX, the common road to a Raspberry Pi): checked, and run by
ONNX Runtime as the reference its exports are validated against (in place of Keras)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from edgekit.errors import EdgeError
from edgekit_runtime.native import first_line


class OnnxReference:
    """The source model in ONNX Runtime, called like a Keras model: channels-last float input → probabilities."""

    def __init__(self, path: Path):
        import onnx
        import onnxruntime as ort
        self.path = Path(path)
        try:
            self.proto = onnx.load(str(self.path))
            options = ort.SessionOptions()
            options.log_severity_level = 3
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnx and onnxruntime raise their own (pybind) types
            raise EdgeError(f"{self.path.name} is not a loadable ONNX model ({first_line(exc, 160)}).") from None
        ins, outs = self.session.get_inputs(), self.session.get_outputs()
        if len(ins) != 1:
            raise EdgeError(f"{self.path.name} has {len(ins)} inputs ({', '.join(i.name for i in ins)}); an image "
                            "classifier takes one image batch.")
        if len(outs) != 1:
            raise EdgeError(f"{self.path.name} has {len(outs)} outputs; an image classifier has one (probabilities).")
        node = ins[0]
        shape = [d if isinstance(d, int) and d > 0 else None for d in node.shape]
        if node.type != "tensor(float)" or len(shape) != 4:
            raise EdgeError(f"{self.path.name}'s input {node.name!r} is {node.type} of shape {node.shape}: not a "
                            "float image batch (N, 3, H, W) or (N, H, W, 3).")
        if shape[1] == 3 and shape[3] != 3:
            self.layout, (self.height, self.width) = "NCHW", shape[2:4]
        elif shape[3] == 3:
            self.layout, (self.height, self.width) = "NHWC", shape[1:3]
        else:
            raise EdgeError(f"{self.path.name}'s input {node.name!r} has shape {node.shape}: no dimension of 3 "
                            "colour channels in second or last place.")
        self.input_name = node.name
        self.batch = shape[0]  # None: any batch; PyTorch exports without dynamic_axes fix it (usually at 1)
        opsets = {o.domain or "ai.onnx": o.version for o in self.proto.opset_import}
        self.opset = opsets.get("ai.onnx")
        self.producer = f"{self.proto.producer_name} {self.proto.producer_version}".strip()

    def native(self, x: np.ndarray) -> np.ndarray:
        """Channels-last model input in the model's own layout."""
        x = np.asarray(x, np.float32)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if self.layout == "NCHW" else x

    def __call__(self, x, training: bool = False) -> np.ndarray:
        try:
            x = self.native(x)
            if self.batch is None or len(x) == self.batch:
                return self.session.run(None, {self.input_name: x})[0]
            # a fixed batch: run it batch by batch, the last one filled up with its own last image
            b, n = self.batch, len(x)
            chunks = [x[i:i + b] for i in range(0, n, b)]
            chunks[-1] = np.concatenate([chunks[-1], np.repeat(chunks[-1][-1:], b - len(chunks[-1]), 0)])
            return np.concatenate([self.session.run(None, {self.input_name: c})[0] for c in chunks])[:n]
        except Exception as exc:
            raise EdgeError(f"{self.path.name}: ONNX Runtime failed on an input of shape {np.shape(x)} "
                            f"({first_line(exc, 160)}).") from None

    def describe(self) -> str:
        return f"ONNX opset {self.opset}, {self.layout} input" + (f", made by {self.producer}" if self.producer else "")


def size_of(ref: OnnxReference, input_size: Optional[Sequence[int]]) -> tuple:
    """The input size: the model's, or --input-size (which must agree with what the model fixes)."""
    fixed = (ref.height, ref.width)
    if input_size is None:
        if None in fixed:
            raise EdgeError(f"{ref.path.name} has a dynamic height/width ({ref.layout} input): pass --input-size H W.")
        return fixed
    size = (int(input_size[0]), int(input_size[1]))
    if any(f is not None and f != s for f, s in zip(fixed, size)):
        raise EdgeError(f"{ref.path.name} takes {fixed[0]}x{fixed[1]} images, not --input-size {size[0]} {size[1]}.")
    return size


def check_outputs(ref: OnnxReference, size: tuple, labels: List[str]) -> None:
    probe = ref(np.zeros((1, size[0], size[1], 3), np.float32))
    classes = int(np.prod(probe.shape[1:]))
    if probe.ndim != 2 or classes != len(labels):
        raise EdgeError(f"{ref.path.name} outputs shape {probe.shape} but there are {len(labels)} labels; the labels "
                        "file needs one class name per output, in output order.")


def mean_std(mean: Sequence[float], std: Sequence[float]) -> tuple:
    """PyTorch's (x / 255 - mean) / std as edgekit's scale and offset (x * scale + offset), per channel."""
    if len(mean) not in (1, 3) or len(std) not in (1, 3):
        raise EdgeError("--mean and --std take one value or three (one per channel).")
    m = np.broadcast_to(np.asarray(mean, np.float64), 3)
    s = np.broadcast_to(np.asarray(std, np.float64), 3)
    if (s <= 0).any():
        raise EdgeError("--std values must be positive.")
    return tuple(float(v) for v in 1 / (255 * s)), tuple(float(v) for v in -m / s)
