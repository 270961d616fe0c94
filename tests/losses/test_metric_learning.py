"""Contrastive, double-margin, triplet (every mining mode) and coupled clusters losses.

References are direct python enumerations of pairs / triplets / clusters in float64.
"""

import itertools

import keras
import numpy as np
import pytest

from cnn_apps.losses import (ContrastiveLoss, CoupledClustersLoss, DoubleMarginContrastiveLoss,
                             MulticlassHinge, TripletLoss, deep_supervision)
from tests.losses.helpers import loss_value_and_grad, per_sample, value


def _pairs(seed, n=6, dim=3):
    rng = np.random.default_rng(seed)
    pairs = rng.normal(size=(n, 2, dim)).astype("float32") * 0.6
    match = rng.integers(0, 2, size=(n,)).astype("float32")
    return match, pairs


@pytest.mark.parametrize("distance", ["squared_l2", "l2"])
def test_contrastive_matches_formula(distance):
    match, pairs = _pairs(0)
    margin = 1.2
    total = 0.0
    for y, (a, b) in zip(match, pairs.astype("float64")):
        sq = float(np.sum((a - b) ** 2))
        if distance == "squared_l2":  # S0: d = ‖a − b‖², hinge on d
            total += y * sq + (1 - y) * max(margin - sq, 0.0)
        else:  # Hadsell: d = ‖a − b‖, squared terms
            d = np.sqrt(sq)
            total += y * d ** 2 + (1 - y) * max(margin - d, 0.0) ** 2
    expected = total / (2 * len(match))
    loss = ContrastiveLoss(margin=margin, distance=distance)
    np.testing.assert_allclose(value(loss, match, pairs), expected, rtol=1e-5)
    # The same loss from precomputed distances of shape (N, 1).
    sq = np.sum((pairs[:, 0] - pairs[:, 1]) ** 2, axis=-1)
    d = sq if distance == "squared_l2" else np.sqrt(sq)
    from_distance = ContrastiveLoss(margin=margin, distance=distance, inputs="distance")
    np.testing.assert_allclose(value(from_distance, match[:, None], d[:, None]), expected,
                               rtol=1e-5)


def test_contrastive_l2_gradient_finite_for_identical_pair():
    match = np.array([1.0, 0.0], "float32")
    pairs = np.array([[[0.3, -0.2], [0.3, -0.2]], [[0.1, 0.1], [0.1, 0.1]]], "float32")
    loss_value, grad = loss_value_and_grad(ContrastiveLoss(margin=1.0, distance="l2"), match,
                                           pairs)
    assert np.all(np.isfinite(grad))
    np.testing.assert_allclose(loss_value, 0.5 * (1.0 ** 2) / 2, rtol=1e-6)


def test_double_margin_contrastive_matches_formula():
    match, pairs = _pairs(1)
    m1, m2 = 0.3, 1.1
    d = np.sum((pairs[:, 0].astype("float64") - pairs[:, 1]) ** 2, axis=-1)
    expected = np.mean([y * max(di - m1, 0) + (1 - y) * max(m2 - di, 0)
                        for y, di in zip(match, d)])
    loss = DoubleMarginContrastiveLoss(m1, m2)
    np.testing.assert_allclose(value(loss, match, pairs), expected, rtol=1e-5)
    np.testing.assert_allclose(
        value(DoubleMarginContrastiveLoss(m1, m2, inputs="distance"), match, d), expected,
        rtol=1e-5)


def test_pair_losses_reject_bad_input():
    with pytest.raises(ValueError, match="distance must be one of"):
        ContrastiveLoss(distance="cosine")
    with pytest.raises(ValueError, match="inputs must be one of"):
        ContrastiveLoss(inputs="embeddings")
    with pytest.raises(ValueError, match=r"\(N, 2, D\)"):
        ContrastiveLoss()(np.zeros((2,)), np.zeros((2, 3, 4), "float32"))
    with pytest.raises(ValueError, match="m1"):
        DoubleMarginContrastiveLoss(1.0, 0.5)


