"""Pieces shared by the one-stage detectors: the input/backbone stem, conv blocks and the
in-graph post-processing to the TF Object Detection API outputs (survey S0 §5.2).

Every detector model takes raw 0..255 pixels ``images`` (N, S, S, 3) and returns
``{"raw": tensor}``; ``postprocess(raw, info)`` turns the raw tensor into::

    detection_boxes   (N, max_detections, 4) normalized (ymin, xmin, ymax, xmax)
    detection_scores  (N, max_detections)
    detection_classes (N, max_detections) float32 label ids = class index + 1 (the OD API
                      label-map convention; 0 would be background)
    num_detections    (N,) float32 valid rows

through class-aware ``tf.image.combined_non_max_suppression`` (``cnn_apps.ops.batched_nms``).
"""

from __future__ import annotations

import keras
from keras import ops

from cnn_apps import backbones
from cnn_apps.backbones.preprocessing import ImagePreprocessing
from cnn_apps.errors import ConfigError

OUTPUT_KEYS = ("detection_boxes", "detection_scores", "detection_classes", "num_detections")


def backbone_features(config, input_shape, levels=None):
    """``(inputs, {"P2": ..., ...})``: raw-pixel input → preprocessing → the backbone's
    pyramid levels (``backbones.create(..., features_only=True)``, nested as ``backbone``).

    ``levels``: the level names the detector reads (or a function of the backbone's sorted
    level names returning them); the nested backbone then ends at the deepest of them, so a
    detector on P3 does not run the P4/P5 stages (in training their BatchNorm updates
    would keep them in the graph). The whole backbone is built first and its weights file
    loaded, so initialization and weight files are those of the full network. None keeps
    every level."""
    name = config["backbone"]
    spec = backbones.get_spec(name)
    inputs = keras.Input(shape=tuple(input_shape), name="images")
    x = ImagePreprocessing(spec.preprocessing, name="preprocess")(inputs)
    weights = config.get("weights")
    net = backbones.create(name, input_shape=input_shape, features_only=True,
                           weights=weights if weights == "imagenet" else None,
                           **backbone_arguments(config))
    if weights not in (None, "imagenet"):
        backbones.load_weights_file(net, weights)
    available = net.output
    if not isinstance(available, dict) or not available:
        raise ConfigError(f"backbone '{name}' exposes no pyramid levels for detection")
    if levels is not None:
        keep = levels(sorted(available)) if callable(levels) else list(levels)
        for level in keep:
            pick_level(available, level, name)
        if set(keep) != set(available):
            net = keras.Model(net.input, {level: available[level] for level in sorted(keep)})
    net.name = "backbone"
    return inputs, net(x)


def backbone_arguments(config):
    """The backbone builder's keyword arguments: ``backbone_args`` when it is not empty, else
    ``backbone_defaults[<backbone name>]`` (e.g. ``{"resnet18": {"width": 32}}``), else none;
    so ``backbone=<any registered>`` works without also clearing a resnet-only argument."""
    explicit = config.get("backbone_args") or {}
    if not isinstance(explicit, dict):
        raise ConfigError(f"backbone_args must be a mapping of builder arguments, got "
                          f"{explicit!r}")
    if explicit:
        return dict(explicit)
    defaults = (config.get("backbone_defaults") or {}).get(config["backbone"]) or {}
    if not isinstance(defaults, dict):
        raise ConfigError(f"backbone_defaults.{config['backbone']} must be a mapping of builder "
                          f"arguments, got {defaults!r}")
    return dict(defaults)


def pick_level(features, level, backbone):
    if level not in features:
        raise ConfigError(f"backbone '{backbone}' has no feature level '{level}'; available: "
                          f"{', '.join(sorted(features))}")
    return features[level]


