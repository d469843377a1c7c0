"""tflite-int8-mixed on the PyTorch zoo models (issue 28/29): edge convert to onnx-fp32, tflite-int8 and
tflite-int8-mixed on tests/test_zoo.py's kind of photos, then the 20 images compared with ONNX Runtime on the source.
Usage: .venv/bin/python scripts/zoo_mixed.py effnet_dyn mobilenetv3_dyn   (writes /tmp/q28/zoo_NAME)
"""
import sys, json, numpy as np
sys.path.insert(0, "tests")
from pathlib import Path
from testdata import write_folder
from typer.testing import CliRunner
from edgekit.cli import app
from edgekit_runtime import Classifier
import test_zoo as tz
photos = Path("/tmp/q28/zoo_photos/data")
if not photos.exists():
    write_folder(photos, per_class_train=40, per_class_test=30, seed=1)
for name in sys.argv[1:]:
    out = Path(f"/tmp/q28/zoo_{name}")
    r = CliRunner().invoke(app, ["convert", str(tz.ZOO / f"{name}.onnx"), "--labels", str(tz.ZOO / "labels.txt"), *tz.TORCH_PREPROCESS,
                                 "--data", str(photos), "--out", str(out), "--formats", "onnx-fp32,tflite-int8,tflite-int8-mixed"])
    rows = {e["format"]: e for e in json.loads((out / "manifest.json").read_text())["artifacts"]}
    files = tz._twenty(photos)
    truth = tz._ort(tz.ZOO / f"{name}.onnx", Classifier.load(out, format="onnx-fp32").preprocess(files)).argmax(1)
    for f in ("tflite-int8", "tflite-int8-mixed"):
        p = Classifier.load(out, format=f).predict(files).argmax(1)
        e = rows[f]
        print(name, f, e["status"], "val agreement", e["parity"]["top1_agreement"], "20-image top-1 equal", int((p == truth).sum()), "/20",
              "kept", len((e.get("mixed") or {}).get("kept_out", [])))