def test_deep_supervision_sums_weighted_losses_over_outputs():
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")
    labels = np.random.default_rng(1).integers(0, 3, size=(8,))
    inp = keras.Input((4,))
    hidden = keras.layers.Dense(5, name="hidden")(inp)
    model = keras.Model(inp, {"early": keras.layers.Dense(3, name="early")(inp),
                              "late": keras.layers.Dense(3, name="late")(hidden)})
    spec = deep_supervision(MulticlassHinge(p=2), ["early", "late"], weights=[0.25, 1.0])
    assert set(spec["loss"]) == {"early", "late"}
    assert spec["loss"]["early"] is not spec["loss"]["late"]
    model.compile(optimizer="sgd", **spec)
    total = model.evaluate(x, {"early": labels, "late": labels}, verbose=0, return_dict=True)
    outputs = model.predict(x, verbose=0)

    def hinge2(scores):
        sign = np.where(np.arange(3)[None] == labels[:, None], 1.0, -1.0)
        return np.mean(np.sum(np.maximum(0, 1 - sign * scores) ** 2, axis=1))

    expected = 0.25 * hinge2(outputs["early"]) + hinge2(outputs["late"])
    np.testing.assert_allclose(total["loss"], expected, rtol=1e-4)
    listed = deep_supervision("mse", 3)
    assert len(listed["loss"]) == 3 and listed["loss_weights"] == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="weights"):
        deep_supervision(MulticlassHinge(), ["a", "b"], weights=[1.0])
    with pytest.raises(ValueError, match="outputs"):
        deep_supervision(MulticlassHinge(), 0)


def _distances(emb, distance):
    sq = np.sum((emb[:, None] - emb[None]) ** 2, axis=-1)
    return sq if distance == "squared_l2" else np.sqrt(sq)


def _triplet_reference(labels, emb, margin, mining, distance):
    """Brute force over every (a, p, n) of the batch, following the docstring's definitions."""
    d = _distances(emb.astype("float64"), distance)
    n = len(labels)
    if mining in ("none", "batch_all"):
        terms = [max(d[a, p] - d[a, q] + margin, 0.0)
                 for a, p, q in itertools.product(range(n), repeat=3)
                 if a != p and labels[a] == labels[p] and labels[q] != labels[a]]
        if mining == "batch_all":
            terms = [t for t in terms if t > 0]
        return float(np.mean(terms)) if terms else 0.0
    if mining == "batch_hard":
        terms = []
        for a in range(n):
            pos = [d[a, p] for p in range(n) if p != a and labels[p] == labels[a]]
            neg = [d[a, q] for q in range(n) if labels[q] != labels[a]]
            if pos and neg:
                terms.append(max(max(pos) - min(neg) + margin, 0.0))
        return float(np.mean(terms)) if terms else 0.0
    terms = []  # semi_hard
    for a, p in itertools.product(range(n), repeat=2):
        if a == p or labels[a] != labels[p]:
            continue
        neg = [d[a, q] for q in range(n) if labels[q] != labels[a]]
        if not neg:
            continue
        band = [x for x in neg if d[a, p] < x < d[a, p] + margin]
        chosen = min(band) if band else min(neg)
        terms.append(max(d[a, p] - chosen + margin, 0.0))
    return float(np.mean(terms)) if terms else 0.0


MINING = ["none", "batch_all", "batch_hard", "semi_hard"]


@pytest.mark.parametrize("mining", MINING)
@pytest.mark.parametrize("distance", ["squared_l2", "l2"])
def test_triplet_matches_brute_force(mining, distance):
    rng = np.random.default_rng(MINING.index(mining))
    # Label 3 has a single member (no positive for it); embeddings on a small scale so
    # every mining mode sees both zero and positive terms.
    labels = np.array([0, 0, 1, 1, 1, 2, 2, 3])
    emb = rng.normal(size=(8, 3)).astype("float32") * 0.5
    margin = 0.5
    loss = TripletLoss(margin=margin, mining=mining, distance=distance)
    np.testing.assert_allclose(value(loss, labels, emb),
                               _triplet_reference(labels, emb, margin, mining, distance),
                               rtol=1e-4, atol=1e-6)
    _, grad = loss_value_and_grad(loss, labels, emb)
    assert np.all(np.isfinite(grad)) and np.any(grad != 0)


