"""One `edge train` invocation's shared state (Session) and how a phase is fitted: compile, plan the epochs
under a time budget, resume an interrupted phase, run it."""
from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import tf_keras as keras

from edgekit.progress import console
from edgekit.train import budget, distribute, models
from edgekit.train.augment import parse_policy
from edgekit.train.config import TrainConfig
from edgekit.train.data import Dataset, Split
from edgekit.train.fit import Deadline, PhaseState, run_phase
from edgekit.train.pipeline import make_dataset
from edgekit.train.rundir import RunDir
from edgekit.train.schedules import OptimizerSpec, make_optimizer
from edgekit.train.schedules import custom_objects as schedule_objects
from edgekit_runtime import PreprocessSpec


@dataclass
class Session:
    """One `edge train` invocation: what every phase reads, and what they report back."""
    cfg: TrainConfig
    spec: PreprocessSpec
    data: Dataset
    run: RunDir
    weights: str
    started: float
    resumed: bool
    cluster: distribute.Cluster = field(default_factory=lambda: distribute.Cluster("one"))
    verbose: int = 2
    precision: str = "float32"  # what the layers compute in (precision.choose); the saved model is float32
    info: Dict[str, object] = field(default_factory=dict)
    phases: Dict[str, PhaseState] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.data.class_names)

    def images(self, split: Split, *, augment: bool, shuffle: bool, start_epoch: int = 0, replicas=None,
               sampler=None):
        policy = parse_policy(self.cfg.augment) if augment else None
        return make_dataset(split.x, split.y, self.spec, self.cfg.batch_size, num_classes=self.num_classes,
                            shuffle=shuffle, augment=policy, seed=self.cfg.seed, start_epoch=start_epoch,
                            replicas=replicas, sampler=sampler)

    def training_images(self, split: Split, start_epoch: int = 0, sampler=None):
        """Augmented, shuffled training batches; under a strategy, this worker's share of every global batch."""
        if self.cluster.strategy is None:
            return self.images(split, augment=True, shuffle=True, start_epoch=start_epoch, sampler=sampler)
        return self.cluster.training_data(lambda first, local, total: self.images(
            split, augment=True, shuffle=True, start_epoch=start_epoch, replicas=(first, local, total)).repeat())

    def steps(self) -> int:
        """Steps per epoch: every image once, in global batches (a strategy drops the last, partial one)."""
        n, b = len(self.data.train.y), self.cfg.batch_size * self.cluster.replicas
        return max(1, n // b) if self.cluster.strategy is not None else math.ceil(n / b)

    def onehot(self, y: np.ndarray) -> np.ndarray:
        return np.eye(self.num_classes, dtype=np.float32)[y]

    def optimizer(self, lr: float, steps: int, epochs: int):
        c = self.cfg
        lr = lr * self.cluster.replicas  # the linear scaling rule: the global batch grew by that factor
        return make_optimizer(OptimizerSpec(c.optimizer, lr, c.lr_schedule, c.lr_decay, c.warmup_epochs,
                                            c.warmup_fraction, c.final_lr, c.momentum, c.ema), steps, epochs)

    def compile(self, model, opt) -> None:
        model.compile(optimizer=opt, metrics=["accuracy"],
                      loss=keras.losses.CategoricalCrossentropy(label_smoothing=self.cfg.label_smoothing))


def resumable(model, folder: Path, state: PhaseState, cluster: distribute.Cluster):
    """The phase's last checkpoint (model + optimizer, weight average included) if it was interrupted, else `model`."""
    last = folder / "last.keras"
    if state.epochs_done and not state.done and last.is_file():
        console.print(f"resuming phase '{state.name}' after epoch {state.epochs_done}")
        load = lambda: keras.models.load_model(last, custom_objects={**models.custom_objects(), **schedule_objects()})  # noqa: E731
        if cluster.strategy is None:
            return load()
        distribute.copy_state(distribute.outside_strategy(load), model)
    return model


def fit(s: Session, model, name: str, *, train_data, make_train, val, epochs: int, lr: float, steps: int,
         batch_size: Optional[int] = None, after_training: float = 0.0, budgeted: bool = False, state=None,
         hard=None, splittable: bool = True):
    """Compile, plan the epochs when a time budget applies, resume if interrupted, fit. Returns the model."""
    folder = s.run.ckpt(name)
    state = state or PhaseState.load(folder / "state.json", name)
    deadline = None
    if budgeted and not state.done and state.epochs_done == 0 and state.planned_epochs is None:
        # time a few steps: every run prints the input pipeline's share; a budget also plans from it
        planned = probe_and_plan(s, model, make_train, val, steps, after_training, splittable)
        if planned is not None:
            plan, after = planned
            state.planned_epochs, state.rounds_per_epoch = plan.rounds, plan.split
            deadline = Deadline(s.started + s.cfg.time_budget * 60 * (1 - budget.MARGIN), after,
                                math.ceil(steps / plan.split), max_epochs=budget.growth_cap(plan.rounds),
                                unit="epochs" if plan.split == 1 else "rounds")
    split = state.rounds_per_epoch
    round_steps = math.ceil(steps / split)  # an epoch, or a round of 1/split of one (a short budget)
    if budgeted and state.planned_epochs is not None:
        epochs = state.planned_epochs
    s.compile(model, s.optimizer(lr, round_steps, epochs))
    if deadline is not None:
        epochs = deadline.max_epochs  # fit()'s upper bound; the Checkpointer stops at the plan
    model = resumable(model, folder, state, s.cluster)
    s.info.setdefault("seconds_before_first_epoch", time.perf_counter() - s.started)
    distributed = s.cluster.strategy is not None
    if hard and split > 1:
        console.print("hard examples: off for this run (they rescore between whole epochs; the budget trains in "
                      "rounds of part of one)", highlight=False)
        hard = None
    train = train_data(state.epochs_done // split)
    s.phases[name] = run_phase(model, state, folder, train=train, val=val, epochs=epochs,
                               steps_per_epoch=round_steps if (distributed or split > 1) and not isinstance(train, tuple) else None,
                               patience=s.cfg.early_stopping_patience,
                               verbose=s.verbose, batch_size=batch_size, deadline=deadline, distributed=distributed,
                               extra_callbacks=[hard.callback(lambda: state.planned_epochs or epochs,
                                                              s.cfg.warmup_fraction)] if hard else ())
    return model


def probe_and_plan(s: Session, model, make_train, val, steps: int, after_training: float, splittable: bool = True):
    """Time a few steps on throwaway weights; with a time budget, choose the epochs (or rounds of part of one)
    that fit it: (budget.Plan, seconds to keep for evaluating, writing and what follows), else None."""
    if not s.cfg.time_budget:
        # without a budget the model is not touched: the pipeline alone, on its own copy of the data
        alone = budget.input_seconds(make_train())
        if alone is not None:
            s.info["input_seconds_per_batch"] = alone
            console.print(f"input pipeline {alone * 1e3:.1f} ms per batch alone (Keras prints the ms per training "
                          "step; with --time-budget the share of a step is measured too)", highlight=False)
        return None
    s.compile(model, s.optimizer(s.cfg.lr, steps, 1))
    val_x = val[0] if isinstance(val, tuple) else next(iter(val))[0]
    p = budget.probe(model, make_train(), np.asarray(val_x[: s.cfg.batch_size]))
    console.print(p.describe(s.cfg.batch_size), highlight=False)
    s.info["probe"] = p.to_dict()
    # one real validation pass and one checkpoint write, timed: both happen after every epoch
    t = time.perf_counter()
    x, y = val if isinstance(val, tuple) else (val, None)
    model.evaluate(x, y, batch_size=s.cfg.batch_size if isinstance(val, tuple) else None, verbose=0)
    val_seconds = time.perf_counter() - t
    with tempfile.TemporaryDirectory(dir=s.run.path) as tmp:
        t = time.perf_counter()
        model.save(Path(tmp) / "probe.keras")
        model.save_weights(Path(tmp) / "probe.weights.h5")
        save_seconds = time.perf_counter() - t
    passes = 1 if s.cfg.tta == "none" else 3  # with tta: the model alone, then the averaging model (two passes)
    after = after_training + passes * len(s.data.test.y) * p.infer_seconds_per_image + budget.WRITING_SECONDS + p.trace_seconds
    reserve = budget.reserve_seconds(s.cfg.time_budget_reserve, p)
    after += reserve
    elapsed = time.perf_counter() - s.started
    plan = budget.plan_rounds(s.cfg.time_budget * 60, elapsed, p, steps, val_seconds, save_seconds, after,
                              budget.ROUND_SPLITS if splittable else (1,))
    planned = elapsed + plan.rounds * plan.round_seconds + after
    console.print(f"time budget {s.cfg.time_budget:g} min: {elapsed:.0f} s spent, {plan.describe()}, "
                  f"~{after - reserve:.0f} s to evaluate and write"
                  + (f", ~{reserve:.0f} s kept for what follows" if reserve else "")
                  + f": planned {planned / 60:.1f} min", highlight=False)
    full = budget.epoch_seconds(p, steps, len(s.data.val.y), val_seconds, save_seconds)
    if plan.split > 1:
        console.print(f"  (one epoch takes ~{full:.0f} s: too few would fit to re-plan as they run, so each round of "
                      f"1/{plan.split} epoch is validated and the plan re-made after it)", highlight=False)
    s.info["time_budget"] = {"minutes": s.cfg.time_budget, "planned_epochs": plan.epochs, "planned_rounds": plan.rounds,
                             "rounds_per_epoch": plan.split, "planned_seconds": planned,
                             "seconds_before_planning": elapsed, "epoch_seconds_estimate": full,
                             "round_seconds_estimate": plan.round_seconds, "reserve_seconds": reserve,
                             "validation_seconds": val_seconds, "checkpoint_seconds": save_seconds,
                             "probe": p.to_dict()}
    s.run.record("time_budget", s.info["time_budget"])
    return plan, after
