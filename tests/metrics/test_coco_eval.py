"""COCO evaluator adapter: values derived by hand from the COCO AP definition."""

import json

import numpy as np
import pytest

from cnn_apps.data.coco import DetectionDataset, normalize_categories, write_coco_detection
from cnn_apps.metrics.coco_eval import METRIC_NAMES, evaluate_detections

CATEGORIES = normalize_categories([{"id": 5, "name": "square"}, {"id": 9, "name": "disc"}])


def gt_dataset():
    records = [
        {"image_id": 1, "height": 100, "width": 100, "file_name": "1.png",
         "boxes": np.array([[10, 10, 50, 50], [60, 20, 90, 80]], np.float32),
         "classes": np.array([0, 1], np.int32)},
        {"image_id": 2, "height": 100, "width": 100, "file_name": "2.png",
         "boxes": np.array([[20, 30, 60, 90]], np.float32), "classes": np.array([0], np.int32)},
    ]
    return DetectionDataset(records, CATEGORIES)


def perfect_predictions(data):
    return [{"image_id": r["image_id"], "boxes": r["boxes"],
             "scores": np.full(len(r["boxes"]), 0.9), "classes": r["classes"]}
            for r in data.records]


def test_perfect_predictions_score_one():
    data = gt_dataset()
    metrics = evaluate_detections(data, perfect_predictions(data))
    assert set(METRIC_NAMES) <= set(metrics)
    for name in ("AP", "AP50", "AP75", "AR_100", "AP_medium"):
        assert metrics[name] == pytest.approx(1.0)
    assert metrics["AP_small"] == -1.0     # no ground truth under 32² px: COCO's -1


def test_shifted_box_ap_equals_fraction_of_thresholds_below_its_iou():
    data = DetectionDataset([gt_dataset().records[1]], CATEGORIES)   # one gt box 40x60
    shifted = np.array([[20, 36, 60, 96]], np.float32)              # 6 px right
    inter = 40 * 54
    iou = inter / (2 * 40 * 60 - inter)                            # 0.818...
    thresholds = np.linspace(0.5, 0.95, 10)
    expected = np.mean(thresholds <= iou)                          # AP is 1 where matched
    metrics = evaluate_detections(data, [{"image_id": 2, "boxes": shifted, "scores": [0.7],
                                          "classes": [0]}])
    assert metrics["AP"] == pytest.approx(expected)
    assert metrics["AP50"] == pytest.approx(1.0) and metrics["AP"] < 1.0


def test_image_without_predictions_halves_recall():
    data = DetectionDataset(
        [dict(gt_dataset().records[0], boxes=gt_dataset().records[0]["boxes"][:1],
              classes=np.array([0])), gt_dataset().records[1]], CATEGORIES)
    preds = [{"image_id": 1, "boxes": data.records[0]["boxes"], "scores": [0.8],
              "classes": [0]}]
    metrics = evaluate_detections(data, preds)
    # Recall reaches 0.5 at precision 1: 51 of the 101 recall points are 1, the rest 0.
    assert metrics["AP"] == pytest.approx(51 / 101)
    assert metrics["AR_100"] == pytest.approx(0.5)


def test_empty_predictions_give_zero():
    metrics = evaluate_detections(gt_dataset(), [])
    assert metrics["AP"] == 0.0 and metrics["AP50"] == 0.0 and metrics["AR_100"] == 0.0


def test_results_file_uses_xywh_and_original_category_ids(tmp_path):
    data = gt_dataset()
    out = tmp_path / "res" / "results.json"
    evaluate_detections(data, perfect_predictions(data), results_path=out)
    results = json.loads(out.read_text())
    assert len(results) == 3
    first = results[0]
    assert first["image_id"] == 1 and first["category_id"] == 5
    assert first["bbox"] == [10.0, 10.0, 40.0, 40.0]               # x, y, w, h
    assert results[1]["category_id"] == 9
    assert first["score"] == pytest.approx(0.9)


def test_json_ground_truth_matches_records_and_per_class(tmp_path):
    data = gt_dataset()
    path = write_coco_detection(tmp_path / "gt.json", data.records, data.categories)
    preds = perfect_predictions(data)
    preds[0] = dict(preds[0], classes=np.array([0, 0]))            # disc predicted as square
    from_json = evaluate_detections(str(path), preds, per_class=True)
    from_records = evaluate_detections(data, preds, per_class=True)
    for name in METRIC_NAMES:
        assert from_json[name] == pytest.approx(from_records[name])
    assert from_json["AP_per_class"]["disc"] == 0.0
    assert from_json["AP_per_class"]["square"] < 1.0              # one false positive


def test_bad_predictions_raise():
    data = gt_dataset()
    with pytest.raises(ValueError, match="image_id 77"):
        evaluate_detections(data, [{"image_id": 77, "boxes": np.zeros((0, 4)), "scores": [],
                                    "classes": []}])
    with pytest.raises(ValueError, match="class indices"):
        evaluate_detections(data, [{"image_id": 1, "boxes": np.ones((1, 4)), "scores": [1.0],
                                    "classes": [2]}])
    with pytest.raises(ValueError, match="missing 'scores'"):
        evaluate_detections(data, [{"image_id": 1, "boxes": np.ones((1, 4)), "classes": [0]}])
    with pytest.raises(ValueError, match="categories"):
        evaluate_detections(data.records, [])
