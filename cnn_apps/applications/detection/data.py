"""Detection data: records → fixed-size images + padded normalized ground truth, box-aware
augmentation (survey S0 §3.7 data augmentation; §5.2 object detection).

Every detector sees the same model-agnostic examples:

* ``image``: float32 (S, S, 3) raw pixels 0..255, the whole image resized to S×S (aspect ratio
  not kept, as SSD and YOLO do);
* ``gt``: float32 (max_boxes, 5) rows ``(ymin, xmin, ymax, xmax, class)`` with boxes
  *normalized* to [0, 1] of the image; unused rows are ``(0, 0, 0, 0, −1)``. Valid rows come
  first. Objects beyond ``max_boxes`` are dropped (largest kept).

Augmentation (training only, all in-graph and box-aware):

* horizontal flip: ``xmin' = 1 − xmax``, ``xmax' = 1 − xmin``;
* scale jitter + random crop: a window of side ``s ∈ [min_scale, max_scale]`` (fractions of
  the image; s > 1 zooms out and pads with grey) at a random position is resized back to S×S;
  boxes are mapped into the window, clipped to [0, 1] and dropped when less than
  ``min_visible`` of their area is left (or they become thinner than 1e-3);
* external region proposals (R-CNN / SPP-net / Fast R-CNN inputs, zero rows = padding) get
  the same flip and window mapping as the ground truth (``augment_example(..., proposals)``).

Example::

    records, categories = load_detection_records(config["data"], "train")
    images, gt = records_to_arrays(records, 128, max_boxes=20)
    ds = make_detection_dataset(images, gt, batch_size=16, training=True, augment=cfg["augment"])
"""

from __future__ import annotations

import numpy as np

from cnn_apps.errors import ConfigError, DataError

__all__ = ["DATASETS", "load_detection_records", "records_to_arrays", "flip_example",
           "crop_example", "crop_boxes", "random_crop_window", "augment_example",
           "proposals_as_rows", "rows_as_proposals", "make_detection_dataset"]

DATASETS = ("shapes", "coco", "voc")
_PAD_VALUE = 114.0  # grey used where a zoomed-out window leaves the image


def load_detection_records(data_cfg: dict, split: str):
    """``DetectionDataset`` ``(records, categories)`` for ``split`` ("train" or "val").

    ``data.dataset``: ``shapes`` (generated under ``data.root`` with ``num_train``/``num_val``
    images of ``shapes_image_size`` px), ``coco`` (``data.{split}_annotations`` JSON and
    ``data.{split}_images`` folder) or ``voc`` (``data.root`` in VOC layout, split files
    ``ImageSets/Main/<data.{split}_split>.txt``, classes ``data.class_names`` or the 20 VOC
    classes).
    """
    name = data_cfg.get("dataset")
    if name not in DATASETS:
        raise ConfigError(f"data.dataset must be one of {', '.join(DATASETS)}, got '{name}'")
    if split not in ("train", "val"):
        raise ValueError(f"`split` must be 'train' or 'val'; got '{split}'.")
    if name == "shapes":
        from cnn_apps.data.shapes import load_shapes

        return load_shapes(data_cfg.get("root") or "data/shapes", split,
                           num_train=int(data_cfg.get("num_train", 256)),
                           num_val=int(data_cfg.get("num_val", 64)),
                           image_size=int(data_cfg.get("shapes_image_size", 128)),
                           max_objects=int(data_cfg.get("max_objects", 4)),
                           seed=int(data_cfg.get("shapes_seed", 0)))
    if name == "coco":
        from cnn_apps.data.coco import load_coco_detection

        ann, images = data_cfg.get(f"{split}_annotations"), data_cfg.get(f"{split}_images")
        if not ann:
            raise ConfigError(f"data.dataset=coco needs data.{split}_annotations (a COCO "
                              f"instances JSON)")
        return load_coco_detection(ann, images)
    from cnn_apps.data.voc import load_voc_detection

    if not data_cfg.get("root"):
        raise ConfigError("data.dataset=voc needs data.root (a folder with Annotations/, "
                          "JPEGImages/, ImageSets/Main/)")
    return load_voc_detection(data_cfg["root"], data_cfg.get(f"{split}_split") or split,
                              class_names=data_cfg.get("class_names") or None)


