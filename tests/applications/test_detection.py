"""Detection task: box-aware augmentation against numpy, SSD multibox and YOLO v1 losses against
numpy loops of the papers' formulas, training steps, COCO evaluation, serving signatures with
NMS, and ONNX parity of the raw one-stage models."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from cnn_apps.applications.detection import (TASK, SSDMultiboxLoss, YoloV1Loss, YoloV3Loss,
                                             crop_example,
                                             flip_example, get_detector,
                                             make_detection_dataset, records_to_arrays)
from cnn_apps.applications.detection.data import augment_example
from cnn_apps.errors import ConfigError
from cnn_apps.ops import ssd_default_boxes
from tests.conftest import _yaml

pytestmark = pytest.mark.tf_only

CLASS_NAMES = ["ellipse", "rectangle", "triangle", "star"]


def tiny_detection_config(root, name="tiny", **overrides):
    from cnn_apps.config import load_config

    values = {"name": name, "backbone": "resnet18", "backbone_args": {"width": 8},
              "image_size": 64, "epochs": 1, "batch_size": 4, "learning_rate": 0.003,
              "ssd": {"extra_channels": 16}, "yolo": {"head_channels": 16, "head_layers": 1},
              "data": {"root": str(root), "num_train": 8, "num_val": 4,
                       "shapes_image_size": 64, "max_boxes": 6},
              "export": {"formats": []}, **overrides}
    return load_config("detection", overrides=[f"{k}={_yaml(v)}" for k, v in values.items()])


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory):
    return tmp_path_factory.mktemp("det_shapes") / "shapes"


@pytest.fixture(scope="module")
def ssd_run(tmp_path_factory, shapes_root):
    from cnn_apps.training import train

    config = tiny_detection_config(shapes_root)
    root = tmp_path_factory.mktemp("det_runs")
    return train("detection", config, runs_root=root, verbose=0, export=False), config


# -- numpy references -----------------------------------------------------------------------
def np_iou(a, b):
    ih = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iw = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ih * iw
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def np_ssd_loss(gt, raw, anchors, ratio=3.0, variances=(0.1, 0.1, 0.2, 0.2)):
    """Liu et al. 2016 multibox loss, one image at a time with explicit loops."""
    losses = []
    for n in range(len(gt)):
        rows = gt[n][gt[n, :, 4] >= 0]
        num_a = len(anchors)
        iou = np.array([[np_iou(g[:4], a) for a in anchors] for g in rows]).reshape(len(rows),
                                                                                  num_a)
        matched = -np.ones(num_a, int)
        for a in range(num_a):
            if len(rows) and iou[:, a].max() >= 0.5:
                matched[a] = int(np.argmax(iou[:, a]))
        for m in reversed(range(len(rows))):  # lowest gt index wins a contested anchor
            if iou[m].max() > 0:
                matched[int(np.argmax(iou[m]))] = m
        logits = raw[n, :, 4:]
        log_softmax = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        target = np.where(matched >= 0, rows[np.maximum(matched, 0), 4].astype(int) + 1
                          if len(rows) else 0, 0)
        ce = -log_softmax[np.arange(num_a), target]
        loc = 0.0
        for a in np.flatnonzero(matched >= 0):
            g, p = rows[matched[a], :4], anchors[a]
            gcy, gcx, gh, gw = (g[0] + g[2]) / 2, (g[1] + g[3]) / 2, g[2] - g[0], g[3] - g[1]
            acy, acx, ah, aw = (p[0] + p[2]) / 2, (p[1] + p[3]) / 2, p[2] - p[0], p[3] - p[1]
            t = np.array([(gcy - acy) / ah / variances[0], (gcx - acx) / aw / variances[1],
                          np.log(gh / ah) / variances[2], np.log(gw / aw) / variances[3]])
            d = raw[n, a, :4] - t
            loc += np.where(np.abs(d) < 1, 0.5 * d * d, np.abs(d) - 0.5).sum()
        positives = np.flatnonzero(matched >= 0)
        negatives = np.flatnonzero(matched < 0)
        hard = negatives[np.argsort(-ce[negatives])][:int(round(ratio * len(positives)))]
        conf = ce[positives].sum() + ce[hard].sum()
        losses.append((conf + loc) / max(len(positives), 1))
    return np.array(losses)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def np_yolo_loss(gt, raw, s, b, c, l_coord=5.0, l_noobj=0.5, rescore=True):
    """Redmon et al. 2016 sum-squared loss with explicit loops over images, cells, boxes."""
    out = []
    for n in range(len(gt)):
        owner = {}
        for row in gt[n]:
            if row[4] < 0:
                continue
            cy, cx = (row[0] + row[2]) / 2, (row[1] + row[3]) / 2
            cell = (min(int(np.floor(cy * s)), s - 1), min(int(np.floor(cx * s)), s - 1))
            owner.setdefault(cell, row)  # first object claims the cell
        total = 0.0
        for i in range(s):
            for j in range(s):
                cell = raw[n, i, j]
                params = sigmoid(cell[:5 * b].reshape(b, 5))
                logits = cell[5 * b:]
                probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
                truth = owner.get((i, j))
                boxes = []
                for k in range(b):
                    x, y, sw, sh = params[k, :4]
                    pcy, pcx, ph, pw = (i + y) / s, (j + x) / s, sh ** 2, sw ** 2
                    boxes.append([pcy - ph / 2, pcx - pw / 2, pcy + ph / 2, pcx + pw / 2])
                resp = -1
                ious = np.zeros(b)
                if truth is not None:
                    ious = np.array([np_iou(bx, truth[:4]) for bx in boxes])
                    resp = int(np.argmax(ious))
                    onehot = np.eye(c)[int(truth[4])]
                    total += ((probs - onehot) ** 2).sum()
                for k in range(b):
                    conf = params[k, 4]
                    if k == resp:
                        g = truth
                        tx = (g[1] + g[3]) / 2 * s - j
                        ty = (g[0] + g[2]) / 2 * s - i
                        tw, th = np.sqrt(g[3] - g[1]), np.sqrt(g[2] - g[0])
                        total += l_coord * ((params[k, 0] - tx) ** 2 + (params[k, 1] - ty) ** 2)
                        total += l_coord * ((params[k, 2] - tw) ** 2 + (params[k, 3] - th) ** 2)
                        total += (conf - (ious[k] if rescore else 1.0)) ** 2
                    else:
                        total += l_noobj * conf ** 2
        out.append(total)
    return np.array(out)


def np_bce(logit, target):
    p = sigmoid(logit)
    return -(target * np.log(p) + (1 - target) * np.log(1 - p))


def np_yolo_v3_loss(gt, raw, grids, anchors, c, ignore_iou, box_weight=1.0, assign_iou=1.0):
    """YOLOv3 loss with explicit loops: best-shape anchor assignment (then, with assign_iou
    < 1, every anchor of shape IoU >= assign_iou; first claim wins), ignore mask, BCE."""
    table, offset = [], 0
    for g, level in zip(grids, anchors):
        for i in range(g):
            for j in range(g):
                for k in range(3):
                    table.append((i, j, g, level[k][0], level[k][1]))
    flat = [a for level in anchors for a in level]

    def predictor(r, anchor):
        scale, k = anchor // 3, anchor % 3
        g = grids[scale]
        i = min(int(np.floor((r[0] + r[2]) / 2 * g)), g - 1)
        j = min(int(np.floor((r[1] + r[3]) / 2 * g)), g - 1)
        return sum(3 * q * q for q in grids[:scale]) + (i * g + j) * 3 + k

    out = []
    for n in range(len(gt)):
        rows = [r for r in gt[n] if r[4] >= 0]
        owner, shape_ious = {}, []
        for r in rows:
            h, w = r[2] - r[0], r[3] - r[1]
            ious = [min(h, ah) * min(w, aw) / (h * w + ah * aw - min(h, ah) * min(w, aw))
                    for ah, aw in flat]
            shape_ious.append(ious)
            owner.setdefault(predictor(r, int(np.argmax(ious))), r)
        if assign_iou < 1.0:
            for r, ious in zip(rows, shape_ious):
                for anchor in range(9):
                    if ious[anchor] >= assign_iou:
                        owner.setdefault(predictor(r, anchor), r)
        total = 0.0
        for a, (i, j, g, ah, aw) in enumerate(table):
            t = raw[n, a]
            cy, cx = (i + sigmoid(t[1])) / g, (j + sigmoid(t[0])) / g
            ph, pw = ah * np.exp(t[3]), aw * np.exp(t[2])
            box = [cy - ph / 2, cx - pw / 2, cy + ph / 2, cx + pw / 2]
            if a in owner:
                r = owner[a]
                h, w = r[2] - r[0], r[3] - r[1]
                tx, ty = (r[1] + r[3]) / 2 * g - j, (r[0] + r[2]) / 2 * g - i
                total += box_weight * (2 - w * h) * (
                    (sigmoid(t[0]) - tx) ** 2 + (sigmoid(t[1]) - ty) ** 2
                    + (t[2] - np.log(w / aw)) ** 2 + (t[3] - np.log(h / ah)) ** 2)
                total += np_bce(t[4], 1.0)
                total += sum(np_bce(t[5 + q], float(q == int(r[4]))) for q in range(c))
            elif max([np_iou(box, r[:4]) for r in rows], default=0.0) < ignore_iou:
                total += np_bce(t[4], 0.0)
        out.append(total)
    return np.array(out)


def padded_gt(rows, max_boxes):
    gt = np.zeros((max_boxes, 5), np.float32)
    gt[:, 4] = -1
    gt[:len(rows)] = np.asarray(rows, np.float32).reshape(-1, 5)
    return gt


def check_serving_detections(sig, images, threshold):
    """Call a ``serving_default`` signature on PNG bytes of ``images``: the TF OD API outputs,
    at least one detection per image, valid 1-based classes, and no two same-class boxes
    overlapping more than the NMS ``threshold``. Returns the outputs as numpy arrays."""
    import cv2

    assert set(sig.structured_outputs) == {"detection_boxes", "detection_scores",
                                           "detection_classes", "num_detections"}
    blobs = [cv2.imencode(".png", cv2.cvtColor(im, cv2.COLOR_RGB2BGR))[1].tobytes()
             for im in images]
    out = {k: v.numpy() for k, v in sig(image_bytes=tf.constant(blobs)).items()}
    assert out["detection_boxes"].shape == (len(images), 100, 4)
    for i in range(len(images)):
        n = int(out["num_detections"][i])
        assert n > 0
        boxes, classes = out["detection_boxes"][i, :n], out["detection_classes"][i, :n]
        assert classes.min() >= 1 and classes.max() <= len(CLASS_NAMES)
        for cls in np.unique(classes):
            iou = pairwise_iou(boxes[classes == cls])
            np.fill_diagonal(iou, 0)
            assert iou.max(initial=0.0) <= threshold + 1e-5
    return out


# -- augmentation -----------------------------------------------------------------------------
def test_flip_mirrors_boxes_and_pixels_exactly():
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 255, (16, 12, 3)).astype(np.float32)
    gt = padded_gt([[0.1, 0.2, 0.5, 0.4, 2], [0.3, 0.0, 0.9, 0.75, 0]], 4)
    out_image, out_gt = flip_example(tf.constant(image), tf.constant(gt))
    expected = gt.copy()
    expected[:2, 1], expected[:2, 3] = 1.0 - gt[:2, 3], 1.0 - gt[:2, 1]
    np.testing.assert_allclose(out_gt.numpy(), expected, atol=1e-7)
    np.testing.assert_array_equal(out_image.numpy(), image[:, ::-1])


def np_crop_boxes(gt, window, min_visible):
    y0, x0, y1, x1 = window
    kept = []
    for row in gt:
        if row[4] < 0:
            continue
        mapped = np.array([(row[0] - y0) / (y1 - y0), (row[1] - x0) / (x1 - x0),
                           (row[2] - y0) / (y1 - y0), (row[3] - x0) / (x1 - x0)])
        clipped = np.clip(mapped, 0, 1)
        area = lambda b: max(b[2] - b[0], 0) * max(b[3] - b[1], 0)  # noqa: E731
        if (area(clipped) >= min_visible * area(mapped) and clipped[2] - clipped[0] >= 1e-3
                and clipped[3] - clipped[1] >= 1e-3):
            kept.append([*clipped, row[4]])
    return padded_gt(kept, len(gt))


@pytest.mark.parametrize("window", [(0.2, 0.1, 0.7, 0.6), (-0.2, -0.1, 1.1, 1.2),
                                    (0.5, 0.5, 1.0, 1.0)])
def test_crop_clips_and_drops_boxes_like_numpy(window):
    gt = padded_gt([[0.1, 0.1, 0.3, 0.3, 1],      # mostly outside the first window
                    [0.25, 0.15, 0.6, 0.5, 3],    # inside
                    [0.6, 0.45, 0.95, 0.8, 0],    # straddles the border
                    [0.0, 0.0, 0.05, 0.9, 2]], 6)
    image = np.random.default_rng(1).uniform(0, 255, (20, 20, 3)).astype(np.float32)
    out_image, out_gt = crop_example(tf.constant(image), tf.constant(gt),
                                     tf.constant(window, tf.float32), min_visible=0.5)
    np.testing.assert_allclose(out_gt.numpy(), np_crop_boxes(gt, window, 0.5), atol=1e-6)
    assert out_image.shape == image.shape


def test_full_window_crop_is_identity():
    image = np.random.default_rng(2).uniform(0, 255, (10, 10, 3)).astype(np.float32)
    gt = padded_gt([[0.1, 0.2, 0.5, 0.6, 1]], 3)
    out_image, out_gt = crop_example(tf.constant(image), tf.constant(gt),
                                     tf.constant([0.0, 0.0, 1.0, 1.0]))
    np.testing.assert_allclose(out_image.numpy(), image, atol=1e-3)
    np.testing.assert_allclose(out_gt.numpy(), gt, atol=1e-7)


def test_random_augmentation_keeps_boxes_valid():
    gt = padded_gt([[0.1, 0.1, 0.3, 0.3, 1], [0.4, 0.5, 0.9, 0.95, 2]], 5)
    image = np.full((16, 16, 3), 100, np.float32)
    augment = {"horizontal_flip": True, "scale_range": [0.4, 1.5], "crop_probability": 1.0,
               "min_visible": 0.5, "brightness": 0.2}
    for seed in range(40):
        out_image, out_gt = augment_example(tf.constant(image), tf.constant(gt),
                                            tf.constant([seed, 7]), augment)
        rows = out_gt.numpy()
        valid = rows[:, 4] >= 0
        assert set(rows[valid, 4]) <= {1.0, 2.0}
        assert np.all(rows[valid, :4] >= 0) and np.all(rows[valid, :4] <= 1)
        assert np.all(rows[valid, 2] > rows[valid, 0]) and np.all(rows[valid, 3] > rows[valid, 1])
        assert np.all(rows[~valid] == [0, 0, 0, 0, -1])
        assert not np.any(np.diff(valid.astype(int)) > 0)  # valid rows first
        assert 0 <= out_image.numpy().min() and out_image.numpy().max() <= 255


def test_records_to_arrays_normalizes_and_pads(tmp_path):
    import cv2

    path = tmp_path / "a.png"
    cv2.imwrite(str(path), np.zeros((40, 80, 3), np.uint8))
    record = {"image_path": str(path), "height": 40, "width": 80,
              "boxes": np.array([[4, 8, 20, 40], [0, 0, 40, 80], [10, 10, 12, 12]], np.float32),
              "classes": np.array([1, 0, 2])}
    images, gt = records_to_arrays([record], 32, max_boxes=2)
    assert images.shape == (1, 32, 32, 3) and images.dtype == np.uint8
    # the two largest boxes are kept, in record order, divided by (h, w, h, w)
    np.testing.assert_allclose(gt[0], [[0.1, 0.1, 0.5, 0.5, 1], [0, 0, 1, 1, 0]], atol=1e-6)
    with pytest.raises(ValueError, match="max_boxes"):
        records_to_arrays([record], 32, max_boxes=0)
    with pytest.raises(ValueError, match="batch_size"):
        make_detection_dataset(images, gt, 0, training=False)


# -- losses -----------------------------------------------------------------------------------
def test_ssd_multibox_loss_matches_numpy_reference():
    feature_sizes = [(3, 3), (2, 2), (1, 1)]
    anchors = ssd_default_boxes(feature_sizes, 0.2, 0.8, (1.0, 2.0, 0.5))
    rng = np.random.default_rng(3)
    raw = rng.normal(0, 1.5, (3, len(anchors), 4 + 3)).astype(np.float32)
    gt = np.stack([padded_gt([[0.1, 0.1, 0.45, 0.4, 0], [0.5, 0.55, 0.95, 0.9, 1],
                              [0.02, 0.6, 0.12, 0.7, 1]], 4),     # small: best-anchor claim
                   padded_gt([[0.0, 0.0, 1.0, 1.0, 1]], 4),
                   padded_gt([], 4)])                            # no objects: loss 0
    loss = SSDMultiboxLoss(feature_sizes, 0.2, 0.8, (1.0, 2.0, 0.5))
    got = keras.ops.convert_to_numpy(loss.call(gt, raw))
    np.testing.assert_allclose(got, np_ssd_loss(gt, raw, anchors), rtol=1e-5, atol=1e-5)
    assert got[2] == 0.0
    # the reduced Keras loss is the batch mean
    np.testing.assert_allclose(float(loss(gt, raw)), got.mean(), rtol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_first_claims_gives_each_slot_its_first_valid_claim(seed):
    """``first_claims`` against a dict loop (``setdefault``: the first valid claim of a slot
    wins), on random claims crowded into few slots so that most slots are contested."""
    from cnn_apps.applications.detection.common import first_claims

    rng = np.random.default_rng(seed)
    n, k, slots, d = 3, 12, 7, 5
    index = rng.integers(0, slots, (n, k)).astype(np.int32)
    ok = rng.random((n, k)) < 0.7
    rows = rng.normal(0, 1.0, (n, k, d)).astype(np.float32)
    assigned, target = (keras.ops.convert_to_numpy(t)
                        for t in first_claims(index, ok, rows, slots))
    want_assigned, want_target = np.zeros((n, slots)), np.zeros((n, slots, d), np.float32)
    for i in range(n):
        owner = {}
        for j in range(k):
            if ok[i, j]:
                owner.setdefault(int(index[i, j]), j)
        for slot, j in owner.items():
            want_assigned[i, slot] = 1.0
            want_target[i, slot] = rows[i, j]
    np.testing.assert_array_equal(assigned, want_assigned)
    np.testing.assert_array_equal(target, want_target)  # copied rows, no arithmetic


@pytest.mark.parametrize("rescore", [True, False])
def test_yolo_v1_loss_matches_numpy_reference(rescore):
    s, b, c = 3, 2, 3
    rng = np.random.default_rng(4)
    raw = rng.normal(0, 1.0, (2, s, s, 5 * b + c)).astype(np.float32)
    gt = np.stack([padded_gt([[0.05, 0.05, 0.3, 0.25, 2],
                              [0.1, 0.12, 0.2, 0.2, 0],      # same cell as the first: ignored
                              [0.5, 0.6, 0.9, 0.95, 1]], 4),
                   padded_gt([[0.4, 0.0, 0.62, 0.3, 1]], 4)])
    loss = YoloV1Loss(grid_size=s, boxes_per_cell=b, num_classes=c, rescore=rescore)
    got = keras.ops.convert_to_numpy(loss.call(gt, raw))
    np.testing.assert_allclose(got, np_yolo_loss(gt, raw, s, b, c, rescore=rescore),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("ignore_iou,box_weight,assign_iou",
                         [(0.5, 1.0, 1.0), (0.05, 1.0, 1.0), (0.5, 5.0, 1.0), (0.5, 1.0, 0.5),
                          (0.05, 1.0, 0.3)])
def test_yolo_v3_loss_matches_numpy_reference(ignore_iou, box_weight, assign_iou):
    from cnn_apps.applications.detection.yolo_v3 import ANCHORS

    grids, c = [4, 2, 1], 3
    rng = np.random.default_rng(5)
    raw = rng.normal(0, 1.0, (2, 3 * (16 + 4 + 1), 5 + c)).astype(np.float32)
    gt = np.stack([padded_gt([[0.05, 0.05, 0.15, 0.14, 2],
                              [0.06, 0.07, 0.16, 0.16, 0],   # same predictor: ignored
                              [0.3, 0.2, 0.7, 0.6, 1],
                              [0.1, 0.5, 0.95, 0.95, 1]], 5),
                   padded_gt([[0.55, 0.0, 0.7, 0.3, 0]], 5)])
    loss = YoloV3Loss(grids, ANCHORS, c, ignore_iou=ignore_iou, box_weight=box_weight,
                      assign_iou=assign_iou)
    got = keras.ops.convert_to_numpy(loss.call(gt, raw))
    want = np_yolo_v3_loss(gt, raw, grids, ANCHORS, c, ignore_iou, box_weight, assign_iou)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    if assign_iou < 1.0:  # extra anchors do change the loss on this batch
        assert not np.allclose(want, np_yolo_v3_loss(gt, raw, grids, ANCHORS, c, ignore_iou,
                                                     box_weight, 1.0), rtol=1e-3)


def test_yolo_v3_decode_inverts_the_loss_encoding():
    """Raw outputs set to the loss's own regression targets (numpy: best-shape anchor, centre
    cell, logit of the in-cell offset, log size ratio) decode back to the ground truth, give
    an almost zero loss and come out of the post-processing as the top detections."""
    from cnn_apps.applications.detection import yolo_v3
    from cnn_apps.applications.detection.common import postprocess_config

    grids, c = [8, 4, 2], 3
    anchors = yolo_v3.ANCHORS
    rows = [[0.1, 0.12, 0.16, 0.19, 2], [0.3, 0.25, 0.62, 0.55, 0], [0.52, 0.05, 0.98, 0.5, 1]]
    flat = [a for level in anchors for a in level]
    raw = np.full((1, sum(3 * g * g for g in grids), 5 + c), -12.0, np.float32)
    assigned = []
    for ymin, xmin, ymax, xmax, cls in rows:
        h, w = ymax - ymin, xmax - xmin
        shape_iou = [min(h, ah) * min(w, aw) / (h * w + ah * aw - min(h, ah) * min(w, aw))
                     for ah, aw in flat]
        best = int(np.argmax(shape_iou))
        scale, k = divmod(best, 3)
        g = grids[scale]
        cy, cx = (ymin + ymax) / 2 * g, (xmin + xmax) / 2 * g
        i, j = int(cy), int(cx)
        p = sum(3 * q * q for q in grids[:scale]) + (i * g + j) * 3 + k
        ah, aw = flat[best]
        logit = lambda v: np.log(v / (1 - v))  # noqa: E731
        raw[0, p, :5] = [logit(cx - j), logit(cy - i), np.log(w / aw), np.log(h / ah), 12.0]
        raw[0, p, 5 + int(cls)] = 12.0
        assigned.append(p)
    assert len(set(assigned)) == len(rows)
    info = {"grid_sizes": grids, "anchors": anchors}
    boxes, scores = (keras.ops.convert_to_numpy(t) for t in yolo_v3.decode(raw, info))
    np.testing.assert_allclose(boxes[0, assigned], np.array(rows)[:, :4], atol=1e-5)
    gt = padded_gt(rows, 4)[None]
    loss = YoloV3Loss(grids, anchors, c)
    assert float(keras.ops.convert_to_numpy(loss.call(gt, raw))[0]) < 0.05
    out = yolo_v3.postprocess(tf.constant(raw), {"detector": info,
                                                 "postprocess": postprocess_config({})})
    n = int(out["num_detections"][0])
    assert n == len(rows) and np.all(out["detection_scores"][0, :n] > 0.99)
    got = sorted(zip(out["detection_classes"][0, :n].numpy() - 1,
                     out["detection_boxes"][0, :n].numpy().tolist()))
    for (cls, box), row in zip(got, sorted(rows, key=lambda r: r[4])):
        assert cls == row[4]
        np.testing.assert_allclose(box, row[:4], atol=1e-5)


def test_loss_arguments_are_checked():
    with pytest.raises(ValueError, match="neg_pos_ratio"):
        SSDMultiboxLoss([(2, 2)], neg_pos_ratio=-1)
    with pytest.raises(ValueError, match="grid_size"):
        YoloV1Loss(grid_size=0)
    with pytest.raises(ValueError, match="grid_sizes"):
        YoloV3Loss([4, 2])
    with pytest.raises(ConfigError, match="model must be one of"):
        get_detector("detr")


@pytest.mark.parametrize("model_name,rows", [("ssd", 4 * (256 + 64 + 16 + 4 + 1)),
                                             ("yolo", None), ("yolo_v3", 3 * (256 + 64 + 16))])
def test_other_backbone_builds_and_runs(shapes_root, model_name, rows):
    config = tiny_detection_config(shapes_root, model=model_name, backbone="mobilenet_v2",
                                   backbone_args={})
    model = TASK.build_model(config)
    raw = model.predict(np.zeros((1, 64, 64, 3), np.float32), verbose=0)["raw"]
    if model_name == "yolo":  # P3 of mobilenet_v2 at 64 px: an 8x8 grid, 2 boxes + 4 classes
        assert raw.shape == (1, 8, 8, 5 * 2 + 4)
    else:
        assert raw.shape == (1, rows, raw.shape[-1])
        assert raw.shape[-1] == (4 + 5 if model_name == "ssd" else 5 + 4)
    info = TASK.model_info(config)
    out = get_detector(model_name).postprocess(tf.constant(raw), info)
    assert out["detection_boxes"].shape == (1, 100, 4)


def test_backbone_ends_at_the_deepest_level_a_detector_reads(tmp_path):
    """``backbone_features(levels=...)`` keeps the full network's initialization and weight
    files but drops the stages past the deepest level read: the P3 map equals the full
    backbone's, and the P4/P5 stages' weights are gone (so training does not run them)."""
    from cnn_apps import backbones
    from cnn_apps.applications.detection.common import backbone_features

    config = {"backbone": "resnet18", "backbone_args": {"width": 8}}
    images = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
    keras.utils.set_random_seed(3)
    inputs, full = backbone_features(config, (64, 64, 3))
    full = keras.Model(inputs, full)
    keras.utils.set_random_seed(3)
    inputs, cut = backbone_features(config, (64, 64, 3), levels=["P3"])
    cut = keras.Model(inputs, cut)
    assert sorted(full.output) == ["P2", "P3", "P4", "P5"] and list(cut.output) == ["P3"]
    np.testing.assert_array_equal(cut(images)["P3"], full(images)["P3"])
    assert cut.count_params() < full.count_params() / 4
    names = {layer.name for layer in cut.get_layer("backbone").layers}
    assert not any(name.startswith(("stage3", "stage4")) for name in names)
    # a weights file of the whole backbone still loads, then the cut keeps its P3 part
    weights = tmp_path / "backbone.weights.h5"
    donor = backbones.create("resnet18", input_shape=(64, 64, 3), features_only=True, width=8)
    donor.save_weights(weights)
    _, loaded = backbone_features({**config, "weights": str(weights)}, (64, 64, 3),
                                  levels=lambda names: names[1:2])
    assert list(loaded) == ["P3"]
    inputs, same = backbone_features({**config, "weights": str(weights)}, (64, 64, 3),
                                     levels=["P3"])
    same = keras.Model(inputs, same)
    want = donor(same.get_layer("preprocess")(images))["P3"]
    np.testing.assert_allclose(same(images)["P3"], want, rtol=1e-6, atol=1e-6)
    with pytest.raises(ConfigError, match="no feature level 'P7'"):
        backbone_features(config, (64, 64, 3), levels=["P3", "P7"])


def test_bad_detection_config_is_refused(shapes_root):
    with pytest.raises(ConfigError, match="no feature level 'P7'"):
        TASK.build_model(tiny_detection_config(shapes_root, ssd={"feature_levels": ["P7"]}))
    with pytest.raises(ConfigError, match="data.dataset"):
        TASK.data(tiny_detection_config(shapes_root, data={"dataset": "imagenet"}))


def test_epochs_null_takes_the_models_own_schedule():
    from cnn_apps.config import load_config

    packaged = load_config("detection")
    assert packaged["epochs"] is None  # each model's section carries its schedule
    for model in ("ssd", "yolo", "yolo_v3", "faster_rcnn", "fast_rcnn", "sppnet", "rcnn"):
        config = load_config("detection", overrides=[f"model={model}"])
        assert TASK.resolve_config(config)["epochs"] == config[model]["epochs"] >= 1
    config = load_config("detection", overrides=["model=yolo", "epochs=3"])
    assert TASK.resolve_config(config)["epochs"] == 3  # an explicit count wins
    with pytest.raises(ConfigError, match="yolo.epochs must be an epoch count"):
        TASK.resolve_config(load_config("detection", overrides=["model=yolo",
                                                                "yolo.epochs=null"]))
    with pytest.raises(ConfigError, match="rcnn.epochs must be an epoch count"):
        TASK.resolve_config(load_config("detection", overrides=["model=rcnn",
                                                                "rcnn.epochs=many"]))


@pytest.mark.parametrize("model", ["fast_rcnn", "faster_rcnn", "sppnet", "rcnn"])
def test_jit_compile_for_a_two_stage_detector_is_a_config_error(model):
    from cnn_apps.config import load_config

    config = load_config("detection", overrides=[f"model={model}", "jit_compile=true",
                                                 "deterministic=false"])
    with pytest.raises(ConfigError, match=f"model={model} does not support jit_compile=true"):
        TASK.resolve_config(config)
    for one_stage in ("ssd", "yolo", "yolo_v3"):  # their compile honours it
        TASK.resolve_config({**config, "model": one_stage})


# -- training, evaluation, serving ------------------------------------------------------------
@pytest.mark.parametrize("model_name", ["ssd", "yolo", "yolo_v3"])
def test_training_steps_decrease_loss(shapes_root, model_name):
    config = tiny_detection_config(shapes_root, model=model_name,
                                   augment={"horizontal_flip": False, "crop_probability": 0.0,
                                            "brightness": 0.0})
    keras.utils.set_random_seed(0)
    data = TASK.data(config)
    model = TASK.build_model(config)
    TASK.compile_model(model, config, 0.003)
    x, y = data.x_train[:4].astype(np.float32), {"raw": data.gt_train[:4]}
    # training-mode losses (batch statistics): after 15 steps the BatchNorm moving averages
    # that evaluate() uses are still mostly their initial values
    history = model.fit(x, y, batch_size=4, epochs=15, verbose=0).history["loss"]
    assert np.isfinite(history).all() and history[-1] < 0.9 * history[0]


def test_train_evaluate_predict(ssd_run, tmp_path):
    result, config = ssd_run
    for key in ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large"):
        assert key in result.metrics and -1.0 <= result.metrics[key] <= 1.0
    assert (result.run_dir / "predictions.png").is_file()
    info = json.loads((result.run_dir / "model_info.json").read_text())
    assert info["class_names"] == CLASS_NAMES and info["input_shape"] == [64, 64, 3]
    images = TASK.data(config).x_val[:2]
    preds = TASK.predict(result.model, images, info, top_k=3)
    assert len(preds) == 2
    for pred in preds:
        assert pred["num_detections"] == len(pred["detections"]) <= 3
        for det in pred["detections"]:
            assert det["class"] == CLASS_NAMES[det["index"]]
            y0, x0, y1, x1 = det["box"]
            assert 0 <= y0 <= y1 <= 1 and 0 <= x0 <= x1 <= 1
        scores = [d["score"] for d in pred["detections"]]
        assert scores == sorted(scores, reverse=True)
    TASK.annotate(np.zeros((50, 70, 3), np.uint8), preds[0], tmp_path / "a.png")
    assert (tmp_path / "a.png").is_file()


def pairwise_iou(boxes):
    return np.array([[np_iou(a, b) for b in boxes] for a in boxes])


def test_saved_model_serving_applies_nms(ssd_run, tmp_path):
    from cnn_apps.export import export_run

    result, config = ssd_run
    # a low score threshold so NMS, not the threshold, decides what survives
    info_path = result.run_dir / "model_info.json"
    info = json.loads(info_path.read_text())
    info["postprocess"]["score_threshold"] = 0.0
    info_path.write_text(json.dumps(info))
    path = export_run(result.run_dir, "saved_model", tmp_path / "sm")
    loaded = tf.saved_model.load(str(path))
    sig = loaded.signatures["serving_default"]
    assert sig.structured_input_signature[1]["image_bytes"].dtype == tf.string
    images = TASK.data(config).x_val[:2]
    check_serving_detections(sig, images, info["postprocess"]["nms_iou_threshold"])
    tensor_out = loaded.signatures["predict_tensor"](images=tf.constant(images, tf.float32))
    assert int(tensor_out["num_detections"][0]) > 0


@pytest.mark.parametrize("model_name", ["ssd", "yolo", "yolo_v3"])
def test_onnx_export_matches_keras(shapes_root, tmp_path, model_name):
    import onnxruntime as ort

    from cnn_apps.export import export_onnx

    config = tiny_detection_config(shapes_root, model=model_name)
    model = TASK.build_model(config)
    path = export_onnx(model, tmp_path / "model.onnx")
    x = TASK.example_inputs({"input_shape": [64, 64, 3]}, 2)
    expected = model.predict(x, verbose=0)["raw"]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)


def test_cli_predict_draws_boxes(ssd_run, tmp_path, capsys):
    import cv2

    from cnn_apps.cli import main

    result, config = ssd_run
    image = tmp_path / "shape.png"
    cv2.imwrite(str(image), TASK.data(config).x_val[0][..., ::-1])
    assert main(["predict", str(result.run_dir), str(image), "--top-k", "3",
                 "--annotate", str(tmp_path / "ann")]) == 0
    row = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert row["image"] == str(image) and len(row["detections"]) <= 3
    assert (tmp_path / "ann" / "shape_pred.png").is_file()
