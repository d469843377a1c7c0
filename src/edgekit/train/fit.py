"""One training phase with per-epoch checkpoints, validation on the weight average, early stopping and resume."""
from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional

import numpy as np
import tensorflow as tf
import tf_keras as keras

from edgekit.atomic import write_json, write_with
from edgekit.signals import interrupts_deferred
from edgekit.train.schedules import ema_weights, set_total_epochs


GROW_MIN = 1.03     # a plan grows only for 3 % more epochs or more: an epoch's jitter must not re-aim it back and forth


@dataclass
class PhaseState:
    name: str
    epochs_done: int = 0
    done: bool = False
    best_val_loss: float = math.inf
    best_epoch: int = -1
    wait: int = 0
    seconds: float = 0.0
    history: List[dict] = field(default_factory=list)
    planned_epochs: Optional[int] = None   # what a time budget chose (and later shortened), else None
    cache_key: Optional[dict] = None       # the activation-cache key parts the phase trains on
    rounds_per_epoch: int = 1              # a short budget's rounds of part of an epoch: `epochs_done` counts rounds

    @classmethod
    def load(cls, path: Path, name: str) -> "PhaseState":
        if path.is_file():
            data = json.loads(path.read_text())
            data["best_val_loss"] = math.inf if data.get("best_val_loss") is None else data["best_val_loss"]
            return cls(**data)
        return cls(name)

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["best_val_loss"] = None if math.isinf(self.best_val_loss) else self.best_val_loss
        return d


@dataclass
class Deadline:
    """A time budget's end, in perf_counter seconds, and what must still fit after the last epoch."""
    at: float
    after_training: float   # final evaluation and writing
    steps_per_epoch: int
    max_epochs: int         # what fit() was given: a plan can grow up to this, never past it
    unit: str = "epochs"    # or "rounds" (of part of an epoch: a short budget)


