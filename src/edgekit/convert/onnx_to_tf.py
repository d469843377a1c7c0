"""ONNX → TensorFlow for an ONNX source's TFLite formats: onnx2tf, in a child process (onnx2tf_child.py), writes a
channels-last SavedModel (cached by the model file's sha256), which the TFLite exporter takes like any SavedModel.

The child first folds PyTorch's computed pad amounts into constants and pads max-pools by edge values (why:
onnx2tf_child.prepare), then asks onnx2tf for the Keras model only: none of its own .tflite files, which took most
of its time (EfficientNet-B0, 5.3 M parameters, 2 cores: 66 s → 9 s).
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from importlib import resources
from importlib.util import find_spec
from pathlib import Path
from typing import List, Optional

from edgekit import cache
from edgekit.errors import EdgeError
from edgekit.progress import console, progress_bar

CONVERT_TIMEOUT = 900   # seconds; generous: a 5 M-parameter model takes about 10 s on 2 cores
CACHE_VERSION = "v2"    # v2: onnx2tf_child.prepare before onnx2tf, no onnx2tf .tflite files
INSTALL = "pip install --no-deps onnx2tf onnx-graphsurgeon sng4onnx psutil"
# run by path (importing edgekit would set up tf_keras, which onnx2tf must not inherit): a file of this package
CHILD = Path(str(resources.files("edgekit.convert").joinpath("onnx2tf_child.py")))


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
        console.print(f"  onnx2tf: {onnx_path.name} was converted before (cache {entry})", highlight=False)
        return entry
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root))
    try:
        # onnx2tf rewrites the file it is given (its shape inference and simplifier save back): a copy
        work = staging / "input.onnx"
        shutil.copyfile(onnx_path, work)
        _run_child(work, staging / "model", onnx_path.name)
        try:
            os.replace(staging / "model", entry)
        except OSError:  # another convert made it first: the same content
            if not (entry / "saved_model.pb").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return entry


def _run_child(work: Path, out: Path, name: str) -> None:
    # onnx2tf drives TensorFlow's Keras its own way; this process runs tf_keras (TF_USE_LEGACY_KERAS)
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    env["PYTHONUNBUFFERED"] = "1"
    t0 = time.perf_counter()
    stderr = tempfile.TemporaryFile(mode="w+", dir=work.parent)
    proc = subprocess.Popen([sys.executable, str(CHILD), str(work), str(out)], env=env, cwd=work.parent,
                            stdout=subprocess.PIPE, stderr=stderr, text=True, bufsize=1)
    console.print(f"  onnx2tf: {name} → channels-last TensorFlow (once per model file; cached)", highlight=False)
    advance, done, output = None, 0, []
    timed_out = threading.Event()
    # a child that hangs prints nothing, and the loop below would wait for it forever
    timer = threading.Timer(CONVERT_TIMEOUT, lambda: (timed_out.set(), proc.kill()))
    timer.start()
    try:
        with contextlib.ExitStack() as bar:
            for line in proc.stdout:
                parts = line.split()
                if len(parts) != 4 or parts[0] != "progress":
                    output.append(line)  # onnx2tf's own prints: kept for the error message only
                    continue
                stage, now, total = parts[1], int(parts[2]), int(parts[3])
                if stage == "convert" and total and advance is None:
                    advance = bar.enter_context(progress_bar(f"  onnx2tf: {total} ONNX nodes", total))
                if advance is not None and now > done:
                    advance(now - done)
                    done = now
        proc.wait()
    except BaseException:  # Ctrl-C: the child goes too
        proc.kill()
        proc.wait()
        raise
    finally:
        timer.cancel()
    if timed_out.is_set():
        raise EdgeError(f"onnx2tf took over {CONVERT_TIMEOUT} s on {name}; gave up.")
    stderr.seek(0)
    text = "".join(output) + stderr.read()  # the traceback last, where _last_exception looks
    stderr.close()
    if proc.returncode != 0 or not (out / "saved_model.pb").is_file():
        raise EdgeError(f"onnx2tf could not convert {name}: {onnx2tf_words(text)}")
    console.print(f"  onnx2tf: done in {time.perf_counter() - t0:.0f} s", highlight=False)


def onnx2tf_words(text: str) -> str:
    """onnx2tf's own reason, on one line: the ONNX node it stopped at and the exception that stopped it."""
    lines = [ln.strip() for ln in re.sub(r"\x1b\[[0-9;]*m", "", text).splitlines() if ln.strip()]
    node = next((ln.split(":", 2)[-1].strip() for ln in lines if ln.startswith("ERROR: onnx_op_name:")), None)
    said = [ln[len("ERROR:"):].strip() for ln in lines if ln.startswith("ERROR:") and "not yet implemented" in ln]
    exc = _last_exception(lines)
    words = "; ".join(said + exc) or (lines[-1] if lines else "no output")
    return (f"at ONNX node {node}: " if node else "") + _clip(words, 400)


def _last_exception(lines: List[str]) -> List[str]:
    """The last `SomeError: message` line of a traceback, with the line after it when the message goes on there."""
    for i in range(len(lines) - 1, -1, -1):
        if re.match(r"^[A-Za-z_.]*(Error|Exception)\b.*:", lines[i]) and not lines[i].startswith("ERROR:"):
            goes_on = i + 1 < len(lines) and not lines[i + 1].startswith(
                ("Call arguments", "•", "ERROR:", "Traceback", "During handling", "The above exception", "File "))
            more = lines[i + 1] if goes_on else ""
            return [f"{lines[i]} {more}".strip()]
    return []


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"
