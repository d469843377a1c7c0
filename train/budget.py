"""Time budgets: measure a training step and the input pipeline, then choose the epochs that fit."""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Iterable, List, Optional

import numpy as np

from edgekit.errors import EdgeError

# Share of the input pipeline's own time that is not hidden behind the training step: on two cores
# both compete for the same CPUs, so part of it shows up in the step time.
INPUT_NOT_OVERLAPPED = 0.5
MARGIN = 0.03                # planned time is kept this fraction below the budget
CHECKPOINT_SECONDS = 0.5     # writing last.keras + state.json after each epoch (small models)
WRITING_SECONDS = 8.0        # model.keras, metrics, plots at the end
MAX_GROWTH = 2.0             # a plan made on a slow spell may grow to this multiple once epochs are timed


@dataclass
class Probe:
    step_seconds: float              # one training step, median, input excluded
    input_seconds: float             # one batch from the input pipeline alone, median
    infer_seconds_per_image: float   # inference (validation, test) per image
    batches: int
    trace_seconds: float = 0.0       # the first step's extra time (graph tracing), paid again by fit()

    @property
    def input_share(self) -> float:
        return self.input_seconds / (self.step_seconds + self.input_seconds)

    def describe(self, batch_size: int) -> str:
        return (f"input pipeline {self.input_seconds * 1e3:.1f} ms per batch alone, {self.input_share:.0%} of the "
                f"{(self.step_seconds + self.input_seconds) * 1e3:.0f} ms a step costs with it; "
                f"training {batch_size / self.step_seconds:,.0f} images/s, inference {1 / self.infer_seconds_per_image:,.0f} images/s")

    def to_dict(self) -> dict:
        return {**asdict(self), "input_share": self.input_share}


def probe(model, batches: Iterable, infer_batch, steps: int = 16, warmup: int = 2) -> Probe:
    """Time `steps` training steps and the batches feeding them; the model's weights are put back after,
    so the caller recompiles with a fresh optimizer (its schedule depends on the plan)."""
    weights = model.get_weights()
    fetched, input_times = _fetch_timed(batches, warmup + steps, warmup)
    if len(fetched) <= warmup:
        raise EdgeError("the training set is too small to time a step for the time budget; drop time_budget.")
    step_times: List[float] = []
    first = 0.0
    for i, (x, y) in enumerate(fetched):
        t = time.perf_counter()
        model.train_on_batch(x, y)
        if i == 0:
            first = time.perf_counter() - t
        if i >= warmup:
            step_times.append(time.perf_counter() - t)
    model.predict_on_batch(infer_batch)
    t = time.perf_counter()
    for _ in range(2):
        model.predict_on_batch(infer_batch)
    infer = (time.perf_counter() - t) / (2 * len(infer_batch))
    model.set_weights(weights)
    # 16 steps, not 8: steps come in two speeds on two shared cores (bfloat16 ResNet-8: ~85 ms, and ~150 ms in
    # runs of up to five), and the median of 8 could land on the slow ones (a 6-epoch plan for 9 epochs' time)
    step = float(np.median(step_times))
    return Probe(step, float(np.median(input_times)), infer, len(step_times), max(0.0, first - step))


def _fetch_timed(batches: Iterable, count: int, warmup: int):
    """Up to `count` batches, and the seconds each one after the first `warmup` took to arrive."""
    it, fetched, times = iter(batches), [], []
    for i in range(count):
        t = time.perf_counter()
        try:
            fetched.append(next(it))
        except StopIteration:
            break
        if i >= warmup:
            times.append(time.perf_counter() - t)
    return fetched, times


def input_seconds(batches: Iterable, steps: int = 8, warmup: int = 2) -> Optional[float]:
    """The input pipeline alone: median seconds per batch, or None when there are too few batches."""
    times = _fetch_timed(batches, warmup + steps, warmup)[1]
    return float(np.median(times)) if times else None


def epoch_seconds(p: Probe, steps_per_epoch: int, val_images: int, val_seconds: Optional[float] = None,
                  checkpoint_seconds: float = CHECKPOINT_SECONDS) -> float:
    """Steps, validation (timed when given, else from the inference rate) and the epoch's checkpoint writes."""
    step = p.step_seconds + INPUT_NOT_OVERLAPPED * p.input_seconds
    val = val_seconds if val_seconds is not None else val_images * p.infer_seconds_per_image
    return steps_per_epoch * step + val + checkpoint_seconds


def growth_cap(planned: int) -> int:
    """The most epochs a plan may grow to once the epochs' own times are known (see fit.Checkpointer)."""
    return max(planned + 1, math.ceil(planned * MAX_GROWTH))


def plan_epochs(budget_seconds: float, elapsed_seconds: float, per_epoch: float, after_training: float,
                max_epochs: Optional[int] = None) -> int:
    """The most whole epochs that end, with evaluation and writing, within (1 - MARGIN) of the budget.

    Raises EdgeError, before any training, when not even one fits.
    """
    left = budget_seconds * (1 - MARGIN) - elapsed_seconds - after_training
    epochs = int(left // per_epoch) if per_epoch > 0 else 0
    if epochs < 1:
        need = (elapsed_seconds + after_training + per_epoch) / (1 - MARGIN)
        raise EdgeError(f"time budget of {budget_seconds / 60:.1f} min cannot hold one epoch: {elapsed_seconds:.0f} s are "
                        f"spent before training (data, caches, timing), one epoch takes about {per_epoch:.0f} s and "
                        f"evaluating and writing about {after_training:.0f} s. Give at least "
                        f"{math.ceil(need / 6) / 10:.1f} min, or train on fewer images (--limit-per-class).")
    return min(epochs, max_epochs) if max_epochs else epochs
