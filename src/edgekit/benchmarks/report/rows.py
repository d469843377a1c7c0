"""Benchmark rows and the report that holds them (report.json, versioned; load_report is its one reader).

A row is one artifact on one device (plus the Keras reference). Its status starts from what convert
found (✅ validated, ❎ outside tolerance, ❌ failed to export) and is lowered when the benchmark
itself fails, or when the runtime's accuracy on convert's own validation images differs from what
convert recorded: the same images through the same runtime must give the same answer.
"""
from __future__ import annotations

import json
import shlex
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import List, Optional

import numpy as np

from edgekit.errors import EdgeError
from edgekit.benchmarks.report.check import check_rows
from edgekit.benchmarks.report.schema import SCHEMA_VERSION, Accuracy, Device, Report, Row
from edgekit.benchmarks.macs import count_macs
from edgekit.convert.manifest import FAILED, LEGEND, OUTSIDE, PASSED, SYMBOLS
from edgekit.train.metrics import report_from_ranked

__all__ = ["PASSED", "OUTSIDE", "FAILED", "SYMBOLS", "LEGEND", "SCHEMA_VERSION", "Report", "Row"]


@dataclass
class Context:
    labels: List[str]
    y: np.ndarray                    # labels of the benchmarked test images
    keras_ranked: np.ndarray         # Keras top-5 per image
    manifest: dict
    entries: List[dict]              # manifest entries picked for this run
    validated: Optional[np.ndarray]  # positions of convert's validation images among them (None: not all benchmarked)
    export: Path
    resized: bool = False            # stored images are smaller than the model: both sides enlarge them in float
    labelled: bool = True            # False: images without labels; agreement with the source model only


def _accuracy(ctx: Context, ranked: np.ndarray, positions: np.ndarray) -> Accuracy:
    if ctx.labelled:
        acc = report_from_ranked(ctx.y[positions], ranked, ctx.labels)
    else:
        acc = {"images": int(len(positions)), "top1": None, "top5": None, "labelled": False}
    acc["agreement"] = float((ranked[:, 0] == ctx.keras_ranked[positions, 0]).mean()) if len(ranked) else None
    return acc


def keras_row(ctx: Context, model: Path, summary: str = "the trained Keras model (reference)",
              engine: str = "tensorflow") -> Row:
    """The source model's own row (a run's model.keras, or the model file an export was converted from)."""
    fp32 = [ctx.export / e["file"] for e in ctx.manifest.get("artifacts", []) if e.get("format") == "tflite-fp32" and e.get("file")]
    return {"name": "keras", "kind": "reference", "device": "local", "status": PASSED, "symbol": SYMBOLS[PASSED],
            "reason": None, "file": str(model), "engine": engine, "summary": summary,
            "size_bytes": model.stat().st_size if model.is_file() else None,
            "macs": count_macs(fp32[0]) if fp32 and fp32[0].is_file() else None,
            "accuracy": _accuracy(ctx, ctx.keras_ranked, np.arange(len(ctx.y)))}


def _headline(latency: List[dict]) -> Optional[dict]:
    measured = [r for r in latency if "skipped" not in r]
    if not measured:
        return None
    first = measured[0]
    return {"threads": first["threads"], "batch": first["batch"]}


def artifact_rows(ctx: Context, result: dict, device: str, positions: np.ndarray) -> List[Row]:
    """Rows of one device's runner result; `positions` map its images onto ctx.y."""
    by_name = {e["format"]: e for e in ctx.entries}
    rows = []
    for res in result.get("artifacts", []):
        entry = by_name.get(res.get("name"), {})
        status = entry.get("status", PASSED)
        path = ctx.export / entry["file"] if entry.get("file") else None
        row: Row = {"name": res.get("name"), "kind": "artifact", "device": device, "status": status, "reason": None,
               "file": entry.get("file"), "engine": res.get("engine") or entry.get("engine"),
               "summary": entry.get("summary"), "size_bytes": entry.get("size_bytes"),
               "macs": count_macs(path) if path is not None and path.is_file() else None,
               "convert": {"status": status, "parity": entry.get("parity")}}
        if entry.get("layer_errors"):   # convert's per-layer diagnosis (int8 formats), for the report's chart
            row["layers"] = {"errors": list(entry["layer_errors"]),
                             "kept_in_float": [k.get("layer") for k in (entry.get("mixed") or {}).get("kept_out", [])
                                               if isinstance(k, dict)]}
        if status == OUTSIDE:
            row["reason"] = "convert: " + "; ".join(m.get("message", "") for m in entry.get("mismatches") or []) \
                if entry.get("mismatches") else "convert: outside tolerance"
        if res.get("status") != "ok":
            row.update(status=FAILED, reason=f"benchmark: {res.get('error', 'failed')}")
        else:
            ranked = np.asarray(res["accuracy"]["top_k"], np.int64)
            row["accuracy"] = _accuracy(ctx, ranked, positions)
            row["accuracy"]["seconds"] = res["accuracy"].get("seconds")
            _check_against_convert(ctx, row, ranked, positions, entry)
            row.update(cold=res.get("cold"), memory=res.get("memory"), input=res.get("input"))
            row["latency"] = _with_gmacs(res.get("latency") or [], row["macs"])
            row["headline"] = _headline(row["latency"])
        row["symbol"] = SYMBOLS[row["status"]]
        rows.append(row)
    return rows


