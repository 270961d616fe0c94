"""Pascal VOC XML detection annotations: a validating reader, a writer, and COCO → VOC.

Layout (as in VOCdevkit/VOC2007): ``root/Annotations/<id>.xml``, ``root/JPEGImages/<file>``
and ``root/ImageSets/Main/<split>.txt`` (one image id per line). Records use the format of
:mod:`cnn_apps.data.coco`, plus ``"difficult"`` (N,) bool and ``"name"`` (the XML stem).

Coordinates: VOC ``<bndbox>`` values are 1-based inclusive pixel indices. They are converted
to 0-based pixel-edge boxes ``(ymin − 1, xmin − 1, ymax, xmax)`` (the Detectron2 convention),
so a full-image box becomes ``(0, 0, height, width)``; the writer applies the inverse.

Example::

    data = load_voc_detection("VOCdevkit/VOC2007", split_file="val")
    record = load_voc_annotation("VOC2007/Annotations/000001.xml")
    make_voc_from_coco("instances_train.json", "voc", split="train", class_names=names)
"""

from __future__ import annotations

import os
import shutil
import warnings
import xml.etree.ElementTree as ET
from xml.sax.saxutils import escape

import numpy as np

from cnn_apps.data.coco import (CLIP_TOLERANCE, AnnotationError, DetectionDataset,
                                load_coco_detection, normalize_categories)
from cnn_apps.utils.io import atomic_write_text

__all__ = ["VOC_CLASSES", "load_voc_annotation", "load_voc_detection", "write_voc_annotation",
           "make_voc_from_coco"]

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
               "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
               "sheep", "sofa", "train", "tvmonitor")


def _text(element, tag, where, cast=str):
    child = element.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise AnnotationError(f"{where}: missing <{tag}>.")
    try:
        return cast(child.text.strip())
    except ValueError as err:
        raise AnnotationError(f"{where}: <{tag}> is not a number: {child.text!r}.") from err


