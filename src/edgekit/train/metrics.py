"""Classification metrics from predictions: top-1, per-class precision/recall/F1, confusion matrix."""
from __future__ import annotations

from typing import Dict, List

import numpy as np


def classification_report(y_true: np.ndarray, probs: np.ndarray, class_names: List[str]) -> Dict:
    return report_from_ranked(y_true, np.argsort(-probs, axis=1, kind="stable")[:, :5], class_names)


def report_from_ranked(y_true: np.ndarray, ranked: np.ndarray, class_names: List[str]) -> Dict:
    """The report from each image's classes ranked most probable first (N, >=1; top-5 needs 5 columns)."""
    k = len(class_names)
    y_true, ranked = np.asarray(y_true, np.int64), np.asarray(ranked, np.int64).reshape(len(y_true), -1)
    pred = ranked[:, 0]
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (y_true, pred), 1)
    tp = np.diag(cm).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(cm.sum(0) > 0, tp / cm.sum(0), 0.0)
        recall = np.where(cm.sum(1) > 0, tp / cm.sum(1), 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    top5 = None
    if k > 5 and ranked.shape[1] >= 5:
        top5 = float((ranked[:, :5] == y_true[:, None]).any(axis=1).mean()) if len(y_true) else 0.0
    return {
        "images": int(len(y_true)),
        "top1": float((pred == y_true).mean()) if len(y_true) else 0.0,
        "top5": top5,
        "per_class": {name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                             "support": int(cm[i].sum())} for i, name in enumerate(class_names)},
        "macro_f1": float(f1.mean()),
        "confusion_matrix": cm.tolist(),
    }
