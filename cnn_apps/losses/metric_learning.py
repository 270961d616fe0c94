"""Metric-learning losses: contrastive, double-margin, triplet, coupled clusters.

Survey S0 §3.4.3-§3.4.4 (SEED_CHECKLIST LS-06 to LS-09). Every loss works on a batch of
embeddings; ``call`` returns one value per sample (pair or anchor) so ``sample_weight`` and
Keras' reductions behave as for any other loss.
"""

from __future__ import annotations

import keras
from keras import ops

from cnn_apps.losses._common import (REDUCTION_DEFAULT, check_choice, check_non_negative,
                                     check_rank, integer_labels, pairwise_distances,
                                     safe_sqrt)

__all__ = ["ContrastiveLoss", "DoubleMarginContrastiveLoss", "TripletLoss",
           "CoupledClustersLoss", "deep_supervision"]

_DISTANCES = ("squared_l2", "l2")
_PAIR_INPUTS = ("pairs", "distance")


def _pair_distance(y_pred, distance, inputs):
    """Distance d of each pair from stacked embeddings (N, 2, D) or a given distance (N,)/(N, 1)."""
    if inputs == "distance":
        check_rank("y_pred (pair distances)", y_pred, (1, 2), "(N,) or (N, 1)")
        return ops.reshape(y_pred, (-1,))
    check_rank("y_pred (embedding pairs)", y_pred, (3,), "(N, 2, D)")
    if ops.shape(y_pred)[1] != 2:
        raise ValueError("y_pred must stack the two embeddings of each pair, shape (N, 2, D), "
                         f"got shape {tuple(ops.shape(y_pred))}")
    squared = ops.sum(ops.square(y_pred[:, 0] - y_pred[:, 1]), axis=-1)
    return squared if distance == "squared_l2" else safe_sqrt(squared)


def _match(y_true, dtype):
    check_rank("y_true (1 = matching pair)", y_true, (1, 2), "(N,) or (N, 1)")
    return ops.cast(ops.reshape(y_true, (-1,)), dtype)


