"""An experiment for issue 28's next design: TFLite int8 with activation ranges from a percentile of the float
activations instead of their min/max (the calibrated model's ranges edited before the MLIR quantizer runs), judged
by top-1 agreement with Keras on the first 3,000 CIFAR-10 test images. Ranges from 200 calibration images.

Usage: EDGE_CIFAR10=... .venv/bin/python scripts/int8_percentile.py MODEL.keras SCALE OFFSET PERCENTILE...
  e.g. scripts/int8_percentile.py /tmp/hardcase/model.keras 0.00784313725490196 -1 99.99 99.9
"""
import os, sys, numpy as np
os.environ["TF_USE_LEGACY_KERAS"] = "1"
from pathlib import Path
import tensorflow as tf, tf_keras as keras
from tensorflow.lite.python import convert as tc
from tensorflow.lite.tools import flatbuffer_utils as fu
from edgekit.convert import layer_error, export_tflite
from edgekit.train.data import load_dataset
from edgekit_runtime import Classifier, PreprocessSpec
from edgekit.convert.calibration import Images
model_path, scale, offset = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
pct = [float(p) for p in sys.argv[4:]]
m = keras.models.load_model(model_path, compile=False)
d = load_dataset(os.environ["EDGE_CIFAR10"], (32, 32))
spec = PreprocessSpec(32, 32, (scale,)*3, (offset,)*3)
rng = np.random.default_rng(0)
cal = Images(d.train.x[np.sort(rng.choice(len(d.train.y), 500, replace=False))], None, spec, "train")
c = tf.lite.TFLiteConverter.from_keras_model(m); c.optimizations = [tf.lite.Optimize.DEFAULT]; c.representative_dataset = cal.representative
dbg = layer_error.debugger(c, cal.representative)
# float activations of every op output, from the debug model's float ops
it = dbg._quant_interpreter
verify = dbg._get_numeric_verify_tensor_details()
pairs = []
for det in verify:
    op = it._get_op_details(dbg._defining_op[det["index"]]); q_idx, f_idx = op["inputs"]
    pairs.append((dbg._get_operand_name_and_index(det["name"])[0], f_idx))
vals = {n: [] for n, _ in pairs}
first = True
for i, x in enumerate(cal.representative()):
    if i >= 200: break
    dbg._set_input_tensors(it, x, first); first = False; it.invoke()
    for n, f in pairs: vals[n].append(it.get_tensor(f).ravel().copy())
vals = {n: np.concatenate(v) for n, v in vals.items()}
x = d.test.x[:3000]
from edgekit.train.pipeline import predict_images
kp = predict_images(m, x, spec, 256)
meta = {"labels": d.class_names, "preprocess": spec.to_dict()}
def judge(blob, tag):
    f = Path("/tmp/q28/pctdir"); f.mkdir(exist_ok=True); f = f / "m.tflite"
    f.write_bytes(export_tflite.embed_metadata(blob, meta))
    clf = Classifier.load(f, verify=False)
    p = np.concatenate([clf.predict(x[i:i+500], batch_size=500) for i in range(0, len(x), 500)])
    print(tag, "agreement", np.mean(p.argmax(1) == kp.argmax(1)), "top1", np.mean(p.argmax(1) == d.test.y[:3000]), flush=True)
judge(tc.mlir_quantize(dbg.calibrated_model, input_data_type=tf.uint8, output_data_type=tf.uint8), "minmax")
for q in pct:
    mo = fu.read_model_from_bytearray(bytearray(dbg.calibrated_model))
    g = mo.subgraphs[0]; changed = 0
    for t in g.tensors:
        name = t.name.decode() if isinstance(t.name, bytes) else t.name
        if name in vals and t.quantization is not None and t.quantization.min is not None and len(t.quantization.min):
            lo, hi = np.percentile(vals[name], [100 - q, q])
            t.quantization.min = [float(min(lo, 0.0))]; t.quantization.max = [float(max(hi, 0.0))]; changed += 1
    blob = bytes(fu.convert_object_to_bytearray(mo))
    judge(tc.mlir_quantize(blob, input_data_type=tf.uint8, output_data_type=tf.uint8), f"pct {q} ({changed} ranges)")
