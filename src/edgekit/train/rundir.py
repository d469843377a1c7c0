"""The run directory as training writes it (every file atomically; its layout: edgekit.layout.RunLayout) and
as the later stages read a finished one (read_finished_run)."""
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
from edgekit.train.metrics import classification_report
from edgekit_runtime import PreprocessSpec
from edgekit_runtime.errors import SpecError
from edgekit.layout import MODEL, RUN_INFO, RunLayout
from edgekit_runtime.artifacts import read_labels as read
from edgekit_runtime.errors import ModelError

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
        self.layout = RunLayout(self.path)
        self.path.mkdir(parents=True, exist_ok=True)

    def ckpt(self, phase: str) -> Path:
        return self.layout.checkpoint(phase)

    def write_start(self, cfg, spec, data: Dataset) -> None:
        write_text(self.layout.config, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        write_text(self.layout.labels, "\n".join(data.class_names) + "\n")
        write_json(self.layout.preprocess, spec.to_dict())
        self.run_info = {
            "status": "training",
            "data": {"source": data.source, "hash": data.data_hash, "counts": data.counts(),
                     "skipped_bad_files": data.bad_files},
            "seed": cfg.seed,
            "versions": library_versions(),
            "hardware": hardware.in_tensorflow(),  # the CPU and the oneDNN choice (edgekit/hardware.py)
            "command": " ".join(sys.argv),
        }
        write_json(self.layout.run_info, self.run_info)

    def record(self, key: str, value) -> None:
        """Add or replace one entry of run.json (e.g. the time budget's plan, then its outcome)."""
        self.run_info[key] = value
        write_json(self.layout.run_info, self.run_info)

    def write_final(self, model, data: Dataset, probs: np.ndarray, phases, info: dict) -> dict:
        # A fresh, uncompiled Model over the same layers saves without the optimizer state.
        bare = model.__class__(model.inputs, model.outputs, name=model.name)
        write_with(self.layout.model, lambda p: bare.save(p))
        report = classification_report(data.test.y, probs, data.class_names)
        metrics = {"test": report, "params": int(model.count_params()), **info,
                   "phases": {name: {"epochs": s.epochs_done, "best_epoch": s.best_epoch, "seconds": s.seconds,
                                     "best_val_loss": s.to_dict()["best_val_loss"]} for name, s in phases.items()}}
        write_json(self.layout.metrics, metrics)
        write_json(self.layout.history, {name: s.history for name, s in phases.items()})
        plots.training_curves({name: s.history for name, s in phases.items()}, self.layout.curves)
        plots.confusion_matrix(report["confusion_matrix"], data.class_names, self.layout.confusion,
                               f"test top-1 {report['top1']:.2%} ({report['images']:,} images)")
        self.run_info["status"] = "complete"
        write_json(self.layout.run_info, self.run_info)
        return metrics


def read_labels(path: Path) -> List[str]:
    """The runtime's labels reader (one rule for every stage), plus: a trained classifier has two classes or more."""
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
    run = RunLayout(run_dir)
    if not run.model.is_file():
        state = ""
        if run.run_info.is_file():
            state = f" ({RUN_INFO} says status: " + str(json.loads(run.run_info.read_text()).get("status")) + ")"
        raise EdgeError(f"{run_dir} has no {MODEL}{state}: not a finished `edge train` run directory.")
    for path in (run.labels, run.preprocess, run.config):
        if not path.is_file():
            raise EdgeError(f"{run_dir} has {MODEL} but no {path.name}: the run directory is incomplete.")
    cfg = build_config(run.config, {})
    remembered = remembered_data(run_dir, cfg.data)
    if remembered != cfg.data:
        cfg = dataclasses.replace(cfg, data=remembered)
    try:
        spec = PreprocessSpec.load(run.preprocess)
    except SpecError as exc:
        raise EdgeError(str(exc)) from None
    return cfg, spec, read_labels(run.labels)


def remembered_data(run_dir: Path, data: str) -> str:
    """The data a run was trained on, for the commands that follow it: `cifar10` resolved, as training
    resolved it, to the archive run.json names when this shell has no $EDGE_CIFAR10 (else the download
    would start). Anything else is returned as configured."""
    if data != "cifar10" or os.environ.get(CIFAR10_ENV):
        return data
    try:
        source = json.loads(RunLayout(run_dir).run_info.read_text())["data"]["source"]
    except (OSError, ValueError, KeyError, TypeError):
        return data
    return source if isinstance(source, str) and source != "cifar10" and Path(source).exists() else data