@keras.saving.register_keras_serializable(package="cnn_apps")
class ContrastiveLoss(keras.losses.Loss):
    """Contrastive loss for Siamese networks on matching (y=1) / non-matching (y=0) pairs.

    Survey S0 §3.4.3 (SEED_CHECKLIST LS-06; errata §19.5 on the distance). Per pair:

        distance="squared_l2" (S0):  ℓ = ½ [y·d + (1−y)·max(m − d, 0)],   d = ‖z_a − z_b‖²
        distance="l2" (Hadsell):      ℓ = ½ [y·d² + (1−y)·max(m − d, 0)²], d = ‖z_a − z_b‖

    and the default reduction gives L = (1/2N) Σ_i [...]. The margin m is on the squared
    distance in the first form and on the Euclidean distance in the second, so the two are
    not interchangeable (S1 uses the Euclidean form). The Euclidean distance has a zero
    gradient (not NaN) for identical embeddings.

    Args:
        margin: m ≥ 0.
        distance: "squared_l2" (default, S0) or "l2" (Hadsell et al.).
        inputs: "pairs" — y_pred stacks the two embeddings, shape (N, 2, D) (e.g.
            ``keras.ops.stack([za, zb], axis=1)`` of the two towers); or "distance" — y_pred
            is d itself, shape (N,) or (N, 1), already in the form ``distance`` names.

    y_true: 1 for a matching pair, 0 otherwise, shape (N,) or (N, 1).

    Example:
        pairs = keras.ops.stack([tower(x_a), tower(x_b)], axis=1)  # shared tower, (N, 2, D)
        model = keras.Model([x_a, x_b], pairs)
        model.compile("adam", loss=ContrastiveLoss(margin=1.0))
    """

    def __init__(self, margin=1.0, distance="squared_l2", inputs="pairs",
                 name="contrastive_loss", reduction=REDUCTION_DEFAULT, dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.margin = check_non_negative("margin", margin)
        self.distance = check_choice("distance", distance, _DISTANCES)
        self.inputs = check_choice("inputs", inputs, _PAIR_INPUTS)

    def call(self, y_true, y_pred):
        d = _pair_distance(y_pred, self.distance, self.inputs)
        y = _match(y_true, d.dtype)
        if self.distance == "squared_l2":
            per_pair = y * d + (1.0 - y) * ops.relu(self.margin - d)
        else:
            per_pair = y * ops.square(d) + (1.0 - y) * ops.square(ops.relu(self.margin - d))
        return 0.5 * per_pair

    def get_config(self):
        config = super().get_config()
        config.update({"margin": self.margin, "distance": self.distance,
                       "inputs": self.inputs})
        return config


@keras.saving.register_keras_serializable(package="cnn_apps")
class DoubleMarginContrastiveLoss(keras.losses.Loss):
    """Double-margin contrastive loss: matching pairs pulled inside m1, others pushed beyond m2.

    Survey S0 §3.4.3 (Lin et al.; SEED_CHECKLIST LS-07). Per pair:

        ℓ = y·max(d − m1, 0) + (1 − y)·max(m2 − d, 0)

    averaged over the N pairs by the default reduction (no ½ factor). d is the squared L2
    distance by default (as in S0's single-margin form) or the Euclidean one with
    ``distance="l2"``; the margins are in the same units as d. The seed's authors apply it
    "at every layer" and found m1 = m2 = m works; use ``deep_supervision`` to attach it to
    several layers' embeddings.

    Args:
        m1: margin of matching pairs (≥ 0); m2: margin of non-matching pairs (≥ m1).
        distance, inputs: as in ``ContrastiveLoss``.

    y_true: 1 for a matching pair, 0 otherwise. y_pred: (N, 2, D) pairs or (N,) distances.

    Example:
        loss = DoubleMarginContrastiveLoss(m1=0.5, m2=0.5)
        model.compile("adam", **deep_supervision(loss, ["pairs_l3", "pairs_l4"]))
        model.fit(x, {"pairs_l3": y, "pairs_l4": y})
    """

    def __init__(self, m1, m2, distance="squared_l2", inputs="pairs",
                 name="double_margin_contrastive_loss", reduction=REDUCTION_DEFAULT,
                 dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.m1 = check_non_negative("m1", m1)
        self.m2 = check_non_negative("m2", m2)
        if self.m1 > self.m2:
            raise ValueError(f"m1 (matching-pair margin) must be <= m2 (non-matching margin), "
                             f"got m1={m1!r}, m2={m2!r}")
        self.distance = check_choice("distance", distance, _DISTANCES)
        self.inputs = check_choice("inputs", inputs, _PAIR_INPUTS)

    def call(self, y_true, y_pred):
        d = _pair_distance(y_pred, self.distance, self.inputs)
        y = _match(y_true, d.dtype)
        return y * ops.relu(d - self.m1) + (1.0 - y) * ops.relu(self.m2 - d)

    def get_config(self):
        config = super().get_config()
        config.update({"m1": self.m1, "m2": self.m2, "distance": self.distance,
                       "inputs": self.inputs})
        return config


def deep_supervision(loss, outputs, weights=None):
    """Attach one loss to several model outputs whose weighted losses Keras sums (LS-07).

    S0 §3.4.3: the double-margin loss is "defined for every layer l and the backpropagations
    for the loss of individual layers are performed at the same time", i.e. the total is
    Σ_l w_l·L(y, o_l). Keras' ``compile`` already sums per-output losses times
    ``loss_weights``; this returns the two arguments for that, with an independent copy of
    ``loss`` per output.

    Args:
        loss: a ``keras.losses.Loss`` (copied per output), a loss function or a Keras loss name.
        outputs: the model's output names (dict form) or their number (list form).
        weights: one weight per output (default all 1).

    Returns:
        ``{"loss": ..., "loss_weights": ...}`` to pass as ``model.compile(**result)``; the
        targets are then given per output, e.g. ``{name: y for name in names}`` or ``[y] * n``.

    Example:
        model = keras.Model(x, {"emb3": e3, "emb5": e5})
        model.compile("adam", **deep_supervision(ContrastiveLoss(), ["emb3", "emb5"], [0.5, 1]))
    """
    if isinstance(outputs, bool) or not isinstance(outputs, (int, list, tuple)):
        raise ValueError("outputs must be a list of output names or a positive number of "
                         f"outputs, got {outputs!r}")
    if isinstance(outputs, int):
        if outputs < 1:
            raise ValueError(f"outputs must be >= 1, got {outputs!r}")
        names = None
        count = outputs
    else:
        names = list(outputs)
        if not names or not all(isinstance(n, str) for n in names):
            raise ValueError(f"outputs must be a non-empty list of output names, got {outputs!r}")
        count = len(names)
    if weights is None:
        weights = [1.0] * count
    weights = [float(w) for w in weights]
    if len(weights) != count:
        raise ValueError(f"weights must have one entry per output ({count}), got {len(weights)}")
    if isinstance(loss, keras.losses.Loss):
        copies = [loss.__class__.from_config(loss.get_config()) for _ in range(count)]
    elif isinstance(loss, str) or callable(loss):
        keras.losses.get(loss)  # fails early, naming the loss, if Keras does not know it
        copies = [loss] * count
    else:
        raise ValueError(f"loss must be a keras.losses.Loss, a loss function or a Keras loss "
                         f"name, got {loss!r}")
    if names is None:
        return {"loss": copies, "loss_weights": weights}
    return {"loss": dict(zip(names, copies)), "loss_weights": dict(zip(names, weights))}


_MINING = ("none", "batch_all", "batch_hard", "semi_hard")


@keras.saving.register_keras_serializable(package="cnn_apps")
class TripletLoss(keras.losses.Loss):
    """Triplet loss on a batch of labelled embeddings, with in-batch triplet mining.

    Survey S0 §3.4.4 (SEED_CHECKLIST LS-08): L = (1/N) Σ max(d(a,p) − d(a,n) + m, 0), where
    p shares a's label, n does not, d is the squared L2 distance (default) or the Euclidean
    one (``distance="l2"``, zero gradient at identical embeddings). The batch's triplets are
    formed online; ``mining`` chooses which ones are averaged:

    * "none": every valid (a, p, n), a ≠ p, averaged over all of them (zero-loss included).
    * "batch_all": the same triplets, averaged over those with positive loss only (Hermans
      et al.) — the only difference from "none" is the denominator.
    * "batch_hard": per anchor, its farthest positive and nearest negative; averaged over the
      anchors that have both (Hermans et al.).
    * "semi_hard": per (a, p) pair, the nearest negative with d(a,p) < d(a,n) < d(a,p) + m
      (FaceNet); when no negative lies in that band, the hardest negative (smallest d(a,n))
      is used instead. Averaged over the (a, p) pairs whose anchor has a negative.

    Anchors without a positive or a negative contribute nothing; a batch with no valid
    triplet (e.g. one label only) gives loss 0 with a zero gradient. ``call`` returns per
    anchor its share of the mined terms scaled by N / (number of averaged terms), so the
    default mean over the N anchors equals the averages above and ``sample_weight`` weights
    anchors.

    Args:
        margin: m ≥ 0. mining: see above. distance: "squared_l2" or "l2".

    y_true: integer labels (N,) or (N, 1). y_pred: embeddings (N, D) (e.g. L2-normalized).

    Example:
        emb = keras.layers.UnitNormalization()(keras.layers.Dense(64)(features))
        model.compile("adam", loss=TripletLoss(margin=0.2, mining="semi_hard"))
        model.fit(images, labels, batch_size=64)
    """

    def __init__(self, margin=0.2, mining="none", distance="squared_l2", name="triplet_loss",
                 reduction=REDUCTION_DEFAULT, dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.margin = check_non_negative("margin", margin)
        self.mining = check_choice("mining", mining, _MINING)
        self.distance = check_choice("distance", distance, _DISTANCES)

    def call(self, y_true, y_pred):
        check_rank("y_pred (embeddings)", y_pred, (2,), "(N, D)")
        labels = integer_labels(y_true)
        d = pairwise_distances(y_pred, self.distance)
        dtype = d.dtype
        index = ops.arange(ops.shape(labels)[0])
        same = ops.equal(ops.expand_dims(labels, 1), ops.expand_dims(labels, 0))
        not_self = ops.not_equal(ops.expand_dims(index, 1), ops.expand_dims(index, 0))
        positive = ops.logical_and(same, not_self)
        negative = ops.logical_not(same)
        has_negative = ops.any(negative, axis=1)
        # Stands in for "no candidate" in masked minima; never selected for a valid term.
        far = ops.stop_gradient(ops.max(d) + self.margin + 1.0)
        zero = ops.zeros_like(d)

        if self.mining in ("none", "batch_all"):
            gap = ops.expand_dims(d, 2) - ops.expand_dims(d, 1) + self.margin  # (a, p, n)
            valid = ops.logical_and(ops.expand_dims(positive, 2), ops.expand_dims(negative, 1))
            terms = ops.where(valid, ops.relu(gap), ops.zeros_like(gap))
            per_anchor = ops.sum(terms, axis=(1, 2))
            counted = valid if self.mining == "none" else ops.greater(terms, 0.0)
            count = ops.sum(ops.cast(counted, dtype))
        elif self.mining == "batch_hard":
            hardest_positive = ops.max(ops.where(positive, d, zero), axis=1)
            hardest_negative = ops.min(ops.where(negative, d, far), axis=1)
            valid = ops.logical_and(ops.any(positive, axis=1), has_negative)
            hinge = ops.relu(hardest_positive - hardest_negative + self.margin)
            per_anchor = ops.where(valid, hinge, ops.zeros_like(hinge))
            count = ops.sum(ops.cast(valid, dtype))
        else:  # semi_hard
            d_ap = ops.expand_dims(d, 2)
            d_an = ops.expand_dims(d, 1)
            in_band = ops.logical_and(ops.greater(d_an, d_ap),
                                      ops.less(d_an, d_ap + self.margin))
            semi_hard = ops.logical_and(ops.expand_dims(negative, 1), in_band)
            nearest_semi_hard = ops.min(ops.where(semi_hard, d_an, far), axis=2)  # (a, p)
            hardest_negative = ops.min(ops.where(negative, d, far), axis=1, keepdims=True)
            chosen = ops.where(ops.any(semi_hard, axis=2), nearest_semi_hard, hardest_negative)
            valid = ops.logical_and(positive, ops.expand_dims(has_negative, 1))
            terms = ops.where(valid, ops.relu(d - chosen + self.margin), zero)
            per_anchor = ops.sum(terms, axis=1)
            count = ops.sum(ops.cast(valid, dtype))

        batch = ops.cast(ops.shape(labels)[0], dtype)
        # max(count, 1): the numerator is 0 when count is 0, and the gradient stays finite.
        return per_anchor * batch / ops.maximum(count, 1.0)

    def get_config(self):
        config = super().get_config()
        config.update({"margin": self.margin, "mining": self.mining,
                       "distance": self.distance})
        return config


@keras.saving.register_keras_serializable(package="cnn_apps")
class CoupledClustersLoss(keras.losses.Loss):
    """Coupled clusters loss: pull each class to its centre, past the negative nearest to it.

    Survey S0 §3.4.4 (Liu et al.; SEED_CHECKLIST LS-09). For every class c in the batch with
    at least two members (the positive set), with centre c_p = mean of its embeddings and z_*
    the other-class embedding nearest to c_p:

        ℓ_i = ½ · max(‖z_i − c_p‖² − ‖z_* − c_p‖² + m, 0)   for every member i of c

    and L = (1/N) Σ_i ℓ_i over the whole batch (default reduction): members of singleton
    classes, and every sample of a batch without a second class, contribute 0 but count in
    N. The centre is part of the graph (gradients flow through it).

    Args:
        margin: m ≥ 0.

    y_true: integer labels (N,) or (N, 1). y_pred: embeddings (N, D).

    Example:
        model = keras.Model(images, keras.layers.Dense(128)(features))
        model.compile("adam", loss=CoupledClustersLoss(margin=1.0))
        model.fit(images, identities, batch_size=64)
    """

    def __init__(self, margin=1.0, name="coupled_clusters_loss", reduction=REDUCTION_DEFAULT,
                 dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.margin = check_non_negative("margin", margin)

    def call(self, y_true, y_pred):
        check_rank("y_pred (embeddings)", y_pred, (2,), "(N, D)")
        labels = integer_labels(y_true)
        same_bool = ops.equal(ops.expand_dims(labels, 1), ops.expand_dims(labels, 0))
        same = ops.cast(same_bool, y_pred.dtype)
        members = ops.sum(same, axis=1)
        centres = ops.matmul(same, y_pred) / ops.expand_dims(members, 1)  # own class centre
        to_own_centre = ops.sum(ops.square(y_pred - centres), axis=-1)
        centre_to_all = ops.sum(ops.square(ops.expand_dims(centres, 1)
                                           - ops.expand_dims(y_pred, 0)), axis=-1)
        negative = ops.logical_not(same_bool)
        far = ops.stop_gradient(ops.max(centre_to_all) + self.margin + 1.0)
        nearest_negative = ops.min(ops.where(negative, centre_to_all, far), axis=1)
        valid = ops.logical_and(ops.greater_equal(members, 2.0), ops.any(negative, axis=1))
        hinge = 0.5 * ops.relu(to_own_centre - nearest_negative + self.margin)
        return ops.where(valid, hinge, ops.zeros_like(hinge))

    def get_config(self):
        config = super().get_config()
        config.update({"margin": self.margin})
        return config
