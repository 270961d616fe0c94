"""Contract shared by every loss: serialization, finite gradients, bfloat16, and it trains.

Each case is (loss factory, y_true, y_pred, sample_weight) on a tiny random batch.
"""

import keras
import numpy as np
import pytest

import cnn_apps.losses as losses
from cnn_apps.layers import LSoftmaxDense
from tests.losses.helpers import loss_value_and_grad, value

RNG = np.random.default_rng(0)


def _probs(shape, seed):
    x = np.random.default_rng(seed).uniform(0.05, 1.0, size=shape)
    return (x / x.sum(axis=-1, keepdims=True)).astype("float32")


def _normal(*shape):
    return RNG.normal(size=shape).astype("float32")


LABELS = np.array([0, 0, 1, 1, 2, 2])
CASES = {
    "MulticlassHinge": (lambda: losses.MulticlassHinge(p=2, margin=0.8), LABELS, _normal(6, 3),
                        None),
    "LSoftmaxLoss": (lambda: losses.LSoftmaxLoss(), LABELS, _normal(6, 3), None),
    "ContrastiveLoss": (lambda: losses.ContrastiveLoss(margin=1.5, distance="l2"),
                        np.array([1, 0, 1, 0], "float32"), _normal(4, 2, 3), None),
    "DoubleMarginContrastiveLoss": (lambda: losses.DoubleMarginContrastiveLoss(0.2, 2.0),
                                    np.array([1, 0, 1, 0], "float32"), _normal(4, 2, 3), None),
    "TripletLoss": (lambda: losses.TripletLoss(margin=0.5, mining="semi_hard"), LABELS,
                    _normal(6, 3), None),
    "CoupledClustersLoss": (lambda: losses.CoupledClustersLoss(margin=0.5), LABELS,
                            _normal(6, 3), None),
    "JensenShannonDivergence": (lambda: losses.JensenShannonDivergence(), _probs((4, 3), 1),
                                _probs((4, 3), 2), None),
    "KLDivergence": (lambda: losses.KLDivergence(), _probs((4, 3), 3), _probs((4, 3), 4), None),
    "SmoothL1": (lambda: losses.SmoothL1(delta=0.5), _normal(2, 3, 4), _normal(2, 3, 4), None),
    "FocalLoss": (lambda: losses.FocalLoss(from_logits=True),
                  (RNG.uniform(size=(4, 3)) < 0.5).astype("float32"), _normal(4, 3), None),
    "CTCLoss": (lambda: losses.CTCLoss(), np.array([[1, 2], [3, -1]], "int32"),
                _normal(2, 5, 4), None),
    "DiceLoss": (lambda: losses.DiceLoss(), (RNG.uniform(size=(2, 4, 4, 1)) < 0.5).astype(
        "float32"), RNG.uniform(size=(2, 4, 4, 1)).astype("float32"), None),
    "HeatmapMSE": (lambda: losses.HeatmapMSE(), RNG.uniform(size=(2, 4, 4, 3)).astype("float32"),
                   RNG.uniform(size=(2, 4, 4, 3)).astype("float32"),
                   np.array([[1, 0, 1], [1, 1, 1]], "float32")),
}


def test_every_public_loss_has_a_case_and_is_listed():
    classes = {name for name in losses.__all__
               if isinstance(getattr(losses, name), type)}
    assert classes == set(CASES)
    rows = dict(losses.list_losses())
    assert set(rows) == set(losses.__all__) - {"list_losses"}
    assert all(rows[name] for name in rows)
    assert "deep_supervision" in rows


@pytest.mark.parametrize("name", sorted(CASES))
def test_serialization_round_trips(name):
    make, y_true, y_pred, weight = CASES[name]
    loss = make()
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert type(restored) is type(loss)
    assert restored.get_config() == loss.get_config()
    clone = type(loss).from_config(loss.get_config())
    expected = value(loss, y_true, y_pred, weight)
    assert value(restored, y_true, y_pred, weight) == pytest.approx(expected, rel=1e-6)
    assert value(clone, y_true, y_pred, weight) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("name", sorted(CASES))
def test_gradients_finite_and_nonzero(name):
    make, y_true, y_pred, weight = CASES[name]
    loss_value, grad = loss_value_and_grad(make(), y_true, y_pred, weight)
    assert np.isfinite(loss_value) and loss_value > 0
    assert np.all(np.isfinite(grad)) and np.any(grad != 0)


