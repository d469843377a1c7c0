"""`edge train`: data → model → phases (from scratch; head on cached features with an optional fine-tune;
or the top on cached activations) → run directory."""
from __future__ import annotations

import math
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import tf_keras as keras
import yaml

from edgekit.errors import EdgeError
from edgekit.progress import console
from edgekit.signals import sigterm_as_interrupt
from edgekit.train import activations, budget
from edgekit.train import features as feature_cache
from edgekit.train import models, teacher
from edgekit.train.augment import parse_policy
from edgekit.train.config import TrainConfig, build_config
from edgekit.train.data import Dataset, Split, load_dataset
from edgekit.train.fit import Deadline, PhaseState, run_phase
from edgekit.train.pipeline import make_dataset, predict_images
from edgekit.train.presets import HUB_NORMALIZATION, get_preset, resolve_size
from edgekit.train.rundir import RunDir, print_counts
from edgekit.train.schedules import OptimizerSpec, make_optimizer
from edgekit.train.schedules import custom_objects as schedule_objects
from edgekit_runtime import PreprocessSpec


class Interrupted(EdgeError):
    exit_code = 130


def preprocess_for(cfg: TrainConfig) -> PreprocessSpec:
    preset = get_preset(cfg.preset)
    size = resolve_size(preset, cfg.input_size, cfg.hub)
    scale, offset = HUB_NORMALIZATION if cfg.hub else preset.normalization
    return PreprocessSpec(height=size, width=size, scale=scale, offset=offset,
                          channel_order="RGB" if cfg.hub else preset.channel_order,
                          notes=f"{cfg.hub and 'TF Hub module' or preset.name} normalisation")


def _weights_identity(cfg: TrainConfig, weights: str) -> str:
    if cfg.hub:
        local = Path(cfg.hub).expanduser()
        return models.file_digest(local) if local.exists() else cfg.hub
    return models.file_digest(Path(weights)) if weights not in ("imagenet", "none") else weights


def _backbone_key(s: "Session") -> Dict[str, object]:
    """What makes a frozen backbone's outputs on this data what they are: the shared part of the cache keys."""
    cfg, spec = s.cfg, s.spec
    return {"backbone": cfg.hub or cfg.preset, "alpha": cfg.alpha, "weights": _weights_identity(cfg, s.weights),
            "size": spec.height, "normalisation": [list(spec.scale), list(spec.offset), spec.channel_order],
            "data": s.data.data_hash, "seed": cfg.seed, "val_fraction": cfg.val_fraction}


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
    verbose: int = 2
    info: Dict[str, object] = field(default_factory=dict)
    phases: Dict[str, PhaseState] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.data.class_names)

    def images(self, split: Split, *, augment: bool, shuffle: bool, start_epoch: int = 0):
        policy = parse_policy(self.cfg.augment) if augment else None
        return make_dataset(split.x, split.y, self.spec, self.cfg.batch_size, num_classes=self.num_classes,
                            shuffle=shuffle, augment=policy, seed=self.cfg.seed, start_epoch=start_epoch)

    def onehot(self, y: np.ndarray) -> np.ndarray:
        return np.eye(self.num_classes, dtype=np.float32)[y]

    def optimizer(self, lr: float, steps: int, epochs: int):
        c = self.cfg
        return make_optimizer(OptimizerSpec(c.optimizer, lr, c.lr_schedule, c.lr_decay, c.warmup_epochs,
                                            c.warmup_fraction, c.final_lr, c.momentum, c.ema), steps, epochs)

    def compile(self, model, opt) -> None:
        model.compile(optimizer=opt, metrics=["accuracy"],
                      loss=keras.losses.CategoricalCrossentropy(label_smoothing=self.cfg.label_smoothing))


