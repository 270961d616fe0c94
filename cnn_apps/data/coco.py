"""COCO JSON detection (and keypoint) annotations: a validating reader and a writer.

Detection datasets are lists of per-image *records* (plain dicts of numpy arrays), shared by
the COCO and VOC readers and the built-in ``shapes`` dataset::

    {"image_path": str, "file_name": str, "image_id": int, "height": int, "width": int,
     "boxes": float32 (N, 4) absolute (ymin, xmin, ymax, xmax) in pixels (pixel edges:
              a box covering columns 0..9 has xmin 0, xmax 10),
     "classes": int32 (N,) contiguous indices 0..K-1, "category_ids": int64 (N,),
     "annotation_ids": int64 (N,), "iscrowd": bool (N,), "areas": float32 (N,),
     "keypoints": float32 (N, K, 3) (x, y, visibility) -- only when the file has keypoints}

``classes`` index the ``categories`` list sorted by COCO category id, so class i is
``categories[i]``. Example::

    data = load_coco_detection("annotations/instances_val.json", image_root="val")
    data.records[0]["boxes"], data.class_names
    write_coco_detection("copy.json", data.records, data.categories)
"""

from __future__ import annotations

import json
import os
import warnings
from typing import NamedTuple

import numpy as np

from cnn_apps.errors import DataError
from cnn_apps.utils.io import atomic_write_text

__all__ = ["AnnotationError", "DetectionDataset", "load_coco_detection",
           "write_coco_detection", "normalize_categories", "CLIP_TOLERANCE"]

# Boxes that leave the image by at most this many pixels are clipped (with a warning):
# annotation tools and float round-off routinely overshoot by a fraction of a pixel.
CLIP_TOLERANCE = 1.0


class AnnotationError(DataError):
    """An annotation file is malformed; the message names the file and the annotation."""


class DetectionDataset(NamedTuple):
    """``(records, categories)`` returned by the detection readers."""

    records: list
    categories: list

    @property
    def class_names(self):
        return [c["name"] for c in self.categories]


def normalize_categories(categories):
    """Names or ``{"id", "name"}`` dicts → dicts sorted by id with a contiguous ``index``.

    A list of plain names gets ids 1..K in the given order.
    """
    out = []
    for i, cat in enumerate(categories):
        if isinstance(cat, str):
            cat = {"id": i + 1, "name": cat}
        elif not isinstance(cat, dict) or "id" not in cat or "name" not in cat:
            raise ValueError(f"`categories` entries must be names or dicts with 'id' and "
                             f"'name'; got {cat!r}.")
        out.append(dict(cat))
    out.sort(key=lambda c: c["id"])
    ids = [c["id"] for c in out]
    if len(set(ids)) != len(ids):
        raise ValueError(f"`categories` has duplicate ids: {ids}.")
    for index, cat in enumerate(out):
        cat["index"] = index
    return out


def _read_json(path):
    if not os.path.isfile(path):
        raise AnnotationError(f"{path}: annotation file not found.")
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise AnnotationError(f"{path}: not valid JSON ({err}).") from err
    if not isinstance(data, dict):
        raise AnnotationError(f"{path}: expected a JSON object with 'images', 'annotations' "
                              f"and 'categories'; got {type(data).__name__}.")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise AnnotationError(f"{path}: missing or non-list top-level key '{key}'.")
    return data


def _require(entry, keys, where):
    missing = [k for k in keys if k not in entry]
    if missing:
        raise AnnotationError(f"{where}: missing key(s) {missing}.")


def _read_categories(data, path):
    cats = []
    for i, cat in enumerate(data["categories"]):
        if not isinstance(cat, dict):
            raise AnnotationError(f"{path}: category #{i} is not an object.")
        _require(cat, ("id", "name"), f"{path}: category #{i}")
        cats.append(cat)
    try:
        return normalize_categories(cats)
    except ValueError as err:
        raise AnnotationError(f"{path}: {err}") from err


def _read_images(data, path):
    images = {}
    for i, img in enumerate(data["images"]):
        where = f"{path}: image #{i}" + (f" (id {img.get('id')})" if isinstance(img, dict) else "")
        if not isinstance(img, dict):
            raise AnnotationError(f"{where}: not an object.")
        _require(img, ("id", "file_name", "height", "width"), where)
        if img["id"] in images:
            raise AnnotationError(f"{where}: duplicate image id.")
        if not (img["height"] > 0 and img["width"] > 0):
            raise AnnotationError(f"{where}: height and width must be positive; got "
                                  f"{img['height']}x{img['width']}.")
        images[img["id"]] = img
    return images


