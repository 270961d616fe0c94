"""Structured dense layers (S0 §4, F-03/06/07/08/09/23) against explicit numpy/scipy matrices."""

import itertools

import keras
import numpy as np
import pytest
import scipy.fft
import scipy.linalg

from cnn_apps.layers import (ACDCDense, CirculantDense, FastfoodDense, HashedDense,
                             LowRankDense, TTDense)
from tests.layers.harness import check_layer, random_inputs


def _np(t):
    return keras.ops.convert_to_numpy(t).astype("float64")


def _randomize(layer, seed):
    """Random values in every trainable weight (fixed signs / permutations stay)."""
    rng = np.random.default_rng(seed)
    for w in layer.trainable_weights:
        w.assign(rng.normal(size=w.shape).astype("float32"))


def _built(layer, n, seed=0):
    layer.build((None, n))
    _randomize(layer, seed)
    return layer


# -------------------------------------------------------------------------------- low rank
def test_low_rank_dense_contract_and_matches_product():
    make = lambda: LowRankDense(5, rank=2, activation="tanh")  # noqa: E731
    check_layer(make, [(2, 7)])
    layer = _built(LowRankDense(5, rank=2, activation="tanh"), 7, seed=1)
    a, b, bias = (w.astype("float64") for w in layer.get_weights())
    x = random_inputs([(3, 4, 7)])[0]
    np.testing.assert_allclose(_np(layer(x)), np.tanh(x @ (a @ b) + bias), rtol=1e-5,
                               atol=1e-5)
    assert layer.count_params() == 7 * 2 + 2 * 5 + 5


# ---------------------------------------------------------------------------- tensor train
def _tt_matrix(cores, in_modes, out_modes):
    """W[i, j] by the TT definition, one entry at a time."""
    n, m = int(np.prod(in_modes)), int(np.prod(out_modes))
    w = np.zeros((n, m))
    for i_idx in itertools.product(*[range(k) for k in in_modes]):
        for j_idx in itertools.product(*[range(k) for k in out_modes]):
            chain = np.ones((1, 1))
            for core, i, j in zip(cores, i_idx, j_idx):
                chain = chain @ core[:, i, j, :]
            i_flat = np.ravel_multi_index(i_idx, in_modes)
            j_flat = np.ravel_multi_index(j_idx, out_modes)
            w[i_flat, j_flat] = chain[0, 0]
    return w


def test_tt_dense_contract():
    check_layer(lambda: TTDense((2, 3, 2), (2, 2, 3), tt_ranks=(2, 3)), [(2, 12)])


@pytest.mark.parametrize("in_modes,out_modes,ranks", [((2, 3, 2), (2, 2, 3), (2, 3)),
                                                      ((4, 3), (3, 5), 2), ((6,), (4,), 3)])
