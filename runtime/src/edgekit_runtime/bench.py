"""The device side of `edge bench`: run every artifact of a plan, each in its own fresh process.

A plan (JSON) names the artifacts, the test images with their labels and the timing settings; paths
are relative to the plan's directory, so the host can copy that directory to a device as it is and
run `edge-run bench plan.json --out result.json` there. One artifact crashing, hanging or failing to
load becomes an error row; the others still run. The result carries the device's fingerprint and its
temperature/throttling before and after.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from datetime import datetime, timezone
from pathlib import Path
from typing import Deque, Dict, List, Optional

from .device import fingerprint, health
from .errors import RuntimeErrorBase

SCHEMA_VERSION = 1
ENTRY = ("import time; t = time.time_ns(); from edgekit_runtime import bench_worker as w; "
         "raise SystemExit(w.main(t))")
SETTINGS = {"threads": list, "batch": list, "runs": int, "warmup": int, "min_time": (int, float),
            "max_time": (int, float), "accuracy": bool, "accuracy_batch": int, "top_k": int}


class PlanError(RuntimeErrorBase):
    """The benchmark plan is missing, unreadable or inconsistent."""


def load_plan(path: "str | os.PathLike") -> dict:
    p = Path(path)
    try:
        plan = json.loads(p.read_text())
    except OSError as exc:
        raise PlanError(f"{p}: cannot read the plan ({exc.strerror or exc}).") from None
    except ValueError as exc:
        raise PlanError(f"{p}: not valid JSON ({exc}).") from None
    if not isinstance(plan, dict) or not isinstance(plan.get("artifacts"), list) or not plan["artifacts"]:
        raise PlanError(f"{p}: a plan needs a non-empty 'artifacts' list.")
    if not isinstance(plan.get("images"), list) or not plan["images"]:
        raise PlanError(f"{p}: a plan needs a non-empty 'images' list.")
    for key, kind in SETTINGS.items():
        if key in plan and not isinstance(plan[key], kind):
            raise PlanError(f"{p}: '{key}' has the wrong type ({type(plan[key]).__name__}).")
    base = Path(plan.get("base") or ".")
    plan["base"] = str(base if base.is_absolute() else (p.parent / base).resolve())
    for art in plan["artifacts"]:
        if not isinstance(art, dict) or "name" not in art or "file" not in art:
            raise PlanError(f"{p}: each artifact needs a 'name' and a 'file'.")
    missing = [a["file"] for a in plan["artifacts"] if not (Path(plan["base"]) / a["file"]).is_file()]
    if missing:
        raise PlanError(f"{p}: artifact file(s) not found under {plan['base']}: {', '.join(missing)}.")
    return plan


def _relay(stream, name: str, tail: Deque[str]) -> None:
    for line in stream:
        line = line.rstrip()
        if not line or line.startswith("INFO: "):  # XNNPACK's "Created delegate" chatter
            continue
        tail.append(line)
        print(line if line.startswith("[") else f"[{name}] {line}", file=sys.stderr, flush=True)


def run_artifact(plan_file: Path, plan: dict, index: int, workdir: Path, timeout: Optional[float]) -> dict:
    name = plan["artifacts"][index]["name"]
    out = workdir / f"artifact-{index}.json"
    tail: Deque[str] = deque(maxlen=5)
    env = dict(os.environ, EDGE_BENCH_T0=str(time.time_ns()))
    proc = subprocess.Popen([sys.executable, "-c", ENTRY, str(plan_file), str(index), str(out)], env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, errors="replace")
    relay = threading.Thread(target=_relay, args=(proc.stderr, name, tail), daemon=True)
    relay.start()
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        relay.join(5)
        return {"name": name, "status": "error", "error": f"did not finish within {timeout:.0f} s (killed)."}
    relay.join(5)
    if out.is_file():
        return json.loads(out.read_text())
    why = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
    last = tail[-1] if tail else "no output"
    return {"name": name, "status": "error", "error": f"the benchmark process died ({why}): {last}"}


def run_plan(plan_path: "str | os.PathLike", timeout: Optional[float] = None) -> dict:
    plan = load_plan(plan_path)
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    t = time.perf_counter()
    before = health()
    device = fingerprint()
    results: List[Dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="edgekit-bench-") as tmp:
        plan_file = Path(tmp, "plan.json")
        plan_file.write_text(json.dumps(plan))
        n = len(plan["artifacts"])
        for i, art in enumerate(plan["artifacts"]):
            print(f"[{i + 1}/{n}] {art['name']}", file=sys.stderr, flush=True)
            results.append(run_artifact(plan_file, plan, i, Path(tmp), timeout))
    settings = {k: plan[k] for k in SETTINGS if k in plan}
    return {"schema_version": SCHEMA_VERSION, "started": started, "seconds": round(time.perf_counter() - t, 2),
            "device": device, "health_before": before, "health_after": health(), "settings": settings,
            "images": len(plan["images"]), "artifacts": results}


def write_json(path: "str | os.PathLike", data: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
