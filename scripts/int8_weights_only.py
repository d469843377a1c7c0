"""int8 weights alone, in Keras (issue 28): every kernel the converter quantizes set to its int8 value (BatchNorm
folded, per output channel, as TFLite rounds it), rounded to nearest or by GPTQ (convert/rounding.py), with and
without bias correction's shift; activations stay float. Prints the top-1 agreement with the float model on the
CIFAR-10 test set: what int8 weights alone cost, before any activation is quantized.

Usage: EDGE_CIFAR10=... .venv/bin/python scripts/int8_weights_only.py RUN_DIR [CALIBRATION_IMAGES=500] [dw|nodw]
  dw / nodw: only the depthwise layers quantized / every layer but the depthwise ones
"""
import os
import sys
import time

import numpy as np

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
import tf_keras as keras  # noqa: E402

from edgekit.convert import bias_correction as bc  # noqa: E402
from edgekit.convert.calibration import Images  # noqa: E402
from edgekit.train.data import load_dataset  # noqa: E402
from edgekit.train.pipeline import predict_images  # noqa: E402
from edgekit_runtime import PreprocessSpec  # noqa: E402

run = sys.argv[1]
ncal = int(sys.argv[2]) if len(sys.argv) > 2 else 500
only = sys.argv[3] if len(sys.argv) > 3 else None
model = keras.models.load_model(f"{run}/model.keras", compile=False)
spec = PreprocessSpec.load(f"{run}/preprocess.json")
data = load_dataset(os.environ["EDGE_CIFAR10"], (spec.height, spec.width))
x, y = data.test.x, data.test.y
float_probs = predict_images(model, x, spec, 256)
print(f"float top-1 {np.mean(float_probs.argmax(1) == y):.2%} on {len(y):,} test images", flush=True)
rng = np.random.default_rng(0)
calibration = Images(data.train.x[np.sort(rng.choice(len(data.train.y), ncal, replace=False))], None, spec, "train")
for rounding in ("nearest", "gptq"):
    t0 = time.perf_counter()
    shifts = bc.measure(model, lambda: calibration.batches(32), rounding)
    seconds = time.perf_counter() - t0
    for with_shift in (False, True):
        saved = []
        for t, shift in shifts.values():
            if only and (bc._kind(t.layer) == "DepthwiseConv2D") != (only == "dw"):
                continue
            kernel = bc._kernel(t.layer)
            saved.append((kernel, kernel.numpy()))
            kernel.assign(((t.kernel + t.error) / t.factor).astype(np.float32))
            if with_shift:
                var = t.bn.beta if t.bn is not None else t.layer.bias
                saved.append((var, var.numpy()))
                var.assign((var.numpy() - shift.reshape(var.shape)).astype(np.float32))
        probs = predict_images(model, x, spec, 256)
        for var, old in saved:
            var.assign(old)
        print(f"{rounding:7s} {'+ bias shift' if with_shift else '            '} ({seconds:.0f} s, {len(saved)} tensors"
              f"{', ' + only if only else ''}): agreement {np.mean(probs.argmax(1) == float_probs.argmax(1)):.2%}  "
              f"top-1 {np.mean(probs.argmax(1) == y):.2%}  mean sq. prob. diff {np.mean((probs - float_probs) ** 2):.2e}",
              flush=True)
