"""MulticlassHinge, LSoftmaxDense / large_margin_psi and LSoftmaxLoss against numpy references."""

import math

import keras
import numpy as np
import pytest

from cnn_apps.layers import LSoftmaxDense, large_margin_psi
from cnn_apps.losses import LSoftmaxLoss, MulticlassHinge
from tests.layers.harness import check_layer
from tests.losses.helpers import loss_value_and_grad, per_sample, value


def _hinge_reference(labels, scores, p, margin):
    total = 0.0
    for i, label in enumerate(labels):
        for j in range(scores.shape[1]):
            delta = 1.0 if j == label else -1.0
            total += max(0.0, margin - delta * scores[i, j]) ** p
    return total / len(labels)


@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("margin", [1.0, 0.5])
def test_multiclass_hinge_matches_formula(p, margin):
    rng = np.random.default_rng(p)
    scores = rng.normal(size=(6, 4)).astype("float32") * 1.5
    labels = rng.integers(0, 4, size=(6,))
    loss = MulticlassHinge(p=p, margin=margin)
    np.testing.assert_allclose(value(loss, labels, scores),
                               _hinge_reference(labels, scores, p, margin), rtol=1e-5)
    # The per-sample value is the sum over classes; labels of shape (N, 1) work too.
    rows = per_sample(loss, labels[:, None], scores)
    np.testing.assert_allclose(rows, [_hinge_reference([y], s[None], p, margin)
                                      for y, s in zip(labels, scores)], rtol=1e-5)


def test_multiclass_hinge_rejects_bad_arguments():
    with pytest.raises(ValueError, match="p must be one of"):
        MulticlassHinge(p=3)
    with pytest.raises(ValueError, match="margin"):
        MulticlassHinge(margin=-1.0)
    with pytest.raises(ValueError, match="y_pred"):
        MulticlassHinge()(np.zeros((2,)), np.zeros((2, 3, 1), "float32"))


def _psi_reference(cos_theta, m):
    theta = np.arccos(np.clip(cos_theta, -1.0, 1.0))
    k = np.minimum(np.floor(theta * m / np.pi), m - 1)
    return (-1.0) ** k * np.cos(m * theta) - 2.0 * k


@pytest.mark.parametrize("m", [1, 2, 3, 4])
def test_psi_matches_acos_definition(m):
    # A grid with the interval ends kπ/m, ±1 and random interior points.
    edges = np.cos(np.arange(m + 1) * np.pi / m)
    cos_theta = np.concatenate([edges, np.linspace(-1, 1, 41),
                                np.random.default_rng(m).uniform(-1, 1, 30)]).astype("float32")
    got = keras.ops.convert_to_numpy(large_margin_psi(keras.ops.convert_to_tensor(cos_theta), m))
    np.testing.assert_allclose(got, _psi_reference(cos_theta.astype("float64"), m),
                               atol=2e-5)
    # ψ is continuous and decreasing in θ (increasing in cos θ), from 1 − 2m to 1.
    fine = np.linspace(-1, 1, 2001).astype("float32")
    psi = keras.ops.convert_to_numpy(large_margin_psi(keras.ops.convert_to_tensor(fine), m))
    assert np.all(np.diff(psi) >= -1e-5)
    np.testing.assert_allclose([psi[0], psi[-1]], [1 - 2 * m, 1], atol=1e-5)


def _lsoftmax_reference(features, kernel, labels, m, lam):
    logits = features @ kernel
    out = logits.copy()
    for i, y in enumerate(labels):
        w = kernel[:, y]
        norms = np.linalg.norm(w) * np.linalg.norm(features[i])
        cos = logits[i, y] / norms
        out[i, y] = (lam * logits[i, y] + norms * _psi_reference(cos, m)) / (1 + lam)
    return logits, out


def _built_layer(num_classes, dim, seed, **kwargs):
    layer = LSoftmaxDense(num_classes, **kwargs)
    layer.build((None, dim))
    kernel = np.random.default_rng(seed).normal(size=(dim, num_classes)).astype("float32")
    layer.set_weights([kernel])
    return layer, kernel.astype("float64")


@pytest.mark.parametrize("m", [2, 3, 4])
@pytest.mark.parametrize("lam", [0.0, 1.5])
def test_lsoftmax_training_logits_match_numpy(m, lam):
    rng = np.random.default_rng(10 * m)
    features = rng.normal(size=(8, 5)).astype("float32")
    labels = rng.integers(0, 4, size=(8,)).astype("int32")
    layer, kernel = _built_layer(4, 5, seed=m, margin=m, lam=lam)
    plain, margin_logits = _lsoftmax_reference(features.astype("float64"), kernel, labels, m, lam)
    train = keras.ops.convert_to_numpy(layer([features, labels], training=True))
    np.testing.assert_allclose(train, margin_logits, rtol=1e-4, atol=1e-4)
    # Inference ignores the labels; features alone give the same plain logits.
    for out in (layer([features, labels], training=False), layer(features)):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(out), plain, rtol=1e-5, atol=1e-5)
    # The margin only lowers the target logit (ψ(θ) <= cos θ).
    target = np.arange(8), labels
    assert np.all(train[target] <= plain[target] + 1e-4)


