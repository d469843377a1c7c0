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

import platform
import sys
from pathlib import Path
from typing import Dict

import numpy as np
import yaml
from rich.table import Table

from edgekit.versions import package_versions
from edgekit.atomic import write_json, write_text, write_with
from edgekit.progress import console
from edgekit.train import plots
from edgekit.train.data import Dataset
from edgekit.train.metrics import classification_report

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
        write_text(self.path / "labels.txt", "\n".join(data.class_names) + "\n")
        write_json(self.path / "preprocess.json", spec.to_dict())
        self.run_info = {
            "status": "training",
            "data": {"source": data.source, "hash": data.data_hash, "counts": data.counts(),
                     "skipped_bad_files": data.bad_files},
            "seed": cfg.seed,
            "versions": library_versions(),
            "command": " ".join(sys.argv),
        }
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