def load_voc_annotation(xml_path, class_names=None, image_dir=None, image_id=None,
                        clip_tolerance=CLIP_TOLERANCE):
    """Read one VOC XML file into a record.

    Args:
        xml_path: ``.../Annotations/<id>.xml``.
        class_names: class order (index = class); default the 20 VOC classes.
        image_dir: folder of the image; default ``<xml folder>/../JPEGImages``.
        image_id: stored as ``image_id``; default the XML file stem.
        clip_tolerance: boxes outside the image by at most this many pixels are clipped with
            a warning; farther out is an error.

    Raises:
        AnnotationError naming the file (and the object index and name) for: malformed XML,
        a root other than ``<annotation>``, missing ``<filename>``/``<size>``, an object
        without ``<name>`` or ``<bndbox>`` or a coordinate, an unknown class name, an inverted
        box, or a box outside the image beyond ``clip_tolerance``.
    """
    path = os.fspath(xml_path)
    class_names = list(class_names or VOC_CLASSES)
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        raise AnnotationError(f"{path}: malformed XML ({err}).") from err
    except OSError as err:
        raise AnnotationError(f"{path}: cannot read annotation file ({err}).") from err
    if root.tag != "annotation":
        raise AnnotationError(f"{path}: root element is <{root.tag}>, expected <annotation>.")
    file_name = _text(root, "filename", path)
    size = root.find("size")
    if size is None:
        raise AnnotationError(f"{path}: missing <size>.")
    width = _text(size, "width", f"{path}: <size>", lambda t: int(float(t)))
    height = _text(size, "height", f"{path}: <size>", lambda t: int(float(t)))
    if width <= 0 or height <= 0:
        raise AnnotationError(f"{path}: <size> must be positive; got {width}x{height}.")
    boxes, classes, difficult, clipped = [], [], [], 0
    for n, obj in enumerate(root.findall("object")):
        name_el = obj.find("name")
        label = name_el.text.strip() if name_el is not None and name_el.text else None
        where = f"{path}: object #{n}" + (f" ('{label}')" if label else "")
        if label is None:
            raise AnnotationError(f"{where}: missing <name>.")
        if label not in class_names:
            raise AnnotationError(f"{where}: unknown class '{label}' (pass class_names; known: "
                                  f"{class_names}).")
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise AnnotationError(f"{where}: missing <bndbox>.")
        xmin, ymin, xmax, ymax = (_text(bndbox, tag, where, float)
                                  for tag in ("xmin", "ymin", "xmax", "ymax"))
        box = [ymin - 1.0, xmin - 1.0, ymax, xmax]
        if box[2] <= box[0] or box[3] <= box[1]:
            raise AnnotationError(f"{where}: inverted or empty box xmin={xmin:g} ymin={ymin:g} "
                                  f"xmax={xmax:g} ymax={ymax:g}.")
        over = max(-box[0], -box[1], box[2] - height, box[3] - width)
        if over > clip_tolerance:
            raise AnnotationError(f"{where}: box lies outside the {width}x{height} image by "
                                  f"{over:.3g} px.")
        if over > 0:
            box = [min(max(v, 0.0), lim) for v, lim in zip(box, (height, width) * 2)]
            clipped += 1
        boxes.append(box)
        classes.append(class_names.index(label))
        flag = obj.find("difficult")
        difficult.append(flag is not None and (flag.text or "0").strip() == "1")
    if clipped:
        warnings.warn(f"{path}: clipped {clipped} box(es) that left the image by at most "
                      f"{clip_tolerance:g} px.", UserWarning, stacklevel=2)
    stem = os.path.splitext(os.path.basename(path))[0]
    if image_dir is None:
        image_dir = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(path))),
                                 "JPEGImages")
    n = len(boxes)
    return {
        "image_path": os.path.join(os.fspath(image_dir), file_name),
        "file_name": file_name,
        "image_id": stem if image_id is None else image_id,
        "name": stem,
        "height": height,
        "width": width,
        "boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
        "classes": np.asarray(classes, np.int32),
        "category_ids": np.asarray(classes, np.int64) + 1,
        "annotation_ids": np.arange(n, dtype=np.int64),
        "iscrowd": np.zeros(n, bool),
        "areas": np.asarray([(b[2] - b[0]) * (b[3] - b[1]) for b in boxes], np.float32),
        "difficult": np.asarray(difficult, bool),
    }


def load_voc_detection(root, split_file=None, class_names=None, skip_difficult=False):
    """Read a VOC-layout folder into :class:`~cnn_apps.data.coco.DetectionDataset`.

    Args:
        root: folder with ``Annotations/`` and ``JPEGImages/``.
        split_file: ``None`` (every ``Annotations/*.xml``, sorted), a split name such as
            ``"train"`` (``root/ImageSets/Main/train.txt``) or a path to a list of ids.
        class_names: class order; default the 20 VOC classes. Category ids are index + 1.
        skip_difficult: drop objects marked ``<difficult>1``.

    Returns:
        ``(records, categories)``; ``image_id`` is the position in the split (0, 1, ...).
    """
    root = os.fspath(root)
    class_names = list(class_names or VOC_CLASSES)
    ann_dir = os.path.join(root, "Annotations")
    if not os.path.isdir(ann_dir):
        raise AnnotationError(f"{root}: no Annotations/ folder (not a VOC-layout dataset).")
    if split_file is None:
        ids = sorted(os.path.splitext(f)[0] for f in os.listdir(ann_dir) if f.endswith(".xml"))
    else:
        list_path = os.fspath(split_file)
        if not os.path.isfile(list_path):
            list_path = os.path.join(root, "ImageSets", "Main", f"{split_file}.txt")
        if not os.path.isfile(list_path):
            raise AnnotationError(f"split file '{split_file}' not found (looked for "
                                  f"{list_path}).")
        with open(list_path, encoding="utf-8") as handle:
            ids = [line.split()[0] for line in handle if line.strip()]
        missing = [i for i in ids if not os.path.isfile(os.path.join(ann_dir, f"{i}.xml"))]
        if missing:
            raise AnnotationError(f"{list_path}: {len(missing)} listed id(s) have no XML in "
                                  f"{ann_dir} (first: {missing[0]}).")
    records = []
    for position, stem in enumerate(ids):
        rec = load_voc_annotation(os.path.join(ann_dir, f"{stem}.xml"), class_names,
                                  image_dir=os.path.join(root, "JPEGImages"), image_id=position)
        if skip_difficult:
            keep = ~rec["difficult"]
            for key in ("boxes", "classes", "category_ids", "annotation_ids", "iscrowd",
                        "areas", "difficult"):
                rec[key] = rec[key][keep]
        records.append(rec)
    categories = normalize_categories(class_names)
    return DetectionDataset(records, categories)


