"""The stateless augmenter: exact geometry against numpy/scipy, reproducibility from the seed
stream, and no variables (so it runs in traced per-worker pipelines)."""

import numpy as np
import pytest
import tensorflow as tf
from scipy import ndimage

from cnn_apps.data.pipeline import Augmenter, apply_augmentation, build_augmenter, make_dataset


def _images(n=3, size=12, channels=2, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, channels)).astype(
        np.float32)


def test_no_augmentation_config_gives_none_and_unknown_keys_fail():
    assert build_augmenter({"horizontal_flip": False, "shift": 0}) is None
    with pytest.raises(ValueError, match="unknown augment keys"):
        build_augmenter({"shfit": 0.1})
    with pytest.raises(ValueError, match="augment.rotation"):
        Augmenter(rotation=-5)
    with pytest.raises(ValueError, match="augment.zoom"):
        Augmenter(zoom=1.5)


def test_geometry_matches_scipy_affine_resampling():
    """Every pixel: out(p) = bilinear in(A·(p − c) + c + t), zero outside (scipy order=1)."""
    x = _images()
    aug = Augmenter(rotation=20.0, shift=0.2, zoom=0.3)
    seed = tf.constant([7, 11], tf.int64)
    out = aug(x, seed).numpy()
    # Recompute the per-image parameters the same way the augmenter draws them.
    seeds = tf.random.experimental.stateless_split(seed, num=7)
    u = [tf.random.stateless_uniform([len(x)], seeds[i], -1.0, 1.0).numpy() for i in range(4)]
    size = x.shape[1]
    c = (size - 1) / 2.0
    for i in range(len(x)):
        theta = np.deg2rad(u[0][i] * 20.0)
        s = 1.0 + u[1][i] * 0.3
        tx, ty = u[2][i] * 0.2 * size, u[3][i] * 0.2 * size
        # scipy works in (row, col) = (y, x): in_y = s(sinθ·(x−c) + cosθ·(y−c)) + c + ty.
        matrix = s * np.array([[np.cos(theta), np.sin(theta)], [-np.sin(theta), np.cos(theta)]])
        offset = np.array([c, c]) + np.array([ty, tx]) - matrix @ np.array([c, c])
        for ch in range(x.shape[-1]):
            ref = ndimage.affine_transform(x[i, ..., ch].astype(np.float64), matrix,
                                           offset=offset, order=1, mode="constant", cval=0.0)
            inside = ndimage.affine_transform(np.ones((size, size)), matrix, offset=offset,
                                              order=1, mode="constant", cval=0.0) > 1 - 1e-6
            # Pixels whose bilinear support lies fully inside the image agree exactly.
            np.testing.assert_allclose(out[i, ..., ch][inside], np.clip(ref, 0, 255)[inside],
                                       atol=1e-2)


def test_flip_brightness_contrast_are_the_formulas():
    x = _images(n=8)
    seed = tf.constant([3, 4], tf.int64)
    seeds = tf.random.experimental.stateless_split(seed, num=7)
    flipped = Augmenter(horizontal_flip=True)(x, seed).numpy()
    flips = tf.random.stateless_uniform([8], seeds[4]).numpy() < 0.5
    assert 0 < flips.sum() < 8
    for i in range(8):
        np.testing.assert_array_equal(flipped[i], x[i, :, ::-1] if flips[i] else x[i])
    u5 = tf.random.stateless_uniform([8], seeds[5], -1.0, 1.0).numpy()
    bright = Augmenter(brightness=0.1)(x, seed).numpy()
    np.testing.assert_allclose(bright, np.clip(x + (u5 * 25.5)[:, None, None, None], 0, 255),
                               atol=1e-3)
    u6 = tf.random.stateless_uniform([8], seeds[6], -1.0, 1.0).numpy()
    contrast = Augmenter(contrast=0.2)(x, seed).numpy()
    mean = x.mean(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(
        contrast, np.clip((x - mean) * (1 + 0.2 * u6)[:, None, None, None] + mean, 0, 255),
        atol=1e-3)


def test_dataset_is_reproducible_and_changes_every_pass():
    x, y = _images(n=8, seed=1), np.arange(8)
    aug = build_augmenter({"shift": 0.1, "rotation": 10.0})

    def passes(seed):
        ds = make_dataset(x, y, 4, training=True, seed=seed, augmenter=aug)
        return [np.concatenate([b[0].numpy() for b in ds]) for _ in range(2)]

    first, again = passes(5), passes(5)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)           # same seed, same stream
    assert not np.allclose(first[0], first[1])        # a new draw each pass


def test_augmentation_traces_without_creating_variables():
    """Parameter-server workers build their pipeline inside a traced function, where no
    variable may be created (cnn_apps.training.parameter_server)."""
    x, y = _images(n=4), np.arange(4)
    aug = build_augmenter({"horizontal_flip": True, "shift": 0.1, "rotation": 5.0,
                           "zoom": 0.1, "brightness": 0.1, "contrast": 0.1})

    def no_variables(next_creator, **kwargs):
        raise AssertionError("the augmentation pipeline created a variable")

    @tf.function
    def dataset_fn():
        with tf.variable_creator_scope(no_variables):
            ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(2)
            return apply_augmentation(ds, aug, 0)

    ds = dataset_fn()
    assert ds.element_spec[0].shape.as_list() == [None, 12, 12, 2]
