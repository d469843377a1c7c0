"""GPTQ rounding of int8 weights: each layer's kernel rounded one input at a time, the error of each rounding
pushed onto the inputs not yet rounded, so that the layer's output on the calibration images moves least.

Rounding every weight to its nearest int8 step (what TFLite does) is the best choice for each weight alone, not for
the layer: the errors add up in the output. GPTQ (Frantar et al. 2022, after Optimal Brain Quantization) minimises
|| (Q - W) X ||² over the layer's float inputs X with H = X Xᵀ, in closed form, seconds per model. The steps stay
TFLite's own (scale = max|w| / 127 per output channel): the largest weight of each channel is kept exactly on
±127 and never moved, so TFLite's converter, rounding the new kernel to nearest, finds these integers again.
ResNet-8 (the 2026-12-06 demo run), int8 weights alone: 99.46 % top-1 agreement with the float model on the
10,000 test images rounded to nearest, 99.82 % with GPTQ (session 17, RESULTS.md).
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import tensorflow as tf

QMAX = 127.0       # TFLite's symmetric int8 weights: -127..127
DAMP = 0.01        # of the mean diagonal of H, added to it: GPTQ's usual damping, so that H⁻¹ exists
PATCH_VALUES = 16_000_000   # patch values per extract_patches call (64 MB): a few images of a wide layer, many of a small one
IMAGES = 512       # calibration images H is summed over, at most (the default calibration is 500; ResNet-8 from 256:
                   # 99.76 % weights-only agreement, from 500: 99.84 %); a larger --calib-samples does not cost more here


def symmetric_fake_quant(w: np.ndarray, reduce: Optional[Tuple[int, ...]], qmax: float) -> np.ndarray:
    """Symmetric integer rounding back in float: scale = max|w| / qmax over the `reduce` axes (None: the whole
    tensor, per-tensor), values rounded and clipped to -qmax..qmax. TFLite and ONNX Runtime both round so."""
    scale = np.abs(w).max(axis=reduce, keepdims=True) / qmax
    scale = np.where(scale > 0, scale, 1.0)
    return np.clip(np.round(w / scale), -qmax, qmax) * scale


def fake_quant(kernel: np.ndarray, kind: str) -> np.ndarray:
    """TFLite's per-output-channel symmetric int8 rounding of a kernel, back in float."""
    if kind == "DepthwiseConv2D":   # (kh, kw, C, M): TFLite's output channel is C*M
        return symmetric_fake_quant(kernel, (0, 1), QMAX)
    # Conv2D (kh, kw, Cin, Cout) and Dense (in, out): one scale per last-axis channel
    return symmetric_fake_quant(kernel, tuple(range(kernel.ndim - 1)), QMAX)


def hessian_part(kind: str, layer, x: tf.Tensor) -> np.ndarray:
    """Σ patch patchᵀ over `x`, the layer's float input (a batch): (d, d) for Conv2D/Dense, (C, k, k) for depthwise,
    in float64. A patch is what one output position multiplies with the kernel, in the kernel's own order. Products
    in float32 (TensorFlow's threaded matmul), a chunk of images at a time, summed in float64."""
    x = tf.cast(x, tf.float32)
    if kind == "Dense":
        p = tf.reshape(x, (-1, x.shape[-1]))
        return tf.matmul(p, p, transpose_a=True).numpy().astype(np.float64)
    kh, kw = layer.kernel_size
    per_image = int(np.prod(x.shape[1:3])) * kh * kw * int(x.shape[-1])
    chunk = max(1, PATCH_VALUES // max(per_image, 1))
    total = None
    for i in range(0, int(x.shape[0]), chunk):
        p = tf.image.extract_patches(x[i:i + chunk], [1, kh, kw, 1], [1, *layer.strides, 1],
                                     [1, *layer.dilation_rate, 1], layer.padding.upper())
        if kind == "DepthwiseConv2D":
            c = int(x.shape[-1])
            p = tf.transpose(tf.reshape(p, (-1, kh * kw, c)), (2, 0, 1))      # (C, positions, k)
        else:
            p = tf.reshape(p, (-1, p.shape[-1]))
        h = tf.matmul(p, p, transpose_a=True).numpy().astype(np.float64)
        total = h if total is None else total + h
    return total


def supported(kind: str, layer) -> bool:
    return kind == "Dense" or getattr(layer, "data_format", "channels_last") == "channels_last"


def _damped_inverse_factor(h: np.ndarray) -> np.ndarray:
    """The upper Cholesky factor of (H + damping)⁻¹, for one H (d, d) or a stack (C, k, k)."""
    h = np.array(h, np.float64)
    d = h.shape[-1]
    diag = np.diagonal(h, axis1=-2, axis2=-1)
    dead = diag <= 0   # an input that is always 0: its weight is free, any rounding is exact
    h = h + np.where(dead, 1.0, 0.0)[..., None] * np.eye(d)
    h = h + DAMP * np.maximum(diag.mean(-1), 1e-12)[..., None, None] * np.eye(d)
    inv = np.linalg.inv(h)
    return np.swapaxes(np.linalg.cholesky(inv), -1, -2)


def _solve(w: np.ndarray, u: np.ndarray) -> np.ndarray:
    """w (rows, d), u (rows, d, d) or (d, d): the rows rounded input by input, errors passed on through u."""
    w = w.copy()
    rows, d = w.shape
    scale = np.abs(w).max(1) / QMAX
    scale = np.where(scale > 0, scale, 1.0)
    frozen = np.zeros_like(w, bool)   # each row's largest weight: exactly ±127 steps, it fixes TFLite's scale
    frozen[np.arange(rows), np.abs(w).argmax(1)] = True
    u = np.broadcast_to(u, (rows, d, d)) if u.ndim == 2 else u
    q = np.zeros_like(w)
    for i in range(d):
        q[:, i] = np.clip(np.round(w[:, i] / scale), -QMAX, QMAX) * scale
        err = (w[:, i] - q[:, i]) / u[:, i, i]
        w[:, i + 1:] -= err[:, None] * u[:, i, i + 1:] * ~frozen[:, i + 1:]
    return q


def gptq(kernel: np.ndarray, kind: str, h: np.ndarray) -> Optional[np.ndarray]:
    """The kernel (BatchNorm folded, as TFLite quantizes it) on TFLite's int8 grid, rounded by GPTQ with `h` from
    hessian_part; None where the result would not keep TFLite's per-channel scales (then round to nearest)."""
    if kind == "DepthwiseConv2D":   # (kh, kw, C, M): output channel c*M + m reads input channel c
        kh, kw, c, m = kernel.shape
        w = kernel.reshape(kh * kw, c * m).T
        u = _damped_inverse_factor(h)[np.arange(c * m) // m]
        q = _solve(w, u).T.reshape(kernel.shape)
    else:                           # Conv2D (kh, kw, Cin, Cout) or Dense (in, out): rows are output channels
        w = kernel.reshape(-1, kernel.shape[-1]).T
        q = _solve(w, _damped_inverse_factor(h)).T.reshape(kernel.shape)
    if not np.all(np.isfinite(q)) or np.abs(fake_quant(q, kind) - q).max() > 1e-6 * max(np.abs(q).max(), 1e-30):
        return None
    return q