def train(cfg: TrainConfig, out: Optional[Path] = None, resume: bool = False, started: Optional[float] = None) -> Path:
    """Train per `cfg` into `out`; `started` (perf_counter) is when the command began, for the time budget."""
    t_start = started if started is not None else time.perf_counter()
    if resume:
        if out is None or not (Path(out) / "config.yaml").is_file():
            raise EdgeError("--resume needs --out RUN_DIR pointing at an earlier run (it holds config.yaml).")
        cfg = build_config(Path(out) / "config.yaml", {})
    else:
        out = Path(out or Path("runs") / f"{cfg.hub and 'hub' or cfg.preset}-{datetime.now():%Y%m%d-%H%M%S}")
        if (Path(out) / "checkpoints").exists():
            raise EdgeError(f"{out} already holds a training run; pass --resume to continue it or choose another --out.")
    preset = get_preset(cfg.preset)
    if cfg.fine_tune_from and preset.from_scratch:
        raise EdgeError(f"fine_tune_from cuts a pretrained backbone; {preset.name} is trained whole from scratch.")
    if cfg.teacher and not preset.from_scratch:
        raise EdgeError(f"teacher: distillation is built for from-scratch presets (resnet8), not {preset.name}.")
    run = RunDir(Path(out))
    keras.utils.set_random_seed(cfg.seed)
    weights = cfg.weights or preset.default_weights
    spec = preprocess_for(cfg)

    t0 = time.perf_counter()
    data = load_dataset(cfg.data, spec.size, val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction,
                        seed=cfg.seed, limit_per_class=cfg.limit_per_class,
                        test_limit_per_class=cfg.test_limit_per_class, skip_bad=cfg.skip_bad,
                        use_cache=cfg.data_cache, cache_dir=cfg.cache_dir)
    for line in data.bad_files:
        console.print(f"[yellow]skipped[/] {line}")
    print_counts(data)
    s = Session(cfg, spec, data, run, weights, t_start, resume, verbose=1 if sys.stdout.isatty() else 2,
                info={"data_seconds": time.perf_counter() - t0, "data_cache_hit": data.cache_hit,
                      "feature_cache_hit": None, "features_seconds": None})
    built = models.build(preset, spec.height, s.num_classes, weights=weights, hub=cfg.hub, alpha=cfg.alpha,
                         dropout=cfg.dropout, weight_decay=cfg.weight_decay)
    run.write_start(cfg, spec, data)
    try:
        with sigterm_as_interrupt():
            if built.backbone is None:
                model = _from_scratch(s, built.model)
            elif cfg.fine_tune_from:
                model = _top_on_activations(s, built)
            else:
                model = _head_then_fine_tune(s, built)
    except KeyboardInterrupt:
        raise Interrupted(f"training interrupted; the last finished epoch is saved: resume with "
                          f"`edge train --out {run.path} --resume`.") from None
    train_seconds = sum(p.seconds for p in s.phases.values())
    images_trained = sum(p.epochs_done for p in s.phases.values()) * len(data.train.y)

    if cfg.tta != "none":  # what the model alone scores, beside what the saved (averaging) model scores
        plain = predict_images(model, data.test.x, spec, cfg.batch_size)
        s.info["test_top1_without_tta"] = float((plain.argmax(1) == data.test.y).mean())
        model = models.with_tta(model, cfg.tta)
    t0 = time.perf_counter()
    probs = predict_images(model, data.test.x, spec, cfg.batch_size)
    infer_seconds = time.perf_counter() - t0
    run.write_final(model, data, probs, s.phases, {
        **s.info,
        "train_seconds": train_seconds,
        "train_images_per_second": images_trained / train_seconds if train_seconds else None,
        "inference_images_per_second": len(data.test.y) / infer_seconds if infer_seconds else None,
        "total_seconds": time.perf_counter() - t_start,
    })
    if cfg.time_budget:
        final = [p.planned_epochs for p in s.phases.values() if p.planned_epochs is not None]
        run.record("time_budget", {**s.info.get("time_budget", {}), "actual_seconds": time.perf_counter() - t_start,
                                   "final_planned_epochs": final[-1] if final else None,
                                   "epochs_run": sum(p.epochs_done for p in s.phases.values())})
    return run.path


