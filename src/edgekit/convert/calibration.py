"""Calibration and validation images, preprocessed exactly as in training.

Calibration: a seeded sample of the *training* split, balanced across classes, so that every class
shapes the activation ranges the quantizer picks. Validation: held-out images the model never fitted
(the run's test split, topped up from its val split), so that parity and accuracy figures mean
something. Both go through edgekit.train.pipeline.to_model_input, the function training used.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np
import tensorflow as tf

from edgekit.errors import EdgeError
from edgekit.helpers import balanced_indices
from edgekit.progress import console
from edgekit.train.data import GLOB_CHARS, Dataset, NoClassFolders, load_dataset, read_unlabeled
from edgekit.train.images import ImageRows
from edgekit.train.pipeline import to_model_input
from edgekit_runtime import PreprocessSpec
from edgekit.layout import RunLayout


@dataclass
class Images:
    """uint8 RGB images (N, H, W, 3) with their labels (indices into the model's labels)."""

    x: np.ndarray
    y: Optional[np.ndarray]
    spec: PreprocessSpec
    split: str = ""
    seed: int = 0
    per_class: Dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.x)

    def batches(self, batch_size: int = 64) -> Iterator[np.ndarray]:
        """Float32 model input, batch by batch (a 1,000-image 224 px set would be 600 MB at once)."""
        for start in range(0, len(self.x), batch_size):
            yield model_input(self.x[start:start + batch_size], self.spec)

    def representative(self) -> Iterator[List[np.ndarray]]:
        """One image at a time, as the TFLite converter's representative_dataset expects."""
        for batch in self.batches(32):
            for i in range(len(batch)):
                yield [batch[i:i + 1]]

    def describe(self) -> dict:
        return {"images": len(self), "split": self.split, "seed": self.seed, "per_class": self.per_class}


