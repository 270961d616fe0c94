"""Binary / XNOR / DoReFa layers and LookupConv2D (S0 §4, F-10..F-14, F-26) vs numpy formulas."""

import keras
import numpy as np
import pytest

from cnn_apps.layers import BinaryConv2D, BinaryDense, LookupConv2D, sign_ste
from tests.layers.harness import check_layer, random_inputs


def _np(t):
    return keras.ops.convert_to_numpy(t).astype("float64")


def _sign(x):
    return np.where(x >= 0, 1.0, -1.0)


def _quantize(x, bits):
    levels = 2 ** bits - 1
    return np.round(x * levels) / levels


def _reference_kernel(w, mode, bits):
    """The paper formulas in numpy; ``w`` has the output filters on the last axis."""
    if mode == "bnn":
        return _sign(w)
    if mode == "xnor":
        alpha = np.abs(w).reshape(-1, w.shape[-1]).mean(axis=0)
        return alpha * _sign(w)
    if bits == 1:
        return np.abs(w).mean() * _sign(w)
    t = np.tanh(w)
    return 2.0 * _quantize(t / (2.0 * np.abs(t).max()) + 0.5, bits) - 1.0


def _reference_inputs(x, mode, activation_bits):
    if mode == "dorefa":
        return _quantize(np.clip(x, 0.0, 1.0), activation_bits)
    return _sign(x)


