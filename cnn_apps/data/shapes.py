"""Built-in detection dataset: procedural shapes on scikit-image textures, written as COCO.

Needs no network: backgrounds are random crops of scikit-image's bundled sample images
(astronaut, coffee, chelsea, rocket, brick, grass, gravel, camera). Each image gets
``min_objects..max_objects`` filled shapes of four classes — ellipse, rectangle, triangle,
star — with log-uniform sizes from 6 px (COCO "small" objects) to half the image, aspect ratios
0.6–1.7, random rotation (ellipses, triangles, stars), random colours contrasting with the
background, and partial overlaps (every shape keeps at least 60% of its pixels visible).
Boxes are the tight pixel-edge boxes of each shape's *visible* pixels, as COCO's are.

Files written (standard formats, so the real readers are what a user and the tests run)::

    root/train/train_000000.png ...     root/val/val_000000.png ...
    root/annotations/instances_train.json, instances_val.json     (COCO detection)
    root/voc/{Annotations,JPEGImages,ImageSets/Main}              (only with write_voc=True)
    root/meta.json                                                 (parameters; written last)

Generation is deterministic for a seed (image i of a split depends only on (seed, split, i)),
idempotent (a complete dataset with the same parameters is reused, not rewritten) and atomic
(built in a temporary sibling folder, then renamed into place).

Example::

    paths = make_shapes_dataset("data/shapes", num_train=256, num_val=64)
    train = load_coco_detection(paths["train_annotations"], paths["train_images"])
    train.records[0]["boxes"], train.class_names
"""

from __future__ import annotations

import colorsys
import functools
import json
import math
import os

import numpy as np

from cnn_apps.data.coco import load_coco_detection, write_coco_detection
from cnn_apps.errors import DataError
from cnn_apps.utils.io import atomic_path, atomic_write_json

__all__ = ["CLASS_NAMES", "make_shapes_dataset", "load_shapes"]

CLASS_NAMES = ("ellipse", "rectangle", "triangle", "star")
GENERATOR = "cnn_apps.data.shapes"
VERSION = 1
_BACKGROUNDS = ("astronaut", "coffee", "chelsea", "rocket", "brick", "grass", "gravel", "camera")
_SPLITS = {"train": 1, "val": 2}
_MIN_VISIBLE = 0.6


@functools.lru_cache(maxsize=1)
def _background_sources():
    import skimage.data

    out = []
    for name in _BACKGROUNDS:
        image = getattr(skimage.data, name)()
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=-1)
        out.append(np.ascontiguousarray(image[..., :3]))
    return tuple(out)


def _background(rng, size):
    import cv2

    sources = _background_sources()
    source = sources[rng.integers(len(sources))]
    height, width = source.shape[:2]
    side = max(8, int(rng.uniform(0.25, 1.0) * min(height, width)))
    y = int(rng.integers(0, height - side + 1))
    x = int(rng.integers(0, width - side + 1))
    crop = source[y:y + side, x:x + side]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    image = cv2.resize(np.ascontiguousarray(crop), (size, size), interpolation=interp)
    return image.astype(np.float32) * rng.uniform(0.7, 1.1) + rng.uniform(-20, 20)


def _polygon(kind, cy, cx, half_h, half_w, angle):
    if kind == 1:  # rectangle, axis-aligned
        unit = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float64)
    elif kind == 2:  # triangle
        t = np.deg2rad([-90.0, 30.0, 150.0])
        unit = np.stack([np.cos(t), np.sin(t)], axis=1)
    else:  # five-pointed star
        t = np.deg2rad(-90.0 + 36.0 * np.arange(10))
        r = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
        unit = np.stack([r * np.cos(t), r * np.sin(t)], axis=1)
    points = unit * np.array([half_w, half_h])
    if kind != 1:
        c, s = math.cos(angle), math.sin(angle)
        points = points @ np.array([[c, s], [-s, c]])
    return np.round(points + np.array([cx, cy])).astype(np.int32)


