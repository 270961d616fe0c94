"""DropConnect, LpRegularizer, LRN, AlexNet init and LSUV (S0 §3.5, §3.6.2)."""

import keras
import numpy as np
import pytest

from cnn_apps.layers import (ALEXNET_BIAS_ONE_LAYERS, DropConnectConv2D, DropConnectDense,
                             LocalResponseNormalization, LpRegularizer, alexnet_bias_initializer,
                             alexnet_normal, lsuv_initialize)
from tests.layers.harness import check_layer, random_inputs


def _np(t):
    return keras.ops.convert_to_numpy(t).astype("float64")


def _random_init(seed):
    return keras.initializers.RandomUniform(-1.0, 1.0, seed=seed)


def _assert_masked_copy(effective, weight, rate):
    """Every effective entry is 0 or weight/(1-rate); returns the kept fraction."""
    scaled = weight / (1.0 - rate)
    kept = np.isclose(effective, scaled, rtol=1e-4, atol=1e-5)
    dropped = np.isclose(effective, 0.0, atol=1e-5)
    assert np.all(kept | dropped), "an effective weight is neither 0 nor w/(1-rate)"
    return kept.mean()


# ----------------------------------------------------------------------------- DropConnect
def test_drop_connect_dense_contract_and_inference_equals_dense():
    make = lambda: DropConnectDense(5, rate=0.3, activation="relu", seed=1,  # noqa: E731
                                    bias_initializer=_random_init(2))
    out = check_layer(make, [(2, 7)])[0]
    x = random_inputs([(2, 7)])[0]
    layer = make()
    layer.build((None, 7))
    dense = keras.layers.Dense(5, activation="relu")
    dense.build((None, 7))
    dense.set_weights(layer.get_weights())
    np.testing.assert_allclose(_np(layer(x)), _np(dense(x)), rtol=1e-6, atol=1e-6)
    assert out.shape == (2, 5)


def test_drop_connect_dense_rate_zero_trains_as_dense():
    x = random_inputs([(3, 4, 7)])[0]
    layer = DropConnectDense(6, rate=0.0, bias_initializer=_random_init(3))
    y_train = _np(layer(x, training=True))
    kernel, bias = (_np(w) for w in layer.weights)
    np.testing.assert_allclose(y_train, x @ kernel + bias, rtol=1e-5, atol=1e-6)


def test_drop_connect_dense_training_masks_weights_and_biases():
    """One mask per call: rows e_i and 0 read the masked kernel and bias back out."""
    n_in, n_out, rate = 16, 32, 0.4
    layer = DropConnectDense(n_out, rate=rate, seed=4, bias_initializer=_random_init(5))
    x_rand = random_inputs([(3, n_in)], seed=6)[0]
    x = np.concatenate([np.eye(n_in), np.zeros((1, n_in)), x_rand]).astype("float32")
    y = _np(layer(x, training=True))
    kernel, bias = (_np(w) for w in layer.weights)
    bias_eff = y[n_in]
    kernel_eff = y[:n_in] - bias_eff
    kept_w = _assert_masked_copy(kernel_eff, kernel, rate)
    kept_b = _assert_masked_copy(bias_eff, bias, rate)
    # 512 kernel entries: the kept fraction has std 0.022 around 0.6.
    assert abs(kept_w - (1 - rate)) < 0.08
    assert 0.2 < kept_b < 1.0
    np.testing.assert_allclose(y[n_in + 1:], x_rand @ kernel_eff + bias_eff, rtol=1e-4,
                               atol=1e-5)


def test_drop_connect_dense_expected_training_output_is_inference_output():
    layer = DropConnectDense(4, rate=0.5, seed=7, bias_initializer=_random_init(8))
    x = random_inputs([(2, 6)], seed=9)[0]
    draws = np.stack([_np(layer(x, training=True)) for _ in range(400)])
    assert draws.std(axis=0).min() > 0, "training outputs should vary between calls"
    # Each output sums 7 terms of magnitude <= 1 masked at rate 0.5 (scale 2): std <= ~2.7,
    # so the mean of 400 draws is within 0.4 with a wide margin.
    np.testing.assert_allclose(draws.mean(axis=0), _np(layer(x)), atol=0.4)


def test_drop_connect_conv_contract_and_inference_equals_conv2d():
    make = lambda: DropConnectConv2D(4, 3, rate=0.25, strides=2, padding="same",  # noqa: E731
                                     seed=1, bias_initializer=_random_init(2))
    out = check_layer(make, [(2, 7, 7, 3)])[0]
    x = random_inputs([(2, 7, 7, 3)])[0]
    layer = make()
    layer.build((None, 7, 7, 3))
    conv = keras.layers.Conv2D(4, 3, strides=2, padding="same")
    conv.build((None, 7, 7, 3))
    conv.set_weights(layer.get_weights())
    np.testing.assert_allclose(_np(layer(x)), _np(conv(x)), rtol=1e-5, atol=1e-5)
    assert out.shape == (2, 4, 4, 4)
    assert layer.compute_output_shape((None, 7, 7, 3)) == (None, 4, 4, 4)


