"""Prediction pictures for detection: boxes, class names and scores drawn with OpenCV.

Example::

    picture = draw_detections(image, boxes, classes, scores, class_names, gt_boxes=gt)
    cv2.imwrite("pred.png", cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
"""

from __future__ import annotations

import colorsys

import numpy as np

__all__ = ["draw_detections", "class_color", "GT_COLOR"]

GT_COLOR = (255, 255, 255)  # ground truth: white, drawn under the predictions


def class_color(index):
    """A fixed, well-spread RGB colour for class ``index`` (golden-ratio hue steps)."""
    hue = (int(index) * 0.618033988749895) % 1.0
    return tuple(int(round(255 * c)) for c in colorsys.hsv_to_rgb(hue, 0.85, 0.95))


def _as_rgb_uint8(image):
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] not in (3, 4):
        raise ValueError(f"`image` must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); got "
                         f"{image.shape}.")
    image = image[..., :3]
    if image.dtype != np.uint8:
        image = image.astype(np.float64)
        if image.size and image.max() <= 1.0:
            image = image * 255.0
        image = np.clip(np.round(image), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(image).copy()


def draw_detections(image, boxes, classes, scores=None, class_names=None, gt_boxes=None,
                    score_threshold=0.0, thickness=1):
    """Draw predicted boxes (and optionally ground truth) on a copy of ``image``.

    Args:
        image: (H, W[, C]) uint8, or float in [0, 1] or [0, 255]; not modified.
        boxes: (N, 4) absolute ``(ymin, xmin, ymax, xmax)``; classes: (N,) class indices;
        scores: optional (N,); boxes scoring below ``score_threshold`` are skipped.
        class_names: optional names for the labels (else the index is printed).
        gt_boxes: optional (M, 4) ground-truth boxes, drawn in :data:`GT_COLOR`.

    Returns:
        (H, W, 3) uint8 RGB picture. A box's outline covers pixel rows ``ymin..ymax − 1`` and
        columns ``xmin..xmax − 1`` (rounded), in :func:`class_color` of its class.
    """
    import cv2

    picture = _as_rgb_uint8(image)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    classes = np.asarray(classes).reshape(-1).astype(int)
    scores = None if scores is None else np.asarray(scores, np.float64).reshape(-1)
    if len(classes) != len(boxes) or (scores is not None and len(scores) != len(boxes)):
        raise ValueError(f"`boxes` ({len(boxes)}), `classes` ({len(classes)}) and `scores` "
                         f"({None if scores is None else len(scores)}) must have equal length.")

    def corners(box):
        y0, x0, y1, x1 = (int(round(v)) for v in box)
        return (x0, y0), (max(x1 - 1, x0), max(y1 - 1, y0))

    if gt_boxes is not None:
        for box in np.asarray(gt_boxes, np.float64).reshape(-1, 4):
            cv2.rectangle(picture, *corners(box), GT_COLOR, thickness)
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, max(0.3, picture.shape[0] / 600.0)
    for n, (box, cls) in enumerate(zip(boxes, classes)):
        if scores is not None and scores[n] < score_threshold:
            continue
        colour = class_color(cls)
        top_left, bottom_right = corners(box)
        cv2.rectangle(picture, top_left, bottom_right, colour, thickness)
        name = class_names[cls] if class_names is not None and 0 <= cls < len(class_names) \
            else str(cls)
        label = name if scores is None else f"{name} {scores[n]:.2f}"
        (tw, th), base = cv2.getTextSize(label, font, scale, 1)
        ty = top_left[1] - 2 if top_left[1] - th - base - 2 >= 0 else bottom_right[1] + th + 2
        cv2.rectangle(picture, (top_left[0], ty - th - base + 2), (top_left[0] + tw, ty + base - 1),
                      colour, -1)
        cv2.putText(picture, label, (top_left[0], ty), font, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return picture
