"""Quantization-aware fine-tuning that fake-quantizes what TFLite will run (issue 28, a prototype for ResNet-8-like
models: Conv2D [+ BatchNorm] [+ ReLU], Add [+ ReLU], GlobalAveragePooling2D, Dropout, Dense).

tflite-qat (tensorflow_model_optimization) agrees 93 % with ResNet-8 before it trains at all (scripts/qat_probe.py).
Here the graph is the one the converter makes: BatchNorm folded into each kernel, the folded kernel rounded per
output channel on TFLite's symmetric int8 grid (Dense: per tensor), an 8-bit fake quantization wherever TFLite
quantizes a tensor (the input, each conv/add after its fused ReLU, the pooled features, the logits) with the
calibration images' min/max, straight-through gradients. It is trained to give the float model's probabilities
(distillation), then written out as a plain Keras model with the rounded kernels, so that the converter's own
rounding finds the same integers. Both models then go through TFLiteConverter (full integer, float I/O, the same
500 calibration images) and the script prints each one's top-1 agreement with the float model on the test set.

Usage: EDGE_CIFAR10=... .venv/bin/python scripts/qat_faithful.py RUN_DIR [EPOCHS=2] [LR=1e-4] [OUT=RUN_DIR/qat-faithful]
"""
import os
import sys
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

from stock_int8 import images, int8_agreement  # noqa: E402

run = sys.argv[1]
epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 2
lr = float(sys.argv[3]) if len(sys.argv) > 3 else 1e-4
out_dir = sys.argv[4] if len(sys.argv) > 4 else f"{run}/qat-faithful"
source = keras.models.load_model(f"{run}/model.keras", compile=False)
x_train, x_test, x_cal = images(run)


class AQ(keras.layers.Layer):
    """8-bit fake quantization of a tensor on a fixed [lo, hi] (TFLite's calibrated min/max), off until enabled."""

    def build(self, shape):
        self.lo = self.add_weight("lo", (), initializer="zeros", trainable=False)
        self.hi = self.add_weight("hi", (), initializer="ones", trainable=False)
        self.on = self.add_weight("on", (), initializer="zeros", trainable=False)

    def call(self, x):
        q = tf.quantization.fake_quant_with_min_max_vars(x, self.lo, self.hi, num_bits=8)
        return x + self.on * (q - x)


def fq_weights(w, axes):
    """Symmetric int8 rounding per channel (the axes reduced), straight-through."""
    s = tf.reduce_max(tf.abs(w), axis=axes, keepdims=True) / 127.0
    s = tf.where(s > 0, s, tf.ones_like(s))
    q = tf.clip_by_value(tf.round(w / s), -127.0, 127.0) * s
    return w + tf.stop_gradient(q - w)


class FQConv(keras.layers.Layer):
    def __init__(self, kernel, bias, strides, padding, **kw):
        super().__init__(**kw)
        self.k0, self.b0, self.strides, self.padding = kernel, bias, strides, padding.upper()

    def build(self, shape):
        self.kernel = self.add_weight("kernel", self.k0.shape, initializer=keras.initializers.Constant(self.k0))
        self.bias = self.add_weight("bias", self.b0.shape, initializer=keras.initializers.Constant(self.b0))

    def call(self, x):
        return tf.nn.conv2d(x, fq_weights(self.kernel, (0, 1, 2)), (1, *self.strides, 1), self.padding) + self.bias


class FQDense(keras.layers.Layer):
    def __init__(self, kernel, bias, **kw):
        super().__init__(**kw)
        self.k0, self.b0 = kernel, bias

    def build(self, shape):
        self.kernel = self.add_weight("kernel", self.k0.shape, initializer=keras.initializers.Constant(self.k0))
        self.bias = self.add_weight("bias", self.b0.shape, initializer=keras.initializers.Constant(self.b0))

    def call(self, x):
        return tf.matmul(x, fq_weights(self.kernel, None)) + self.bias


def consumers(layer):
    return [n.outbound_layer for n in layer._outbound_nodes]


def folded(conv):
    """(kernel, bias, the layer whose output this conv's output stands for) with a following BatchNorm folded."""
    k = conv.kernel.numpy()
    b = conv.bias.numpy() if conv.use_bias else np.zeros(k.shape[-1], np.float32)
    after = consumers(conv)
    if len(after) == 1 and isinstance(after[0], keras.layers.BatchNormalization):
        bn = after[0]
        g = bn.gamma.numpy() if bn.scale else 1.0
        beta = bn.beta.numpy() if bn.center else 0.0
        f = g / np.sqrt(bn.moving_variance.numpy() + bn.epsilon)
        return (k * f).astype(np.float32), ((b - bn.moving_mean.numpy()) * f + beta).astype(np.float32), bn
    return k, b, conv


