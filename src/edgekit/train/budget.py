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
# A plan is re-made after every epoch; with fewer than this many, one misjudged epoch overruns the budget
# (an AVX2 demo planned 2 epochs of ~105 s and ended 12 % late), so short budgets train in rounds of part
# of an epoch instead, and a budget that cannot hold one whole epoch still trains on part of the data.
MIN_ROUNDS = 6
ROUND_SPLITS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32)   # rounds per epoch that a plan may choose


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


@dataclass
class Plan:
    """What a time budget chose: `rounds` rounds of `steps` steps, `split` rounds making one epoch."""
    rounds: int
    split: int
    steps: int
    round_seconds: float

    @property
    def epochs(self) -> float:
        return self.rounds / self.split

    def describe(self) -> str:
        if self.split == 1:
            return f"{self.rounds} epochs of ~{self.round_seconds:.0f} s"
        return (f"{self.rounds} rounds of 1/{self.split} epoch ({self.steps} steps, ~{self.round_seconds:.0f} s each; "
                f"{self.epochs:.2g} epochs in all)")


def plan_rounds(budget_seconds: float, elapsed_seconds: float, p: "Probe", steps_per_epoch: int, val_seconds: float,
                checkpoint_seconds: float, after_training: float, splits=ROUND_SPLITS) -> Plan:
    """Whole epochs when at least MIN_ROUNDS fit; else the split of an epoch into rounds (each validated and
    checkpointed, so the plan is re-made after each) that trains the most steps with at least MIN_ROUNDS rounds,
    or, when none reaches it, the most steps at all. Raises EdgeError, before any training, when not even one
    round of the finest split (1/32 epoch) fits."""
    left = budget_seconds * (1 - MARGIN) - elapsed_seconds - after_training
    step = p.step_seconds + INPUT_NOT_OVERLAPPED * p.input_seconds
    options = []
    for split in splits:
        if split > steps_per_epoch:
            break
        steps = math.ceil(steps_per_epoch / split)
        per_round = steps * step + val_seconds + checkpoint_seconds
        rounds = int(left // per_round) if left > 0 else 0
        if rounds >= 1:
            options.append(Plan(rounds, split, steps, per_round))
    if not options:
        per_epoch = steps_per_epoch * step + val_seconds + checkpoint_seconds
        need = (elapsed_seconds + after_training + per_epoch / min(splits[-1], steps_per_epoch)) / (1 - MARGIN)
        raise EdgeError(f"time budget of {budget_seconds / 60:.1f} min cannot hold any training: {elapsed_seconds:.0f} s "
                        f"are spent before training (data, caches, timing), one epoch takes about {per_epoch:.0f} s and "
                        f"evaluating and writing about {after_training:.0f} s. Give at least "
                        f"{math.ceil(need / 6) / 10:.1f} min, or train on fewer images (--limit-per-class).")
    enough = [o for o in options if o.rounds >= MIN_ROUNDS]
    if enough and enough[0].split == 1:
        return enough[0]
    pool = enough or options
    return max(pool, key=lambda o: (o.rounds * o.steps, -o.split))


# `time_budget_reserve` is given in seconds of a CPU that infers REFERENCE_INFERENCE images/s (ResNet-8, 32 px,
# float32, oneDNN on a Xeon capped at AVX2: where the demo's convert + bench were timed); a slower CPU keeps more
REFERENCE_INFERENCE = 2200.0
# At most 1.5x: convert and bench are mostly single-thread work (graph tracing, the TFLite converter, process
# start-ups) that the probe's batched inference rate does not track. On an AMD EPYC standing in for an AVX2 CPU
# the probe's rate (833 images/s) scaled a 55 s reserve to 150 s where convert and bench took 85 s, and the demo
# trained 0.6 epochs (RESULTS.md "Every CPU (session 14)").
MAX_RESERVE_SCALE = 1.5


def reserve_seconds(reserve: float, p: "Probe") -> float:
    """Seconds kept at the end of a budget for the commands that follow (`make demo`: convert and bench),
    scaled to this CPU by the probe's inference rate, never below the reference."""
    if not reserve:
        return 0.0
    rate = 1.0 / p.infer_seconds_per_image if p.infer_seconds_per_image > 0 else REFERENCE_INFERENCE
    return reserve * min(MAX_RESERVE_SCALE, max(1.0, REFERENCE_INFERENCE / rate))


def growth_cap(planned: int) -> int:
    """The most epochs a plan may grow to once the epochs' own times are known (see fit.Checkpointer)."""
    return max(planned + 1, math.ceil(planned * MAX_GROWTH))


CACHE_MAX_SHARE = 0.5   # of the time left after the test pass: the rest is for training on the cache


def plan_cache_views(budget_seconds: float, elapsed_seconds: float, per_image: float, n_train: int, n_val: int,
                     n_test: int, views: int):
    """(views, cache seconds estimate, why or None): the configured views when their cache takes at most
    CACHE_MAX_SHARE of the time left, else the most that do (at least 1); raises EdgeError, before the cache is
    built, when not even one view leaves time to train."""
    left = budget_seconds * (1 - MARGIN) - elapsed_seconds - per_image * n_test - WRITING_SECONDS
    cost = lambda v: per_image * (v * n_train + n_val)  # noqa: E731
    if cost(1) > CACHE_MAX_SHARE * max(left, 0.0) and cost(1) * 1.25 > left:
        need = (elapsed_seconds + per_image * n_test + WRITING_SECONDS + cost(1) * 2) / (1 - MARGIN)
        raise EdgeError(f"time budget of {budget_seconds / 60:.1f} min cannot hold the activation cache and any "
                        f"training: one view of the {n_train:,} training images takes about {cost(1):.0f} s here "
                        f"({per_image * 1e3:.1f} ms per image through the frozen layers) and {left:.0f} s are left. "
                        f"Give at least {math.ceil(need / 6) / 10:.1f} min, train on fewer images "
                        "(--limit-per-class), or cut the backbone lower (--fine-tune-from).")
    fit = views
    while fit > 1 and cost(fit) > CACHE_MAX_SHARE * left:
        fit -= 1
    why = None
    if fit < views:
        why = (f"cache_views {views} -> {fit}: {views} views would take ~{cost(views):.0f} s of the {left:.0f} s left "
               f"({per_image * 1e3:.1f} ms per image here); {fit} take ~{cost(fit):.0f} s")
    return fit, cost(fit), why
