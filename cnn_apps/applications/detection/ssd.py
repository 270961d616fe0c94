"""SSD: single-shot multibox detector (Liu et al. 2016; survey S0 §5.2, SEED_CHECKLIST LS-18).

Default boxes tile several feature maps of the backbone (``feature_levels``, e.g. P2..P5 of
the pyramid, plus ``extra_levels`` stride-2 conv blocks on top); level k has scale
``s_k = s_min + (s_max − s_min)(k − 1)/(m − 1)`` and boxes of aspect ratios ``a`` with
``w = s_k√a``, ``h = s_k/√a`` plus one extra square box of scale ``√(s_k s_{k+1})``
(``cnn_apps.ops.ssd_default_boxes``). A 3×3 conv per level predicts, for every default box,
C + 1 class logits (index 0 = background, softmax) and 4 offsets in the center-size coding
with variances (0.1, 0.1, 0.2, 0.2) (``cnn_apps.ops.encode_boxes``).

Multibox loss, computed in-graph from the padded ground truth (targets are encoded inside
the loss, vectorized over the batch, so the dataset stays model-agnostic)::

    matching:  default box a ← gt g when IoU(a, g) >= 0.5 (best gt); every gt also claims its
               best default box (so none is unmatched)
    L = (1/N) [ Σ_{pos} smoothL1(l − ĝ) · α  +  Σ_{pos ∪ hardneg} CE(softmax(c), y) ]

N = number of matched (positive) boxes of the image (L = 0 when N = 0); ``hardneg`` are the
``neg_pos_ratio``·N (3:1) unmatched boxes with the largest background cross-entropy (hard
negative mining). The per-image losses are averaged over the batch.

Training vs inference: the model always outputs the raw ``(N, A, 4 + C + 1)`` tensor
(deltas, then logits); ``postprocess`` decodes, softmaxes and runs class-aware NMS.

Example::

    model = SSD.build_model(config, num_classes=4)
    loss = SSD.loss(config, info)            # info from SSD.info(config, num_classes)
    out = SSD.postprocess(model(images)["raw"], info)
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from cnn_apps.applications.detection.common import (backbone_features, conv_bn_relu,
                                                    nms_outputs, pick_level, smooth_l1)
from cnn_apps.ops import decode_boxes, encode_boxes, match_anchors, ssd_default_boxes

VARIANCES = (0.1, 0.1, 0.2, 0.2)


def ssd_settings(config):
    """SSD keys of the config with defaults (``ssd:`` section)."""
    cfg = dict(config.get("ssd") or {})
    return {"feature_levels": list(cfg.get("feature_levels") or ["P2", "P3", "P4", "P5"]),
            "extra_levels": int(cfg.get("extra_levels", 1)),
            "extra_channels": int(cfg.get("extra_channels", 128)),
            "head_channels": int(cfg.get("head_channels", 64)),
            "min_scale": float(cfg.get("min_scale", 0.05)),
            "max_scale": float(cfg.get("max_scale", 0.6)),
            "aspect_ratios": [float(a) for a in cfg.get("aspect_ratios") or [1.0, 2.0, 0.5]],
            "match_iou": float(cfg.get("match_iou", 0.5)),
            "neg_pos_ratio": float(cfg.get("neg_pos_ratio", 3.0)),
            "loc_weight": float(cfg.get("loc_weight", 1.0))}


def boxes_per_location(aspect_ratios):
    return len(aspect_ratios) + int(any(np.isclose(aspect_ratios, 1.0)))


def build_model(config, num_classes):
    """Raw-pixel images → ``{"raw": (N, A, 4 + num_classes + 1)}``."""
    settings = ssd_settings(config)
    size = int(config["image_size"])
    inputs, features = backbone_features(config, (size, size, 3),
                                         levels=settings["feature_levels"])
    maps = [pick_level(features, level, config["backbone"])
            for level in settings["feature_levels"]]
    x = maps[-1]
    for i in range(settings["extra_levels"]):
        x = conv_bn_relu(x, settings["extra_channels"] // 2, 1, 1, f"ssd_extra{i}_reduce")
        x = conv_bn_relu(x, settings["extra_channels"], 3, 2, f"ssd_extra{i}")
        maps.append(x)
    k = boxes_per_location(settings["aspect_ratios"])
    deltas, logits = [], []
    for i, fmap in enumerate(maps):
        if settings["head_channels"]:
            fmap = conv_bn_relu(fmap, settings["head_channels"], 3, 1, f"ssd_head{i}")
        loc = keras.layers.Conv2D(k * 4, 3, padding="same", name=f"ssd_loc_{i}")(fmap)
        cls = keras.layers.Conv2D(k * (num_classes + 1), 3, padding="same",
                                  name=f"ssd_cls_{i}")(fmap)
        # (N, H, W, k·D) → (N, H·W·k, D): rows in ssd_default_boxes order (cells, then boxes)
        deltas.append(keras.layers.Reshape((-1, 4), name=f"ssd_loc_flat_{i}")(loc))
        logits.append(keras.layers.Reshape((-1, num_classes + 1), name=f"ssd_cls_flat_{i}")(cls))
    raw = keras.layers.Concatenate(axis=-1, name="raw", dtype="float32")([
        keras.layers.Concatenate(axis=1, name="ssd_deltas")(deltas),
        keras.layers.Concatenate(axis=1, name="ssd_logits")(logits)])
    return keras.Model(inputs, {"raw": raw}, name=f"ssd_{config['backbone']}")


def feature_sizes(model):
    """``[(H, W), ...]`` of the prediction maps, read from the built model."""
    sizes, i = [], 0
    while True:
        try:
            shape = model.get_layer(f"ssd_loc_{i}").output.shape
        except ValueError:
            return sizes
        sizes.append((int(shape[1]), int(shape[2])))
        i += 1


def info(config, num_classes, model):
    settings = ssd_settings(config)
    return {"name": "ssd", "feature_sizes": [list(s) for s in feature_sizes(model)],
            "min_scale": settings["min_scale"], "max_scale": settings["max_scale"],
            "aspect_ratios": settings["aspect_ratios"]}


def anchors_from_info(det_info):
    return ssd_default_boxes([tuple(s) for s in det_info["feature_sizes"]],
                             det_info["min_scale"], det_info["max_scale"],
                             det_info["aspect_ratios"])


@keras.saving.register_keras_serializable(package="cnn_apps")
class SSDMultiboxLoss(keras.losses.Loss):
    """SSD multibox loss (module doc) for ``y_true`` = padded gt (N, M, 5) and ``y_pred`` = raw
    (N, A, 4 + C + 1). Returns one value per image.

    Args:
        feature_sizes, min_scale, max_scale, aspect_ratios: rebuild the default boxes.
        match_iou: matching IoU (0.5); neg_pos_ratio: hard negatives per positive (3);
        loc_weight: α.
    """

    def __init__(self, feature_sizes, min_scale=0.1, max_scale=0.7,
                 aspect_ratios=(1.0, 2.0, 0.5), match_iou=0.5, neg_pos_ratio=3.0,
                 loc_weight=1.0, name="ssd_multibox_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        if neg_pos_ratio < 0:
            raise ValueError(f"`neg_pos_ratio` must be >= 0; got {neg_pos_ratio}.")
        if not 0 < match_iou <= 1:
            raise ValueError(f"`match_iou` must be in (0, 1]; got {match_iou}.")
        self.feature_sizes = [list(s) for s in feature_sizes]
        self.min_scale, self.max_scale = float(min_scale), float(max_scale)
        self.aspect_ratios = [float(a) for a in aspect_ratios]
        self.match_iou, self.neg_pos_ratio = float(match_iou), float(neg_pos_ratio)
        self.loc_weight = float(loc_weight)
        self.anchors = ssd_default_boxes([tuple(s) for s in self.feature_sizes], self.min_scale,
                                         self.max_scale, self.aspect_ratios)

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, "float32")
        y_pred = ops.cast(y_pred, "float32")
        if y_pred.shape[1] is not None and y_pred.shape[1] != len(self.anchors):
            raise ValueError(f"`y_pred` has {y_pred.shape[1]} boxes but the default boxes "
                             f"number {len(self.anchors)}.")
        gt_boxes, gt_class = y_true[..., :4], y_true[..., 4]
        valid = gt_class >= 0
        anchors = ops.convert_to_tensor(self.anchors)
        matched = match_anchors(gt_boxes, anchors, self.match_iou, self.match_iou,
                                gt_valid=valid)  # (N, A)
        positive = matched >= 0
        index = ops.maximum(matched, 0)
        target_boxes = ops.take_along_axis(gt_boxes, index[..., None], axis=1)  # (N, A, 4)
        target_class = ops.where(
            positive, ops.cast(ops.take_along_axis(gt_class, index, axis=1), "int32") + 1, 0)
        pos = ops.cast(positive, "float32")
        num_pos = ops.sum(pos, axis=1)
        # localization: smooth L1 on encoded offsets of the positives
        target_deltas = encode_boxes(ops.where(positive[..., None], target_boxes, anchors[None]),
                                     anchors[None], VARIANCES)
        loc = ops.sum(smooth_l1(y_pred[..., :4] - ops.stop_gradient(target_deltas)), axis=-1)
        loc = ops.sum(loc * pos, axis=1)
        # confidence: softmax cross-entropy, positives + hardest negatives (3:1)
        logits = y_pred[..., 4:]
        ce = (ops.logsumexp(logits, axis=-1)
              - ops.sum(logits * ops.one_hot(target_class, ops.shape(logits)[-1]), axis=-1))
        neg_score = ops.where(positive, -1.0, ops.stop_gradient(ce))  # ce >= 0
        order = ops.argsort(-neg_score, axis=1)
        rank = ops.argsort(order, axis=1)
        num_neg = ops.cast(ops.round(self.neg_pos_ratio * num_pos), "int32")
        hard_neg = ops.logical_and(ops.logical_not(positive), rank < num_neg[:, None])
        conf = ops.sum(ce * (pos + ops.cast(hard_neg, "float32")), axis=1)
        return (conf + self.loc_weight * loc) / ops.maximum(num_pos, 1.0)

    def get_config(self):
        return {**super().get_config(), "feature_sizes": self.feature_sizes,
                "min_scale": self.min_scale, "max_scale": self.max_scale,
                "aspect_ratios": self.aspect_ratios, "match_iou": self.match_iou,
                "neg_pos_ratio": self.neg_pos_ratio, "loc_weight": self.loc_weight}


def loss(config, det_info):
    s = ssd_settings(config)
    return SSDMultiboxLoss(det_info["feature_sizes"], det_info["min_scale"],
                           det_info["max_scale"], det_info["aspect_ratios"], s["match_iou"],
                           s["neg_pos_ratio"], s["loc_weight"])


def decode(raw, det_info):
    """Raw (N, A, 4 + C + 1) → (boxes (N, A, 4) normalized, class scores (N, A, C))."""
    anchors = ops.convert_to_tensor(anchors_from_info(det_info))
    raw = ops.cast(raw, "float32")
    boxes = ops.clip(decode_boxes(raw[..., :4], anchors[None], VARIANCES), 0.0, 1.0)
    probs = ops.softmax(raw[..., 4:], axis=-1)
    return boxes, probs[..., 1:]


def postprocess(raw, info):
    boxes, scores = decode(raw, info["detector"])
    return nms_outputs(boxes, scores, info)