@pytest.mark.parametrize("mining", MINING)
def test_triplet_all_same_label_is_zero_with_finite_gradient(mining):
    emb = np.random.default_rng(2).normal(size=(4, 3)).astype("float32")
    for distance in ("squared_l2", "l2"):
        loss_value, grad = loss_value_and_grad(
            TripletLoss(mining=mining, distance=distance), np.zeros(4), emb)
        assert loss_value == 0.0
        assert np.all(np.isfinite(grad)) and np.all(grad == 0)


@pytest.mark.parametrize("mining", MINING)
def test_triplet_zero_distance_pairs_have_finite_l2_gradient(mining):
    # Anchor and positive identical, and a negative identical to another negative.
    emb = np.array([[0.2, 0.1], [0.2, 0.1], [0.5, -0.3], [0.5, -0.3], [0.0, 0.4]], "float32")
    labels = np.array([0, 0, 1, 1, 0])
    loss = TripletLoss(margin=0.5, mining=mining, distance="l2")
    loss_value, grad = loss_value_and_grad(loss, labels, emb)
    assert np.all(np.isfinite(grad))
    np.testing.assert_allclose(loss_value,
                               _triplet_reference(labels, emb, 0.5, mining, "l2"), rtol=1e-4,
                               atol=1e-6)


def test_triplet_per_anchor_values_average_to_the_loss():
    labels = np.array([0, 0, 1, 1, 2])
    emb = np.random.default_rng(4).normal(size=(5, 3)).astype("float32")
    loss = TripletLoss(mining="batch_hard", margin=1.0)
    rows = per_sample(loss, labels, emb)
    assert rows.shape == (5,)
    assert rows[4] == 0.0  # label 2 has no positive
    np.testing.assert_allclose(rows.mean(), _triplet_reference(labels, emb, 1.0, "batch_hard",
                                                               "squared_l2"), rtol=1e-5)


def test_triplet_rejects_bad_arguments():
    with pytest.raises(ValueError, match="mining must be one of"):
        TripletLoss(mining="hardest")
    with pytest.raises(ValueError, match="margin"):
        TripletLoss(margin=-0.1)
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        TripletLoss()(np.zeros((2,)), np.zeros((2, 3, 1), "float32"))


def _coupled_clusters_reference(labels, emb, margin):
    emb = emb.astype("float64")
    total = 0.0
    for c in np.unique(labels):
        members = emb[labels == c]
        others = emb[labels != c]
        if len(members) < 2 or len(others) == 0:
            continue
        centre = members.mean(axis=0)
        nearest = np.min(np.sum((others - centre) ** 2, axis=1))
        for z in members:
            total += 0.5 * max(np.sum((z - centre) ** 2) - nearest + margin, 0.0)
    return total / len(labels)


@pytest.mark.parametrize("margin", [0.2, 1.0])
def test_coupled_clusters_matches_numpy(margin):
    rng = np.random.default_rng(5)
    labels = np.array([0, 0, 0, 1, 1, 2, 3, 3])  # class 2 is a singleton
    emb = rng.normal(size=(8, 4)).astype("float32")
    loss = CoupledClustersLoss(margin=margin)
    expected = _coupled_clusters_reference(labels, emb, margin)
    assert expected > 0
    np.testing.assert_allclose(value(loss, labels, emb), expected, rtol=1e-5)
    _, grad = loss_value_and_grad(loss, labels, emb)
    assert np.all(np.isfinite(grad))
    loss_value, grad = loss_value_and_grad(loss, np.ones(4), emb[:4])
    assert loss_value == 0.0 and np.all(np.isfinite(grad))