def conv_bn_relu(x, filters, kernel, strides, name):
    """Conv (no bias) → BatchNorm → ReLU."""
    x = keras.layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False,
                            name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def nms_outputs(boxes, scores, info):
    """Class-aware NMS of ``boxes`` (N, A, 4) normalized and per-class ``scores`` (N, A, C)
    with ``info["postprocess"]`` thresholds → the four OD API outputs."""
    import tensorflow as tf

    from cnn_apps.ops import batched_nms

    post = info["postprocess"]
    max_det = int(post["max_detections"])
    out = batched_nms(tf.cast(boxes, tf.float32), tf.cast(scores, tf.float32),
                      max_output_per_class=max_det, max_total_size=max_det,
                      iou_threshold=float(post["nms_iou_threshold"]),
                      score_threshold=float(post["score_threshold"]), clip_boxes=True)
    return {"detection_boxes": out["boxes"], "detection_scores": out["scores"],
            "detection_classes": tf.cast(out["classes"], tf.float32) + 1.0,
            "num_detections": tf.cast(out["num_detections"], tf.float32)}


def postprocess_config(config):
    """The NMS settings stored in ``model_info`` (serving reads them from there)."""
    values = {"nms_iou_threshold": float(config.get("nms_iou_threshold", 0.5)),
              "score_threshold": float(config.get("score_threshold", 0.05)),
              "max_detections": int(config.get("max_detections", 100))}
    if not 0.0 < values["nms_iou_threshold"] <= 1.0:
        raise ConfigError(f"nms_iou_threshold must be in (0, 1], got "
                          f"{values['nms_iou_threshold']}")
    if values["max_detections"] < 1:
        raise ConfigError(f"max_detections must be >= 1, got {values['max_detections']}")
    return values


def first_claims(slots, claim_ok, rows, num_slots):
    """Scatter claims into prediction slots, the first claim of a slot winning it.

    ``slots`` (N, K) int slot index of each claim (any value in ``[0, num_slots)`` where
    ``claim_ok`` is False), ``claim_ok`` (N, K) bool, ``rows`` (N, K, D) finite targets.
    Returns ``(assigned (N, num_slots) in {0, 1}, target (N, num_slots, D))``: slot ``a`` of
    image ``n`` gets the row of the smallest ``k`` with ``claim_ok[n, k]`` and
    ``slots[n, k] == a``; unclaimed slots get 0 rows. The YOLO losses' rule for a grid cell
    or anchor claimed by two objects.

    Costs O(N·K² + N·K·D): the claims are compared with each other, never expanded to
    one-hot (N, K, num_slots) (YOLOv3: K = 200 claims × 4032 predictors per image).
    """
    slots = ops.cast(slots, "int32")
    count = ops.shape(slots)[1]
    earlier = ops.arange(count)[None, :] < ops.arange(count)[:, None]  # [k, j]: j < k
    taken = (ops.expand_dims(slots, 2) == ops.expand_dims(slots, 1)) & \
        ops.expand_dims(claim_ok, 1) & earlier  # claim j < k already holds k's slot
    first = ops.cast(claim_ok & ~ops.any(taken, axis=2), "float32")  # (N, K)
    batch = ops.broadcast_to(ops.arange(ops.shape(slots)[0], dtype="int32")[:, None],
                             ops.shape(slots))
    index = ops.stack([batch, slots], axis=-1)  # (N, K, 2)
    n = ops.shape(slots)[0]
    # every slot receives at most one nonzero value, so the scatter's sums are exact
    assigned = ops.scatter(index, first, (n, num_slots))
    target = ops.scatter(index, ops.cast(rows, "float32") * first[..., None],
                         (n, num_slots, ops.shape(rows)[-1]))
    return assigned, target


def smooth_l1(x):
    """Huber with δ = 1 (Fast R-CNN's smooth L1): 0.5x² if |x| < 1 else |x| − 0.5."""
    ax = ops.abs(x)
    return ops.where(ax < 1.0, 0.5 * x * x, ax - 0.5)


def bce_with_logits(logits, target):
    """Binary cross-entropy of ``sigmoid(logits)`` against ``target``, elementwise, in the
    overflow-free form ``max(x, 0) − x·t + log(1 + e^−|x|)``."""
    return ops.maximum(logits, 0.0) - logits * target + ops.log1p(ops.exp(-ops.abs(logits)))
