"""Why the TFLite converter refused a model, in its own words first, then advice that is known to fit.

The converter lists every TensorFlow op it could not lower under "TF Select ops:", whether the op has no TFLite
builtin at all (MatrixDeterminant: only TensorFlow's kernel, through the Flex delegate, runs it) or has one that
does not take this form of it (a channels-first DepthwiseConv2dNative, float64 maths). Only the first kind is
helped by SELECT_TF_OPS; for the second, the Flex delegate would run a slow TensorFlow kernel for what should
be a builtin, so the message names the form instead.
"""
from __future__ import annotations

import re
from functools import lru_cache
from typing import Dict, List, Optional

# TensorFlow op names whose TFLite builtin is spelt differently (the rest match once normalised: `_normal`)
ALIASES = {"RealDiv": "DIV", "MatMul": "FULLY_CONNECTED", "ConcatV2": "CONCATENATION", "AvgPool": "AVERAGE_POOL_2D",
           "MaxPool": "MAX_POOL_2D", "Sigmoid": "LOGISTIC", "Conv2DBackpropInput": "TRANSPOSE_CONV",
           "Max": "REDUCE_MAX", "Min": "REDUCE_MIN", "Prod": "REDUCE_PROD", "All": "REDUCE_ALL",
           "Any": "REDUCE_ANY", "Relu6": "RELU6", "LeakyRelu": "LEAKY_RELU", "BiasAdd": "ADD"}
QUOTE_MAX = 300  # characters of each quoted converter line


def _normal(name: str) -> str:
    n = re.sub(r"V\d+$", "", name)
    n = re.sub(r"Native$", "", n)
    return n.replace("_", "").upper()


@lru_cache(maxsize=1)
def _builtins() -> Dict[str, str]:
    """Normalised name → TFLite builtin operator, from the TFLite schema TensorFlow ships."""
    from tensorflow.lite.python import schema_py_generated as schema
    names = [n for n in dir(schema.BuiltinOperator) if n.isupper() and not n.startswith("STABLEHLO_")]
    table = {}
    for n in names:
        table[n.replace("_", "")] = n
        if n.endswith("_2D"):  # MAX_POOL_2D is TensorFlow's MaxPool
            table[n[:-3].replace("_", "")] = n
    return table


def builtin_of(tf_op: str) -> Optional[str]:
    """The TFLite builtin that TensorFlow op `tf_op` lowers to, or None when TFLite has none."""
    if tf_op in ALIASES:
        return ALIASES[tf_op]
    return _builtins().get(_normal(tf_op))


def converter_words(text: str) -> List[str]:
    """The converter's lines that name the op and why: 'TF Select ops: …' / 'Custom ops: …' and the op's
    signature under 'Details:', or else its 'error:' lines, without the source locations MLIR puts before them."""
    lines = [ln.strip() for ln in text.splitlines()]
    said: List[str] = []
    for i, ln in enumerate(lines):
        if ln.startswith(("TF Select ops:", "Custom ops:")):
            said.append(ln)
            if i + 1 < len(lines) and lines[i + 1] == "Details:":
                for detail in lines[i + 2:]:
                    if not detail.startswith("tf."):
                        break
                    said.append(_tidy(detail))
            break
    if not said:
        for ln in lines:
            m = re.search(r"\berror: (.+)$", ln)
            if m and not m.group(1).startswith("failed while converting"):
                said.append(m.group(1).strip())
    seen: List[str] = []
    for s in said:
        if s not in seen:
            seen.append(s)
    return [_clip(s) for s in seen[:4]]


def _tidy(detail: str) -> str:
    return re.sub(r',?\s*device = ""', "", detail).replace("{, ", "{")


def _clip(s: str) -> str:
    return s if len(s) <= QUOTE_MAX else s[:QUOTE_MAX - 1] + "…"


def _form(op: str, details: List[str]) -> str:
    """What about this op's form a TFLite builtin does not take, from its signature in the converter's details."""
    sig = " ".join(d for d in details if d.startswith(f"tf.{op}("))
    if re.search(r'data_format = "NC', sig):
        return "channels-first (data_format NCHW); TFLite's kernels are channels-last"
    if re.search(r"x?f64>", sig):
        return "in float64; TFLite computes in float32"
    if re.search(r"xi64>", sig) and op not in ("Cast",):
        return "on int64 tensors"
    return "in this form (the signature quoted)"


def explain(text: str, fmt_name: str, select_tf_ops: bool, source_kind: str = "keras") -> Optional[str]:
    """One line: the converter's words, then per op what is known to help; None when the text names no op."""
    words = converter_words(text)
    flex = re.search(r"TF Select ops: ([^\n]+)", text)
    custom = re.search(r"Custom ops: ([^\n]+)", text)
    neither = sorted(set(re.findall(r"'tf\.(\w+)' op is neither a custom op nor a flex op", text)))
    if flex:
        ops = [o.strip() for o in flex.group(1).strip().rstrip(",").split(",") if o.strip()]
    elif neither:
        ops = neither
    elif custom:
        ops = [o.strip() for o in custom.group(1).strip().rstrip(",").split(",") if o.strip()]
        return (f"TFLite converter: \"{' | '.join(words)}\". {', '.join(ops)}: neither TFLite builtins nor TF Select "
                "ops; only allow_custom_ops with a custom kernel on the device would run them: replace them in the "
                "model.")
    else:
        return f"TFLite converter: \"{' | '.join(words)}\"." if words else None
    quoted = f"TFLite converter: \"{' | '.join(words)}\"."
    lacking = [o for o in ops if builtin_of(o) is None]
    formed = [o for o in ops if builtin_of(o) is not None]
    advice = []
    for op in formed:
        form = _form(op, words)
        where = (" (onnx2tf made it so from the ONNX model; the onnx-* formats run that model as it is)"
                 if source_kind == "onnx" else "")
        advice.append(f"{op} is a TFLite builtin ({builtin_of(op)}), but not {form}{where}.")
    if lacking:
        names = ", ".join(lacking)
        verb = "is" if len(lacking) == 1 else "are"
        if select_tf_ops and not flex:  # SELECT_TF_OPS was on and TensorFlow's kernels lack them too
            advice.append(f"{names} {verb} neither TFLite builtins nor TF Select ops: replace them in the model.")
        elif select_tf_ops:
            advice.append(f"{names} need{'s' if len(lacking) == 1 else ''} TF Select, which {fmt_name} cannot "
                          "combine with its kernels.")
        else:
            advice.append(f"{names} {verb} not {'a TFLite builtin' if len(lacking) == 1 else 'TFLite builtins'}: "
                          "converter flag SELECT_TF_OPS (edge convert --select-tf-ops) would let TensorFlow's kernel "
                          "run it on the device through the TF Select (Flex) delegate; or replace it in the model.")
    return " ".join([quoted] + advice)
