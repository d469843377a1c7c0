"""Training precision: which Keras dtype policy a run trains under, and the float32 model it saves."""
from __future__ import annotations

import contextlib
from typing import Callable, Optional, Tuple

from edgekit import hardware
from edgekit.errors import EdgeError

PRECISIONS = ("auto", "float32", "bfloat16")
POLICY = {"float32": "float32", "bfloat16": "mixed_bfloat16"}


def bfloat16_units() -> Optional[str]:
    """The CPU's bfloat16 instructions, "AMX" (Sapphire Rapids and later Xeons: tiles) or "AVX-512 BF16" (AMD Zen 4
    and later, Cooper Lake: dot products), or None where bfloat16 would be emulated. EDGE_CPU=avx2 hides both."""
    cpu = hardware.current().cpu
    return "AMX" if cpu.amx else "AVX-512 BF16" if "avx512_bf16" in cpu.flags else None


def choose(value: str, from_scratch: bool, gpus: int = 0) -> Tuple[str, str]:
    """(float32 | bfloat16, why). `auto` takes bfloat16 only where it was measured faster: a from-scratch
    network on a CPU with bfloat16 instructions (ResNet-8 training: 1.3x the images per second on a Xeon with AMX,
    1.7-1.9x on an AMD EPYC Zen 4 with AVX-512 BF16; RESULTS.md "Every CPU")."""
    if value not in PRECISIONS:
        raise EdgeError(f"precision must be one of {', '.join(PRECISIONS)}, not {value!r}.")
    if value == "bfloat16" and not from_scratch:
        raise EdgeError("precision bfloat16 is built for from-scratch presets (resnet8); a pretrained backbone "
                        "trains in float32.")
    if value == "bfloat16" and not gpus:
        setup = hardware.current()
        if setup.onednn is not False and setup.cpu.x86 and not setup.cpu.onednn_bfloat16:
            raise EdgeError(f"precision bfloat16 needs a CPU with AVX-512 or AMX for TensorFlow's oneDNN kernels; this "
                            f"one is {setup.cpu.isa} (its convolutions cannot run bfloat16, and bfloat16 would be no "
                            "faster than float32 here): use precision float32 or auto.")
    if value != "auto":
        return value, "set in the config"
    if not from_scratch:
        return "float32", "pretrained backbones train in float32"
    if gpus:
        return "float32", "auto picks bfloat16 only on CPUs with bfloat16 instructions"
    units = bfloat16_units()
    if units:
        return "bfloat16", f"this CPU has {units} bfloat16 instructions"
    return "float32", "this CPU has no bfloat16 instructions (AMX or AVX-512 BF16)"


@contextlib.contextmanager
def policy(precision: str):
    """Layers built inside take `precision`'s policy (float32 variables, bfloat16 maths for bfloat16)."""
    from tf_keras import mixed_precision
    previous = mixed_precision.global_policy().name
    mixed_precision.set_global_policy(POLICY[precision])
    try:
        yield
    finally:
        mixed_precision.set_global_policy(previous)


def float32_model(model, build: Callable[[], object], precision: str):
    """The model to save and convert: `model` itself in float32, else a float32 build given its weights
    (its variables already are float32; only the maths was bfloat16)."""
    if precision == "float32":
        return model
    with policy("float32"):
        twin = build()
    twin.set_weights(model.get_weights())
    return twin


def describe(precision: str, why: Optional[str]) -> str:
    if precision == "float32":
        return f"precision float32 ({why})"
    return f"precision bfloat16 ({why}): bfloat16 maths, float32 weights; the saved model is float32"
