"""Where int8 hurts a TFLite model: the error each quantized op adds, measured with TensorFlow's QuantizationDebugger.

The debugger calibrates the model once (the same calibration the converter runs for full-integer models) and
builds a debug model in which every quantized op is followed by a NumericVerify op that runs the float op on the
same quantized input. So each layer's figure is the error that layer adds by itself, not what it inherits
from the layers before it: the ranking points at the layers to keep in higher precision.

The figure is the RMSE between the dequantized int8 output and the float output relative to the float
activation's spread, per output channel over the debug images (0.01 = noise at 1 % of the signal, 1 = the
signal lost), then the root mean square over channels: a layer whose range is stretched by one wide channel
shows up here (its narrow channels are crushed) even though its error in int8 steps is ordinary. The error in
steps (0.29 for rounding alone) is kept beside it; a figure well above that points at clipping.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable, List, Optional, Sequence

import numpy as np

DEBUG_IMAGES = 64  # the per-layer figures settle within a few dozen images; each costs a debug-model run


@dataclass(frozen=True)
class LayerError:
    name: str      # the op's output tensor: what a denylist names to keep the op in float
    op: str        # TFLite op type (CONV_2D, ADD, HARD_SWISH …)
    error: float   # RMSE relative to the float activation's spread, per channel (0 … 1; _Moments.error)
    steps: float   # the same RMSE in int8 steps of that tensor

    def to_dict(self) -> dict:
        return {"layer": self.name, "op": self.op, "error": _finite(self.error), "rmse_steps": _finite(self.steps)}


def _finite(v: float):
    return round(float(v), 6) if math.isfinite(v) else None


def debugger(converter, debug_inputs: Callable[[], Iterable[Sequence[np.ndarray]]]):
    """A QuantizationDebugger over `converter` (optimizations and representative_dataset set): calibrates now."""
    import tensorflow as tf
    dbg = tf.lite.experimental.QuantizationDebugger(converter=converter, debug_dataset=debug_inputs)
    # The debugger's interpreter hands the float ops to XNNPACK, which keeps their outputs inside the delegate:
    # read from Python after invoke, those float tensors are stale (a MEAN measured 66 int8 steps off while its
    # NumericVerify op, which runs in between, saw 0.3). Without default delegates every tensor is written.
    dbg._quant_interpreter = tf.lite.Interpreter(
        model_content=dbg.quant_model, experimental_preserve_all_tensors=True,
        experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    dbg._initialize_stats()
    return dbg


class _Moments:
    """Per output channel (the last axis), over every debug image: squared error, float sum and sum of squares."""

    def __init__(self):
        self.n = 0
        self.sq_err = self.f_sum = self.f_sq = 0.0

    def add(self, f: np.ndarray, deq: np.ndarray) -> None:
        f = f.astype(np.float64).reshape(-1, f.shape[-1] if f.ndim else 1)
        deq = deq.astype(np.float64).reshape(f.shape)
        self.n += len(f)
        self.sq_err = self.sq_err + ((deq - f) ** 2).sum(0)
        self.f_sum = self.f_sum + f.sum(0)
        self.f_sq = self.f_sq + (f ** 2).sum(0)

    def error(self) -> float:
        """Per channel, the RMSE over the channel's standard deviation, capped at 1 (the channel is lost: a narrow
        channel crushed to a few int8 steps by a wide neighbour); then the root mean square over channels.
        Channels (nearly) constant over the images carry nothing to lose and are left out; when every channel is
        constant, the RMSE is taken relative to their magnitude instead."""
        mse = self.sq_err / self.n
        mean = self.f_sum / self.n
        var = np.maximum(self.f_sq / self.n - mean ** 2, 0.0)
        varies = var > 1e-8 * (mean ** 2) + 1e-30
        if not np.any(varies):
            return float(min(1.0, math.sqrt(float(np.mean(mse)) / max(float(np.mean(mean ** 2)), 1e-30))))
        return float(math.sqrt(np.mean(np.minimum(mse[varies] / var[varies], 1.0))))

    def rmse(self) -> float:
        return float(math.sqrt(np.mean(self.sq_err / self.n)))


def measure(dbg, on_float: Optional[Callable[[str, np.ndarray], None]] = None) -> List[LayerError]:
    """Run the debug model over its images; every quantized op's error, worst first. `on_float(name, f)` sees
    each op's float output on each image (ranges.Tails keeps their tails).

    The loop is the debugger's own (run()), keeping per-channel sums where run() keeps one number per image
    per metric: the per-channel spread is what shows a mis-scaled layer."""
    it = dbg._quant_interpreter
    verify = dbg._get_numeric_verify_tensor_details()
    layers = []
    for detail in verify:
        op = it._get_op_details(dbg._defining_op[detail["index"]])
        q_idx, f_idx = op["inputs"]
        made_by = it._get_op_details(dbg._defining_op[q_idx])["op_name"]
        q = it._get_tensor_details(q_idx, subgraph_index=0)["quantization_parameters"]
        scale, zp = (float(q["scales"][0]), int(q["zero_points"][0])) if len(q["scales"]) else (1.0, 0)
        layers.append((dbg._get_operand_name_and_index(detail["name"])[0], made_by, q_idx, f_idx, scale, zp, _Moments()))
    first = True
    for inputs in dbg._data_gen():
        dbg._set_input_tensors(it, inputs, first)
        first = False
        it.invoke()
        for name, _, q_idx, f_idx, scale, zp, m in layers:
            f = it.get_tensor(f_idx)
            m.add(f, (it.get_tensor(q_idx).astype(np.float64) - zp) * scale)
            if on_float is not None:
                on_float(name, f)
    found = [LayerError(name, op, m.error(), m.rmse() / scale if scale else math.nan)
             for name, op, _, _, scale, _, m in layers if m.n]
    return sorted(found, key=lambda e: (-e.error if not math.isnan(e.error) else 0.0, e.name))


def worst(errors: Sequence[dict], n: int = 5) -> str:
    """'CONV_2D model/c2/… 0.41, ADD … 0.22' from manifest entries: the line `edge convert` prints for a ❎."""
    return ", ".join(f"{e['op']} {e['layer']} {e['error']:.2f}" if e.get("error") is not None
                     else f"{e['op']} {e['layer']} ∞" for e in list(errors)[:n])


def tensor_name(tensor) -> str:
    """A flatbuffer object-API tensor's name as text (the API gives bytes)."""
    n = tensor.name
    return n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n)


