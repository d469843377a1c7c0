"""The zoo table of RESULTS.md (issue 29): every default format of each zoo model, converted by `edge convert` from an
empty onnx2tf cache, as a Markdown table (model, parameters, formats ✅/❎/❌, convert seconds per format, fp32
max |Δp| against ONNX Runtime on the source, int8 top-1 agreement).

    .venv/bin/python scripts/zoo_results.py [--big DIR]   # DIR holds effnet_b0_224.onnx (scripts/zoo_convert_time.sh)

The small models are converted with a labelled folder of the tests' synthetic images (120 per class for
calibration, 40 per class for validation), the big one with DIR/photos (200 unlabelled images) when it exists.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
ZOO = ROOT / "tests" / "fixtures" / "zoo"
MEAN_STD = ["--mean", "0.485", "0.456", "0.406", "--std", "0.229", "0.224", "0.225"]
SHORT = {"tflite-fp32": "fp32", "tflite-fp16": "fp16", "tflite-dynamic": "dyn", "tflite-int8": "int8",
         "tflite-int16x8": "16x8", "onnx-fp32": "onnx", "onnx-int8": "onnx-int8"}


def parameters(path: Path) -> int:
    import numpy as np
    model = onnx.load(str(path))
    return int(sum(np.prod(t.dims) for t in model.graph.initializer if len(t.dims) > 0))


def convert(model: Path, labels: Path, data: Path, out: Path, cache: Path) -> dict:
    proc = subprocess.run([str(ROOT / ".venv" / "bin" / "edge"), "convert", str(model), "--labels", str(labels),
                           *MEAN_STD, "--data", str(data), "--out", str(out)], capture_output=True, text=True,
                          env={**os.environ, "EDGE_CACHE_DIR": str(cache)})
    if not (out / "manifest.json").is_file():
        raise SystemExit(f"{model.name}: edge convert failed\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return json.loads((out / "manifest.json").read_text())


def row(name: str, params: int, manifest: dict) -> str:
    arts = {a["format"]: a for a in manifest["artifacts"]}
    marks = " ".join(f"{SHORT[f]} {a['symbol']}" for f, a in arts.items())
    secs = " / ".join(f"{a['convert_seconds']:.0f}" for a in arts.values())
    fp32 = max(arts[f]["parity"]["max_abs_diff"] for f in ("tflite-fp32", "onnx-fp32") if arts[f].get("parity"))
    agree = ", ".join(f"{SHORT[f]} {arts[f]['parity']['top1_agreement']:.1%}" for f in ("tflite-int8", "onnx-int8")
                      if arts[f].get("parity"))
    failed = "; ".join(f"{SHORT[f]}: {a['error']}" for f, a in arts.items() if a["status"] == "failed")
    return f"| {name} | {params / 1e6:.2f} M | {marks} | {secs} | {fp32:.1e} | {agree} | {failed} |"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--big", type=Path)
    args = ap.parse_args()
    from testdata import write_folder
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = write_folder(tmp / "data", per_class_train=120, per_class_test=40, seed=1)
        lines = ["| model | params | formats (✅ passed · ❎ outside tolerance · ❌ failed) | convert s per format "
                 "(same order) | fp32 max \\|Δp\\| vs ORT | int8 top-1 agreement | ❌ reasons |",
                 "|---|---|---|---|---|---|---|"]
        models = [(p.stem, p, ZOO / "labels.txt", data) for p in sorted(ZOO.glob("*.onnx"))]
        if args.big and (args.big / "effnet_b0_224.onnx").is_file():
            models.append(("effnet_b0_224 (dyn)", args.big / "effnet_b0_224.onnx",
                           args.big / "effnet_b0_224.labels.txt", args.big / "photos"))
        for name, path, labels, images in models:
            manifest = convert(path, labels, images, tmp / f"export-{path.stem}", tmp / f"cache-{path.stem}")
            lines.append(row(name, parameters(path), manifest))
            print(lines[-1], file=sys.stderr, flush=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
