"""SmoothL1, FocalLoss, CTCLoss, DiceLoss and HeatmapMSE against numpy / Keras / TF references."""

import itertools

import keras
import numpy as np
import pytest

from cnn_apps.losses import CTCLoss, DiceLoss, FocalLoss, HeatmapMSE, SmoothL1
from tests.losses.helpers import loss_value_and_grad, per_sample, value


@pytest.mark.parametrize("delta", [1.0, 0.5])
def test_smooth_l1_matches_formula_and_keras_huber(delta):
    rng = np.random.default_rng(0)
    y_true = rng.normal(size=(2, 5, 4)).astype("float32")
    y_pred = y_true + rng.normal(size=(2, 5, 4)).astype("float32")
    x = np.abs(y_pred.astype("float64") - y_true)
    elementwise = np.where(x < delta, 0.5 * x ** 2 / delta, x - 0.5 * delta)
    loss = SmoothL1(delta=delta)
    np.testing.assert_allclose(per_sample(loss, y_true, y_pred), elementwise.sum(-1), rtol=1e-5)
    np.testing.assert_allclose(value(loss, y_true, y_pred), elementwise.sum(-1).mean(),
                               rtol=1e-5)
    huber = value(keras.losses.Huber(delta=delta), y_true, y_pred)
    np.testing.assert_allclose(value(loss, y_true, y_pred), 4 / delta * huber, rtol=1e-5)
    with pytest.raises(ValueError, match="delta"):
        SmoothL1(delta=0.0)


def _focal_reference(y, p, alpha, gamma):
    y, p = y.astype("float64"), np.clip(p.astype("float64"), 1e-7, 1 - 1e-7)
    p_t = np.where(y == 1, p, 1 - p)
    alpha_t = np.where(y == 1, alpha, 1 - alpha)
    return np.mean(np.mean(-alpha_t * (1 - p_t) ** gamma * np.log(p_t), axis=-1))


@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (0.6, 0.5), (0.5, 0.0)])
def test_focal_loss_matches_formula_and_keras(alpha, gamma):
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(6, 4)).astype("float32") * 2
    y = (rng.uniform(size=(6, 4)) < 0.4).astype("float32")  # multi-label targets
    probs = 1 / (1 + np.exp(-logits.astype("float64")))
    expected = _focal_reference(y, probs, alpha, gamma)
    np.testing.assert_allclose(value(FocalLoss(alpha, gamma), y, probs.astype("float32")),
                               expected, rtol=1e-4)
    np.testing.assert_allclose(value(FocalLoss(alpha, gamma, from_logits=True), y, logits),
                               expected, rtol=1e-4)
    keras_focal = keras.losses.BinaryFocalCrossentropy(apply_class_balancing=True, alpha=alpha,
                                                       gamma=gamma, from_logits=True)
    np.testing.assert_allclose(value(FocalLoss(alpha, gamma, from_logits=True), y, logits),
                               value(keras_focal, y, logits), rtol=1e-4)


def test_focal_loss_gamma_zero_alpha_half_is_half_bce():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(5, 3)).astype("float32")
    y = np.eye(3, dtype="float32")[rng.integers(0, 3, size=5)]  # one-hot targets
    bce = value(keras.losses.BinaryCrossentropy(from_logits=True), y, logits)
    np.testing.assert_allclose(value(FocalLoss(0.5, 0.0, from_logits=True), y, logits),
                               0.5 * bce, rtol=1e-5)
    # Saturated logits: finite value and gradient for γ < 1 too.
    big = np.array([[120.0, -120.0, 0.0]], "float32")
    for gamma in (0.0, 0.5, 2.0):
        loss_value, grad = loss_value_and_grad(FocalLoss(0.25, gamma, from_logits=True),
                                               np.array([[0.0, 1.0, 1.0]], "float32"), big)
        assert np.isfinite(loss_value) and np.all(np.isfinite(grad))
    with pytest.raises(ValueError, match="alpha"):
        FocalLoss(alpha=1.5)
    with pytest.raises(ValueError, match="gamma"):
        FocalLoss(gamma=-1.0)


