"""`edge train`: data → model → phases (head on cached features, optional fine-tune) → run directory."""
from __future__ import annotations

import math
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Optional

import numpy as np
import tf_keras as keras
import yaml

from edgekit.errors import EdgeError
from edgekit.progress import console
from edgekit.signals import sigterm_as_interrupt
from edgekit.train import features as feature_cache
from edgekit.train import models
from edgekit.train.config import TrainConfig, build_config
from edgekit.train.data import Dataset, load_dataset
from edgekit.train.fit import PhaseState, optimizer, run_phase
from edgekit.train.pipeline import make_dataset
from edgekit.train.presets import HUB_NORMALIZATION, get_preset, resolve_size
from edgekit.train.rundir import RunDir, print_counts
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


def _compile(model, opt, cfg: TrainConfig):
    model.compile(optimizer=opt, loss=keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing),
                  metrics=["accuracy"])


def _resumable(model, folder: Path, state: PhaseState):
    """The phase's last checkpoint (model + optimizer) if the phase was interrupted, else `model`."""
    last = folder / "last.keras"
    if state.epochs_done and not state.done and last.is_file():
        console.print(f"resuming phase '{state.name}' after epoch {state.epochs_done}")
        return keras.models.load_model(last, custom_objects=models.custom_objects())
    return model


def train(cfg: TrainConfig, out: Optional[Path] = None, resume: bool = False) -> Path:
    t_start = time.perf_counter()
    if resume:
        if out is None or not (Path(out) / "config.yaml").is_file():
            raise EdgeError("--resume needs --out RUN_DIR pointing at an earlier run (it holds config.yaml).")
        cfg = build_config(Path(out) / "config.yaml", {})
    else:
        out = Path(out or Path("runs") / f"{cfg.hub and 'hub' or cfg.preset}-{datetime.now():%Y%m%d-%H%M%S}")
        if (Path(out) / "checkpoints").exists():
            raise EdgeError(f"{out} already holds a training run; pass --resume to continue it or choose another --out.")
    run = RunDir(Path(out))
    keras.utils.set_random_seed(cfg.seed)
    preset = get_preset(cfg.preset)
    weights = cfg.weights or preset.default_weights
    spec = preprocess_for(cfg)

    t0 = time.perf_counter()
    data = load_dataset(cfg.data, spec.size, val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction,
                        seed=cfg.seed, limit_per_class=cfg.limit_per_class,
                        test_limit_per_class=cfg.test_limit_per_class, skip_bad=cfg.skip_bad,
                        use_cache=cfg.data_cache, cache_dir=cfg.cache_dir)
    data_seconds = time.perf_counter() - t0
    for line in data.bad_files:
        console.print(f"[yellow]skipped[/] {line}")
    print_counts(data)
    built = models.build(preset, spec.height, len(data.class_names), weights=weights, hub=cfg.hub,
                         alpha=cfg.alpha, dropout=cfg.dropout, weight_decay=cfg.weight_decay)
    run.write_start(cfg, spec, data)

    verbose = 1 if sys.stdout.isatty() else 2
    phases, info = {}, {"data_seconds": data_seconds, "data_cache_hit": data.cache_hit,
                         "feature_cache_hit": None, "features_seconds": None}
    ds = lambda split, augment, shuffle: make_dataset(  # noqa: E731
        split.x, split.y, spec, cfg.batch_size, num_classes=len(data.class_names), shuffle=shuffle,
        augment=augment and cfg.augment, seed=cfg.seed)
    try:
        with sigterm_as_interrupt():
            model = _run_phases(cfg, built, data, spec, run, weights, info, phases, verbose, ds, t_start)
    except KeyboardInterrupt:
        raise Interrupted(f"training interrupted; the last finished epoch is saved: resume with "
                          f"`edge train --out {run.path} --resume`.") from None
    train_seconds = sum(p.seconds for p in phases.values())
    images_trained = sum(p.epochs_done for p in phases.values()) * len(data.train.y)

    t0 = time.perf_counter()
    probs = model.predict(ds(data.test, False, False), verbose=0)
    infer_seconds = time.perf_counter() - t0
    run.write_final(model, data, probs, phases, {
        **info,
        "train_seconds": train_seconds,
        "train_images_per_second": images_trained / train_seconds if train_seconds else None,
        "inference_images_per_second": len(data.test.y) / infer_seconds if infer_seconds else None,
        "total_seconds": time.perf_counter() - t_start,
    })
    return run.path


