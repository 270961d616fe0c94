"""Bounding-box toolkit for detectors: IoU, box coding, anchor matching, NMS, conversions.

Survey S0 §5.2 (object detection: R-CNN family, SSD, YOLO; NMS and Gidaris et al.'s box voting
after NMS). Boxes are ``(ymin, xmin, ymax, xmax)`` (the TF Object Detection API order) in the
last axis, either *absolute* (pixels) or *normalized* (fractions of the image height/width);
each function says which it expects. Everything except the NMS wrappers is written with
``keras.ops``, so it accepts numpy arrays or backend tensors (TF, JAX) and returns a backend
tensor. NMS wraps ``tf.image`` (the point of those functions) and returns TF tensors.

Example::

    iou = box_iou(gt_boxes, anchors)                  # (N, A)
    deltas = encode_boxes(gt_boxes[matched], anchors)  # regression targets
    keep = nms(decoded, scores, iou_threshold=0.5)    # indices of kept boxes
"""

from __future__ import annotations

import math

import numpy as np
from keras import ops

__all__ = [
    "box_area", "box_iou", "box_giou", "encode_boxes", "decode_boxes", "match_anchors",
    "nms", "batched_nms", "box_voting", "clip_boxes", "scale_boxes", "to_normalized",
    "to_absolute", "flip_boxes_horizontal", "yxyx_to_xywh", "xywh_to_yxyx",
    "yxyx_to_center_size", "center_size_to_yxyx",
]

DEFAULT_VARIANCES = (0.1, 0.1, 0.2, 0.2)
# torchvision's bbox_xform_clip: keeps exp() finite for wild size deltas.
MAX_LOG_SCALE = math.log(1000.0 / 16.0)


def _as_boxes(boxes, name="boxes"):
    """Float tensor with last axis 4, or a ValueError naming the argument.

    Python and numpy inputs become float32 (numpy's float64 default would clash with float32
    tensors); backend tensors keep their floating dtype.
    """
    if isinstance(boxes, (np.ndarray, list, tuple)):
        boxes = np.asarray(boxes, np.float32)
    boxes = ops.convert_to_tensor(boxes)
    if "float" not in str(boxes.dtype):
        boxes = ops.cast(boxes, "float32")
    shape = ops.shape(boxes)
    if len(shape) == 0 or (shape[-1] is not None and shape[-1] != 4):
        raise ValueError(f"`{name}` must have shape (..., 4) with (ymin, xmin, ymax, xmax) "
                         f"in the last axis; got shape {tuple(shape)}.")
    return boxes


def _unstack4(boxes):
    return boxes[..., 0], boxes[..., 1], boxes[..., 2], boxes[..., 3]


def _safe_divide(num, den):
    """num / den, and 0 where den == 0 (double ``where`` keeps gradients finite)."""
    positive = den > 0
    return ops.where(positive, num / ops.where(positive, den, ops.ones_like(den)),
                     ops.zeros_like(num))


def box_area(boxes):
    """Area (ymax − ymin)·(xmax − xmin) of each box, 0 for empty or inverted boxes.

    Args:
        boxes: (..., 4) ``(ymin, xmin, ymax, xmax)``, absolute or normalized.

    Returns:
        (...) areas in the same units squared.
    """
    ymin, xmin, ymax, xmax = _unstack4(_as_boxes(boxes))
    return ops.maximum(ymax - ymin, 0.0) * ops.maximum(xmax - xmin, 0.0)


def _pairwise_intersection(a, b):
    ay0, ax0, ay1, ax1 = [t[..., :, None] for t in _unstack4(a)]
    by0, bx0, by1, bx1 = [t[..., None, :] for t in _unstack4(b)]
    h = ops.maximum(ops.minimum(ay1, by1) - ops.maximum(ay0, by0), 0.0)
    w = ops.maximum(ops.minimum(ax1, bx1) - ops.maximum(ax0, bx0), 0.0)
    return h * w


