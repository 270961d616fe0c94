"""Activation layers: RReLU, Maxout, Probout, ChannelPReLU and get_activation (S0 §3.3)."""

import keras
import numpy as np
import pytest

from cnn_apps.layers import (ACTIVATIONS, ChannelPReLU, Maxout, Probout, RReLU,
                             get_activation)
from tests.layers.harness import check_layer, random_inputs


def _np(t):
    return keras.ops.convert_to_numpy(t).astype("float64")


def _numpy_maxout(x, num_units, axis=-1):
    x = np.moveaxis(x, axis, -1)
    k = x.shape[-1] // num_units
    y = x.reshape(x.shape[:-1] + (num_units, k)).max(axis=-1)
    return np.moveaxis(y, -1, axis)


# ----------------------------------------------------------------------------- RReLU
def test_rrelu_contract_and_inference_matches_numpy():
    out = check_layer(lambda: RReLU(lower=0.1, upper=0.3, seed=3), [(2, 5, 5, 3)])[0]
    x = random_inputs([(2, 5, 5, 3)])[0].astype("float64")
    np.testing.assert_allclose(out, np.where(x >= 0, x, 0.2 * x), rtol=1e-6, atol=1e-7)


def test_rrelu_training_slope_per_element_in_range():
    lower, upper = 1.0 / 8.0, 1.0 / 3.0
    rng = np.random.default_rng(0)
    x = -rng.uniform(0.5, 1.5, size=(40, 100)).astype("float32")
    y = _np(RReLU(lower, upper, seed=7)(x, training=True))
    slopes = y / x.astype("float64")
    assert slopes.min() >= lower - 1e-6 and slopes.max() <= upper + 1e-6
    # U(1/8, 1/3) has std 0.060; over 4000 draws the mean is within ~0.001 of the midpoint.
    assert abs(slopes.mean() - 0.5 * (lower + upper)) < 0.006
    assert slopes.std() > 0.04, "slopes should vary per element"
    positive = np.abs(x)
    np.testing.assert_allclose(_np(RReLU(seed=1)(positive, training=True)), positive)


def test_rrelu_rejects_bad_range():
    with pytest.raises(ValueError, match="upper"):
        RReLU(lower=0.3, upper=0.1)
    with pytest.raises(ValueError, match="lower"):
        RReLU(lower=-0.1, upper=0.1)


# ----------------------------------------------------------------------------- Maxout
def test_maxout_contract_and_matches_numpy():
    out = check_layer(lambda: Maxout(num_units=3), [(2, 4, 4, 6)])[0]
    x = random_inputs([(2, 4, 4, 6)])[0].astype("float64")
    np.testing.assert_allclose(out, _numpy_maxout(x, 3), rtol=1e-6)


def test_maxout_other_axis_and_dynamic_spatial_size():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 6, 3, 5)).astype("float32")
    np.testing.assert_allclose(_np(Maxout(2, axis=1)(x)), _numpy_maxout(x, 2, axis=1),
                               rtol=1e-6)
    inputs = keras.Input(shape=(None, None, 8))
    model = keras.Model(inputs, Maxout(4)(inputs))
    for hw in [(3, 5), (7, 2)]:
        z = rng.normal(size=(2,) + hw + (8,)).astype("float32")
        np.testing.assert_allclose(_np(model(z)), _numpy_maxout(z, 4), rtol=1e-6)


def test_maxout_rejects_bad_arguments():
    with pytest.raises(ValueError, match="not divisible by num_units=4"):
        Maxout(4)(np.zeros((2, 6), "float32"))
    with pytest.raises(ValueError, match="num_units"):
        Maxout(0)
    with pytest.raises(ValueError, match="axis"):
        Maxout(2, axis=0)(np.zeros((2, 6), "float32"))


# ----------------------------------------------------------------------------- Probout
def test_probout_contract_and_inference_equals_maxout():
    out = check_layer(lambda: Probout(num_units=2, lam=2.0, seed=5), [(2, 4, 4, 6)])[0]
    x = random_inputs([(2, 4, 4, 6)])[0].astype("float64")
    np.testing.assert_allclose(out, _numpy_maxout(x, 2), rtol=1e-6)
    np.testing.assert_allclose(out, _np(Maxout(2)(x.astype("float32"))), rtol=1e-6)


