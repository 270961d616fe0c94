"""Highway, residual, dense and stochastic-depth blocks (S0 §3.6.5), against numpy."""

import math

import keras
import numpy as np
import pytest

from cnn_apps.layers import (DenseBlock, Highway, HighwayConv2D, ResidualBlock,
                             StochasticDepth)
from tests.layers.harness import check_layer, random_inputs

EPS = 1e-5     # the blocks' default bn_epsilon


def _np(t):
    return keras.ops.convert_to_numpy(t).astype("float64")


def _relu(x):
    return np.maximum(x, 0.0)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _conv(x, kernel, stride=1, dilation=1, groups=1):
    """Direct "same"-padded convolution with TensorFlow's padding split (extra pad last)."""
    n, h, w, _ = x.shape
    kh, kw, cin_g, filters = kernel.shape
    span_h, span_w = (kh - 1) * dilation + 1, (kw - 1) * dilation + 1
    oh, ow = math.ceil(h / stride), math.ceil(w / stride)
    ph = max((oh - 1) * stride + span_h - h, 0)
    pw = max((ow - 1) * stride + span_w - w, 0)
    xp = np.pad(x, [(0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)])
    out = np.zeros((n, oh, ow, filters))
    per_group = filters // groups
    for g in range(groups):
        xs = xp[..., g * cin_g:(g + 1) * cin_g]
        for i in range(kh):
            for j in range(kw):
                patch = xs[:, i * dilation:i * dilation + (oh - 1) * stride + 1:stride,
                           j * dilation:j * dilation + (ow - 1) * stride + 1:stride, :]
                out[..., g * per_group:(g + 1) * per_group] += \
                    patch @ kernel[i, j, :, g * per_group:(g + 1) * per_group]
    return out


def _bn(x, gamma, beta, mean, var, eps=EPS):
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def _randomize(layer, seed):
    """Random weights everywhere; BN variances positive. Returns {path: float64 array}."""
    rng = np.random.default_rng(seed)
    values = []
    for v in layer.weights:
        shape = tuple(v.shape)
        value = rng.uniform(0.5, 1.5, shape) if "variance" in v.path or "gamma" in v.path \
            else rng.uniform(-0.5, 0.5, shape)
        values.append(value.astype("float32"))
    layer.set_weights(values)
    return {v.path.split("/", 1)[1]: _np(v) for v in layer.weights}


def _bn_of(w, name):
    return [w[f"{name}/{k}"] for k in ("gamma", "beta", "moving_mean", "moving_variance")]


# ----------------------------------------------------------------------------- Highway
def test_highway_contract_and_matches_numpy():
    make = lambda: Highway(activation="tanh", transform_bias=-1.0,  # noqa: E731
                           bias_initializer="random_uniform")
    check_layer(make, [(2, 6)])
    layer = make()
    x = random_inputs([(3, 2, 6)], seed=4)[0].astype("float64")
    y = _np(layer(x.astype("float32")))                    # rank-3 input works too
    np.testing.assert_allclose(_np(layer.gate_bias), -np.ones(6))   # negative gate bias
    _randomize(layer, 1)
    w_h, b_h, w_t, b_t = (_np(v) for v in (layer.kernel, layer.bias, layer.gate_kernel,
                                           layer.gate_bias))
    h, t = np.tanh(x @ w_h + b_h), _sigmoid(x @ w_t + b_t)
    np.testing.assert_allclose(_np(layer(x.astype("float32"))), h * t + x * (1 - t),
                               rtol=1e-5, atol=1e-6)
    assert y.shape == (3, 2, 6)