def box_iou(boxes_a, boxes_b):
    """Pairwise intersection over union, IoU = |A ∩ B| / |A ∪ B| (survey S0 §5.2).

    Args:
        boxes_a: (..., N, 4) boxes; boxes_b: (..., M, 4) boxes in the same coordinate system
            (absolute or normalized). Leading axes broadcast.

    Returns:
        (..., N, M) IoU in [0, 1]. A pair whose union is empty (two zero-area boxes) gets 0,
        never NaN.
    """
    a = _as_boxes(boxes_a, "boxes_a")
    b = ops.cast(_as_boxes(boxes_b, "boxes_b"), a.dtype)
    inter = _pairwise_intersection(a, b)
    union = box_area(a)[..., :, None] + box_area(b)[..., None, :] - inter
    return _safe_divide(inter, union)


def box_giou(boxes_a, boxes_b):
    """Pairwise generalized IoU (Rezatofighi et al. 2019): IoU − |C \\ (A ∪ B)| / |C|.

    C is the smallest box enclosing A and B. Values lie in [−1, 1]; pairs whose enclosing box
    is empty get their IoU (0). Shapes as in :func:`box_iou`.
    """
    a = _as_boxes(boxes_a, "boxes_a")
    b = ops.cast(_as_boxes(boxes_b, "boxes_b"), a.dtype)
    inter = _pairwise_intersection(a, b)
    union = box_area(a)[..., :, None] + box_area(b)[..., None, :] - inter
    iou = _safe_divide(inter, union)
    ay0, ax0, ay1, ax1 = [t[..., :, None] for t in _unstack4(a)]
    by0, bx0, by1, bx1 = [t[..., None, :] for t in _unstack4(b)]
    hull = (ops.maximum(ops.maximum(ay1, by1) - ops.minimum(ay0, by0), 0.0)
            * ops.maximum(ops.maximum(ax1, bx1) - ops.minimum(ax0, bx0), 0.0))
    return iou - _safe_divide(hull - union, hull)


def yxyx_to_center_size(boxes):
    """``(ymin, xmin, ymax, xmax)`` → ``(cy, cx, h, w)`` (any units)."""
    ymin, xmin, ymax, xmax = _unstack4(_as_boxes(boxes))
    return ops.stack([(ymin + ymax) * 0.5, (xmin + xmax) * 0.5, ymax - ymin, xmax - xmin],
                     axis=-1)


def center_size_to_yxyx(boxes):
    """``(cy, cx, h, w)`` → ``(ymin, xmin, ymax, xmax)`` (any units)."""
    cy, cx, h, w = _unstack4(_as_boxes(boxes))
    return ops.stack([cy - 0.5 * h, cx - 0.5 * w, cy + 0.5 * h, cx + 0.5 * w], axis=-1)


def _check_variances(variances):
    v = tuple(float(x) for x in variances)
    if len(v) != 4 or min(v) <= 0:
        raise ValueError(f"`variances` must be 4 positive numbers (vy, vx, vh, vw); got "
                         f"{variances}.")
    return v


def encode_boxes(boxes, anchors, variances=DEFAULT_VARIANCES):
    """Center-size regression targets of ``boxes`` relative to ``anchors`` (Faster R-CNN / SSD).

    ``ty = (cy − acy)/ah/v0``, ``tx = (cx − acx)/aw/v1``, ``th = log(h/ah)/v2``,
    ``tw = log(w/aw)/v3`` with ``(v0..v3) = variances`` (SSD's 0.1, 0.1, 0.2, 0.2; use
    ``(1, 1, 1, 1)`` for the plain Faster R-CNN parameterization).

    Args:
        boxes: (..., 4) target boxes; anchors: (..., 4) anchors, broadcastable, same units
            (absolute or normalized). Anchors must have positive size; box sizes are clamped
            at 1e-8 so a degenerate target stays finite.
        variances: 4 positive scale divisors.

    Returns:
        (..., 4) deltas ``(ty, tx, th, tw)``.
    """
    v = _check_variances(variances)
    boxes = _as_boxes(boxes, "boxes")
    cy, cx, h, w = _unstack4(yxyx_to_center_size(boxes))
    acy, acx, ah, aw = _unstack4(yxyx_to_center_size(
        ops.cast(_as_boxes(anchors, "anchors"), boxes.dtype)))
    h = ops.maximum(h, 1e-8)
    w = ops.maximum(w, 1e-8)
    return ops.stack([(cy - acy) / ah / v[0], (cx - acx) / aw / v[1],
                      ops.log(h / ah) / v[2], ops.log(w / aw) / v[3]], axis=-1)