def _dims(tensor) -> list:
    """Its shape with unknown sizes as 1; the object API leaves a scalar's shape as None."""
    return [max(1, int(d)) for d in tensor.shape] if tensor.shape is not None else []


class Graph:
    """Who reads and who writes each tensor of a TFLite model's main graph, by tensor name."""

    def __init__(self, model: bytes):
        from tensorflow.lite.tools import flatbuffer_utils
        m = flatbuffer_utils.read_model_from_bytearray(bytearray(model))
        g = m.subgraphs[0]

        def name(i: int) -> str:
            return tensor_name(g.tensors[i])
        codes = {i: c.builtinCode if c.builtinCode else c.deprecatedBuiltinCode for i, c in enumerate(m.operatorCodes)}
        self.readers: dict = {}      # tensor -> output tensors of the ops reading it
        self.writer: dict = {}       # output tensor -> (op code, its input tensors)
        self.macs: dict = {}         # output tensor -> multiply-adds of the op writing it (elements for the rest)
        for op in g.operators:
            ins = [name(i) for i in (op.inputs if op.inputs is not None else []) if i >= 0]
            outs = [name(i) for i in (op.outputs if op.outputs is not None else []) if i >= 0]
            for t in ins:
                self.readers.setdefault(t, []).extend(outs)
            out_shape = _dims(g.tensors[op.outputs[0]]) if op.outputs is not None and len(op.outputs) else []
            weight = g.tensors[op.inputs[1]] if op.inputs is not None and len(op.inputs) > 1 and op.inputs[1] >= 0 \
                else None
            buffer = m.buffers[weight.buffer] if weight is not None and weight.buffer < len(m.buffers) else None
            w_dims = _dims(weight) if buffer is not None and buffer.data is not None and len(buffer.data) else []
            per_output = int(np.prod(w_dims[1:])) if len(w_dims) > 1 else 1
            for t in outs:
                self.writer[t] = (codes.get(op.opcodeIndex), ins)
                self.macs[t] = int(np.prod(out_shape)) * per_output
        self.outputs = [name(i) for i in g.outputs]

    def head(self) -> list:
        """The ops that turn features into the model's answer: each output's op and, when that is a softmax or
        sigmoid, the op computing its logits. Quantized, they give probabilities in steps of 1/256 and logits
        in steps of their own, so near ties become exact ties (ResNet-8: 51 of the 97 images where int8 and
        Keras disagree)."""
        from tensorflow.lite.python import schema_py_generated as schema
        squash = {schema.BuiltinOperator.SOFTMAX, schema.BuiltinOperator.LOGISTIC}
        out = []
        for t in self.outputs:
            code, ins = self.writer.get(t, (None, []))
            out.append(t)
            if code in squash and ins and ins[0] in self.writer:
                out.append(ins[0])
        return out