def test_probout_sampling_frequencies_match_dropout_form():
    lam = 1.5
    groups = np.array([[0.3, -0.5, 1.2], [-1.0, 0.7, 0.2]])   # two units, k = 3
    n = 20000
    x = np.tile(groups.reshape(1, 6), (n, 1)).astype("float32")
    y = _np(Probout(num_units=2, lam=lam, seed=11)(x, training=True))
    for unit, z in enumerate(groups):
        p_hat = np.concatenate([[0.5], 0.5 * np.exp(lam * z) / np.exp(lam * z).sum()])
        outcomes = y[:, unit]
        counts = [np.mean(outcomes == 0.0)]
        counts += [np.mean(np.isclose(outcomes, np.float32(v))) for v in z]
        assert abs(sum(counts) - 1.0) < 1e-9, "every output is 0 or one of the group's inputs"
        # 4 standard errors of a frequency over 20000 draws is at most 0.0142.
        np.testing.assert_allclose(counts, p_hat, atol=0.015)


def test_probout_rejects_bad_arguments():
    with pytest.raises(ValueError, match="lam"):
        Probout(2, lam=0.0)
    with pytest.raises(ValueError, match="not divisible"):
        Probout(4)(np.zeros((2, 6), "float32"), training=True)


# ----------------------------------------------------------------------------- PReLU
def test_channel_prelu_contract_and_matches_numpy():
    out = check_layer(lambda: ChannelPReLU(alpha_initializer="random_uniform"),
                      [(2, 4, 4, 3)])
    assert out[0].shape == (2, 4, 4, 3)
    layer = ChannelPReLU(alpha_initializer=keras.initializers.Constant([0.1, 0.2, 0.3]))
    x = random_inputs([(2, 4, 4, 3)])[0]
    slope = np.array([0.1, 0.2, 0.3])
    np.testing.assert_allclose(_np(layer(x)), np.where(x > 0, x, slope * x), rtol=1e-6)


@pytest.mark.parametrize("shape", [(2, 5), (2, 7, 5), (2, 3, 4, 5), (2, 2, 3, 4, 5)])
def test_prelu_is_per_channel_for_any_rank(shape):
    layer = get_activation("prelu")
    y = _np(layer(-np.ones(shape, "float32")))
    assert int(np.prod(layer.alpha.shape)) == shape[-1]
    np.testing.assert_allclose(y, -0.25 * np.ones(shape))     # He et al.'s initial slope


# ----------------------------------------------------------------------------- get_activation
def test_get_activation_numerics_against_numpy():
    x = np.linspace(-3, 3, 24, dtype="float32").reshape(2, 12)
    xd = x.astype("float64")
    refs = {
        "relu": np.maximum(xd, 0),
        "leaky_relu": np.where(xd > 0, xd, 0.1 * xd),
        "elu": np.where(xd > 0, xd, 0.5 * (np.exp(xd) - 1)),
        "tanh": np.tanh(xd),
        "sigmoid": 1 / (1 + np.exp(-xd)),
        "linear": xd,
        "maxout": _numpy_maxout(xd, 4),
        "probout": _numpy_maxout(xd, 3),
        "rrelu": np.where(xd >= 0, xd, 0.2 * xd),
        "prelu": np.where(xd > 0, xd, 0.25 * xd),
    }
    kwargs = {"leaky_relu": {"negative_slope": 0.1}, "elu": {"alpha": 0.5},
              "maxout": {"num_units": 4}, "probout": {"num_units": 3},
              "rrelu": {"lower": 0.1, "upper": 0.3}}
    assert set(refs) == set(ACTIVATIONS)
    for name in ACTIVATIONS:
        layer = get_activation(name, **kwargs.get(name, {}))
        assert isinstance(layer, keras.layers.Layer)
        np.testing.assert_allclose(_np(layer(x)), refs[name], rtol=1e-5, atol=1e-6,
                                   err_msg=name)


def test_get_activation_passes_layer_name_and_dtype():
    layer = get_activation("rrelu", name="act1", dtype="float64")
    assert layer.name == "act1" and layer.compute_dtype == "float64"


def test_get_activation_errors():
    with pytest.raises(ValueError, match="relu.*leaky_relu.*prelu"):
        get_activation("swishy")
    with pytest.raises(ValueError, match="num_units"):
        get_activation("maxout")
    with pytest.raises(ValueError, match="num_units"):
        get_activation("probout")


@pytest.mark.tf_only
def test_stochastic_activations_train_with_dynamic_shapes_in_tf_function():
    import tensorflow as tf

    spec = tf.TensorSpec([None, None, None, 6], tf.float32)
    for layer in [RReLU(seed=1), Probout(num_units=3, seed=2)]:
        fn = tf.function(lambda t, layer=layer: layer(t, training=True), input_signature=[spec])
        for shape in [(2, 3, 4, 6), (3, 5, 2, 6)]:
            y = fn(tf.random.normal(shape)).numpy()
            assert y.shape[:3] == shape[:3] and np.all(np.isfinite(y))
