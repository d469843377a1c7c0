"""`edge bench`: accuracy and latency of every artifact of a run, here and/or on a device over SSH.

Flow: the export manifest lists the artifacts (and how convert judged them) → the Keras model gives
the reference predictions on the run's test split → a plan directory (artifacts + images) is
measured by `edge-run bench` in a child process here, and/or copied to a device and measured there
→ rows with statuses → report.json / report.md / report.html. An artifact that fails, wherever it
fails, is a row with its reason; only bad input stops the run.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from edgekit.convert.manifest import locate_export
from edgekit.benchmarks.report import rows as rp
from edgekit.benchmarks.report.writer import write_all
from edgekit.benchmarks.config import BenchConfig
from edgekit.benchmarks.plan import write_plan
from edgekit.errors import EdgeError
from edgekit.helpers import balanced_indices
from edgekit.progress import console, progress_bar
from edgekit_runtime.image import is_enlargement

from edgekit_runtime.exits import Exit
from edgekit.layout import RunLayout
from edgekit.convert.formats import parse_names
from edgekit.benchmarks.remote.fleet import each
from edgekit.benchmarks.remote.session import RemoteError, RemoteOptions, run_remote


@dataclass
class BenchResult:
    out_dir: Path
    report: dict
    errors: List[str] = field(default_factory=list)   # device-level failures (unreachable host, ...)

    @property
    def exit_code(self) -> int:
        if self.errors:
            return 2
        comparison = self.report.get("comparison")
        if comparison and not comparison.get("passed", True):
            return Exit.REGRESSION
        return 0 if all(r["status"] == rp.PASSED for r in self.report["rows"]) else Exit.OUTSIDE_TOLERANCE


def pick_entries(manifest: dict, formats: Optional[str]) -> List[dict]:
    """The manifest's entries named by --formats (the formats parser's rules; default and all: every one)."""
    entries = [e for e in manifest["artifacts"] if isinstance(e, dict) and e.get("format")]
    if not formats:
        return entries
    known = {e["format"]: e for e in entries}
    return [known[n] for n in parse_names(formats, known, known, what="format in the manifest")]


def _reference(source, dataset, idx: np.ndarray) -> np.ndarray:
    """Keras top-5 classes of the chosen test images, batch by batch with progress."""
    from edgekit.convert.calibration import model_input
    x = dataset.test.x[idx]
    ranked = []
    with progress_bar("Keras reference", len(x)) as advance:
        for start in range(0, len(x), 128):
            probs = np.asarray(source.model(model_input(x[start:start + 128], source.spec), training=False))
            ranked.append(np.argsort(-probs, axis=1, kind="stable")[:, :5])
            advance(len(probs))
    return np.concatenate(ranked)


def run_local(plan_file: Path, cfg: BenchConfig) -> dict:
    """`edge-run bench` in a child process with this interpreter; its progress lines pass through."""
    out = plan_file.parent / "result-local.json"
    python = cfg.python or sys.executable
    if cfg.python and not shutil.which(cfg.python):
        raise EdgeError(f"--python {cfg.python}: no such interpreter.")
    cmd = [python, "-m", "edgekit_runtime.cli", "bench", str(plan_file), "--out", str(out),
           "--timeout", str(cfg.timeout)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, errors="replace")
    last = ""
    for line in proc.stderr:  # type: ignore[union-attr]
        line = line.rstrip()
        if line:
            last = line
            console.print(f"  {line}", highlight=False, markup=False, soft_wrap=True)
    if proc.wait() != 0 or not out.is_file():
        raise EdgeError(f"the local benchmark runner failed: {last or 'no output'}")
    return json.loads(out.read_text())


def bench(cfg: BenchConfig) -> BenchResult:
    cfg.check()
    run_dir = Path(cfg.run_dir)
    export, manifest = locate_export(run_dir)
    entries = pick_entries(manifest, cfg.formats)
    remote = cfg.devices()  # bad host names or hosts files are refused before anything is measured
    if cfg.baseline is not None and not Path(cfg.baseline).is_file():
        raise EdgeError(f"baseline {cfg.baseline} does not exist.")
    from edgekit.convert.calibration import load_images
    from edgekit.convert.source import open_source
    source = open_source(run_dir, export, manifest, cfg.data)
    dataset = load_images(source, cfg.data)
    if not len(dataset.test.y):
        raise EdgeError(f"{run_dir}'s data has no test split to benchmark on.")
    n_test = len(dataset.test.y)
    idx = np.arange(n_test) if not cfg.samples or cfg.samples >= n_test else \
        np.sort(balanced_indices(dataset.test.y, cfg.samples, cfg.seed))
    keras_ranked = _reference(source, dataset, idx)
    y = dataset.test.y[idx]
    runnable = [(e["format"], export / e["file"]) for e in entries
                if e.get("file") and (export / e["file"]).is_file()]
    ctx = rp.Context(labels=source.labels, y=y, keras_ranked=keras_ranked, manifest=manifest, entries=entries,
                     validated=_validated_positions(manifest, dataset, idx), export=export,
                     resized=is_enlargement(dataset.test.x.shape[2], dataset.test.x.shape[1], source.spec.size),
                     labelled=dataset.labeled)
    rows: List[dict] = [rp.keras_row(ctx, RunLayout(run_dir).model) if source.kind == "run" else
                        rp.keras_row(ctx, source.path, f"the source model ({source.saved_by or 'Keras'}; reference)",
                                     "onnxruntime" if source.kind == "onnx" else "tensorflow")]
    devices: List[dict] = []
    errors: List[str] = []
    out_dir = Path(cfg.out) if cfg.out else RunLayout(run_dir).bench
    work = Path(tempfile.mkdtemp(prefix=".bench-", dir=out_dir.parent if out_dir.parent.exists() else None))
    try:
        if cfg.local or not cfg.host:
            x = dataset.test.x[idx]
            plan = write_plan(work / "local", runnable, export, x, y, cfg, _latency_picks(y, cfg))
            console.print(f"benchmarking {len(runnable)} artifact(s) on this machine: {len(idx):,} test images, "
                          f"threads {','.join(map(str, cfg.threads)) or 'all'}, batch {','.join(map(str, cfg.batch))}",
                          highlight=False)
            result = run_local(plan, cfg)
            devices.append(rp.device_entry("local", None, result))
            rows += rp.artifact_rows(ctx, result, "local", np.arange(len(idx)))
        if remote:
            for rows_remote, device, error in _remote_all(cfg, remote, ctx, runnable, export, dataset, idx, work):
                rows += rows_remote
                if device:
                    devices.append(device)
                if error:
                    errors.append(error)
        rows += rp.unexported_rows(ctx, "local" if cfg.local or not remote else remote[0].name)
        report = rp.build(cfg, run_dir, export, source.labels, rows, devices, len(idx), dataset.test.y[idx])
        from edgekit.benchmarks.select import recommendations
        report["recommendation"] = recommendations(report)
        if cfg.baseline is not None:
            from edgekit.benchmarks.compare import compare
            report["comparison"] = compare(report, Path(cfg.baseline), cfg.max_accuracy_drop, cfg.max_latency_growth,
                                           complete=not cfg.formats)
        write_all(report, out_dir)
    finally:
        if cfg.keep:
            console.print(f"kept the plan directory: {work}", highlight=False)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return BenchResult(out_dir, report, errors)


def _latency_picks(y: np.ndarray, cfg: BenchConfig) -> List[int]:
    return sorted(int(i) for i in balanced_indices(y, min(cfg.latency_images, len(y)), cfg.seed + 7))


def _validated_positions(manifest: dict, dataset, idx: np.ndarray) -> Optional[np.ndarray]:
    """Positions (into idx) of the images convert validated on, when all of them are benchmarked."""
    val = manifest.get("validation") or {}
    if val.get("split") != "test" or not val.get("images"):
        return None
    chosen = np.sort(balanced_indices(dataset.test.y, int(val["images"]), int(val.get("seed", 0))))
    where = {int(v): i for i, v in enumerate(idx)}
    if not all(int(c) in where for c in chosen):
        return None
    return np.array([where[int(c)] for c in chosen], np.int64)


def _remote_all(cfg: BenchConfig, remote, ctx: "rp.Context", runnable, export: Path, dataset, idx: np.ndarray,
                work: Path) -> List[Tuple[List[dict], Optional[dict], Optional[str]]]:
    """Every device at once (at most cfg.parallel), each exactly as a single --host: the same plan, measurements and
    cleanup. A device that fails is a row per artifact with its reason; the others are still measured."""
    pos = np.sort(balanced_indices(ctx.y, min(cfg.device_samples, len(idx)), cfg.seed + 3))
    y = ctx.y[pos]
    plan = write_plan(work / "device", runnable, export, dataset.test.x[idx[pos]], y, cfg, _latency_picks(y, cfg))
    extras = sorted({"litert" if p.suffix == ".tflite" else "onnx" for _, p in runnable})
    names = ", ".join(d.name for d in remote)
    console.print(f"benchmarking {len(runnable)} artifact(s) on {names}: {len(pos):,} test images"
                  + (f", {min(cfg.parallel, len(remote))} devices at a time" if len(remote) > 1 else ""), highlight=False)

    def one(device) -> Tuple[List[dict], Optional[dict], Optional[str]]:
        opts = RemoteOptions(host=device.destination, port=device.port, identity=cfg.identity,
                             known_hosts=cfg.known_hosts, accept_new_host_key=cfg.accept_new_host_key,
                             device_python=cfg.device_python, keep=cfg.keep, timeout=cfg.timeout)
        try:
            result = run_remote(plan.parent, opts, extras)
        except RemoteError as exc:  # names the host itself
            failed = [{"name": fmt, "kind": "artifact", "device": device.name, "status": rp.FAILED,
                       "symbol": rp.SYMBOLS[rp.FAILED], "reason": f"device {device.name}: {exc}"} for fmt, _ in runnable]
            return failed, None, str(exc)
        except Exception as exc:  # a bug must not lose the other devices' results
            return [], None, f"{device.name}: internal error: {type(exc).__name__}: {exc}"
        return (rp.artifact_rows(ctx, result, device.name, pos), rp.device_entry(device.name, device.destination, result),
                None)

    return [out for _, out in each(remote, one, cfg.parallel)]
