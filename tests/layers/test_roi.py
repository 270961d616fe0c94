"""RoIPooling2D and RoIAlign2D: shared contract plus numpy-loop and tf.image references."""

import math

import keras
import numpy as np
import pytest

from cnn_apps.layers import RoIAlign2D, RoIPooling2D
from tests.layers.harness import check_layer


def roi_pool_loop(features, rois, ph, pw):
    """Fast R-CNN RoI max pooling, integer arithmetic, one bin at a time."""
    b_n, h_n, w_n, c_n = features.shape
    out = np.zeros((b_n, rois.shape[1], ph, pw, c_n))

    def cell(v, size):
        return int(math.floor(v * size + 0.5))

    for b in range(b_n):
        for r, (ymin, xmin, ymax, xmax) in enumerate(rois[b].astype(np.float64)):
            y0, y1 = cell(ymin, h_n), cell(ymax, h_n)
            x0, x1 = cell(xmin, w_n), cell(xmax, w_n)
            rh, rw = max(y1 - y0, 1), max(x1 - x0, 1)
            for i in range(ph):
                hs = min(max(y0 + (i * rh) // ph, 0), h_n)
                he = min(max(y0 - ((-(i + 1) * rh) // ph), 0), h_n)
                for j in range(pw):
                    ws = min(max(x0 + (j * rw) // pw, 0), w_n)
                    we = min(max(x0 - ((-(j + 1) * rw) // pw), 0), w_n)
                    if he > hs and we > ws:
                        out[b, r, i, j] = features[b, hs:he, ws:we].max(axis=(0, 1))
    return out


def bilinear(fmap, y, x):
    """Detectron2's bilinear_interpolate for one point (array-index coordinates)."""
    h_n, w_n = fmap.shape[:2]
    if y < -1.0 or y > h_n or x < -1.0 or x > w_n:
        return np.zeros(fmap.shape[2])
    y, x = max(y, 0.0), max(x, 0.0)
    y_lo, x_lo = int(y), int(x)
    if y_lo >= h_n - 1:
        y_lo = y_hi = h_n - 1
        y = float(y_lo)
    else:
        y_hi = y_lo + 1
    if x_lo >= w_n - 1:
        x_lo = x_hi = w_n - 1
        x = float(x_lo)
    else:
        x_hi = x_lo + 1
    ly, lx = y - y_lo, x - x_lo
    return ((1 - ly) * (1 - lx) * fmap[y_lo, x_lo] + (1 - ly) * lx * fmap[y_lo, x_hi]
            + ly * (1 - lx) * fmap[y_hi, x_lo] + ly * lx * fmap[y_hi, x_hi])


def roi_align_loop(features, rois, ph, pw, s, aligned=True):
    b_n, h_n, w_n, c_n = features.shape
    out = np.zeros((b_n, rois.shape[1], ph, pw, c_n))
    off = 0.5 if aligned else 0.0
    for b in range(b_n):
        for r, (ymin, xmin, ymax, xmax) in enumerate(rois[b].astype(np.float64)):
            y0, x0 = ymin * h_n - off, xmin * w_n - off
            rh, rw = (ymax - ymin) * h_n, (xmax - xmin) * w_n
            if not aligned:
                rh, rw = max(rh, 1.0), max(rw, 1.0)
            bh, bw = rh / ph, rw / pw
            for i in range(ph):
                for j in range(pw):
                    acc = np.zeros(c_n)
                    for iy in range(s):
                        for ix in range(s):
                            y = y0 + i * bh + (iy + 0.5) * bh / s
                            x = x0 + j * bw + (ix + 0.5) * bw / s
                            acc += bilinear(features[b].astype(np.float64), y, x)
                    out[b, r, i, j] = acc / (s * s)
    return out


def random_rois(rng, batch, num, low=-0.2, high=1.2):
    a = rng.uniform(low, high, (batch, num, 2, 2))
    lo, hi = a.min(axis=2), a.max(axis=2)  # (y, x) min / max
    return np.concatenate([lo, hi], axis=-1).astype(np.float32)


def run(layer, features, rois):
    return keras.ops.convert_to_numpy(layer([features, rois])).astype(np.float64)


def test_roi_pooling_contract():
    out = check_layer(lambda: RoIPooling2D(pool_size=(2, 3)), [(2, 8, 8, 3), (2, 4, 4)],
                      input_low=0.0, input_high=1.0)[0]
    assert out.shape == (2, 4, 2, 3, 3)


def test_roi_align_contract():
    out = check_layer(lambda: RoIAlign2D(pool_size=(2, 2), sampling_ratio=2),
                      [(2, 8, 8, 3), (2, 4, 4)], input_low=0.0, input_high=1.0)[0]
    assert out.shape == (2, 4, 2, 2, 3)


def test_roi_pooling_seed_example_7x5_proposal_to_2x2():
    """S3/S4: a region proposal of size 7×5 (7 wide, 5 tall) on an 8×8 map pooled to 2×2."""
    rng = np.random.default_rng(0)
    fmap = rng.uniform(-1, 1, (1, 8, 8, 2)).astype(np.float32)
    # Cells x in [0, 7), y in [3, 8): normalized (ymin, xmin, ymax, xmax).
    rois = np.array([[[3 / 8, 0.0, 8 / 8, 7 / 8]]], np.float32)
    got = run(RoIPooling2D((2, 2)), fmap, rois)[0, 0]
    # Row bins ⌊0⌋..⌈2.5⌉ = rows 3-5 and ⌊2.5⌋..⌈5⌉ = rows 5-7; column bins ⌊0⌋..⌈3.5⌉ =
    # cols 0-3 and ⌊3.5⌋..⌈7⌉ = cols 3-6.
    x = fmap[0]
    expected = np.stack([
        np.stack([x[3:6, 0:4].max(axis=(0, 1)), x[3:6, 3:7].max(axis=(0, 1))]),
        np.stack([x[5:8, 0:4].max(axis=(0, 1)), x[5:8, 3:7].max(axis=(0, 1))]),
    ])
    np.testing.assert_allclose(got, expected, rtol=0, atol=0)


def test_roi_pooling_matches_loop_on_random_rois():
    rng = np.random.default_rng(1)
    fmap = rng.normal(size=(2, 9, 7, 3)).astype(np.float32)
    rois = random_rois(rng, 2, 12)
    rois[0, 0] = [0.3, 0.3, 0.31, 0.32]      # smaller than one cell: bins repeat the cell
    rois[1, 1] = [1.05, 1.1, 1.3, 1.4]       # fully outside: every bin empty -> 0
    got = run(RoIPooling2D((3, 2)), fmap, rois)
    np.testing.assert_allclose(got, roi_pool_loop(fmap, rois, 3, 2), rtol=0, atol=0)
    np.testing.assert_array_equal(got[1, 1], 0.0)


@pytest.mark.tf_only
@pytest.mark.parametrize("shape,pool", [((2, 16, 16, 4), (7, 7)), ((1, 5, 11, 2), (2, 3)),
                                        ((1, 1, 3, 2), (2, 2))])
def test_roi_pooling_sparse_table_matches_the_masked_path_values_and_gradients(shape, pool):
    """The range-maximum-query path (static map size) and the per-roi masked path give the
    same bins and the same gradient w.r.t. the map, on rois of every size (inside the map,
    crossing its border, fully outside, thinner than a cell)."""
    import tensorflow as tf

    rng = np.random.default_rng(7)
    fmap = tf.constant(rng.normal(size=shape), tf.float32)
    rois = tf.constant(random_rois(rng, shape[0], 20, -0.3, 1.3))
    layer = RoIPooling2D(pool)
    layer.build([shape, tuple(rois.shape)])
    features, flat, batch_index, dims, count = layer._prepare([fmap, rois])
    h, w = float(shape[1]), float(shape[2])
    rows = layer._bin_masks(tf.floor(flat[:, 0] * h + 0.5), tf.floor(flat[:, 2] * h + 0.5),
                            shape[1], pool[0])
    cols = layer._bin_masks(tf.floor(flat[:, 1] * w + 0.5), tf.floor(flat[:, 3] * w + 0.5),
                            shape[2], pool[1])
    results = []
    for path in (layer._pool_sparse_table, layer._pool_masked):
        with tf.GradientTape() as tape:
            tape.watch(features)
            out = path(features, rows, cols, batch_index)
            loss = tf.reduce_sum(out * tf.cos(out))
        grad = tf.convert_to_tensor(tape.gradient(loss, features))
        results.append((out.numpy(), grad.numpy()))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-6, atol=1e-6)


def test_roi_pooling_dynamic_spatial_size():
    fmap_in = keras.Input((None, None, 2))
    rois_in = keras.Input((3, 4))
    model = keras.Model([fmap_in, rois_in], RoIPooling2D((2, 2))([fmap_in, rois_in]))
    rng = np.random.default_rng(2)
    for h, w in [(6, 10), (5, 4)]:
        fmap = rng.normal(size=(1, h, w, 2)).astype(np.float32)
        rois = random_rois(rng, 1, 3, 0.0, 1.0)
        got = keras.ops.convert_to_numpy(model([fmap, rois]))
        np.testing.assert_allclose(got, roi_pool_loop(fmap, rois, 2, 2), atol=0)


@pytest.mark.parametrize("path", ["call", "pool_dense"])
@pytest.mark.parametrize("aligned", [True, False])
def test_roi_align_matches_bilinear_loop(aligned, path):
    """Both paths: the layer call (per-sample gathers) and ``pool_dense`` (separable
    interpolation matrices, two matmuls)."""
    rng = np.random.default_rng(3)
    fmap = rng.normal(size=(2, 6, 8, 3)).astype(np.float32)
    rois = random_rois(rng, 2, 6)  # includes samples beyond the map edge
    rois[0, 0] = [0.0, 0.0, 1.0, 1.0]
    layer = RoIAlign2D((2, 3), sampling_ratio=2, aligned=aligned)
    got = (run(layer, fmap, rois) if path == "call" else
           keras.ops.convert_to_numpy(layer.pool_dense(fmap, rois)).astype(np.float64))
    np.testing.assert_allclose(got, roi_align_loop(fmap, rois, 2, 3, 2, aligned), atol=2e-5)


@pytest.mark.tf_only
def test_roi_align_dense_and_gather_paths_have_the_same_gradients():
    """W.r.t. the map and the roi corners (through the bilinear weights)."""
    import tensorflow as tf

    rng = np.random.default_rng(6)
    fmap = tf.constant(rng.normal(size=(2, 9, 7, 4)), tf.float32)
    rois = tf.constant(random_rois(rng, 2, 8))
    layer = RoIAlign2D((3, 2), sampling_ratio=2)
    results = []
    for pool in (lambda f, r: layer([f, r]), layer.pool_dense):
        with tf.GradientTape() as tape:
            tape.watch([fmap, rois])
            out = pool(fmap, rois)
            loss = tf.reduce_sum(out * tf.cos(out))
        results.append([out.numpy()] + [g.numpy() for g in tape.gradient(loss, [fmap, rois])])
    for dense, gather in zip(results[1], results[0]):
        np.testing.assert_allclose(dense, gather, rtol=1e-4, atol=1e-5)
    assert np.abs(results[1][2]).max() > 0  # the corners do get a gradient


@pytest.mark.tf_only
def test_roi_align_equals_crop_and_resize_with_documented_mapping():
    import tensorflow as tf

    rng = np.random.default_rng(4)
    b_n, h_n, w_n, ph, pw, s = 2, 8, 10, 3, 2, 2
    fmap = rng.normal(size=(b_n, h_n, w_n, 4)).astype(np.float32)
    rois = random_rois(rng, b_n, 5, 0.1, 0.9)  # every sample inside [0, H-1]
    got = run(RoIAlign2D((ph, pw), sampling_ratio=s), fmap, rois)
    boxes = []
    for ymin, xmin, ymax, xmax in rois.reshape(-1, 4).astype(np.float64):
        row = []
        for lo, hi, size, n in ((ymin, ymax, h_n, ph * s), (xmin, xmax, w_n, pw * s)):
            extent = (hi - lo) * size
            a = (lo * size + extent / (2 * n) - 0.5) / (size - 1)
            b = (lo * size + extent * (1 - 1 / (2 * n)) - 0.5) / (size - 1)
            row.append((a, b))
        boxes.append([row[0][0], row[1][0], row[0][1], row[1][1]])
    crops = tf.image.crop_and_resize(fmap, np.asarray(boxes, np.float32),
                                     np.repeat(np.arange(b_n), 5), (ph * s, pw * s))
    expected = tf.nn.avg_pool2d(crops, s, s, "VALID").numpy().reshape(got.shape)
    np.testing.assert_allclose(got, expected, atol=2e-5)


def test_roi_layers_export_outputs_and_config_values():
    layer = RoIAlign2D(pool_size=3, sampling_ratio=1, aligned=False)
    config = layer.get_config()
    assert config["pool_size"] == [3, 3] and config["sampling_ratio"] == 1
    assert config["aligned"] is False
    assert RoIPooling2D.from_config(RoIPooling2D((2, 4)).get_config()).pool_size == (2, 4)
    assert layer.compute_output_shape([(None, 8, 8, 5), (None, 7, 4)]) == (None, 7, 3, 3, 5)


def test_roi_layers_reject_bad_arguments():
    with pytest.raises(ValueError, match="pool_size"):
        RoIPooling2D(pool_size=(0, 2))
    with pytest.raises(ValueError, match="sampling_ratio"):
        RoIAlign2D(sampling_ratio=0)
    with pytest.raises(ValueError, match="rois"):
        RoIPooling2D((2, 2))([keras.Input((8, 8, 3)), keras.Input((4, 5))])
    with pytest.raises(ValueError, match="feature_map"):
        RoIAlign2D((2, 2))([keras.Input((8, 3)), keras.Input((4, 4))])