class Checkpointer(keras.callbacks.Callback):
    """After each epoch: validate (on the weight average when there is one), then atomically save
    the model with its optimizer (training weights + average) and the phase state; track the best."""

    def __init__(self, folder: Path, state: PhaseState, patience: int, started: float, val, batch_size: Optional[int],
                 deadline: Optional[Deadline] = None, on_epoch: Optional[Callable[[PhaseState], None]] = None,
                 distributed: bool = False):
        super().__init__()
        self.distributed = distributed
        self.folder, self.state, self.patience, self.started = folder, state, patience, started
        self.val, self.batch_size, self.deadline, self.on_epoch = val, batch_size, deadline, on_epoch
        self.epoch_seconds: List[float] = []
        self.progbar: Optional[keras.callbacks.ProgbarLogger] = None
        self._val_iter, self._val_steps = None, 0

    def on_train_begin(self, logs=None):
        self._show_plan()

    def _show_plan(self) -> None:
        """fit() was given the plan's upper bound; the progress bar's 'Epoch i/N' shows the plan itself."""
        if self.progbar is not None and self.state.planned_epochs is not None:
            self.progbar.epochs = self.state.planned_epochs

    def _validate(self) -> dict:
        if isinstance(self.val, tuple):
            out = self.model.evaluate(*self.val, batch_size=self.batch_size, verbose=0, return_dict=True)
            return {f"val_{k}": float(v) for k, v in out.items()}
        if self.distributed:  # Keras shares the batches out and sums the metrics over every replica
            out = self.model.evaluate(self.val, verbose=0, return_dict=True)
            return {f"val_{k}": float(v) for k, v in out.items()}
        # One iterator for the whole phase: a fresh iterator over a generator-backed dataset per epoch
        # stalled for up to 17 s each time on two cores (ResNet-8 epochs: 26 s of steps, 35 s in all).
        if self._val_iter is None:
            self._val_iter, self._val_steps = iter(self.val.repeat()), int(self.val.cardinality())
        self.model.reset_metrics()
        out = {}
        for _ in range(self._val_steps):
            x, y = next(self._val_iter)
            out = self.model.test_on_batch(x, y, reset_metrics=False, return_dict=True)
        self.model.reset_metrics()
        return {f"val_{k}": float(v) for k, v in out.items()}

    def on_epoch_end(self, epoch, logs=None):
        s = self.state
        with ema_weights(self.model):
            if self.val is not None and logs is not None:
                logs.update(self._validate())  # in place: the progress bar prints them after this callback
            logs = {k: float(v) for k, v in (logs or {}).items()}
            val = logs.get("val_loss", logs.get("loss", math.inf))
            improved = val < s.best_val_loss
            if improved:
                with interrupts_deferred():
                    write_with(self.folder / "best.weights.h5", lambda p: self.model.save_weights(p))
        s.epochs_done = epoch + 1
        took = time.perf_counter() - self.started
        self.epoch_seconds.append(took)
        s.seconds += took
        self.started = time.perf_counter()
        s.history.append({"epoch": epoch + 1, **logs})
        if improved:
            s.best_val_loss, s.best_epoch, s.wait = val, epoch + 1, 0
        else:
            s.wait += 1
        if self.patience and s.wait >= self.patience:
            self.model.stop_training = True
            print(f"early stopping: no val_loss improvement for {s.wait} epochs; best was epoch {s.best_epoch}.",
                  file=sys.stderr)
        self._keep_to_deadline()
        with interrupts_deferred():
            write_with(self.folder / "last.keras", lambda p: self.model.save(p))
            write_json(self.folder / "state.json", s.to_dict())
        if self.on_epoch:
            self.on_epoch(s)

    def _keep_to_deadline(self) -> None:
        """Re-plan from the epochs' own times: shorten the plan (and the schedule) when they run slower than
        the probe said; lengthen it when they run faster (a probe or a stretch of epochs taken on a slow spell)."""
        d, s = self.deadline, self.state
        if d is None or s.planned_epochs is None:
            return
        steady = self.epoch_seconds[1:]  # the first epoch of a process also traces the graphs
        if not steady:
            # nothing to re-plan from yet, but a plan of one epoch (or round) is done: before this check, such a
            # plan ran a second one (100,000 images, a 10-minute budget: 12.1 minutes)
            if s.epochs_done >= s.planned_epochs:
                self.model.stop_training = True
            return
        # the median of the last three epochs: one slow epoch (a busy neighbour) must not cut the plan,
        # a machine that stays slower must not overrun the budget
        per_epoch = float(np.median(steady[-3:]))
        left = d.at - time.perf_counter() - d.after_training
        fits = s.epochs_done + max(0, int(left // per_epoch))
        was = s.planned_epochs
        if fits < s.planned_epochs:
            s.planned_epochs = max(s.epochs_done, fits)
        elif fits >= s.planned_epochs * GROW_MIN and len(steady) >= 2:
            # the schedule is re-aimed from the rate where it stands (schedules._Anchor), so a plan cut during a
            # slow spell can take the time back later without the rate jumping
            s.planned_epochs = min(fits, d.max_epochs)
        if s.planned_epochs != was:
            set_total_epochs(self.model, d.steps_per_epoch, s.planned_epochs)
            self._show_plan()
            print(f"time budget: {d.unit} take {per_epoch:.0f} s; the plan is now {s.planned_epochs} {d.unit} (was {was}).",
                  file=sys.stderr)
        if s.epochs_done >= s.planned_epochs:
            self.model.stop_training = True


def run_phase(model, state: PhaseState, folder: Path, *, train, val, epochs: int, steps_per_epoch: Optional[int],
              patience: int, verbose: int, batch_size: Optional[int] = None,
              deadline: Optional[Deadline] = None, distributed: bool = False, extra_callbacks=()) -> PhaseState:
    """Fit from state.epochs_done to `epochs`, then restore the best (averaged) weights and mark the phase done."""
    folder.mkdir(parents=True, exist_ok=True)
    if state.epochs_done < epochs and not state.done:
        cb = Checkpointer(folder, state, patience, time.perf_counter(), val, batch_size, deadline,
                          distributed=distributed)
        callbacks = [*extra_callbacks, cb]  # before the Checkpointer: they see this epoch's raw weights
        if verbose:  # fit() uses a ProgbarLogger it is given instead of its own
            cb.progbar = keras.callbacks.ProgbarLogger(count_mode="steps")
            callbacks.append(cb.progbar)
        x, y = train if isinstance(train, tuple) else (train, None)
        if isinstance(train, tf.data.Dataset) and int(train.cardinality()) > 0:
            # one iterator for every epoch (see Checkpointer._validate); the generator counts its epochs, and a
            # round of part of an epoch goes on where the last one stopped
            steps_per_epoch, x = steps_per_epoch or int(train.cardinality()), train.repeat()
        model.fit(x, y, epochs=epochs, initial_epoch=state.epochs_done, steps_per_epoch=steps_per_epoch,
                  batch_size=batch_size, callbacks=callbacks, verbose=verbose, shuffle=isinstance(train, tuple))
    if (folder / "best.weights.h5").is_file():
        if distributed:
            from edgekit.train.distribute import load_weights_file
            load_weights_file(model, folder / "best.weights.h5")
        else:
            model.load_weights(folder / "best.weights.h5")
    state.done = True
    write_json(folder / "state.json", state.to_dict())
    return state
