"""Hard-example sampling: after the warm-up, each epoch draws its images from the ones the model finds hardest.

Every few epochs the network scores every training image (un-augmented, one inference pass: its loss on the
image's target); the easiest `hard_examples` share is then left out and the rest fill the epoch, so an epoch
keeps its number of steps (and the schedule its shape) while spending them where the loss is. Scores are kept
in the phase's checkpoint folder, so `--resume` draws the same batches.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable, Dict, Optional

import numpy as np

from edgekit.atomic import write_with

RESCORE_SHARE = 0.08   # of the planned epochs between two scorings (about 12 scorings in a run)
SCORES_FILE = "hard_scores.npz"


def losses(probs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Cross-entropy of each image's predicted probabilities against its target (class index or distribution)."""
    p = np.maximum(probs, 1e-7)
    if targets.ndim == 1:
        return -np.log(p[np.arange(len(targets)), targets])
    return -(targets * np.log(p)).sum(axis=1)


class HardExamples:
    """Which images each epoch draws; `callback()` rescores them as training goes."""

    def __init__(self, drop: float, folder: Path, score: Callable[[object], np.ndarray]):
        self.drop, self.path, self.score = drop, folder / SCORES_FILE, score
        self.scored: Dict[int, np.ndarray] = {}   # epochs done when scored → losses
        self.scorings, self.seconds = 0, 0.0       # this process's, for metrics.json
        if self.path.is_file():
            with np.load(self.path) as f:
                self.scored = {int(k): f[k] for k in f.files}

    def order(self, rng: np.random.Generator, n: int, epoch: int) -> np.ndarray:
        """The n indices epoch `epoch` (0-based) draws. It reads scores taken at least one whole epoch before it
        starts: the input pipeline reads ahead into epoch e+1 before epoch e's end, where scoring happens, and
        a resumed run must draw what the interrupted one drew."""
        usable = [e for e in self.scored if e <= epoch - 1]
        if not usable or not self.drop:
            return rng.permutation(n)
        scores = self.scored[max(usable)]
        keep = np.argsort(scores, kind="stable")[int(round(self.drop * n)):]
        repeats = -(-n // len(keep))
        return np.concatenate([rng.permutation(keep) for _ in range(repeats)])[:n]

    def summary(self) -> dict:
        return {"share_left_out": self.drop, "scorings": self.scorings, "seconds": round(self.seconds, 1)}

    def due(self, epochs_done: int, planned: int, warmup_fraction: float) -> bool:
        first = max(1, round(warmup_fraction * planned))
        every = max(1, round(RESCORE_SHARE * planned))
        # scores taken after epoch k are first drawn from in epoch k + 2: none are taken that no epoch would use
        return first <= epochs_done <= planned - 2 and (epochs_done - first) % every == 0

    def _save(self, path: Path) -> None:
        with open(path, "wb") as fh:  # np.savez would add .npz to a temporary name
            np.savez(fh, **{str(e): s for e, s in self.scored.items()})

    def callback(self, planned: Callable[[], int], warmup_fraction: float):
        """A Keras callback that rescores the images when due (`planned()`: the phase's planned epochs now)."""
        import tf_keras as keras
        owner = self

        class Rescore(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                done = epoch + 1
                if owner.due(done, planned(), warmup_fraction):
                    # the epoch after this one still draws from the latest scores before these
                    latest = max(owner.scored, default=None)
                    t = time.perf_counter()
                    scores = owner.score(self.model).astype(np.float32)
                    owner.scored = {**({latest: owner.scored[latest]} if latest is not None else {}), done: scores}
                    write_with(owner.path, owner._save)
                    took = time.perf_counter() - t
                    owner.scorings, owner.seconds = owner.scorings + 1, owner.seconds + took
                    print(f"hard examples: {len(scores):,} images rescored in {took:.1f} s; from epoch {done + 2} "
                          f"the easiest {owner.drop:.0%} are left out", file=sys.stderr)

        return Rescore()


def for_split(drop: float, folder: Path, x: np.ndarray, targets: np.ndarray, spec) -> Optional[HardExamples]:
    """The sampler of a training split (None when `drop` is 0): scored by the model being trained."""
    if not drop:
        return None
    from edgekit.train.pipeline import predict_images
    return HardExamples(drop, folder, lambda model: losses(predict_images(model, x, spec, 512), targets))