def model_input(pixels: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    return to_model_input(tf.convert_to_tensor(pixels), spec).numpy()


def check_images(x: np.ndarray, spec: PreprocessSpec, what: str) -> None:
    """Images must be a non-empty uint8 (N, H, W, 3) batch; the size may differ (to_model_input resizes)."""
    if not isinstance(x, (np.ndarray, ImageRows)) or x.ndim != 4 or x.shape[-1] != 3:
        shape = getattr(x, "shape", type(x).__name__)
        raise EdgeError(f"{what} images have shape {shape}; expected uint8 RGB images (N, H, W, 3) "
                        f"for a {spec.height}x{spec.width}x3 model.")
    if x.dtype != np.uint8:
        raise EdgeError(f"{what} images are {x.dtype}; expected uint8 pixels 0..255 (preprocessing is applied here).")
    if len(x) == 0:
        raise EdgeError(f"no {what} images: the data set's split is empty.")


def load_images(source, data: Optional[str] = None) -> Dataset:
    """The data set the source points at, with labels renumbered into the model's output order."""
    data = data or source.data
    if not data:
        raise EdgeError(f"{source.path.name}: calibration and validation need images: pass --data PATH "
                        "(a folder or .tar.gz with train/<class>/ and optionally test/<class>/, or cifar10; or "
                        "any folder, archive or glob of images without labels).")
    try:
        if GLOB_CHARS & set(data):
            dataset = read_unlabeled(data, source.spec.size)
        else:
            try:
                dataset = load_dataset(data, source.spec.size, **source.data_options)
            except NoClassFolders:  # images without class folders: representative inputs, no labels
                dataset = read_unlabeled(data, source.spec.size)
    except EdgeError as exc:
        raise EdgeError(f"calibration data: {exc} Pass --data PATH to use other images.") from None
    if dataset.bad_files:
        console.print(f"[yellow]skipped[/] {len(dataset.bad_files)} unreadable image(s), e.g. {dataset.bad_files[0]}",
                      highlight=False, soft_wrap=True)
    if not dataset.labeled:
        return dataset
    _warn_if_changed(source, dataset, data)
    missing = sorted(set(dataset.class_names) - set(source.labels))
    if missing:
        raise EdgeError(f"calibration data {data} has classes the model does not know: {', '.join(missing[:5])}"
                        f"{' …' if len(missing) > 5 else ''}; its class folders must match the labels.")
    remap = np.array([source.labels.index(c) for c in dataset.class_names], np.int32)
    for split in (dataset.train, dataset.val, dataset.test):
        split.y = remap[split.y] if len(split.y) else split.y
    return dataset


def _warn_if_changed(source, dataset: Dataset, data: str) -> None:
    """A run's own data that no longer hashes as it did in training: say so once (the figures are on today's)."""
    if source.kind != "run" or data != source.data:
        return
    try:
        trained = json.loads(RunLayout(source.path).run_info.read_text())["data"]["hash"]
    except (OSError, ValueError, KeyError, TypeError):
        return
    if trained and trained != dataset.data_hash:
        console.print(f"[yellow]note:[/] {data} has changed since {source.path.name} was trained (data hash "
                      f"{trained[:12]} then, {dataset.data_hash[:12]} now): its splits and figures are of today's files.",
                      highlight=False, soft_wrap=True)


def _counts(y: np.ndarray, labels: Sequence[str]) -> Dict[str, int]:
    return {labels[c]: int((y == c).sum()) for c in np.unique(y)}


def calibration_images(x: np.ndarray, y: np.ndarray, n: int, seed: int, spec: PreprocessSpec,
                       labels: Sequence[str]) -> Images:
    """A seeded, class-balanced sample of n training images."""
    if n < 1:
        raise EdgeError(f"--calib-samples must be at least 1, got {n}.")
    check_images(x, spec, "calibration")
    idx = balanced_indices(y, n, seed)
    return Images(x[idx], y[idx], spec, "train", seed, _counts(y[idx], labels))


def validation_images(dataset: Dataset, n: int, seed: int, spec: PreprocessSpec, labels: Sequence[str]) -> Images:
    """n held-out images: the test split first (what metrics.json reports on), then the val split."""
    if n < 1:
        raise EdgeError(f"--val-samples must be at least 1, got {n}.")
    parts = [(name, s) for name, s in (("test", dataset.test), ("val", dataset.val)) if len(s.y)]
    if not parts:
        raise EdgeError("no held-out images to validate on: the data set has neither a test nor a val split.")
    name, first = parts[0]
    if len(first.y) >= n or len(parts) == 1:
        xs, y = [first.x], first.y
    else:
        name = "test+val"
        xs = [s.x for _, s in parts] if len({s.x.shape[1:] for _, s in parts}) == 1 else [first.x]
        y = np.concatenate([s.y for _, s in parts]) if len(xs) > 1 else first.y
    for x in xs:
        check_images(x, spec, "validation")
    idx = np.sort(balanced_indices(y, n, seed + 1))
    return Images(_rows(xs, idx), y[idx], spec, name, seed + 1, _counts(y[idx], labels))


def search_images(dataset: Dataset, n: int, seed: int, spec: PreprocessSpec, labels: Sequence[str],
                  validation: Images) -> Optional[Images]:
    """n images of the val split for int8's choice of activation ranges and the mixed formats' search, when
    validation did not draw on it (it took the test split alone); else None (the search uses the calibration
    images). Held out from training like the test split, so the agreement the search reaches is the one validation
    will see, within sampling noise."""
    if validation.split != "test" or not len(dataset.val.y):
        return None
    check_images(dataset.val.x, spec, "search")
    idx = np.sort(balanced_indices(dataset.val.y, min(n, len(dataset.val.y)), seed + 2))
    return Images(_rows([dataset.val.x], idx), dataset.val.y[idx], spec, "val", seed + 2,
                  _counts(dataset.val.y[idx], labels))


def _rows(xs: Sequence[np.ndarray], idx: np.ndarray) -> np.ndarray:
    """Rows `idx` (sorted) of the images xs end to end, reading only those: a split of the decoded cache is
    read where it lies rather than copied whole."""
    out, start = [], 0
    for x in xs:
        mine = idx[(idx >= start) & (idx < start + len(x))] - start
        out.append(x[mine])
        start += len(x)
    return np.concatenate(out) if len(out) > 1 else out[0]


def unlabeled_images(dataset: Dataset, calib_n: Optional[int], val_n: int, seed: int,
                     spec: PreprocessSpec) -> "tuple[Optional[Images], Images, str]":
    """Calibration and validation images drawn from one unlabelled pool without overlap (shared in the asked
    proportion when the pool is short), and a sentence saying how many each got."""
    if val_n < 1 or (calib_n is not None and calib_n < 1):
        raise EdgeError(f"--{'val' if val_n < 1 else 'calib'}-samples must be at least 1.")
    pool = dataset.test.x
    check_images(pool, spec, "unlabelled")
    n = len(pool)
    if n < (2 if calib_n else 1):
        raise EdgeError(f"only {n} readable image(s) in the data: calibration and validation need at least one each.")
    order = np.random.default_rng([seed, 5]).permutation(n)
    if not calib_n:
        n_val, n_cal = min(val_n, n), 0
    elif n >= val_n + calib_n:
        n_val, n_cal = val_n, calib_n
    else:  # short: shared in the asked proportion, at least one each
        n_val = min(n - 1, max(1, round(n * val_n / (val_n + calib_n))))
        n_cal = n - n_val
    val = Images(pool[np.sort(order[:n_val])], None, spec, "unlabelled", seed)
    calib = Images(pool[np.sort(order[n_val:n_val + n_cal])], None, spec, "unlabelled", seed) if calib_n else None
    short = [f"{what} {got} of {asked} asked" for what, got, asked in
             (("validation", n_val, val_n), ("calibration", n_cal, calib_n or 0)) if asked and got < asked]
    said = (f"{n:,} unlabelled image(s): validation {n_val:,}" + (f", calibration {n_cal:,} (no overlap)" if calib_n else "")
            + "; without labels, parity and agreement with the source model only"
            + (f" ({'; '.join(short)}: the data has no more)" if short else ""))
    return calib, val, said