def test_lsoftmax_margin_one_equals_bias_free_dense():
    rng = np.random.default_rng(3)
    features = rng.normal(size=(6, 5)).astype("float32")
    labels = rng.integers(0, 3, size=(6, 1)).astype("int32")
    layer, kernel = _built_layer(3, 5, seed=4, margin=1)
    dense = keras.layers.Dense(3, use_bias=False)
    dense.build((None, 5))
    dense.set_weights([kernel.astype("float32")])
    expected = keras.ops.convert_to_numpy(dense(features))
    got = keras.ops.convert_to_numpy(layer([features, labels], training=True))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_lsoftmax_gradients_finite_at_cos_plus_minus_one():
    layer, kernel = _built_layer(3, 4, seed=5, margin=3)
    # Feature vectors exactly along +w_0 and −w_1, and an all-zero feature vector.
    features = np.stack([kernel[:, 0], -kernel[:, 1], np.zeros(4)]).astype("float32")
    labels = np.array([0, 1, 2], "int32")

    def loss_of(feats):
        return keras.ops.sum(layer([feats, labels], training=True))

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        x = tf.convert_to_tensor(features)
        with tf.GradientTape() as tape:
            tape.watch(x)
            total = loss_of(x)
        grads = [tape.gradient(total, x)]
        with tf.GradientTape() as tape:
            total = loss_of(x)
        grads.append(tape.gradient(total, layer.kernel.value))
    else:
        import jax

        def loss_of_weights(kernel, feats):
            logits, _ = layer.stateless_call([kernel], [], [feats, labels], training=True)
            return keras.ops.sum(logits)

        grads = jax.grad(loss_of_weights, argnums=(0, 1))(layer.kernel.value, features)
    for g in grads:
        assert np.all(np.isfinite(np.asarray(g)))


def test_lsoftmax_training_logits_under_mixed_bfloat16():
    rng = np.random.default_rng(11)
    features = rng.normal(size=(4, 6)).astype("float32")
    labels = rng.integers(0, 3, size=(4,)).astype("int32")
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        layer, kernel = _built_layer(3, 6, seed=12, margin=3)
        out = layer([features, labels], training=True)
        assert "bfloat16" in str(out.dtype) and layer.kernel.dtype == "float32"
    finally:
        keras.config.set_dtype_policy(previous)
    _, expected = _lsoftmax_reference(features.astype("float64"), kernel, labels, 3, 0.0)
    got = keras.ops.convert_to_numpy(keras.ops.cast(out, "float32"))
    np.testing.assert_allclose(got, expected, rtol=0.05, atol=0.1)


def test_lsoftmax_dense_layer_contract():
    # The shared harness differentiates w.r.t. every input, which jax.grad refuses for the
    # int32 labels; test_lsoftmax_gradients_finite_at_cos_plus_minus_one covers gradients.
    out = check_layer(lambda: LSoftmaxDense(5, margin=2, lam=0.5), [(2, 6), (2,)],
                      dtypes=["float32", "int32"], tol=1e-5,
                      check_grads=keras.backend.backend() != "jax")
    assert out[0].shape == (2, 5)


def test_lsoftmax_rejects_bad_arguments():
    with pytest.raises(ValueError, match="margin"):
        LSoftmaxDense(3, margin=0)
    with pytest.raises(ValueError, match="margin"):
        LSoftmaxDense(3, margin=1.5)
    with pytest.raises(ValueError, match="num_classes"):
        LSoftmaxDense(0)
    with pytest.raises(ValueError, match="lam"):
        LSoftmaxDense(3, lam=-0.1)
    with pytest.raises(ValueError, match="features"):
        LSoftmaxDense(3).build((None, 4, 4))


def test_lsoftmax_loss_is_sparse_cross_entropy_of_margin_logits():
    rng = np.random.default_rng(7)
    features = rng.normal(size=(6, 5)).astype("float32")
    labels = rng.integers(0, 4, size=(6,)).astype("int32")
    layer, kernel = _built_layer(4, 5, seed=8, margin=2)
    _, margin_logits = _lsoftmax_reference(features.astype("float64"), kernel, labels, 2, 0.0)
    shifted = margin_logits - margin_logits.max(axis=1, keepdims=True)
    log_prob = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    expected = -np.mean(log_prob[np.arange(6), labels])
    logits = layer([features, labels], training=True)
    np.testing.assert_allclose(value(LSoftmaxLoss(), labels, logits), expected, rtol=1e-4)
    # The L-Softmax loss is larger than the plain softmax loss on the same weights.
    plain = value(LSoftmaxLoss(), labels, layer(features))
    assert value(LSoftmaxLoss(), labels, logits) >= plain
    _, grad = loss_value_and_grad(LSoftmaxLoss(), labels, keras.ops.convert_to_numpy(logits))
    assert np.all(np.isfinite(grad))
    assert math.isfinite(plain)