def decode_boxes(deltas, anchors, variances=DEFAULT_VARIANCES, max_log_scale=MAX_LOG_SCALE):
    """Inverse of :func:`encode_boxes`: deltas ``(ty, tx, th, tw)`` + anchors → boxes.

    ``cy = ty·v0·ah + acy``, ``h = ah·exp(th·v2)`` and likewise for x/w. The log-size terms
    ``th·v2`` and ``tw·v3`` are clipped at ``max_log_scale`` (log(1000/16), as torchvision) so
    wild network outputs cannot overflow ``exp``.

    Returns:
        (..., 4) ``(ymin, xmin, ymax, xmax)`` in the anchors' units.
    """
    v = _check_variances(variances)
    deltas = _as_boxes(deltas, "deltas")
    ty, tx, th, tw = _unstack4(deltas)
    acy, acx, ah, aw = _unstack4(yxyx_to_center_size(
        ops.cast(_as_boxes(anchors, "anchors"), deltas.dtype)))
    cy = ty * v[0] * ah + acy
    cx = tx * v[1] * aw + acx
    h = ah * ops.exp(ops.minimum(th * v[2], max_log_scale))
    w = aw * ops.exp(ops.minimum(tw * v[3], max_log_scale))
    return center_size_to_yxyx(ops.stack([cy, cx, h, w], axis=-1))


def match_anchors(gt_boxes, anchors, positive_iou=0.5, negative_iou=0.4,
                  force_best_anchor=True, gt_valid=None):
    """Assign each anchor a ground-truth index by IoU (Faster R-CNN RPN / SSD matching).

    For anchor a with best IoU ``m`` over the ground truth: ``m >= positive_iou`` → the index
    of that best gt; ``m < negative_iou`` → −1 (background); otherwise −2 (ignored in the
    loss). With ``force_best_anchor`` every gt whose best IoU is > 0 additionally claims its
    single best anchor (first on ties) even below the thresholds, so no object goes
    unmatched; when two gts claim one anchor the lower gt index wins. SSD uses
    ``negative_iou == positive_iou == 0.5``; the Faster R-CNN RPN uses 0.7 / 0.3.

    Args:
        gt_boxes: (..., N, 4) ground-truth boxes (N may be 0: every anchor is then −1); leading
            axes are a batch of images matched independently (one op, no per-image loop).
        anchors: (A, 4) anchors in the same units.
        gt_valid: optional (..., N) bool; False rows (padding) are never matched.

    Returns:
        (..., A) int32 matched gt index, −1 negative or −2 ignore.
    """
    if not negative_iou <= positive_iou:
        raise ValueError(f"`negative_iou` ({negative_iou}) must be <= `positive_iou` "
                         f"({positive_iou}).")
    gt = _as_boxes(gt_boxes, "gt_boxes")
    anchors = ops.cast(_as_boxes(anchors, "anchors"), gt.dtype)
    if len(ops.shape(gt)) < 2 or len(ops.shape(anchors)) != 2:
        raise ValueError("`gt_boxes` must be (..., N, 4) and `anchors` (A, 4); got "
                         f"{tuple(ops.shape(gt))} and {tuple(ops.shape(anchors))}.")
    iou = box_iou(gt, anchors)  # (..., N, A)
    if gt_valid is not None:
        iou = ops.where(ops.convert_to_tensor(gt_valid, "bool")[..., :, None], iou, -1.0)
    # An always-present dummy row of −1 keeps max/argmax defined when N == 0 (the sum over
    # an empty axis still has the (..., 1, A) shape the row needs).
    dummy = ops.zeros_like(ops.sum(iou, axis=-2, keepdims=True)) - 1.0
    padded = ops.concatenate([iou, dummy], axis=-2)
    best_iou = ops.max(padded, axis=-2)
    best_gt = ops.cast(ops.argmax(padded, axis=-2), "int32")
    minus_one = ops.full_like(best_gt, -1)
    matched = ops.where(best_iou >= positive_iou, best_gt,
                        ops.where(best_iou < negative_iou, minus_one, minus_one - 1))
    if force_best_anchor:
        best_anchor = ops.argmax(padded[..., :-1, :], axis=-1)  # (..., N)
        claims = ops.logical_and(
            ops.expand_dims(best_anchor, -1) == ops.arange(ops.shape(anchors)[0],
                                                           dtype=best_anchor.dtype),
            ops.expand_dims(ops.max(padded[..., :-1, :], axis=-1, initial=-1.0) > 0, -1))
        claims = ops.concatenate([claims, ops.zeros_like(dummy, "bool")], axis=-2)
        claimed = ops.any(claims, axis=-2)
        claimer = ops.cast(ops.argmax(ops.cast(claims, "int32"), axis=-2), "int32")
        matched = ops.where(claimed, claimer, matched)
    return matched


