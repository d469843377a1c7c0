"""The runtime's own tests import their helpers (images.py) from this folder; `tiny_export` is a real export
directory (as `edge convert` writes one) built from data/ for each test that tampers with it."""
import hashlib
import json
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

DATA = Path(__file__).resolve().parent / "data"
EXPORT_FORMATS = {"tflite-int8": "model_tflite-int8.tflite", "tflite-fp32": "model_tflite-fp32.tflite",
                  "onnx-fp32": "model_onnx-fp32.onnx"}


def write_manifest(export: Path, entries) -> None:
    (export / "manifest.json").write_text(json.dumps({"schema_version": 1, "artifacts": entries}, indent=1))


@pytest.fixture
def tiny_export(tmp_path):
    """tmp_path/export: the three models of data/ with labels.txt, preprocess.json and a manifest.json holding
    each file's sha256, the shape convert writes (one failed format without a file, as convert records it)."""
    from images import CLASSES
    export = tmp_path / "export"
    export.mkdir()
    entries = []
    for fmt, name in EXPORT_FORMATS.items():
        shutil.copy(DATA / name, export / name)
        entries.append({"format": fmt, "file": name, "status": "passed",
                        "sha256": hashlib.sha256((DATA / name).read_bytes()).hexdigest()})
    entries.append({"format": "onnx-int8", "file": None, "status": "failed", "error": "not exported"})
    write_manifest(export, entries)
    (export / "labels.txt").write_text("\n".join(CLASSES) + "\n")
    spec = {"height": 16, "width": 16, "scale": [1 / 255] * 3, "offset": [0.0] * 3, "channel_order": "RGB",
            "resize_method": "bilinear", "layout": "NHWC", "keep_aspect_ratio": False, "notes": "", "schema_version": 1}
    (export / "preprocess.json").write_text(json.dumps(spec))
    return export
