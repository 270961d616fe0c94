"""Large-margin classification layers (survey S0 §3.4.2, SEED_CHECKLIST LS-05).

The L-Softmax loss of Liu et al. is a softmax cross-entropy over *modified logits*: the logit
of the true class gets an angular margin. The modification needs the label, so it lives in a
layer (``LSoftmaxDense``) that sits where the last ``Dense`` of a classifier would be; the
loss itself is then ordinary sparse categorical cross-entropy from logits
(``cnn_apps.losses.LSoftmaxLoss``).
"""

from __future__ import annotations

import math

import keras
from keras import ops

__all__ = ["LSoftmaxDense", "large_margin_psi"]

# Keeps the norm's gradient finite for an all-zero feature vector or weight column.
_NORM_EPS = 1e-12


def _chebyshev_cos_multiple(cos_theta, margin):
    """cos(m·θ) as the Chebyshev polynomial T_m(cos θ), by the recurrence T_{n+1} = 2xT_n − T_{n−1}.

    A polynomial in cos θ has a finite gradient everywhere, including cos θ = ±1 where
    d acos/dx is infinite, so no acos is needed on the differentiable path.
    """
    previous, current = ops.ones_like(cos_theta), cos_theta
    for _ in range(margin - 1):
        previous, current = current, 2.0 * cos_theta * current - previous
    return current


def large_margin_psi(cos_theta, margin):
    """L-Softmax target function ψ(θ) = (−1)^k cos(mθ) − 2k for θ ∈ [kπ/m, (k+1)π/m] (LS-05).

    Takes cos θ (any shape, clipped to [−1, 1]) and an integer margin m ≥ 1; returns ψ(θ).
    k is found without acos: k = #{j ∈ 1..m−1 : cos θ < cos(jπ/m)} (cos is decreasing on
    [0, π]), and cos(mθ) is the Chebyshev polynomial T_m(cos θ), so the result is
    differentiable everywhere in cos θ. ψ is continuous and decreasing on [0, π], ψ(0) = 1,
    ψ(π) = 1 − 2m; for m = 1 it is cos θ.
    """
    margin = _check_margin(margin)
    cos_theta = ops.clip(cos_theta, -1.0, 1.0)
    k = ops.zeros_like(cos_theta)
    for j in range(1, margin):
        threshold = math.cos(j * math.pi / margin)
        k = k + ops.cast(ops.less(cos_theta, threshold), cos_theta.dtype)
    # (−1)^k for an integer-valued float k.
    sign = 1.0 - 2.0 * ops.mod(k, 2.0)
    return sign * _chebyshev_cos_multiple(cos_theta, margin) - 2.0 * k


def _check_margin(margin):
    if isinstance(margin, bool) or int(margin) != margin or margin < 1:
        raise ValueError(f"margin must be an integer >= 1 (the angular multiplier m), "
                         f"got {margin!r}")
    return int(margin)