def records_to_arrays(records, image_size: int, max_boxes: int, max_images=None):
    """Decode and resize every record's image; ``(images uint8 (N, S, S, 3), gt (N, max_boxes,
    5))`` with normalized boxes (see the module doc)."""
    import cv2

    from cnn_apps.data.images import read_image

    if int(image_size) < 32:
        raise ValueError(f"`image_size` must be >= 32 pixels; got {image_size}.")
    if int(max_boxes) < 1:
        raise ValueError(f"`max_boxes` must be >= 1; got {max_boxes}.")
    records = list(records)[:max_images] if max_images else list(records)
    if not records:
        raise DataError("the detection split has no images")
    size = int(image_size)
    images = np.zeros((len(records), size, size, 3), np.uint8)
    gt = np.zeros((len(records), int(max_boxes), 5), np.float32)
    gt[..., 4] = -1.0
    for i, rec in enumerate(records):
        path = rec.get("image_path") or rec.get("file_name")
        image = read_image(path, 3)
        height, width = image.shape[:2]
        interp = cv2.INTER_AREA if max(height, width) > size else cv2.INTER_LINEAR
        images[i] = cv2.resize(image, (size, size), interpolation=interp).reshape(size, size, 3)
        boxes = np.asarray(rec["boxes"], np.float32).reshape(-1, 4)
        classes = np.asarray(rec["classes"]).reshape(-1)
        if len(boxes) > max_boxes:  # keep the largest objects
            area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
            keep = np.sort(np.argsort(-area, kind="stable")[:max_boxes])
            boxes, classes = boxes[keep], classes[keep]
        scale = np.array([height, width, height, width], np.float32)
        gt[i, :len(boxes), :4] = np.clip(boxes / scale, 0.0, 1.0)
        gt[i, :len(boxes), 4] = classes
    return images, gt


def flip_example(image, gt):
    """Mirror ``image`` (H, W, C) left-right and its ``gt`` (M, 5) boxes; padding rows stay."""
    import tensorflow as tf

    valid = gt[:, 4:5] >= 0
    flipped = tf.stack([gt[:, 0], 1.0 - gt[:, 3], gt[:, 2], 1.0 - gt[:, 1]], axis=-1)
    boxes = tf.where(valid, flipped, gt[:, :4])
    return tf.image.flip_left_right(image), tf.concat([boxes, gt[:, 4:]], axis=-1)


def crop_example(image, gt, window, min_visible=0.5):
    """Crop ``window`` ``(y0, x0, y1, x1)`` (normalized, may exceed [0, 1]: padded with grey)
    out of ``image`` and resize it back to the image's size; map ``gt`` into the window.

    A box becomes ``clip((b − (y0, x0, y0, x0)) / (h, w, h, w), 0, 1)``; it is dropped (row set
    to padding) when its clipped area is below ``min_visible`` × its unclipped area in window
    units, or its clipped height/width is below 1e-3. Valid rows are moved to the front.
    """
    import tensorflow as tf

    window = tf.cast(window, tf.float32)
    size = tf.shape(image)[:2]
    crop = tf.image.crop_and_resize(tf.cast(image, tf.float32)[None], window[None], [0], size,
                                    extrapolation_value=_PAD_VALUE)[0]
    crop.set_shape(image.shape)  # same size as the input (static where that is known)
    return crop, crop_boxes(gt, window, min_visible)


def crop_boxes(gt, window, min_visible=0.5):
    """The box half of :func:`crop_example`: ``gt`` (M, 5) rows mapped into ``window``."""
    import tensorflow as tf

    window = tf.cast(window, tf.float32)
    y0, x0, y1, x1 = window[0], window[1], window[2], window[3]
    offset = tf.stack([y0, x0, y0, x0])
    extent = tf.stack([y1 - y0, x1 - x0, y1 - y0, x1 - x0])
    mapped = (gt[:, :4] - offset) / extent
    clipped = tf.clip_by_value(mapped, 0.0, 1.0)

    def area(b):
        return tf.maximum(b[:, 2] - b[:, 0], 0.0) * tf.maximum(b[:, 3] - b[:, 1], 0.0)

    keep = ((gt[:, 4] >= 0) & (area(clipped) >= min_visible * area(mapped))
            & (clipped[:, 2] - clipped[:, 0] >= 1e-3) & (clipped[:, 3] - clipped[:, 1] >= 1e-3))
    rows = tf.concat([clipped, gt[:, 4:]], axis=-1)
    pad = tf.concat([tf.zeros_like(clipped), -tf.ones_like(gt[:, 4:])], axis=-1)
    rows = tf.where(keep[:, None], rows, pad)
    order = tf.argsort(tf.cast(~keep, tf.int32), stable=True)  # valid rows first
    return tf.gather(rows, order)


def random_crop_window(seed, min_scale, max_scale):
    """A random square window ``(y0, x0, y1, x1)`` of side ``s ~ U[min_scale, max_scale]``.

    ``s <= 1``: inside the image; ``s > 1``: the image lies inside the window (zoom out)."""
    import tensorflow as tf

    side = tf.random.stateless_uniform([], seed, min_scale, max_scale)
    offsets = tf.random.stateless_uniform([2], seed + 1)
    y0 = tf.where(side <= 1.0, offsets[0] * (1.0 - side), -offsets[0] * (side - 1.0))
    x0 = tf.where(side <= 1.0, offsets[1] * (1.0 - side), -offsets[1] * (side - 1.0))
    return tf.stack([y0, x0, y0 + side, x0 + side])


