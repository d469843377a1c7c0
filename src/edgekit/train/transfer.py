"""Backbone presets: the head on cached pooled features then an optional fine-tune on images, or everything
above a cut trained on cached activations of the frozen bottom."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Dict

import numpy as np

from edgekit.errors import EdgeError
from edgekit.progress import console
from edgekit.train import activations, distribute, models
from edgekit.train import features as feature_cache
from edgekit.train.augment import parse_policy
from edgekit.train.config import TrainConfig
from edgekit.train.fit import PhaseState
from edgekit.train.session import Session, fit
from edgekit.train import budget


def _weights_identity(cfg: TrainConfig, weights: str) -> str:
    if cfg.hub:
        local = Path(cfg.hub).expanduser()
        return models.file_digest(local) if local.exists() else cfg.hub
    return models.file_digest(Path(weights)) if weights not in ("imagenet", "none") else weights


def _backbone_key(s: Session) -> Dict[str, object]:
    """What makes a frozen backbone's outputs on this data what they are: the shared part of the cache keys."""
    cfg, spec = s.cfg, s.spec
    return {"backbone": cfg.hub or cfg.preset, "alpha": cfg.alpha, "weights": _weights_identity(cfg, s.weights),
            "size": spec.height, "normalisation": [list(spec.scale), list(spec.offset), spec.channel_order],
            "data": s.data.data_hash, "seed": cfg.seed, "val_fraction": cfg.val_fraction}


def top_on_activations(s: Session, built):
    """Cut the backbone at `fine_tune_from`; train everything above the cut on cached activations."""
    cfg = s.cfg
    bottom, top = activations.split(built.backbone, cfg.fine_tune_from, s.num_classes, cfg.dropout)
    policy = parse_policy(cfg.augment)
    key = {**_backbone_key(s), "kind": "activations", "version": activations.CACHE_VERSION,
           "cut": cfg.fine_tune_from, "views": cfg.cache_views, "augment": policy.key()}
    state = PhaseState.load(s.run.ckpt("top") / "state.json", "top")
    if s.resumed and state.cache_key is not None and cfg.time_budget:
        key["views"] = state.cache_key.get("views", key["views"])  # a budget may have chosen fewer
    if s.resumed and state.cache_key is not None and state.cache_key != key:
        raise EdgeError("cannot resume: the activation cache key changed since this run started: "
                        + "; ".join(activations.key_changes(state.cache_key, key))
                        + ". Start a new run (another --out) to train on the new inputs.")
    frozen = distribute.plain_copy(s.cluster, bottom)  # the cache's builder: one worker, no collectives
    if cfg.time_budget and not state.cache_key and not activations.is_cached(key, cfg.cache_dir):
        key = _fit_cache_to_budget(s, frozen, key)
    state.cache_key = key
    t0 = time.perf_counter()
    with s.cluster.chief_first():
        acts, hit = distribute.outside_strategy(activations.cached_activations, key, cfg.cache_dir, frozen, s.spec,
                                                policy, key["views"], cfg.seed, s.data.train.x, s.data.val.x,
                                                cfg.batch_size)
    cache_seconds = time.perf_counter() - t0
    s.info.update(activation_cache_hit=hit, activations_seconds=cache_seconds, cut=cfg.fine_tune_from,
                  cache_views=key["views"])
    console.print(f"activation cache {'hit' if hit else 'miss (computed and stored)'}: {cache_seconds:.1f} s "
                  f"({acts['train'].shape[0]} views of {acts['train'].shape[1]:,} images at {cfg.fine_tune_from}, "
                  f"{acts['train'].shape[2:]})", highlight=False)
    # the final test pass runs the bottom too: its cost per image, from the cache build (or a timed batch)
    bottom_per_image = distribute.outside_strategy(_bottom_seconds_per_image, s, frozen, hit, cache_seconds, acts)
    steps = s.steps()
    ytr = s.onehot(s.data.train.y)
    train = lambda epoch=0: activations.batches(acts["train"], ytr, cfg.batch_size, cfg.seed, epoch)  # noqa: E731
    if s.cluster.strategy is None:
        data = lambda epoch=0: _generator_dataset(acts["train"], ytr, cfg.batch_size, cfg.seed, epoch)  # noqa: E731
    else:
        data = lambda epoch=0: s.cluster.training_data(lambda *replicas: _generator_dataset(  # noqa: E731
            acts["train"], ytr, cfg.batch_size, cfg.seed, epoch, replicas).repeat())
    val = (np.asarray(acts["val"], np.float32), s.onehot(s.data.val.y))
    top = fit(s, top, "top", train_data=data, make_train=train, val=val, epochs=cfg.epochs, lr=cfg.lr, steps=steps,
               batch_size=cfg.batch_size, after_training=len(s.data.test.y) * bottom_per_image, budgeted=True,
               state=state)
    name = f"{cfg.preset}_classifier"
    return activations.compose(bottom, top, name)


