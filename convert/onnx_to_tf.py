"""ONNX → TensorFlow for an ONNX source's TFLite formats: onnx2tf, in a child process, writes a channels-last
SavedModel (cached by the model file's sha256), which the TFLite exporter takes like any SavedModel."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from importlib.util import find_spec
from pathlib import Path
from typing import Optional

from edgekit import cache
from edgekit.errors import EdgeError

CONVERT_TIMEOUT = 900   # seconds; onnx2tf checks every op of a large model against ONNX Runtime
CACHE_VERSION = "v1"
INSTALL = "pip install --no-deps onnx2tf onnx-graphsurgeon sng4onnx psutil"


def missing() -> Optional[str]:
    """Why the TFLite formats cannot be made from ONNX here, or None when onnx2tf is installed."""
    if find_spec("onnx2tf") is None:
        return f"the ONNX → TFLite converter onnx2tf is not installed ({INSTALL})"
    return None


def saved_model(onnx_path: Path, digest: str, cache_dir: Optional[str] = None) -> Path:
    """The channels-last SavedModel onnx2tf makes of `onnx_path`; built once per file content."""
    root = cache.cache_root("onnx2tf", cache_dir)
    entry = root / f"{digest[:32]}-{CACHE_VERSION}"
    if (entry / "saved_model.pb").is_file():
        return entry
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root))
    try:
        # onnx2tf drives TensorFlow's own Keras; this process runs tf_keras (TF_USE_LEGACY_KERAS)
        env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        # onnx2tf rewrites the file it is given (its shape inference and simplifier save back): a copy
        work = staging / "input.onnx"
        shutil.copyfile(onnx_path, work)
        cmd = [sys.executable, "-m", "onnx2tf.onnx2tf", "-i", str(work), "-o", str(staging / "model"), "-n"]
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=CONVERT_TIMEOUT,
                                  cwd=staging)  # it writes scratch files into the working directory
        except subprocess.TimeoutExpired:
            raise EdgeError(f"onnx2tf took over {CONVERT_TIMEOUT} s on {onnx_path.name}; gave up.") from None
        if proc.returncode != 0 or not (staging / "model" / "saved_model.pb").is_file():
            text = re.sub(r"\x1b\[[0-9;]*m", "", proc.stderr + proc.stdout)  # it colours its messages
            lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
            why = next((ln for ln in reversed(lines) if "Error" in ln), lines[-1] if lines else "no output")
            raise EdgeError(f"onnx2tf could not convert {onnx_path.name}: {why[:200]}")
        for extra in (staging / "model").glob("*.tflite"):  # its own TFLite files: convert makes the formats
            extra.unlink()
        try:
            os.replace(staging / "model", entry)
        except OSError:  # another convert made it first: the same content
            if not (entry / "saved_model.pb").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return entry
