"""Fine-tuning on cached activations: split a backbone at a block boundary, cache the frozen bottom's
outputs for K augmented views of every training image, and train the top on them.

View 0 is the image itself, view 1 its mirror image, views 2..K-1 draws of the augmentation policy.
The cache holds float16 arrays written under a temporary name and renamed into place (memory-mapped
when read), so an interrupted or failed build leaves nothing behind.
"""
from __future__ import annotations

import difflib
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import tensorflow as tf
import tf_keras as keras

from edgekit import cache
from edgekit.errors import EdgeError
from edgekit.progress import progress_bar
from edgekit.train.augment import Policy, flip, seed_layers
from edgekit.train.pipeline import to_model_input

CACHE_VERSION = 1


def _inbound(layer) -> List[keras.layers.Layer]:
    found = layer._inbound_nodes[0].inbound_layers if layer._inbound_nodes else []
    return list(found) if isinstance(found, (list, tuple)) else [found]


def block_boundaries(backbone: keras.Model) -> List[str]:
    """Layers after which one tensor carries everything forward (no skip connection crosses them)."""
    layers = backbone.layers
    index = {layer.name: i for i, layer in enumerate(layers)}
    reach = [min((index[p.name] for p in _inbound(layer)), default=i) for i, layer in enumerate(layers)]
    out, earliest_after = [], len(layers)
    for i in range(len(layers) - 2, 0, -1):  # neither the input layer nor the last layer
        earliest_after = min(earliest_after, reach[i + 1])
        if earliest_after >= i:
            out.append(layers[i].name)
    return out[::-1]


def _block_of(name: str) -> str:
    m = re.match(r"^(.*?block_?\d+)", name)
    return m.group(1) if m else name.rsplit("_", 1)[0]


def block_ends(backbone: keras.Model) -> List[str]:
    """The valid cuts that end a named block (block_9_add, block_13_project_BN, conv3_block4_out …)."""
    names = [layer.name for layer in backbone.layers]
    nxt = {a: b for a, b in zip(names, names[1:])}
    return [n for n in block_boundaries(backbone) if _block_of(n) != _block_of(nxt[n])]


def check_cut(backbone: keras.Model, cut: str) -> None:
    names = [layer.name for layer in backbone.layers]
    valid = block_boundaries(backbone)
    shown = ", ".join(block_ends(backbone) or valid)
    if cut not in names:
        close = difflib.get_close_matches(cut, names, n=3, cutoff=0.5)
        hint = f" Nearest names: {', '.join(close)}." if close else ""
        raise EdgeError(f"fine_tune_from: {cut!r} is not a layer of {backbone.name}.{hint} Valid cuts: {_shorten(shown)}.")
    if cut not in valid:
        raise EdgeError(f"fine_tune_from: {cut!r} is inside a residual block (a skip connection crosses it); cut where "
                        f"one tensor carries everything forward: {_shorten(shown)}.")


def _shorten(text: str, limit: int = 600) -> str:
    return text if len(text) <= limit else text[:limit].rsplit(",", 1)[0] + ", …"


def split(backbone: keras.Model, cut: str, num_classes: int, dropout: float) -> Tuple[keras.Model, keras.Model]:
    """(bottom: image → activations at `cut`, frozen; top: activations → probabilities, BatchNorm frozen).

    The top re-applies the backbone's own layers after the cut, so bottom + top share its weights.
    """
    from edgekit.train.models import HEAD_NAMES
    check_cut(backbone, cut)
    layers = backbone.layers
    ci = [layer.name for layer in layers].index(cut)
    bottom = keras.Model(backbone.input, backbone.get_layer(cut).output, name="bottom")
    bottom.trainable = False
    inp = keras.Input(bottom.output.shape[1:], name="activations")
    tensors = {cut: inp}
    for layer in layers[ci + 1:]:
        args = [tensors[p.name] for p in _inbound(layer)]
        tensors[layer.name] = layer(args if len(args) > 1 else args[0], training=False)
        layer.trainable = not isinstance(layer, keras.layers.BatchNormalization)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(tensors[layers[-1].name])
    x = keras.layers.Dropout(dropout, name=HEAD_NAMES[0])(x)
    out = keras.layers.Dense(num_classes, activation="softmax", name=HEAD_NAMES[1])(x)
    return bottom, keras.Model(inp, out, name="top")


def compose(bottom: keras.Model, top: keras.Model, name: str) -> keras.Model:
    """One ordinary model, image in, probabilities out, that `edge convert` takes as it is."""
    # a fresh Model over the top's layers leaves its optimizer (and its slots) out of model.keras
    top = keras.Model(top.inputs, top.outputs, name="top")
    inputs = keras.Input(bottom.input.shape[1:], name="image")
    return keras.Model(inputs, top(bottom(inputs, training=False)), name=name)


def views_of(x: np.ndarray, view: int, policy: Policy, seed: int) -> np.ndarray:
    if view == 0:
        return x
    rng = np.random.default_rng([seed, view, 2])
    if view == 1:
        return x[:, :, ::-1].copy()
    if policy.is_none:
        return flip(x, rng)
    return x if policy.is_seed else policy.apply(x, rng)


