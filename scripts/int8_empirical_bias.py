"""Empirical bias correction of a full-integer TFLite artifact (issue 28, a prototype): each int8 layer's int32
bias is moved, layer after layer in model order, by the mean error its output still has against the float artifact
on calibration images — the error of int8 activations *and* weights as the int8 model really runs, which the
Keras-side bias correction (weights only, float inputs) does not see. Where the float output is never negative
(a fused ReLU) the mean is taken where it is positive, the pre-activation error there.

Prints the top-1 agreement with the float artifact on the test set before and after, and writes the corrected
artifact beside the export as model_tflite-int8-ebc.tflite (or -mixed-ebc).

Usage: EDGE_CIFAR10=... .venv/bin/python scripts/int8_empirical_bias.py EXPORT_DIR [FORMAT=tflite-int8] [IMAGES=500]
"""
import os
import sys
import time

import numpy as np

from ai_edge_litert.interpreter import Interpreter
from tensorflow.lite.tools import flatbuffer_utils

from edgekit.train.data import load_dataset
from edgekit_runtime import Classifier, PreprocessSpec

export = sys.argv[1]
fmt = sys.argv[2] if len(sys.argv) > 2 else "tflite-int8"
n_cal = int(sys.argv[3]) if len(sys.argv) > 3 else 500
spec = PreprocessSpec.load(f"{export}/preprocess.json")
data = load_dataset(os.environ["EDGE_CIFAR10"], (spec.height, spec.width))
rng = np.random.default_rng(7)
cal_idx = np.sort(rng.choice(len(data.train.y), n_cal, replace=False))
cal_px = np.asarray(data.train.x[cal_idx])
test_px = np.asarray(data.test.x[np.arange(len(data.test.y))])
float_path, int8_path = f"{export}/model_tflite-fp32.tflite", f"{export}/model_{fmt}.tflite"
clf8 = Classifier.load(int8_path, verify=False)
WEIGHTED = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"}


def model_input(clf, px):
    return clf._to_model_dtype(clf.preprocess(list(px)))


def run_all(blob_or_path, x, names=None, batch=100):
    """{tensor name: values over x} for `names` (dequantized), and the output."""
    kw = {"model_content": blob_or_path} if isinstance(blob_or_path, (bytes, bytearray)) else {"model_path": blob_or_path}
    if names is not None:   # XNNPACK keeps a delegated graph's intermediate tensors to itself: builtin kernels here
        from ai_edge_litert.interpreter import OpResolverType
        kw["experimental_op_resolver_type"] = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    it = Interpreter(**kw, experimental_preserve_all_tensors=names is not None, num_threads=2)
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    it.resize_tensor_input(inp["index"], (batch,) + x.shape[1:])
    it.allocate_tensors()
    details = {t["name"]: t for t in it.get_tensor_details()}
    got = {n: [] for n in (names or [])}
    outs = []
    for i in range(0, len(x), batch):
        b = x[i:i + batch]
        if len(b) < batch:
            b = np.concatenate([b, np.repeat(b[-1:], batch - len(b), 0)])
        it.set_tensor(inp["index"], b)
        it.invoke()
        keep = min(batch, len(x) - i)
        o = it.get_tensor(out["index"])[:keep].astype(np.float32)
        if out["quantization"][0]:
            o = (o - out["quantization"][1]) * out["quantization"][0]
        outs.append(o)
        for n in got:
            t = details[n]
            v = it.get_tensor(t["index"])[:keep].astype(np.float32)
            s, z = t["quantization"]
            got[n].append((v - z) * s if s else v)
    return {n: np.concatenate(v) for n, v in got.items()}, np.concatenate(outs)


blob = bytearray(open(int8_path, "rb").read())
model = flatbuffer_utils.read_model_from_bytearray(blob)
sg = model.subgraphs[0]
opcodes = model.operatorCodes


def op_name(op):
    code = opcodes[op.opcodeIndex]
    from tensorflow.lite.python import schema_py_generated as s
    b = max(code.builtinCode, code.deprecatedBuiltinCode)
    return {v: k for k, v in vars(s.BuiltinOperator).items() if not k.startswith("_")}[b]


def tname(i):
    n = sg.tensors[i].name
    return n.decode() if isinstance(n, bytes) else n


layers = [(op, tname(op.outputs[0])) for op in sg.operators if op_name(op) in WEIGHTED and len(op.inputs) > 2
          and op.inputs[2] >= 0 and sg.tensors[op.inputs[2]].type == 2]   # int32 bias
float_cal = model_input(Classifier.load(float_path, verify=False), cal_px)
x8_cal, x8_test = model_input(clf8, cal_px), model_input(clf8, test_px)
ref, _ = run_all(float_path, float_cal, [n for _, n in layers])
_, float_test = run_all(float_path, model_input(Classifier.load(float_path, verify=False), test_px))
_, before = run_all(bytes(blob), x8_test)
print(f"{fmt}: {len(layers)} layers with int32 biases; agreement with tflite-fp32 on {len(test_px):,} test images "
      f"before: {np.mean(before.argmax(1) == float_test.argmax(1)):.2%}", flush=True)
t0 = time.perf_counter()
for op, name in layers:
    got, _ = run_all(bytes(flatbuffer_utils.convert_object_to_bytearray(model)), x8_cal, [name])
    f, q = ref[name], got[name]
    axes = tuple(range(f.ndim - 1))
    if f.min() >= 0:   # a fused ReLU: the pre-activation error where the float output is positive
        mask = f > 0
        err = np.where(mask, q - f, 0).sum(axes) / np.maximum(mask.sum(axes), 1)
    else:
        err = (q - f).mean(axes)
    spread = f.std(axes) + 1e-12
    print(f"  {name[:60]:60s} mean error {np.mean(np.abs(err) / spread):.4f}, rmse {np.mean(np.sqrt(((q - f) ** 2).mean(axes)) / spread):.4f} of the spread", flush=True)
    bias = sg.tensors[op.inputs[2]]
    scales = np.asarray(bias.quantization.scale, np.float64)
    buf = model.buffers[bias.buffer]
    b = np.frombuffer(bytes(bytearray(buf.data)), np.int32).astype(np.int64)
    b -= np.round(err / scales).astype(np.int64)
    buf.data = np.clip(b, -2**31, 2**31 - 1).astype(np.int32).tobytes()
corrected = bytes(flatbuffer_utils.convert_object_to_bytearray(model))
_, after = run_all(corrected, x8_test)
print(f"after empirical bias correction ({time.perf_counter() - t0:.0f} s, {n_cal} calibration images): "
      f"{np.mean(after.argmax(1) == float_test.argmax(1)):.2%}", flush=True)
out = f"{export}/model_{fmt}-ebc.tflite"
open(out + ".tmp", "wb").write(corrected)
os.replace(out + ".tmp", out)
print(f"wrote {out}")