@keras.saving.register_keras_serializable(package="cnn_apps")
class LSoftmaxDense(keras.layers.Layer):
    """Bias-free classifier layer whose training logits carry the L-Softmax angular margin.

    Survey S0 §3.4.2 (Liu et al., Large-Margin Softmax; SEED_CHECKLIST LS-05). With weights
    W = [w_1 … w_C] (d × C, no bias) and a feature vector a, the logits are

        f_j = ‖w_j‖‖a‖cos θ_j = a·w_j                       (every class at inference)
        f_y = ‖w_y‖‖a‖ (λ cos θ_y + ψ(θ_y)) / (1 + λ)        (true class y, training only)
        ψ(θ) = (−1)^k cos(mθ) − 2k,  θ ∈ [kπ/m, (k+1)π/m],  k ∈ {0, …, m−1}

    and the softmax cross-entropy of those logits is the L-Softmax loss. m = 1 gives an
    ordinary bias-free ``Dense``. ``lam`` (λ ≥ 0) is the annealing weight commonly used to
    start training (large λ) and decayed towards 0; the default 0 is the paper's form.
    cos(mθ) is evaluated as the Chebyshev polynomial T_m(cos θ) with cos θ clipped to
    [−1, 1], and k by comparing cos θ with cos(jπ/m), so gradients stay finite at
    cos θ = ±1 (no acos). The margin term is computed in float32 and cast to the compute
    dtype, because T_m amplifies bfloat16 rounding.

    Args:
        num_classes: number of classes C (columns of W).
        margin: integer angular margin m ≥ 1.
        lam: annealing weight λ ≥ 0 (0 = the paper's form).
        kernel_initializer, kernel_regularizer: as in ``keras.layers.Dense``.

    Call:
        ``layer(features)`` → plain logits a·W, shape (batch, C).
        ``layer([features, labels], training=True)`` → the margin logits above; labels are
        integer class ids of shape (batch,) or (batch, 1). With ``training`` false (inference,
        evaluation) the labels are ignored and the plain logits are returned, and called with
        features only the layer always returns plain logits.

    Example:
        feats, labels = keras.Input((64,)), keras.Input((), dtype="int32")
        logits = LSoftmaxDense(10, margin=3)([feats, labels])
        model = keras.Model([feats, labels], logits)  # compile with LSoftmaxLoss()
    """

    def __init__(self, num_classes, margin=2, lam=0.0, kernel_initializer="glorot_uniform",
                 kernel_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(num_classes, bool) or int(num_classes) != num_classes or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
        if lam < 0:
            raise ValueError(f"lam must be >= 0 (annealing weight), got {lam!r}")
        self.num_classes = int(num_classes)
        self.margin = _check_margin(margin)
        self.lam = float(lam)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)

    @staticmethod
    def _feature_shape(input_shape):
        if isinstance(input_shape, (list, tuple)) and input_shape and isinstance(
                input_shape[0], (list, tuple)):
            if len(input_shape) != 2:
                raise ValueError("LSoftmaxDense expects features or [features, labels], got "
                                 f"{len(input_shape)} inputs")
            return tuple(input_shape[0])
        return tuple(input_shape)

    def build(self, input_shape):
        feature_shape = self._feature_shape(input_shape)
        if len(feature_shape) != 2 or feature_shape[-1] is None:
            raise ValueError("LSoftmaxDense expects features of shape (batch, d) with a known d, "
                             f"got {feature_shape}")
        self.kernel = self.add_weight(name="kernel",
                                      shape=(feature_shape[-1], self.num_classes),
                                      initializer=self.kernel_initializer,
                                      regularizer=self.kernel_regularizer)

    def call(self, inputs, training=None):
        if isinstance(inputs, (list, tuple)):
            features, labels = inputs
        else:
            features, labels = inputs, None
        features = ops.cast(features, self.compute_dtype)
        kernel = ops.cast(self.kernel, self.compute_dtype)
        logits = ops.matmul(features, kernel)
        if labels is None or not training:
            return logits

        # Margin logit of the true class, in float32 (see the class docstring).
        labels = ops.reshape(ops.cast(labels, "int32"), (-1,))
        features32 = ops.cast(features, "float32")
        kernel32 = ops.cast(self.kernel, "float32")
        target_columns = ops.take(ops.transpose(kernel32), labels, axis=0)  # (batch, d)
        dot = ops.sum(features32 * target_columns, axis=-1)
        feature_norm = ops.sqrt(ops.maximum(ops.sum(ops.square(features32), axis=-1), _NORM_EPS))
        weight_norm = ops.sqrt(ops.maximum(ops.sum(ops.square(target_columns), axis=-1),
                                           _NORM_EPS))
        norms = feature_norm * weight_norm
        psi = large_margin_psi(dot / norms, self.margin)
        target_logit = (self.lam * dot + norms * psi) / (1.0 + self.lam)

        one_hot = ops.one_hot(labels, self.num_classes, dtype="float32")
        logits32 = ops.cast(logits, "float32")
        current = ops.sum(logits32 * one_hot, axis=-1)
        adjusted = logits32 + one_hot * ops.expand_dims(target_logit - current, -1)
        return ops.cast(adjusted, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        feature_shape = self._feature_shape(input_shape)
        return (feature_shape[0], self.num_classes)

    def get_config(self):
        config = super().get_config()
        config.update({
            "num_classes": self.num_classes,
            "margin": self.margin,
            "lam": self.lam,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
        })
        return config
