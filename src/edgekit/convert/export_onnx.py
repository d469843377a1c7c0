"""ONNX artifacts: float32 through tf2onnx, int8 through ONNX Runtime's static quantizer (QDQ, per channel).

Labels and preprocessing go into the model's metadata_props (`labels`: JSON list, `preprocess`:
JSON of PreprocessSpec.to_dict()), which ONNX Runtime exposes as custom metadata.

Two options of the formats table shape the int8 model beyond ONNX Runtime's own arguments:
`reduce_range: "gemm"` gives 7-bit weights to the layers ONNX Runtime runs as int8 GEMMs (every Conv but
depthwise ones, Gemm, MatMul): on x86 without VNNI its u8 x s8 kernels add pairs of products in int16
(VPMADDUBSW), which saturates with full 8-bit weights (|255*127*2| > 32767) and cost MobileNetV2 ~20 points;
depthwise kernels widen to int32 and keep 8 bits. `bias_correction` folds the mean error that rounding
the weights adds to each output channel into its bias (empirical bias correction, Nagel et al. 2019,
"Data-Free Quantization", sec. 4.2), measured with the calibration images.
"""
from __future__ import annotations

import json
import logging
import re
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Set, Tuple

import numpy as np
import tensorflow as tf

from edgekit.convert.context import ExportContext, ExportError
from edgekit_runtime.native import first_line, quiet_native_stderr
from edgekit.convert.formats import Format

INPUT_NAME = "image"


def export(fmt: Format, ctx: ExportContext, path: Path) -> Tuple[List[str], Dict[str, Any]]:
    import onnx
    opset = int(fmt.options.get("opset", 17))
    # onnx-fp32 and onnx-int8 share one tf2onnx conversion per opset; an ONNX source is its own fp32 model
    fp32 = ctx.onnx_source.proto if ctx.onnx_source is not None else \
        ctx.shared(f"onnx-fp32-opset{opset}", lambda: to_onnx(ctx, opset))
    notes: List[str] = []
    details: Dict[str, Any] = {}
    if fmt.options.get("calibrate"):
        proto = quantize(fp32, fmt, ctx, notes, details)
    else:
        proto = onnx.ModelProto()
        proto.CopyFrom(fp32)
    set_metadata(proto, ctx)
    onnx.save(proto, str(path))
    return notes, details


def to_onnx(ctx: ExportContext, opset: int):
    import tf2onnx
    for name in ("tf2onnx", "tensorflow"):
        logging.getLogger(name).setLevel(logging.ERROR)
    shape = tuple(ctx.model.inputs[0].shape)
    signature = (tf.TensorSpec((None, *shape[1:]), tf.float32, name=INPUT_NAME),)
    try:
        with quiet_native_stderr() as log:
            proto, _ = tf2onnx.convert.from_keras(ctx.model, input_signature=signature, opset=opset)
    except Exception as exc:  # tf2onnx raises plain Exception/ValueError for unsupported graphs
        text = str(exc) + "".join(log)
        ops = re.search(r"Unsupported ops: Counter\(\{([^}]*)\}\)", text)
        if ops:
            names = ", ".join(re.findall(r"'(\w+)'", ops.group(1)))
            raise ExportError(f"op(s) {names} have no ONNX conversion in tf2onnx at opset {opset}; "
                              "a higher --opset may add them.") from None
        raise ExportError(f"tf2onnx: {first_line(exc)}") from None
    return proto


