"""A self-contained plan directory for `edge-run bench`: artifacts, test images, plan.json.

The same directory is run locally or copied as it is to a device. Accuracy images are written as
lossless PNG, so the runtime sees exactly the pixels the Keras reference saw (re-encoding as JPEG
would move them); the latency and cold-start images are JPEGs, so end-to-end latency includes a real
JPEG decode, as on a camera-fed device.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np
from PIL import Image

from edgekit.atomic import write_json
from edgekit.benchmarks.config import BenchConfig
from edgekit_runtime.artifacts import LABELS_FILE, PREPROCESS_FILE

SIDE_FILES = (LABELS_FILE, PREPROCESS_FILE)


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not allowed
        shutil.copy2(src, dst)


def write_plan(plan_dir: Path, artifacts: Sequence[Tuple[str, Path]], export_dir: Path, x: np.ndarray,
               y: np.ndarray, cfg: BenchConfig, latency_picks: Sequence[int]) -> Path:
    """Fill plan_dir and return its plan.json. `latency_picks` index into x."""
    (plan_dir / "artifacts").mkdir(parents=True, exist_ok=True)
    (plan_dir / "images").mkdir(exist_ok=True)
    (plan_dir / "latency").mkdir(exist_ok=True)
    for name in SIDE_FILES:
        _link_or_copy(export_dir / name, plan_dir / "artifacts" / name)
    entries = []
    for name, path in artifacts:
        _link_or_copy(path, plan_dir / "artifacts" / path.name)
        entries.append({"name": name, "file": f"artifacts/{path.name}"})
    images = []
    for i, (img, label) in enumerate(zip(x, y)):
        rel = f"images/{i:05d}.png"
        Image.fromarray(img).save(plan_dir / rel, compress_level=1)
        images.append({"file": rel, "label": int(label)})
    latency: List[str] = []
    for j in latency_picks:
        rel = f"latency/{j:05d}.jpg"
        Image.fromarray(x[j]).save(plan_dir / rel, quality=95)
        latency.append(rel)
    plan = {"artifacts": entries, "images": images, "latency_images": latency,
            "threads": list(cfg.threads) or [None], "batch": list(cfg.batch), "runs": cfg.runs,
            "warmup": cfg.warmup, "min_time": cfg.min_time, "max_time": cfg.max_time, "accuracy": True,
            "accuracy_batch": 32, "top_k": 5}
    write_json(plan_dir / "plan.json", plan)
    return plan_dir / "plan.json"


def plan_settings(plan_file: Path) -> dict:
    return json.loads(plan_file.read_text())
