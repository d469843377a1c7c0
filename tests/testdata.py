"""Test data the test modules share (no test module imports another): tiny labelled images on disk, a synthetic
but realistic bench report, a TF Hub-format module. Importing this needs no TensorFlow."""
from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ["red", "green", "blue"]
COLOURS = {"red": (200, 40, 40), "green": (40, 180, 60), "blue": (40, 60, 200)}


def make_image(rng: np.random.Generator, label: str, size=32) -> Image.Image:
    """A noisy image whose dominant colour is the class: learnable in a couple of epochs."""
    base = np.array(COLOURS[label], np.float32)
    arr = base + rng.normal(0, 25, (size, size, 3))
    arr[: size // 2] *= 0.8 + 0.4 * rng.random()
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def write_folder(root: Path, per_class_train=16, per_class_test=6, seed=0, size=32) -> Path:
    rng = np.random.default_rng(seed)
    for split, n in (("train", per_class_train), ("test", per_class_test)):
        for label in CLASSES:
            d = root / split / label
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                ext = "png" if i % 4 == 3 else "jpg"
                make_image(rng, label, size).save(d / f"{i:04d}.{ext}", quality=92)
    return root


LABELS = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CLASS_SPREAD = np.random.default_rng(1).normal(0, 0.06, len(LABELS))
EVIL = '<script>alert("x")</script> & "quotes"'


def _accuracy(rng: np.random.Generator, top1: float, agreement: float) -> dict:
    k, n = len(LABELS), 1000
    cm = np.zeros((k, k), np.int64)
    spread = CLASS_SPREAD + rng.normal(0, 0.012, k)  # classes differ alike in every model, plus a little noise
    recall = np.clip(top1 + spread - spread.mean(), 0.5, 0.99)  # per-class recall averaging to top1
    for i in range(k):
        right = int(round(recall[i] * n))
        wrong = rng.multinomial(n - right, rng.dirichlet(np.ones(k - 1) * 0.6))
        cm[i, i] = right
        cm[i, [j for j in range(k) if j != i]] = wrong
    tp = np.diag(cm)
    precision, recall = tp / np.maximum(cm.sum(0), 1), tp / cm.sum(1)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-9)
    return {"images": int(cm.sum()), "top1": float(tp.sum() / cm.sum()), "top5": min(0.999, top1 + 0.12),
            "agreement": agreement, "macro_f1": float(f1.mean()),
            "per_class": {lab: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                                "support": int(cm[i].sum())} for i, lab in enumerate(LABELS)},
            "confusion_matrix": cm.tolist()}


def _stats(samples: np.ndarray) -> dict:
    p50, p90, p99 = np.percentile(samples, [50, 90, 99])
    return {"n": len(samples), "p50_ms": float(p50), "p90_ms": float(p90), "p99_ms": float(p99),
            "mean_ms": float(samples.mean()), "std_ms": float(samples.std(ddof=1)), "min_ms": float(samples.min()),
            "max_ms": float(samples.max()), "samples_ms": [round(float(s), 4) for s in samples]}


def _latency(rng: np.random.Generator, base_ms: float, macs: int, skip_batch8: bool = False) -> list:
    out = []
    for threads in (1, 2):
        for batch in (1, 8):
            if skip_batch8 and batch == 8:
                out.append({"threads": threads, "batch": batch, "skipped": "the model takes a fixed batch of 1"})
                continue
            bare_ms = base_ms * batch ** 0.85 / threads ** 0.7
            entry = {"threads": threads, "batch": batch}
            for kind, factor in (("bare", 1.0), ("run", 1.04), ("e2e", 1.6)):
                entry[kind] = _stats(bare_ms * factor * rng.lognormal(0, 0.12, 120))
            entry["overhead_pct"] = round(100 * (entry["run"]["p50_ms"] / entry["bare"]["p50_ms"] - 1), 2)
            entry["throughput_ips"] = round(1000 * batch / entry["run"]["mean_ms"], 2)
            entry["gmacs_per_s"] = round(macs * batch / (entry["run"]["mean_ms"] / 1000) / 1e9, 3)
            out.append(entry)
    return out


def _artifact(rng, name, engine, status, size, base_ms, top1, agreement, reason=None, skip_batch8=False):
    macs = 41_000_000
    load = round(size / 2e7 + 0.002, 4)
    return {"name": name, "kind": "artifact", "device": "local", "status": status,
            "symbol": {"passed": "✅", "outside_tolerance": "❎", "failed": "❌"}[status], "reason": reason,
            "file": f"model_{name}.{'onnx' if engine == 'onnx' else 'tflite'}", "engine": engine,
            "summary": f"{name} export", "size_bytes": size, "macs": macs,
            "accuracy": _accuracy(rng, top1, agreement),
            "cold": {"interpreter_s": 0.021, "import_s": 0.18, "engine_import_s": 0.09 if engine == "litert" else 0.21,
                     "load_s": load, "first_inference_s": base_ms / 400, "cold_start_s": None},
            "memory": {"peak_rss_after_load_mb": 55 + size / 1e5, "peak_rss_mb": 62 + size / 5e4},
            "latency": _latency(rng, base_ms, macs, skip_batch8), "headline": {"threads": 1, "batch": 1}}


