"""COCO box AP through the reference evaluator (``pycocotools`` ``COCOeval``, iouType bbox).

A thin adapter: converts ground-truth records (or a COCO JSON file) and per-image predictions
in the package's conventions — absolute ``(ymin, xmin, ymax, xmax)`` boxes and contiguous
class indices — into COCO's ``[x, y, width, height]`` results with original category ids,
runs ``evaluate``/``accumulate``/``summarize`` quietly and returns the summary numbers.

Metric definitions are pycocotools': AP is the mean over IoU thresholds 0.50:0.05:0.95 of the
101-point interpolated precision; AP50/AP75 at one threshold; AP_small/medium/large by gt
area (< 32², 32²–96², > 96² px); AR_100 is recall with at most 100 detections per image.
A value of −1 means "no ground truth in that category/area range" (pycocotools'
convention). Pascal VOC "difficult" objects count as ordinary ground truth here (the COCO
protocol has no such flag): drop them when loading if they should not count.

Example::

    gt = load_coco_detection("annotations/instances_val.json", "val")
    preds = [{"image_id": r["image_id"], "boxes": b, "scores": s, "classes": c} ...]
    metrics = evaluate_detections(gt, preds, results_path="runs/det/results.json")
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os

import numpy as np

from cnn_apps.data.coco import AnnotationError, normalize_categories
from cnn_apps.utils.io import atomic_write_text

__all__ = ["evaluate_detections", "predictions_to_coco_results", "METRIC_NAMES"]

METRIC_NAMES = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large", "AR_100")
_STAT_INDEX = {"AP": 0, "AP50": 1, "AP75": 2, "AP_small": 3, "AP_medium": 4, "AP_large": 5,
               "AR_100": 8}


def _gt_from_json(path):
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError) as err:
        raise AnnotationError(f"{path}: cannot read COCO ground truth ({err}).") from err
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key) if isinstance(data, dict) else None, list):
            raise AnnotationError(f"{path}: missing or non-list top-level key '{key}'.")
    for ann in data["annotations"]:  # pycocotools needs these; fill them as COCO defines them
        if "area" not in ann and "bbox" in ann:
            ann["area"] = float(ann["bbox"][2]) * float(ann["bbox"][3])
        ann.setdefault("iscrowd", 0)
    return data, normalize_categories(data["categories"])


def _gt_from_records(records, categories):
    if categories is None:
        raise ValueError("`categories` is required when the ground truth is a list of records "
                         "(pass the DetectionDataset, or the categories list).")
    categories = normalize_categories(categories)
    images, annotations = [], []
    for position, rec in enumerate(records):
        image_id = rec.get("image_id", position + 1)
        images.append({"id": image_id, "height": int(rec["height"]), "width": int(rec["width"]),
                       "file_name": rec.get("file_name", str(image_id))})
        boxes = np.asarray(rec["boxes"], np.float64).reshape(-1, 4)
        for n, (box, cls) in enumerate(zip(boxes, np.asarray(rec["classes"]).reshape(-1))):
            w, h = box[3] - box[1], box[2] - box[0]
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id,
                "category_id": categories[int(cls)]["id"],
                "bbox": [float(box[1]), float(box[0]), float(w), float(h)],
                "area": float(rec["areas"][n]) if "areas" in rec else float(w * h),
                "iscrowd": int(rec["iscrowd"][n]) if "iscrowd" in rec else 0})
    cats = [{k: v for k, v in c.items() if k != "index"} for c in categories]
    return {"images": images, "annotations": annotations, "categories": cats}, categories


def predictions_to_coco_results(predictions, categories, image_ids=None):
    """Per-image predictions → COCO results list ``[{image_id, category_id, bbox, score}]``.

    Args:
        predictions: iterable of dicts with ``image_id``, ``boxes`` (K, 4) absolute yxyx,
            ``scores`` (K,), ``classes`` (K,) contiguous class indices.
        categories: the dataset's categories (class i ↔ i-th category by sorted id).
        image_ids: optional set of valid image ids, to reject predictions for unknown images.
    """
    categories = normalize_categories(categories)
    results = []
    for n, pred in enumerate(predictions):
        for key in ("image_id", "boxes", "scores", "classes"):
            if key not in pred:
                raise ValueError(f"`predictions[{n}]` is missing '{key}'.")
        image_id = pred["image_id"]
        if isinstance(image_id, np.generic):
            image_id = image_id.item()
        if image_ids is not None and image_id not in image_ids:
            raise ValueError(f"`predictions[{n}]` has image_id {image_id!r}, which is not in "
                             f"the ground truth.")
        boxes = np.asarray(pred["boxes"], np.float64).reshape(-1, 4)
        scores = np.asarray(pred["scores"], np.float64).reshape(-1)
        classes = np.asarray(pred["classes"]).reshape(-1).astype(np.int64)
        if not len(boxes) == len(scores) == len(classes):
            raise ValueError(f"`predictions[{n}]`: boxes ({len(boxes)}), scores ({len(scores)}) "
                             f"and classes ({len(classes)}) must have equal length.")
        if len(classes) and (classes.min() < 0 or classes.max() >= len(categories)):
            raise ValueError(f"`predictions[{n}]`: class indices must be in [0, "
                             f"{len(categories)}); got {classes.min()}..{classes.max()}.")
        for box, score, cls in zip(boxes, scores, classes):
            results.append({"image_id": image_id, "category_id": categories[int(cls)]["id"],
                            "bbox": [float(box[1]), float(box[0]), float(box[3] - box[1]),
                                     float(box[2] - box[0])],
                            "score": float(score)})
    return results


def evaluate_detections(ground_truth, predictions, categories=None, results_path=None,
                        max_detections=100, per_class=False):
    """COCO box AP of ``predictions`` against ``ground_truth`` with pycocotools.

    Args:
        ground_truth: a COCO JSON path, a :class:`~cnn_apps.data.coco.DetectionDataset`
            ``(records, categories)``, or a list of records (then pass ``categories``).
        predictions: per-image dicts ``{"image_id", "boxes" (K, 4) absolute yxyx, "scores"
            (K,), "classes" (K,)}``. Images without an entry have no detections; an empty
            list gives AP 0.
        results_path: if given, the COCO results JSON (xywh boxes, category ids) is written
            there (atomically).
        max_detections: detections per image considered (COCO's default 100).
        per_class: also return ``"AP_per_class"`` ``{class name: AP}``.

    Returns:
        dict with float ``AP, AP50, AP75, AP_small, AP_medium, AP_large, AR_100``.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if isinstance(ground_truth, (str, os.PathLike)):
        gt_data, categories = _gt_from_json(ground_truth)
    else:
        if isinstance(ground_truth, tuple) and len(ground_truth) == 2 and categories is None:
            ground_truth, categories = ground_truth
        gt_data, categories = _gt_from_records(ground_truth, categories)
    image_ids = {img["id"] for img in gt_data["images"]}
    results = predictions_to_coco_results(predictions, categories, image_ids)
    if results_path is not None:
        atomic_write_text(results_path, json.dumps(results))
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt_data)
        coco_gt.createIndex()
        if results:
            coco_dt = coco_gt.loadRes(copy.deepcopy(results))
        else:  # loadRes cannot take an empty list; an empty result set scores 0
            coco_dt = COCO()
            coco_dt.dataset = {"images": list(gt_data["images"]), "annotations": [],
                               "categories": copy.deepcopy(gt_data["categories"])}
            coco_dt.createIndex()
        evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
        evaluator.params.maxDets = [1, 10, int(max_detections)]
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = evaluator.stats
    metrics = {name: float(stats[i]) for name, i in _STAT_INDEX.items()}
    if per_class:
        precision = evaluator.eval["precision"]  # (T, R, K, area, maxDets)
        per = {}
        for k, cat in enumerate(categories):
            p = precision[:, :, k, 0, -1]
            p = p[p > -1]
            per[cat["name"]] = float(p.mean()) if p.size else -1.0
        metrics["AP_per_class"] = per
    return metrics
