"""One training phase with per-epoch checkpoints, early stopping and resume."""
from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional

import tf_keras as keras

from edgekit.atomic import write_json, write_with
from edgekit.signals import interrupts_deferred


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


def optimizer(kind: str, lr: float, *, schedule: str, decay: float, warmup_epochs: int, steps_per_epoch: int,
              epochs: int, momentum: float):
    if schedule == "cosine":
        warmup = warmup_epochs * steps_per_epoch
        rate = keras.optimizers.schedules.CosineDecay(
            lr * (0.1 if warmup else 1.0), max(1, epochs * steps_per_epoch - warmup),
            warmup_target=lr if warmup else None, warmup_steps=warmup)
    elif decay < 1.0:
        rate = keras.optimizers.schedules.ExponentialDecay(lr, steps_per_epoch, decay)
    else:
        rate = lr
    if kind == "sgd":
        return keras.optimizers.SGD(rate, momentum=momentum, nesterov=True)
    return keras.optimizers.Adam(rate)


class Checkpointer(keras.callbacks.Callback):
    """After each epoch: atomically save the model (with optimizer) and the phase state; track the best."""

    def __init__(self, folder: Path, state: PhaseState, patience: int, started: float,
                 on_epoch: Optional[Callable[[PhaseState], None]] = None):
        super().__init__()
        self.folder, self.state, self.patience, self.started = folder, state, patience, started
        self.on_epoch = on_epoch

    def on_epoch_end(self, epoch, logs=None):
        logs = {k: float(v) for k, v in (logs or {}).items()}
        s = self.state
        s.epochs_done = epoch + 1
        s.seconds += time.perf_counter() - self.started
        self.started = time.perf_counter()
        s.history.append({"epoch": epoch + 1, **logs})
        val = logs.get("val_loss", logs.get("loss", math.inf))
        improved = val < s.best_val_loss
        if improved:
            s.best_val_loss, s.best_epoch, s.wait = val, epoch + 1, 0
        else:
            s.wait += 1
        if self.patience and s.wait >= self.patience:
            self.model.stop_training = True
            print(f"early stopping: no val_loss improvement for {s.wait} epochs; best was epoch {s.best_epoch}.",
                  file=sys.stderr)
        with interrupts_deferred():
            if improved:
                write_with(self.folder / "best.weights.h5", lambda p: self.model.save_weights(p))
            write_with(self.folder / "last.keras", lambda p: self.model.save(p))
            write_json(self.folder / "state.json", s.to_dict())
        if self.on_epoch:
            self.on_epoch(s)


def run_phase(model, state: PhaseState, folder: Path, *, train, val, epochs: int, steps_per_epoch: Optional[int],
              patience: int, verbose: int, batch_size: Optional[int] = None) -> PhaseState:
    """Fit from state.epochs_done to `epochs`, then restore the best weights and mark the phase done."""
    folder.mkdir(parents=True, exist_ok=True)
    if state.epochs_done < epochs and not state.done:
        cb = Checkpointer(folder, state, patience, time.perf_counter())
        x, y = train if isinstance(train, tuple) else (train, None)
        model.fit(x, y, validation_data=val, epochs=epochs, initial_epoch=state.epochs_done,
                  steps_per_epoch=steps_per_epoch, batch_size=batch_size, callbacks=[cb], verbose=verbose,
                  shuffle=isinstance(train, tuple))
    if (folder / "best.weights.h5").is_file():
        model.load_weights(folder / "best.weights.h5")
    state.done = True
    write_json(folder / "state.json", state.to_dict())
    return state