def test_highway_conv_contract_and_matches_numpy():
    check_layer(lambda: HighwayConv2D(kernel_size=3), [(2, 6, 6, 4)])
    for kernel_size, dilation in [(3, 1), ((3, 1), 2)]:
        layer = HighwayConv2D(kernel_size=kernel_size, activation="relu", dilation_rate=dilation)
        x = random_inputs([(2, 7, 6, 3)], seed=5)[0].astype("float64")
        layer.build(x.shape)
        _randomize(layer, 2)
        k_h, b_h, k_t, b_t = (_np(v) for v in (layer.kernel, layer.bias, layer.gate_kernel,
                                               layer.gate_bias))
        h = _relu(_conv(x, k_h, dilation=dilation) + b_h)
        t = _sigmoid(_conv(x, k_t, dilation=dilation) + b_t)
        np.testing.assert_allclose(_np(layer(x.astype("float32"))), h * t + x * (1 - t),
                                   rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- StochasticDepth
def test_stochastic_depth_contract_and_inference_matches_numpy():
    shapes = [(2, 4, 4, 3), (2, 4, 4, 3)]
    out = check_layer(lambda: StochasticDepth(0.7, seed=1), shapes)[0]
    shortcut, residual = (x.astype("float64") for x in random_inputs(shapes))
    np.testing.assert_allclose(out, shortcut + 0.7 * residual, rtol=1e-6, atol=1e-7)


def test_stochastic_depth_training_keeps_each_example_with_probability_p():
    rng = np.random.default_rng(0)
    n = 4000
    shortcut = rng.normal(size=(n, 2, 3)).astype("float32")
    residual = rng.uniform(1.0, 2.0, size=(n, 2, 3)).astype("float32")
    y = _np(StochasticDepth(0.8, seed=3)([shortcut, residual], training=True))
    kept = np.all(np.isclose(y, shortcut + residual, atol=1e-6), axis=(1, 2))
    dropped = np.all(np.isclose(y, shortcut, atol=1e-6), axis=(1, 2))
    assert np.all(kept ^ dropped), "each example is either shortcut or shortcut + residual"
    assert abs(kept.mean() - 0.8) < 0.03                  # std of the frequency: 0.0063
    full = _np(StochasticDepth(1.0)([shortcut, residual], training=True))
    np.testing.assert_allclose(full, shortcut + residual, rtol=1e-6)


def test_stochastic_depth_bad_arguments():
    with pytest.raises(ValueError, match="survival_probability"):
        StochasticDepth(0.0)
    with pytest.raises(ValueError, match="survival_probability"):
        StochasticDepth(1.5)
    with pytest.raises(ValueError, match="shapes differ"):
        StochasticDepth(0.5)([np.zeros((2, 3), "float32"), np.zeros((2, 4), "float32")])


@pytest.mark.tf_only
def test_stochastic_depth_trains_with_dynamic_batch_in_tf_function():
    import tensorflow as tf

    layer = StochasticDepth(0.5, seed=1)
    spec = tf.TensorSpec([None, None, 3], tf.float32)
    fn = tf.function(lambda a, b: layer([a, b], training=True), input_signature=[spec, spec])
    for n in (2, 5):
        assert fn(tf.zeros((n, 4, 3)), tf.ones((n, 4, 3))).shape == (n, 4, 3)


# ----------------------------------------------------------------------------- ResidualBlock
@pytest.mark.parametrize("kwargs,shape,out_shape", [
    ({"filters": 4}, (2, 6, 6, 4), (2, 6, 6, 4)),
    ({"filters": 4, "bottleneck": True, "strides": 2, "groups": 2}, (2, 7, 7, 4), (2, 4, 4, 16)),
    ({"filters": 6, "preactivation": True, "strides": 2, "dropout_rate": 0.2,
      "survival_probability": 0.8, "seed": 1}, (2, 6, 6, 4), (2, 3, 3, 6)),
])
def test_residual_block_contract_and_shapes(kwargs, shape, out_shape):
    # bn_momentum=1 freezes the BN moving statistics: the harness's gradient check runs in
    # training mode, which would otherwise update them before its jit comparison.
    out = check_layer(lambda: ResidualBlock(**kwargs, bn_momentum=1.0), [shape], tol=1e-4)[0]
    assert out.shape == out_shape


# Parameter counts, BN = 4 numbers per channel (gamma, beta, moving mean, moving variance):
PARAM_CASES = [
    # basic, identity (C = F = 8): two 3x3 convs 9·8·8 each + two BN(8).
    ({"filters": 8}, 8, 2 * 9 * 8 * 8 + 2 * 4 * 8),
    # basic, projection (C = 4 -> F = 8, stride 2): 9·4·8 + 9·8·8 + 2·BN(8) + 1x1 4·8 + BN(8).
    ({"filters": 8, "strides": 2}, 4, 9 * 4 * 8 + 9 * 8 * 8 + 2 * 4 * 8 + 4 * 8 + 4 * 8),
    # bottleneck, identity (C = 16, F = 4, out 16): 1x1 16·4, 3x3 9·4·4, 1x1 4·16, BN 4,4,16.
    ({"filters": 4, "bottleneck": True}, 16, 16 * 4 + 9 * 4 * 4 + 4 * 16 + 4 * (4 + 4 + 16)),
    # ResNeXt bottleneck (C = 8, F = 8, groups 2, expansion 2 -> 16, projection):
    # 1x1 8·8, grouped 3x3 9·8·8/2, 1x1 8·16, BN 8,8,16, projection 8·16 + BN(16).
    ({"filters": 8, "bottleneck": True, "groups": 2, "expansion": 2}, 8,
     8 * 8 + 9 * 8 * 8 // 2 + 8 * 16 + 4 * (8 + 8 + 16) + 8 * 16 + 4 * 16),
    # pre-activation basic, identity (C = F = 8): BN(8), 3x3, BN(8), 3x3.
    ({"filters": 8, "preactivation": True}, 8, 4 * 8 + 9 * 8 * 8 + 4 * 8 + 9 * 8 * 8),
    # pre-activation bottleneck (C = 8, F = 4, out 16, projection without BN):
    # BN(8), 1x1 8·4, BN(4), 3x3 9·4·4, BN(4), 1x1 4·16, projection 8·16.
    ({"filters": 4, "bottleneck": True, "preactivation": True}, 8,
     4 * 8 + 8 * 4 + 4 * 4 + 9 * 4 * 4 + 4 * 4 + 4 * 16 + 8 * 16),
]


@pytest.mark.parametrize("kwargs,channels,expected", PARAM_CASES)
def test_residual_block_parameter_count(kwargs, channels, expected):
    block = ResidualBlock(**kwargs)
    block.build((None, 8, 8, channels))
    assert block.count_params() == expected


@pytest.mark.parametrize("preactivation", [False, True])
def test_residual_block_zero_kernels_give_identity(preactivation):
    block = ResidualBlock(6, preactivation=preactivation)
    x = random_inputs([(2, 5, 5, 6)], seed=3)[0].astype("float64")
    block.build(x.shape)
    for conv in block.convs:
        conv.kernel.assign(np.zeros(conv.kernel.shape, "float32"))
    y = _np(block(x.astype("float32")))
    expected = x if preactivation else _relu(x)
    np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("preactivation", [False, True])
def test_residual_block_zero_residual_leaves_projection(preactivation):
    block = ResidualBlock(6, strides=2, preactivation=preactivation)
    x = random_inputs([(2, 5, 5, 4)], seed=4)[0].astype("float64")
    block.build(x.shape)
    for conv in block.convs:
        conv.kernel.assign(np.zeros(conv.kernel.shape, "float32"))
    w_proj = _np(block.shortcut_conv.kernel)[0, 0]            # (4, 6)
    scale = 1.0 / np.sqrt(1.0 + EPS)                          # BN with default statistics
    if preactivation:
        expected = (_relu(x * scale))[:, ::2, ::2] @ w_proj
    else:
        expected = _relu(x[:, ::2, ::2] @ w_proj * scale)
    np.testing.assert_allclose(_np(block(x.astype("float32"))), expected, rtol=1e-5, atol=1e-6)


def test_residual_block_post_activation_basic_matches_numpy():
    block = ResidualBlock(5, strides=2)
    x = random_inputs([(2, 7, 6, 3)], seed=6)[0].astype("float64")
    block.build(x.shape)
    w = _randomize(block, 7)
    y = _relu(_bn(_conv(x, w["conv1/kernel"], stride=2), *_bn_of(w, "bn1")))
    y = _bn(_conv(y, w["conv2/kernel"]), *_bn_of(w, "bn2"))
    shortcut = _bn(_conv(x, w["shortcut_conv/kernel"], stride=2), *_bn_of(w, "shortcut_bn"))
    np.testing.assert_allclose(_np(block(x.astype("float32"))), _relu(y + shortcut),
                               rtol=1e-4, atol=1e-5)


def test_residual_block_preactivation_bottleneck_grouped_matches_numpy():
    block = ResidualBlock(4, bottleneck=True, preactivation=True, strides=2, groups=2,
                          expansion=2)
    x = random_inputs([(2, 6, 5, 6)], seed=8)[0].astype("float64")
    block.build(x.shape)
    w = _randomize(block, 9)
    pre = _relu(_bn(x, *_bn_of(w, "bn1")))
    y = _conv(pre, w["conv1/kernel"])
    y = _conv(_relu(_bn(y, *_bn_of(w, "bn2"))), w["conv2/kernel"], stride=2, groups=2)
    y = _conv(_relu(_bn(y, *_bn_of(w, "bn3"))), w["conv3/kernel"])
    shortcut = _conv(pre, w["shortcut_conv/kernel"], stride=2)
    np.testing.assert_allclose(_np(block(x.astype("float32"))), y + shortcut,
                               rtol=1e-4, atol=1e-5)


def test_residual_block_stochastic_depth_drops_whole_branch_per_example():
    x = random_inputs([(64, 4, 4, 4)], seed=10)[0]
    sd_block = ResidualBlock(4, preactivation=True, survival_probability=0.5, seed=2)
    full_block = ResidualBlock(4, preactivation=True)
    sd_block.build(x.shape)
    full_block.build(x.shape)
    _randomize(sd_block, 11)
    full_block.set_weights(sd_block.get_weights())
    y_full = _np(full_block(x, training=True))
    y = _np(sd_block(x, training=True))
    kept = np.all(np.isclose(y, y_full, atol=1e-5), axis=(1, 2, 3))
    dropped = np.all(np.isclose(y, x, atol=1e-6), axis=(1, 2, 3))
    assert np.all(kept ^ dropped)
    assert 0.25 < kept.mean() < 0.75                       # 64 examples at p = 0.5
    inference = _np(sd_block(x))
    branch = _np(full_block(x)) - x
    np.testing.assert_allclose(inference, x + 0.5 * branch, rtol=1e-5, atol=1e-5)


def test_residual_block_sub_layer_names_and_bad_arguments():
    block = ResidualBlock(4, bottleneck=True, name="res2a")
    block.build((None, 8, 8, 8))
    paths = {v.path for v in block.weights}
    assert {"res2a/conv1/kernel", "res2a/bn3/gamma", "res2a/shortcut_conv/kernel",
            "res2a/shortcut_bn/moving_variance"} <= paths
    with pytest.raises(ValueError, match="divisible by groups"):
        ResidualBlock(6, groups=4)
    with pytest.raises(ValueError, match="groups=2"):
        ResidualBlock(4, groups=2).build((None, 8, 8, 3))
    with pytest.raises(ValueError, match="shape-preserving"):
        ResidualBlock(4, activation="maxout")
    with pytest.raises(ValueError, match="strides"):
        ResidualBlock(4, strides=0)
    with pytest.raises(ValueError, match="H, W, C"):
        ResidualBlock(4).build((None, 8, 3))


def test_blocks_accept_dynamic_spatial_size():
    inputs = keras.Input((None, None, 4))
    blocks = [ResidualBlock(4, strides=2), ResidualBlock(2, bottleneck=True, preactivation=True),
              DenseBlock(2, 3), HighwayConv2D(3)]
    model = keras.Model(inputs, [block(inputs) for block in blocks])
    for h, w in [(5, 6), (8, 3)]:
        outs = model(random_inputs([(2, h, w, 4)])[0])
        assert [tuple(o.shape) for o in outs] == [
            (2, -(-h // 2), -(-w // 2), 4), (2, h, w, 8), (2, h, w, 10), (2, h, w, 4)]


# ----------------------------------------------------------------------------- DenseBlock
def test_dense_block_contract_channels_and_pass_through():
    out = check_layer(lambda: DenseBlock(2, 3, bn_momentum=1.0), [(2, 5, 5, 4)], tol=1e-4)[0]
    assert out.shape == (2, 5, 5, 4 + 2 * 3)
    x = random_inputs([(2, 5, 5, 4)])[0]
    np.testing.assert_allclose(out[..., :4], x, rtol=1e-6)
    block = DenseBlock(3, 5, bottleneck=False, dropout_rate=0.2, seed=1)
    y = _np(block(x, training=True))
    assert y.shape == (2, 5, 5, 4 + 3 * 5)
    np.testing.assert_array_equal(y[..., :4], x)
    assert block.compute_output_shape((None, 5, 5, 4)) == (None, 5, 5, 19)


def test_dense_block_matches_numpy():
    block = DenseBlock(2, 3, bottleneck=True, bottleneck_width=2)
    x = random_inputs([(2, 5, 4, 4)], seed=12)[0].astype("float64")
    block.build(x.shape)
    w = _randomize(block, 13)
    features = x
    for i in (1, 2):
        h = _conv(_relu(_bn(features, *_bn_of(w, f"layer{i}/bn1"))), w[f"layer{i}/conv1/kernel"])
        h = _conv(_relu(_bn(h, *_bn_of(w, f"layer{i}/bn2"))), w[f"layer{i}/conv2/kernel"])
        features = np.concatenate([features, h], axis=-1)
    np.testing.assert_allclose(_np(block(x.astype("float32"))), features, rtol=1e-4, atol=1e-5)


def test_dense_block_parameter_count():
    block = DenseBlock(2, 3)              # bottleneck width 4·k = 12
    block.build((None, 8, 8, 4))
    # layer1 (input 4): BN(4) + 1x1 4·12 + BN(12) + 3x3 9·12·3
    # layer2 (input 7): BN(7) + 1x1 7·12 + BN(12) + 3x3 9·12·3
    expected = (4 * 4 + 4 * 12 + 4 * 12 + 9 * 12 * 3) + (4 * 7 + 7 * 12 + 4 * 12 + 9 * 12 * 3)
    assert block.count_params() == expected


def test_dense_block_bad_arguments():
    with pytest.raises(ValueError, match="num_layers"):
        DenseBlock(0, 4)
    with pytest.raises(ValueError, match="growth_rate"):
        DenseBlock(2, 0)
    with pytest.raises(ValueError, match="dropout_rate"):
        DenseBlock(2, 4, dropout_rate=1.0)