def _correlate(x, k, padding):
    """Direct loop of a stride-1 Conv2D (cross-correlation), channels last."""
    kh, kw = k.shape[:2]
    if padding == "same":
        x = np.pad(x, [(0, 0), ((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2), (0, 0)])
    h, w = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    y = np.zeros((x.shape[0], h, w, k.shape[-1]))
    for i in range(h):
        for j in range(w):
            patch = x[:, i:i + kh, j:j + kw, :]
            y[:, i, j, :] = np.tensordot(patch, k, axes=([1, 2, 3], [0, 1, 2]))
    return y


def _uniform_init(scale, seed):
    return keras.initializers.RandomUniform(-scale, scale, seed=seed)


# ------------------------------------------------------------------------------- contract
def test_binary_dense_contract():
    check_layer(lambda: BinaryDense(4, mode="xnor"), [(2, 6)])


def test_binary_conv2d_contract():
    check_layer(lambda: BinaryConv2D(3, 3, mode="bnn", padding="same"), [(2, 6, 6, 2)])


def test_binary_conv2d_dorefa_contract():
    check_layer(lambda: BinaryConv2D(3, 3, mode="dorefa", bits=2), [(2, 6, 6, 2)],
                input_low=0.0, input_high=1.0)


def test_lookup_conv2d_contract():
    check_layer(lambda: LookupConv2D(4, 3, dictionary_size=5, sparsity=2, padding="same"),
                [(2, 6, 6, 3)])


# ---------------------------------------------------------------------------- forward pass
@pytest.mark.parametrize("mode,bits,activation_bits", [("bnn", 1, None), ("xnor", 1, None),
                                                       ("dorefa", 1, 1), ("dorefa", 2, 3),
                                                       ("dorefa", 4, None)])
def test_binary_dense_forward_equals_formula(mode, bits, activation_bits):
    layer = BinaryDense(5, mode=mode, bits=bits, activation_bits=activation_bits,
                        kernel_initializer=_uniform_init(1.5, 1),
                        bias_initializer=_uniform_init(1.0, 2))
    x = random_inputs([(3, 7)], seed=3, low=-1.5, high=1.5)[0]
    y = _np(layer(x))
    w, b = (_np(v) for v in (layer.kernel, layer.bias))
    expected = (_reference_inputs(x.astype("float64"), mode, activation_bits or bits)
                @ _reference_kernel(w, mode, bits) + b)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(_np(layer.quantized_kernel()), _reference_kernel(w, mode, bits),
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("mode,bits,padding", [("xnor", 1, "same"), ("bnn", 1, "valid"),
                                               ("dorefa", 3, "valid")])
def test_binary_conv2d_forward_equals_formula(mode, bits, padding):
    layer = BinaryConv2D(4, 3, mode=mode, bits=bits, padding=padding,
                         kernel_initializer=_uniform_init(1.0, 4))
    x = random_inputs([(2, 6, 5, 3)], seed=5, low=-1.0, high=1.0)[0]
    y = _np(layer(x))
    w = _np(layer.kernel)
    expected = _correlate(_reference_inputs(x.astype("float64"), mode, bits),
                          _reference_kernel(w, mode, bits), padding)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def test_xnor_scale_is_per_output_filter():
    layer = BinaryConv2D(3, 2, mode="xnor")
    layer.build((None, 4, 4, 2))
    w = np.random.default_rng(6).normal(size=(2, 2, 2, 3)).astype("float32")
    layer.kernel.assign(w)
    wb = _np(layer.quantized_kernel())
    for o in range(3):
        np.testing.assert_allclose(np.abs(wb[..., o]), np.abs(w[..., o]).mean(), rtol=1e-6)


def test_sign_of_zero_is_plus_one():
    x = np.array([[0.0, -0.0, 1e-8, -1e-8]], "float32")
    np.testing.assert_array_equal(_np(sign_ste(x)), [[1.0, 1.0, 1.0, -1.0]])
    layer = BinaryDense(1, mode="bnn", use_bias=False, kernel_initializer="ones")
    assert _np(layer(np.zeros((1, 3), "float32")))[0, 0] == 3.0


# ------------------------------------------------------------------------ STE gradients
def _gradients(layer, x, upstream):
    """(dL/dx, dL/dkernel) for L = Σ upstream ∘ layer(x), with the backend's autodiff."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        xt = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            loss = tf.reduce_sum(layer(xt) * upstream)
        gx, gw = tape.gradient(loss, [xt, layer.kernel.value])
        return gx.numpy().astype("float64"), gw.numpy().astype("float64")
    import jax

    trainable = [v.value for v in layer.trainable_variables]
    kernel_pos = [v is layer.kernel for v in layer.trainable_variables].index(True)

    def loss(xv, tv):
        y, _ = layer.stateless_call(tv, [v.value for v in layer.non_trainable_variables], xv)
        return (y * upstream).sum()

    gx, gw = jax.grad(loss, argnums=(0, 1))(x, trainable)
    return np.asarray(gx).astype("float64"), np.asarray(gw[kernel_pos]).astype("float64")


def test_bnn_straight_through_gradients():
    """∂L/∂x = (g·W_bᵀ)·1_{|x|≤1} and ∂L/∂W = (x_bᵀ·g)·1_{|W|≤1}."""
    layer = BinaryDense(4, mode="bnn", kernel_initializer=_uniform_init(2.0, 7))
    x = random_inputs([(3, 6)], seed=8, low=-2.0, high=2.0)[0]
    g = random_inputs([(3, 4)], seed=9)[0]
    layer.build(x.shape)
    w = _np(layer.kernel)
    gx, gw = _gradients(layer, x, g)
    assert (np.abs(x) > 1).any() and (np.abs(w) > 1).any()
    np.testing.assert_allclose(gx, (g @ _sign(w).T) * (np.abs(x) <= 1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gw, (_sign(x).T @ g) * (np.abs(w) <= 1), rtol=1e-5, atol=1e-6)


def test_dorefa_input_gradient_is_clipped_identity():
    layer = BinaryDense(4, mode="dorefa", bits=2, kernel_initializer=_uniform_init(1.0, 10))
    x = random_inputs([(3, 6)], seed=11, low=-0.5, high=1.5)[0]
    g = random_inputs([(3, 4)], seed=12)[0]
    layer.build(x.shape)
    wb = _reference_kernel(_np(layer.kernel), "dorefa", 2)
    gx, _ = _gradients(layer, x, g)
    np.testing.assert_allclose(gx, (g @ wb.T) * ((x >= 0) & (x <= 1)), rtol=1e-5, atol=1e-6)


def test_xnor_kernel_gradient_matches_paper():
    """XNOR-Net: ∂L/∂W_ij = ∂L/∂W̃_ij·(1/n + α_j·1_{|W_ij|≤1}) (sign(W)² = 1), plus the
    cross terms of α through the other entries of the filter: Σ_i' ∂L/∂W̃_i'j·sign(W_i'j)
    ·sign(W_ij)/n."""
    layer = BinaryDense(3, mode="xnor", quantize_inputs=False,
                        kernel_initializer=_uniform_init(1.5, 13))
    x = random_inputs([(2, 5)], seed=14)[0].astype("float64")
    g = random_inputs([(2, 3)], seed=15)[0]
    layer.build(x.shape)
    w = _np(layer.kernel)
    n = w.shape[0]
    alpha = np.abs(w).mean(axis=0)
    g_tilde = x.T @ g                                      # ∂L/∂W̃, W̃ = α·sign(W)
    through_alpha = (g_tilde * _sign(w)).sum(axis=0) * _sign(w) / n
    expected = through_alpha + g_tilde * alpha * (np.abs(w) <= 1)
    _, gw = _gradients(layer, x.astype("float32"), g)
    np.testing.assert_allclose(gw, expected, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------- LCNN
def test_lookup_conv2d_equals_conv2d_with_decoded_kernel():
    layer = LookupConv2D(4, (3, 2), dictionary_size=6, sparsity=3, seed=2,
                         bias_initializer=_uniform_init(1.0, 16))
    x = random_inputs([(2, 7, 6, 3)], seed=17)[0]
    y = _np(layer(x))
    dictionary, coefficients, bias = (_np(v) for v in (layer.dictionary, layer.coefficients,
                                                       layer.bias))
    indices = keras.ops.convert_to_numpy(layer.indices)
    assert indices.min() >= 0 and indices.max() < 6
    kernel = np.zeros((3, 2, 3, 4))
    for u in range(3):
        for v in range(2):
            for o in range(4):
                for t in range(3):
                    kernel[u, v, :, o] += coefficients[u, v, t, o] * dictionary[indices[u, v, t, o]]
    conv = keras.layers.Conv2D(4, (3, 2))
    conv.build(x.shape)
    conv.set_weights([kernel.astype("float32"), bias.astype("float32")])
    np.testing.assert_allclose(y, _np(conv(x)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(_np(layer.decoded_kernel()), kernel, rtol=1e-5, atol=1e-6)
    assert layer.count_params() == 6 * 3 + 3 * 2 * 3 * 4 * 2 + 4   # + int indices


# ------------------------------------------------------------------------------ bad input
def test_quantized_layers_reject_bad_arguments():
    with pytest.raises(ValueError, match="mode"):
        BinaryDense(4, mode="ternary")
    with pytest.raises(ValueError, match="bits"):
        BinaryDense(4, mode="xnor", bits=2)
    with pytest.raises(ValueError, match="activation_bits"):
        BinaryConv2D(4, 3, mode="bnn", activation_bits=4)
    with pytest.raises(ValueError, match="padding"):
        BinaryConv2D(4, 3, padding="full")
    with pytest.raises(ValueError, match="dictionary_size"):
        LookupConv2D(4, 3, dictionary_size=0)
    with pytest.raises(ValueError, match="sparsity"):
        LookupConv2D(4, 3, dictionary_size=3, sparsity=-1)