def _fmt(value):
    return str(int(round(value))) if abs(value - round(value)) < 1e-6 else f"{value:.2f}"


def write_voc_annotation(xml_path, record, class_names, folder="VOC"):
    """Write one record as VOC XML (atomically). Boxes go back to 1-based inclusive ints.

    ``record`` needs ``file_name`` (or ``image_path``), ``height``, ``width``, ``boxes``,
    ``classes`` and optionally ``difficult``.
    """
    file_name = record.get("file_name") or os.path.basename(record["image_path"])
    lines = ["<annotation>", f"  <folder>{escape(folder)}</folder>",
             f"  <filename>{escape(file_name)}</filename>",
             f"  <size><width>{int(record['width'])}</width><height>{int(record['height'])}"
             "</height><depth>3</depth></size>", "  <segmented>0</segmented>"]
    difficult = record.get("difficult", np.zeros(len(record["boxes"]), bool))
    for box, cls, hard in zip(np.asarray(record["boxes"], np.float64).reshape(-1, 4),
                              np.asarray(record["classes"]).reshape(-1), difficult):
        ymin, xmin, ymax, xmax = box
        lines += ["  <object>", f"    <name>{escape(class_names[int(cls)])}</name>",
                  "    <pose>Unspecified</pose>", "    <truncated>0</truncated>",
                  f"    <difficult>{int(bool(hard))}</difficult>",
                  f"    <bndbox><xmin>{_fmt(xmin + 1)}</xmin><ymin>{_fmt(ymin + 1)}</ymin>"
                  f"<xmax>{_fmt(xmax)}</xmax><ymax>{_fmt(ymax)}</ymax></bndbox>", "  </object>"]
    lines.append("</annotation>")
    atomic_write_text(xml_path, "\n".join(lines) + "\n")
    return os.fspath(xml_path)


def make_voc_from_coco(json_path, voc_root, split, image_root=None, class_names=None):
    """Convert a COCO detection file to VOC layout under ``voc_root`` (for the VOC reader).

    Writes ``Annotations/<stem>.xml`` and copies each image to ``JPEGImages/`` (keeping its
    extension), then writes ``ImageSets/Main/<split>.txt`` last, so an interrupted run never
    lists an image whose files are missing. Image file stems must be unique across the splits
    written into one ``voc_root`` (VOC ids are file stems). Returns the split file's path.
    """
    data = load_coco_detection(json_path, image_root)
    names = list(class_names or data.class_names)
    if len(names) != len(data.categories):
        raise ValueError(f"`class_names` has {len(names)} names for {len(data.categories)} "
                         f"categories in {json_path}.")
    ann_dir = os.path.join(os.fspath(voc_root), "Annotations")
    img_dir = os.path.join(os.fspath(voc_root), "JPEGImages")
    os.makedirs(ann_dir, exist_ok=True)
    os.makedirs(img_dir, exist_ok=True)
    stems, seen = [], set()
    for rec in data.records:
        file_name = os.path.basename(rec["file_name"])
        stem = os.path.splitext(file_name)[0]
        if stem in seen:
            raise ValueError(f"{json_path}: two images share the file stem '{stem}'.")
        shutil.copyfile(rec["image_path"], os.path.join(img_dir, file_name))
        write_voc_annotation(os.path.join(ann_dir, f"{stem}.xml"),
                             {**rec, "file_name": file_name}, names)
        stems.append(stem)
        seen.add(stem)
    split_path = os.path.join(os.fspath(voc_root), "ImageSets", "Main", f"{split}.txt")
    atomic_write_text(split_path, "".join(f"{s}\n" for s in stems))
    return split_path
