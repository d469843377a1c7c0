"""Augmentation policies as data: named ops with parameters, applied to uint8 batches, seeded per epoch.

A policy is written in the config as `fast`, `seed`, `none`, or a list of ops such as
`[flip, crop:4, cutout:8]` (`name` or `name:parameter`). The cheap ops (flip, altflip, crop, cutout) run on
the stored uint8 batch in numpy before the batch reaches TensorFlow; `seed` is the seed documents'
projective policy (flip, rotation ±15°, shift 0.1, zoom 0.8–1.2) as Keras layers, about half the
training throughput of ResNet-8 on two cores.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from edgekit.errors import EdgeError
from edgekit.helpers import did_you_mean

# name -> (default parameter, what the parameter is, smallest allowed value)
OPS = {
    "flip": (None, "", None),          # horizontal flip with probability 1/2
    # flipped in every other epoch: a random half of the images in even epochs, the other half in odd ones, so any
    # two epochs in a row show each image both ways (Jordan 2024, "94% on CIFAR-10 in 3.29 seconds"); random
    # flips show half the images the same way in two epochs running
    "altflip": (None, "", None),
    "crop": (4, "pixels of reflect padding", 1),  # reflect-pad, then a random crop back to the input size
    "cutout": (8, "side of the zeroed square", 1),  # one square at a random centre, clipped at the border
}
POLICIES = {
    "fast": ("flip", "crop:4"),
    "none": (),
    "seed": ("seed",),
}


@dataclass(frozen=True)
class Op:
    name: str
    param: Optional[int] = None

    def __str__(self) -> str:
        return self.name if self.param is None else f"{self.name}:{self.param}"


@dataclass(frozen=True)
class Policy:
    ops: Tuple[Op, ...]

    @property
    def is_seed(self) -> bool:
        return any(op.name == "seed" for op in self.ops)

    @property
    def is_none(self) -> bool:
        return not self.ops

    def describe(self) -> str:
        for name, ops in POLICIES.items():
            if tuple(str(o) for o in self.ops) == ops:
                return name if name != "fast" else "fast (flip, crop:4)"
        return ", ".join(str(o) for o in self.ops)

    def key(self) -> List[str]:
        """What identifies the policy in cache keys."""
        return [str(o) for o in self.ops]

    def apply(self, images: np.ndarray, rng: np.random.Generator, *, index: Optional[np.ndarray] = None,
              epoch: int = 0, seed: int = 0) -> np.ndarray:
        """The numpy ops on a uint8 N x H x W x C batch (a new array; the input is not changed).

        `index` (each image's place in the training set), `epoch` and `seed` drive `altflip`; without `index`
        it flips at random like `flip`."""
        out = images
        for op in self.ops:
            if op.name == "flip" or (op.name == "altflip" and index is None):
                out = flip(out, rng)
            elif op.name == "altflip":
                out = alternating_flip(out, index, epoch, seed)
            elif op.name == "crop":
                out = pad_crop(out, op.param, rng)
            elif op.name == "cutout":
                out = cutout(out, op.param, rng)
        return out if out is not images else images.copy()


def _parse_op(item: str) -> Op:
    name, _, raw = str(item).strip().partition(":")
    name = name.strip().lower()
    if name == "seed":
        raise EdgeError("augment: 'seed' is a whole policy (augment: seed), not an op to combine with others.")
    if name not in OPS:
        raise EdgeError(f"augment: unknown op {name!r}; ops are {', '.join(OPS)} "
                        f"(or a policy: {', '.join(POLICIES)}).{did_you_mean(name, list(OPS) + list(POLICIES))}")
    default, what, least = OPS[name]
    if default is None:
        if raw:
            raise EdgeError(f"augment: {name} takes no parameter (got {item!r}).")
        return Op(name)
    try:
        value = int(raw) if raw else default
    except ValueError:
        raise EdgeError(f"augment: {name}'s parameter is the {what}, a whole number (got {raw!r}).") from None
    if value < least:
        raise EdgeError(f"augment: {name}'s {what} must be at least {least} (got {value}).")
    return Op(name, value)


def parse_policy(value: Union[str, bool, Sequence[str], None]) -> Policy:
    """`fast` | `seed` | `none` | a list of ops; true/false are the older on/off switch (seed/none)."""
    if value is True:
        value = "seed"
    if value is False or value is None:
        value = "none"
    if isinstance(value, str):
        name = value.strip().lower()
        if name in POLICIES:
            return Policy(tuple(Op("seed") if o == "seed" else _parse_op(o) for o in POLICIES[name]))
        if name in ("true", "false"):
            return parse_policy(name == "true")
        value = [v for v in name.strip("[]").split(",") if v.strip()]
    if not isinstance(value, (list, tuple)):
        raise EdgeError(f"augment must be one of {', '.join(POLICIES)} or a list of ops, not {value!r}.")
    ops = tuple(_parse_op(v) for v in value)
    names = [o.name for o in ops]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise EdgeError(f"augment: {', '.join(sorted(dup))} is listed twice.")
    if {"flip", "altflip"} <= set(names):
        raise EdgeError("augment: flip and altflip are two ways of flipping; list one of them.")
    return Policy(ops)


def mirror(images: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """A copy with the images where `mask` is true mirrored left to right."""
    out = images.copy()
    out[mask] = out[mask, :, ::-1]
    return out


def flip(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return mirror(images, rng.random(len(images)) < 0.5)


def alternating_flip(images: np.ndarray, index: np.ndarray, epoch: int, seed: int) -> np.ndarray:
    """Flip image i when (a seeded hash of i) differs from the epoch's parity: every image each way in turn."""
    with np.errstate(over="ignore"):  # the hash wraps around on purpose
        h = (np.asarray(index, np.uint64) + np.uint64(seed + 1) * np.uint64(0x9E3779B97F4A7C15)) \
            * np.uint64(0xBF58476D1CE4E5B9)
    return mirror(images, ((h >> np.uint64(31)) & np.uint64(1)).astype(bool) != bool(epoch % 2))


def pad_crop(images: np.ndarray, pad: int, rng: np.random.Generator) -> np.ndarray:
    """Reflect-pad by `pad` pixels and crop back at a random offset: a translation without black borders."""
    n, h, w = images.shape[:3]
    pad = min(pad, h - 1, w - 1)  # numpy's reflect padding needs pad < side
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")
    dy, dx = rng.integers(0, 2 * pad + 1, n), rng.integers(0, 2 * pad + 1, n)
    rows = dy[:, None] + np.arange(h)[None]
    cols = dx[:, None] + np.arange(w)[None]
    return padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


def cutout(images: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Zero one size x size square per image, centred anywhere (so it may be clipped by the border)."""
    n, h, w = images.shape[:3]
    cy, cx = rng.integers(0, h, n), rng.integers(0, w, n)
    y0, x0 = np.clip(cy - size // 2, 0, h), np.clip(cx - size // 2, 0, w)
    y1, x1 = np.clip(cy - size // 2 + size, 0, h), np.clip(cx - size // 2 + size, 0, w)
    rows, cols = np.arange(h)[None, :], np.arange(w)[None, :]
    inside = (((rows >= y0[:, None]) & (rows < y1[:, None]))[:, :, None]
              & ((cols >= x0[:, None]) & (cols < x1[:, None]))[:, None, :])
    out = images.copy()
    out[inside] = 0
    return out


def seed_layers(seed: int):
    """The seed documents' policy as Keras layers (run inside tf.data on float images)."""
    import tf_keras as keras
    return keras.Sequential([
        keras.layers.RandomFlip("horizontal", seed=seed),
        keras.layers.RandomRotation(15 / 360, fill_mode="nearest", seed=seed + 1),
        keras.layers.RandomTranslation(0.1, 0.1, fill_mode="nearest", seed=seed + 2),
        keras.layers.RandomZoom((-0.2, 0.2), fill_mode="nearest", seed=seed + 3),
    ], name="augment")
