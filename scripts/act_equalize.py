"""Activation equalization before int8 (issue 28, a prototype that measures a design): per-channel activation scales,
which TFLite's int8 kernels do not have, emulated by rescaling channels in the float model.

TFLite quantizes each activation tensor with one scale, so a channel whose values span a tenth of the tensor's range
gets a tenth of the 256 levels. Where a channel passes only through positively homogeneous ops (ReLU, Add,
GlobalAveragePooling, Dropout) from the layers that write it (Conv2D, BatchNormalization) to the layers that read it
(Conv2D, Dense), its values can be multiplied by s_c (the writers' output channel c) and the readers' input
channel c divided by s_c: the float model computes the same function, int8 sees equal ranges. Channels tied by an
Add (a residual stream) share one s. s_c = (max range / range of c) ** ALPHA, at most SMAX (ALPHA=1: every channel
as wide as the widest; 0.5 splits the range between activations and the readers' weights, as cross-layer
equalization does for weights).

For each ALPHA the script prints the float model's agreement with the source (must be 100 %) and the top-1
agreement with the source on the test set of TFLiteConverter's full-integer model (float I/O, 500 calibration
images), and writes the equalized model for `edge convert`.

Usage: EDGE_CIFAR10=... .venv/bin/python scripts/act_equalize.py RUN_DIR OUT_DIR [ALPHA,ALPHA…=0,0.5,1] [SMAX=16]
"""
import os
import sys
from collections import defaultdict

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
import numpy as np  # noqa: E402
import tf_keras as keras  # noqa: E402

from stock_int8 import images, int8_agreement  # noqa: E402

run, out_dir = sys.argv[1], sys.argv[2]
alphas = [float(a) for a in (sys.argv[3] if len(sys.argv) > 3 else "0,0.5,1").split(",")]
smax = float(sys.argv[4]) if len(sys.argv) > 4 else 16.0
source = keras.models.load_model(f"{run}/model.keras", compile=False)
x_train, x_test, x_cal = images(run)
reference = source.predict(x_test, batch_size=512, verbose=0)


def inbound(layer):
    srcs = layer._inbound_nodes[0].inbound_layers if layer._inbound_nodes else []
    return srcs if isinstance(srcs, list) else [srcs]


def groups(model):
    """Channel groups: {root: (tensor names, writers, readers)} for the groups that can be rescaled."""
    parent = {}

    def find(a):
        parent.setdefault(a, a)
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    def union(a, b):
        parent[find(a)] = find(b)

    writers, readers, bad = defaultdict(list), defaultdict(list), set()
    consumers = defaultdict(list)
    for layer in model.layers:
        for s in inbound(layer):
            consumers[s.name].append(layer)
    for layer in model.layers:
        srcs = inbound(layer)
        find(layer.name)
        if isinstance(layer, keras.layers.InputLayer):
            bad.add(layer.name)
        elif isinstance(layer, keras.layers.Conv2D) and type(layer) is keras.layers.Conv2D and layer.groups == 1 \
                and layer.activation in (keras.activations.linear, keras.activations.relu):
            readers[srcs[0].name].append(layer)
            after = consumers[layer.name]
            if len(after) == 1 and isinstance(after[0], keras.layers.BatchNormalization):
                bad.add(layer.name)   # folded into the BatchNorm's output, which is what int8 sees
            else:
                writers[layer.name].append(layer)
        elif isinstance(layer, keras.layers.BatchNormalization) and layer.scale and layer.center:
            writers[layer.name].append(layer)
        elif isinstance(layer, keras.layers.ReLU) and layer.max_value is None and not layer.negative_slope \
                and not layer.threshold:
            union(layer.name, srcs[0].name)
        elif isinstance(layer, (keras.layers.Add, keras.layers.GlobalAveragePooling2D, keras.layers.Dropout)):
            for s in srcs:
                union(layer.name, s.name)
        elif isinstance(layer, keras.layers.Dense) and len(layer.input_shape) == 2:
            readers[srcs[0].name].append(layer)
            bad.add(layer.name)
        else:
            bad.update([layer.name] + [s.name for s in srcs])
    bad.add(model.layers[-1].name)
    out = defaultdict(lambda: ([], [], []))
    for name in parent:
        root = find(name)
        out[root][0].append(name)
        out[root][1].extend(writers[name])
        out[root][2].extend(readers[name])
    roots_bad = {find(b) for b in bad}
    return {r: g for r, g in out.items() if r not in roots_bad and g[1] and g[2]}


def equalized(alpha):
    model = keras.models.clone_model(source)
    model.set_weights(source.get_weights())
    found = groups(model)
    names = sorted({n for g in found.values() for n in g[0]})
    tap = keras.Model(model.input, [model.get_layer(n).output for n in names])
    seen = dict(zip(names, tap.predict(x_cal, batch_size=250, verbose=0)))
    for root, (tensors, writers, readers) in found.items():
        spread = None
        for n in tensors:
            v = seen[n]
            per = np.abs(v).reshape(-1, v.shape[-1]).max(0)
            per = per / max(per.max(), 1e-12)
            spread = per if spread is None else np.maximum(spread, per)
        s = np.clip((1.0 / np.maximum(spread, 1e-12)) ** alpha, 1.0, smax).astype(np.float32)
        for w in writers:
            if isinstance(w, keras.layers.BatchNormalization):
                w.gamma.assign(w.gamma * s)
                w.beta.assign(w.beta * s)
            else:
                w.kernel.assign(w.kernel * s)
                if w.use_bias:
                    w.bias.assign(w.bias * s)
        for r in readers:
            k = r.kernel.numpy()
            r.kernel.assign(k / (s[:, None] if k.ndim == 2 else s[None, None, :, None]))
        print(f"  group {root} ({len(s)} channels; {', '.join(tensors)}): s from {s.min():.2f} to {s.max():.2f}",
              flush=True)
    return model


os.makedirs(out_dir, exist_ok=True)
for alpha in alphas:
    print(f"ALPHA {alpha}:", flush=True)
    model = equalized(alpha)
    probs = model.predict(x_test, batch_size=512, verbose=0)
    same = np.mean(probs.argmax(1) == reference.argmax(1))
    print(f"  float: agreement {same:.2%}, largest probability difference {np.abs(probs - reference).max():.2e}; "
          f"TFLiteConverter int8: top-1 agreement {int8_agreement(model, x_cal, x_test, reference.argmax(1))[0]:.2%} "
          f"on {len(x_test):,} test images",
          flush=True)
    model.save(f"{out_dir}/model-alpha{alpha}.keras")
