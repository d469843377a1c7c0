"""Models saved by Keras 3 (`.keras`, `.h5`): loaded in a separate Keras 3 process (this one runs tf_keras) and
exported there as a SavedModel, cached by the file's digest, which convert then takes like any SavedModel."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional, Tuple

from edgekit import cache
from edgekit.errors import EdgeError

EXPORT_TIMEOUT = 600   # seconds; a large model's export traces every layer once

# Runs in the child: Keras 3 (TF_USE_LEGACY_KERAS unset), prints one JSON line.
_CHILD = r"""
import json, os, sys
os.environ.pop("TF_USE_LEGACY_KERAS", None)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
src, dst = sys.argv[1], sys.argv[2]
import keras
try:
    model = keras.saving.load_model(src, compile=False)
except Exception as exc:
    print(json.dumps({"error": f"{type(exc).__name__}: {exc}", "keras": keras.__version__}))
    sys.exit(3)
if not hasattr(model, "export"):
    print(json.dumps({"error": f"it holds a {type(model).__name__}, not a model", "keras": keras.__version__}))
    sys.exit(3)
model.export(dst, format="tf_saved_model", verbose=False)
DUMP
dump_graph(model, dst)
print(json.dumps({"keras": keras.__version__, "backend": keras.backend.backend(), "name": model.name}))
"""

_MISSING_CLASS = re.compile(r"Could not locate (?:class|function) '([^']+)'")


def to_saved_model(path: Path, digest: str, cache_dir: Optional[str] = None) -> Tuple[Path, dict]:
    """(SavedModel directory, {"keras": version, ...}) for a Keras 3 model file; built once per file content."""
    root = cache.cache_root("keras3", cache_dir)
    entry = root / f"{digest[:32]}-v3"   # v3: the graph of nested models flattened for keras3_rebuild
    info_file = entry / "edgekit-keras3.json"
    if info_file.is_file() and (entry / "saved_model.pb").is_file():
        return entry, json.loads(info_file.read_text())
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root))
    try:
        env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
        try:
            from edgekit.convert.keras3_rebuild import CHILD_DUMP
            child = _CHILD.replace("DUMP", CHILD_DUMP)
            proc = subprocess.run([sys.executable, "-c", child, str(path), str(staging / "model")], env=env,
                                  capture_output=True, text=True, timeout=EXPORT_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise EdgeError(f"loading {path.name} in Keras 3 took over {EXPORT_TIMEOUT} s; gave up.") from None
        info = _last_json(proc.stdout)
        if proc.returncode != 0 or info is None or "error" in info:
            raise EdgeError(_explain(path, info, proc.stderr))
        (staging / "model" / "edgekit-keras3.json").write_text(json.dumps(info))
        try:
            os.replace(staging / "model", entry)
        except OSError:  # another convert made it first: the same content
            if not info_file.is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return entry, json.loads(info_file.read_text())


def _last_json(stdout: str) -> Optional[dict]:
    for line in reversed(stdout.strip().splitlines()):
        try:
            out = json.loads(line)
            return out if isinstance(out, dict) else None
        except json.JSONDecodeError:
            continue
    return None


def _explain(path: Path, info: Optional[dict], stderr: str) -> str:
    if info is None:
        tail = [ln for ln in stderr.strip().splitlines() if ln.strip()][-1:] or ["no output"]
        return f"cannot load {path.name} in Keras 3 (the loading process failed: {tail[0][:200]})."
    error, version = info["error"], info.get("keras", "3")
    missing = _MISSING_CLASS.search(error)
    if missing:
        return (f"{path.name} uses the custom class {missing.group(1)!r}, which Keras {version} cannot find: load the "
                "model where that class is defined and call model.export('saved_model_dir'), then convert that "
                "directory.")
    return f"cannot load {path.name} in Keras {version} ({error.splitlines()[0][:200]})."
