"""Every step of tflite-int8-mixed's search (k layers kept in float) judged on the whole test split of a CIFAR-10 run:
top-1 agreement with the Keras model and the runtime's p50 at 1 thread, batch 1 (issue 28, RESULTS.md).

Usage: EDGE_CIFAR10=... .venv/bin/python scripts/mixed_curve.py RUN_DIR OUT_DIR
The search is run with an unreachable target, so that it tries every layer it may; each candidate is kept.
"""
import os, sys, json, time, numpy as np
os.environ["TF_USE_LEGACY_KERAS"] = "1"
from pathlib import Path
run, out = Path(sys.argv[1]), Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
from edgekit.convert import mixed, export_tflite
blobs = []
orig = mixed.search
def search(ranked, quantize, agreement, target, max_kept=None, on_step=None):
    def q(names):
        b = quantize(names); blobs.append((len(names), b)); return b
    return orig(ranked, q, agreement, 1.01, max_kept, on_step)
import edgekit.convert.mixed as mm
mm.search = search
from edgekit.convert.run import ConvertConfig, convert
rep = convert(ConvertConfig(run, formats="tflite-int8-mixed", val_samples=200, out=out / "export"))
ctx_meta = json.loads((out / "export" / "manifest.json").read_text())
from edgekit.train.data import load_dataset
from edgekit_runtime import Classifier
d = load_dataset(os.environ["EDGE_CIFAR10"], (32, 32))
x = d.test.x[:]
import tf_keras as keras
from edgekit.train.pipeline import predict_images
from edgekit_runtime import PreprocessSpec
spec = PreprocessSpec.load(run / "preprocess.json")
kp = predict_images(keras.models.load_model(run / "model.keras", compile=False), x, spec, 256).argmax(1)
labels = (run / "labels.txt").read_text().split()
for k, b in blobs:
    f = out / f"k{k}.tflite"
    f.write_bytes(export_tflite.embed_metadata(b, {"labels": labels, "preprocess": spec.to_dict()}))
    clf = Classifier.load(f, verify=False, threads=1)
    p = np.concatenate([clf.predict(x[i:i+500], batch_size=500) for i in range(0, len(x), 500)]).argmax(1)
    one = x[:1]
    for _ in range(20): clf.predict(one)
    ts = []
    for _ in range(300):
        t = time.perf_counter(); clf.predict(one); ts.append(time.perf_counter() - t)
    print(f"k={k:2d} agreement {np.mean(p == kp):.4f} p50 {np.median(ts) * 1e3:.3f} ms", flush=True)