def _resumable(model, folder: Path, state: PhaseState):
    """The phase's last checkpoint (model + optimizer, weight average included) if it was interrupted, else `model`."""
    last = folder / "last.keras"
    if state.epochs_done and not state.done and last.is_file():
        console.print(f"resuming phase '{state.name}' after epoch {state.epochs_done}")
        return keras.models.load_model(last, custom_objects={**models.custom_objects(), **schedule_objects()})
    return model


def _fit(s: Session, model, name: str, *, train_data, make_train, val, epochs: int, lr: float, steps: int,
         batch_size: Optional[int] = None, after_training: float = 0.0, budgeted: bool = False, state=None):
    """Compile, plan the epochs when a time budget applies, resume if interrupted, fit. Returns the model."""
    folder = s.run.ckpt(name)
    state = state or PhaseState.load(folder / "state.json", name)
    deadline = None
    if budgeted and not state.done and state.epochs_done == 0 and state.planned_epochs is None:
        # time a few steps: every run prints the input pipeline's share; a budget also plans from it
        planned = _probe_and_plan(s, model, make_train, val, steps, after_training)
        if planned is not None:
            state.planned_epochs, after = planned
            deadline = Deadline(s.started + s.cfg.time_budget * 60 * (1 - budget.MARGIN), after, steps,
                                max_epochs=budget.growth_cap(state.planned_epochs))
    if budgeted and state.planned_epochs is not None:
        epochs = state.planned_epochs
    s.compile(model, s.optimizer(lr, steps, epochs))
    if deadline is not None:
        epochs = deadline.max_epochs  # fit()'s upper bound; the Checkpointer stops at the plan
    model = _resumable(model, folder, state)
    s.info.setdefault("seconds_before_first_epoch", time.perf_counter() - s.started)
    s.phases[name] = run_phase(model, state, folder, train=train_data(state.epochs_done), val=val, epochs=epochs,
                               steps_per_epoch=None, patience=s.cfg.early_stopping_patience, verbose=s.verbose,
                               batch_size=batch_size, deadline=deadline)
    return model


def _probe_and_plan(s: Session, model, make_train, val, steps: int, after_training: float):
    """Time a few steps on throwaway weights; with a time budget, choose the epochs that fit it:
    (epochs, seconds to keep for evaluating and writing), else None."""
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
    per_epoch = budget.epoch_seconds(p, steps, len(s.data.val.y), val_seconds, save_seconds)
    passes = 1 if s.cfg.tta == "none" else 3  # with tta: the model alone, then the averaging model (two passes)
    after = after_training + passes * len(s.data.test.y) * p.infer_seconds_per_image + budget.WRITING_SECONDS + p.trace_seconds
    elapsed = time.perf_counter() - s.started
    epochs = budget.plan_epochs(s.cfg.time_budget * 60, elapsed, per_epoch, after)
    planned = elapsed + epochs * per_epoch + after
    console.print(f"time budget {s.cfg.time_budget:g} min: {elapsed:.0f} s spent, {epochs} epochs of ~{per_epoch:.0f} s, "
                  f"~{after:.0f} s to evaluate and write: planned {planned / 60:.1f} min", highlight=False)
    s.info["time_budget"] = {"minutes": s.cfg.time_budget, "planned_epochs": epochs, "planned_seconds": planned,
                             "seconds_before_planning": elapsed, "epoch_seconds_estimate": per_epoch,
                             "validation_seconds": val_seconds, "checkpoint_seconds": save_seconds,
                             "probe": p.to_dict()}
    s.run.record("time_budget", s.info["time_budget"])
    return epochs, after


