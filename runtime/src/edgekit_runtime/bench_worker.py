"""One artifact, measured in a fresh process: cold start, accuracy predictions, latency at each setting.

Started by `edgekit_runtime.bench` as
    python -c "<take the time>; from edgekit_runtime import bench_worker; bench_worker.main(t)" PLAN INDEX OUT
with EDGE_BENCH_T0 = the wall clock just before the process was spawned, so cold start covers
interpreter start, imports, model load and the first prediction (JPEG decode included). Timed loops
use perf_counter_ns with the garbage collector paused, after warm-up runs.

Three latencies per (threads, batch) setting:
- bare: the engine's own invoke() on an input already set (what a hand-written loop would cost);
- run: Classifier.predict on uint8 frames already at the model's size, as a camera loop feeds them
  (normalise or quantize → invoke → dequantize): all the runtime adds to invoke() but decoding and resizing;
- e2e: Classifier.top_k on JPEG files (decode → resize → normalise → run → top-k).
The runtime's overhead is run over bare.
"""
from __future__ import annotations

import gc
import json
import math
import os
import resource
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Sequence

import numpy as np

from .classifier import Classifier
from .engines import pick_engine
from .errors import RuntimeErrorBase
from .image import load_rgb, resize_rgb

MAX_SAMPLES = 100_000


