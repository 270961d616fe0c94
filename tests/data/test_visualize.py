"""draw_detections: outlines in class colours, ground truth, thresholds, input untouched."""

import numpy as np
import pytest

from cnn_apps.data.visualize import GT_COLOR, class_color, draw_detections


def test_boxes_drawn_in_class_colours_on_a_copy():
    image = np.zeros((60, 80, 3), np.uint8)
    boxes = np.array([[30, 10, 50, 40], [5, 50, 20, 70]], np.float32)
    out = draw_detections(image, boxes, [0, 2], [0.9, 0.8], ["a", "b", "c"])
    assert out.shape == (60, 80, 3) and out.dtype == np.uint8
    assert image.sum() == 0                                    # input not modified
    # Outline rows ymin..ymax-1, columns xmin..xmax-1 (left edge column 10, bottom row 49).
    np.testing.assert_array_equal(out[40, 10], class_color(0))
    np.testing.assert_array_equal(out[49, 25], class_color(0))
    np.testing.assert_array_equal(out[12, 69], class_color(2))
    np.testing.assert_array_equal(out[40, 25], 0)              # interior untouched
    assert class_color(0) != class_color(2)


def test_ground_truth_threshold_gray_and_float_inputs():
    gray = np.full((40, 40), 0.5, np.float32)                  # float in [0, 1], 2-D
    out = draw_detections(gray, [[5, 5, 30, 30]], [1], [0.1], gt_boxes=[[10, 10, 20, 20]],
                          score_threshold=0.5)
    assert out.shape == (40, 40, 3)
    np.testing.assert_array_equal(out[15, 10], GT_COLOR)
    np.testing.assert_array_equal(out[20, 5], [128, 128, 128])  # low-score box skipped


def test_mismatched_lengths_raise():
    with pytest.raises(ValueError, match="equal length"):
        draw_detections(np.zeros((8, 8, 3), np.uint8), np.zeros((2, 4)), [0], [0.5, 0.4])
    with pytest.raises(ValueError, match="image"):
        draw_detections(np.zeros((8, 8, 5)), np.zeros((0, 4)), [])