def _from_scratch(s: Session, model):
    steps = math.ceil(len(s.data.train.y) / s.cfg.batch_size)
    split = s.data.train
    if s.cfg.teacher:
        probs, hit, seconds = teacher.teacher_probabilities(s.cfg.teacher, split.x, s.data.class_names,
                                                            s.data.data_hash, s.cfg.cache_dir)
        agree = float((probs.argmax(1) == split.y).mean())
        console.print(f"teacher {s.cfg.teacher}: {'cached' if hit else 'computed'} in {seconds:.0f} s, "
                      f"agrees with {agree:.1%} of the training labels; targets = {s.cfg.distill_weight:g} x teacher "
                      f"+ {1 - s.cfg.distill_weight:g} x label"
                      + (f" (teacher softened at T = {s.cfg.distill_temperature:g})" if s.cfg.distill_temperature != 1 else ""),
                      highlight=False)
        s.info.update(teacher=s.cfg.teacher, teacher_seconds=seconds, teacher_cache_hit=hit,
                      teacher_train_agreement=agree)
        split = Split(split.x, teacher.blend(split.y, probs, s.cfg.distill_weight, s.cfg.distill_temperature))
    train = lambda epoch=0: s.images(split, augment=True, shuffle=True, start_epoch=epoch)  # noqa: E731
    return _fit(s, model, "train", train_data=train, make_train=train,
                val=s.images(s.data.val, augment=False, shuffle=False), epochs=s.cfg.epochs, lr=s.cfg.lr,
                steps=steps, budgeted=True)


def _top_on_activations(s: Session, built):
    """Cut the backbone at `fine_tune_from`; train everything above the cut on cached activations."""
    cfg = s.cfg
    bottom, top = activations.split(built.backbone, cfg.fine_tune_from, s.num_classes, cfg.dropout)
    policy = parse_policy(cfg.augment)
    key = {**_backbone_key(s), "kind": "activations", "version": activations.CACHE_VERSION,
           "cut": cfg.fine_tune_from, "views": cfg.cache_views, "augment": policy.key()}
    state = PhaseState.load(s.run.ckpt("top") / "state.json", "top")
    if s.resumed and state.cache_key is not None and state.cache_key != key:
        raise EdgeError("cannot resume: the activation cache key changed since this run started: "
                        + "; ".join(activations.key_changes(state.cache_key, key))
                        + ". Start a new run (another --out) to train on the new inputs.")
    state.cache_key = key
    t0 = time.perf_counter()
    acts, hit = activations.cached_activations(key, cfg.cache_dir, bottom, s.spec, policy, cfg.cache_views, cfg.seed,
                                               s.data.train.x, s.data.val.x, cfg.batch_size)
    cache_seconds = time.perf_counter() - t0
    s.info.update(activation_cache_hit=hit, activations_seconds=cache_seconds, cut=cfg.fine_tune_from,
                  cache_views=cfg.cache_views)
    console.print(f"activation cache {'hit' if hit else 'miss (computed and stored)'}: {cache_seconds:.1f} s "
                  f"({acts['train'].shape[0]} views of {acts['train'].shape[1]:,} images at {cfg.fine_tune_from}, "
                  f"{acts['train'].shape[2:]})", highlight=False)
    # the final test pass runs the bottom too: its cost per image, from the cache build (or a timed batch)
    bottom_per_image = _bottom_seconds_per_image(s, bottom, hit, cache_seconds, acts)
    steps = math.ceil(len(s.data.train.y) / cfg.batch_size)
    ytr = s.onehot(s.data.train.y)
    train = lambda epoch=0: activations.batches(acts["train"], ytr, cfg.batch_size, cfg.seed, epoch)  # noqa: E731
    data = lambda epoch=0: _generator_dataset(acts["train"], ytr, cfg.batch_size, cfg.seed, epoch)  # noqa: E731
    val = (np.asarray(acts["val"], np.float32), s.onehot(s.data.val.y))
    top = _fit(s, top, "top", train_data=data, make_train=train, val=val, epochs=cfg.epochs, lr=cfg.lr, steps=steps,
               batch_size=cfg.batch_size, after_training=len(s.data.test.y) * bottom_per_image, budgeted=True,
               state=state)
    name = f"{cfg.preset}_classifier"
    return activations.compose(bottom, top, name)