def _tf():
    import tensorflow as tf  # NMS is a tf.image op: imported only when used

    return tf


def _tf_tensor(x, dtype="float32"):
    tf = _tf()
    if not isinstance(x, tf.Tensor):
        x = tf.convert_to_tensor(np.asarray(x))
    return tf.cast(x, dtype)


def nms(boxes, scores, iou_threshold=0.5, max_outputs=100, score_threshold=float("-inf")):
    """Greedy non-maximum suppression over ``tf.image.non_max_suppression`` (survey S0 §5.2).

    Repeatedly keeps the highest-scoring remaining box and drops every box whose IoU with it
    is strictly greater than ``iou_threshold``; boxes scoring below ``score_threshold`` are
    dropped first. Coordinates may be absolute or normalized.

    Args:
        boxes: (N, 4); scores: (N,).
        max_outputs: at most this many indices are returned.

    Returns:
        (K,) int32 ``tf.Tensor`` of kept indices in decreasing score order.
    """
    tf = _tf()
    boxes = _tf_tensor(boxes)
    scores = _tf_tensor(scores)
    if boxes.shape.rank != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"`boxes` must have shape (N, 4); got {boxes.shape}.")
    if scores.shape.rank != 1:
        raise ValueError(f"`scores` must have shape (N,); got {scores.shape}.")
    return tf.image.non_max_suppression(boxes, scores, int(max_outputs),
                                        iou_threshold=float(iou_threshold),
                                        score_threshold=float(score_threshold))


def batched_nms(boxes, scores, max_output_per_class=100, max_total_size=100,
                iou_threshold=0.5, score_threshold=float("-inf"), clip_boxes=False):
    """Class-aware batched NMS over ``tf.image.combined_non_max_suppression``.

    NMS runs independently per image and per class; the survivors of all classes are then
    sorted by score and the top ``max_total_size`` kept (zero-padded).

    Args:
        boxes: (B, N, 4) class-agnostic boxes or (B, N, K, 4) one box per class.
        scores: (B, N, K) per-class scores (e.g. softmax without the background column).
        clip_boxes: clip outputs to [0, 1] — only meaningful for normalized boxes, so off
            by default (TF's default is on).

    Returns:
        dict with the TF Object Detection API outputs: ``boxes`` (B, max_total_size, 4),
        ``scores`` (B, max_total_size), ``classes`` (B, max_total_size) int32 class index,
        ``num_detections`` (B,) int32 valid rows per image.
    """
    tf = _tf()
    boxes = _tf_tensor(boxes)
    scores = _tf_tensor(scores)
    if boxes.shape.rank == 3:
        boxes = boxes[:, :, None, :]
    if boxes.shape.rank != 4 or boxes.shape[-1] != 4:
        raise ValueError(f"`boxes` must have shape (B, N, 4) or (B, N, K, 4); got {boxes.shape}.")
    if scores.shape.rank != 3:
        raise ValueError(f"`scores` must have shape (B, N, K); got {scores.shape}.")
    out = tf.image.combined_non_max_suppression(
        boxes, scores, int(max_output_per_class), int(max_total_size),
        iou_threshold=float(iou_threshold), score_threshold=float(score_threshold),
        clip_boxes=bool(clip_boxes))
    return {"boxes": out.nmsed_boxes, "scores": out.nmsed_scores,
            "classes": tf.cast(out.nmsed_classes, tf.int32),
            "num_detections": tf.cast(out.valid_detections, tf.int32)}


