"""Empirical bias correction for TFLite's int8 weights, applied to the Keras model before conversion.

TFLite folds each BatchNormalization into the convolution before it and rounds the folded kernel to
int8 per output channel (scale = max|w| / 127). The rounding errors of a channel do not average out
when the inputs are far from zero-mean (MobileNetV2's depthwise layers on smooth, upscaled images
are the known case), so every output of that channel moves by the same amount: a bias. We measure
that bias on the calibration images, E[op(x, Q(W) - W)] per output channel with x the layer's float
input, and subtract it from the layer's bias (or from the BatchNormalization's beta, which is where
it lands after folding). This is Nagel et al. 2019's empirical bias correction; the ONNX exporter
applies the same idea to its graph.

With rounding "gptq" the kernels are first rounded by GPTQ (rounding.py) and written back to the layers, and the
shift measured is what GPTQ's rounding leaves. The change is temporary: `corrected_weights(measure(model, images))`
restores the original weights on exit, so the model the artifacts are validated against is the one that was trained.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Dict, Iterator, Optional

import numpy as np
import tensorflow as tf
import tf_keras as keras

from edgekit.convert import rounding
from edgekit.convert.rounding import fake_quant


@dataclass
class Target:
    layer: keras.layers.Layer
    bn: Optional[keras.layers.BatchNormalization]  # folded into the layer by the converter
    kernel: np.ndarray                              # float kernel as the converter quantizes it (BN folded)
    error: np.ndarray                               # Q(kernel) - kernel
    factor: Any = 1.0                               # the BatchNorm scale folded in (per output channel), or 1
    rounded: Optional[np.ndarray] = None            # GPTQ: the layer's own (unfolded) kernel to convert, on the grid


def _kind(layer) -> Optional[str]:
    name = type(layer).__name__
    return name if name in ("Conv2D", "DepthwiseConv2D", "Dense") else None


def _single_consumer(layer):
    """The one layer this layer feeds (a layer called twice feeds the same consumer twice), else None."""
    consumers = {id(n.layer): n.layer for n in getattr(layer, "_outbound_nodes", [])}
    return next(iter(consumers.values())) if len(consumers) == 1 else None


def _is_linear(layer) -> bool:
    return getattr(layer, "activation", None) in (None, keras.activations.linear)


def _folding_bn(layer):
    """The BatchNormalization the converter folds into this layer: its only consumer, on the channel axis."""
    if not _is_linear(layer):
        return None
    bn = _single_consumer(layer)
    if isinstance(bn, keras.layers.BatchNormalization) and bn.center and list(np.atleast_1d(bn.axis)) in ([-1], [3], [1]):
        return bn
    return None


def _target(layer) -> Optional[Target]:
    kind = _kind(layer)
    if kind is None or not layer.built:
        return None
    if kind != "Dense" and getattr(layer, "groups", 1) != 1:
        return None
    bn = _folding_bn(layer)
    if bn is None and not getattr(layer, "use_bias", False):
        return None  # nowhere to put a correction without changing the architecture
    kernel = np.asarray(_kernel(layer), np.float64)
    factor: Any = 1.0
    if bn is not None:
        gamma = np.asarray(bn.gamma, np.float64) if bn.scale else 1.0
        factor = gamma / np.sqrt(np.asarray(bn.moving_variance, np.float64) + bn.epsilon)
        factor = factor.reshape(kernel.shape[2:]) if kind == "DepthwiseConv2D" else factor
        kernel = kernel * factor
    return Target(layer, bn, kernel, fake_quant(kernel, kind) - kernel, factor)


def _kernel(layer):
    return layer.depthwise_kernel if _kind(layer) == "DepthwiseConv2D" else layer.kernel


def _targets(model) -> Dict[int, tuple]:
    """{id(model): (model, targets, nested models)} for the model and every functional model nested in it."""
    plan: Dict[int, tuple] = {}

    def visit(m):
        if id(m) in plan or not getattr(m, "_is_graph_network", False):
            return
        found, nested = [], []
        for layer in m.layers:
            # A layer (or nested model) called more than once, as flip-TTA's two passes through one ResNet, is
            # measured on its first call: the images as given (the other sees their mirror images).
            if isinstance(layer, keras.Model):
                if getattr(layer, "_is_graph_network", False) and len(layer._inbound_nodes) >= 1:
                    nested.append(layer)
                    visit(layer)
            elif len(getattr(layer, "_inbound_nodes", [])) >= 1:
                t = _target(layer)
                if t is not None:
                    found.append(t)
        plan[id(m)] = (m, found, nested)

    visit(model)
    return plan


def _apply_error(t: Target, x: tf.Tensor) -> np.ndarray:
    """Per output channel, summed over the batch: the mean over positions of op(x, Q(W) - W)."""
    layer, err = t.layer, tf.constant(t.error, x.dtype)
    kind = _kind(layer)
    if kind == "Dense":
        y = tf.tensordot(x, err, axes=1)
    else:
        strides = (1, *layer.strides, 1)
        padding = layer.padding.upper()
        if kind == "DepthwiseConv2D":
            y = tf.nn.depthwise_conv2d(x, err, strides, padding, dilations=layer.dilation_rate)
        else:
            y = tf.nn.conv2d(x, err, strides, padding, dilations=layer.dilation_rate)
    axes = list(range(1, len(y.shape) - 1))
    y = tf.reduce_mean(y, axis=axes) if axes else y
    return tf.reduce_sum(tf.cast(y, tf.float64), axis=0).numpy()


def _each_input(model, plan, batches, fn) -> int:
    """fn(target, its float input) for every target of every batch, nested models included; the image count."""
    probes = {}
    for key, (m, found, nested) in plan.items():
        # a nested model's .input is its own InputLayer; the tensor the outer graph feeds it is on its node
        wanted = [t.layer.get_input_at(0) for t in found] + [n._inbound_nodes[0].input_tensors for n in nested]
        probes[key] = keras.Model(m.inputs, wanted) if wanted else None

    def run(m, x):
        key = id(m)
        _, found, nested = plan[key]
        if probes[key] is None:
            return
        outs = probes[key](x, training=False)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        for t, inp in zip(found, outs[:len(found)]):
            fn(t, inp)
        for n, inp in zip(nested, outs[len(found):]):
            run(n, inp)

    count = 0
    for batch in _iterate(batches):
        run(model, tf.convert_to_tensor(batch))
        count += len(batch)
    return count


def _iterate(batches):
    """A fresh pass over `batches`: a sequence, or a function returning an iterator (see measure)."""
    return batches() if callable(batches) else batches


def _round_gptq(plan, model, batches) -> int:
    """Each target's error and new kernel from GPTQ rounding (rounding.py) instead of rounding to nearest."""
    h: Dict[int, np.ndarray] = {}

    def add(t, inp):
        kind = _kind(t.layer)
        if rounding.supported(kind, t.layer):
            part = rounding.hessian_part(kind, t.layer, inp)
            h[id(t.layer)] = h[id(t.layer)] + part if id(t.layer) in h else part

    def first_images():
        seen = 0
        for batch in _iterate(batches):
            if seen >= rounding.IMAGES:
                return
            batch = batch[:rounding.IMAGES - seen]
            seen += len(batch)
            yield batch
    _each_input(model, plan, first_images, add)
    done = 0
    for _, found, _ in plan.values():
        for t in found:
            q = rounding.gptq(t.kernel, _kind(t.layer), h[id(t.layer)]) if id(t.layer) in h else None
            if q is not None:
                t.error, t.rounded = q - t.kernel, q / t.factor
                done += 1
    return done


