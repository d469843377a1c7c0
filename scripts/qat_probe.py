"""Where tflite-qat loses agreement (issue 28): `edge convert`'s distilled QAT on a copy of a run, with a chosen
learning rate and epoch count, BatchNorm frozen (inference mode) or not, beside tflite-int8; prints each one's top-1
agreement with Keras on the test set. A learning rate of 1e-12 shows what tensorflow_model_optimization's quantized
graph gives before any training.

Usage: EDGE_CIFAR10=... .venv/bin/python scripts/qat_probe.py RUN_COPY LR EPOCHS freeze|train
  writes RUN_COPY/export-qat-LR-EPOCHS-freeze|train/ (use a copy: the run's own export/ is left alone)
"""
import os, sys, time
os.environ["TF_USE_LEGACY_KERAS"] = "1"
from pathlib import Path
import tf_keras as keras
import edgekit.convert.export_tflite as et
from edgekit.convert.config import ConvertConfig
from edgekit.convert.run import convert

run, lr, epochs, freeze = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "freeze"
orig = et.qat_model
def patched(fmt, ctx):
    if freeze:
        for layer in ctx.model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
    return orig(fmt, ctx)
et.qat_model = patched
t = time.perf_counter()
rep = convert(ConvertConfig(Path(run), formats="tflite-qat,tflite-int8", qat_epochs=epochs, qat_lr=lr, val_samples=10000,
                            out=Path(run) / f"export-qat-{lr}-{epochs}-{sys.argv[4]}"))
for e in rep.entries:
    p = e.get("parity") or {}
    print(f"{e['format']}: agreement {p.get('top1_agreement')}, top-1 {p.get('accuracy')}, {time.perf_counter() - t:.0f} s", flush=True)
