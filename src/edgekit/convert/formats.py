"""The one table of export formats. Export, validation, the manifest and the benchmarks all read it.

A format is a name, the artifact's file suffix, the runtime engine family that runs it, the converter
options the exporter applies, and the tolerance validation holds the artifact to. Float formats are
judged by how far their probabilities move from the Keras model's (max / mean absolute difference);
quantized formats by how often their top-1 class agrees with Keras and how much accuracy they lose,
since their probabilities are coarse by design.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from edgekit.errors import EdgeError
from edgekit.helpers import did_you_mean
from edgekit.convert.onnx_to_tf import missing

INT8_OPS = "TFLITE_BUILTINS_INT8"
INT16X8_OPS = "EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8"
IO_TYPES = ("uint8", "int8")
DEFAULT_OPSET = 17
DEFAULT_MIN_AGREEMENT = 0.995   # the mixed formats' target: top-1 agreement with the source model


@dataclass(frozen=True)
class Tolerance:
    max_abs: Optional[float] = None            # float formats: largest |p_artifact - p_keras| over all images/classes
    mean_abs: Optional[float] = None           # float formats: mean |p_artifact - p_keras|
    min_agreement: Optional[float] = None      # quantized: share of images whose top-1 class matches Keras
    max_accuracy_drop: Optional[float] = None  # quantized: top-1 accuracy lost against Keras (0.01 = 1 point)

    def to_dict(self) -> Dict[str, float]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass(frozen=True)
class Format:
    name: str
    suffix: str                 # ".tflite" | ".onnx"
    engine: str                 # runtime engine family: "litert" (LiteRT / tflite_runtime) | "onnx" (ONNX Runtime)
    options: Mapping[str, Any]  # what the exporter does; also recorded in the manifest
    tolerance: Tolerance
    default: bool = True        # part of the default set
    summary: str = ""
    sources: Tuple[str, ...] = ("keras", "onnx")  # kinds of source model it can be made from (TFLite from ONNX: onnx2tf)

    def unsupported_reason(self, source_kind: str) -> Optional[str]:
        """Why this format cannot be made from a source of that kind ("keras" or "onnx"; a ❌ row), or None."""
        if source_kind not in self.sources:
            return (f"{self.name} trains the Keras model it is made from; an ONNX source has none: use tflite-int8 "
                    "(calibrated) or onnx-int8.")
        if source_kind == "onnx" and self.suffix == ".tflite":
            why = missing()
            return f"{self.name} from an ONNX model needs {why}." if why else None
        return None

    @property
    def quantized(self) -> bool:
        return self.tolerance.min_agreement is not None

    @property
    def calibrated(self) -> bool:
        """Needs representative images (full-integer and static quantization)."""
        return bool(self.options.get("calibrate"))

    @property
    def file_name(self) -> str:
        return f"model_{self.name}{self.suffix}"

    def with_options(self, **overrides: Any) -> "Format":
        """A copy with run-time choices (--io, --opset) applied to the options this format has."""
        opts = dict(self.options)
        opts.update({k: v for k, v in overrides.items() if k in opts and v is not None})
        return dataclasses.replace(self, options=opts)


FLOAT_EXACT = Tolerance(max_abs=1e-4, mean_abs=1e-5)
# fp16 weights are rounded to 11 significant bits: logits move by up to ~1 % through a deep net, which moves a
# probability near 0.5 by up to ~0.025 (MobileNetV2 fine-tuned on CIFAR-10: max 0.027 on 1,000 images, mean 4e-4,
# 99.6 % top-1 agreement). The max is a tail statistic that grows with the image count, so it only has to catch
# gross errors; the mean carries the judgement.
FLOAT16 = Tolerance(max_abs=5e-2, mean_abs=2e-3)

# bias_correction (tflite-int8, tflite-int16x8): the mean error that rounding the weights to int8 adds to each
# output channel is measured on the calibration images and folded into the biases before conversion
# (convert/bias_correction.py). MobileNetV2 fine-tuned on CIFAR-10: int8 agreement 91.9 % -> 97.7 %.
# rounding "gptq": the weights are rounded by GPTQ (convert/rounding.py) before that, on TFLite's own int8 grid.
FORMATS: Dict[str, Format] = {f.name: f for f in (
    Format("tflite-fp32", ".tflite", "litert", {}, FLOAT_EXACT,
           summary="float32 TFLite, the reference artifact"),
    Format("tflite-fp16", ".tflite", "litert", {"optimize": True, "float16": True}, FLOAT16,
           summary="float16 weights (half the size), float32 compute"),
    Format("tflite-dynamic", ".tflite", "litert", {"optimize": True},
           Tolerance(min_agreement=0.97, max_accuracy_drop=0.02),
           summary="dynamic-range: int8 weights, activations quantized on the fly, float I/O"),
    # diagnose: calibrated through TensorFlow's QuantizationDebugger, which also measures the error each op adds
    # (convert/layer_error.py; the manifest's layer_errors)
    Format("tflite-int8", ".tflite", "litert",
           {"optimize": True, "calibrate": True, "supported_ops": INT8_OPS, "io": "uint8", "bias_correction": True,
            "rounding": "gptq", "diagnose": True},
           Tolerance(min_agreement=0.95, max_accuracy_drop=0.02),
           summary="full integer: int8 kernels, uint8 (or --io int8) input/output, calibrated, bias-corrected"),
    # stock: what TFLiteConverter gives with a representative dataset and nothing else (each tensor's calibrated
    # min/max, weights rounded to nearest, trained biases): the baseline the formats above improve on, for a user
    # to see what bias correction, GPTQ and the range choice buy on their model
    Format("tflite-int8-stock", ".tflite", "litert",
           {"optimize": True, "calibrate": True, "supported_ops": INT8_OPS, "io": "uint8"},
           Tolerance(min_agreement=0.95, max_accuracy_drop=0.02), default=False,
           summary="full integer as TFLiteConverter makes it alone (calibrated min/max, nearest rounding, no bias "
                   "correction): the baseline"),
    # mixed: layers kept in float one at a time (in the order of what each gives back) until the top-1 agreement
    # with the source on the search images (the val split) reaches the tolerance's min_agreement, which
    # --min-agreement sets (convert/export_int8.py, convert/mixed.py)
    Format("tflite-int8-mixed", ".tflite", "litert",
           {"optimize": True, "calibrate": True, "supported_ops": INT8_OPS, "io": "uint8", "bias_correction": True,
            "rounding": "gptq", "diagnose": True, "mixed": True},
           Tolerance(min_agreement=DEFAULT_MIN_AGREEMENT, max_accuracy_drop=0.01), default=False,
           summary="int8 with the layers int8 hurts most kept in float, as few as reach the agreement target "
                   "(--min-agreement), and the head (logits, softmax) in float: uint8 input, float32 output"),
    Format("tflite-int16x8", ".tflite", "litert",
           {"optimize": True, "calibrate": True, "supported_ops": INT16X8_OPS, "bias_correction": True,
            "rounding": "gptq"},
           Tolerance(min_agreement=0.98, max_accuracy_drop=0.01),
           summary="int16 activations, int8 weights, float I/O, calibrated, bias-corrected"),
    Format("tflite-qat", ".tflite", "litert",
           {"qat": True, "optimize": True, "calibrate": True, "supported_ops": INT8_OPS, "io": "uint8"},
           # ResNet-8: 94.6 % agreement after 2 epochs, below PTQ int8's 98.9 %; tfmot's quantized graph gives 93.2 %
           # before any training (lr 1e-12) and 94.7 % with BatchNorm frozen: the loss is in that graph, not the
           # training (scripts/qat_probe.py, RESULTS.md session 18).
           Tolerance(min_agreement=0.90, max_accuracy_drop=0.02), default=False,
           summary="quantization-aware training (tfmot) distilled from the float model's outputs on the "
                   "training split, then full integer", sources=("keras",)),
    Format("onnx-fp32", ".onnx", "onnx", {"opset": DEFAULT_OPSET}, FLOAT_EXACT,
           summary="float32 ONNX (tf2onnx; an ONNX source as it is, with edgekit's metadata)"),
    # reduce_range "gemm": 7-bit weights where ORT runs an int8 GEMM (all but depthwise convs), because its x86
    # AVX2/AVX-512 kernels without VNNI saturate int16 pair sums (VPMADDUBSW) with 8-bit weights (MobileNetV2:
    # -20 pt); bias_correction folds the weights' mean rounding error into the biases (MobileNetV2: -3 pt -> 0).
    # Activation ranges from the 99.99th percentile (ORT's Percentile calibration), not min/max: a few outlying
    # activations (SiLU/hard-swish nets, squeeze-excite) otherwise stretch the int8 step for all the rest (zoo
    # EfficientNet-B0-style: 87.2 % -> 91.7 % top-1 agreement, ResNet-18: 98.7 % -> 100 %, MobileNetV3: 92.9 % both).
    Format("onnx-int8", ".onnx", "onnx",
           {"opset": DEFAULT_OPSET, "calibrate": True, "quant_format": "QDQ", "per_channel": True,
            "activation_type": "QInt8", "weight_type": "QInt8", "reduce_range": "gemm", "bias_correction": True,
            "calibrate_method": "Percentile", "percentile": 99.99},
           Tolerance(min_agreement=0.95, max_accuracy_drop=0.02),
           summary="ONNX Runtime static quantization: QDQ, per-channel int8 (7-bit GEMM weights), "
                   "bias-corrected, calibrated (99.99th percentile ranges)"),
    # mixed: onnx-int8 with layers left out of quantization (nodes_to_exclude) by the same search as
    # tflite-int8-mixed (convert/onnx_mixed.py)
    Format("onnx-int8-mixed", ".onnx", "onnx",
           {"opset": DEFAULT_OPSET, "calibrate": True, "quant_format": "QDQ", "per_channel": True,
            "activation_type": "QInt8", "weight_type": "QInt8", "reduce_range": "gemm", "bias_correction": True,
            "calibrate_method": "Percentile", "percentile": 99.99, "mixed": True},
           Tolerance(min_agreement=DEFAULT_MIN_AGREEMENT, max_accuracy_drop=0.01), default=False,
           summary="onnx-int8 with the layers that cost the most agreement left in float, as few as reach "
                   "--min-agreement, and the head (logits, softmax) in float"),
)}

DEFAULT_FORMATS = tuple(name for name, f in FORMATS.items() if f.default)


def suggest(name: str) -> str:
    return did_you_mean(name, list(FORMATS) + ["all", "default"])


def parse_names(names: Union[None, str, Iterable[str]], known: Iterable[str], default: Iterable[str],
                what: str = "format") -> List[str]:
    """The one reader of format names, for every command that takes them (convert, bench, pack, pi-check):
    'a,b' or a list, 'default' and 'all' expanded (None = default), case and spaces ignored, each name once, in
    order; an unknown name is one sentence with a suggestion. `known` is what the command can take (the formats
    table, or the formats a manifest holds), `default` what it takes when nothing is said."""
    known = list(known)
    default = [n for n in default if n in known]
    raw_names = ["default"] if names is None else names.split(",") if isinstance(names, str) else list(names)
    picked: List[str] = []
    for raw in raw_names:
        name = str(raw).strip().lower()
        if not name:
            continue
        for n in known if name == "all" else default if name == "default" else [name]:
            if n not in known:
                raise EdgeError(f"unknown {what} {str(raw).strip()!r}.{did_you_mean(name, known + ['all', 'default'])}"
                                f" Choose from {', '.join(known)} (or 'default', 'all').")
            if n not in picked:
                picked.append(n)
    if not picked:
        raise EdgeError(f"no {what} given; choose from {', '.join(known)} (or 'default', 'all').")
    return picked


def resolve_formats(names: Union[None, str, Iterable[str]], *, io: Optional[str] = None,
                    opset: Optional[int] = None, min_agreement: Optional[float] = None,
                    keep_float: Sequence[str] = (), max_slowdown: Optional[float] = None) -> List[Format]:
    """Format objects for 'a,b', a list, 'default' or 'all' (None = default), with --io/--opset applied,
    --min-agreement made the mixed formats' target (and their tolerance), --keep-float their layers in float and
    --max-slowdown their search's latency budget."""
    if min_agreement is not None and not 0 < min_agreement <= 1:
        raise EdgeError(f"--min-agreement is a share of images between 0 and 1 (0.995 = 99.5 %), not {min_agreement}.")
    if max_slowdown is not None and not max_slowdown > 1:
        raise EdgeError(f"--max-slowdown is how many times the int8 artifact's latency the mixed one may take, above 1 "
                        f"(1.25 = at most 25 % slower), not {max_slowdown}.")
    if io is not None and io not in IO_TYPES:
        raise EdgeError(f"--io must be one of {', '.join(IO_TYPES)}, not {io!r}.")
    if opset is not None and not 9 <= int(opset) <= 21:
        raise EdgeError(f"--opset {opset} is outside what tf2onnx supports here (9 to 21); 17 is a safe choice.")
    picked = parse_names(names, FORMATS, DEFAULT_FORMATS)
    out = [FORMATS[n].with_options(io=io, opset=opset) for n in picked]
    out = [dataclasses.replace(f, tolerance=dataclasses.replace(f.tolerance, min_agreement=min_agreement))
           if min_agreement is not None and f.options.get("mixed") else f for f in out]
    keep = [n.strip() for name in keep_float for n in name.split(",") if n.strip()]
    asked = {"keep_float": keep, "max_slowdown": max_slowdown}
    asked = {k: v for k, v in asked.items() if v}
    if not asked:
        return out
    if not any(f.options.get("mixed") for f in out):
        flag = "--keep-float names layers" if keep else "--max-slowdown bounds the search"
        raise EdgeError(f"{flag} for the mixed formats; add tflite-int8-mixed or onnx-int8-mixed to --formats.")
    return [dataclasses.replace(f, options={**f.options, **asked}) if f.options.get("mixed") else f for f in out]