def _fit_cache_to_budget(s: Session, frozen, key: Dict[str, object]) -> Dict[str, object]:
    """Time the frozen layers on a few batches; under a time budget, build fewer views when the configured ones
    would leave too little time to train, and refuse before building anything when even one view would."""
    per_image = distribute.outside_strategy(activations.seconds_per_image, frozen, s.spec, s.data.train.x,
                                            s.cfg.batch_size)
    elapsed = time.perf_counter() - s.started
    views, seconds, why = budget.plan_cache_views(s.cfg.time_budget * 60, elapsed, per_image, len(s.data.train.y),
                                                  len(s.data.val.y), len(s.data.test.y), s.cfg.cache_views)
    console.print(f"activation cache: ~{seconds:.0f} s to build ({per_image * 1e3:.2f} ms per image through the frozen "
                  f"layers)" + (f"; time budget: {why}" if why else ""), highlight=False)
    s.info["activation_cache_plan"] = {"seconds_per_image": per_image, "estimate_seconds": seconds,
                                       "views": views, "configured_views": s.cfg.cache_views}
    return {**key, "views": views}


def _bottom_seconds_per_image(s: Session, bottom, hit: bool, cache_seconds: float, acts) -> float:
    if not hit:
        return cache_seconds / (acts["train"].shape[0] * acts["train"].shape[1] + acts["val"].shape[0])
    from edgekit.train.pipeline import to_model_input
    batch = to_model_input(s.data.val.x[: s.cfg.batch_size], s.spec)
    bottom(batch, training=False)
    t = time.perf_counter()
    bottom(batch, training=False)
    return (time.perf_counter() - t) / len(batch)


def _generator_dataset(acts, y, batch_size: int, seed: int, start_epoch: int, replicas=None):
    """Batches of cached activations; `replicas` = (first, local, total): this worker's slices of global batches."""
    import tensorflow as tf
    epoch = [start_epoch]
    first, local, total = replicas or (0, 1, 1)

    def gen():
        batches = activations.batches(acts, y, batch_size * total, seed, epoch[0])
        epoch[0] += 1
        yield from (distribute.replica_slices(batches, first, local, batch_size, total) if replicas else batches)

    sig = (tf.TensorSpec((None, *acts.shape[2:]), tf.float32), tf.TensorSpec((None, y.shape[1]), tf.float32))
    ds = tf.data.Dataset.from_generator(gen, output_signature=sig)
    count = len(y) // (batch_size * total) * local if replicas else -(-len(y) // batch_size)
    return ds.apply(tf.data.experimental.assert_cardinality(count)).prefetch(4)


def head_then_fine_tune(s: Session, built):
    """Phase 1: the head (on cached pooled features by default); phase 2: the top layers, on images."""
    cfg = s.cfg
    steps = s.steps()
    built.backbone.trainable = False
    last_phase = cfg.fine_tune_epochs == 0
    if cfg.feature_cache:
        key = _backbone_key(s)
        t0 = time.perf_counter()
        frozen = distribute.plain_copy(s.cluster, built.features)  # see top_on_activations
        with s.cluster.chief_first():
            feats, hit = distribute.outside_strategy(feature_cache.cached_features, key, cfg.cache_dir, frozen,
                                                     {"train": s.data.train.x, "val": s.data.val.x}, s.spec,
                                                     cfg.batch_size)
        s.info.update(feature_cache_hit=hit, features_seconds=time.perf_counter() - t0)
        console.print(f"feature cache {'hit' if hit else 'miss (computed and stored)'}: {s.info['features_seconds']:.1f} s")
        ytr = s.onehot(s.data.train.y)
        shuffled = lambda epoch=0: _shuffled(feats["train"], ytr, cfg.batch_size, cfg.seed + epoch)  # noqa: E731
        head = fit(s, built.head, "head", train_data=lambda epoch=0: (feats["train"], ytr), make_train=shuffled,
                    val=(feats["val"], s.onehot(s.data.val.y)), epochs=cfg.epochs, lr=cfg.lr, steps=steps,
                    batch_size=cfg.batch_size, budgeted=last_phase, splittable=False)  # arrays: whole epochs
        built.model.get_layer("predictions").set_weights(head.get_layer("predictions").get_weights())
        model = built.model
    else:
        if s.cluster.strategy is not None:
            raise EdgeError("under a distribution strategy the head trains on cached features; drop --no-feature-cache.")
        model = fit(s, built.model, "head",
                     train_data=lambda epoch=0: s.images(s.data.train, augment=False, shuffle=True, start_epoch=epoch),
                     make_train=lambda: s.images(s.data.train, augment=False, shuffle=True),
                     val=s.images(s.data.val, augment=False, shuffle=False), epochs=cfg.epochs, lr=cfg.lr,
                     steps=steps, budgeted=last_phase)
    if last_phase:
        return model
    models.set_backbone_trainable(built.backbone, cfg.fine_tune_layers)
    train = lambda epoch=0: s.training_images(s.data.train, start_epoch=epoch)  # noqa: E731
    probe = lambda: s.images(s.data.train, augment=True, shuffle=True)  # noqa: E731
    return fit(s, model, "fine_tune", train_data=train, make_train=probe,
                val=s.images(s.data.val, augment=False, shuffle=False), epochs=cfg.fine_tune_epochs,
                lr=cfg.fine_tune_lr, steps=steps, budgeted=True)


def _shuffled(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int):
    order = np.random.default_rng(seed).permutation(len(y))
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        yield x[idx], y[idx]
