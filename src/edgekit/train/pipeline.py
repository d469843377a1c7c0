"""tf.data input pipelines: seeded shuffling, an augmentation policy, resize and normalisation."""
from __future__ import annotations

from typing import Callable, Optional, Tuple

import numpy as np
import tensorflow as tf

from edgekit.train.augment import Policy, seed_layers
from edgekit.train.images import ImageRows
from edgekit_runtime import PreprocessSpec


def to_model_input(images: tf.Tensor, spec: PreprocessSpec) -> tf.Tensor:
    """uint8/float 0..255 RGB batch → resized, normalised float32 model input (the preprocess.json recipe)."""
    x = tf.cast(images, tf.float32)
    if tuple(x.shape[1:3]) != spec.size:
        # Bilinear with half-pixel centres: the same sampling as Pillow's bilinear when enlarging.
        x = tf.image.resize(x, spec.size, method="bilinear")
    if spec.channel_order == "BGR":
        x = x[..., ::-1]
    return x * tf.constant(spec.scale, tf.float32) + tf.constant(spec.offset, tf.float32)


def make_dataset(x: "np.ndarray | ImageRows", y: Optional[np.ndarray], spec: PreprocessSpec, batch_size: int, *,
                 num_classes: int, shuffle: bool = False, augment: Optional[Policy] = None, seed: int = 0,
                 start_epoch: int = 0, replicas: Optional[Tuple[int, int, int]] = None,
                 sampler: Optional[Callable[[np.random.Generator, int, int], np.ndarray]] = None) -> tf.data.Dataset:
    """Batches of (model input, one-hot label), or model input alone when `y` is None.

    Arrays stay in numpy (a 60k x 160 x 160 array would not fit in a graph constant); each epoch
    draws a fresh permutation from `seed + epoch` and its augmentation from (seed, epoch), so a
    resumed run sees the same batches. The numpy ops of `augment` run on the uint8 batch here.
    `x` may be ImageRows (a split of the memory-mapped decoded cache): then `x[idx]` reads just that batch,
    the same pixels an array would give, so memory does not grow with the data set.

    `replicas` = (first, local, total) under a distribution strategy: of every global batch of
    `batch_size` x total images, this worker yields the per-replica batches of replicas first … first+local-1
    (every worker a different part of the same permutation); the last, partial global batch is dropped so
    that every replica takes the same number of steps.

    `sampler(rng, n, epoch)`, when given, chooses each shuffled epoch's n indices instead of a permutation
    (hard_examples.HardExamples.order).
    """
    n = len(x)
    epoch = [start_epoch]
    numpy_aug = augment if augment is not None and not augment.is_seed and not augment.is_none else None
    first, local, total = replicas or (0, 1, 1)
    step = batch_size * total
    starts = range(0, n - step + 1, step) if replicas else range(0, n, batch_size)

    def batches():
        rng_order = np.random.default_rng(seed + epoch[0])
        if not shuffle:
            order = np.arange(n)
        else:
            order = sampler(rng_order, n, epoch[0]) if sampler else rng_order.permutation(n)
        rng = np.random.default_rng([seed, epoch[0], 1] + ([first] if replicas else []))
        this_epoch = epoch[0]
        epoch[0] += 1
        for start in starts:
            for r in range(first, first + local):
                idx = order[start + r * batch_size:start + (r + 1) * batch_size] if replicas else \
                    order[start:start + batch_size]
                images = x[idx] if numpy_aug is None else numpy_aug.apply(x[idx], rng, index=idx, epoch=this_epoch,
                                                                          seed=seed)
                yield (images, y[idx]) if y is not None else images

    img_sig = tf.TensorSpec((None, *x.shape[1:]), tf.uint8)
    # y is class indices, or (distillation) one row of target probabilities per image
    sig = (img_sig, tf.TensorSpec((None, *y.shape[1:]), y.dtype)) if y is not None else img_sig
    ds = tf.data.Dataset.from_generator(batches, output_signature=sig)
    count = len(starts) * local if replicas else -(-n // batch_size)
    ds = ds.apply(tf.data.experimental.assert_cardinality(count))  # lets progress bars show a total
    aug = seed_layers(seed) if augment is not None and augment.is_seed else None

    def prepare(images, labels=None):
        images = tf.cast(images, tf.float32)
        if aug is not None:
            images = aug(images, training=True)
        out = to_model_input(images, spec)
        if labels is None:
            return out
        return out, (labels if labels.shape.rank == 2 else tf.one_hot(labels, num_classes))

    # when Keras distributes this dataset itself (validation under a strategy), workers share it by batch:
    # a generator has no files to share out
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2).with_options(options)


def predict_images(model, x: np.ndarray, spec: PreprocessSpec, batch_size: int = 256, advance=None,
                   flip: bool = False) -> np.ndarray:
    """Probabilities for uint8 images, batch by batch from numpy (no generator-backed dataset to tear down);
    `flip`: of their mirror images, flipped batch by batch rather than as a copy of the whole of `x`."""
    @tf.function(reduce_retracing=True)
    def step(batch):
        return model(to_model_input(batch, spec), training=False)

    out = []
    for start in range(0, len(x), batch_size):
        batch = x[start:start + batch_size]
        out.append(step(tf.constant(np.ascontiguousarray(batch[:, :, ::-1]) if flip else batch)).numpy())
        if advance:
            advance(min(batch_size, len(x) - start))
    return np.concatenate(out) if out else np.zeros((0,) + tuple(model.output_shape[1:]), np.float32)
