"""Distillation targets: a finished run's probabilities for every training image, blended into the labels.

The teacher sees each un-augmented training image and its mirror image once (the mean of the two is
its answer, so a flipped view gets the same target); the result is cached per teacher model, data and
size. Asking the teacher on every augmented batch instead would cost a MobileNetV2 forward pass per
training image and step, several times a ResNet-8 training step on two cores.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional, Tuple

import numpy as np

from edgekit import cache
from edgekit.errors import EdgeError
from edgekit.progress import progress_bar
from edgekit.layout import RunLayout


def teacher_probabilities(run_dir: str, x: np.ndarray, class_names, data_hash: str, cache_dir: Optional[str],
                          batch_size: int = 256) -> Tuple[np.ndarray, bool, float]:
    """(N x classes float32 probabilities, cache hit, seconds) of the teacher run on images `x`."""
    from edgekit.train import models
    from edgekit.train.pipeline import predict_images
    from edgekit.train.rundir import read_finished_run
    t0 = time.perf_counter()
    run = Path(run_dir)
    _, spec, labels = read_finished_run(run)
    if list(labels) != list(class_names):
        raise EdgeError(f"teacher {run} knows the classes {', '.join(labels)}; this data has "
                        f"{', '.join(class_names)}: a teacher must answer in the same classes, in the same order.")
    key = {"kind": "teacher", "model": models.file_digest(RunLayout(run).model), "data": data_hash, "images": len(x),
           "size": list(spec.size)}
    entry = cache.cache_root("teacher", cache_dir) / cache.key_of(key)
    found = cache.load(entry, ["probs"])
    if found and found[0]["probs"].shape == (len(x), len(labels)):
        return found[0]["probs"], True, time.perf_counter() - t0
    model = models.load_model(RunLayout(run).model)
    out = np.zeros((len(x), len(labels)), np.float32)
    with progress_bar(f"teacher {run.name} on {len(x):,} images (and their mirror images)", 2 * len(x)) as advance:
        for flipped in (False, True):
            out += 0.5 * predict_images(model, x, spec, batch_size, advance, flip=flipped)
    cache.store(entry, {"probs": out}, key)
    return out, False, time.perf_counter() - t0


def soften(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T): T > 1 flattens a confident teacher so that its second choices (a cat's dog) show."""
    if temperature == 1.0:
        return probs
    z = np.log(np.maximum(probs, 1e-12)) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def blend(y: np.ndarray, probs: np.ndarray, weight: float, temperature: float = 1.0) -> np.ndarray:
    """Targets: `weight` x the teacher's (softened) probabilities + (1 - weight) x the one-hot label."""
    onehot = np.eye(probs.shape[1], dtype=np.float32)[y]
    return (weight * soften(probs, temperature) + (1 - weight) * onehot).astype(np.float32)
