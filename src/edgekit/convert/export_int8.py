"""Full-integer TFLite through the quantization debugger: one calibration gives the artifact, the per-layer error
of every op (layer_error.py) and, for tflite-int8-mixed, the candidates of the selective-precision search
(mixed.py).

The artifact is what TFLiteConverter.convert() makes for full-integer models (calibrate, then the MLIR
quantizer with the asked input/output type); the debugger only keeps the calibrated model in hand, so that
quantizing it again with some ops denylisted (left in float, between DEQUANTIZE and QUANTIZE ops the builtin
kernels run) costs seconds, not a new calibration.
"""
from __future__ import annotations

import hashlib
import tempfile
import time
from itertools import islice
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from edgekit.convert import mixed
from edgekit.convert.context import ExportContext, ExportError
from edgekit.convert.formats import Format
from edgekit.progress import console
from edgekit_runtime import Classifier
from edgekit_runtime.native import first_line, quiet_native_stderr

LAYERS_RECORDED = 20   # the worst layers written to the manifest (the ranking's head is what anyone acts on)
TIMING_S = 0.2         # each candidate of the mixed search is timed this long (ResNet-8: ~2,000 inferences)


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


def _uncorrected(fmt: Format) -> Format:
    import dataclasses
    return dataclasses.replace(fmt, options={**fmt.options, "bias_correction": False, "rounding": None})


def uncorrected(fmt: Format, ctx: ExportContext, make_converter, log: List[str]) -> None:
    """The calibrated model without bias correction, shared (only its float biases are used)."""
    with quiet_native_stderr() as lines:
        try:
            calibrated(_uncorrected(fmt), ctx, make_converter())
        finally:
            log.extend(lines)


def _float_constants(ctx: ExportContext, fmt: Format) -> Dict[bytes, Any]:
    """Name → data of every float32 constant of the uncorrected calibrated model (read once per convert run): the
    original biases and kernels, before bias correction and GPTQ rounding."""
    source = ctx.cache.get(_key("tflite_int8_debugger", _uncorrected(fmt)))
    if source is None or isinstance(source, ExportError):
        return {}

    def read():
        from tensorflow.lite.tools import flatbuffer_utils
        own = flatbuffer_utils.read_model_from_bytearray(bytearray(source.calibrated_model))
        constants = {}
        for t in own.subgraphs[0].tensors:
            data = own.buffers[t.buffer].data if t.buffer < len(own.buffers) else None
            if t.type == 0 and data is not None and len(data):   # TensorType.FLOAT32
                constants[t.name] = data
        return constants
    return ctx.shared("tflite_int8_uncorrected_constants", read)


def restore_float_biases(blob: bytes, fmt: Format, ctx: ExportContext) -> bytes:
    """The mixed model with every float32 constant that the uncorrected calibration has under the same name and
    size taken from it (biases, and kernels that GPTQ rounded). Bias correction shifts a layer's bias to cancel its
    int8 weights' rounding; a layer kept in float has float weights, and the shift becomes an error of its own
    (ResNet-8 with every layer in float: 99.75 % top-1 agreement with the shift, 100 % without). int8 layers keep
    int32 biases, untouched here."""
    if not fmt.options.get("bias_correction"):
        return blob
    constants = _float_constants(ctx, fmt)
    if not constants:
        return blob
    from tensorflow.lite.tools import flatbuffer_utils
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(blob))
    for t in model.subgraphs[0].tensors:
        buf = model.buffers[t.buffer] if t.buffer < len(model.buffers) else None
        if t.type == 0 and buf is not None and buf.data is not None and len(buf.data) and t.name in constants \
                and len(constants[t.name]) == len(buf.data):
            buf.data = constants[t.name]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def layer_errors(fmt: Format, ctx: ExportContext, dbg) -> tuple:
    """(the per-layer errors, worst first; the percentile ranges of the float activations seen on the way)."""
    from edgekit.convert import layer_error
    from edgekit.convert.ranges import Tails

    def run():
        tails = Tails(layer_error.DEBUG_IMAGES)
        return layer_error.measure(dbg, tails), tails.ranges()
    return ctx.shared(_key("tflite_int8_layer_errors", fmt), run)


def _key(what: str, fmt: Format) -> str:
    """What the calibrated model depends on beyond the source: the biases and kernels it was traced with."""
    return f"{what}:bias_correction={bool(fmt.options.get('bias_correction'))}:rounding={fmt.options.get('rounding')}"


