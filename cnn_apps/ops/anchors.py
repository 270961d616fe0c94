"""Anchor and default-box generators (Faster R-CNN anchors, SSD default boxes; survey S0 §5.2).

Both return a constant ``numpy`` float32 array of ``(ymin, xmin, ymax, xmax)`` boxes, computed
once when a detector is built (wrap it with ``keras.ops.convert_to_tensor`` to use it in a
graph). The row order is documented per function because a detection head's outputs must be
flattened in exactly that order.

Example::

    anchors = generate_anchors([(8, 8), (4, 4)], image_size=128, scales=[[32], [64]])
    priors = ssd_default_boxes([(8, 8), (4, 4), (2, 2)])          # normalized
    matched = match_anchors(gt_boxes, anchors)                      # cnn_apps.ops.boxes
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["generate_anchors", "ssd_default_boxes", "ssd_scales"]


def _pair(value, name):
    """``int`` or ``(a, b)`` → ``(a, b)`` positive numbers, else a ValueError naming ``name``."""
    if isinstance(value, (int, float, np.integer, np.floating)):
        value = (value, value)
    value = tuple(value)
    if len(value) != 2 or min(value) <= 0:
        raise ValueError(f"`{name}` must be a positive number or a (height, width) pair; "
                         f"got {value}.")
    return value


def _per_level(values, num_levels, name):
    """A flat sequence shared by every level, or one sequence per level."""
    values = list(values)
    if not values:
        raise ValueError(f"`{name}` must not be empty.")
    if isinstance(values[0], Sequence) or isinstance(values[0], np.ndarray):
        if len(values) != num_levels:
            raise ValueError(f"`{name}` has {len(values)} per-level entries for "
                             f"{num_levels} feature maps.")
        levels = [list(v) for v in values]
    else:
        levels = [values] * num_levels
    for level in levels:
        if not level or min(float(v) for v in level) <= 0:
            raise ValueError(f"`{name}` entries must be non-empty and positive; got {values}.")
    return levels


def _cell_centres(feature_size, stride, offset):
    fh, fw = feature_size
    cy = (np.arange(fh, dtype=np.float64) + offset) * stride[0]
    cx = (np.arange(fw, dtype=np.float64) + offset) * stride[1]
    cy, cx = np.meshgrid(cy, cx, indexing="ij")  # row-major: y outer, x inner
    return cy.reshape(-1, 1), cx.reshape(-1, 1)


def _boxes_from_centres(cy, cx, heights, widths):
    """(P, 1) centres × (S,) sizes → (P·S, 4) yxyx, sizes varying fastest."""
    heights = np.asarray(heights, np.float64)[None, :]
    widths = np.asarray(widths, np.float64)[None, :]
    boxes = np.stack([cy - heights / 2, cx - widths / 2, cy + heights / 2, cx + widths / 2],
                     axis=-1)
    return boxes.reshape(-1, 4)


def generate_anchors(feature_sizes, image_size, scales, aspect_ratios=(0.5, 1.0, 2.0),
                     strides=None, offset=0.5, normalized=False):
    """Faster R-CNN style anchors on one or several feature maps.

    At cell (i, j) of level l the anchor centre is ``((i + offset)·stride_y, (j + offset)·
    stride_x)``; for each scale s (the anchor's side √area, in pixels) and aspect ratio
    a = width/height the anchor has ``w = s·√a`` and ``h = s/√a`` (the TF Object Detection API
    and SSD convention). Faster R-CNN uses one stride-16 map with scales (128, 256, 512) ×
    ratios (0.5, 1, 2) [ext: not named in the seeds].

    Row order: level by level (as given), then row-major over cells (y outer, x inner), then
    scale (outer) × aspect ratio (inner). So ``len(scales)·len(aspect_ratios)`` consecutive rows
    belong to one cell.

    Args:
        feature_sizes: list of ``(height, width)`` (or ints for square maps), one per level.
        image_size: ``(height, width)`` or int, in pixels.
        scales: anchor sizes in pixels, shared by all levels, or one list per level.
        aspect_ratios: width/height ratios, shared or one list per level.
        strides: per-level stride (int or pair) in pixels; default image_size / feature_size.
        offset: cell-centre offset in cells (0.5 = centre of the cell).
        normalized: divide by the image size (boxes in [0, 1] units) instead of pixels.

    Returns:
        (total, 4) float32 ``(ymin, xmin, ymax, xmax)`` (not clipped), total =
        Σ_l H_l·W_l·|scales_l|·|ratios_l|.
    """
    feature_sizes = [_pair(f, "feature_sizes") for f in feature_sizes]
    if not feature_sizes:
        raise ValueError("`feature_sizes` must list at least one feature map.")
    image_size = _pair(image_size, "image_size")
    num_levels = len(feature_sizes)
    scale_levels = _per_level(scales, num_levels, "scales")
    ratio_levels = _per_level(aspect_ratios, num_levels, "aspect_ratios")
    if strides is None:
        strides = [(image_size[0] / f[0], image_size[1] / f[1]) for f in feature_sizes]
    elif isinstance(strides, (int, float)):
        strides = [strides] * num_levels
    if len(strides) != num_levels:
        raise ValueError(f"`strides` has {len(strides)} entries for {num_levels} feature maps.")
    out = []
    for size, stride, level_scales, level_ratios in zip(feature_sizes, strides, scale_levels,
                                                        ratio_levels):
        stride = _pair(stride, "strides")
        cy, cx = _cell_centres(size, stride, offset)
        s = np.repeat(np.asarray(level_scales, np.float64), len(level_ratios))
        a = np.tile(np.asarray(level_ratios, np.float64), len(level_scales))
        out.append(_boxes_from_centres(cy, cx, s / np.sqrt(a), s * np.sqrt(a)))
    anchors = np.concatenate(out, axis=0)
    if normalized:
        anchors = anchors / np.array([image_size[0], image_size[1]] * 2, np.float64)
    return anchors.astype(np.float32)


def ssd_scales(num_levels, min_scale=0.2, max_scale=0.9):
    """SSD box scales ``s_k = s_min + (s_max − s_min)(k − 1)/(m − 1)``, k = 1..m.

    With m = 1 the single scale is ``min_scale``. Returned as a list of m floats.
    """
    if num_levels < 1:
        raise ValueError(f"`num_levels` must be >= 1; got {num_levels}.")
    if not 0 < min_scale <= max_scale:
        raise ValueError(f"need 0 < min_scale <= max_scale; got {min_scale}, {max_scale}.")
    if num_levels == 1:
        return [float(min_scale)]
    step = (max_scale - min_scale) / (num_levels - 1)
    return [float(min_scale + step * k) for k in range(num_levels)]


def ssd_default_boxes(feature_sizes, min_scale=0.2, max_scale=0.9,
                      aspect_ratios=(1.0, 2.0, 0.5), extra_box_for_ratio_one=True,
                      clip=False):
    """SSD default boxes (Liu et al. 2016; survey S0 §5.2, S1), normalized coordinates.

    Level k (1..m) has scale s_k from :func:`ssd_scales`; at cell (i, j) of an H×W map the
    centre is ``((i + 0.5)/H, (j + 0.5)/W)`` and each aspect ratio a gives a box
    ``w = s_k·√a``, ``h = s_k/√a``. If the level's ratios contain 1 and
    ``extra_box_for_ratio_one``, one more square box of scale ``√(s_k·s_{k+1})`` is added, with
    ``s_{m+1} = 1`` (the TF Object Detection API's choice; the paper leaves it undefined).

    Row order: level, then row-major cells (y outer, x inner), then the level's aspect ratios
    in the given order followed by the extra box.

    Args:
        feature_sizes: ``(height, width)`` or int per level, from fine to coarse.
        aspect_ratios: width/height ratios, shared or one list per level (SSD300 uses
            (1, 2, 1/2) on some maps and (1, 2, 1/2, 3, 1/3) on others).
        clip: clip boxes to [0, 1].

    Returns:
        (total, 4) float32 normalized ``(ymin, xmin, ymax, xmax)``.
    """
    feature_sizes = [_pair(f, "feature_sizes") for f in feature_sizes]
    if not feature_sizes:
        raise ValueError("`feature_sizes` must list at least one feature map.")
    num_levels = len(feature_sizes)
    scales = ssd_scales(num_levels, min_scale, max_scale) + [1.0]
    ratio_levels = _per_level(aspect_ratios, num_levels, "aspect_ratios")
    out = []
    for k, (size, ratios) in enumerate(zip(feature_sizes, ratio_levels)):
        cy, cx = _cell_centres(size, (1.0 / size[0], 1.0 / size[1]), 0.5)
        ratios = np.asarray(ratios, np.float64)
        heights = list(scales[k] / np.sqrt(ratios))
        widths = list(scales[k] * np.sqrt(ratios))
        if extra_box_for_ratio_one and np.any(np.isclose(ratios, 1.0)):
            extra = math.sqrt(scales[k] * scales[k + 1])
            heights.append(extra)
            widths.append(extra)
        out.append(_boxes_from_centres(cy, cx, heights, widths))
    boxes = np.concatenate(out, axis=0)
    if clip:
        boxes = np.clip(boxes, 0.0, 1.0)
    return boxes.astype(np.float32)
