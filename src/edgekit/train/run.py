"""`edge train`: data → model → phases (from scratch; head on cached features with an optional fine-tune;
or the top on cached activations) → run directory."""
from __future__ import annotations

import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Optional

import tf_keras as keras

from edgekit import hardware
from edgekit.errors import EdgeError
from edgekit.progress import console
from edgekit.signals import sigterm_as_interrupt
from edgekit.train import distribute, hard_examples, models, precision, teacher
from edgekit.train.config import TrainConfig, build_config
from edgekit.train.data import Split, load_dataset
from edgekit.train.pipeline import predict_images
from edgekit.train.presets import HUB_NORMALIZATION, get_preset, resolve_size
from edgekit.train.rundir import RunDir, print_counts
from edgekit.train.session import Session, fit
from edgekit.train.transfer import head_then_fine_tune, top_on_activations
from edgekit_runtime import PreprocessSpec
from edgekit.layout import RunLayout


class Interrupted(EdgeError):
    exit_code = 130


def preprocess_for(cfg: TrainConfig) -> PreprocessSpec:
    preset = get_preset(cfg.preset)
    size = resolve_size(preset, cfg.input_size, cfg.hub)
    scale, offset = HUB_NORMALIZATION if cfg.hub else preset.normalization
    return PreprocessSpec(height=size, width=size, scale=scale, offset=offset,
                          channel_order="RGB" if cfg.hub else preset.channel_order,
                          notes=f"{cfg.hub and 'TF Hub module' or preset.name} normalisation")


def train(cfg: TrainConfig, out: Optional[Path] = None, resume: bool = False, started: Optional[float] = None) -> Path:
    """Train per `cfg` into `out`; `started` (perf_counter) is when the command began, for the time budget."""
    t_start = started if started is not None else time.perf_counter()
    if resume:
        if out is None or not RunLayout(out).config.is_file():
            raise EdgeError("--resume needs --out RUN_DIR pointing at an earlier run (it holds config.yaml).")
        cfg = build_config(RunLayout(out).config, {})
    else:
        out = Path(out or Path("runs") / f"{cfg.hub and 'hub' or cfg.preset}-{datetime.now():%Y%m%d-%H%M%S}")
    kind = distribute.choose(cfg.strategy)
    if not resume and RunLayout(out).checkpoints.exists():
        raise EdgeError(f"{out} already holds a training run; pass --resume"
                        + (" (on every worker) to continue it." if kind == "multiworker" else
                           " to continue it or choose another --out."))
    if kind == "multiworker" and cfg.time_budget:
        raise EdgeError("time_budget plans the epochs from one machine's speed; under strategy multiworker set "
                        "`epochs` instead (every worker must stop after the same epoch).")
    cluster = distribute.make_cluster(kind, cfg.worker_timeout)  # before any other TensorFlow op
    try:
        return _train(cfg, Path(out), resume, t_start, cluster)
    finally:
        cluster.cleanup()


