"""Bias correction for TFLite int8 weights: the measured shift is the real mean output error of the rounded,
BatchNorm-folded kernel; nested models are reached; the model is restored; the artifact embeds the change."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from edgekit.convert import FORMATS
from edgekit.convert.bias_correction import corrected_weights, fake_quant, measure
from edgekit.convert.calibration import Images
from edgekit.convert.context import ExportContext
from edgekit.convert.export import export_format
from edgekit_runtime import Classifier, PreprocessSpec

pytestmark = pytest.mark.tf  # trains, converts or loads models with TensorFlow

SIZE = 12


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(7)
    inp = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(6, 3, padding="same", use_bias=False, name="conv")(inp)
    x = keras.layers.BatchNormalization(name="conv_bn")(x)
    x = keras.layers.ReLU(6.0)(x)
    x = keras.layers.DepthwiseConv2D(3, strides=2, padding="same", use_bias=False, name="dw")(x)
    x = keras.layers.BatchNormalization(name="dw_bn")(x)
    backbone = keras.Model(inp, keras.layers.ReLU(6.0)(x), name="backbone")  # nested, as keras.applications are
    outer_in = keras.Input((SIZE, SIZE, 3))
    y = keras.layers.GlobalAveragePooling2D()(backbone(outer_in))
    m = keras.Model(outer_in, keras.layers.Dense(3, activation="softmax", name="head")(y))
    rng = np.random.default_rng(1)
    for bn in ("conv_bn", "dw_bn"):  # trained-looking statistics, so that folding matters
        layer = backbone.get_layer(bn)
        n = layer.gamma.shape[0]
        layer.set_weights([rng.uniform(0.5, 2, n), rng.normal(0, 0.3, n), rng.normal(0, 0.5, n), rng.uniform(0.2, 3, n)])
    return m


def images(n=48, seed=0):
    # far from zero-mean input, like real pixels in [0, 1]: where rounding errors stop averaging out
    return np.random.default_rng(seed).uniform(0.2, 1.0, (n, SIZE, SIZE, 3)).astype(np.float32)


def test_measured_shift_is_the_mean_error_of_the_folded_rounded_kernel(model):
    x = images()
    shifts = measure(model, [x[:20], x[20:]])
    found = {t.layer.name: (t, s) for t, s in shifts.values()}
    assert set(found) == {"conv", "dw", "head"}  # the nested backbone's layers too
    assert found["conv"][0].bn.name == "conv_bn" and found["dw"][0].bn.name == "dw_bn" and found["head"][0].bn is None
    # first layer, by hand: BN(conv(x, W)) vs conv(x, Q(W_folded)) + folded bias
    t, shift = found["conv"]
    bn = t.bn
    gamma, beta, mean, var = (w.astype(np.float64) for w in bn.get_weights())
    factor = gamma / np.sqrt(var + bn.epsilon)
    w = t.layer.kernel.numpy().astype(np.float64) * factor
    np.testing.assert_allclose(w, t.kernel)
    folded = lambda k, b: tf.nn.conv2d(x.astype(np.float64), k, 1, "SAME").numpy() + b  # noqa: E731
    exact = folded(w, beta - mean * factor).mean(axis=(0, 1, 2))
    rounded = folded(fake_quant(w, "Conv2D"), beta - mean * factor).mean(axis=(0, 1, 2))
    corrected = folded(fake_quant(w, "Conv2D"), beta - shift - mean * factor).mean(axis=(0, 1, 2))
    assert np.abs(rounded - exact).max() > 1e-4  # the error is there
    np.testing.assert_allclose(corrected, exact, atol=1e-9)  # and the correction removes it exactly


def test_fake_quant_is_per_output_channel_symmetric_int8():
    w = np.random.default_rng(0).normal(size=(3, 3, 4, 2))
    q = fake_quant(w, "DepthwiseConv2D")  # TFLite's depthwise output channel is C*M: one scale per (c, m)
    scale = np.abs(w).max(axis=(0, 1)) / 127
    steps = q / scale
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-9)
    assert np.abs(steps).max() == pytest.approx(127)
    assert np.abs(q - w).max() <= scale.max() / 2 + 1e-12


def test_weights_are_restored_even_after_an_error(model):
    before = [w.copy() for w in model.get_weights()]
    shifts = measure(model, [images(8)])
    with pytest.raises(RuntimeError):
        with corrected_weights(shifts) as n:
            assert n == 3
            assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
            raise RuntimeError("conversion failed")
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_int8_export_carries_the_correction_and_leaves_the_model_alone(model, tmp_path):
    spec = PreprocessSpec(SIZE, SIZE, scale=(1 / 255,) * 3)
    pixels = (images(40) * 255).astype(np.uint8)
    before = [w.copy() for w in model.get_weights()]
    ctx = ExportContext(model, ["a", "b", "c"], spec, calibration=Images(pixels, None, spec, "train"))
    (tmp_path / "plain").mkdir()
    (tmp_path / "fixed").mkdir()
    plain = export_format(FORMATS["tflite-int8"].with_options(bias_correction=False), ctx, tmp_path / "plain")
    fixed = export_format(FORMATS["tflite-int8"], ctx, tmp_path / "fixed")
    assert plain.ok and fixed.ok, (plain.error, fixed.error)
    assert "bias correction on 3 layer(s)" in fixed.notes and not any("bias" in n for n in plain.notes)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    # the int32 biases differ, everything else about the two artifacts is the same
    from ai_edge_litert.interpreter import Interpreter
    def biases(path):
        it = Interpreter(str(path))
        return [it.get_tensor(t["index"]) for t in it.get_tensor_details() if t["dtype"] == np.int32 and len(t["shape"]) == 1]
    # the conv layers' int32 biases moved (the head's zero bias gets a tensor of its own once it is corrected)
    b_plain, b_fixed = ([b for b in biases(p) if b.shape == (6,)] for p in (plain.path, fixed.path))
    assert len(b_plain) == len(b_fixed) == 2
    assert all(not np.array_equal(a, b) for a, b in zip(b_plain, b_fixed))
    x = Classifier.load(fixed.path, spec=spec, labels=["a", "b", "c"]).predict(list(pixels[:4]))
    assert x.shape == (4, 3) and np.allclose(x.sum(1), 1, atol=0.05)