def _disk_check(where: Path, need: int) -> None:
    where.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(where).free
    if free < need * 1.05 + (64 << 20):
        raise EdgeError(f"the activation cache needs {need / 1e9:.2f} GB and {where} has {free / 1e9:.2f} GB free: free "
                        "some space, point cache_dir (or EDGE_CACHE_DIR) at a larger disk, or lower cache_views.")


def is_cached(key: Dict[str, object], cache_dir: Optional[str]) -> bool:
    return (cache.cache_root("activations", cache_dir) / cache.key_of(key) / "meta.json").is_file()


def seconds_per_image(bottom: keras.Model, spec, x: np.ndarray, batch_size: int, batches: int = 2) -> float:
    """The frozen bottom's cost per image, timed on a few batches after a warm-up: what a cache will cost."""
    @tf.function(reduce_retracing=True)
    def encode(batch):
        return bottom(to_model_input(tf.cast(batch, tf.float32), spec), training=False)

    chunks = [x[i:i + batch_size] for i in range(0, min(len(x), batch_size * (batches + 1)), batch_size)]
    encode(tf.constant(chunks[0])).numpy()
    timed = chunks[1:] or chunks
    t = time.perf_counter()
    for chunk in timed:
        encode(tf.constant(chunk)).numpy()
    return (time.perf_counter() - t) / sum(len(c) for c in timed)


def cached_activations(key: Dict[str, object], cache_dir: Optional[str], bottom: keras.Model, spec, policy: Policy,
                       views: int, seed: int, train_x: np.ndarray, val_x: np.ndarray, batch_size: int):
    """({'train': K x N x ..., 'val': N x ...} float16, memory-mapped; hit). Built once per key."""
    entry = cache.cache_root("activations", cache_dir) / cache.key_of(key)
    found = _load(entry, key)
    if found is not None:
        return found, True
    shape = tuple(int(d) for d in bottom.output.shape[1:])
    per_image = int(np.prod(shape)) * 2
    _disk_check(entry.parent, per_image * (views * len(train_x) + len(val_x)))
    aug = seed_layers(seed) if policy.is_seed else None

    @tf.function(reduce_retracing=True)
    def encode(batch, augmented):
        x = tf.cast(batch, tf.float32)
        if aug is not None and augmented:
            x = aug(x, training=True)
        return tf.cast(bottom(to_model_input(x, spec), training=False), tf.float16)

    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=entry.parent))
    try:
        train = np.lib.format.open_memmap(tmp / "train.npy", "w+", np.float16, (views, len(train_x), *shape))
        val = np.lib.format.open_memmap(tmp / "val.npy", "w+", np.float16, (len(val_x), *shape))
        total = views * len(train_x) + len(val_x)
        with progress_bar(f"caching activations at {key['cut']} ({views} views)", total) as advance:
            jobs = [(train, v, train_x, v) for v in range(views)] + [(val, None, val_x, 0)]
            for target, v, x, view in jobs:
                for s in range(0, len(x), batch_size):
                    chunk = views_of(x[s:s + batch_size], view, policy, seed + s)
                    out = encode(tf.constant(chunk), tf.constant(view >= 2)).numpy()
                    (target[v] if v is not None else target)[s:s + len(chunk)] = out
                    advance(len(chunk))
        train.flush()
        val.flush()
        del train, val
        (tmp / "meta.json").write_text(json.dumps({**key, "shape": list(shape), "views": views}, default=str, indent=2))
        shutil.rmtree(entry, ignore_errors=True)
        os.replace(tmp, entry)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise EdgeError(f"could not write the activation cache under {entry.parent} ({exc.strerror or exc}); "
                        "nothing partial was kept. Free some space or point cache_dir elsewhere.") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _load(entry, key), False


def _load(entry: Path, key: Dict[str, object]):
    try:
        meta = json.loads((entry / "meta.json").read_text())
        arrays = {n: np.load(entry / f"{n}.npy", mmap_mode="r") for n in ("train", "val")}
    except (OSError, ValueError):
        return None
    if meta.get("cut") != key.get("cut") or arrays["train"].shape[0] != meta.get("views"):
        return None
    return arrays


def key_changes(old: Dict[str, object], new: Dict[str, object]) -> List[str]:
    """Which parts of a cache key differ, in words, e.g. "data (3f2a… → 91bc…)"."""
    def short(v):
        s = json.dumps(v, default=str)
        return s if len(s) <= 24 else s[:20] + "…"
    return [f"{k} ({short(old.get(k))} → {short(new.get(k))})" for k in sorted(set(old) | set(new))
            if json.dumps(old.get(k), default=str) != json.dumps(new.get(k), default=str)]


def batches(acts: np.ndarray, y: np.ndarray, batch_size: int, seed: int, epoch: int):
    """One epoch: every image once, each in one of its K views drawn at random (seeded by epoch)."""
    rng = np.random.default_rng([seed, epoch, 3])
    order = rng.permutation(len(y))
    views = rng.integers(0, acts.shape[0], len(y))
    for s in range(0, len(order), batch_size):
        idx = np.sort(order[s:s + batch_size])  # sorted reads are kinder to a memory-mapped file
        yield acts[views[idx], idx].astype(np.float32), y[idx]
