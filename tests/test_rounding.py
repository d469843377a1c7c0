"""GPTQ weight rounding: on TFLite's own int8 grid (the converter finds the same integers), closer to the float
layer's output than rounding to nearest, and carried into the int8 artifact."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from edgekit.convert import FORMATS, rounding
from edgekit.convert.bias_correction import fake_quant, measure
from edgekit.convert.calibration import Images
from edgekit.convert.context import ExportContext
from edgekit.convert.export import export_format
from edgekit_runtime import PreprocessSpec

pytestmark = pytest.mark.tf  # builds and converts models with TensorFlow


def _layer(kind, channels=5, multiplier=1):
    keras.utils.set_random_seed(3)
    if kind == "Conv2D":
        layer = keras.layers.Conv2D(channels, 3, strides=2, padding="same")
    elif kind == "DepthwiseConv2D":
        layer = keras.layers.DepthwiseConv2D(3, padding="valid", depth_multiplier=multiplier)
    else:
        layer = keras.layers.Dense(channels)
    layer.build((None, 9, 9, 4) if kind != "Dense" else (None, 12))
    return layer


def _inputs(kind, n, seed):
    rng = np.random.default_rng(seed)
    shape = (n, 9, 9, 4) if kind != "Dense" else (n, 12)
    # correlated, far from zero-mean inputs, like a ReLU network's: where rounding errors add up
    base = rng.uniform(0, 1, shape[:-1] + (1,))
    return (base + 0.3 * rng.uniform(0, 1, shape)).astype(np.float32)


def _output(layer, kernel, x):
    kind = type(layer).__name__
    x = tf.constant(x, tf.float64)
    if kind == "Dense":
        return tf.tensordot(x, kernel, 1).numpy()
    if kind == "DepthwiseConv2D":
        return tf.nn.depthwise_conv2d(x, kernel, (1, 1, 1, 1), "VALID").numpy()
    return tf.nn.conv2d(x, kernel, (1, *layer.strides, 1), "SAME").numpy()


@pytest.mark.parametrize("kind,multiplier", [("Conv2D", 1), ("DepthwiseConv2D", 1), ("DepthwiseConv2D", 2), ("Dense", 1)])
def test_gptq_keeps_tflites_grid_and_moves_the_output_less_than_nearest(kind, multiplier):
    layer = _layer(kind, multiplier=multiplier)
    kernel = np.asarray(layer.depthwise_kernel if kind == "DepthwiseConv2D" else layer.kernel, np.float64)
    x = _inputs(kind, 64, seed=0)
    q = rounding.gptq(kernel, kind, rounding.hessian_part(kind, layer, tf.constant(x)))
    assert q is not None
    # the converter rounds q to nearest with scales from q itself: the same values, so the same integers
    np.testing.assert_allclose(fake_quant(q, kind), q, rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.abs(q).max(axis=(0, 1) if kind == "DepthwiseConv2D" else tuple(range(q.ndim - 1))),
                               np.abs(kernel).max(axis=(0, 1) if kind == "DepthwiseConv2D" else tuple(range(q.ndim - 1))))
    nearest = fake_quant(kernel, kind)
    assert not np.array_equal(q, nearest)   # it did round differently
    exact = _output(layer, kernel, x)
    err = lambda k, xs, ref: float(np.mean((_output(layer, k, xs) - ref) ** 2))  # noqa: E731
    assert err(q, x, exact) < 0.7 * err(nearest, x, exact)
    held_out = _inputs(kind, 64, seed=1)   # images it was not solved on, from the same distribution
    assert err(q, held_out, _output(layer, kernel, held_out)) < err(nearest, held_out, _output(layer, kernel, held_out))


def test_an_input_that_is_always_zero_does_not_break_the_solve():
    layer = _layer("Dense")
    kernel = np.asarray(layer.kernel, np.float64)
    x = _inputs("Dense", 40, seed=0)
    x[:, 3] = 0
    q = rounding.gptq(kernel, "Dense", rounding.hessian_part("Dense", layer, tf.constant(x)))
    assert q is not None and np.all(np.isfinite(q))


def _model():
    keras.utils.set_random_seed(7)
    inp = keras.Input((10, 10, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="conv")(inp)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    m = keras.Model(inp, keras.layers.Dense(3, activation="softmax", name="head")(x))
    m.get_layer("bn").set_weights([np.linspace(0.5, 2, 8), np.linspace(-0.3, 0.3, 8), np.linspace(-0.2, 0.2, 8),
                                   np.linspace(0.3, 2.0, 8)])
    return m


def test_the_int8_artifact_holds_gptqs_integers_and_the_model_is_left_alone(tmp_path):
    from ai_edge_litert.interpreter import Interpreter
    m = _model()
    spec = PreprocessSpec(10, 10, scale=(1 / 255,) * 3)
    pixels = np.random.default_rng(0).integers(40, 256, (48, 10, 10, 3)).astype(np.uint8)
    before = [w.copy() for w in m.get_weights()]
    ctx = ExportContext(m, ["a", "b", "c"], spec, calibration=Images(pixels, None, spec, "train"))
    result = export_format(FORMATS["tflite-int8"], ctx, tmp_path)
    assert result.ok, result.error
    assert "GPTQ weight rounding on 2 layer(s)" in result.notes
    for a, b in zip(before, m.get_weights()):
        np.testing.assert_array_equal(a, b)
    # what the converter was given: GPTQ's kernel, BatchNorm folded, on the grid; the artifact's int8 conv kernel
    shifts = measure(m, [spec.normalize(p.astype(np.float32))[None] for p in pixels], "gptq")
    conv = next(t for t, _ in shifts.values() if t.layer.name == "conv")
    scale = np.abs(conv.kernel).max(axis=(0, 1, 2)) / 127
    want = np.round((conv.kernel + conv.error) / scale).astype(np.int64)            # (3, 3, 3, 8)
    it = Interpreter(str(result.path))
    kernels = [it.get_tensor(t["index"]) for t in it.get_tensor_details()
               if t["dtype"] == np.int8 and tuple(t["shape"]) == (8, 3, 3, 3)]
    assert len(kernels) == 1
    got = np.transpose(kernels[0], (1, 2, 3, 0)).astype(np.int64)                  # TFLite: (out, kh, kw, in)
    nearest = np.round(conv.kernel / scale).astype(np.int64)
    assert np.array_equal(got, want) and not np.array_equal(got, nearest)


def test_gptq_reads_a_generator_of_batches_twice():
    m = _model()
    x = np.random.default_rng(1).uniform(0.2, 1, (24, 10, 10, 3)).astype(np.float32)
    from_list = measure(m, [x[:12], x[12:]], "gptq")
    from_generator = measure(m, (b for b in (x[:12], x[12:])), "gptq")
    assert len(from_generator) == len(from_list) == 2
    for (a, sa), (b, sb) in zip(from_list.values(), from_generator.values()):
        np.testing.assert_array_equal(a.rounded, b.rounded)
        np.testing.assert_allclose(sa, sb)
