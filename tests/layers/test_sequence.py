"""Causal, gated and WaveNet 1-D convolutions vs numpy loops and Keras Conv1D (V-03, V-04, V-13)."""

import keras
import numpy as np
import pytest

from cnn_apps.layers import CausalConv1D, GatedConv1D, WaveNetResidualBlock, receptive_field
from tests.layers.harness import check_layer

RNG = np.random.default_rng(11)


def _rand(*shape):
    return RNG.uniform(-1, 1, size=shape).astype("float32")


def _np(y):
    return keras.ops.convert_to_numpy(y).astype("float64")


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _np_conv1d(x, kernel, dilation=1, padding="causal", stride=1):
    """y[n, t] = sum_tau x[n, t*s + tau*d - left] @ kernel[tau], zero outside."""
    n, length, _ = x.shape
    k = kernel.shape[0]
    k_eff = (k - 1) * dilation + 1
    if padding == "causal":
        out, left = -(-length // stride), k_eff - 1
    elif padding == "same":
        out = -(-length // stride)
        left = max((out - 1) * stride + k_eff - length, 0) // 2
    else:
        out, left = (length - k_eff) // stride + 1, 0
    y = np.zeros((n, out, kernel.shape[-1]))
    for t in range(out):
        for tau in range(k):
            src = t * stride + tau * dilation - left
            if 0 <= src < length:
                y[:, t] += x[:, src] @ kernel[tau]
    return y


# ----------------------------------------------------------------------------- CausalConv1D
def test_causal_conv_contract():
    check_layer(lambda: CausalConv1D(4, 3, dilation_rate=2), [(2, 12, 3)])


@pytest.mark.parametrize("kernel_size,dilation,strides", [(2, 1, 1), (3, 4, 1), (3, 1, 2)])
def test_causal_conv_equals_keras_conv1d_causal(kernel_size, dilation, strides):
    x = _rand(2, 13, 3)
    layer = CausalConv1D(5, kernel_size, dilation_rate=dilation, strides=strides,
                         activation="relu")
    ref = keras.layers.Conv1D(5, kernel_size, dilation_rate=dilation, strides=strides,
                              padding="causal", activation="relu")
    layer.build(x.shape)
    ref.build(x.shape)
    weights = [_rand(kernel_size, 3, 5), _rand(5)]
    layer.set_weights(weights)
    ref.set_weights(weights)
    y = _np(layer(x))
    assert y.shape == tuple(layer.compute_output_shape(x.shape))
    np.testing.assert_allclose(y, _np(ref(x)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(y, np.maximum(_np_conv1d(x, weights[0], dilation, "causal",
                                                        strides) + weights[1], 0),
                               rtol=1e-5, atol=1e-5)


def test_causal_stack_never_sees_the_future():
    # WaveNet-style stack, kernel 2, dilations 1, 2, 4: field 8 (receptive_field), and a change
    # at input t0 moves outputs t0 .. t0+7 only; outputs before t0 are bit-identical.
    model = keras.Sequential([keras.Input((24, 2))] + [
        CausalConv1D(3, 2, dilation_rate=d, activation="tanh") for d in (1, 2, 4)])
    assert receptive_field(model).size == (8,)
    x = _rand(1, 24, 2)
    t0 = 10
    x2 = x.copy()
    x2[:, t0] += 1.0
    diff = np.abs(_np(model(x2)) - _np(model(x))).max(axis=(0, 2))
    assert np.all(diff[:t0] == 0)
    assert diff[t0] > 0
    assert np.all(diff[t0 + 8:] == 0)


# ----------------------------------------------------------------------------- GatedConv1D
def test_gated_conv_contract():
    check_layer(lambda: GatedConv1D(4, 3), [(2, 10, 3)])


@pytest.mark.parametrize("padding,dilation", [("causal", 1), ("causal", 3), ("same", 2),
                                              ("valid", 1)])
def test_gated_conv_matches_numpy_glu(padding, dilation):
    x = _rand(2, 11, 3)
    filters, k = 4, 3
    layer = GatedConv1D(filters, k, dilation_rate=dilation, padding=padding)
    layer.build(x.shape)
    w, v, b, c = _rand(k, 3, filters), _rand(k, 3, filters), _rand(filters), _rand(filters)
    layer.set_weights([np.concatenate([w, v], -1), np.concatenate([b, c])])
    xd = x.astype("float64")
    ref = (_np_conv1d(xd, w, dilation, padding) + b) * _sigmoid(
        _np_conv1d(xd, v, dilation, padding) + c)
    y = _np(layer(x))
    assert y.shape == tuple(layer.compute_output_shape(x.shape))
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


def test_gated_conv_causal_output_ignores_future_inputs():
    layer = GatedConv1D(2, 4, dilation_rate=2)
    x = _rand(1, 16, 2)
    x2 = x.copy()
    x2[:, 9:] = _rand(1, 7, 2)
    np.testing.assert_array_equal(_np(layer(x))[:, :9], _np(layer(x2))[:, :9])


# ----------------------------------------------------------------------------- WaveNet block
def test_wavenet_block_contract_with_local_conditioning():
    check_layer(lambda: WaveNetResidualBlock(4, dilation_rate=2, skip_filters=5),
                [(2, 12, 3), (2, 12, 2)])


def _wavenet_reference(x, weights, dilation, cond=None):
    kernel, bias, res_k, res_b, skip_k, skip_b = weights[:6]
    f = res_k.shape[0]
    pre = _np_conv1d(x, kernel, dilation, "causal") + bias
    if cond is not None:
        proj = cond @ weights[6]
        pre = pre + (proj[:, None, :] if cond.ndim == 2 else proj)
    z = np.tanh(pre[..., :f]) * _sigmoid(pre[..., f:])
    return x + z @ res_k + res_b, z @ skip_k + skip_b


@pytest.mark.parametrize("cond_shape", [None, (2, 14, 3), (2, 3)])
def test_wavenet_block_matches_numpy(cond_shape):
    x = _rand(2, 14, 4)
    filters, skip = 5, 6
    layer = WaveNetResidualBlock(filters, dilation_rate=3, skip_filters=skip)
    weights = [_rand(2, 4, 2 * filters), _rand(2 * filters), _rand(filters, 4), _rand(4),
               _rand(filters, skip), _rand(skip)]
    cond = None
    if cond_shape is None:
        layer.build(x.shape)
        inputs = x
    else:
        cond = _rand(*cond_shape)
        layer.build([x.shape, cond.shape])
        weights.append(_rand(3, 2 * filters))
        inputs = [x, cond]
    layer.set_weights(weights)
    res, sk = layer(inputs)
    ref_res, ref_skip = _wavenet_reference(x.astype("float64"), weights, 3,
                                           None if cond is None else cond.astype("float64"))
    np.testing.assert_allclose(_np(res), ref_res, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(_np(sk), ref_skip, rtol=1e-5, atol=1e-5)
    assert tuple(sk.shape) == layer.compute_output_shape(x.shape)[1] == (2, 14, skip)


@pytest.mark.tf_only
def test_dynamic_length_in_graph_mode():
    import tensorflow as tf

    for layer in (CausalConv1D(3, 3, dilation_rate=2), GatedConv1D(3, 2, padding="same"),
                  WaveNetResidualBlock(3, dilation_rate=2)):
        layer.build((None, None, 2))
        fn = tf.function(layer, input_signature=[tf.TensorSpec((None, None, 2), "float32")])
        for length in (5, 9):
            x = _rand(2, length, 2)
            for got, want in zip(tf.nest.flatten(fn(x)), tf.nest.flatten(layer(x))):
                np.testing.assert_allclose(_np(got), _np(want), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("make,match", [
    (lambda: CausalConv1D(4, 0), "kernel_size"),
    (lambda: CausalConv1D(4, 3, dilation_rate=2, strides=2), "dilation_rate"),
    (lambda: GatedConv1D(4, 3, padding="full"), "padding"),
    (lambda: GatedConv1D(0, 3), "filters"),
    (lambda: WaveNetResidualBlock(4, dilation_rate=0), "dilation_rate"),
    (lambda: WaveNetResidualBlock(4, skip_filters=-1), "skip_filters"),
    (lambda: WaveNetResidualBlock(4, activation="relu"), "activation"),
])
def test_bad_arguments_raise_value_error(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_wavenet_block_rejects_three_inputs():
    layer = WaveNetResidualBlock(2)
    with pytest.raises(ValueError, match="conditioning"):
        layer([_rand(1, 4, 2)] * 3)
