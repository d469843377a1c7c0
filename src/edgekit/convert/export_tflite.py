"""TFLite artifacts: fp32, fp16, dynamic range, full int8, 16x8 and QAT, driven by the formats table options.

After conversion the labels and preprocessing are embedded as a Model.metadata entry named
"edgekit" (JSON), written with TensorFlow's own generated flatbuffer schema: tflite-support, the
usual metadata writer, is not installable with TF 2.21.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np
import tensorflow as tf
import tf_keras as keras

from edgekit.convert.context import ExportContext, ExportError
from edgekit.convert.tflite_metadata import with_metadata
from edgekit.convert.tflite_errors import explain
from edgekit_runtime.native import first_line, quiet_native_stderr
from edgekit.convert.formats import Format

IO_DTYPES = {"uint8": tf.uint8, "int8": tf.int8}


def export(fmt: Format, ctx: ExportContext, path: Path) -> Tuple[List[str], Dict[str, Any]]:
    opts = fmt.options
    notes: List[str] = []
    details: Dict[str, Any] = {}
    model = qat_model(fmt, ctx) if opts.get("qat") else ctx.tf_model()
    conv = _converter(fmt, ctx, model)
    log: List[str] = []
    try:
        if opts.get("mixed") and opts.get("bias_correction"):
            # the same model calibrated without the correction first, outside its context: the layers the mixed
            # artifact keeps in float get their own biases back (export_int8.restore_float_biases)
            from edgekit.convert.export_int8 import uncorrected
            uncorrected(fmt, ctx, lambda: _converter(fmt, ctx, model), log)
        if opts.get("diagnose"):   # the trained model's answers, before _bias_corrected changes its weights
            from edgekit.convert.export_int8 import search_reference
            search_reference(fmt, ctx)
        with _bias_corrected(fmt, ctx, model, notes):
            if opts.get("diagnose"):  # calibrated once through the quantization debugger (export_int8.py)
                from edgekit.convert.export_int8 import full_integer
                blob = full_integer(fmt, ctx, conv, notes, details, log)   # quiet itself, between its progress lines
            else:
                with quiet_native_stderr() as log:
                    blob = conv.convert()  # traces the model now, with the corrected biases
    except ExportError:
        raise
    except Exception as exc:  # ConverterError, or ValueError for impossible option combinations
        text = str(exc) + "".join(log)
        if ctx.select_tf_ops and opts.get("calibrate") and "Flex delegate" in text:
            raise ExportError(f"{fmt.name} calibrates by running the model in TFLite, which cannot run its TF Select "
                              "ops; only the float formats (tflite-fp32, tflite-fp16, tflite-dynamic) can use them.") from None
        reason = explain(text, fmt.name, ctx.select_tf_ops, "onnx" if ctx.onnx_source is not None else "keras")
        raise ExportError(reason or f"TFLite converter: {first_line(exc)}") from None
    path.write_bytes(with_metadata(blob, ctx, notes))
    return notes, details


def _converter(fmt: Format, ctx: ExportContext, model):
    """A TFLiteConverter with the format's options (the model is traced when it converts)."""
    opts = fmt.options
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if opts.get("optimize"):
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    if opts.get("float16"):
        conv.target_spec.supported_types = [tf.float16]
    if opts.get("calibrate"):
        conv.representative_dataset = ctx.require_calibration(fmt).representative
    ops = [getattr(tf.lite.OpsSet, opts["supported_ops"])] if opts.get("supported_ops") else [tf.lite.OpsSet.TFLITE_BUILTINS]
    if ctx.select_tf_ops:
        ops.append(tf.lite.OpsSet.SELECT_TF_OPS)
    conv.target_spec.supported_ops = ops
    if opts.get("io"):
        conv.inference_input_type = conv.inference_output_type = IO_DTYPES[opts["io"]]
    return conv


def _bias_corrected(fmt: Format, ctx: ExportContext, model, notes: List[str]):
    """The context the conversion runs in: the model's biases corrected for int8 weight rounding, if asked, and
    its kernels rounded by GPTQ first where the format says rounding "gptq" (rounding.py).

    Measured once per convert run (tflite-int8 and tflite-int16x8 round the same weights alike). A model
    the correction cannot handle is converted as it is, with a note; validation still judges the result.
    """
    if not fmt.options.get("bias_correction") or model is not ctx.tf_model():
        return contextlib.nullcontext(0)
    from edgekit.convert.bias_correction import corrected_weights, measure
    images = ctx.require_calibration(fmt)
    rounding = fmt.options.get("rounding", "nearest")
    try:
        shifts = ctx.shared(f"tflite_bias_shifts:{rounding}",
                            lambda: measure(model, lambda: images.batches(32), rounding))
    except (ValueError, TypeError, np.linalg.LinAlgError, tf.errors.OpError) as exc:
        notes.append(f"bias correction skipped ({type(exc).__name__}: {first_line(exc, 100)})")
        return contextlib.nullcontext(0)
    wrapped = [layer.name for layer in model.layers if type(layer).__name__ == "KerasLayer"]
    if not shifts and wrapped:
        notes.append(f"bias correction not applied (the layers are inside SavedModel {wrapped[0]!r})")
    else:
        notes.append(f"bias correction on {len(shifts)} layer(s)")
        if rounding == "gptq":
            notes.append(f"GPTQ weight rounding on {sum(t.rounded is not None for t, _ in shifts.values())} layer(s)")
    return corrected_weights(shifts)


def qat_model(fmt: Format, ctx: ExportContext) -> keras.Model:
    """Quantization-aware fine-tuning with tensorflow_model_optimization (tf_keras only)."""
    import tensorflow_model_optimization as tfmot
    from edgekit.train.pipeline import make_dataset
    if ctx.training_images is None:
        raise ExportError(f"{fmt.name} fine-tunes on labelled training images; --data has none (no class folders).")
    wrapped = [layer.name for layer in ctx.model.layers if type(layer).__name__ == "KerasLayer"]
    if wrapped:
        raise ExportError(f"QAT needs the model's own tf_keras layers; layer {wrapped[0]!r} is a TF Hub/SavedModel "
                          "wrapper, which tensorflow_model_optimization cannot quantize.")
    try:
        with quiet_native_stderr():
            q = tfmot.quantization.keras.quantize_model(ctx.model)
    except Exception as exc:  # tfmot raises ValueError/RuntimeError for layers it cannot wrap
        raise ExportError(f"QAT: tensorflow_model_optimization cannot quantize this model ({first_line(exc, 140)}); "
                          "QAT needs a flat tf_keras functional/sequential model of supported layers.") from None
    train = ctx.training_images()
    keras.utils.set_random_seed(ctx.seed)
    ds = make_dataset(train.x, train.y, train.spec, ctx.batch_size, num_classes=len(ctx.labels), shuffle=True,
                      seed=ctx.seed)
    # The targets are the float model's own probabilities (distillation), not the labels: conversion must keep
    # what the model answers, and on labels QAT keeps training an under-trained model (ResNet-8: +7 pt
    # accuracy but 79 % agreement). A small learning rate adapts the weights to quantization noise only.
    teacher = ctx.model
    ds = ds.map(lambda x, _: (x, teacher(x, training=False)))
    q.compile(optimizer=keras.optimizers.Adam(ctx.qat_lr), loss=keras.losses.CategoricalCrossentropy())
    q.fit(ds, epochs=ctx.qat_epochs, verbose=0)
    return q
