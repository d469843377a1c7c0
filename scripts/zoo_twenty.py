"""Issue 29's check for every TFLite artifact of the zoo: `edge convert` of each zoo model to the default formats on
tests/test_zoo.py's kind of photos, then each artifact run by edgekit_runtime on the same 20 images as the test,
its top-1 compared with ONNX Runtime on the source. Prints one line per model and format.

Usage: .venv/bin/python scripts/zoo_twenty.py [MODEL ...]   (default: every model in tests/fixtures/zoo; writes OUT
or /tmp/zoo_twenty/NAME)
"""
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from testdata import write_folder  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

import test_zoo as tz  # noqa: E402
from edgekit.cli import app  # noqa: E402
from edgekit_runtime import Classifier  # noqa: E402

out_root = Path(os.environ.get("OUT", "/tmp/zoo_twenty"))
photos = out_root / "photos" / "data"
if not photos.exists():
    write_folder(photos, per_class_train=40, per_class_test=30, seed=1)   # test_zoo.py's `photos`
names = sys.argv[1:] or [getattr(m, "values", [m])[0] for m in tz.MODELS]
for name in names:
    out = out_root / name
    result = CliRunner().invoke(app, ["convert", str(tz.ZOO / f"{name}.onnx"), "--labels", str(tz.ZOO / "labels.txt"),
                                      *tz.TORCH_PREPROCESS, "--data", str(photos), "--out", str(out)])
    rows = {e["format"]: e for e in json.loads((out / "manifest.json").read_text())["artifacts"]}
    files = tz._twenty(photos)
    truth = tz._ort(tz.ZOO / f"{name}.onnx", Classifier.load(out, format="onnx-fp32").preprocess(files)).argmax(1)
    for fmt, row in rows.items():
        if row["status"] == "failed":
            print(f"{name:16s} {fmt:16s} ❌ {row['error'][:100]}")
            continue
        top1 = Classifier.load(out, format=fmt).predict(files).argmax(1)
        chosen = (row.get("activation_ranges") or {}).get("chosen", "")
        print(f"{name:16s} {fmt:16s} {row['symbol']} val agreement {row['parity']['top1_agreement']:.1%}  "
              f"20 images top-1 = ORT: {int((top1 == truth).sum())}/20  {chosen}", flush=True)