@pytest.mark.parametrize("name", sorted(CASES))
def test_mixed_bfloat16(name):
    make, y_true, y_pred, weight = CASES[name]
    reference = value(make(), y_true, y_pred, weight)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        bf16_pred = keras.ops.cast(y_pred, "bfloat16")
        under_policy = value(make(), y_true, bf16_pred, weight)
    finally:
        keras.config.set_dtype_policy(previous)
    assert np.isfinite(under_policy)
    assert under_policy == pytest.approx(reference, rel=0.05, abs=0.02)
    # Computing the loss itself in bfloat16 (dtype policy on the loss) stays finite and close.
    loss = make()
    bf16_loss = type(loss).from_config({**loss.get_config(), "dtype": "mixed_bfloat16"})
    in_bf16 = value(bf16_loss, y_true, bf16_pred, weight)
    assert np.isfinite(in_bf16)
    assert in_bf16 == pytest.approx(reference, rel=0.1, abs=0.05)


def _training_problem(name):
    """(model, x, y, sample_weight, loss) for a tiny Dense model producing the loss's y_pred."""
    rng = np.random.default_rng(1)
    n = 16
    labels = rng.integers(0, 3, size=n)
    flat = keras.Input((4,))
    x_flat = rng.normal(size=(n, 4)).astype("float32")
    if name in ("MulticlassHinge", "TripletLoss", "CoupledClustersLoss", "FocalLoss",
                "SmoothL1", "JensenShannonDivergence", "KLDivergence"):
        units = {"SmoothL1": 4}.get(name, 3)
        activation = "softmax" if name in ("JensenShannonDivergence", "KLDivergence") else None
        model = keras.Model(flat, keras.layers.Dense(units, activation=activation)(flat))
        y = {"FocalLoss": (rng.uniform(size=(n, 3)) < 0.4).astype("float32"),
             "SmoothL1": rng.normal(size=(n, 4)).astype("float32"),
             "JensenShannonDivergence": _probs((n, 3), 5),
             "KLDivergence": _probs((n, 3), 6)}.get(name, labels)
        return model, x_flat, y, None
    if name == "LSoftmaxLoss":
        label_input = keras.Input((), dtype="int32")
        logits = LSoftmaxDense(3, margin=2)([keras.layers.Dense(8)(flat), label_input])
        return keras.Model([flat, label_input], logits), [x_flat, labels], labels, None
    if name in ("ContrastiveLoss", "DoubleMarginContrastiveLoss"):
        pairs = keras.Input((2, 4))
        model = keras.Model(pairs, keras.layers.Dense(3)(pairs))  # shared tower per member
        return model, rng.normal(size=(n, 2, 4)).astype("float32"), (labels == 0).astype(
            "float32"), None
    if name == "CTCLoss":
        frames = keras.Input((6, 4))
        model = keras.Model(frames, keras.layers.Dense(4)(frames))
        y = np.where(rng.uniform(size=(n, 2)) < 0.3, -1, rng.integers(1, 4, size=(n, 2)))
        return model, rng.normal(size=(n, 6, 4)).astype("float32"), y, None
    maps = keras.Input((4, 4, 2))
    if name == "DiceLoss":
        model = keras.Model(maps, keras.layers.Conv2D(1, 1, activation="sigmoid")(maps))
        x = rng.normal(size=(n, 4, 4, 2)).astype("float32")
        return model, x, (x[..., :1] > 0).astype("float32"), None
    model = keras.Model(maps, keras.layers.Conv2D(3, 1)(maps))  # HeatmapMSE
    x = rng.normal(size=(n, 4, 4, 2)).astype("float32")
    return model, x, rng.uniform(size=(n, 4, 4, 3)).astype("float32"), (
        rng.uniform(size=(n, 3)) < 0.7).astype("float32")


def _repeat(batch, times):
    if batch is None:
        return None
    if isinstance(batch, list):
        return [_repeat(part, times) for part in batch]
    return np.concatenate([batch] * times)


def test_tiny_models_train_with_every_loss():
    """20 Adam steps on one repeated batch of 16 (one epoch: no per-epoch overhead)."""
    failures = []
    for name in sorted(CASES):
        keras.utils.set_random_seed(0)
        model, x, y, weight = _training_problem(name)
        loss = CASES[name][0]()

        def batch_loss():
            # training=True: LSoftmaxDense applies its margin, as in the fit steps.
            return value(loss, y, model(x, training=True), weight)

        before = batch_loss()
        model.compile(optimizer=keras.optimizers.Adam(0.05), loss=loss)
        model.fit(_repeat(x, 20), _repeat(y, 20), sample_weight=_repeat(weight, 20),
                  batch_size=16, epochs=1, shuffle=False, verbose=0)
        after = batch_loss()
        if not (np.isfinite(after) and after < 0.9 * before):
            failures.append(f"{name}: {before:.4f} -> {after:.4f}")
    assert not failures, "loss did not decrease: " + "; ".join(failures)
