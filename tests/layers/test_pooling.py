"""Pooling and aggregation layers (cnn_apps.layers.pooling / .aggregation) against references.

Every numeric check compares with an independent numpy loop / numpy.fft / a Keras built-in.
"""

import math

import keras
import numpy as np
import pytest
from scipy import stats

from cnn_apps.layers import pooling as P
from tests.layers.harness import check_layer

RNG = np.random.default_rng(1234)


def _uniform(shape, low=-1.0, high=1.0):
    return RNG.uniform(low, high, size=shape).astype("float32")


def _np(x):
    return keras.ops.convert_to_numpy(x).astype("float64")


def _input_grad(fn, x):
    """d sum(fn(x)) / dx on the active backend."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        t = tf.convert_to_tensor(x)
        with tf.GradientTape() as tape:
            tape.watch(t)
            total = tf.reduce_sum(fn(t))
        return tape.gradient(total, t).numpy()
    import jax
    import jax.numpy as jnp

    return np.asarray(jax.grad(lambda t: jnp.sum(fn(t)))(jnp.asarray(x)))


def _np_windows(x, pool, stride, padding):
    """Reference window extraction (TF 'same' rule: extra padding goes after): [[window]]."""
    _, height, width, _ = x.shape
    if padding == "valid":
        out_h, out_w, top, left = ((height - pool[0]) // stride[0] + 1,
                                   (width - pool[1]) // stride[1] + 1, 0, 0)
    else:
        out_h, out_w = -(-height // stride[0]), -(-width // stride[1])
        top = max((out_h - 1) * stride[0] + pool[0] - height, 0) // 2
        left = max((out_w - 1) * stride[1] + pool[1] - width, 0) // 2
    rows = []
    for i in range(out_h):
        row = []
        for j in range(out_w):
            r0, c0 = i * stride[0] - top, j * stride[1] - left
            rs = [r for r in range(r0, r0 + pool[0]) if 0 <= r < height]
            cs = [c for c in range(c0, c0 + pool[1]) if 0 <= c < width]
            row.append(x[:, rs][:, :, cs].reshape(x.shape[0], -1, x.shape[3]))  # (B, n, C)
        rows.append(row)
    return rows


def _np_pool(x, pool, stride, padding, reduce):
    rows = _np_windows(x.astype("float64"), pool, stride, padding)
    return np.stack([np.stack([reduce(w) for w in row], 1) for row in rows], 1)


# ----------------------------------------------------------------------------- contract
CONTRACT_CASES = {
    "lp": (lambda: P.LpPooling2D(p=3.0), [(2, 6, 6, 3)], {}),
    "mixed": (lambda: P.MixedPooling2D(pool_size=3, strides=2, padding="same", seed=1),
              [(2, 6, 6, 3)], {}),
    "stochastic": (lambda: P.StochasticPooling2D(seed=2), [(2, 6, 6, 3)], {"input_low": 0.0}),
    "spectral": (lambda: P.SpectralPooling2D((3, 4)), [(2, 7, 8, 3)], {"tol": 1e-4}),
    "spectral_fft": (lambda: P.SpectralPooling2D((3, 4), method="fft"), [(2, 7, 8, 3)],
                     {"tol": 1e-4}),
    "spp": (lambda: P.SpatialPyramidPooling2D(bins=(1, 2, 3)), [(2, 7, 6, 3)], {}),
    "vlad": (lambda: P.VLADPooling(num_clusters=4), [(2, 5, 5, 6)], {"tol": 1e-4}),
    "bilinear": (lambda: P.BilinearPooling(), [(2, 4, 4, 3), (2, 4, 4, 2)], {"tol": 1e-4}),
    "kmax": (lambda: P.KMaxPooling1D(k=3), [(2, 8, 4)], {}),
    "dynamic_kmax": (lambda: P.DynamicKMaxPooling1D(k_top=2, layer_index=1, num_layers=2),
                     [(2, 8, 4)], {}),
    "folding": (lambda: P.Folding1D(), [(2, 5, 6)], {}),
}


@pytest.mark.parametrize("case", sorted(CONTRACT_CASES))
def test_layer_contract(case):
    make, shapes, kwargs = CONTRACT_CASES[case]
    outputs = check_layer(make, shapes, **kwargs)
    assert np.all(np.isfinite(outputs[0]))


# ----------------------------------------------------------------------------- Lp pooling
@pytest.mark.parametrize("pool,stride,padding", [((2, 2), (2, 2), "valid"),
                                                 ((3, 3), (2, 2), "same")])
def test_lp_pooling_matches_numpy_loop(pool, stride, padding):
    x = _uniform((2, 7, 6, 3))
    y = _np(P.LpPooling2D(p=3, pool_size=pool, strides=stride, padding=padding)(x))
    reference = _np_pool(x, pool, stride, padding,
                         lambda w: np.sum(np.abs(w) ** 3, axis=1) ** (1.0 / 3.0))
    np.testing.assert_allclose(y, reference, rtol=1e-5, atol=1e-6)


def test_lp_pooling_p1_is_sum_pooling_and_large_p_tends_to_max():
    x = _uniform((2, 8, 8, 3), 0.0, 1.0)
    average = _np(keras.layers.AveragePooling2D(2)(x))
    np.testing.assert_allclose(_np(P.LpPooling2D(p=1)(x)), 4.0 * average, rtol=1e-5)
    maximum = _np(keras.layers.MaxPooling2D(2)(x))
    np.testing.assert_allclose(_np(P.LpPooling2D(p=64)(x)), maximum, rtol=0.025)
    # Without the per-window max normalization 1e-3 ** 300 underflows to 0.
    tiny = 1e-3 * x
    np.testing.assert_allclose(_np(P.LpPooling2D(p=300)(tiny)), 1e-3 * maximum, rtol=0.01)


def test_lp_pooling_gradient_finite_at_zero_and_analytic():
    x = _uniform((1, 4, 4, 2))
    x[0, :2, :2, 0] = 0.0                      # one all-zero window
    x[0, 2:, :2, 1] = [[0.0, 0.0], [0.7, 0.0]]  # one window with a single non-zero value
    layer = P.LpPooling2D(p=3)
    grad = _input_grad(layer, x)
    assert np.all(np.isfinite(grad))
    np.testing.assert_array_equal(grad[0, :2, :2, 0], 0.0)
    # dy/da = sign(a)·|a|^(p−1) / y^(p−1) inside each window.
    y = np.repeat(np.repeat(_np(layer(x)), 2, axis=1), 2, axis=2)
    expected = np.sign(x) * np.abs(x) ** 2 / np.where(y > 0, y, 1.0) ** 2
    np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-6)


def test_lp_pooling_dynamic_spatial_size():
    inputs = keras.Input((None, None, 2))
    model = keras.Model(inputs, P.LpPooling2D(p=2, pool_size=3, strides=2, padding="same")(inputs))
    for size in ((5, 7), (8, 6)):
        x = _uniform((2, *size, 2))
        reference = _np_pool(x, (3, 3), (2, 2), "same",
                             lambda w: np.sqrt(np.sum(w ** 2, axis=1)))
        np.testing.assert_allclose(_np(model(x)), reference, rtol=1e-5, atol=1e-6)


def test_channels_first_matches_channels_last():
    x = _uniform((2, 6, 5, 3), 0.0, 1.0)
    x_first = np.transpose(x, (0, 3, 1, 2))
    for make in (lambda f: P.LpPooling2D(p=2, padding="same", data_format=f),
                 lambda f: P.StochasticPooling2D(data_format=f),
                 lambda f: P.SpectralPooling2D((3, 2), data_format=f)):
        last = _np(make("channels_last")(x))
        first = _np(make("channels_first")(x_first))
        np.testing.assert_allclose(np.transpose(first, (0, 2, 3, 1)), last, rtol=1e-5,
                                   atol=1e-6)
    spp_last = _np(P.SpatialPyramidPooling2D((1, 2), data_format="channels_last")(x))
    spp_first = _np(P.SpatialPyramidPooling2D((1, 2), data_format="channels_first")(x_first))
    np.testing.assert_allclose(spp_first, spp_last, rtol=1e-6)


# ----------------------------------------------------------------------------- mixed pooling
def test_mixed_pooling_inference_matches_numpy_loop():
    x = _uniform((2, 6, 6, 3))
    reference = _np_pool(x, (2, 2), (2, 2), "valid",
                         lambda w: 0.5 * w.max(axis=1) + 0.5 * w.mean(axis=1))
    np.testing.assert_allclose(_np(P.MixedPooling2D()(x)), reference, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_np(P.MixedPooling2D()(x, training=False)), reference,
                               rtol=1e-5, atol=1e-6)


def test_mixed_pooling_training_picks_max_or_average_per_example_channel():
    x = _uniform((200, 4, 4, 4))
    y = _np(P.MixedPooling2D(seed=7)(x, training=True))
    maximum = _np(keras.layers.MaxPooling2D(2)(x))
    average = _np(keras.layers.AveragePooling2D(2)(x))
    is_max = np.all(np.isclose(y, maximum, atol=1e-6), axis=(1, 2))    # (200, 4)
    is_avg = np.all(np.isclose(y, average, atol=1e-6), axis=(1, 2))
    assert np.all(is_max ^ is_avg), "each (example, channel) must be all max or all average"
    draws, chosen_max = is_max.size, int(is_max.sum())
    # Binomial(800, 0.5): 4.5 standard deviations.
    assert abs(chosen_max - draws / 2) < 4.5 * math.sqrt(draws * 0.25), chosen_max


# ----------------------------------------------------------------------------- stochastic pooling
def test_stochastic_pooling_inference_matches_numpy_and_zero_region():
    x = _uniform((2, 6, 6, 3), -0.2, 1.0)
    x[0, :2, :2, 1] = 0.0                      # all-zero region → 0, not NaN
    x[1, 2:4, 2:4, 2] = -0.5                   # no positive activation → 0

    def weighted_mean(w):
        weights = np.maximum(w, 0.0)
        total = weights.sum(axis=1)
        return np.where(total > 0, (weights * w).sum(axis=1) / np.where(total > 0, total, 1), 0)

    reference = _np_pool(x, (2, 2), (2, 2), "valid", weighted_mean)
    y = _np(P.StochasticPooling2D()(x))
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(y, reference, rtol=1e-5, atol=1e-6)
    assert y[0, 0, 0, 1] == 0.0 and y[1, 1, 1, 2] == 0.0


def test_stochastic_pooling_sampling_frequencies_match_probabilities():
    values = np.array([0.0, 0.1, 0.3, 0.6], dtype="float32")
    draws = 4000
    x = np.tile(values.reshape(1, 2, 2, 1), (draws, 1, 1, 2)).astype("float32")
    x[:, :, :, 1] = 0.0                        # an all-zero channel must give 0
    y = _np(P.StochasticPooling2D(seed=3)(x, training=True))
    assert np.all(y[..., 1] == 0.0)
    picked = y[:, 0, 0, 0]
    counts = np.array([np.sum(np.isclose(picked, v)) for v in values])
    assert counts.sum() == draws and counts[0] == 0, counts
    expected = values[1:] / values.sum() * draws
    assert stats.chisquare(counts[1:], expected).pvalue > 1e-3, counts


def test_stochastic_pooling_training_returns_window_members():
    x = _uniform((2, 7, 7, 2), 0.0, 1.0)
    y = _np(P.StochasticPooling2D(pool_size=3, strides=2, padding="same", seed=5)(
        x, training=True))
    rows = _np_windows(x.astype("float64"), (3, 3), (2, 2), "same")
    for i, row in enumerate(rows):
        for j, window in enumerate(row):
            hits = np.isclose(window, y[:, i:i + 1, j, :], atol=0).any(axis=1)
            assert hits.all(), (i, j)


# ----------------------------------------------------------------------------- spectral pooling
def _np_spectral(x, out):
    """numpy.fft reference; scaled by (h·w)/(H·W) (mean-preserving convention)."""
    height, width = x.shape[1:3]
    planes = np.transpose(x.astype("float64"), (0, 3, 1, 2))
    spectrum = np.fft.fftshift(np.fft.fft2(planes), axes=(-2, -1))
    top, left = height // 2 - out[0] // 2, width // 2 - out[1] // 2
    crop = spectrum[..., top:top + out[0], left:left + out[1]]
    y = np.real(np.fft.ifft2(np.fft.ifftshift(crop, axes=(-2, -1))))
    return np.transpose(y, (0, 2, 3, 1)) * (out[0] * out[1]) / (height * width)


@pytest.mark.parametrize("method", ["matmul", "fft"])
@pytest.mark.parametrize("size,out", [((8, 7), (4, 3)), ((7, 8), (5, 4)), ((6, 9), (6, 2)),
                                      ((5, 5), (1, 1))])
def test_spectral_pooling_matches_numpy_fft(method, size, out):
    x = _uniform((2, *size, 3))
    y = _np(P.SpectralPooling2D(out, method=method)(x))
    np.testing.assert_allclose(y, _np_spectral(x, out), rtol=1e-4, atol=2e-5)


def test_spectral_pooling_keeps_constant_maps_and_dynamic_size():
    inputs = keras.Input((None, None, 2))
    model = keras.Model(inputs, P.SpectralPooling2D((3, 3))(inputs))
    for size in ((6, 6), (9, 7)):
        x = _uniform((2, *size, 2))
        np.testing.assert_allclose(_np(model(x)), _np_spectral(x, (3, 3)), rtol=1e-4, atol=2e-5)
    constant = np.full((1, 8, 8, 1), 2.5, "float32")
    np.testing.assert_allclose(_np(P.SpectralPooling2D(4)(constant)), 2.5, rtol=1e-5)


# ----------------------------------------------------------------------------- SPP
def _np_spp(x, bins, reduce):
    height, width = x.shape[1:3]
    parts = []
    for b in bins:
        for i in range(b):
            for j in range(b):
                rows = slice(math.floor(i * height / b), math.ceil((i + 1) * height / b))
                cols = slice(math.floor(j * width / b), math.ceil((j + 1) * width / b))
                parts.append(reduce(x[:, rows, cols, :].astype("float64"), axis=(1, 2)))
    return np.concatenate(parts, axis=1)


@pytest.mark.parametrize("mode,reduce", [("max", np.max), ("avg", np.mean)])
def test_spp_matches_numpy_loop_for_two_sizes_in_one_model(mode, reduce):
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, P.SpatialPyramidPooling2D(bins=(1, 2, 4), mode=mode)(inputs))
    assert model.output.shape == (None, 3 * 21)
    for size in ((7, 5), (8, 12)):
        x = _uniform((2, *size, 3))
        y = _np(model(x))
        assert y.shape == (2, 63)
        np.testing.assert_allclose(y, _np_spp(x, (1, 2, 4), reduce), rtol=1e-5, atol=1e-6)
    # Static shapes: equal bins (reshape path, grids reused) and uneven nested bins.
    for size, bins in (((12, 12), (1, 2, 4)), ((13, 11), (6, 1, 3))):
        x = _uniform((2, *size, 3))
        np.testing.assert_allclose(_np(P.SpatialPyramidPooling2D(bins, mode)(x)),
                                   _np_spp(x, bins, reduce), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- VLAD / MOP
def _np_netvlad(x, kernel, bias, centers, normalize_input, eps=1e-12):
    x = x.reshape(x.shape[0], -1, x.shape[-1]).astype("float64")
    if normalize_input:
        x = x / np.sqrt(np.sum(x ** 2, -1, keepdims=True) + eps)
    out = []
    for sample in x:
        logits = sample @ kernel + bias
        soft = np.exp(logits - logits.max(1, keepdims=True))
        soft /= soft.sum(1, keepdims=True)
        v = np.zeros_like(centers, dtype="float64")
        for k in range(len(centers)):
            for i in range(len(sample)):
                v[k] += soft[i, k] * (sample[i] - centers[k])
        v /= np.sqrt(np.sum(v ** 2, 1, keepdims=True) + eps)
        flat = v.reshape(-1)
        out.append(flat / np.sqrt(np.sum(flat ** 2) + eps))
    return np.stack(out)


@pytest.mark.parametrize("normalize_input", [True, False])
def test_vlad_pooling_matches_numpy_formula_with_copied_weights(normalize_input):
    x = _uniform((2, 3, 4, 5))
    layer = P.VLADPooling(num_clusters=3, normalize_input=normalize_input)
    layer.build(x.shape)
    kernel, bias, centers = _uniform((5, 3)), _uniform((3,)), _uniform((3, 5))
    layer.set_weights([kernel, bias, centers])
    reference = _np_netvlad(x, kernel, bias, centers, normalize_input)
    np.testing.assert_allclose(_np(layer(x)), reference, rtol=1e-4, atol=1e-6)
    # Rank-3 descriptor input (batch, N, D) gives the same encoding.
    np.testing.assert_allclose(_np(layer(x.reshape(2, 12, 5))), reference, rtol=1e-4,
                               atol=1e-6)


def _np_hard_vlad(descriptors, centers, eps=1e-12):
    v = np.zeros(centers.shape)
    for d in descriptors.astype("float64"):
        k = int(np.argmin([np.sum((d - c) ** 2) for c in centers]))
        v[k] += d - centers[k]
    v /= np.sqrt(np.sum(v ** 2, 1, keepdims=True) + eps)
    return v.reshape(-1) / np.sqrt(np.sum(v ** 2) + eps)


def test_vlad_encode_and_set_centers_match_hard_assignment():
    centers = np.array([[2.0, 0, 0], [0, 2.0, 0], [0, 0, 2.0], [-2.0, 0, 0]], "float32")
    descriptors = (centers[RNG.integers(0, 3, 20)] + 0.3 * _uniform((20, 3))).astype("float32")
    expected = _np_hard_vlad(descriptors, centers)          # centre 3 stays empty
    np.testing.assert_allclose(P.vlad_encode(descriptors, centers), expected, rtol=1e-5,
                               atol=1e-7)
    layer = P.VLADPooling(4, normalize_input=False)
    layer.build((None, 20, 3))
    layer.set_centers(centers, alpha=200.0)                 # NetVLAD init → near-hard
    np.testing.assert_allclose(_np(layer(descriptors[None]))[0], expected, atol=1e-4)


def test_fit_vlad_centers_recovers_blob_means():
    means = np.array([[5.0, 0.0], [0.0, 5.0], [-5.0, -5.0]])
    points = np.concatenate([m + 0.2 * RNG.standard_normal((30, 2)) for m in means])
    centers = P.fit_vlad_centers(points, 3, iterations=10, seed=0)
    blob_means = np.stack([points[30 * i:30 * (i + 1)].mean(0) for i in range(3)])
    order = [int(np.argmin(np.sum((centers - m) ** 2, 1))) for m in blob_means]
    assert sorted(order) == [0, 1, 2]
    np.testing.assert_allclose(centers[order], blob_means, atol=1e-5)


def _tiny_backbone():
    inputs = keras.Input((4, 4, 3))
    x = keras.layers.Conv2D(5, 3, padding="same", activation="relu",
                            kernel_initializer=keras.initializers.GlorotUniform(seed=0),
                            bias_initializer="ones")(inputs)
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))


def test_multiscale_orderless_features_shapes_determinism_and_vlad_part():
    backbone, images = _tiny_backbone(), _uniform((2, 8, 8, 3), 0.0, 1.0)
    features, centers = P.multiscale_orderless_features(
        backbone, images, scales=(1.0, 0.5, 0.25), num_clusters=3, return_centers=True)
    assert features.shape == (2, 5 + 2 * 3 * 5) and [c.shape for c in centers] == [(3, 5)] * 2
    again = P.multiscale_orderless_features(backbone, images, scales=(1.0, 0.5, 0.25),
                                            num_clusters=3)
    np.testing.assert_array_equal(features, again)
    # Global part: the backbone on the whole image resized to its 4×4 input.
    whole = backbone.predict(_np(keras.ops.image.resize(images, (4, 4))), verbose=0)
    np.testing.assert_allclose(features[:, :5], whole, rtol=1e-5, atol=1e-6)
    # Scale 0.5: 4×4 patches at stride 1 (25 per image), VLAD with the returned centres.
    for n in range(2):
        patches = np.stack([images[n, r:r + 4, c:c + 4] for r in range(5) for c in range(5)])
        descriptors = backbone.predict(patches, verbose=0)
        np.testing.assert_allclose(features[n, 5:20], _np_hard_vlad(descriptors, centers[0]),
                                   rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- bilinear
@pytest.mark.parametrize("two_inputs", [True, False])
def test_bilinear_pooling_matches_numpy_einsum(two_inputs):
    a, b = _uniform((2, 4, 3, 3)), _uniform((2, 4, 3, 2))
    second = b if two_inputs else a
    y = _np(P.BilinearPooling()([a, b] if two_inputs else a))
    z = np.einsum("bhwi,bhwj->bij", a.astype("float64"), second.astype("float64")) / 12.0
    z = z.reshape(2, -1)
    z = np.sign(z) * np.sqrt(np.abs(z))
    np.testing.assert_allclose(y, z / np.linalg.norm(z, axis=1, keepdims=True), rtol=1e-4,
                               atol=1e-5)


# ----------------------------------------------------------------------------- k-max / folding
def _np_kmax(x, k):
    index = np.sort(np.argpartition(-x, k - 1, axis=1)[:, :k], axis=1)
    return np.take_along_axis(x, index, axis=1)


def test_kmax_pooling_keeps_original_order():
    x = _uniform((2, 9, 4))
    np.testing.assert_array_equal(_np(P.KMaxPooling1D(k=3)(x)), _np_kmax(x, 3))
    short = _uniform((2, 2, 4))                 # shorter than k: whole sequence, zero-padded
    y = _np(P.KMaxPooling1D(k=4)(short))
    np.testing.assert_array_equal(y[:, :2], short)
    np.testing.assert_array_equal(y[:, 2:], 0.0)


def test_dynamic_kmax_pooling_two_lengths_through_one_model():
    inputs = keras.Input((None, 3))
    layer = P.DynamicKMaxPooling1D(k_top=3, layer_index=1, num_layers=3)
    model = keras.Model(inputs, layer(inputs))
    for length in (7, 13):
        k = max(3, math.ceil((3 - 1) / 3 * length))          # 5 and 9
        x = _uniform((2, length, 3))
        np.testing.assert_array_equal(_np(model(x)), _np_kmax(x, k))
    short = _uniform((2, 2, 3))                 # s = 2 < k = k_top = 3: whole, zero-padded
    y = _np(model(short))
    assert y.shape == (2, 3, 3)
    np.testing.assert_array_equal(y[:, :2], short)
    np.testing.assert_array_equal(y[:, 2], 0.0)
    top = P.DynamicKMaxPooling1D(k_top=3, layer_index=3, num_layers=3)
    assert top.compute_output_shape((None, 13, 3)) == (None, 3, 3)


def test_folding_sums_adjacent_feature_rows():
    x = _uniform((2, 5, 6))
    expected = x.astype("float64").reshape(2, 5, 3, 2).sum(-1)
    np.testing.assert_allclose(_np(P.Folding1D()(x)), expected, rtol=1e-6)


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("make,match", [
    (lambda: P.LpPooling2D(p=0.5), "`p`"),
    (lambda: P.LpPooling2D(pool_size=0), "`pool_size`"),
    (lambda: P.MixedPooling2D(padding="full"), "`padding`"),
    (lambda: P.StochasticPooling2D(data_format="nhwc"), "`data_format`"),
    (lambda: P.SpectralPooling2D((2, 2), method="dct"), "`method`"),
    (lambda: P.SpatialPyramidPooling2D(bins=()), "`bins`"),
    (lambda: P.SpatialPyramidPooling2D(mode="min"), "`mode`"),
    (lambda: P.VLADPooling(num_clusters=0), "`num_clusters`"),
    (lambda: P.KMaxPooling1D(k=0), "`k`"),
    (lambda: P.DynamicKMaxPooling1D(k_top=2, layer_index=4, num_layers=3), "`layer_index`"),
])
def test_bad_arguments_raise_value_error(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_shapes_raise_value_error():
    with pytest.raises(ValueError, match="output_size"):
        P.SpectralPooling2D((9, 2))(np.zeros((1, 8, 8, 1), "float32"))
    with pytest.raises(ValueError, match="even"):
        P.Folding1D()(np.zeros((1, 4, 5), "float32"))
    with pytest.raises(ValueError, match="same spatial size"):
        P.BilinearPooling()([np.zeros((1, 4, 4, 2), "float32"), np.zeros((1, 3, 4, 2), "float32")])
    with pytest.raises(ValueError, match="scales"):
        P.multiscale_orderless_features(_tiny_backbone(), np.zeros((1, 8, 8, 3)),
                                        scales=(0.5, 0.25))