def rss_peak_mb() -> float:
    """Peak resident memory of this process so far (Linux reports kB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1 << 20) if sys.platform == "darwin" else peak / 1024, 1)


def summarize(samples_ns: List[int]) -> Dict[str, float]:
    """p50/p90/p99, mean, std, min, max in milliseconds (percentiles by linear interpolation)."""
    ms = np.asarray(samples_ns, np.float64) / 1e6
    if not len(ms):
        return {"n": 0}
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {"n": int(len(ms)), "p50_ms": round(float(p50), 4), "p90_ms": round(float(p90), 4),
            "p99_ms": round(float(p99), 4), "mean_ms": round(float(ms.mean()), 4),
            "std_ms": round(float(ms.std(ddof=1)) if len(ms) > 1 else 0.0, 4),
            "min_ms": round(float(ms.min()), 4), "max_ms": round(float(ms.max()), 4)}


def timed(fns: Sequence[Callable[[], object]], runs: int, warmup: int, min_time: float,
          max_time: float) -> List[List[int]]:
    """Durations (ns) of each function: at least `runs` calls and `min_time` seconds, after `warmup` calls.

    The functions take turns call by call, so that a busy neighbour or a frequency change hits them
    alike and their ratio (the runtime's overhead) stays fair. `max_time` caps a slow model: the loop
    stops once it has spent that long and has 3 rounds.
    """
    for _ in range(warmup):
        for fn in fns:
            fn()
    samples: List[List[int]] = [[] for _ in fns]
    clock = time.perf_counter_ns
    enabled = gc.isenabled()
    gc.disable()  # a collection inside one timed call is noise, not model latency
    try:
        start = clock()
        while len(samples[0]) < MAX_SAMPLES:
            elapsed = (clock() - start) / 1e9
            if len(samples[0]) >= runs and elapsed >= min_time:
                break
            if max_time and elapsed >= max_time and len(samples[0]) >= 3:
                break
            for fn, out in zip(fns, samples):
                a = clock()
                fn()
                out.append(clock() - a)
    finally:
        if enabled:
            gc.enable()
    return samples


def _log(name: str, text: str) -> None:
    print(f"[{name}] {text}", file=sys.stderr, flush=True)


def _accuracy(clf: Classifier, files: List[str], batch: int, top_k: int, name: str) -> dict:
    top: List[List[int]] = []
    start, step = time.perf_counter(), max(1, len(files) // 10)
    next_report = step
    for i in range(0, len(files), batch):
        probs = clf.predict(files[i:i + batch], batch_size=batch)
        top.extend(np.argsort(-probs, axis=1, kind="stable")[:, :top_k].tolist())
        if len(top) >= next_report and len(files) > batch:
            _log(name, f"accuracy {len(top)}/{len(files)} images")
            next_report += step
    return {"images": len(files), "top_k": top, "seconds": round(time.perf_counter() - start, 3)}


def _setting(clf: Classifier, files: List[str], threads: int, batch: int, plan: dict) -> dict:
    row: Dict[str, object] = {"threads": threads, "batch": batch}
    fixed = clf.engine.input.shape[0]
    if fixed is not None and batch % fixed:
        row["skipped"] = f"the model takes a fixed batch of {fixed}"
        return row
    picks = [files[i % len(files)] for i in range(batch)]
    h, w, _ = clf.input_shape
    frames = [resize_rgb(load_rgb(f), (h, w)) for f in picks]  # uint8 at the model's size
    args = (int(plan.get("runs", 50)), int(plan.get("warmup", 5)), float(plan.get("min_time", 0.0)),
            float(plan.get("max_time", 60.0)))
    model_input = np.array(clf._to_model_dtype(clf.preprocess(frames)))  # what the bare interpreter gets
    kinds = ("bare", "run", "e2e")
    fns = (clf.engine.invoker(model_input), lambda: clf.predict(frames, batch_size=batch),
           lambda: clf.top_k(picks, k=min(5, clf.num_classes)))
    for kind, samples in zip(kinds, timed(fns, *args)):
        row[kind] = {**summarize(samples), "samples_ms": [round(s / 1e6, 4) for s in samples]}
    bare, run = row["bare"]["p50_ms"], row["run"]["p50_ms"]  # type: ignore[index]
    row["overhead_pct"] = round(100.0 * (run - bare) / bare, 2) if bare > 0 else None
    row["throughput_ips"] = round(1000.0 * batch / row["run"]["mean_ms"], 2)  # type: ignore[index]
    return row


def measure(plan: dict, index: int, t0_ns: int, t_start_ns: int) -> dict:
    base = Path(plan["base"])
    art = plan["artifacts"][index]
    name = art["name"]
    path = base / art["file"]
    files = [str(base / item["file"]) for item in plan["images"]]
    if not files:
        raise RuntimeErrorBase("the plan lists no images.")
    # Latency and cold start use JPEGs when the plan has them (accuracy images may be lossless PNGs).
    lat_files = [str(base / f) for f in plan.get("latency_images") or []] or files
    t_imported = time.time_ns()
    cls = pick_engine(path, art.get("engine"))
    cls.available()  # imports the engine module: its cost is reported apart from the model load
    t_engine = time.time_ns()
    threads = list(plan.get("threads") or [None])
    clf = Classifier.load(path, threads=threads[0], engine=cls.name)
    t_loaded = time.time_ns()
    rss_loaded = rss_peak_mb()
    first = clf.top_k(lat_files[0], k=1)
    t_first = time.time_ns()
    out: Dict[str, object] = {
        "name": name, "file": art["file"], "engine": clf.engine_name, "status": "ok",
        "input": {"shape": [d for d in clf.engine.input.shape], "dtype": clf.input_dtype.name,
                  "layout": clf.engine.layout},
        "cold": {"interpreter_s": (t_start_ns - t0_ns) / 1e9, "import_s": (t_imported - t_start_ns) / 1e9,
                 "engine_import_s": (t_engine - t_imported) / 1e9, "load_s": (t_loaded - t_engine) / 1e9,
                 "first_inference_s": (t_first - t_loaded) / 1e9, "cold_start_s": (t_first - t0_ns) / 1e9,
                 "first_label": first[0][0][0]},
        "memory": {"peak_rss_after_load_mb": rss_loaded},
    }
    _log(name, f"cold start {out['cold']['cold_start_s']:.3f} s ({clf.engine_name}, {clf.input_dtype.name} input)")
    if plan.get("accuracy", True):
        out["accuracy"] = _accuracy(clf, files, int(plan.get("accuracy_batch", 32)), int(plan.get("top_k", 5)), name)
    rows = []
    for t in threads:
        current = clf if t == threads[0] else Classifier.load(path, threads=t, engine=cls.name)
        for b in plan.get("batch") or [1]:
            rows.append(_setting(current, lat_files, current.engine.threads, int(b), plan))
            r = rows[-1]
            if "skipped" not in r:
                _log(name, f"threads {current.engine.threads} batch {b}: p50 {r['run']['p50_ms']:.3f} ms")
    out["latency"] = rows
    out["memory"]["peak_rss_mb"] = rss_peak_mb()  # type: ignore[index]
    return out


def main(t_start_ns: int) -> int:
    plan_path, index, out_path = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    t0 = int(os.environ.get("EDGE_BENCH_T0", t_start_ns))
    plan = json.loads(Path(plan_path).read_text())
    try:
        result = measure(plan, index, t0, t_start_ns)
        code = 0
    except (RuntimeErrorBase, OSError, ValueError) as exc:
        result = {"name": plan["artifacts"][index]["name"], "status": "error",
                  "error": (str(exc).strip().splitlines() or [type(exc).__name__])[0]}
        code = 1
    tmp = out_path.with_name(out_path.name + ".tmp")
    tmp.write_text(json.dumps(result, allow_nan=False, default=_jsonable))
    os.replace(tmp, out_path)
    return code


def _jsonable(v):
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        f = float(v)
        return f if math.isfinite(f) else None
    raise TypeError(f"cannot write {type(v).__name__} to JSON")
