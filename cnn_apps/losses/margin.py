"""Large-margin classification losses (survey S0 §3.4.1-§3.4.2; SEED_CHECKLIST LS-04, LS-05)."""

from __future__ import annotations

import keras
from keras import ops

from cnn_apps.losses._common import (REDUCTION_DEFAULT, check_choice, check_non_negative,
                                     check_rank, integer_labels)

__all__ = ["MulticlassHinge", "LSoftmaxLoss"]


@keras.saving.register_keras_serializable(package="cnn_apps")
class MulticlassHinge(keras.losses.Loss):
    """Multi-class (one-vs-rest) hinge loss on raw scores; p=2 is the L2-SVM loss.

    Survey S0 §3.4.1, Eq. (16) (SEED_CHECKLIST LS-04):

        L = (1/N) Σ_i Σ_j max(0, Δ − δ(y_i, j)·o_ij)^p,   δ = +1 if j = y_i else −1

    with o_ij the raw score (e.g. wᵀx of a linear SVM head, no softmax), Δ the margin (1 in
    the survey) and p = 1 (hinge, L1-loss) or p = 2 (squared hinge, L2-SVM: differentiable,
    penalizes margin violations more). The per-sample value returned by ``call`` is the sum
    over the C classes; the default reduction averages it over the batch. This differs from
    ``keras.losses.CategoricalHinge`` (Crammer-Singer: max over the wrong classes) and from
    ``keras.losses.Hinge`` (mean, not sum, over classes, and {−1, 1} targets).

    Args:
        p: 1 or 2.
        margin: Δ ≥ 0.

    y_true: integer labels, shape (N,) or (N, 1). y_pred: scores, shape (N, C).

    Example:
        head = keras.layers.Dense(10)(features)          # raw scores, no softmax
        model.compile("adam", loss=MulticlassHinge(p=2))  # L2-SVM
    """

    def __init__(self, p=1, margin=1.0, name="multiclass_hinge", reduction=REDUCTION_DEFAULT,
                 dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.p = int(check_choice("p", p, (1, 2)))
        self.margin = check_non_negative("margin", margin)

    def call(self, y_true, y_pred):
        check_rank("y_pred (class scores)", y_pred, (2,), "(N, C)")
        labels = integer_labels(y_true)
        sign = 2.0 * ops.one_hot(labels, ops.shape(y_pred)[-1], dtype=y_pred.dtype) - 1.0
        violation = ops.relu(self.margin - sign * y_pred)
        if self.p == 2:
            violation = ops.square(violation)
        return ops.sum(violation, axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update({"p": self.p, "margin": self.margin})
        return config


@keras.saving.register_keras_serializable(package="cnn_apps")
class LSoftmaxLoss(keras.losses.Loss):
    """L-Softmax loss: softmax cross-entropy over the margin logits of ``LSoftmaxDense``.

    Survey S0 §3.4.2 (Liu et al.; SEED_CHECKLIST LS-05):

        L = −(1/N) Σ_i log( e^{f_{y_i}} / Σ_j e^{f_j} ),
        f_{y_i} = ‖w_{y_i}‖‖a_i‖ψ(θ_{y_i}),  f_j = ‖w_j‖‖a_i‖cos θ_j (j ≠ y_i)

    The angular margin needs the label inside the forward pass, so it is applied by the layer
    ``cnn_apps.layers.LSoftmaxDense`` (which takes ``[features, labels]``); this loss is then
    exactly sparse categorical cross-entropy from logits. Wiring: the model takes the labels
    as a second input, the same labels are the fit target, and for inference a second model
    ``keras.Model(features_input, layer(features))`` shares the layer's weights (or the same
    model is called with ``training=False``, where the labels are ignored).

    y_true: integer labels, shape (N,) or (N, 1). y_pred: logits, shape (N, C).

    Example:
        feats, labels = keras.Input((64,)), keras.Input((), dtype="int32")
        model = keras.Model([feats, labels], LSoftmaxDense(10, margin=2)([feats, labels]))
        model.compile("adam", loss=LSoftmaxLoss()); model.fit([x, y], y)
    """

    def __init__(self, name="lsoftmax_loss", reduction=REDUCTION_DEFAULT, dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def call(self, y_true, y_pred):
        check_rank("y_pred (logits)", y_pred, (2,), "(N, C)")
        labels = integer_labels(y_true)
        return ops.sparse_categorical_crossentropy(labels, y_pred, from_logits=True)
