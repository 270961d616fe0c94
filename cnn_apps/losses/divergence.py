"""Divergences between probability vectors (survey S0 §3.4.5; SEED_CHECKLIST LS-10, LS-11)."""

from __future__ import annotations

import keras
from keras import ops

from cnn_apps.losses._common import REDUCTION_DEFAULT, check_positive

__all__ = ["JensenShannonDivergence", "KLDivergence"]

# LS-10: Keras' built-in is exactly D_KL(p‖q) = Σ p log(p/q) with p = y_true, clipped to
# [epsilon, 1]; re-exported so every survey loss is reachable from cnn_apps.losses.
KLDivergence = keras.losses.KLDivergence


@keras.saving.register_keras_serializable(package="cnn_apps")
class JensenShannonDivergence(keras.losses.Loss):
    """Jensen-Shannon divergence between two probability vectors (natural log).

    Survey S0 §3.4.5 (SEED_CHECKLIST LS-11), with M = (p + q)/2:

        D_JS(p‖q) = ½ Σ_x p log(p/M) + ½ Σ_x q log(q/M)

    p = y_true, q = y_pred (symmetric), both clipped to [epsilon, 1] and not renormalized —
    pass distributions (e.g. softmax outputs) along the last axis. 0 ≤ D_JS ≤ log 2; it equals
    ``scipy.spatial.distance.jensenshannon(p, q) ** 2`` (which is the square root of D_JS).
    ``call`` returns one value per distribution (the sum over the last axis); the default
    reduction averages over the rest.

    Args:
        epsilon: clipping floor > 0 that keeps log finite for zero probabilities.

    Example:
        probs = keras.layers.Softmax()(logits)
        model.compile("adam", loss=JensenShannonDivergence())
        model.fit(x, target_distributions)
    """

    def __init__(self, epsilon=1e-7, name="jensen_shannon_divergence",
                 reduction=REDUCTION_DEFAULT, dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.epsilon = check_positive("epsilon", epsilon)

    def call(self, y_true, y_pred):
        p = ops.clip(ops.cast(y_true, y_pred.dtype), self.epsilon, 1.0)
        q = ops.clip(y_pred, self.epsilon, 1.0)
        log_m = ops.log(0.5 * (p + q))
        kl_pm = ops.sum(p * (ops.log(p) - log_m), axis=-1)
        kl_qm = ops.sum(q * (ops.log(q) - log_m), axis=-1)
        return 0.5 * (kl_pm + kl_qm)

    def get_config(self):
        config = super().get_config()
        config.update({"epsilon": self.epsilon})
        return config