def quantizer(fmt: Format, dbg, float_ops: Dict[str, List[str]], graph=None, calibrated_model: Optional[bytes] = None):
    """names → the full-integer model with those layers kept in float (none: the plain int8 artifact); `graph`
    (layer_error.Graph of the calibrated model) for the mixed format.

    A layer is kept in float together with the ops that read its output: quantizing an op's output for the next
    int8 op is where a stretched range crushes it, so the op alone in float would change nothing there. Every
    op the model ends up running in float is recorded in float_ops[layer]. The mixed format also keeps its head
    (layer_error.Graph.head: the logits and the softmax) in float, with a float32 output: a few hundred
    multiply-adds that turn exact uint8 ties back into answers."""
    import tensorflow as tf
    from tensorflow.lite.python import convert as tfl_convert
    io = {"uint8": tf.uint8, "int8": tf.int8}.get(fmt.options.get("io"), tf.float32)
    is_mixed = bool(fmt.options.get("mixed"))
    head = graph.head() if is_mixed else []
    if head:
        float_ops["(head)"] = head

    def quantize(layers: List[str]) -> bytes:
        denylist: List[str] = list(head)
        for layer in layers:
            float_ops[layer] = [layer] + [r for r in (graph.readers if graph else {}).get(layer, []) if r != layer]
            denylist.extend(n for n in float_ops[layer] if n not in denylist)
        return tfl_convert.mlir_quantize(calibrated_model or dbg.calibrated_model, input_data_type=io,
                                         output_data_type=tf.float32 if is_mixed else io,
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
        errors, ranges = quiet(layer_errors, fmt, ctx, dbg)
    except Exception as exc:  # the diagnosis is extra: the plain artifact does not depend on it
        if fmt.options.get("mixed"):
            raise ExportError(f"per-layer errors could not be measured ({type(exc).__name__}: {first_line(exc, 160)}); "
                              "the mixed search needs them") from None
        notes.append(f"per-layer diagnosis skipped ({type(exc).__name__}: {first_line(exc, 100)})")
        errors, ranges = [], {}
    details["layer_errors"] = [e.to_dict() for e in errors[:LAYERS_RECORDED]]
    float_ops: Dict[str, List[str]] = {}
    from edgekit.convert.layer_error import Graph
    from edgekit.convert.ranges import PERCENTILE, with_ranges
    graph = quiet(Graph, dbg.calibrated_model) if fmt.options.get("mixed") else None
    narrowed, changed = quiet(with_ranges, dbg.calibrated_model, ranges)
    # each remembers its last artifacts: the range choice, the benefits and the search ask for some twice
    candidates = {"min/max": mixed.recent(quantizer(fmt, dbg, float_ops, graph))}
    if changed:
        candidates[f"{PERCENTILE}th percentile"] = mixed.recent(quantizer(fmt, dbg, float_ops, graph, narrowed))
    if not fmt.options.get("mixed"):
        with Judge(fmt, ctx, quiet) as judge:
            chosen, scores = judge.choose(candidates)
        details["activation_ranges"] = {"chosen": chosen, "agreement": scores, "judged_on": judge.where}
        notes.append(f"activation ranges: {chosen} (" + ", ".join(f"{n} {a:.2%}" for n, a in scores.items())
                     + f" top-1 agreement on {judge.where})")
        return quiet(candidates[chosen], [])

    def mixed_of(make):
        return mixed.recent(lambda layers: restore_float_biases(quiet(make, layers), fmt, ctx))
    head = set(float_ops.get("(head)", []))
    result = _search(fmt, ctx, [e for e in errors if e.name not in head],
                     {name: mixed_of(make) for name, make in candidates.items()}, graph, quiet, sorted(head))
    details["mixed"] = {**result.to_dict(), "head_in_float": float_ops.get("(head)", []),
                        "float_ops": sorted({n for e in result.kept_out for n in float_ops.get(e.name, [e.name])}
                                            | set(float_ops.get("(head)", [])))}
    notes.append(result.describe())
    return result.blob


def search_reference(fmt: Format, ctx: ExportContext) -> tuple:
    """(the search images, the source model's probabilities on them), shared. Called before the model's weights are
    corrected for int8 (export_tflite._bias_corrected): inside that context the model answers with corrected
    biases and rounded kernels, and the search would judge against that instead of the trained model
    (MobileNetV2: 92 % "agreement" on the search images for an artifact that agreed 98 % with the real one)."""
    from edgekit.convert.validate import reference
    images = ctx.search_images if ctx.search_images is not None else ctx.require_calibration(fmt)
    with quiet_native_stderr():
        probs = ctx.shared(f"search_reference:{images.split}", lambda: reference(ctx.model, images)).probs
    return images, probs


class Judge:
    """Runs candidate artifacts through the runtime on the search images (the val split's share that validation
    does not see; the calibration images where there is none) against the source model's answers. `write(blob,
    path)` puts a candidate where the runtime loads it (default: a TFLite model, with edgekit's metadata)."""

    def __init__(self, fmt: Format, ctx: ExportContext, quiet, write=None):
        self.fmt, self.ctx, self.quiet = fmt, ctx, quiet
        self.write = write or (lambda blob, path: path.write_bytes(_with_metadata(blob, ctx)))
        self.images, self.keras_probs = search_reference(fmt, ctx)
        split = self.images.split
        self.where = f"{len(self.images):,} {'calibration' if split == 'train' else split} images"
        self.seen: Dict[bytes, np.ndarray] = {}
        self.timed: Dict[bytes, float] = {}
        self._written: Optional[bytes] = None   # the digest of the artifact now in the file

    def __enter__(self) -> "Judge":
        self._tmp = tempfile.TemporaryDirectory(prefix="edgekit-int8-")
        return self

    def __exit__(self, *exc) -> None:
        self._tmp.cleanup()

    def probs(self, blob: bytes) -> np.ndarray:
        # the same artifact comes back more than once (no layer in float: to choose the ranges, as the base of
        # the benefits and as the search's first step; each layer tried alone, then as a step): run it once
        from edgekit.convert.validate import run_artifact
        digest = hashlib.sha256(blob).digest()
        if digest not in self.seen:
            self.seen[digest] = self.quiet(run_artifact, self._file(blob, digest), self.images)[0]
        return self.seen[digest]

    def _file(self, blob: bytes, digest: bytes) -> Path:
        """The artifact on disk where the runtime loads it, written once for its run and its timing."""
        path = Path(self._tmp.name) / self.fmt.file_name
        if self._written != digest:
            self.write(blob, path)
            self._written = digest
        return path

    def latency_ms(self, blob: bytes) -> float:
        """The median of one bare inference of the artifact (1 thread, batch 1, one search image), timed for about
        TIMING_S: what keeping a layer in float costs is measured, not estimated from its multiply-adds."""
        digest = hashlib.sha256(blob).digest()
        if digest not in self.timed:
            path = self._file(blob, digest)
            with quiet_native_stderr():
                clf = Classifier.load(path, threads=1, engine=None, verify=False)
                call = clf.engine.invoker(np.array(clf._to_model_dtype(clf.preprocess(list(self.images.x[:1])))))
                for _ in range(5):
                    call()
                samples: List[int] = []
                end = time.perf_counter() + TIMING_S
                while time.perf_counter() < end or len(samples) < 30:
                    t0 = time.perf_counter_ns()
                    call()
                    samples.append(time.perf_counter_ns() - t0)
            self.timed[digest] = float(np.median(samples)) / 1e6
        return self.timed[digest]

    def extra_ms(self, quantize) -> Any:
        """layer name -> what keeping it in float adds to quantize([])'s latency (at least 2 % of it: below that,
        timing noise would make a layer look free). `quantize` should remember its last results (mixed.recent):
        by_benefit has just made the same artifact to measure its error."""
        base = self.latency_ms(quantize([]))
        return lambda name: max(self.latency_ms(quantize([name])) - base, 0.02 * base)

    def agreement(self, blob: bytes) -> float:
        return float(np.mean(self.probs(blob).argmax(1) == self.keras_probs.argmax(1)))

    def error(self, blob: bytes) -> float:
        return float(np.mean((self.probs(blob) - self.keras_probs) ** 2))

    def search_mixed(self, ranked, quantize, macs, *, every=None, already_float=(), first: int = mixed.FIRST_TRIED,
                     what: str = "worst layers", in_order=()) -> mixed.Mixed:
        """Both mixed formats' search, judged here: the layers options["keep_float"] names (looked up in `every`,
        default `ranked`) kept in float with no search; else the first `first` of `ranked` measured one by one
        (mixed.by_benefit: output error here, cost timed here, `macs` where not) and kept out in that order until
        the search's goal is met (mixed.goal, mixed.search), each step printed; then, given `in_order` (the
        candidates in model order), a float prefix reaching the goal (mixed.prefix), kept instead where
        mixed.islands_or_prefix says so."""
        target = float(self.fmt.tolerance.min_agreement)
        aim = mixed.goal(target, len(self.images))
        if self.fmt.options.get("keep_float"):
            result = mixed.fixed(mixed.named(ranked if every is None else every, self.fmt.options["keep_float"],
                                             already_float), quantize, self.agreement, target)
        else:
            console.print(f"    measuring what each of the {min(len(ranked), first)} {what} gives back in float, "
                          f"on {self.where} (the search's goal: {aim:.2%} there, for {target:.1%} on unseen "
                          "images) …", highlight=False)
            ordered = mixed.by_benefit(ranked, lambda layers: self.error(quantize(layers)), macs, first=first,
                                       extra_ms=self.extra_ms(quantize))

            def said(step) -> None:
                console.print(f"    {step.kept_out:>2} layer(s) in float: top-1 agreement {step.agreement:.2%} "
                              f"on {self.where}", highlight=False)
            budget = self.fmt.options.get("max_slowdown")
            limit = budget * self.latency_ms(quantize([])) if budget else None
            result = mixed.search([b.layer for b in ordered], quantize, self.agreement, aim, on_step=said,
                                  fits=(lambda blob: self.latency_ms(blob) <= limit) if limit else None)
            result.benefits = ordered
            if result.over_budget is not None:
                console.print(f"    {result.over_budget:>2} layer(s) in float: past the {budget:g}× latency budget "
                              f"({limit:.3f} ms); the search stops", highlight=False)
            if in_order and result.kept_out:
                result = self._or_prefix(result, in_order, quantize, aim, limit)
            # chosen against the goal (and the budget); met or not against the target
            result.target, result.goal, result.budget = target, aim, budget
        result.where = self.where
        return result

    def _or_prefix(self, islands: mixed.Mixed, in_order, quantize, aim: float,
                   limit_ms: Optional[float] = None) -> mixed.Mixed:
        console.print(f"    a float prefix instead: the first k of {len(in_order)} layers in model order …",
                      highlight=False)
        pre = mixed.prefix(in_order, quantize, self.agreement, aim,
                           on_step=lambda s: console.print(f"    first {s.kept_out:>2} in float: top-1 agreement "
                                                           f"{s.agreement:.2%} on {self.where}", highlight=False))
        ms = {"islands": self.latency_ms(islands.blob), "prefix": self.latency_ms(pre.blob)}
        pick = mixed.islands_or_prefix(islands, pre, ms, len(in_order), limit_ms)
        other = pre if pick is islands else islands
        pick.compared = {"p50_ms": {k: round(v, 4) for k, v in ms.items()}, "other": {
            "how": other.how, "kept_out": len(other.kept_out), "search_agreement": round(other.agreement, 6),
            "reached_goal": other.met, "steps": [s.to_dict() for s in other.steps]}}
        if pick is pre:
            pre.benefits = islands.benefits
        console.print(f"    kept: {pick.how} ({len(pick.kept_out)} layers, {pick.agreement:.2%}, {ms[pick.how]:.3f} ms)"
                      f" over {other.how} ({len(other.kept_out)} layers, {other.agreement:.2%}, "
                      f"{ms[other.how]:.3f} ms)", highlight=False)
        return pick

    def choose(self, quantizers: Dict[str, Any]) -> tuple:
        """(the name of the quantize function whose artifact with no layer in float agrees more, less output error
        on a tie; {name: agreement})."""
        blobs = {name: make([]) for name, make in quantizers.items()}
        scores = {name: (self.agreement(blob), -self.error(blob)) for name, blob in blobs.items()}
        chosen = max(scores, key=lambda n: scores[n])
        return chosen, {n: a for n, (a, _) in scores.items()}


def _with_metadata(blob: bytes, ctx: ExportContext) -> bytes:
    from edgekit.convert.tflite_metadata import with_metadata
    return with_metadata(blob, ctx, [])


def _search(fmt: Format, ctx: ExportContext, errors, quantizers: Dict[str, Any], graph, quiet, head=()):
    """quantizers: activation ranges (min/max, percentile) → its quantize function. The one whose artifact
    agrees more with no layer in float (less output error on a tie) is searched from (Judge.search_mixed)."""
    with Judge(fmt, ctx, quiet) as judge:
        chosen, scores = judge.choose(quantizers)
        console.print("    activation ranges: " + ", ".join(f"{n} {a:.2%}" for n, a in scores.items())
                      + f" on {judge.where} with no layer in float: {chosen}", highlight=False)
        order = {t: i for i, t in enumerate(graph.writer)}   # the ops' order in the model
        result = judge.search_mixed(errors, quantizers[chosen],
                                    lambda n: sum(graph.macs.get(o, 0) for o in [n] + graph.readers.get(n, [])),
                                    already_float=head,
                                    in_order=sorted(errors, key=lambda e: order.get(e.name, len(order))))
        result.ranges = {"chosen": chosen, "agreement_without_float_layers": scores}
        return result