def _bottom_seconds_per_image(s: Session, bottom, hit: bool, cache_seconds: float, acts) -> float:
    if not hit:
        return cache_seconds / (acts["train"].shape[0] * acts["train"].shape[1] + acts["val"].shape[0])
    from edgekit.train.pipeline import to_model_input
    batch = to_model_input(s.data.val.x[: s.cfg.batch_size], s.spec)
    bottom.predict_on_batch(batch)
    t = time.perf_counter()
    bottom.predict_on_batch(batch)
    return (time.perf_counter() - t) / len(batch)


def _generator_dataset(acts, y, batch_size: int, seed: int, start_epoch: int):
    import tensorflow as tf
    epoch = [start_epoch]

    def gen():
        yield from activations.batches(acts, y, batch_size, seed, epoch[0])
        epoch[0] += 1

    sig = (tf.TensorSpec((None, *acts.shape[2:]), tf.float32), tf.TensorSpec((None, y.shape[1]), tf.float32))
    ds = tf.data.Dataset.from_generator(gen, output_signature=sig)
    return ds.apply(tf.data.experimental.assert_cardinality(-(-len(y) // batch_size))).prefetch(4)


def _head_then_fine_tune(s: Session, built):
    """Phase 1: the head (on cached pooled features by default); phase 2: the top layers, on images."""
    cfg = s.cfg
    steps = math.ceil(len(s.data.train.y) / cfg.batch_size)
    built.backbone.trainable = False
    last_phase = cfg.fine_tune_epochs == 0
    if cfg.feature_cache:
        key = _backbone_key(s)
        t0 = time.perf_counter()
        feats, hit = feature_cache.cached_features(key, cfg.cache_dir, built.features,
                                                   {"train": s.data.train.x, "val": s.data.val.x}, s.spec,
                                                   cfg.batch_size)
        s.info.update(feature_cache_hit=hit, features_seconds=time.perf_counter() - t0)
        console.print(f"feature cache {'hit' if hit else 'miss (computed and stored)'}: {s.info['features_seconds']:.1f} s")
        ytr = s.onehot(s.data.train.y)
        shuffled = lambda epoch=0: _shuffled(feats["train"], ytr, cfg.batch_size, cfg.seed + epoch)  # noqa: E731
        head = _fit(s, built.head, "head", train_data=lambda epoch=0: (feats["train"], ytr), make_train=shuffled,
                    val=(feats["val"], s.onehot(s.data.val.y)), epochs=cfg.epochs, lr=cfg.lr, steps=steps,
                    batch_size=cfg.batch_size, budgeted=last_phase)
        built.model.get_layer("predictions").set_weights(head.get_layer("predictions").get_weights())
        model = built.model
    else:
        model = _fit(s, built.model, "head",
                     train_data=lambda epoch=0: s.images(s.data.train, augment=False, shuffle=True, start_epoch=epoch),
                     make_train=lambda: s.images(s.data.train, augment=False, shuffle=True),
                     val=s.images(s.data.val, augment=False, shuffle=False), epochs=cfg.epochs, lr=cfg.lr,
                     steps=steps, budgeted=last_phase)
    if last_phase:
        return model
    models.set_backbone_trainable(built.backbone, cfg.fine_tune_layers)
    train = lambda epoch=0: s.images(s.data.train, augment=True, shuffle=True, start_epoch=epoch)  # noqa: E731
    return _fit(s, model, "fine_tune", train_data=train, make_train=train,
                val=s.images(s.data.val, augment=False, shuffle=False), epochs=cfg.fine_tune_epochs,
                lr=cfg.fine_tune_lr, steps=steps, budgeted=True)


def _shuffled(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int):
    order = np.random.default_rng(seed).permutation(len(y))
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        yield x[idx], y[idx]


def config_yaml(cfg: TrainConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
