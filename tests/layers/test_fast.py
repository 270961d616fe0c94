"""FFTConv2D and WinogradConv2D equal keras.layers.Conv2D with the same weights (S0 §4, F-01/02)."""

import keras
import numpy as np
import pytest

from cnn_apps.layers import WINOGRAD_F2X2_3X3, FFTConv2D, WinogradConv2D
from tests.layers.harness import check_layer, random_inputs


def _np(t):
    return keras.ops.convert_to_numpy(t).astype("float64")


def _assert_matches_conv2d(layer, x, filters, kernel_size, padding, seed):
    """Same random weights in ``layer`` and a Conv2D; outputs equal to 1e-4 relative."""
    conv = keras.layers.Conv2D(filters, kernel_size, padding=padding)
    conv.build(x.shape)
    layer.build(x.shape)
    rng = np.random.default_rng(seed)
    weights = [rng.normal(size=w.shape).astype("float32") for w in conv.get_weights()]
    conv.set_weights(weights)
    layer.set_weights(weights)
    expected = _np(conv(x))
    got = _np(layer(x))
    assert got.shape == expected.shape
    scale = np.abs(expected).max()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * scale)


def test_fft_conv2d_contract():
    check_layer(lambda: FFTConv2D(3, 3, padding="same", activation="relu"), [(2, 8, 8, 2)])


def test_winograd_conv2d_contract():
    check_layer(lambda: WinogradConv2D(3, padding="valid"), [(2, 7, 6, 2)])


@pytest.mark.parametrize("kernel_size,padding,size", [(3, "valid", (8, 8)), (5, "same", (9, 7)),
                                                      ((3, 5), "same", (8, 10)),
                                                      (1, "valid", (5, 6)),
                                                      (7, "valid", (12, 9))])
def test_fft_conv2d_equals_conv2d(kernel_size, padding, size):
    x = random_inputs([(2,) + size + (3,)], seed=1)[0]
    _assert_matches_conv2d(FFTConv2D(4, kernel_size, padding=padding), x, 4, kernel_size,
                           padding, seed=2)


@pytest.mark.parametrize("padding,size", [("valid", (8, 8)), ("valid", (7, 9)),
                                          ("same", (5, 6)), ("same", (3, 3))])
def test_winograd_conv2d_equals_conv2d(padding, size):
    x = random_inputs([(2,) + size + (3,)], seed=3)[0]
    _assert_matches_conv2d(WinogradConv2D(4, padding=padding), x, 4, 3, padding, seed=4)


def test_winograd_matrices_give_f23():
    """F(2, 3) in 1-D: Aᵀ[(G g) ∘ (Bᵀ d)] equals the direct 2-output correlation."""
    rng = np.random.default_rng(5)
    d, g = rng.normal(size=4), rng.normal(size=3)
    m = (WINOGRAD_F2X2_3X3["G"] @ g) * (WINOGRAD_F2X2_3X3["BT"] @ d)
    direct = np.array([d[0:3] @ g, d[1:4] @ g])
    np.testing.assert_allclose(WINOGRAD_F2X2_3X3["AT"] @ m, direct, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("layer_cls", [FFTConv2D, WinogradConv2D])
def test_dynamic_spatial_size(layer_cls):
    inputs = keras.Input(shape=(None, None, 2))
    layer = layer_cls(3, 3, padding="same")
    model = keras.Model(inputs, layer(inputs))
    conv = keras.layers.Conv2D(3, 3, padding="same")
    conv.build((None, None, None, 2))
    conv.set_weights(layer.get_weights())
    for size in [(6, 6), (5, 9)]:
        x = random_inputs([(2,) + size + (2,)], seed=6)[0]
        np.testing.assert_allclose(_np(model(x)), _np(conv(x)), rtol=1e-4, atol=1e-5)


def test_fast_conv_rejects_bad_arguments():
    with pytest.raises(ValueError, match="strides"):
        FFTConv2D(4, 3, strides=2)
    with pytest.raises(ValueError, match="dilation_rate"):
        FFTConv2D(4, 3, dilation_rate=2)
    with pytest.raises(ValueError, match="padding"):
        FFTConv2D(4, 3, padding="causal")
    with pytest.raises(ValueError, match="kernel_size"):
        WinogradConv2D(4, 5)
    with pytest.raises(ValueError, match="strides"):
        WinogradConv2D(4, 3, strides=(1, 2))