def test_drop_connect_conv_training_masks_kernel_and_bias():
    kh, kw, cin, filters, rate = 3, 3, 2, 8, 0.5
    layer = DropConnectConv2D(filters, (kh, kw), rate=rate, seed=3,
                              bias_initializer=_random_init(4))
    n = kh * kw * cin
    one_hot = np.eye(n).reshape(n, kh, kw, cin)
    x = np.concatenate([one_hot, np.zeros((1, kh, kw, cin))]).astype("float32")
    y = _np(layer(x, training=True))[:, 0, 0, :]          # valid conv -> 1x1 output
    kernel, bias = (_np(w) for w in layer.weights)
    bias_eff = y[n]
    kernel_eff = (y[:n] - bias_eff).reshape(kh, kw, cin, filters)
    kept = _assert_masked_copy(kernel_eff, kernel, rate)
    _assert_masked_copy(bias_eff, bias, rate)
    assert abs(kept - (1 - rate)) < 0.12                   # 144 entries, std 0.042
    layer0 = DropConnectConv2D(filters, 3, rate=0.0, bias_initializer=_random_init(5))
    y0 = _np(layer0(x, training=True))[:, 0, 0, :]
    k0, b0 = (_np(w) for w in layer0.weights)
    np.testing.assert_allclose(y0[:n], k0.reshape(n, filters) + b0, rtol=1e-5, atol=1e-6)


def test_drop_connect_bad_arguments():
    with pytest.raises(ValueError, match="rate"):
        DropConnectDense(4, rate=1.0)
    with pytest.raises(ValueError, match="units"):
        DropConnectDense(0, rate=0.5)
    with pytest.raises(ValueError, match="padding"):
        DropConnectConv2D(4, 3, rate=0.5, padding="full")
    with pytest.raises(ValueError, match="kernel_size"):
        DropConnectConv2D(4, (3, 3, 3), rate=0.5)