def _shape_mask(kind, cy, cx, half_h, half_w, angle, size):
    import cv2

    mask = np.zeros((size, size), np.uint8)
    if kind == 0:
        cv2.ellipse(mask, (int(round(cx)), int(round(cy))),
                    (max(1, int(round(half_w))), max(1, int(round(half_h)))),
                    math.degrees(angle), 0, 360, 1, thickness=-1)
    else:
        cv2.fillPoly(mask, [_polygon(kind, cy, cx, half_h, half_w, angle)], 1)
    return mask.astype(bool)


def _contrasting_colour(rng, background_mean):
    best, best_dist = None, -1.0
    for _ in range(12):
        rgb = 255.0 * np.array(colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.5, 1.0),
                                                   rng.uniform(0.55, 1.0)))
        dist = float(np.linalg.norm(rgb - background_mean))
        if dist > best_dist:
            best, best_dist = rgb, dist
        if dist >= 110:
            break
    return best


def _draw_image(rng, size, min_objects, max_objects):
    """One image (uint8 RGB) and its (boxes, classes)."""
    image = _background(rng, size)
    min_side, max_side = max(6.0, 0.06 * size), 0.5 * size
    target = int(rng.integers(min_objects, max_objects + 1))
    full, visible, kinds, colours = [], [], [], []
    attempts = 0
    while len(full) < target and attempts < 40 * max(target, 1):
        attempts += 1
        kind = int(rng.integers(len(CLASS_NAMES)))
        side = math.exp(rng.uniform(math.log(min_side), math.log(max_side)))
        aspect = math.exp(rng.uniform(math.log(0.6), math.log(1.7)))
        half_h, half_w = side / math.sqrt(aspect) / 2, side * math.sqrt(aspect) / 2
        cy = rng.uniform(min(half_h, size / 2), max(size - half_h, size / 2))
        cx = rng.uniform(min(half_w, size / 2), max(size - half_w, size / 2))
        mask = _shape_mask(kind, cy, cx, half_h, half_w, rng.uniform(0, 2 * math.pi), size)
        if mask.sum() < 16:
            continue
        if any((vis & ~mask).sum() < _MIN_VISIBLE * f.sum() for vis, f in zip(visible, full)):
            continue  # would hide too much of an earlier shape
        visible = [vis & ~mask for vis in visible] + [mask.copy()]
        full.append(mask)
        kinds.append(kind)
        colours.append(_contrasting_colour(rng, image[mask].mean(axis=0)))
    for mask, colour in zip(full, colours):
        # A gentle linear shading so shapes are not perfectly flat.
        ramp = np.linspace(0.85, 1.1, size)
        if rng.random() < 0.5:
            ramp = ramp[::-1]
        shade = ramp[:, None] if rng.random() < 0.5 else ramp[None, :]
        image[mask] = np.broadcast_to(colour * shade[..., None], (size, size, 3))[mask]
    image = image + rng.normal(0.0, 4.0, image.shape)
    boxes = []
    for vis in visible:
        ys, xs = np.nonzero(vis)
        boxes.append([ys.min(), xs.min(), ys.max() + 1, xs.max() + 1])
    return (np.clip(np.round(image), 0, 255).astype(np.uint8),
            np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(kinds, np.int32))


def _paths(root, write_voc):
    root = os.fspath(root)
    paths = {"root": root, "meta": os.path.join(root, "meta.json"),
             "class_names": list(CLASS_NAMES)}
    for split in _SPLITS:
        paths[f"{split}_images"] = os.path.join(root, split)
        paths[f"{split}_annotations"] = os.path.join(root, "annotations",
                                                     f"instances_{split}.json")
    if write_voc:
        paths["voc_root"] = os.path.join(root, "voc")
    return paths


