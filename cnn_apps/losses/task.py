"""Task losses used by the application pipelines: boxes, dense detection, sequences, masks, pose.

These are not in the seeds' loss section (SEED_CHECKLIST §7 "not in any seed": CTC, focal,
smooth-L1, Dice) but the survey's task families need them (S0 §5.2 detection, §5.4 pose,
§5.5 text, §5.8 segmentation, §5.9 speech).
"""

from __future__ import annotations

import keras
from keras import ops

from cnn_apps.losses._common import (REDUCTION_DEFAULT, check_non_negative, check_positive,
                                     check_rank)

__all__ = ["SmoothL1", "FocalLoss", "CTCLoss", "DiceLoss", "HeatmapMSE"]


@keras.saving.register_keras_serializable(package="cnn_apps")
class SmoothL1(keras.losses.Loss):
    """Smooth-L1 box-regression loss: quadratic near 0, linear beyond δ (Fast R-CNN, SSD).

    Per coordinate x = y_pred − y_true (Fast/Faster R-CNN form; SEED_CHECKLIST LS-18 [ext]):

        s(x) = 0.5·x²/δ   if |x| < δ,   |x| − 0.5·δ   otherwise

    summed over the last axis (the box coordinates) and averaged over the boxes (all other
    axes) by the default reduction. Relation to Keras: s = huber_δ(x)/δ element-wise, and
    ``keras.losses.Huber`` *averages* over the last axis, so SmoothL1(δ) = (C/δ)·Huber(δ) for
    C coordinates. δ = 1 gives the R-CNN loss; SSD/Faster R-CNN variants use δ = 1/σ².

    Args:
        delta: δ > 0.

    y_true, y_pred: box encodings, shape (..., C) (e.g. (N, anchors, 4)).

    Example:
        boxes = keras.layers.Dense(4 * anchors)(features)
        loss = SmoothL1(delta=1.0)
        model.compile("adam", loss={"boxes": loss, "classes": FocalLoss()})
    """

    def __init__(self, delta=1.0, name="smooth_l1", reduction=REDUCTION_DEFAULT, dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.delta = check_positive("delta", delta)

    def call(self, y_true, y_pred):
        error = ops.abs(y_pred - ops.cast(y_true, y_pred.dtype))
        quadratic = 0.5 * ops.square(error) / self.delta
        linear = error - 0.5 * self.delta
        return ops.sum(ops.where(ops.less(error, self.delta), quadratic, linear), axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update({"delta": self.delta})
        return config


@keras.saving.register_keras_serializable(package="cnn_apps")
class FocalLoss(keras.losses.Loss):
    """Sigmoid focal loss (Lin et al., RetinaNet): cross-entropy down-weighting easy examples.

    Per class (independent sigmoids, one-hot or multi-label targets y ∈ [0, 1]):

        FL = −α_t (1 − p_t)^γ log p_t,   p_t = p if y = 1 else 1 − p,   α_t = α if y = 1 else 1 − α

    written for soft targets as −[y·α(1−p)^γ log p + (1−y)(1−α)p^γ log(1−p)], averaged over
    the last axis (the classes) like ``keras.losses.BinaryCrossentropy``, so γ = 0, α = 0.5 is
    exactly 0.5·BCE. RetinaNet's normalization (sum over anchors / number of positive
    anchors) is the caller's choice of ``reduction``/``sample_weight``.

    Args:
        alpha: α ∈ [0, 1], weight of the positive class.
        gamma: γ ≥ 0, focusing parameter.
        from_logits: y_pred are logits (stable log-sigmoid) instead of probabilities
            (clipped to [1e-7, 1 − 1e-7]).

    Example:
        scores = keras.layers.Dense(num_classes)(features)        # logits per anchor
        model.compile("adam", loss=FocalLoss(from_logits=True))
        model.fit(x, one_hot_targets)
    """

    def __init__(self, alpha=0.25, gamma=2.0, from_logits=False, name="focal_loss",
                 reduction=REDUCTION_DEFAULT, dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.alpha = check_non_negative("alpha", alpha)
        if self.alpha > 1:
            raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
        self.gamma = check_non_negative("gamma", gamma)
        self.from_logits = bool(from_logits)

    def call(self, y_true, y_pred):
        y = ops.cast(y_true, y_pred.dtype)
        if self.from_logits:
            log_p = ops.log_sigmoid(y_pred)
            log_not_p = ops.log_sigmoid(-y_pred)
            p, not_p = ops.sigmoid(y_pred), ops.sigmoid(-y_pred)
        else:
            eps = keras.config.epsilon()
            p = ops.clip(y_pred, eps, 1.0 - eps)
            not_p = 1.0 - p
            log_p, log_not_p = ops.log(p), ops.log(not_p)
        if self.gamma == 0:
            positive_factor = negative_factor = 1.0
        else:
            # The floor keeps (·)^γ differentiable when a sigmoid saturates to exactly 0.
            positive_factor = ops.power(ops.maximum(not_p, 1e-30), self.gamma)
            negative_factor = ops.power(ops.maximum(p, 1e-30), self.gamma)
        loss = -(y * self.alpha * positive_factor * log_p
                 + (1.0 - y) * (1.0 - self.alpha) * negative_factor * log_not_p)
        return ops.mean(loss, axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update({"alpha": self.alpha, "gamma": self.gamma,
                       "from_logits": self.from_logits})
        return config


def _keras_mask(tensor):
    # Keras attaches a propagated mask to a layer's output; Loss.__call__ reads it the same way.
    from keras.src.backend import get_keras_mask

    return get_keras_mask(tensor)


_CTC_KEYS = ("labels", "label_length", "logit_length")


@keras.saving.register_keras_serializable(package="cnn_apps")
class CTCLoss(keras.losses.Loss):
    """Connectionist temporal classification loss over per-frame logits (``keras.ops.ctc_loss``).

    Per sequence, L = −log Σ_{π ∈ B⁻¹(l)} Π_t softmax(y_pred)_t[π_t]: the total probability of
    every frame-level path π that collapses to the label sequence l (merge repeats, then
    drop blanks). Used by the text (CRNN) and speech pipelines (S0 §5.5, §5.9).

    Targets (``y_true``) come in two forms:

    * dense padded labels, shape (N, L): each row the label ids followed by ``pad_value``;
      the label length is the number of entries ≠ ``pad_value`` (so padding must only
      trail). This is the form for ``model.compile(loss=CTCLoss())`` / ``fit(x, labels)``.
      ``pad_value`` may equal ``blank_index`` (Keras' own convention: 0 = blank = padding).
    * a dict ``{"labels": (N, L), "label_length": (N,), "logit_length": (N,)}`` (lengths
      optional) for direct calls in custom training loops.

    Logit lengths are the full time length T unless ``y_pred`` carries a Keras mask (e.g.
    from a ``Masking`` layer upstream), in which case the number of unmasked frames is used;
    an explicit ``logit_length`` in the dict wins. A label longer than its logits can align to
    gives an infinite loss.

    Args:
        blank_index: class id of the CTC blank.
        pad_value: value that pads the dense labels (default −1).

    y_pred: logits (not softmax), shape (N, T, C).

    Example:
        logits = keras.layers.Dense(num_chars + 1)(sequence_features)   # (N, T, C), blank = 0
        model.compile("adam", loss=CTCLoss(blank_index=0, pad_value=-1))
        model.fit(images, padded_labels)
    """

    def __init__(self, blank_index=0, pad_value=-1, name="ctc_loss",
                 reduction=REDUCTION_DEFAULT, dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        if isinstance(blank_index, bool) or int(blank_index) != blank_index or blank_index < 0:
            raise ValueError(f"blank_index must be an integer >= 0, got {blank_index!r}")
        if isinstance(pad_value, bool) or int(pad_value) != pad_value:
            raise ValueError(f"pad_value must be an integer, got {pad_value!r}")
        self.blank_index = int(blank_index)
        self.pad_value = int(pad_value)

    def __call__(self, y_true, y_pred, sample_weight=None):
        mask = _keras_mask(y_pred)
        if mask is not None:
            # The mask is per frame, (N, T): turn it into logit lengths and hand the base class
            # an unmasked tensor (it would otherwise apply a (N, T) mask to (N,) losses).
            logit_length = ops.sum(ops.cast(mask, "int32"), axis=-1)
            y_pred = ops.multiply(y_pred, ops.cast(1, y_pred.dtype))
            y_true = dict(y_true) if isinstance(y_true, dict) else {"labels": y_true}
            y_true.setdefault("logit_length", logit_length)
        return super().__call__(y_true, y_pred, sample_weight)

    def call(self, y_true, y_pred):
        label_length = logit_length = None
        if isinstance(y_true, dict):
            unknown = set(y_true) - set(_CTC_KEYS)
            if unknown or "labels" not in y_true:
                raise ValueError(f"y_true as a dict needs 'labels' and optionally "
                                 f"'label_length', 'logit_length'; got keys {sorted(y_true)}")
            labels = y_true["labels"]
            label_length = y_true.get("label_length")
            logit_length = y_true.get("logit_length")
        else:
            labels = y_true
        check_rank("y_true (padded labels)", labels, (2,), "(N, L)")
        check_rank("y_pred (per-frame logits)", y_pred, (3,), "(N, T, C)")
        labels = ops.cast(labels, "int32")
        is_pad = ops.equal(labels, self.pad_value)
        if label_length is None:
            label_length = ops.sum(ops.cast(ops.logical_not(is_pad), "int32"), axis=-1)
        if logit_length is None:
            logit_length = ops.full_like(labels[:, 0], ops.shape(y_pred)[1])
        # Positions past a label's length are ignored; a valid id there keeps one_hot sane.
        labels = ops.where(is_pad, ops.full_like(labels, self.blank_index), labels)
        return ops.ctc_loss(labels, y_pred, ops.cast(label_length, "int32"),
                            ops.cast(logit_length, "int32"), mask_index=self.blank_index)

    def get_config(self):
        config = super().get_config()
        config.update({"blank_index": self.blank_index, "pad_value": self.pad_value})
        return config


@keras.saving.register_keras_serializable(package="cnn_apps")
class DiceLoss(keras.losses.Loss):
    """Soft Dice loss for segmentation masks: 1 − Dice overlap per sample.

    Per sample, summing over every non-batch axis (pixels and channels) of one-hot or
    probability maps X = y_true and Y = y_pred:

        L = 1 − (2·Σ X·Y + s) / (Σ X + Σ Y + s)

    s (``smooth``) keeps empty masks defined (empty target and empty prediction give 0) and
    smooths the gradient. This pools all channels (V-Net style), it is not a per-class mean;
    weight classes through the target maps or call it per channel for that.

    Args:
        smooth: s ≥ 0.

    y_true, y_pred: (N, ...) maps, y_pred in [0, 1] (e.g. softmax or sigmoid output).

    Example:
        masks = keras.layers.Conv2D(num_classes, 1, activation="softmax")(features)
        model.compile("adam", loss=DiceLoss(smooth=1.0))
        model.fit(images, one_hot_masks)
    """

    def __init__(self, smooth=1.0, name="dice_loss", reduction=REDUCTION_DEFAULT, dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.smooth = check_non_negative("smooth", smooth)

    def call(self, y_true, y_pred):
        rank = len(ops.shape(y_pred))
        if rank < 2:
            raise ValueError("y_pred must have a batch axis and at least one map axis, got shape "
                             f"{tuple(ops.shape(y_pred))}")
        y = ops.cast(y_true, y_pred.dtype)
        axes = tuple(range(1, rank))
        intersection = ops.sum(y * y_pred, axis=axes)
        total = ops.sum(y, axis=axes) + ops.sum(y_pred, axis=axes)
        return 1.0 - (2.0 * intersection + self.smooth) / (total + self.smooth)

    def get_config(self):
        config = super().get_config()
        config.update({"smooth": self.smooth})
        return config


@keras.saving.register_keras_serializable(package="cnn_apps")
class HeatmapMSE(keras.losses.Loss):
    """Per-joint mean squared error of pose heatmaps, masked by joint visibility.

    For heatmaps of shape (N, H, W, K) (K joints), ``call`` returns the per-joint error

        e_nk = (1/HW) Σ_{h,w} (y_pred − y_true)²_{nhwk},   shape (N, K)

    and the visibility enters as ``sample_weight`` of shape (N, K) (1 visible / labelled,
    0 invisible or unlabelled; fractional weights allowed), so an invisible joint contributes
    exactly 0 whatever the prediction. With the default reduction the loss is
    (1/NK) Σ v_nk e_nk (invisible joints count in the denominator, as in the usual
    target-weighted joints MSE); ``reduction="mean_with_sample_weight"`` averages over the
    visible joints only. In ``fit`` pass ``sample_weight=visibility`` (or yield
    ``(x, heatmaps, visibility)`` from the dataset). S1's "Euclidean loss" for heat-maps
    (SEED_CHECKLIST LS-03; S0 §5.4).

    Example:
        heatmaps = keras.layers.Conv2D(num_joints, 1)(features)          # (N, H, W, K)
        model.compile("adam", loss=HeatmapMSE())
        model.fit(images, target_heatmaps, sample_weight=visibility)    # visibility (N, K)
    """

    def __init__(self, name="heatmap_mse", reduction=REDUCTION_DEFAULT, dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def call(self, y_true, y_pred):
        check_rank("y_pred (heatmaps)", y_pred, (4,), "(N, H, W, K)")
        error = ops.square(y_pred - ops.cast(y_true, y_pred.dtype))
        return ops.mean(error, axis=(1, 2))