def quantize(fp32, fmt: Format, ctx: ExportContext, notes: List[str], details: Dict[str, Any]):
    """Static QDQ quantization with ONNX Runtime, calibrated on the same images as TFLite int8; for the mixed format,
    the search over layers kept in float (onnx_mixed.py), calibrated once."""
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process
    images = ctx.require_calibration(fmt)
    if ctx.onnx_source is not None:  # the source's own input name and layout (NCHW from PyTorch)
        images = InLayout(images, ctx.onnx_source.native, getattr(ctx.onnx_source, "batch", None))
    name = fp32.graph.input[0].name
    opts = fmt.options

    method = opts.get("calibrate_method", "MinMax")
    # ORT's histogram calibrators keep every activation they are given until they bin it: they get one batch at a
    # time (CalibStridedMinMax, despite its name, slices the reader for any method), so memory stays one batch's
    batch = 16 if method == "MinMax" else 8

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = enumerate(images.batches(batch))  # made once: set_range asks for ranges in order
            self._it: Iterator = ({name: b} for _, b in self._batches)

        def get_next(self):
            return next(self._it, None)

        def __len__(self) -> int:  # in batches, which is what set_range counts
            return -(-len(images) // (getattr(images, "fixed_batch", None) or batch))

        def set_range(self, start_index: int, end_index: int) -> None:
            picked = []
            for i, b in self._batches:
                if i >= start_index:
                    picked.append({name: b})
                if i + 1 >= end_index:
                    break
            self._it = iter(picked)

    per_channel = bool(opts["per_channel"])
    reduce_range = opts.get("reduce_range", False)
    if reduce_range not in (False, True, "gemm"):
        raise ExportError(f"{fmt.name}: reduce_range must be false, true or 'gemm', not {reduce_range!r}.")
    with tempfile.TemporaryDirectory(prefix="edgekit-onnx-") as tmp:
        src, pre, out = Path(tmp, "fp32.onnx"), Path(tmp, "pre.onnx"), Path(tmp, "int8.onnx")
        onnx.save(fp32, str(src))
        with quiet_native_stderr():
            try:
                # Shape inference + graph cleanup first, as ONNX Runtime recommends before quantizing.
                quant_pre_process(str(src), str(pre))
            except Exception:  # symbolic shape inference fails on some graphs; quantizing still works
                pre = src
            model = onnx.load(str(pre))
            layers = weighted_layers(model)
            # Weights (by name) that get 7 bits: all with reduce_range=True, all but depthwise ones with "gemm".
            seven_bit = {n.input[1] for n in layers
                         if reduce_range is True or (reduce_range == "gemm" and not is_depthwise(n, model))}
            extra = {}
            if reduce_range == "gemm" and seven_bit:
                extra["TensorQuantOverrides"] = {
                    n.input[1]: [dict(weight_axis(n), reduce_range=True) if per_channel else {"reduce_range": True}]
                    for n in layers if n.input[1] in seven_bit}
            own = None
            if opts.get("mixed"):   # before bias correction: the biases of layers the mixed format keeps in float
                own = onnx.ModelProto()
                own.CopyFrom(model)
            if opts.get("bias_correction"):
                if opts["weight_type"] != "QInt8":
                    raise ExportError(f"{fmt.name}: bias_correction assumes symmetric QInt8 weights, "
                                      f"not {opts['weight_type']}.")
                try:
                    correct_biases(model, layers, images, per_channel, seven_bit)
                except Exception as exc:
                    raise ExportError(f"bias correction: {type(exc).__name__}: {first_line(exc)}") from None
                pre = Path(tmp, "corrected.onnx")
                onnx.save(model, str(pre))
            if method != "MinMax":
                extra.update(CalibStridedMinMax=1, CalibPercentile=float(opts.get("percentile", 99.99)))
        cache = Path(tmp, "calibration.json")   # calibrated once; the mixed search's candidates read it back

        def run(exclude: List[str]):
            source = pre
            if exclude:
                source = Path(tmp, "excluded.onnx")
                onnx.save(with_own_biases(model, own, exclude), str(source))
            try:
                with quiet_native_stderr():   # not around the mixed search: its progress lines must show
                    quantize_static(str(source), str(out), Reader(), quant_format=QuantFormat[opts["quant_format"]],
                                    calibrate_method=CalibrationMethod[method],
                                    per_channel=per_channel, reduce_range=reduce_range is True,
                                    activation_type=QuantType[opts["activation_type"]],
                                    weight_type=QuantType[opts["weight_type"]], extra_options=extra,
                                    nodes_to_exclude=list(exclude), calibration_cache_path=str(cache))
                # Not CalibMaxIntermediateOutputs: ORT 1.32 drops (does not merge) the batches it flushes, and
                # MinMax keeps only per-tensor ReduceMin/ReduceMax results per batch, so memory stays small.
            except Exception as exc:
                raise ExportError(f"ONNX Runtime quantize_static: {type(exc).__name__}: {first_line(exc)}") from None
            return onnx.load(str(out))

        if not opts.get("mixed"):
            return run([])
        from edgekit.convert import onnx_mixed

        def to_bytes(proto) -> bytes:
            set_metadata(proto, ctx)
            return proto.SerializeToString()
        return onnx_mixed.search(fmt, ctx, model, weighted_layers(model), run, to_bytes, details, notes)


def with_own_biases(corrected, own, exclude: List[str]):
    """A copy of the bias-corrected model where the nodes named in `exclude` have their biases from `own` (the
    same graph before correction): kept in float, their weights are not rounded, and the shift would be an error."""
    import onnx
    from onnx import numpy_helper
    out = onnx.ModelProto()
    out.CopyFrom(corrected)
    original = {n.name: n for n in own.graph.node if n.name}
    own_inits = {i.name: i for i in own.graph.initializer}
    for n in out.graph.node:
        before = original.get(n.name) if n.name in exclude else None
        if before is None:
            continue
        if len(before.input) > 2 and before.input[2]:
            name = f"{before.input[2]}_edgekit_own_bias_{n.name}"
            out.graph.initializer.append(numpy_helper.from_array(numpy_helper.to_array(own_inits[before.input[2]]),
                                                                 name))
            n.input[2] = name
        elif len(n.input) > 2:
            del n.input[2:]   # it had none; correction gave it one
    return out


class InLayout:
    """Calibration images whose batches come in the model's own layout, and in its own batch size where it fixes one
    (PyTorch exports without dynamic_axes fix it at 1; the last batch is filled up with its own last image)."""

    def __init__(self, images, native, fixed_batch: Optional[int] = None):
        self._images, self._native, self.fixed_batch = images, native, fixed_batch

    def __len__(self) -> int:
        return len(self._images)

    def batches(self, batch_size: int = 64):
        for b in self._images.batches(self.fixed_batch or batch_size):
            b = self._native(b)
            if self.fixed_batch and len(b) < self.fixed_batch:
                b = np.concatenate([b, np.repeat(b[-1:], self.fixed_batch - len(b), 0)])
            yield b


def weighted_layers(model) -> list:
    """The Conv/Gemm/MatMul nodes whose weight (input 1) is an initializer: what quantize_static gives int8 weights."""
    inits = {i.name for i in model.graph.initializer}
    return [n for n in model.graph.node
            if n.op_type in ("Conv", "Gemm", "MatMul") and not n.domain and len(n.input) > 1 and n.input[1] in inits]


def _attr(node, name: str, default):
    import onnx
    return next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def _init_shape(model, name: str) -> Optional[List[int]]:
    return next((list(i.dims) for i in model.graph.initializer if i.name == name), None)


def is_depthwise(node, model) -> bool:
    """A Conv with one input channel per group and one output per group: ONNX Runtime's depthwise kernel, which
    accumulates in int32 (no GEMM), so 8-bit weights are safe on every CPU."""
    if node.op_type != "Conv":
        return False
    shape, group = _init_shape(model, node.input[1]), int(_attr(node, "group", 1))
    return shape is not None and group > 1 and shape[1] == 1 and shape[0] == group


def weight_axis(node) -> Dict[str, int]:
    """The per-channel axis quantize_static uses for this layer's weight (output channels)."""
    if node.op_type == "Conv":
        return {"axis": 0}
    if node.op_type == "Gemm":
        return {"axis": 0 if _attr(node, "transB", 0) else 1}
    return {"axis": 1}  # MatMul: B is (K, N)


def _fake_quant(w: np.ndarray, axis: Optional[int], qmax: float) -> np.ndarray:
    """quantize_static's symmetric int8 weight rounding (qmax 127, or 64 with reduce_range), per channel on `axis`."""
    from edgekit.convert.rounding import symmetric_fake_quant
    return symmetric_fake_quant(w, tuple(a for a in range(w.ndim) if a != axis) if axis is not None else None, qmax)


def correct_biases(model, layers: list, images, per_channel: bool, seven_bit: Set[str]) -> int:
    """Empirical bias correction, in place: bias -= E[x] . (Q(W) - W) per output channel, with E[x] the mean of
    each layer's input (per input channel) over the calibration images, in float. Rounding errors that do not
    average out shift every output of a channel alike; MobileNetV2's depthwise layers on smooth images are the
    known case. Returns the number of layers corrected (Conv, and Gemm with a 1-D or absent C)."""
    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper
    inits = {i.name: i for i in model.graph.initializer}
    todo = []
    for n in layers:
        if n.op_type == "Conv" and len(inits[n.input[1]].dims) >= 3:
            todo.append((n, [0] + list(range(2, len(inits[n.input[1]].dims)))))
        elif n.op_type == "Gemm" and len(inits[n.input[1]].dims) == 2 and (len(n.input) < 3 or not n.input[2]
                                                                           or n.input[2] in inits):
            todo.append((n, [1 if _attr(n, "transA", 0) else 0]))
    if not todo:
        return 0
    # Per-channel input means, reduced inside the graph so that no activation leaves ONNX Runtime whole.
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    opset = next((o.version for o in probe.opset_import if o.domain in ("", "ai.onnx")), 17)
    names = []
    for k, (n, axes) in enumerate(todo):
        out = f"edgekit_bias_correction_mean_{k}"
        if opset >= 18:
            probe.graph.initializer.append(numpy_helper.from_array(np.array(axes, np.int64), out + "_axes"))
            probe.graph.node.append(helper.make_node("ReduceMean", [n.input[0], out + "_axes"], [out], keepdims=0))
        else:
            probe.graph.node.append(helper.make_node("ReduceMean", [n.input[0]], [out], axes=axes, keepdims=0))
        probe.graph.output.append(helper.make_tensor_value_info(out, onnx.TensorProto.FLOAT, None))
        names.append(out)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0].name
    sums, count = [0.0] * len(names), 0
    for batch in images.batches(16):
        for k, m in enumerate(session.run(names, {feed: batch})):
            sums[k] = sums[k] + m.astype(np.float64) * len(batch)
        count += len(batch)
    uses: Dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    corrected = 0
    for k, ((n, _), total) in enumerate(zip(todo, sums)):
        mean = total / count
        w = numpy_helper.to_array(inits[n.input[1]]).astype(np.float64)
        qmax = 64.0 if n.input[1] in seven_bit else 127.0
        axis = weight_axis(n)["axis"] if per_channel else None
        dw = _fake_quant(w, axis, qmax) - w
        if n.op_type == "Conv":
            group = int(_attr(n, "group", 1))
            out_ch, in_per_group = w.shape[0], w.shape[1]
            per_in = dw.reshape(out_ch, in_per_group, -1).sum(axis=2)             # (M, C/group)
            mean_of_out = mean.reshape(group, in_per_group)[np.arange(out_ch) // (out_ch // group)]
            shift = (per_in * mean_of_out).sum(axis=1)
        else:
            dw = dw.T if _attr(n, "transB", 0) else dw                               # (K, N)
            beta = float(_attr(n, "beta", 1.0))
            if beta == 0.0:
                continue
            shift = float(_attr(n, "alpha", 1.0)) * (mean @ dw) / beta
        old = n.input[2] if len(n.input) > 2 and n.input[2] else None
        bias = numpy_helper.to_array(inits[old]).astype(np.float64) if old else np.zeros(shift.shape)
        if bias.size != shift.size:  # a broadcast Gemm C: leave it
            continue
        bias = bias - shift.reshape(bias.shape)
        if old and uses.get(old, 0) == 1:
            inits[old].CopyFrom(numpy_helper.from_array(bias.astype(np.float32), old))
        else:  # no bias yet, or one shared with other nodes (tf2onnx merges equal constants): a bias of its own
            name = f"{n.input[1]}_edgekit_bias_{k}"
            model.graph.initializer.append(numpy_helper.from_array(bias.astype(np.float32), name))
            while len(n.input) < 3:
                n.input.append("")
            n.input[2] = name
        corrected += 1
    return corrected


def set_metadata(proto, ctx: ExportContext) -> None:
    meta = ctx.metadata()
    props = {"labels": json.dumps(meta["labels"]), "preprocess": json.dumps(meta["preprocess"])}
    keep = [p for p in proto.metadata_props if p.key not in props]
    del proto.metadata_props[:]
    for p in keep:
        proto.metadata_props.add(key=p.key, value=p.value)
    for k, v in props.items():
        proto.metadata_props.add(key=k, value=v)
    proto.producer_name = proto.producer_name or "edgekit"
