"""tf.data pipelines: cache, shuffle, augment (stateless random ops), batch, prefetch."""

from __future__ import annotations

import math

import numpy as np

_AUGMENT_KEYS = ("horizontal_flip", "rotation", "shift", "zoom", "brightness", "contrast")


class Augmenter:
    """Random image augmentation with stateless random ops: no variables, so it runs inside
    any traced pipeline (including the per-worker dataset functions of
    ``strategy=parameter_server``) and is reproducible from its seed input.

    Survey S0 §3.7 (data augmentation: shifting, rotation, mirroring, photometric changes).
    For each image of a (B, H, W, C) batch of raw 0..255 pixels, with u ~ U(-1, 1) drawn per
    image and parameter:

    * geometry (one bilinear resampling, constant 0 fill): output pixel p samples the input
      at ``s·R(θ)·(p − c) + c + t``, with c the image centre, θ = u·rotation degrees,
      s = 1 + u·zoom (s > 1 zooms out), t = (u·shift·W, u·shift·H);
    * ``horizontal_flip``: mirror with probability 1/2;
    * ``brightness``: add u·brightness·255; ``contrast``: ``(x − mean)·(1 + u·contrast) +
      mean`` with the per-image, per-channel mean.

    Call it as ``augmenter(images, seed)`` with ``seed`` an int32/int64 tensor of shape (2,)
    (``apply_augmentation`` feeds one per batch from ``tf.data.Dataset.random``); results are
    clipped to 0..255.

    Example::

        aug = Augmenter(shift=0.1, rotation=10)
        out = aug(tf.zeros((4, 32, 32, 3)), tf.constant([1, 2]))
    """

    def __init__(self, horizontal_flip=False, rotation=0.0, shift=0.0, zoom=0.0,
                 brightness=0.0, contrast=0.0):
        values = {"rotation": rotation, "shift": shift, "zoom": zoom,
                  "brightness": brightness, "contrast": contrast}
        for name, value in values.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"augment.{name} must be a number >= 0, got {value!r}")
        if values["zoom"] >= 1.0:
            raise ValueError(f"augment.zoom must be < 1 (a zoom factor in (1 - zoom, 1 + zoom))"
                             f", got {zoom}")
        self.horizontal_flip = bool(horizontal_flip)
        self.rotation, self.shift, self.zoom = float(rotation), float(shift), float(zoom)
        self.brightness, self.contrast = float(brightness), float(contrast)

    @property
    def is_identity(self):
        return not (self.horizontal_flip or self.rotation or self.shift or self.zoom
                    or self.brightness or self.contrast)

    def __call__(self, images, seed):
        import tensorflow as tf

        images = tf.convert_to_tensor(images, tf.float32)
        seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=7)
        batch = tf.shape(images)[0]

        def uniform(i):
            return tf.random.stateless_uniform([batch], seeds[i], -1.0, 1.0)

        if self.rotation or self.shift or self.zoom:
            images = self._geometry(images, uniform(0), uniform(1), uniform(2), uniform(3))
        if self.horizontal_flip:
            flip = tf.random.stateless_uniform([batch], seeds[4]) < 0.5
            images = tf.where(flip[:, None, None, None], tf.reverse(images, axis=[2]), images)
        if self.brightness:
            images = images + (uniform(5) * self.brightness * 255.0)[:, None, None, None]
        if self.contrast:
            mean = tf.reduce_mean(images, axis=[1, 2], keepdims=True)
            factor = 1.0 + uniform(6) * self.contrast
            images = (images - mean) * factor[:, None, None, None] + mean
        return tf.clip_by_value(images, 0.0, 255.0)

    def _geometry(self, images, u_angle, u_zoom, u_tx, u_ty):
        import tensorflow as tf

        shape = tf.shape(images)
        height, width = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
        theta = u_angle * (self.rotation * math.pi / 180.0)
        scale = 1.0 + u_zoom * self.zoom
        cos, sin = tf.cos(theta) * scale, tf.sin(theta) * scale
        cx, cy = (width - 1.0) / 2.0, (height - 1.0) / 2.0
        tx, ty = u_tx * self.shift * width, u_ty * self.shift * height
        # in = A·(p − c) + c + t, A = s·R(θ); ImageProjectiveTransformV3 rows map output
        # (x, y) to input: x_in = a0·x + a1·y + a2, y_in = b0·x + b1·y + b2.
        a2 = cx + tx - (cos * cx - sin * cy)
        b2 = cy + ty - (sin * cx + cos * cy)
        zeros = tf.zeros_like(cos)
        transforms = tf.stack([cos, -sin, a2, sin, cos, b2, zeros, zeros], axis=1)
        out = tf.raw_ops.ImageProjectiveTransformV3(
            images=images, transforms=transforms, output_shape=shape[1:3],
            fill_value=0.0, interpolation="BILINEAR", fill_mode="CONSTANT")
        out.set_shape(images.shape)  # the op loses the static height/width
        return out


def build_augmenter(aug_cfg: dict, seed: int = 0):
    """The ``Augmenter`` for the ``augment`` config section, or None when it changes nothing.

    ``seed`` is accepted for backward compatibility; randomness comes from the seed stream
    ``apply_augmentation`` attaches to the dataset.
    """
    unknown = sorted(set(aug_cfg) - set(_AUGMENT_KEYS))
    if unknown:
        raise ValueError(f"unknown augment keys {unknown}; expected some of {_AUGMENT_KEYS}")
    augmenter = Augmenter(**{k: aug_cfg[k] for k in _AUGMENT_KEYS if aug_cfg.get(k)})
    return None if augmenter.is_identity else augmenter


def apply_augmentation(ds, augmenter, seed: int):
    """Map ``augmenter`` over the ``(images, targets)`` batches of ``ds``, each batch with its
    own (2,) seed from ``tf.data.Dataset.random(seed)`` (new draws every pass)."""
    import tensorflow as tf

    if augmenter is None:
        return ds
    seeds = tf.data.Dataset.random(seed=int(seed), rerandomize_each_iteration=True).batch(2)
    return tf.data.Dataset.zip((ds, seeds)).map(
        lambda batch, s: (augmenter(batch[0], s), batch[1]), num_parallel_calls=tf.data.AUTOTUNE)


def make_dataset(images: np.ndarray, targets, batch_size: int, *, training: bool, seed: int,
                 augmenter=None):
    """Batches of float32 pixels and targets; ``targets`` is an array or a dict of arrays."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((images, targets)).cache()
    if training:
        ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=False)
    ds = ds.map(lambda x, y: (tf.cast(x, tf.float32), y), num_parallel_calls=tf.data.AUTOTUNE)
    if training:
        ds = apply_augmentation(ds, augmenter, seed)
    return ds.prefetch(tf.data.AUTOTUNE)


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
    return max(1, math.ceil(num_examples / batch_size))