def _cold_total(row: dict) -> dict:
    cold = row.get("cold")
    if cold:
        cold["cold_start_s"] = round(sum(v for v in cold.values() if v), 4)
    return row


def make_report() -> dict:
    rng = np.random.default_rng(0)
    fingerprint = {"hostname": "bench-box", "board": None, "cpu": "AMD EPYC 7B13", "architecture": "x86_64",
                   "cores": 2, "usable_cores": 2,
                   "cpu_freq": {"governor": "performance", "cur_mhz": 2450.0, "max_mhz": 3500.0, "min_mhz": 1500.0},
                   "os": "Debian GNU/Linux 12 (bookworm)", "kernel": "6.1.0-18-amd64", "python": "3.11.2",
                   "packages": {"ai-edge-litert": "2.3.0", "onnxruntime": "1.22.0", "numpy": "2.1.3"},
                   "memory_mb": 7940}
    rows = [
        {"name": "keras", "kind": "reference", "device": "local", "status": "passed", "symbol": "✅", "reason": None,
         "engine": "tensorflow", "size_bytes": 1_020_000, "macs": 41_000_000,
         "accuracy": _accuracy(rng, 0.86, 1.0)},
        _artifact(rng, "tflite-fp32", "litert", "passed", 330_000, 0.62, 0.86, 1.0),
        _artifact(rng, "tflite-fp16", "litert", "passed", 170_000, 0.65, 0.86, 0.999, skip_batch8=True),
        _artifact(rng, "tflite-int8", "litert", "passed", 105_000, 0.29, 0.853, 0.985),
        _artifact(rng, "tflite-dynamic", "litert", "outside_tolerance", 108_000, 0.44, 0.84, 0.97,
                  reason="convert: top-1 agreement 97.0 % < 98 % " + EVIL),
        _artifact(rng, "onnx-fp32", "onnx", "passed", 320_000, 0.95, 0.86, 1.0),
        {"name": "onnx-int8", "kind": "artifact", "device": "local", "status": "failed", "symbol": "❌",
         "reason": "benchmark: the engine refused the model " + EVIL},
    ]
    rows[3]["layers"] = {"errors": [{"layer": f"model/block_{i}/conv" + (EVIL if i == 2 else ""), "op": "CONV_2D",
                                     "error": round(0.9 / (i + 1), 4), "rmse_steps": 0.3} for i in range(15)],
                         "kept_in_float": ["model/block_0/conv"]}
    return {"schema_version": 1, "created": "2026-11-23T12:00:00+00:00", "command": "edge bench runs/x <b>",
            "run_dir": "runs/resnet8-<i>x", "export_dir": "runs/x/export", "labels": LABELS,
            "settings": {"threads": [1, 2], "batch": [1, 8], "runs": 120, "warmup": 5, "min_time": 0.0,
                         "samples": 10000},
            "test_set": {"images": 10000, "split": "test", "per_class": {lab: 1000 for lab in LABELS}},
            "devices": [{"id": "local", "host": None, "fingerprint": fingerprint,
                         "health_before": {"temperature_c": 45.2, "throttled": None},
                         "health_after": {"temperature_c": 51.0, "throttled": None}}],
            "rows": [_cold_total(r) for r in rows],
            "comparison": {"baseline": "old/report.json", "max_accuracy_drop_pp": 0.5, "max_latency_growth_pct": 10,
                           "passed": False,
                           "checks": [{"name": "tflite-int8", "metric": "top1", "old": 0.86, "new": 0.853,
                                       "change": "-0.7 pp", "limit": "0.5 pp", "ok": False},
                                      {"name": "tflite-int8", "metric": "p50_ms", "old": 0.3, "new": 0.29,
                                       "change": "-3.3 %", "limit": "10 %", "ok": True}]}}


def make_hub_module(path):
    """A TF2 SavedModel with the TF Hub image feature-vector signature: [0,1] images → pooled features."""
    import tensorflow as tf

    class FeatureVector(tf.Module):
        def __init__(self):
            super().__init__()
            self.kernel = tf.Variable(tf.random.stateless_normal((3, 8), seed=(1, 2)))

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
        def __call__(self, images):
            return tf.nn.relu(tf.reduce_mean(images, axis=[1, 2]) @ self.kernel)

    tf.saved_model.save(FeatureVector(), str(path))
    return path


# ------------------------------------------------------------------------------- bundles (edge pack)
# `make venv` downloads this machine's device-side wheels there, so packing needs no network here.
WHEELHOUSE = Path(os.environ.get("EDGE_TEST_WHEELHOUSE", Path(sys.prefix) / "wheelhouse"))
PY = "%d.%d" % sys.version_info[:2]
ARCH = os.uname().machine


def unpack(path: Path, where: Path) -> Path:
    with tarfile.open(path) as tar:
        names = {n.split("/")[0] for n in tar.getnames()}
        tar.extractall(where, filter="data")
    assert len(names) == 1
    return where / names.pop()


def install(root: Path):
    env = {**os.environ, "PYTHON": sys.executable, "PIP_NO_INDEX": "1"}
    return subprocess.run([str(root / "install.sh")], capture_output=True, text=True, env=env, timeout=600)
