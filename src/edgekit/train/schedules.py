"""Optimizers, learning-rate schedules (exponential, cosine, one-cycle) and the weight average (EMA)."""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Iterator, Optional

import tensorflow as tf
import tf_keras as keras


class _Anchor:
    """Where a re-aimed anneal starts, (step, rate); until a re-aim after the warm-up: the warm-up's end and the peak."""

    def __init__(self, step: float, rate: float):
        self.step = tf.Variable(float(step), trainable=False, dtype=tf.float32, name="anchor_step")
        self.rate = tf.Variable(float(rate), trainable=False, dtype=tf.float32, name="anchor_rate")

    def at(self, warm, peak: float):
        anchored = self.step >= 0.0
        return tf.where(anchored, self.step, warm), tf.where(anchored, self.rate, peak), anchored

    def move(self, schedule, at_step: Optional[int], warm: float) -> None:
        """Called before the schedule's end moves: past the warm-up, pin the anneal to the rate at `at_step`."""
        if at_step is not None and at_step >= max(warm, float(self.step.numpy())):
            rate = float(schedule(at_step))
            self.step.assign(float(at_step))
            self.rate.assign(rate)

    def config(self) -> dict:
        return {"anchor_step": float(self.step.numpy()), "anchor_rate": float(self.rate.numpy())}


@keras.utils.register_keras_serializable(package="edgekit")
class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from `start` to `peak` over `warmup_fraction` of the steps, then linear to `final`.

    `total_steps` is a variable: a time-budgeted run re-plans it in place. Re-aimed after the warm-up
    (`set_total_steps(n, at_step)`), the anneal goes on from the rate where it stands to `final` at the new
    end, so a shorter or a longer plan never makes the rate jump.
    """

    def __init__(self, peak: float, total_steps: int, warmup_fraction: float = 0.15, final: float = 0.0,
                 start: float = 0.0, anchor_step: float = -1.0, anchor_rate: float = 0.0):
        super().__init__()
        self.peak, self.warmup_fraction, self.final, self.start = float(peak), float(warmup_fraction), float(final), float(start)
        self.total = tf.Variable(float(max(1, total_steps)), trainable=False, dtype=tf.float32, name="onecycle_total")
        self.anchor = _Anchor(anchor_step, anchor_rate)

    @property
    def warmup_steps(self) -> tf.Tensor:
        return tf.maximum(1.0, tf.round(self.warmup_fraction * self.total))

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warm = self.warmup_steps
        up = self.start + (self.peak - self.start) * step / warm
        a_step, a_rate, anchored = self.anchor.at(warm, self.peak)
        left = tf.clip_by_value((self.total - step) / tf.maximum(1.0, self.total - a_step), 0.0, 1.0)
        down = self.final + (a_rate - self.final) * left
        return tf.where(tf.logical_and(step < warm, tf.logical_not(anchored)), up, down)

    def set_total_steps(self, steps: int, at_step: Optional[int] = None) -> None:
        self.anchor.move(self, at_step, float(self.warmup_steps))
        self.total.assign(float(max(1, steps)))

    def get_config(self) -> dict:
        return {"peak": self.peak, "total_steps": int(self.total.numpy()), "warmup_fraction": self.warmup_fraction,
                "final": self.final, "start": self.start, **self.anchor.config()}


@keras.utils.register_keras_serializable(package="edgekit")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from peak/10 over `warmup_steps`, then cosine to 0 at `total_steps` (a variable,
    re-aimed like OneCycle's: after the warm-up, from the rate where it stands)."""

    def __init__(self, peak: float, total_steps: int, warmup_steps: int = 0, anchor_step: float = -1.0,
                 anchor_rate: float = 0.0):
        super().__init__()
        self.peak, self.warmup_steps = float(peak), int(warmup_steps)
        self.total = tf.Variable(float(max(1, total_steps)), trainable=False, dtype=tf.float32, name="cosine_total")
        self.anchor = _Anchor(anchor_step, anchor_rate)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warm = float(self.warmup_steps)
        up = self.peak * (0.1 + 0.9 * step / max(1.0, warm))
        a_step, a_rate, anchored = self.anchor.at(tf.constant(warm), self.peak)
        done = tf.clip_by_value((step - a_step) / tf.maximum(1.0, self.total - a_step), 0.0, 1.0)
        down = 0.5 * a_rate * (1.0 + tf.cos(math.pi * done))
        return tf.where(tf.logical_and(step < warm, tf.logical_not(anchored)), up, down)

    def set_total_steps(self, steps: int, at_step: Optional[int] = None) -> None:
        self.anchor.move(self, at_step, float(self.warmup_steps))
        self.total.assign(float(max(1, steps)))

    def get_config(self) -> dict:
        return {"peak": self.peak, "total_steps": int(self.total.numpy()), "warmup_steps": self.warmup_steps,
                **self.anchor.config()}


