"""tf.data pipelines: cache, shuffle, augment (Keras preprocessing layers), batch, prefetch."""

from __future__ import annotations

import math

import numpy as np


def build_augmenter(aug_cfg: dict, seed: int):
    """A Keras ``Sequential`` of random layers from the ``augment`` config section, or None.

    Operates on raw 0..255 pixels (survey S0 §3.7 data augmentation: shifting, rotation,
    mirroring, photometric transforms).
    """
    import keras

    layers = []
    if aug_cfg.get("horizontal_flip"):
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed))
    if aug_cfg.get("rotation"):
        layers.append(keras.layers.RandomRotation(float(aug_cfg["rotation"]) / 360.0,
                                                  fill_mode="constant", seed=seed + 1))
    if aug_cfg.get("shift"):
        s = float(aug_cfg["shift"])
        layers.append(keras.layers.RandomTranslation(s, s, fill_mode="constant", seed=seed + 2))
    if aug_cfg.get("zoom"):
        z = float(aug_cfg["zoom"])
        layers.append(keras.layers.RandomZoom((-z, z), fill_mode="constant", seed=seed + 3))
    if aug_cfg.get("brightness"):
        layers.append(keras.layers.RandomBrightness(float(aug_cfg["brightness"]),
                                                    value_range=(0, 255), seed=seed + 4))
    if aug_cfg.get("contrast"):
        layers.append(keras.layers.RandomContrast(float(aug_cfg["contrast"]), seed=seed + 5))
    return keras.Sequential(layers, name="augment") if layers else None


def make_dataset(images: np.ndarray, targets, batch_size: int, *, training: bool, seed: int,
                 augmenter=None):
    """Batches of float32 pixels and targets; ``targets`` is an array or a dict of arrays."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((images, targets)).cache()
    if training:
        ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=False)
    ds = ds.map(lambda x, y: (tf.cast(x, tf.float32), y), num_parallel_calls=tf.data.AUTOTUNE)
    if training and augmenter is not None:
        ds = ds.map(lambda x, y: (tf.clip_by_value(augmenter(x, training=True), 0.0, 255.0), y),
                    num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
    return max(1, math.ceil(num_examples / batch_size))