def _check_against_convert(ctx: Context, row: Row, ranked: np.ndarray, positions: np.ndarray, entry: dict) -> None:
    parity = entry.get("parity") or {}
    if ctx.validated is None or len(positions) != len(ctx.y) or parity.get("accuracy") is None:
        row["accuracy"]["convert_check"] = None
        return
    sub = ranked[ctx.validated, 0]
    bench_acc = float((sub == ctx.y[ctx.validated]).mean())
    exact = abs(bench_acc - parity["accuracy"]) < 0.5 / len(sub)
    # Images smaller than the model are enlarged in float on both paths (tf.image in convert, numpy in the
    # runtime), bit-identically with the TF builds tested; one that rounds differently may move a near-tie.
    same = exact or (ctx.resized and abs(bench_acc - parity["accuracy"]) < 1.5 / len(sub))
    row["accuracy"]["convert_check"] = {"images": int(len(sub)), "bench": bench_acc, "convert": parity["accuracy"],
                                        "equal": exact}
    if same and not exact:
        row["accuracy"]["convert_check"]["note"] = ("one image apart: images enlarged in float by tf.image in convert and "
                                                    "by the runtime here, which round differently on this platform")
    if not same and row["status"] == PASSED:
        row.update(status=OUTSIDE, reason=f"accuracy on convert's {len(sub)} validation images is {bench_acc:.2%} "
                                          f"here but {parity['accuracy']:.2%} in convert")


def _with_gmacs(latency: List[dict], macs: Optional[int]) -> List[dict]:
    for r in latency:
        if "skipped" not in r and macs and r.get("run", {}).get("mean_ms"):
            r["gmacs_per_s"] = round(macs * r["batch"] / (r["run"]["mean_ms"] / 1000) / 1e9, 3)
    return latency


def unexported_rows(ctx: Context, device: str) -> List[Row]:
    rows = []
    for e in ctx.entries:
        if e.get("file") and (ctx.export / e["file"]).is_file():
            continue
        reason = e.get("error") or ("the artifact file is missing from the export directory" if e.get("file")
                                    else "not exported")
        rows.append({"name": e["format"], "kind": "artifact", "device": device, "status": FAILED,
                     "symbol": SYMBOLS[FAILED], "reason": reason, "engine": e.get("engine"), "summary": e.get("summary")})
    return rows


def device_entry(device_id: str, host: Optional[str], result: dict) -> Device:
    return {"id": device_id, "host": host, "fingerprint": result.get("device"), "health_before": result.get("health_before"),
            "health_after": result.get("health_after"), "seconds": result.get("seconds"), "images": result.get("images")}


def build(cfg, run_dir: Path, export: Path, labels: List[str], rows: List[Row], devices: List[Device],
          n_images: int, y: np.ndarray) -> Report:
    per_class = {labels[c]: int((y == c).sum()) for c in np.unique(y)}
    return {"schema_version": SCHEMA_VERSION, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(shlex.quote(a) for a in ["edge", *sys.argv[1:]]) if sys.argv[0].endswith("edge") else None,
            "run_dir": str(run_dir), "export_dir": str(export), "labels": labels,
            "settings": {"threads": list(cfg.threads) or "all", "batch": list(cfg.batch), "runs": cfg.runs,
                         "warmup": cfg.warmup, "min_time": cfg.min_time, "max_time": cfg.max_time,
                         "samples": n_images, "device_samples": cfg.device_samples if cfg.host else None},
            "test_set": {"images": n_images, "split": "test", "per_class": per_class},
            "devices": devices, "rows": rows, "comparison": None}


def load_report(path: Path) -> Report:
    """A report.json written by `edge bench`, the one reader of it: schema checked, one sentence when it is not."""
    try:
        old = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise EdgeError(f"{path} is not a readable report.json ({exc}).") from None
    if not isinstance(old, dict) or not isinstance(old.get("rows"), list) or old.get("schema_version") != SCHEMA_VERSION:
        raise EdgeError(f"{path} is not an `edge bench` report.json (schema version {SCHEMA_VERSION}).")
    if not all(isinstance(r, dict) and r.get("name") and r.get("status") for r in old["rows"]):
        raise EdgeError(f"{path} has a row without a name or status; rerun `edge bench`.")
    check_rows(old["rows"], str(path))
    if old.get("export_dir") is not None and not isinstance(old["export_dir"], str):
        raise EdgeError(f"{path}: 'export_dir' must be a path.")
    return old
