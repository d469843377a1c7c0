"""The run directory: the contract between training and the later stages. Every file is written atomically.

    model.keras        trained tf_keras model (image in, probabilities out; preprocessing outside)
    labels.txt         one class name per line, in output order
    preprocess.json    how pixels become model input (edgekit_runtime.PreprocessSpec)
    config.yaml        the resolved training configuration (what --resume reads)
    run.json           data source and hash, class counts, library versions, seeds, status
    metrics.json       test metrics, timings, feature-cache hit
    history.json       per-epoch logs of each phase
    training_curves.png, confusion_matrix.png
    checkpoints/<phase>/  last.keras, best.weights.h5, state.json (for --resume)
"""
from __future__ import annotations

import dataclasses
import json
import os
import platform
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Tuple

import numpy as np
import yaml
from rich.table import Table

from edgekit import hardware
from edgekit.versions import package_versions
from edgekit.atomic import write_json, write_text, write_with
from edgekit.errors import EdgeError
from edgekit.progress import console
from edgekit.train import plots
from edgekit.train.data import CIFAR10_ENV, Dataset
from edgekit_runtime.artifacts import LABELS_FILE, PREPROCESS_FILE
from edgekit.train.metrics import classification_report
from edgekit_runtime import PreprocessSpec
from edgekit_runtime.errors import SpecError

if TYPE_CHECKING:
    from edgekit.train.config import TrainConfig

VERSIONED = ("tensorflow", "tf_keras", "tensorflow-hub", "numpy", "pillow", "edgekit", "edgekit-runtime")


def library_versions() -> Dict[str, str]:
    return {"python": platform.python_version(), "platform": platform.platform(), **package_versions(VERSIONED)}


def print_counts(data: Dataset) -> None:
    counts = data.counts()
    console.print(f"data: {data.source}  (hash {data.data_hash[:12]})", highlight=False, soft_wrap=True)
    table = Table(title="images per class", title_justify="left")
    table.add_column("class")
    for split in counts:
        table.add_column(split, justify="right")
    for name in data.class_names:
        table.add_row(name, *(f"{counts[s][name]:,}" for s in counts))
    table.add_row("[bold]total", *(f"[bold]{sum(counts[s].values()):,}" for s in counts))
    console.print(table)


class RunDir:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    def ckpt(self, phase: str) -> Path:
        return self.path / "checkpoints" / phase

    def write_start(self, cfg, spec, data: Dataset) -> None:
        write_text(self.path / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        write_text(self.path / LABELS_FILE, "\n".join(data.class_names) + "\n")
        write_json(self.path / PREPROCESS_FILE, spec.to_dict())
        self.run_info = {
            "status": "training",
            "data": {"source": data.source, "hash": data.data_hash, "counts": data.counts(),
                     "skipped_bad_files": data.bad_files},
            "seed": cfg.seed,
            "versions": library_versions(),
            "hardware": hardware.in_tensorflow(),  # the CPU and the oneDNN choice (edgekit/hardware.py)
            "command": " ".join(sys.argv),
        }
        write_json(self.path / "run.json", self.run_info)

    def record(self, key: str, value) -> None:
        """Add or replace one entry of run.json (e.g. the time budget's plan, then its outcome)."""
        self.run_info[key] = value
        write_json(self.path / "run.json", self.run_info)

    def write_final(self, model, data: Dataset, probs: np.ndarray, phases, info: dict) -> dict:
        # A fresh, uncompiled Model over the same layers saves without the optimizer state.
        bare = model.__class__(model.inputs, model.outputs, name=model.name)
        write_with(self.path / "model.keras", lambda p: bare.save(p))
        report = classification_report(data.test.y, probs, data.class_names)
        metrics = {"test": report, "params": int(model.count_params()), **info,
                   "phases": {name: {"epochs": s.epochs_done, "best_epoch": s.best_epoch, "seconds": s.seconds,
                                     "best_val_loss": s.to_dict()["best_val_loss"]} for name, s in phases.items()}}
        write_json(self.path / "metrics.json", metrics)
        write_json(self.path / "history.json", {name: s.history for name, s in phases.items()})
        plots.training_curves({name: s.history for name, s in phases.items()}, self.path / "training_curves.png")
        plots.confusion_matrix(report["confusion_matrix"], data.class_names, self.path / "confusion_matrix.png",
                               f"test top-1 {report['top1']:.2%} ({report['images']:,} images)")
        self.run_info["status"] = "complete"
        write_json(self.path / "run.json", self.run_info)
        return metrics


def read_labels(path: Path) -> List[str]:
    """The runtime's labels reader (one rule for every stage), plus: a trained classifier has two classes or more."""
    from edgekit_runtime.artifacts import read_labels as read
    from edgekit_runtime.errors import ModelError
    try:
        labels = read(Path(path))
    except ModelError as exc:
        raise EdgeError(str(exc)) from None
    if len(labels) < 2:
        raise EdgeError(f"{path}: lists {len(labels)} class; a classifier needs at least two, one per line.")
    return labels


def read_finished_run(run_dir: Path) -> Tuple["TrainConfig", PreprocessSpec, List[str]]:
    """(config, preprocessing, labels) of a finished run directory, or one sentence on what is missing."""
    from edgekit.train.config import build_config
    if not (run_dir / "model.keras").is_file():
        state = ""
        if (run_dir / "run.json").is_file():
            state = " (run.json says status: " + str(json.loads((run_dir / "run.json").read_text()).get("status")) + ")"
        raise EdgeError(f"{run_dir} has no model.keras{state}: not a finished `edge train` run directory.")
    for name in (LABELS_FILE, PREPROCESS_FILE, "config.yaml"):
        if not (run_dir / name).is_file():
            raise EdgeError(f"{run_dir} has model.keras but no {name}: the run directory is incomplete.")
    cfg = build_config(run_dir / "config.yaml", {})
    remembered = remembered_data(run_dir, cfg.data)
    if remembered != cfg.data:
        cfg = dataclasses.replace(cfg, data=remembered)
    try:
        spec = PreprocessSpec.load(run_dir / PREPROCESS_FILE)
    except SpecError as exc:
        raise EdgeError(str(exc)) from None
    return cfg, spec, read_labels(run_dir / LABELS_FILE)


def remembered_data(run_dir: Path, data: str) -> str:
    """The data a run was trained on, for the commands that follow it: `cifar10` resolved, as training
    resolved it, to the archive run.json names when this shell has no $EDGE_CIFAR10 (else the download
    would start). Anything else is returned as configured."""
    if data != "cifar10" or os.environ.get(CIFAR10_ENV):
        return data
    try:
        source = json.loads((run_dir / "run.json").read_text())["data"]["source"]
    except (OSError, ValueError, KeyError, TypeError):
        return data
    return source if isinstance(source, str) and source != "cifar10" and Path(source).exists() else data