def proposals_as_rows(proposals):
    """Proposals (R, 4) (zero rows = padding) → gt-style rows (R, 5): class 0 for a real box,
    −1 for padding, so the box-aware augmentation maps them exactly like ground truth."""
    import tensorflow as tf

    proposals = tf.cast(proposals, tf.float32)
    real = tf.reduce_any(tf.not_equal(proposals, 0.0), axis=-1, keepdims=True)
    return tf.concat([proposals, tf.where(real, 0.0, -1.0)], axis=-1)


def rows_as_proposals(rows):
    """Inverse of :func:`proposals_as_rows`: dropped / padding rows become zero rows."""
    import tensorflow as tf

    return tf.where(rows[:, 4:5] >= 0, rows[:, :4], tf.zeros_like(rows[:, :4]))


def augment_example(image, gt, seed, augment: dict, proposals=None):
    """The configured random flip / scale-jitter crop / photometric jitter of one example.

    ``proposals`` (R, 4) (optional, zero rows = padding) get the same flip and window mapping
    as ``gt`` (boxes left with less than ``min_visible`` of their area are zeroed); the result
    is then ``(image, gt, proposals)`` instead of ``(image, gt)``."""
    import tensorflow as tf

    image = tf.cast(image, tf.float32)
    extra = None if proposals is None else proposals_as_rows(proposals)
    # each random choice draws from its own seed offset, and tf.cond computes only the branch
    # taken (tf.where would transform every image twice)
    if augment.get("horizontal_flip"):
        flip = tf.random.stateless_uniform([], seed) < 0.5
        image, gt = tf.cond(flip, lambda: flip_example(image, gt), lambda: (image, gt))
        if extra is not None:
            extra = tf.cond(flip, lambda: flip_example(image[:1, :1], extra)[1], lambda: extra)
    lo, hi = (float(v) for v in augment.get("scale_range") or (1.0, 1.0))
    if lo <= 0 or hi < lo:
        raise ConfigError(f"augment.scale_range must be [min, max] with 0 < min <= max; got "
                          f"{augment.get('scale_range')}")
    probability = float(augment.get("crop_probability", 0.0))
    if probability > 0 and (lo, hi) != (1.0, 1.0):
        window = random_crop_window(seed + 2, lo, hi)
        min_visible = float(augment.get("min_visible", 0.5))
        use = tf.random.stateless_uniform([], seed + 4) < probability
        image, gt = tf.cond(use, lambda: crop_example(image, gt, window, min_visible),
                            lambda: (image, gt))
        if extra is not None:
            extra = tf.cond(use, lambda: crop_boxes(extra, window, min_visible), lambda: extra)
    brightness = float(augment.get("brightness", 0.0))
    if brightness:
        image = image + tf.random.stateless_uniform([], seed + 5, -brightness,
                                                    brightness) * 255.0
    image = tf.clip_by_value(image, 0.0, 255.0)
    if extra is None:
        return image, gt
    return image, gt, rows_as_proposals(extra)


def make_detection_dataset(images, gt, batch_size: int, *, training: bool, seed: int = 0,
                           augment: dict | None = None, proposals=None):
    """Batched ``(images float32 (B, S, S, 3), gt (B, max_boxes, 5))``; training shuffles
    and applies :func:`augment_example` with a per-example stateless seed.

    With ``proposals`` (N, R, 4) the inputs become ``{"images": (B, S, S, 3), "proposals":
    (B, R, 4)}`` and the augmentation moves the proposals with the image."""
    import tensorflow as tf

    if int(batch_size) < 1:
        raise ValueError(f"`batch_size` must be >= 1; got {batch_size}.")
    if proposals is not None and (np.ndim(proposals) != 3 or np.shape(proposals)[-1] != 4
                                  or len(proposals) != len(images)):
        raise ValueError(f"`proposals` must be (N, R, 4) with N = {len(images)} images; got "
                         f"shape {np.shape(proposals)}.")
    slices = (images, gt) if proposals is None else (images, gt, proposals)
    ds = tf.data.Dataset.from_tensor_slices(slices)
    if training:
        ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
        counter = tf.data.Dataset.counter()
        ds = tf.data.Dataset.zip((ds, counter))
        aug = dict(augment or {})
        ds = ds.map(lambda item, n: augment_example(
            item[0], item[1], tf.stack([tf.cast(n, tf.int32), tf.constant(seed, tf.int32)]), aug,
            proposals=item[2] if len(item) > 2 else None),
            num_parallel_calls=tf.data.AUTOTUNE)
    else:
        ds = ds.map(lambda *item: (tf.cast(item[0], tf.float32), *item[1:]))
    if proposals is not None:
        ds = ds.map(lambda x, y, p: ({"images": x, "proposals": tf.cast(p, tf.float32)}, y))
    # No tf.data autotuning: ``model.fit`` makes a new iterator each epoch and drops the old
    # one, whose autotuning thread the drop then waits for: 6-10 s idle at the start of about
    # half the epochs of a detection run on 2 cores (a fifth of an SPP-net run). Without it
    # the parallel map uses one call per core; the batches are the same.
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.batch(int(batch_size)).prefetch(tf.data.AUTOTUNE).with_options(options)