def _check_bbox(ann, img, where, tolerance, clipped):
    bbox = ann["bbox"]
    if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4
            and all(isinstance(v, (int, float)) and np.isfinite(v) for v in bbox)):
        raise AnnotationError(f"{where}: 'bbox' must be 4 finite numbers [x, y, width, height]; "
                              f"got {bbox!r}.")
    x, y, w, h = (float(v) for v in bbox)
    if w < 0 or h < 0:
        raise AnnotationError(f"{where}: bbox {bbox} has negative width or height.")
    width, height = float(img["width"]), float(img["height"])
    box = [y, x, y + h, x + w]
    limits = [height, width, height, width]
    over = max(-box[0], -box[1], box[2] - height, box[3] - width)
    if over > tolerance:
        raise AnnotationError(f"{where}: bbox {bbox} lies outside image {img['id']} "
                              f"({img['width']}x{img['height']}) by {over:.3g} px (more than "
                              f"the {tolerance:g} px clipping tolerance).")
    if over > 0:
        box = [min(max(v, 0.0), lim) for v, lim in zip(box, limits)]
        clipped.append(ann["id"])
    return box


def load_coco_detection(json_path, image_root=None, *, clip_tolerance=CLIP_TOLERANCE,
                        drop_degenerate=True):
    """Read a COCO ``instances_*.json`` (or ``person_keypoints_*.json``) into records.

    Args:
        json_path: the annotation file.
        image_root: folder holding the images; ``image_path`` is ``image_root/file_name``.
            Default: the JSON file's own folder.
        clip_tolerance: boxes outside the image by at most this many pixels are clipped and
            reported in one ``UserWarning``; farther out is an error.
        drop_degenerate: drop boxes of zero width or height (after clipping), with a warning;
            they have no area and break box encoding.

    Returns:
        :class:`DetectionDataset` ``(records, categories)``; one record per image, in file
        order, including images without annotations. ``categories`` are
        ``{"id", "name", "index", ...}`` dicts sorted by id (``index`` = class index).

    Raises:
        AnnotationError (a ``ValueError``) naming the file and the annotation id for: a
        missing file, invalid JSON, missing keys, a bbox that is not 4 numbers or has a
        negative width/height, a bbox outside its image beyond ``clip_tolerance``, an
        unknown category id, an annotation whose image id is not listed, and keypoints whose
        length is not 3·K.
    """
    path = os.fspath(json_path)
    data = _read_json(path)
    categories = _read_categories(data, path)
    index_of = {c["id"]: c["index"] for c in categories}
    images = _read_images(data, path)
    root = os.fspath(image_root) if image_root is not None else os.path.dirname(
        os.path.abspath(path))
    has_keypoints = any(isinstance(a, dict) and "keypoints" in a for a in data["annotations"])
    per_image = {img_id: [] for img_id in images}
    clipped, degenerate = [], []
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict):
            raise AnnotationError(f"{path}: annotation #{i} is not an object.")
        where = f"{path}: annotation id {ann['id']}" if "id" in ann else (
            f"{path}: annotation #{i} (no 'id')")
        _require(ann, ("id", "image_id", "category_id", "bbox"), where)
        if ann["image_id"] not in images:
            raise AnnotationError(f"{where}: refers to image id {ann['image_id']}, which is not "
                                  f"in 'images'.")
        if ann["category_id"] not in index_of:
            raise AnnotationError(f"{where}: unknown category id {ann['category_id']} (known: "
                                  f"{sorted(index_of)}).")
        box = _check_bbox(ann, images[ann["image_id"]], where, clip_tolerance, clipped)
        if box[2] <= box[0] or box[3] <= box[1]:
            if drop_degenerate:
                degenerate.append(ann["id"])
                continue
        keypoints = None
        if has_keypoints:
            keypoints = ann.get("keypoints", [])
            cat_kps = next(c for c in categories if c["id"] == ann["category_id"]).get(
                "keypoints")
            expected = 3 * len(cat_kps) if cat_kps else len(keypoints)
            if len(keypoints) % 3 or (keypoints and len(keypoints) != expected):
                raise AnnotationError(f"{where}: 'keypoints' has {len(keypoints)} values; "
                                      f"expected 3 per keypoint ({expected}).")
        per_image[ann["image_id"]].append((ann, box, keypoints))
    if clipped:
        warnings.warn(f"{path}: clipped {len(clipped)} box(es) that left their image by at "
                      f"most {clip_tolerance:g} px (annotation ids {clipped[:5]}"
                      f"{'...' if len(clipped) > 5 else ''}).", UserWarning, stacklevel=2)
    if degenerate:
        warnings.warn(f"{path}: dropped {len(degenerate)} zero-width/height box(es) "
                      f"(annotation ids {degenerate[:5]}{'...' if len(degenerate) > 5 else ''}).",
                      UserWarning, stacklevel=2)
    num_kps = max([len(k) // 3 for items in per_image.values() for _, _, k in items if k]
                  + [len(c.get("keypoints") or []) for c in categories])
    records = []
    for img_id, img in images.items():
        items = per_image[img_id]
        record = {
            "image_path": os.path.join(root, img["file_name"]),
            "file_name": img["file_name"],
            "image_id": img_id,
            "height": int(img["height"]),
            "width": int(img["width"]),
            "boxes": np.asarray([b for _, b, _ in items], np.float32).reshape(-1, 4),
            "classes": np.asarray([index_of[a["category_id"]] for a, _, _ in items], np.int32),
            "category_ids": np.asarray([a["category_id"] for a, _, _ in items], np.int64),
            "annotation_ids": np.asarray([a["id"] for a, _, _ in items], np.int64),
            "iscrowd": np.asarray([bool(a.get("iscrowd", 0)) for a, _, _ in items], bool),
            "areas": np.asarray([a.get("area", (b[2] - b[0]) * (b[3] - b[1]))
                                 for a, b, _ in items], np.float32),
        }
        if has_keypoints:
            kps = np.zeros((len(items), num_kps, 3), np.float32)
            for n, (_, _, k) in enumerate(items):
                if k:
                    kps[n] = np.asarray(k, np.float32).reshape(-1, 3)
            record["keypoints"] = kps
        records.append(record)
    return DetectionDataset(records, categories)


def write_coco_detection(json_path, records, categories, image_root=None, info=None):
    """Write records as a COCO detection JSON (atomically: temporary file, then rename).

    Args:
        records: dicts with ``boxes`` (absolute yxyx), ``classes`` (indices into the sorted
            ``categories``) and ``height``/``width``; ``file_name`` (else taken from
            ``image_path`` relative to ``image_root``, or its base name), and optionally
            ``image_id`` (default: position + 1), ``iscrowd``, ``areas``, ``keypoints``.
        categories: names or ``{"id", "name"}`` dicts (see :func:`normalize_categories`).

    Returns:
        the path written.
    """
    categories = normalize_categories(categories)
    images, annotations = [], []
    next_ann_id = 1
    for position, rec in enumerate(records):
        for key in ("boxes", "classes", "height", "width"):
            if key not in rec:
                raise ValueError(f"`records[{position}]` is missing '{key}'.")
        if "file_name" in rec:
            file_name = rec["file_name"]
        elif image_root is not None:
            file_name = os.path.relpath(rec["image_path"], image_root)
        else:
            file_name = os.path.basename(rec["image_path"])
        image_id = int(rec.get("image_id", position + 1))
        images.append({"id": image_id, "file_name": file_name, "height": int(rec["height"]),
                       "width": int(rec["width"])})
        boxes = np.asarray(rec["boxes"], np.float64).reshape(-1, 4)
        classes = np.asarray(rec["classes"]).reshape(-1)
        if len(classes) != len(boxes) or (len(classes) and not (
                0 <= classes.min() and classes.max() < len(categories))):
            raise ValueError(f"`records[{position}]`: 'classes' must hold {len(boxes)} indices "
                             f"in [0, {len(categories)}).")
        for n, (box, cls) in enumerate(zip(boxes, classes)):
            w, h = box[3] - box[1], box[2] - box[0]
            ann = {"id": next_ann_id, "image_id": image_id,
                   "category_id": categories[int(cls)]["id"],
                   "bbox": [round(float(v), 4) for v in (box[1], box[0], w, h)],
                   "area": float(rec["areas"][n]) if "areas" in rec else round(float(w * h), 4),
                   "iscrowd": int(rec["iscrowd"][n]) if "iscrowd" in rec else 0}
            if "keypoints" in rec:
                kps = np.asarray(rec["keypoints"][n], np.float64).reshape(-1, 3)
                ann["keypoints"] = [round(float(v), 4) for v in kps.reshape(-1)]
                ann["num_keypoints"] = int((kps[:, 2] > 0).sum())
            annotations.append(ann)
            next_ann_id += 1
    cats = [{k: v for k, v in c.items() if k != "index"} for c in categories]
    data = {"info": info or {"description": "written by cnn_apps"}, "images": images,
            "annotations": annotations, "categories": cats}
    atomic_write_text(json_path, json.dumps(data))
    return os.fspath(json_path)