def _run_phases(cfg, built, data: Dataset, spec, run, weights, info, phases, verbose, ds, t_start):
    """Phase 1 (whole net from scratch, or head only), then the optional fine-tune; returns the model."""
    steps = math.ceil(len(data.train.y) / cfg.batch_size)
    if built.backbone is None:
        model, folder = built.model, run.ckpt("train")
        state = PhaseState.load(folder / "state.json", "train")
        _compile(model, _opt(cfg, cfg.lr, steps, cfg.epochs), cfg)
        model = _resumable(model, folder, state)
        info["seconds_before_first_epoch"] = time.perf_counter() - t_start
        phases["train"] = run_phase(model, state, folder, train=ds(data.train, True, True),
                                    val=ds(data.val, False, False), epochs=cfg.epochs, steps_per_epoch=None,
                                    patience=cfg.early_stopping_patience, verbose=verbose)
        return model
    model = _head_phase(cfg, built, data, spec, run, weights, info, phases, verbose, ds, t_start)
    if cfg.fine_tune_epochs > 0:
        model = _fine_tune_phase(cfg, built, model, run, phases, verbose, ds, steps, data)
    return model


def _opt(cfg: TrainConfig, lr: float, steps: int, epochs: int):
    return optimizer(cfg.optimizer, lr, schedule=cfg.lr_schedule, decay=cfg.lr_decay,
                     warmup_epochs=cfg.warmup_epochs, steps_per_epoch=steps, epochs=epochs, momentum=cfg.momentum)


def _head_phase(cfg, built, data: Dataset, spec, run, weights, info, phases, verbose, ds, t_start):
    folder = run.ckpt("head")
    state = PhaseState.load(folder / "state.json", "head")
    built.backbone.trainable = False
    onehot = lambda y: np.eye(len(data.class_names), dtype=np.float32)[y]  # noqa: E731
    if cfg.feature_cache:
        key = {"backbone": cfg.hub or cfg.preset, "alpha": cfg.alpha, "weights": _weights_identity(cfg, weights),
               "size": spec.height, "normalisation": [list(spec.scale), list(spec.offset), spec.channel_order],
               "data": data.data_hash, "seed": cfg.seed, "val_fraction": cfg.val_fraction}
        t0 = time.perf_counter()
        feats, hit = feature_cache.cached_features(key, cfg.cache_dir, built.features,
                                                   {"train": data.train.x, "val": data.val.x}, spec, cfg.batch_size)
        info.update(feature_cache_hit=hit, features_seconds=time.perf_counter() - t0)
        console.print(f"feature cache {'hit' if hit else 'miss (computed and stored)'}: "
                      f"{info['features_seconds']:.1f} s")
        head = built.head
        steps = math.ceil(len(data.train.y) / cfg.batch_size)
        _compile(head, _opt(cfg, cfg.lr, steps, cfg.epochs), cfg)
        head = _resumable(head, folder, state)
        info["seconds_before_first_epoch"] = time.perf_counter() - t_start
        phases["head"] = run_phase(head, state, folder, train=(feats["train"], onehot(data.train.y)),
                                   val=(feats["val"], onehot(data.val.y)), epochs=cfg.epochs, steps_per_epoch=None,
                                   patience=cfg.early_stopping_patience, verbose=verbose, batch_size=cfg.batch_size)
        built.model.get_layer("predictions").set_weights(head.get_layer("predictions").get_weights())
        return built.model
    model = built.model
    steps = math.ceil(len(data.train.y) / cfg.batch_size)
    _compile(model, _opt(cfg, cfg.lr, steps, cfg.epochs), cfg)
    model = _resumable(model, folder, state)
    info["seconds_before_first_epoch"] = time.perf_counter() - t_start
    phases["head"] = run_phase(model, state, folder, train=ds(data.train, False, True), val=ds(data.val, False, False),
                               epochs=cfg.epochs, steps_per_epoch=None, patience=cfg.early_stopping_patience,
                               verbose=verbose)
    return model


def _fine_tune_phase(cfg, built, model, run, phases, verbose, ds, steps, data):
    folder = run.ckpt("fine_tune")
    state = PhaseState.load(folder / "state.json", "fine_tune")
    models.set_backbone_trainable(built.backbone, cfg.fine_tune_layers)
    _compile(model, _opt(cfg, cfg.fine_tune_lr, steps, cfg.fine_tune_epochs), cfg)
    model = _resumable(model, folder, state)
    phases["fine_tune"] = run_phase(model, state, folder, train=ds(data.train, True, True),
                                    val=ds(data.val, False, False), epochs=cfg.fine_tune_epochs,
                                    steps_per_epoch=None, patience=cfg.early_stopping_patience, verbose=verbose)
    return model


def config_yaml(cfg: TrainConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)

