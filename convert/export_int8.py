"""Full-integer TFLite through the quantization debugger: one calibration gives the artifact, the per-layer error
of every op (layer_error.py) and, for tflite-int8-mixed, the candidates of the selective-precision search
(mixed.py).

The artifact is what TFLiteConverter.convert() makes for full-integer models (calibrate, then the MLIR
quantizer with the asked input/output type); the debugger only keeps the calibrated model in hand, so that
quantizing it again with some ops denylisted (left in float, between DEQUANTIZE and QUANTIZE ops the builtin
kernels run) costs seconds, not a new calibration.
"""
from __future__ import annotations

import tempfile
from itertools import islice
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

from edgekit.convert.export import ExportContext, ExportError
from edgekit.convert.formats import Format
from edgekit.progress import console
from edgekit_runtime.native import first_line, quiet_native_stderr

LAYERS_RECORDED = 20   # the worst layers written to the manifest (the ranking's head is what anyone acts on)


def calibrated(fmt: Format, ctx: ExportContext, conv):
    """The shared debugger (calibrated once per convert run for every int8 format), or an ExportError."""
    from edgekit.convert import layer_error
    images = ctx.require_calibration(fmt)

    def build():
        try:
            return layer_error.debugger(conv, lambda: islice(images.representative(), layer_error.DEBUG_IMAGES))
        except Exception as exc:  # the debugger builds its own debug model: some graphs it cannot instrument
            return ExportError(f"the quantization debugger cannot instrument this model ({type(exc).__name__}: "
                               f"{first_line(exc, 160)})")
    made = ctx.shared(_key("tflite_int8_debugger", fmt), build)
    if isinstance(made, ExportError):
        raise made
    return made


def layer_errors(fmt: Format, ctx: ExportContext, dbg) -> list:
    from edgekit.convert import layer_error
    return ctx.shared(_key("tflite_int8_layer_errors", fmt), lambda: layer_error.measure(dbg))


def _key(what: str, fmt: Format) -> str:
    """What the calibrated model depends on beyond the source: the biases it was traced with."""
    return f"{what}:bias_correction={bool(fmt.options.get('bias_correction'))}"


def quantizer(fmt: Format, dbg, float_ops: Dict[str, List[str]]):
    """names → the full-integer model with those layers kept in float (none: the plain int8 artifact).

    A layer is kept in float together with the ops that read its output: quantizing an op's output for the next
    int8 op is where a stretched range crushes it, so the op alone in float would change nothing there. Every
    op the model ends up running in float is recorded in float_ops[layer]."""
    import tensorflow as tf
    from tensorflow.lite.python import convert as tfl_convert
    from edgekit.convert.layer_error import consumers
    io = {"uint8": tf.uint8, "int8": tf.int8}.get(fmt.options.get("io"), tf.float32)
    readers = consumers(dbg.calibrated_model)

    def quantize(layers: List[str]) -> bytes:
        denylist: List[str] = []
        for layer in layers:
            float_ops[layer] = [layer] + [r for r in readers.get(layer, []) if r != layer]
            denylist.extend(n for n in float_ops[layer] if n not in denylist)
        return tfl_convert.mlir_quantize(dbg.calibrated_model, input_data_type=io, output_data_type=io,
                                         denylisted_nodes=denylist or None)
    return quantize


def full_integer(fmt: Format, ctx: ExportContext, conv, notes: List[str], details: Dict[str, Any],
                 log: List[str]) -> bytes:
    """The int8 (or int8-mixed) model as bytes, with details["layer_errors"] (and details["mixed"]). What native
    code prints goes to `log` (for the converter's error), never to the console between the search's lines."""
    def quiet(fn, *args):
        with quiet_native_stderr() as lines:
            try:
                return fn(*args)
            finally:
                log.extend(lines)
    try:
        dbg = quiet(calibrated, fmt, ctx, conv)
    except ExportError as exc:
        if fmt.options.get("mixed"):
            raise
        notes.append(f"per-layer diagnosis skipped ({exc})")
        conv._experimental_calibrate_only = False  # the debugger set it; the plain converter path as before
        return quiet(conv.convert)
    try:
        errors = quiet(layer_errors, fmt, ctx, dbg)
    except Exception as exc:  # the diagnosis is extra: the plain artifact does not depend on it
        if fmt.options.get("mixed"):
            raise ExportError(f"per-layer errors could not be measured ({type(exc).__name__}: {first_line(exc, 160)}); "
                              "the mixed search needs them") from None
        notes.append(f"per-layer diagnosis skipped ({type(exc).__name__}: {first_line(exc, 100)})")
        errors = []
    details["layer_errors"] = [e.to_dict() for e in errors[:LAYERS_RECORDED]]
    float_ops: Dict[str, List[str]] = {}
    plain = quantizer(fmt, dbg, float_ops)

    def quantize(layers: List[str]) -> bytes:
        return quiet(plain, layers)
    if not fmt.options.get("mixed"):
        return quantize([])
    result = _search(fmt, ctx, errors, quantize, quiet)
    details["mixed"] = {**result.to_dict(),
                        "float_ops": sorted({n for e in result.kept_out for n in float_ops.get(e.name, [e.name])})}
    notes.append(result.describe())
    return result.blob


def _search(fmt: Format, ctx: ExportContext, errors, quantize, quiet):
    from edgekit.convert import mixed
    from edgekit.convert.export_tflite import with_metadata
    from edgekit.convert.validate import reference, run_artifact
    images = ctx.require_calibration(fmt)
    keras_top1 = ctx.shared("calibration_reference", lambda: quiet(reference, ctx.model, images)).probs.argmax(1)
    target = float(fmt.options.get("target_agreement", fmt.tolerance.min_agreement or 0.995))

    with tempfile.TemporaryDirectory(prefix="edgekit-mixed-") as tmp:
        def agreement(blob: bytes) -> float:
            path = Path(tmp) / fmt.file_name
            path.write_bytes(with_metadata(blob, ctx, []))
            probs, _ = quiet(run_artifact, path, images)
            return float(np.mean(probs.argmax(1) == keras_top1))

        def said(step) -> None:
            console.print(f"    {step.kept_out:>2} layer(s) in float: top-1 agreement {step.agreement:.2%} "
                          "on the calibration images", highlight=False)
        return mixed.search(errors, quantize, agreement, target, on_step=said)