def test_tt_dense_equals_explicit_matrix(in_modes, out_modes, ranks):
    n = int(np.prod(in_modes))
    layer = _built(TTDense(in_modes, out_modes, tt_ranks=ranks), n, seed=2)
    weights = [w.astype("float64") for w in layer.get_weights()]
    w = _tt_matrix(weights[:-1], in_modes, out_modes)
    x = random_inputs([(2, 3, n)], seed=3)[0]
    np.testing.assert_allclose(_np(layer(x)), x @ w + weights[-1], rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------ circulant
def test_circulant_dense_contract():
    check_layer(lambda: CirculantDense(seed=1, activation="relu"), [(2, 8)])


@pytest.mark.parametrize("n,units", [(8, None), (7, 5)])
def test_circulant_dense_equals_explicit_matrix(n, units):
    layer = _built(CirculantDense(units, seed=4), n, seed=5)
    v, signs, bias = (_np(w) for w in (layer.kernel, layer.signs, layer.bias))
    assert set(np.unique(signs)) <= {-1.0, 1.0}
    matrix = scipy.linalg.circulant(v) @ np.diag(signs)   # C(v)·D
    x = random_inputs([(3, n)], seed=6)[0]
    expected = (x @ matrix.T)[:, :units or n] + bias
    np.testing.assert_allclose(_np(layer(x)), expected, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------- fastfood
def test_fastfood_dense_contract():
    check_layer(lambda: FastfoodDense(seed=2), [(2, 8)])


@pytest.mark.parametrize("n,units", [(8, None), (6, 7)])
def test_fastfood_dense_equals_explicit_matrix(n, units):
    layer = _built(FastfoodDense(units, seed=7), n, seed=8)
    d1, d2, d3, bias = (_np(w) for w in (layer.d1, layer.d2, layer.d3, layer.bias))
    perm = keras.ops.convert_to_numpy(layer.permutation)
    size = len(d1)
    assert size == 8 and sorted(perm) == list(range(size))
    h = scipy.linalg.hadamard(size) / np.sqrt(size)
    p = np.zeros((size, size))
    p[np.arange(size), perm] = 1.0                       # (Π z)_i = z[perm[i]]
    matrix = np.diag(d1) @ h @ np.diag(d2) @ p @ h @ np.diag(d3)
    x = random_inputs([(3, n)], seed=9)[0]
    x_pad = np.pad(x, [(0, 0), (0, size - n)])
    expected = (x_pad @ matrix.T)[:, :units or n] + bias
    np.testing.assert_allclose(_np(layer(x)), expected, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------- ACDC
def test_acdc_dense_contract():
    check_layer(lambda: ACDCDense(), [(2, 8)])


@pytest.mark.parametrize("n,units", [(8, None), (5, 3)])
def test_acdc_dense_equals_explicit_matrix(n, units):
    layer = _built(ACDCDense(units), n, seed=10)
    a, d, bias = (_np(w) for w in (layer.diag_a, layer.diag_d, layer.bias))
    c = scipy.fft.dct(np.eye(n), norm="ortho", axis=0)    # C x = dct(x)
    matrix = np.linalg.inv(c) @ np.diag(d) @ c @ np.diag(a)
    x = random_inputs([(3, n)], seed=11)[0]
    expected = (x @ matrix.T)[:, :units or n] + bias
    np.testing.assert_allclose(_np(layer(x)), expected, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------- hashed
_PHI = 0x9E3779B97F4A7C15
_MASK = (1 << 64) - 1


def _splitmix_finalizer(z):
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def _virtual_matrix(w, n, units, seed, use_sign):
    """V_ij = ξ(i,j)·w[h(i,j)] from the documented hash, with Python integers."""
    v = np.zeros((n, units))
    for i in range(n):
        for j in range(units):
            z = _splitmix_finalizer((i * units + j + (2 * seed + 1) * _PHI) & _MASK)
            sign = -1.0 if (z & 1 and use_sign) else 1.0
            v[i, j] = sign * w[(z >> 1) % len(w)]
    return v


def test_hashed_dense_contract():
    check_layer(lambda: HashedDense(5, num_buckets=6, seed=3), [(2, 7)])


@pytest.mark.parametrize("use_sign", [True, False])
def test_hashed_dense_equals_virtual_matrix(use_sign):
    n, units, buckets, seed = 9, 6, 10, 5
    layer = _built(HashedDense(units, buckets, use_sign_hash=use_sign, seed=seed), n, seed=12)
    w, bias = (t.astype("float64") for t in layer.get_weights())
    v = _virtual_matrix(w, n, units, seed, use_sign)
    x = random_inputs([(3, n)], seed=13)[0]
    np.testing.assert_allclose(_np(layer(x)), x @ v + bias, rtol=1e-5, atol=1e-5)
    assert layer.count_params() == buckets + units
    if use_sign:
        assert (v < 0).any() and (v > 0).any()


def test_hashed_dense_gradient_sums_over_bucket():
    """d(Σ y)/dw_k = Σ_{(i,j): h=k} ξ_ij · Σ_batch x_i (the HashedNets gradient)."""
    n, units, buckets = 5, 4, 3
    layer = _built(HashedDense(units, buckets, seed=1, use_bias=False), n, seed=14)
    w = layer.get_weights()[0].astype("float64")
    x = random_inputs([(2, n)], seed=15)[0]
    expected = np.zeros(buckets)
    v_sign = _virtual_matrix(np.ones(buckets), n, units, 1, True)  # ξ_ij
    for k in range(buckets):
        onehot = np.eye(buckets)[k]
        mask = _virtual_matrix(onehot, n, units, 1, True)          # ξ_ij·[h_ij = k]
        expected[k] = (x.sum(0)[:, None] * mask).sum()
    assert np.abs(v_sign).min() == 1.0
    grad = _weight_gradient(layer, x)
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-5)
    assert w.shape == (buckets,)


def _weight_gradient(layer, x):
    """Gradient of sum(layer(x)) with respect to the layer's first weight."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            y = tf.reduce_sum(layer(x))
        grad = tape.gradient(y, layer.trainable_variables[0].value)
        return tf.convert_to_tensor(grad).numpy().astype("float64")  # IndexedSlices from take
    import jax

    variables = [v.value for v in layer.trainable_variables]

    def loss(first):
        values = [first] + variables[1:]
        y, _ = layer.stateless_call(values, [v.value for v in layer.non_trainable_variables], x)
        return y.sum()

    return np.asarray(jax.grad(loss)(variables[0])).astype("float64")


# ------------------------------------------------------------------------------ bad input
def test_structured_layers_reject_bad_arguments():
    with pytest.raises(ValueError, match="rank"):
        LowRankDense(4, rank=0)
    with pytest.raises(ValueError, match="output_modes"):
        TTDense((2, 3), (2, 3, 4))
    with pytest.raises(ValueError, match="tt_ranks"):
        TTDense((2, 3, 2), (2, 2, 2), tt_ranks=(2,))
    with pytest.raises(ValueError, match="input_modes"):
        TTDense((2, 3), (2, 2)).build((None, 7))
    with pytest.raises(ValueError, match="units"):
        CirculantDense(units=9).build((None, 8))
    with pytest.raises(ValueError, match="units"):
        FastfoodDense(units=17).build((None, 9))
    with pytest.raises(ValueError, match="num_buckets"):
        HashedDense(4, num_buckets=0)
    with pytest.raises(ValueError, match="seed"):
        HashedDense(4, num_buckets=3, seed=-1)