@pytest.mark.tf_only
def test_drop_connect_trains_with_dynamic_shapes_in_tf_function():
    import tensorflow as tf

    layer = DropConnectConv2D(4, 3, rate=0.5, padding="same", seed=2)
    fn = tf.function(lambda t: layer(t, training=True),
                     input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    for shape in [(2, 5, 6, 3), (1, 4, 3, 3)]:
        assert fn(tf.ones(shape)).shape == shape[:3] + (4,)


# ----------------------------------------------------------------------------- LpRegularizer
@pytest.mark.parametrize("p", [0.5, 1.0, 1.5, 2.0, 3.0])
def test_lp_regularizer_matches_numpy(p):
    w = np.array([[0.5, -1.5, 0.0], [2.0, -0.25, 1.0]], "float32")
    value = float(_np(LpRegularizer(p=p, strength=0.3)(w)))
    np.testing.assert_allclose(value, 0.3 * np.sum(np.abs(w.astype("float64")) ** p),
                               rtol=1e-6)


def test_lp_regularizer_equals_keras_l1_l2_and_serializes():
    w = random_inputs([(4, 5)], seed=3)[0]
    np.testing.assert_allclose(_np(LpRegularizer(2, 0.01)(w)),
                               _np(keras.regularizers.L2(0.01)(w)), rtol=1e-6)
    np.testing.assert_allclose(_np(LpRegularizer(1, 0.02)(w)),
                               _np(keras.regularizers.L1(0.02)(w)), rtol=1e-6)
    reg = LpRegularizer(p=0.7, strength=1e-3)
    restored = keras.regularizers.deserialize(keras.regularizers.serialize(reg))
    assert isinstance(restored, LpRegularizer)
    assert restored.get_config() == {"p": 0.7, "strength": 1e-3}
    dense = keras.layers.Dense(3, kernel_regularizer=reg)
    clone = keras.layers.Dense.from_config(dense.get_config())
    assert isinstance(clone.kernel_regularizer, LpRegularizer)
    assert clone.kernel_regularizer.p == 0.7


def test_lp_regularizer_adds_model_loss():
    dense = keras.layers.Dense(3, kernel_regularizer=LpRegularizer(3.0, 0.5))
    dense.build((None, 4))
    kernel = _np(dense.kernel)
    dense(np.ones((1, 4), "float32"))
    np.testing.assert_allclose(float(_np(dense.losses[0])), 0.5 * np.sum(np.abs(kernel) ** 3),
                               rtol=1e-5)


@pytest.mark.tf_only
def test_lp_regularizer_gradient_finite_at_zero_for_p_below_one():
    import tensorflow as tf

    w = tf.Variable([0.0, 0.5, -2.0])
    with tf.GradientTape() as tape:
        value = LpRegularizer(0.5, 1.0)(w)
    grad = tape.gradient(value, w).numpy()
    np.testing.assert_allclose(grad, [0.0, 0.5 * 0.5 ** -0.5, -0.5 * 2.0 ** -0.5], rtol=1e-6)


def test_lp_regularizer_bad_arguments():
    with pytest.raises(ValueError, match="p must"):
        LpRegularizer(p=0.0)
    with pytest.raises(ValueError, match="strength"):
        LpRegularizer(p=2.0, strength=-1.0)


# ----------------------------------------------------------------------------- LRN
def _numpy_lrn(a, depth_radius, bias, alpha, beta):
    a = a.astype("float64")
    out = np.empty_like(a)
    channels = a.shape[-1]
    for c in range(channels):
        lo, hi = max(0, c - depth_radius), min(channels, c + depth_radius + 1)
        window = np.sum(a[..., lo:hi] ** 2, axis=-1)
        out[..., c] = a[..., c] / (bias + alpha * window) ** beta
    return out


def test_lrn_contract_and_matches_numpy_loop():
    out = check_layer(lambda: LocalResponseNormalization(), [(2, 4, 4, 7)])[0]
    x = random_inputs([(2, 4, 4, 7)])[0]
    np.testing.assert_allclose(out, _numpy_lrn(x, 2, 2.0, 1e-4, 0.75), rtol=1e-5)


@pytest.mark.parametrize("r,k,alpha,beta", [(2, 2.0, 1e-2, 0.75), (1, 1.0, 0.5, 0.5),
                                            (0, 1.5, 0.1, 1.0), (4, 2.0, 1e-3, 0.75),
                                            (1, 1.0, 0.3, 0.6)])
def test_lrn_numpy_loop_large_inputs(r, k, alpha, beta):
    x = random_inputs([(2, 3, 3, 6)], low=-20, high=20)[0]
    y = _np(LocalResponseNormalization(r, k, alpha, beta)(x))
    np.testing.assert_allclose(y, _numpy_lrn(x, r, k, alpha, beta), rtol=1e-5, atol=1e-7)


@pytest.mark.tf_only
@pytest.mark.parametrize("r,k,alpha,beta", [(2, 2.0, 1e-4, 0.75), (1, 1.0, 0.5, 0.5),
                                            (3, 2.0, 1e-2, 0.6)])
def test_lrn_matches_tf_nn_local_response_normalization(r, k, alpha, beta):
    import tensorflow as tf

    x = random_inputs([(2, 5, 5, 9)], low=-20, high=20)[0]
    expected = tf.nn.local_response_normalization(x, depth_radius=r, bias=k, alpha=alpha,
                                                  beta=beta).numpy()
    np.testing.assert_allclose(_np(LocalResponseNormalization(r, k, alpha, beta)(x)), expected,
                               rtol=1e-5, atol=1e-6)


def test_conv_layers_accept_dynamic_spatial_size():
    inputs = keras.Input((None, None, 3))
    lrn = LocalResponseNormalization(1, 1.0, 0.5, 0.5)
    conv = DropConnectConv2D(4, 3, rate=0.5, padding="same", seed=1)
    model = keras.Model(inputs, [lrn(inputs), conv(inputs, training=True)])
    for shape in [(2, 5, 4, 3), (1, 3, 7, 3)]:
        x = random_inputs([shape], seed=1)[0]
        y_lrn, y_conv = model(x)
        np.testing.assert_allclose(_np(y_lrn), _numpy_lrn(x, 1, 1.0, 0.5, 0.5), rtol=1e-5)
        assert tuple(y_conv.shape) == shape[:3] + (4,)


def test_lrn_bad_arguments():
    with pytest.raises(ValueError, match="depth_radius"):
        LocalResponseNormalization(depth_radius=-1)
    with pytest.raises(ValueError, match="bias"):
        LocalResponseNormalization(bias=0.0)


# ----------------------------------------------------------------------------- AlexNet init
def test_alexnet_normal_statistics_and_serialization():
    init = alexnet_normal(seed=3)
    w = _np(init((300, 300)))
    assert abs(w.mean()) < 3e-4                     # standard error 0.01/300
    assert abs(w.std() - 0.01) < 3e-4
    assert np.abs(w).max() > 0.035                  # not truncated at 2 std
    restored = keras.initializers.deserialize(keras.initializers.serialize(init))
    assert isinstance(restored, keras.initializers.RandomNormal)
    assert restored.get_config()["stddev"] == 0.01


def test_alexnet_bias_initializer():
    for name in ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"]:
        value = _np(alexnet_bias_initializer(name)((4,)))
        expected = 1.0 if name in ALEXNET_BIAS_ONE_LAYERS else 0.0
        np.testing.assert_array_equal(value, np.full(4, expected), err_msg=name)
    assert set(ALEXNET_BIAS_ONE_LAYERS) == {"conv2", "conv4", "conv5", "fc6", "fc7"}
    with pytest.raises(ValueError, match="layer_name"):
        alexnet_bias_initializer("conv6")


# ----------------------------------------------------------------------------- LSUV
def _flat_kernel(layer):
    k = _np(layer.kernel)
    return k.reshape(-1, k.shape[-1])


def test_lsuv_gives_unit_output_variance_and_orthogonal_kernels():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, name="c1")(inputs)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(6, 3, name="c2")(x)
    x = keras.layers.Activation("tanh")(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(5, name="d1")(x)
    model = keras.Model(inputs, outputs)
    batch = random_inputs([(16, 8, 8, 3)], low=0.0, high=4.0)[0]
    assert lsuv_initialize(model, batch, tol=0.05) is model
    for name in ["c1", "c2", "d1"]:
        layer = model.get_layer(name)
        probe = keras.Model(inputs, layer.output)
        assert abs(np.var(_np(probe(batch))) - 1.0) < 0.05, name
        k = _flat_kernel(layer)                       # rows >= columns: K^T K = s^2 I
        gram = k.T @ k
        np.testing.assert_allclose(gram, np.eye(len(gram)) * gram[0, 0], atol=1e-4 * gram[0, 0])


def test_lsuv_measures_pre_activation_of_fused_activations():
    model = keras.Sequential([keras.Input((6,)),
                              keras.layers.Dense(8, activation="tanh", bias_initializer="ones"),
                              keras.layers.Dense(4, activation="sigmoid")])
    batch = random_inputs([(32, 6)], seed=4, low=-3, high=3)[0].astype("float64")
    lsuv_initialize(model, batch.astype("float32"), tol=0.05)
    (w1, b1), (w2, b2) = [[_np(v) for v in layer.weights] for layer in model.layers]
    pre1 = batch @ w1 + b1
    pre2 = np.tanh(pre1) @ w2 + b2
    assert abs(np.var(pre1) - 1.0) < 0.05 and abs(np.var(pre2) - 1.0) < 0.05
    np.testing.assert_allclose(_np(model(batch.astype("float32"))), 1 / (1 + np.exp(-pre2)),
                               rtol=1e-5)
    assert model.layers[0].activation is keras.activations.tanh


def test_lsuv_reaches_layers_nested_in_a_sub_model():
    inner = keras.Sequential([keras.Input((6, 6, 2)), keras.layers.Conv2D(4, 3),
                              keras.layers.ReLU(), keras.layers.Conv2D(4, 3)], name="inner")
    model = keras.Sequential([keras.Input((6, 6, 2)), inner, keras.layers.Flatten(),
                              keras.layers.Dense(3)])
    batch = random_inputs([(8, 6, 6, 2)], seed=2)[0]
    lsuv_initialize(model, batch, tol=0.1, seed=1)
    first = inner.layers[0]
    assert abs(np.var(_np(first(batch))) - 1.0) < 0.1
    assert abs(np.var(_np(inner(batch))) - 1.0) < 0.1
    assert abs(np.var(_np(model(batch))) - 1.0) < 0.1
    assert "call" not in first.__dict__, "the temporary hook must be removed"


def test_lsuv_reaches_convolutions_inside_a_residual_block():
    from cnn_apps.layers import ResidualBlock

    block = ResidualBlock(4, strides=2)
    model = keras.Sequential([keras.Input((6, 6, 3)), block, keras.layers.Flatten(),
                              keras.layers.Dense(2)])
    batch = random_inputs([(8, 6, 6, 3)], seed=5)[0]
    lsuv_initialize(model, batch, tol=0.1, seed=2)
    for conv in (block.convs[0], block.shortcut_conv):       # both read the block input
        pre = keras.ops.conv(batch, conv.kernel, strides=conv.strides, padding="same")
        assert abs(np.var(_np(pre)) - 1.0) < 0.1, conv.name
    assert abs(np.var(_np(model(batch))) - 1.0) < 0.1


def test_lsuv_warns_on_zero_variance_and_rejects_bad_input():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, use_bias=False)])
    with pytest.warns(UserWarning, match="variance"):
        lsuv_initialize(model, np.zeros((4, 4), "float32"))
    with pytest.raises(ValueError, match="tol"):
        lsuv_initialize(model, np.ones((4, 4), "float32"), tol=0.0)
    plain = keras.Sequential([keras.Input((4,)), keras.layers.ReLU()])
    with pytest.raises(ValueError, match="no layer with a kernel"):
        lsuv_initialize(plain, np.ones((4, 4), "float32"))