def _softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _ctc_brute_force(logits, label, blank):
    """−log Σ over every frame path that collapses (merge repeats, drop blanks) to ``label``."""
    probs = _softmax(logits.astype("float64"))
    steps, classes = probs.shape
    total = 0.0
    for path in itertools.product(range(classes), repeat=steps):
        collapsed = [k for k, _ in itertools.groupby(path) if k != blank]
        if collapsed == list(label):
            total += np.prod([probs[t, k] for t, k in enumerate(path)])
    return -np.log(total)


@pytest.mark.parametrize("blank", [0, 2])
def test_ctc_matches_brute_force_enumeration(blank):
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(3, 3, 3)).astype("float32")
    symbols = [k for k in range(3) if k != blank]
    a, b = symbols
    labels = [[a, b], [b], [a, a]]  # a repeated label needs a blank between: T = 3 suffices
    padded = np.array([row + [-1] * (2 - len(row)) for row in labels], "int32")
    expected = [_ctc_brute_force(logits[i], labels[i], blank) for i in range(3)]
    loss = CTCLoss(blank_index=blank)
    np.testing.assert_allclose(per_sample(loss, padded, logits), expected, rtol=1e-4)
    np.testing.assert_allclose(value(loss, padded, logits), np.mean(expected), rtol=1e-4)
    # Explicit lengths in the dict form give the same values.
    explicit = {"labels": padded, "label_length": np.array([2, 1, 2])}
    np.testing.assert_allclose(value(loss, explicit, logits), np.mean(expected), rtol=1e-4)
    _, grad = loss_value_and_grad(loss, padded, logits)
    assert np.all(np.isfinite(grad))


def test_ctc_logit_length_from_keras_mask():
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(2, 5, 3)).astype("float32")
    lengths = [3, 5]
    logits[0, 3:] = 0.0  # frames 3, 4 of sequence 0 are padding
    masked = keras.layers.Masking(mask_value=0.0)(keras.ops.convert_to_tensor(logits))
    labels = np.array([[1, 2], [2, -1]], "int32")
    # Explicit logit lengths (dict form); sequence 0 also against a 3^3-path enumeration.
    full = per_sample(CTCLoss(), {"labels": labels, "logit_length": np.array(lengths)}, logits)
    np.testing.assert_allclose(full[0], _ctc_brute_force(logits[0, :3], [1, 2], 0), rtol=1e-4)
    got = keras.ops.convert_to_numpy(CTCLoss(reduction=None)(labels, masked))
    np.testing.assert_allclose(got, full, rtol=1e-5)
    unmasked = per_sample(CTCLoss(), labels, logits)
    assert abs(unmasked[0] - full[0]) > 1e-3  # the mask really changed the length


def test_ctc_in_compiled_model_takes_logit_lengths_from_the_mask():
    rng = np.random.default_rng(9)
    frames = rng.normal(size=(3, 5, 2)).astype("float32")
    frames[0, 3:] = 0.0  # sequence 0 has 3 frames, sequence 2 has 4
    frames[2, 4:] = 0.0
    inputs = keras.Input((5, 2))
    logits = keras.layers.Dense(4)(keras.layers.Masking(mask_value=0.0)(inputs))
    model = keras.Model(inputs, logits)
    labels = np.array([[1, 2], [3, -1], [2, 2]], "int32")
    model.compile(optimizer="sgd", loss=CTCLoss())
    evaluated = model.evaluate(frames, labels, batch_size=3, verbose=0)
    direct = per_sample(CTCLoss(), {"labels": labels, "logit_length": np.array([3, 5, 4])},
                        keras.ops.convert_to_numpy(model(frames)))
    np.testing.assert_allclose(evaluated, direct.mean(), rtol=1e-5)


def test_ctc_pad_equal_to_blank_matches_keras_ctc():
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(3, 6, 5)).astype("float32")
    labels = np.array([[1, 2, 3], [4, 4, 0], [2, 0, 0]], "int32")  # 0 = blank = padding
    np.testing.assert_allclose(value(CTCLoss(blank_index=0, pad_value=0), labels, logits),
                               value(keras.losses.CTC(), labels, logits), rtol=1e-5)