@dataclass(frozen=True)
class OptimizerSpec:
    kind: str               # adam | sgd
    lr: float               # peak rate (one-cycle, cosine) or initial rate (exponential)
    schedule: str
    decay: float = 1.0
    warmup_epochs: int = 0
    warmup_fraction: float = 0.15
    final_lr: float = 0.0
    momentum: float = 0.9
    ema: float = 0.0        # momentum of the weight average; 0 = no average


def make_optimizer(spec: OptimizerSpec, steps_per_epoch: int, epochs: int):
    steps = max(1, steps_per_epoch * epochs)
    if spec.schedule == "onecycle":
        rate = OneCycle(spec.lr, steps, spec.warmup_fraction, spec.final_lr)
    elif spec.schedule == "cosine":
        rate = WarmupCosine(spec.lr, steps, spec.warmup_epochs * steps_per_epoch)
    elif spec.decay < 1.0:
        rate = keras.optimizers.schedules.ExponentialDecay(spec.lr, steps_per_epoch, spec.decay)
    else:
        rate = spec.lr
    ema = dict(use_ema=True, ema_momentum=spec.ema) if spec.ema else {}
    if spec.kind == "sgd":
        return keras.optimizers.SGD(rate, momentum=spec.momentum, nesterov=True, **ema)
    return keras.optimizers.Adam(rate, **ema)


def has_ema(model) -> bool:
    opt = getattr(model, "optimizer", None)
    return bool(getattr(opt, "use_ema", False)) and hasattr(opt, "_model_variables_moving_average")


def swap_ema(model) -> None:
    """Exchange the model's trainable weights with the optimizer's averages (its own inverse)."""
    opt = model.optimizer
    for var in model.trainable_variables:
        avg = opt._model_variables_moving_average[opt._index_dict[opt._var_key(var)]]
        raw = var.numpy()
        var.assign(avg)
        avg.assign(raw)


@contextlib.contextmanager
def ema_weights(model) -> Iterator[bool]:
    """Inside: the model holds its weight average (if it keeps one); the training weights come back after."""
    if not has_ema(model):
        yield False
        return
    swap_ema(model)
    try:
        yield True
    finally:
        swap_ema(model)


def set_total_epochs(model, steps_per_epoch: int, epochs: int) -> bool:
    """Re-aim a one-cycle or cosine schedule at `epochs`, from the rate at the optimizer's current step;
    False when the optimizer's schedule can't be re-aimed."""
    opt = getattr(model, "optimizer", None)
    rate = getattr(opt, "_learning_rate", None)
    if isinstance(rate, (OneCycle, WarmupCosine)):
        rate.set_total_steps(steps_per_epoch * epochs, at_step=int(opt.iterations.numpy()))
        return True
    return False


def custom_objects() -> dict:
    return {"OneCycle": OneCycle, "edgekit>OneCycle": OneCycle, "WarmupCosine": WarmupCosine,
            "edgekit>WarmupCosine": WarmupCosine}