def _read_meta(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def make_shapes_dataset(root, num_train=256, num_val=64, image_size=128, seed=0,
                        max_objects=4, min_objects=1, write_voc=False):
    """Generate (or reuse) the ``shapes`` detection dataset under ``root``.

    Args:
        root: output folder. If it exists it must be empty or a previous ``shapes`` dataset
            (it is then replaced only when the parameters differ); anything else is refused.
        num_train, num_val: images per split.
        image_size: side of the square images, >= 32.
        seed: generation seed.
        min_objects, max_objects: objects per image (fewer when placement fails).
        write_voc: also write the splits in Pascal VOC layout under ``root/voc``.

    Returns:
        dict of paths: ``root``, ``train_images``, ``val_images``, ``train_annotations``,
        ``val_annotations``, ``meta``, ``class_names`` (and ``voc_root``).
    """
    from cnn_apps.data.voc import make_voc_from_coco

    if int(num_train) < 1 or int(num_val) < 0:
        raise ValueError(f"`num_train` must be >= 1 and `num_val` >= 0; got {num_train}, "
                         f"{num_val}.")
    if int(image_size) < 32:
        raise ValueError(f"`image_size` must be >= 32 pixels; got {image_size}.")
    if not 0 <= int(min_objects) <= int(max_objects):
        raise ValueError(f"need 0 <= min_objects <= max_objects; got {min_objects}, "
                         f"{max_objects}.")
    params = {"num_train": int(num_train), "num_val": int(num_val),
              "image_size": int(image_size), "seed": int(seed), "max_objects": int(max_objects),
              "min_objects": int(min_objects), "write_voc": bool(write_voc)}
    paths = _paths(root, write_voc)
    root = paths["root"]
    meta = _read_meta(paths["meta"])
    if meta and meta.get("generator") == GENERATOR and meta.get("version") == VERSION \
            and meta.get("params") == params:
        return paths
    if os.path.exists(root) and (not os.path.isdir(root) or (
            os.listdir(root) and not (meta and meta.get("generator") == GENERATOR))):
        raise DataError(f"{root}: exists and is not a shapes dataset; refusing to overwrite it "
                        f"(choose another folder or remove it).")
    counts = {"train": params["num_train"], "val": params["num_val"]}
    with atomic_path(root) as tmp:
        tmp = os.fspath(tmp)
        for split, count in counts.items():
            _write_split(tmp, split, count, params)
            if write_voc:
                make_voc_from_coco(_paths(tmp, False)[f"{split}_annotations"],
                                   os.path.join(tmp, "voc"), split,
                                   image_root=os.path.join(tmp, split),
                                   class_names=CLASS_NAMES)
        atomic_write_json(os.path.join(tmp, "meta.json"),
                          {"generator": GENERATOR, "version": VERSION, "params": params,
                           "class_names": list(CLASS_NAMES)})
    return paths


def _write_split(root, split, count, params):
    import cv2

    image_dir = os.path.join(root, split)
    os.makedirs(image_dir, exist_ok=True)
    records = []
    for index in range(count):
        rng = np.random.default_rng([params["seed"], _SPLITS[split], index])
        image, boxes, classes = _draw_image(rng, params["image_size"], params["min_objects"],
                                            params["max_objects"])
        file_name = f"{split}_{index:06d}.png"
        if not cv2.imwrite(os.path.join(image_dir, file_name),
                           cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
            raise DataError(f"could not write {os.path.join(image_dir, file_name)}.")
        records.append({"file_name": file_name, "image_id": index + 1,
                        "height": params["image_size"], "width": params["image_size"],
                        "boxes": boxes, "classes": classes})
    write_coco_detection(os.path.join(root, "annotations", f"instances_{split}.json"), records,
                         list(CLASS_NAMES),
                         info={"description": f"cnn_apps shapes dataset, {split} split",
                               "params": {k: v for k, v in params.items() if k != "write_voc"}})


def load_shapes(root, split="train", **kwargs):
    """Generate (or reuse) the dataset, then read ``split`` back with the COCO reader."""
    paths = make_shapes_dataset(root, **kwargs)
    return load_coco_detection(paths[f"{split}_annotations"], paths[f"{split}_images"])