def measure(model, batches, rounding: str = "nearest") -> Dict[int, tuple]:
    """{id(layer): (Target, shift)} with shift the mean output error per channel over the images. `batches`: a
    sequence of image batches, or a function returning a fresh iterator of them (GPTQ reads them twice).
    rounding "gptq": the kernels are rounded by GPTQ (Target.rounded) and the shift is what remains."""
    plan = _targets(model)
    if rounding == "gptq":
        if not callable(batches):
            batches = list(batches)   # read twice: a generator would be empty the second time
        _round_gptq(plan, model, batches)
    sums: Dict[int, np.ndarray] = {}

    def add(t, inp):
        sums[id(t.layer)] = sums.get(id(t.layer), 0.0) + _apply_error(t, tf.cast(inp, tf.float64))
    count = _each_input(model, plan, batches, add)
    if count == 0:
        return {}
    targets = {id(t.layer): t for _, found, _ in plan.values() for t in found}
    return {k: (targets[k], s / count) for k, s in sums.items()}


@contextlib.contextmanager
def corrected_weights(shifts: Dict[int, tuple]) -> Iterator[int]:
    """Within the block the model's biases carry the `measure`d correction (and its kernels GPTQ's rounding, where
    measured so); yields how many layers."""
    saved = []
    try:
        for t, shift in shifts.values():
            var = t.bn.beta if t.bn is not None else t.layer.bias
            old = var.numpy()
            saved.append((var, old))
            var.assign((old.astype(np.float64) - shift.reshape(old.shape)).astype(old.dtype))
            if t.rounded is not None:
                kernel = _kernel(t.layer)
                saved.append((kernel, kernel.numpy()))
                kernel.assign(t.rounded.astype(kernel.dtype.as_numpy_dtype))
        yield len(saved)
    finally:
        for var, old in saved:
            var.assign(old)