@pytest.mark.tf_only
@pytest.mark.parametrize("blank", [0, 4])
def test_ctc_matches_tf_nn_ctc_loss(blank):
    import tensorflow as tf

    rng = np.random.default_rng(6)
    logits = rng.normal(size=(3, 7, 5)).astype("float32")
    symbols = [k for k in range(5) if k != blank]
    labels = np.full((3, 4), -1, "int32")
    label_length = np.array([4, 2, 1])
    for i, n in enumerate(label_length):
        labels[i, :n] = rng.choice(symbols, size=n)
    dense = np.where(labels < 0, 0, labels)
    expected = tf.nn.ctc_loss(labels=dense, logits=logits, label_length=label_length,
                              logit_length=np.array([7, 7, 7]), logits_time_major=False,
                              blank_index=blank).numpy()
    np.testing.assert_allclose(per_sample(CTCLoss(blank_index=blank), labels, logits), expected,
                               rtol=1e-4)


def test_ctc_rejects_bad_input():
    with pytest.raises(ValueError, match="blank_index"):
        CTCLoss(blank_index=-1)
    with pytest.raises(ValueError, match="labels"):
        CTCLoss()({"label": np.zeros((1, 2))}, np.zeros((1, 3, 3), "float32"))
    with pytest.raises(ValueError, match=r"\(N, T, C\)"):
        CTCLoss()(np.zeros((1, 2)), np.zeros((1, 3), "float32"))


@pytest.mark.parametrize("smooth", [1.0, 0.0])
def test_dice_matches_numpy(smooth):
    rng = np.random.default_rng(7)
    y_true = np.eye(3, dtype="float32")[rng.integers(0, 3, size=(2, 4, 4))]
    y_pred = _softmax(rng.normal(size=(2, 4, 4, 3))).astype("float32")
    expected = [1 - (2 * np.sum(t * p) + smooth) / (np.sum(t) + np.sum(p) + smooth)
                for t, p in zip(y_true.astype("float64"), y_pred)]
    loss = DiceLoss(smooth=smooth)
    np.testing.assert_allclose(per_sample(loss, y_true, y_pred), expected, rtol=1e-5)
    np.testing.assert_allclose(value(loss, y_true, y_pred), np.mean(expected), rtol=1e-5)
    assert value(DiceLoss(), y_true, y_true) == pytest.approx(0.0, abs=1e-6)
    empty = np.zeros((1, 2, 2, 1), "float32")
    assert value(DiceLoss(smooth=1.0), empty, empty) == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError, match="smooth"):
        DiceLoss(smooth=-1.0)


def test_heatmap_mse_masks_invisible_joints():
    rng = np.random.default_rng(8)
    y_true = rng.uniform(size=(2, 4, 4, 3)).astype("float32")
    y_pred = rng.uniform(size=(2, 4, 4, 3)).astype("float32")
    visibility = np.array([[1, 0, 1], [1, 1, 0]], "float32")
    per_joint = np.mean((y_pred.astype("float64") - y_true) ** 2, axis=(1, 2))  # (N, K)
    loss = HeatmapMSE()
    np.testing.assert_allclose(per_sample(loss, y_true, y_pred), per_joint, rtol=1e-5)
    np.testing.assert_allclose(value(loss, y_true, y_pred, visibility),
                               np.sum(per_joint * visibility) / per_joint.size, rtol=1e-5)
    visible_mean = HeatmapMSE(reduction="mean_with_sample_weight")
    np.testing.assert_allclose(value(visible_mean, y_true, y_pred, visibility),
                               np.sum(per_joint * visibility) / visibility.sum(), rtol=1e-5)
    # Whatever the prediction of an invisible joint, the loss and its gradient ignore it.
    changed = y_pred.copy()
    changed[0, ..., 1] += 5.0
    changed[1, ..., 2] -= 3.0
    np.testing.assert_allclose(value(loss, y_true, changed, visibility),
                               value(loss, y_true, y_pred, visibility), rtol=1e-6)
    _, grad = loss_value_and_grad(loss, y_true, changed, visibility)
    assert np.all(grad[0, ..., 1] == 0) and np.all(grad[1, ..., 2] == 0)
    assert np.any(grad[0, ..., 0] != 0)
    with pytest.raises(ValueError, match=r"\(N, H, W, K\)"):
        loss(y_true[..., 0], y_pred[..., 0])