def _train(cfg: TrainConfig, out: Path, resume: bool, t_start: float, cluster: distribute.Cluster) -> Optional[Path]:
    if cluster.kind != "one":
        console.print(cluster.describe(cfg.batch_size)
                      + (f"; learning rate scaled linearly x{cluster.replicas}" if cluster.replicas > 1 else ""),
                      highlight=False)
    preset = get_preset(cfg.preset)
    if cfg.fine_tune_from and preset.from_scratch:
        raise EdgeError(f"fine_tune_from cuts a pretrained backbone; {preset.name} is trained whole from scratch.")
    if cfg.hard_examples and not preset.from_scratch:
        raise EdgeError(f"hard_examples samples a from-scratch network's training images (resnet8), not {preset.name}'s.")
    if cfg.hard_examples and cluster.kind != "one":
        raise EdgeError("hard_examples scores the training images in one process: it needs --strategy one.")
    if cfg.teacher and not preset.from_scratch:
        raise EdgeError(f"teacher: distillation is built for from-scratch presets (resnet8), not {preset.name}.")
    run = RunDir(cluster.write_path(out, resume))  # the chief writes `out`; the others a temporary copy
    keras.utils.set_random_seed(cfg.seed)
    weights = cfg.weights or preset.default_weights
    spec = preprocess_for(cfg)
    # before the data: a precision this CPU cannot run is refused before minutes of decoding
    chosen, why = precision.choose(cfg.precision, preset.from_scratch and not cfg.hub, distribute.visible_gpus())

    t0 = time.perf_counter()
    with cluster.chief_first():  # the chief decodes and caches; the others read its cache (when shared)
        data = load_dataset(cfg.data, spec.size, val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction,
                            seed=cfg.seed, limit_per_class=cfg.limit_per_class,
                            test_limit_per_class=cfg.test_limit_per_class, skip_bad=cfg.skip_bad,
                            use_cache=cfg.data_cache, cache_dir=cfg.cache_dir)
    for line in data.bad_files:
        console.print(f"[yellow]skipped[/] {line}")
    print_counts(data)
    console.print(f"{precision.describe(chosen, why)}; {hardware.current().describe()}", highlight=False)
    s = Session(cfg, spec, data, run, weights, t_start, resume, cluster, verbose=1 if sys.stdout.isatty() else 2,
                precision=chosen,
                info={"data_seconds": time.perf_counter() - t0, "data_cache_hit": data.cache_hit,
                      "feature_cache_hit": None, "features_seconds": None, "precision": chosen})
    run.write_start(cfg, spec, data)
    try:
        build = lambda: models.build(preset, spec.height, s.num_classes, weights=weights, hub=cfg.hub,  # noqa: E731
                                     alpha=cfg.alpha, dropout=cfg.dropout, weight_decay=cfg.weight_decay)
        with sigterm_as_interrupt(), cluster.scope():
            with precision.policy(s.precision):
                built = build()
            if built.backbone is None:
                model = _from_scratch(s, built.model)
            elif cfg.fine_tune_from:
                model = top_on_activations(s, built)
            else:
                model = head_then_fine_tune(s, built)
    except KeyboardInterrupt:
        raise Interrupted(f"training interrupted; the last finished epoch is saved: resume with "
                          f"`edge train --out {out} --resume`.") from None
    except distribute.lost_worker_errors() as exc:
        if cluster.kind == "one":   # no other worker to lose: TensorFlow itself stopped (an internal error)
            raise
        raise distribute.WorkerLost(f"lost contact with another worker (TensorFlow: {type(exc).__name__}); "
                                    f"the last finished epoch is saved in {out}: restart every worker with "
                                    f"`edge train --out {out} --resume`.") from None
    model = precision.float32_model(model, lambda: build().model, s.precision)
    fingerprint = cluster.check_same_weights(model)
    s.info["strategy"] = {**cluster.to_dict(cfg.batch_size), "weights_fingerprint": fingerprint}
    if cluster.kind != "one":
        console.print(f"weights fingerprint {fingerprint}"
                      + (f": the same on all {cluster.workers} workers" if cluster.workers > 1 else ""), highlight=False)
    train_seconds = sum(p.seconds for p in s.phases.values())
    images_trained = sum(p.epochs_done / p.rounds_per_epoch for p in s.phases.values()) * len(data.train.y)

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
                                   "epochs_run": sum(p.epochs_done / p.rounds_per_epoch for p in s.phases.values()),
                                   "rounds_run": sum(p.epochs_done for p in s.phases.values())})
    return run.path if cluster.is_chief else None


def _from_scratch(s: Session, model):
    steps = s.steps()
    split = s.data.train
    if s.cfg.teacher:
        with s.cluster.chief_first():
            probs, hit, seconds = distribute.outside_strategy(
                teacher.teacher_probabilities, s.cfg.teacher, split.x, s.data.class_names, s.data.data_hash,
                s.cfg.cache_dir)
        agree = float((probs.argmax(1) == split.y).mean())
        console.print(f"teacher {s.cfg.teacher}: {'cached' if hit else 'computed'} in {seconds:.0f} s, "
                      f"agrees with {agree:.1%} of the training labels; targets = {s.cfg.distill_weight:g} x teacher "
                      f"+ {1 - s.cfg.distill_weight:g} x label"
                      + (f" (teacher softened at T = {s.cfg.distill_temperature:g})" if s.cfg.distill_temperature != 1 else ""),
                      highlight=False)
        s.info.update(teacher=s.cfg.teacher, teacher_seconds=seconds, teacher_cache_hit=hit,
                      teacher_train_agreement=agree)
        split = Split(split.x, teacher.blend(split.y, probs, s.cfg.distill_weight, s.cfg.distill_temperature))
    hard = hard_examples.for_split(s.cfg.hard_examples, s.run.ckpt("train"), split.x, split.y, s.spec)
    train = lambda epoch=0: s.training_images(split, start_epoch=epoch, sampler=hard and hard.order)  # noqa: E731
    probe = lambda: s.images(split, augment=True, shuffle=True)  # noqa: E731
    model = fit(s, model, "train", train_data=train, make_train=probe,
                val=s.images(s.data.val, augment=False, shuffle=False), epochs=s.cfg.epochs, lr=s.cfg.lr,
                steps=steps, budgeted=True, hard=hard)
    if hard:
        s.info["hard_examples"] = hard.summary()
    return model
