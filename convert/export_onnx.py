"""ONNX artifacts: float32 through tf2onnx, int8 through ONNX Runtime's static quantizer (QDQ, per channel).

Labels and preprocessing go into the model's metadata_props (`labels`: JSON list, `preprocess`:
JSON of PreprocessSpec.to_dict()), which ONNX Runtime exposes as custom metadata.
"""
from __future__ import annotations

import json
import logging
import re
import tempfile
from pathlib import Path
from typing import Iterator, List

import tensorflow as tf

from edgekit.convert.export import ExportContext, ExportError, first_line, quiet_native_stderr
from edgekit.convert.formats import Format

INPUT_NAME = "image"


def export(fmt: Format, ctx: ExportContext, path: Path) -> List[str]:
    import onnx
    opset = int(fmt.options.get("opset", 17))
    # onnx-fp32 and onnx-int8 share one tf2onnx conversion per opset.
    fp32 = ctx.shared(f"onnx-fp32-opset{opset}", lambda: to_onnx(ctx, opset))
    if fmt.options.get("calibrate"):
        proto = quantize(fp32, fmt, ctx)
    else:
        proto = onnx.ModelProto()
        proto.CopyFrom(fp32)
    set_metadata(proto, ctx)
    onnx.save(proto, str(path))
    return []


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


def quantize(fp32, fmt: Format, ctx: ExportContext):
    """Static QDQ quantization with ONNX Runtime, calibrated on the same images as TFLite int8."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process
    images = ctx.require_calibration(fmt)
    opts = fmt.options

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it: Iterator = ({INPUT_NAME: b} for b in images.batches(16))

        def get_next(self):
            return next(self._it, None)

    with tempfile.TemporaryDirectory(prefix="edgekit-onnx-") as tmp:
        src, pre, out = Path(tmp, "fp32.onnx"), Path(tmp, "pre.onnx"), Path(tmp, "int8.onnx")
        onnx.save(fp32, str(src))
        with quiet_native_stderr():
            try:
                # Shape inference + graph cleanup first, as ONNX Runtime recommends before quantizing.
                quant_pre_process(str(src), str(pre))
            except Exception:  # symbolic shape inference fails on some graphs; quantizing still works
                pre = src
            try:
                quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat[opts["quant_format"]],
                                per_channel=bool(opts["per_channel"]),
                                activation_type=QuantType[opts["activation_type"]],
                                weight_type=QuantType[opts["weight_type"]])
                # Not CalibMaxIntermediateOutputs: ORT 1.32 drops (does not merge) the batches it flushes, and
                # MinMax keeps only per-tensor ReduceMin/ReduceMax results per batch, so memory stays small.
            except Exception as exc:
                raise ExportError(f"ONNX Runtime quantize_static: {type(exc).__name__}: {first_line(exc)}") from None
        return onnx.load(str(out))


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
