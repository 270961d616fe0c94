"""Anchor and SSD default-box generators: counts, centres, sizes and row order."""

import math

import numpy as np
import pytest

from cnn_apps.ops import anchors as A


def test_generate_anchors_counts_centres_and_order():
    scales, ratios = (16.0, 32.0), (0.5, 1.0, 2.0)
    anchors = A.generate_anchors([(4, 6), (2, 3)], image_size=(64, 96), scales=scales,
                                 aspect_ratios=ratios)
    assert anchors.dtype == np.float32
    assert anchors.shape == ((4 * 6 + 2 * 3) * 6, 4)
    rows = []  # explicit loop in the documented order
    for fh, fw in [(4, 6), (2, 3)]:
        sy, sx = 64 / fh, 96 / fw
        for i in range(fh):
            for j in range(fw):
                for s in scales:
                    for a in ratios:
                        h, w = s / math.sqrt(a), s * math.sqrt(a)
                        cy, cx = (i + 0.5) * sy, (j + 0.5) * sx
                        rows.append([cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2])
    np.testing.assert_allclose(anchors, np.asarray(rows), rtol=1e-5, atol=1e-4)


def test_generate_anchors_per_level_scales_strides_and_normalized():
    anchors = A.generate_anchors([8, 4], image_size=128, scales=[[16], [32, 64]],
                                 aspect_ratios=[1.0], strides=[16, 32], normalized=True)
    assert anchors.shape == (8 * 8 * 1 + 4 * 4 * 2, 4)
    first = anchors[0] * 128
    np.testing.assert_allclose(first, [0, 0, 16, 16], atol=1e-4)
    centres = (anchors[:, :2] + anchors[:, 2:]) / 2 * 128
    np.testing.assert_allclose(centres[64], [16, 16], atol=1e-4)   # level 2, cell (0, 0)
    np.testing.assert_allclose(centres[65], [16, 16], atol=1e-4)   # same cell, scale 64
    np.testing.assert_allclose(anchors[65, 2] - anchors[65, 0], 64 / 128, atol=1e-6)


def test_ssd_scales_formula():
    m = 6
    expected = [0.2 + (0.9 - 0.2) * (k - 1) / (m - 1) for k in range(1, m + 1)]
    np.testing.assert_allclose(A.ssd_scales(m), expected)
    assert A.ssd_scales(1, 0.3, 0.9) == [0.3]


def test_ssd_default_boxes_counts_centres_and_extra_box():
    sizes = [(4, 4), (2, 2), (1, 1)]
    ratios = [(1.0, 2.0, 0.5), (1.0, 2.0, 0.5, 3.0, 1 / 3), (1.0,)]
    boxes = A.ssd_default_boxes(sizes, 0.2, 0.9, aspect_ratios=ratios)
    per_cell = [4, 6, 2]
    assert boxes.shape == (16 * 4 + 4 * 6 + 1 * 2, 4)
    s = [0.2, 0.55, 0.9, 1.0]
    start = 0
    for k, ((fh, fw), r, n) in enumerate(zip(sizes, ratios, per_cell)):
        level = boxes[start:start + fh * fw * n].reshape(fh, fw, n, 4)
        start += fh * fw * n
        for i in range(fh):
            for j in range(fw):
                cy, cx = (level[i, j, :, 0] + level[i, j, :, 2]) / 2, (
                    level[i, j, :, 1] + level[i, j, :, 3]) / 2
                np.testing.assert_allclose(cy, (i + 0.5) / fh, atol=1e-6)
                np.testing.assert_allclose(cx, (j + 0.5) / fw, atol=1e-6)
        hw = level[0, 0, :, 2:] - level[0, 0, :, :2]
        expected = [[s[k] / math.sqrt(a), s[k] * math.sqrt(a)] for a in r]
        extra = math.sqrt(s[k] * s[k + 1])
        np.testing.assert_allclose(hw, expected + [[extra, extra]], rtol=1e-5)


def test_ssd_default_boxes_without_extra_and_clipped():
    boxes = A.ssd_default_boxes([3], aspect_ratios=(1.0, 2.0), extra_box_for_ratio_one=False,
                                clip=True)
    assert boxes.shape == (9 * 2, 4)
    assert boxes.min() >= 0 and boxes.max() <= 1


def test_anchor_arguments_are_validated():
    with pytest.raises(ValueError, match="feature_sizes"):
        A.generate_anchors([(4, 0)], 64, [16])
    with pytest.raises(ValueError, match="scales"):
        A.generate_anchors([4, 2], 64, [[16], [32], [64]])
    with pytest.raises(ValueError, match="aspect_ratios"):
        A.ssd_default_boxes([4], aspect_ratios=(1.0, -2.0))
    with pytest.raises(ValueError, match="min_scale"):
        A.ssd_scales(3, 0.9, 0.2)
