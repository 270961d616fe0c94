"""Jensen-Shannon divergence against scipy; the KLDivergence re-export."""

import keras
import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon

from cnn_apps.losses import JensenShannonDivergence, KLDivergence
from tests.losses.helpers import loss_value_and_grad, per_sample, value


def _distributions(seed, shape):
    x = np.random.default_rng(seed).uniform(0.05, 1.0, size=shape)
    return (x / x.sum(axis=-1, keepdims=True)).astype("float32")


def test_jensen_shannon_matches_scipy():
    p, q = _distributions(0, (5, 6)), _distributions(1, (5, 6))
    expected = [jensenshannon(a.astype("float64"), b.astype("float64")) ** 2 for a, b in zip(p, q)]
    loss = JensenShannonDivergence()
    np.testing.assert_allclose(per_sample(loss, p, q), expected, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(value(loss, p, q), np.mean(expected), rtol=1e-4)
    # Symmetric, zero on identical inputs, bounded by log 2 on disjoint supports.
    np.testing.assert_allclose(value(loss, q, p), value(loss, p, q), rtol=1e-5)
    assert abs(value(loss, p, p)) < 1e-6
    disjoint = np.array([[1.0, 0.0]], "float32"), np.array([[0.0, 1.0]], "float32")
    np.testing.assert_allclose(value(loss, *disjoint), np.log(2.0), rtol=1e-4)


def test_jensen_shannon_gradient_finite_with_zero_probabilities():
    p = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]], "float32")
    q = np.array([[0.0, 1.0, 0.0], [0.2, 0.3, 0.5]], "float32")
    _, grad = loss_value_and_grad(JensenShannonDivergence(), p, q)
    assert np.all(np.isfinite(grad)) and np.any(grad != 0)
    with pytest.raises(ValueError, match="epsilon"):
        JensenShannonDivergence(epsilon=0.0)


def test_kl_divergence_is_keras_builtin_and_matches_formula():
    assert KLDivergence is keras.losses.KLDivergence
    p, q = _distributions(2, (4, 5)), _distributions(3, (4, 5))
    expected = np.mean(np.sum(p * np.log(p / q.astype("float64")), axis=-1))
    np.testing.assert_allclose(value(KLDivergence(), p, q), expected, rtol=1e-5)