def box_voting(kept_boxes, all_boxes, all_scores, iou_threshold=0.5):
    """Box voting after NMS (Gidaris & Komodakis 2015; survey S0 §5.2).

    Each kept box k is replaced by the score-weighted mean of every box b in ``all_boxes``
    with IoU(k, b) >= ``iou_threshold``: ``Σ s_b·b / Σ s_b``. A kept box with no such
    neighbour (or zero total score) stays unchanged.

    Args:
        kept_boxes: (..., K, 4) boxes after NMS; all_boxes: (..., N, 4) boxes before NMS;
            all_scores: (..., N) non-negative scores. Same units; leading (batch) axes
            broadcast, e.g. one candidate set per kept box with K = 1.

    Returns:
        (..., K, 4) refined boxes.
    """
    kept = _as_boxes(kept_boxes, "kept_boxes")
    boxes = ops.cast(_as_boxes(all_boxes, "all_boxes"), kept.dtype)
    scores = ops.cast(ops.convert_to_tensor(all_scores), boxes.dtype)
    weights = ops.where(box_iou(kept, boxes) >= iou_threshold,
                        ops.expand_dims(scores, -2), 0.0)  # (..., K, N)
    total = ops.sum(weights, axis=-1, keepdims=True)
    voted = ops.matmul(weights, boxes) / ops.where(total > 0, total, ops.ones_like(total))
    return ops.where(total > 0, voted, kept)


def clip_boxes(boxes, image_shape=(1.0, 1.0)):
    """Clip y to [0, height] and x to [0, width].

    Args:
        boxes: (..., 4). image_shape: ``(height, width)``; keep the default (1, 1) for
            normalized boxes, pass the image size in pixels for absolute ones.
    """
    boxes = _as_boxes(boxes)
    height, width = image_shape
    ymin, xmin, ymax, xmax = _unstack4(boxes)
    return ops.stack([ops.clip(ymin, 0.0, height), ops.clip(xmin, 0.0, width),
                      ops.clip(ymax, 0.0, height), ops.clip(xmax, 0.0, width)], axis=-1)


def scale_boxes(boxes, scale_y, scale_x):
    """Multiply y coordinates by ``scale_y`` and x by ``scale_x`` (e.g. after an image resize)."""
    boxes = _as_boxes(boxes)
    factors = ops.cast(ops.stack([scale_y, scale_x, scale_y, scale_x]), boxes.dtype)
    return boxes * factors


def to_normalized(boxes, height, width):
    """Absolute pixel boxes → normalized boxes (divide y by height, x by width)."""
    for name, value in (("height", height), ("width", width)):
        if isinstance(value, (int, float)) and value <= 0:
            raise ValueError(f"`{name}` must be positive; got {value}.")
    return scale_boxes(boxes, 1.0 / ops.cast(height, "float32"), 1.0 / ops.cast(width, "float32"))


def to_absolute(boxes, height, width):
    """Normalized boxes → absolute pixel boxes (multiply y by height, x by width)."""
    return scale_boxes(boxes, ops.cast(height, "float32"), ops.cast(width, "float32"))


def flip_boxes_horizontal(boxes, width=1.0):
    """Boxes of the left-right mirrored image: ``xmin' = width − xmax``, ``xmax' = width − xmin``.

    ``width`` is 1 for normalized boxes, the image width for absolute ones.
    """
    ymin, xmin, ymax, xmax = _unstack4(_as_boxes(boxes))
    return ops.stack([ymin, width - xmax, ymax, width - xmin], axis=-1)


def yxyx_to_xywh(boxes):
    """``(ymin, xmin, ymax, xmax)`` → COCO ``(x, y, width, height)`` (absolute pixels)."""
    ymin, xmin, ymax, xmax = _unstack4(_as_boxes(boxes))
    return ops.stack([xmin, ymin, xmax - xmin, ymax - ymin], axis=-1)


def xywh_to_yxyx(boxes):
    """COCO ``(x, y, width, height)`` → ``(ymin, xmin, ymax, xmax)``."""
    x, y, w, h = _unstack4(_as_boxes(boxes))
    return ops.stack([y, x, y + h, x + w], axis=-1)
