"""PNG plots of a run: training curves per phase and the test confusion matrix."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from edgekit.atomic import write_with  # noqa: E402


def training_curves(phases: Dict[str, List[dict]], path: Path) -> None:
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    offset = 0
    for name, history in phases.items():
        if not history:
            continue
        epochs = [offset + h["epoch"] - (history[0]["epoch"] - 1) for h in history]
        for ax, key in ((ax_loss, "loss"), (ax_acc, "accuracy")):
            prefix = f"{name} " if len(phases) > 1 else ""
            ax.plot(epochs, [h.get(key) for h in history], "-o", ms=3, label=f"{prefix}train")
            if any(f"val_{key}" in h for h in history):
                ax.plot(epochs, [h.get(f"val_{key}") for h in history], "--o", ms=3, label=f"{prefix}validation")
        offset = epochs[-1]
        if len(phases) > 1:
            for ax in (ax_loss, ax_acc):
                ax.axvline(offset + 0.5, color="grey", lw=0.5)
    for ax, title in ((ax_loss, "loss"), (ax_acc, "accuracy")):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    write_with(path, lambda p: fig.savefig(p, dpi=110))
    plt.close(fig)


def confusion_matrix(cm: List[List[int]], class_names: List[str], path: Path, title: str) -> None:
    cm_arr = np.asarray(cm, dtype=np.float64)
    rows = cm_arr / np.maximum(cm_arr.sum(axis=1, keepdims=True), 1)
    k = len(class_names)
    fig, ax = plt.subplots(figsize=(1.6 + 0.55 * k, 1.2 + 0.5 * k))
    ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), class_names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), class_names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    if k <= 20:
        for i in range(k):
            for j in range(k):
                ax.text(j, i, f"{int(cm_arr[i, j])}", ha="center", va="center", fontsize=7,
                        color="white" if rows[i, j] > 0.5 else "black")
    fig.tight_layout()
    write_with(path, lambda p: fig.savefig(p, dpi=110))
    plt.close(fig)
