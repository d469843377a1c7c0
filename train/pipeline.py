"""tf.data input pipelines: seeded shuffling, the seed's augmentation, resize and normalisation."""
from __future__ import annotations

from typing import Optional

import numpy as np
import tensorflow as tf
import tf_keras as keras

from edgekit_runtime import PreprocessSpec


def augmenter(seed: int) -> keras.Sequential:
    """Random horizontal flip, rotation ±15°, width/height shift 0.1 and zoom 0.8–1.2."""
    return keras.Sequential([
        keras.layers.RandomFlip("horizontal", seed=seed),
        keras.layers.RandomRotation(15 / 360, fill_mode="nearest", seed=seed + 1),
        keras.layers.RandomTranslation(0.1, 0.1, fill_mode="nearest", seed=seed + 2),
        keras.layers.RandomZoom((-0.2, 0.2), fill_mode="nearest", seed=seed + 3),
    ], name="augment")


def to_model_input(images: tf.Tensor, spec: PreprocessSpec) -> tf.Tensor:
    """uint8/float 0..255 RGB batch → resized, normalised float32 model input (the preprocess.json recipe)."""
    x = tf.cast(images, tf.float32)
    if tuple(x.shape[1:3]) != spec.size:
        # Bilinear with half-pixel centres: the same sampling as Pillow's bilinear when enlarging.
        x = tf.image.resize(x, spec.size, method="bilinear")
    if spec.channel_order == "BGR":
        x = x[..., ::-1]
    return x * tf.constant(spec.scale, tf.float32) + tf.constant(spec.offset, tf.float32)


def make_dataset(x: np.ndarray, y: Optional[np.ndarray], spec: PreprocessSpec, batch_size: int, *,
                 num_classes: int, shuffle: bool = False, augment: bool = False, seed: int = 0,
                 start_epoch: int = 0) -> tf.data.Dataset:
    """Batches of (model input, one-hot label), or model input alone when `y` is None.

    Arrays stay in numpy (a 60k x 160 x 160 array would not fit in a graph constant); each epoch
    draws a fresh permutation from `seed + epoch`, so a resumed run sees the same order.
    """
    n = len(x)
    epoch = [start_epoch]

    def batches():
        order = np.random.default_rng(seed + epoch[0]).permutation(n) if shuffle else np.arange(n)
        epoch[0] += 1
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            yield (x[idx], y[idx]) if y is not None else x[idx]

    img_sig = tf.TensorSpec((None, *x.shape[1:]), tf.uint8)
    sig = (img_sig, tf.TensorSpec((None,), y.dtype)) if y is not None else img_sig
    ds = tf.data.Dataset.from_generator(batches, output_signature=sig)
    ds = ds.apply(tf.data.experimental.assert_cardinality(-(-n // batch_size)))  # lets progress bars show a total
    aug = augmenter(seed) if augment else None

    def prepare(images, labels=None):
        images = tf.cast(images, tf.float32)
        if aug is not None:
            images = aug(images, training=True)
        out = to_model_input(images, spec)
        return out if labels is None else (out, tf.one_hot(labels, num_classes))

    return ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)