def build(plain: bool, weights=None):
    """The source rebuilt as TFLite runs it: with AQ and fake-quantized kernels (plain=False), or as plain Keras
    layers carrying `weights` (name -> (kernel, bias)) for the converter."""
    t = {}
    aqs = []

    def aq(x, name):
        if plain:
            return x
        layer = AQ(name=f"aq_{name}")
        aqs.append(layer)
        return layer(x)

    def fused_relu(layer):
        after = consumers(layer)
        return after[0] if len(after) == 1 and isinstance(after[0], keras.layers.ReLU) else None

    inp = keras.Input(source.input_shape[1:], name="image")
    for layer in source.layers:
        srcs = layer._inbound_nodes[0].inbound_layers if layer._inbound_nodes else []
        srcs = srcs if isinstance(srcs, list) else [srcs]
        if isinstance(layer, (keras.layers.ReLU, keras.layers.BatchNormalization)):
            if t.get(layer.name) is None and not any(t.get(c.name) is not None for c in consumers(layer)):
                raise SystemExit(f"{layer.name}: a {type(layer).__name__} this prototype cannot place")
            continue
        ins = [t[s.name] for s in srcs]
        if isinstance(layer, keras.layers.InputLayer):
            t[layer.name] = aq(inp, "input")
        elif isinstance(layer, keras.layers.Conv2D):
            k, b, stands_for = folded(layer)
            if plain:
                k, b = weights[layer.name]
                y = keras.layers.Conv2D(k.shape[-1], k.shape[:2], strides=layer.strides, padding=layer.padding,
                                        name=layer.name)
                out = y(ins[0])
                y.set_weights([k, b])
            else:
                out = FQConv(k, b, layer.strides, layer.padding, name=layer.name)(ins[0])
            relu = fused_relu(stands_for)
            if relu is not None:
                t[relu.name] = aq(keras.layers.ReLU(name=relu.name)(out), layer.name)
            t[stands_for.name] = aq(out, layer.name) if relu is None else None
        elif isinstance(layer, keras.layers.Add):
            out = keras.layers.Add(name=layer.name)(ins)
            relu = fused_relu(layer)
            if relu is not None:
                t[relu.name] = aq(keras.layers.ReLU(name=relu.name)(out), layer.name)
            else:
                t[layer.name] = aq(out, layer.name)
        elif isinstance(layer, keras.layers.GlobalAveragePooling2D):
            t[layer.name] = aq(keras.layers.GlobalAveragePooling2D(name=layer.name)(ins[0]), layer.name)
        elif isinstance(layer, keras.layers.Dropout):
            t[layer.name] = ins[0]
        elif isinstance(layer, keras.layers.Dense):
            k, b = (weights[layer.name] if plain else (layer.kernel.numpy(), layer.bias.numpy()))
            if plain:
                d = keras.layers.Dense(k.shape[-1], name=layer.name)
                logits = d(ins[0])
                d.set_weights([k, b])
            else:
                logits = aq(FQDense(k, b, name=layer.name)(ins[0]), layer.name)
            t[layer.name] = keras.layers.Softmax(name="probabilities")(logits)
        else:
            raise SystemExit(f"{layer.name}: {type(layer).__name__} is not in this prototype")
    return keras.Model(inp, t[source.layers[-1].name]), aqs


teacher_train = source.predict(x_train, batch_size=512, verbose=0)
teacher_test = source.predict(x_test, batch_size=512, verbose=0).argmax(1)
qat, aqs = build(plain=False)
tap = keras.Model(qat.input, [a.input for a in aqs])
seen = tap.predict(x_cal, batch_size=250, verbose=0)
for a, v in zip(aqs, seen):
    a.lo.assign(min(float(v.min()), 0.0))
    a.hi.assign(max(float(v.max()), 0.0))
    a.on.assign(1.0)
print(f"{len(aqs)} quantized tensors; fake-quantized model agrees {np.mean(qat.predict(x_test, batch_size=512, verbose=0).argmax(1) == teacher_test):.2%} "
      "with the float model before training", flush=True)
qat.compile(keras.optimizers.Adam(lr), keras.losses.CategoricalCrossentropy())
t0 = time.perf_counter()
qat.fit(x_train, teacher_train, batch_size=128, epochs=epochs, shuffle=True, verbose=2)
print(f"trained {epochs} epoch(s) at lr {lr} in {time.perf_counter() - t0:.0f} s; fake-quantized model agrees "
      f"{np.mean(qat.predict(x_test, batch_size=512, verbose=0).argmax(1) == teacher_test):.2%}", flush=True)

weights = {}
for layer in qat.layers:
    if isinstance(layer, FQConv):
        weights[layer.name] = (fq_weights(layer.kernel, (0, 1, 2)).numpy(), layer.bias.numpy())
    elif isinstance(layer, FQDense):
        weights[layer.name] = (fq_weights(layer.kernel, None).numpy(), layer.bias.numpy())
plain, _ = build(plain=True, weights=weights)


base, _ = int8_agreement(source, x_cal, x_test, teacher_test)
tuned, blob = int8_agreement(plain, x_cal, x_test, teacher_test)
print(f"TFLiteConverter int8 (float I/O), top-1 agreement with the float model on {len(x_test):,} test images: "
      f"the source {base:.2%}, after this QAT {tuned:.2%}", flush=True)
os.makedirs(out_dir, exist_ok=True)
plain.save(f"{out_dir}/model.keras")
open(f"{out_dir}/model_int8.tflite", "wb").write(blob)
print(f"wrote {out_dir}/model.keras (the rounded kernels, for `edge convert`)")
