"""Two-stage detectors: RoI target sampling, the Fast R-CNN loss (with OHEM) and the RoI
post-processing (NMS + box voting) against numpy loops; Faster R-CNN and Fast R-CNN training,
evaluation, ``.keras`` reload and SavedModel serving on tiny shapes images."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from cnn_apps.applications.detection import TASK, get_detector
from cnn_apps.applications.detection import two_stage
from cnn_apps.errors import ConfigError
from tests.applications.test_detection import (CLASS_NAMES, check_serving_detections, np_iou,
                                               padded_gt, shapes_root, tiny_detection_config)

pytestmark = pytest.mark.tf_only
__all__ = ["shapes_root"]  # the module-scoped fixture, shared with test_detection

TINY_FASTER = {"levels": ["P3", "P4"], "fpn_channels": 16, "rpn_channels": 16,
               "anchor_scales": [[0.15, 0.3], [0.4, 0.6]], "roi_pool_size": 4,
               "head_units": [32], "train_proposals": 32, "test_proposals": 16,
               "pre_nms_topk": 200, "batch_rois": 16, "rpn_batch": 64,
               "roi_canonical_level": "P4"}
TINY_FAST = {"level": "P4", "feature_channels": 16, "roi_pool_size": 3, "head_units": [32],
             "batch_rois": 16}


def faster_config(root, **overrides):
    return tiny_detection_config(root, name="faster", model="faster_rcnn",
                                 faster_rcnn={**TINY_FASTER, **overrides.pop("faster", {})},
                                 **overrides)


def np_encode(box, roi, v=two_stage.ROI_VARIANCES):
    cy, cx, h, w = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2, box[2] - box[0], box[3] - box[1]
    ry, rx, rh, rw = (roi[0] + roi[2]) / 2, (roi[1] + roi[3]) / 2, roi[2] - roi[0], roi[3] - roi[1]
    return np.array([(cy - ry) / rh / v[0], (cx - rx) / rw / v[1], np.log(h / rh) / v[2],
                     np.log(w / rw) / v[3]])


def np_roi_labels(proposals, gt, fg_iou=0.5, bg_high=0.5, bg_low=0.0):
    """Candidates (proposals + gt) of one image with their label (−1 = not sampled) and
    regression target, by explicit loops."""
    rows = [g for g in gt if g[4] >= 0]
    cands = [p for p in proposals if (p[2] - p[0]) * (p[3] - p[1]) > 0] + [g[:4] for g in rows]
    out = []
    for c in cands:
        ious = [np_iou(c, g[:4]) for g in rows]
        best = int(np.argmax(ious)) if ious else -1
        top = max(ious, default=0.0)
        if top >= fg_iou:
            out.append((np.asarray(c), int(rows[best][4]) + 1, np_encode(rows[best][:4], c)))
        elif bg_low <= top < bg_high:
            out.append((np.asarray(c), 0, np.zeros(4)))
        else:
            out.append((np.asarray(c), -1, np.zeros(4)))
    return out


def _key(box):
    return tuple(np.round(np.asarray(box, np.float64), 5))


# -- RoI sampling -----------------------------------------------------------------------------
def test_sample_roi_targets_takes_every_candidate_when_there_is_room():
    gt = np.stack([padded_gt([[0.1, 0.1, 0.5, 0.4, 2], [0.5, 0.5, 0.9, 0.95, 0]], 3),
                   padded_gt([], 3)])
    proposals = np.zeros((2, 5, 4), np.float32)
    proposals[0, :4] = [[0.12, 0.1, 0.5, 0.42],   # fg (class 2)
                        [0.3, 0.2, 0.7, 0.6],     # IoU 0.1-0.5 with both: bg
                        [0.5, 0.5, 0.7, 0.7],     # bg
                        [0.5, 0.55, 0.88, 0.95]]  # fg (class 0)
    proposals[1, :2] = [[0.1, 0.1, 0.3, 0.3], [0.0, 0.0, 1.0, 1.0]]  # no objects: all bg
    rois, labels, targets = (keras.ops.convert_to_numpy(t) for t in two_stage.sample_roi_targets(
        proposals, gt, num_classes=3, batch_rois=12, positive_fraction=0.5, seed=1))
    assert rois.shape == (2, 12, 4) and labels.shape == (2, 12) and targets.shape == (2, 12, 4)
    for n in range(2):
        expected = {_key(c): (lab, t) for c, lab, t in np_roi_labels(proposals[n], gt[n])
                    if lab >= 0}
        taken = labels[n] >= 0
        assert taken.sum() == len(expected)
        got = {_key(r): (lab, t) for r, lab, t in zip(rois[n][taken], labels[n][taken],
                                                      targets[n][taken])}
        assert set(got) == set(expected)
        for key, (lab, t) in expected.items():
            assert got[key][0] == lab
            np.testing.assert_allclose(got[key][1], t, atol=1e-4)
        assert np.all(rois[n][~taken] == 0) and np.all(targets[n][~taken] == 0)
        # foreground slots come first
        assert not np.any(np.diff((labels[n] > 0).astype(int)) > 0)


def test_sample_roi_targets_caps_foreground_and_fills_with_background():
    rng = np.random.default_rng(0)
    gt = padded_gt([[0.2, 0.2, 0.6, 0.6, 1]], 2)[None]
    jitter = rng.uniform(-0.03, 0.03, (30, 4))
    fg_props = np.array([0.2, 0.2, 0.6, 0.6]) + jitter           # 30 foreground proposals
    bg_props = rng.uniform(0.0, 0.3, (20, 2))                      # 20 small far-away boxes
    bg_props = np.concatenate([bg_props + 0.65, bg_props + 0.7], axis=1)
    proposals = np.concatenate([fg_props, bg_props])[None].astype(np.float32)
    reference = {_key(c): (lab, t) for c, lab, t in np_roi_labels(proposals[0], gt[0])}
    for seed in range(3):
        rois, labels, targets = (keras.ops.convert_to_numpy(t)
                                 for t in two_stage.sample_roi_targets(
                                     proposals, gt, 2, batch_rois=16, positive_fraction=0.25,
                                     seed=seed))
        assert (labels[0] > 0).sum() == 4 and (labels[0] == 0).sum() == 12
        for r, lab, t in zip(rois[0], labels[0], targets[0]):
            assert reference[_key(r)][0] == lab
            np.testing.assert_allclose(t, reference[_key(r)][1], atol=1e-4)
    with pytest.raises(ValueError, match="positive_fraction"):
        two_stage.sample_roi_targets(proposals, gt, 2, positive_fraction=1.5)


# -- loss -------------------------------------------------------------------------------------
def np_fast_rcnn_loss(logits, deltas, labels, targets, box_weight, ohem_batch=None, rois=None,
                      nms_iou=1.0):
    """Per-RoI Fast R-CNN loss with loops; OHEM keeps the largest per image, skipping RoIs
    that overlap an already kept one by more than ``nms_iou``."""
    b, r, k = logits.shape
    c = k - 1
    per_roi = np.zeros((b, r))
    parts = np.zeros((b, r, 2))
    for i in range(b):
        for j in range(r):
            u = labels[i, j]
            if u < 0:
                continue
            z = logits[i, j] - logits[i, j].max()
            ce = -(z[u] - np.log(np.exp(z).sum()))
            loc = 0.0
            if u > 0:
                d = deltas[i, j].reshape(c, 4)[u - 1] - targets[i, j]
                loc = np.where(np.abs(d) < 1, 0.5 * d * d, np.abs(d) - 0.5).sum()
            per_roi[i, j] = ce + box_weight * loc
            parts[i, j] = ce, loc
    keep = labels >= 0
    if ohem_batch:
        for i in range(b):
            order = [j for j in np.argsort(-per_roi[i], kind="stable") if labels[i, j] >= 0]
            kept = []
            for j in order:
                if len(kept) < ohem_batch and all(
                        rois is None or np_iou(rois[i, j], rois[i, m]) <= nms_iou
                        for m in kept):
                    kept.append(j)
            keep[i] = False
            keep[i, kept] = True
    n = max(keep.sum(), 1)
    fg, bg = keep & (labels > 0), keep & (labels == 0)
    balanced = per_roi[fg].sum() / max(fg.sum(), 1) + per_roi[bg].sum() / max(bg.sum(), 1)
    return (per_roi[keep].sum() / n, parts[keep, 0].sum() / n, parts[keep, 1].sum() / n,
            balanced, keep)


@pytest.mark.parametrize("ohem_batch, nms_iou", [(None, 1.0), (5, 1.0), (5, 0.5), (3, 0.3)])
def test_fast_rcnn_loss_matches_numpy_and_ohem_backpropagates_only_the_hardest(ohem_batch,
                                                                               nms_iou):
    rng = np.random.default_rng(7)
    b, r, c = 2, 12, 3
    logits = rng.normal(0, 2, (b, r, c + 1)).astype(np.float32)
    deltas = rng.normal(0, 1, (b, r, 4 * c)).astype(np.float32)
    labels = rng.integers(-1, c + 1, (b, r)).astype(np.int32)
    targets = rng.normal(0, 1, (b, r, 4)).astype(np.float32)
    # RoIs jittered around 3 centres per image: many overlap, so OHEM's NMS has work to do
    centres = rng.uniform(0.3, 0.7, (b, 3, 2))[:, rng.integers(0, 3, r)]
    half = rng.uniform(0.1, 0.2, (b, r, 2))
    rois = np.concatenate([centres - half, centres + half], axis=-1).astype(np.float32)
    total, cls, box, balanced, keep = np_fast_rcnn_loss(logits, deltas, labels, targets, 2.0,
                                                        ohem_batch, rois, nms_iou)
    logits_t, deltas_t = tf.Variable(logits), tf.Variable(deltas)
    with tf.GradientTape() as tape:
        out = two_stage.fast_rcnn_loss(logits_t, deltas_t, labels, targets, box_weight=2.0,
                                       ohem_batch=ohem_batch, rois=rois, ohem_nms_iou=nms_iou)
    np.testing.assert_allclose(float(out["loss"]), total, rtol=1e-5)
    np.testing.assert_allclose(float(out["cls_loss"]), cls, rtol=1e-5)
    np.testing.assert_allclose(float(out["box_loss"]), box, rtol=1e-5)
    np.testing.assert_allclose(float(out["balanced"]), balanced, rtol=1e-5)
    grad = tape.gradient(out["loss"], logits_t).numpy()
    touched = np.abs(grad).sum(-1) > 0
    np.testing.assert_array_equal(touched, keep)
    if ohem_batch and nms_iou == 1.0:
        assert keep.sum() == b * ohem_batch
    elif ohem_batch:  # the NMS dropped some hard RoIs that overlap harder ones
        _, _, _, _, plain_keep = np_fast_rcnn_loss(logits, deltas, labels, targets, 2.0,
                                                   ohem_batch)
        assert (keep != plain_keep).any() and keep.sum() <= b * ohem_batch


# -- post-processing --------------------------------------------------------------------------
def np_nms_per_class(boxes, scores, iou_threshold, score_threshold, max_det):
    """Greedy per-class NMS, then the best ``max_det`` over classes."""
    dets = []
    for c in range(scores.shape[1]):
        order = [i for i in np.argsort(-scores[:, c]) if scores[i, c] > score_threshold]
        kept = []
        for i in order:
            if all(np_iou(boxes[i, c], boxes[k, c]) <= iou_threshold for k in kept):
                kept.append(i)
        dets += [(scores[i, c], c, i) for i in kept]
    return sorted(dets, key=lambda d: -d[0])[:max_det]


def np_vote(box, cands, scores, iou_threshold):
    w = np.array([s if np_iou(box, b) >= iou_threshold else 0.0 for b, s in zip(cands, scores)])
    return (w[:, None] * cands).sum(0) / w.sum() if w.sum() > 0 else box


@pytest.mark.parametrize("voting", [False, True])
def test_postprocess_matches_numpy_nms_and_box_voting(voting):
    rng = np.random.default_rng(11)
    b, r, c = 2, 14, 2
    rois = np.zeros((b, r, 4), np.float32)
    centres = rng.uniform(0.3, 0.7, (b, r, 2))
    sizes = rng.uniform(0.15, 0.35, (b, r, 2))
    rois[..., :2], rois[..., 2:] = centres - sizes / 2, centres + sizes / 2
    rois[1, -3:] = 0.0  # padding RoIs
    logits = rng.normal(0, 2, (b, r, c + 1)).astype(np.float32)
    deltas = rng.normal(0, 0.5, (b, r, 4 * c)).astype(np.float32)
    raw = keras.ops.convert_to_numpy(two_stage.roi_raw_outputs(logits, deltas, rois))
    assert raw.shape == (b, r, 5 * c)
    # the raw layout: decoded class-specific boxes, then foreground probabilities
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    np.testing.assert_allclose(raw[0, :, 4 * c:], probs[0, :, 1:], rtol=1e-5)
    assert np.all(raw[1, -3:, 4 * c:] == 0)
    roi, d = rois[0, 0], deltas[0, 0, 4:8]  # RoI 0, class 1
    rh, rw = roi[2] - roi[0], roi[3] - roi[1]
    cy, cx = (roi[0] + roi[2]) / 2 + d[0] * 0.1 * rh, (roi[1] + roi[3]) / 2 + d[1] * 0.1 * rw
    h, w = rh * np.exp(d[2] * 0.2), rw * np.exp(d[3] * 0.2)
    np.testing.assert_allclose(raw[0, 0, 4:8], np.clip([cy - h / 2, cx - w / 2, cy + h / 2,
                                                        cx + w / 2], 0, 1), atol=1e-5)
    info = {"detector": {"num_classes": c, "box_voting": voting, "voting_iou": 0.4},
            "postprocess": {"nms_iou_threshold": 0.3, "score_threshold": 0.05,
                            "max_detections": 10}}
    out = {k: v.numpy() for k, v in two_stage.postprocess(tf.constant(raw), info).items()}
    boxes, scores = raw[..., :4 * c].reshape(b, r, c, 4), raw[..., 4 * c:]
    for n in range(b):
        dets = np_nms_per_class(boxes[n], scores[n], 0.3, 0.05, 10)
        assert int(out["num_detections"][n]) == len(dets) > 0
        for k, (score, cls, i) in enumerate(dets):
            assert out["detection_classes"][n, k] == cls + 1
            np.testing.assert_allclose(out["detection_scores"][n, k], score, rtol=1e-5)
            box = boxes[n, i, cls]
            if voting:
                box = np_vote(box, boxes[n, :, cls], scores[n, :, cls], 0.4)
            np.testing.assert_allclose(out["detection_boxes"][n, k], box, atol=1e-5)
    if voting:  # voting moved at least one box away from its NMS survivor
        plain = two_stage.postprocess(tf.constant(raw), {**info, "detector": {
            **info["detector"], "box_voting": False}})
        assert not np.allclose(plain["detection_boxes"].numpy(), out["detection_boxes"])


# -- models -----------------------------------------------------------------------------------
def synthetic_proposals(gt, count, seed=0):
    """Jittered ground-truth boxes and random boxes, zero-padded to ``count`` per image."""
    rng = np.random.default_rng(seed)
    out = np.zeros((len(gt), count, 4), np.float32)
    for n, rows in enumerate(gt):
        boxes = [row[:4] + rng.normal(0, 0.03, 4) for row in rows if row[4] >= 0
                 for _ in range(3)]
        while len(boxes) < count - 2:
            cy, cx, h, w = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), *rng.uniform(0.1, 0.5, 2)
            boxes.append([cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2])
        boxes = np.clip(np.array(boxes[:count - 2]), 0, 1)
        out[n, :len(boxes)] = boxes
    return out


def _fit_decreases(model, x, y, epochs=8):
    """The training loss (one batch per epoch; the first is measured before any update) falls
    by more than 20%. (Inference-mode losses lag behind: batch-norm moving averages.)"""
    keras.utils.set_random_seed(0)
    history = model.fit(x, y, batch_size=4, epochs=epochs, verbose=0).history
    assert set(model.loss_names) <= set(history)
    assert history["loss"][-1] < 0.8 * history["loss"][0], history["loss"]


def test_faster_rcnn_pools_each_roi_on_its_fpn_level_only(shapes_root):
    """The FPN pooling (dense RoIAlign on every level, masked) equals RoIAlign of every RoI on
    the level chosen by the FPN rule k = clip(floor(k0 + log2(sqrt(hw) / s0)), P3, P4),
    computed here per RoI with the plain layer call; gradients reach every level."""
    config = faster_config(shapes_root, image_size=64)
    model = get_detector("faster_rcnn").build_model(config, len(CLASS_NAMES))
    rng = np.random.default_rng(3)
    features = {"P3": tf.constant(rng.normal(size=(2, 8, 8, 16)), tf.float32),
                "P4": tf.constant(rng.normal(size=(2, 4, 4, 16)), tf.float32)}
    centre = rng.uniform(0.3, 0.7, (2, 6, 2))
    side = np.array([0.05, 0.1, 0.2, 0.3, 0.5, 0.9])[None, :, None] * np.ones((2, 1, 2))
    rois = np.concatenate([centre - side / 2, centre + side / 2], axis=-1).clip(0, 1)
    rois = tf.constant(rois, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(list(features.values()))
        pooled = model.pool(features, rois)
        total = tf.reduce_sum(pooled)
    assert pooled.shape == (2, 6, 4, 4, 16)
    k0, s0 = 4, TINY_FASTER.get("roi_canonical_scale", 0.25)
    for n in range(2):
        for r in range(6):
            box = rois[n, r].numpy()
            k = np.floor(k0 + np.log2(np.sqrt((box[2] - box[0]) * (box[3] - box[1])) / s0))
            level = f"P{int(np.clip(k, 3, 4))}"
            want = model.roi_align([features[level][n:n + 1], rois[n:n + 1, r:r + 1]])
            np.testing.assert_allclose(pooled[n, r].numpy(), want[0, 0].numpy(), atol=1e-5)
    grads = tape.gradient(total, list(features.values()))
    assert all(g is not None and float(tf.reduce_sum(tf.abs(g))) > 0 for g in grads)


def test_faster_rcnn_training_steps_decrease_loss(shapes_root):
    config = faster_config(shapes_root)
    keras.utils.set_random_seed(0)
    data = TASK.data(config)
    detector = get_detector("faster_rcnn")
    model = detector.build_model(config, len(CLASS_NAMES))
    detector.compile_model(model, config, 0.003, info=None)  # the loss needs no model_info
    x, y = data.x_train[:4].astype(np.float32), {"raw": data.gt_train[:4]}
    _fit_decreases(model, x, y)
    raw = model.predict(x[:2], verbose=0)["raw"]
    assert raw.shape == (2, TINY_FASTER["test_proposals"], 5 * len(CLASS_NAMES))


def test_fast_rcnn_with_ohem_training_steps_decrease_loss(shapes_root):
    config = tiny_detection_config(shapes_root, name="fast", model="fast_rcnn",
                                   fast_rcnn={**TINY_FAST, "ohem": True, "ohem_batch": 8})
    keras.utils.set_random_seed(0)
    data = TASK.data(config)
    with pytest.raises(ConfigError, match="fast_rcnn.positive_fraction"):
        get_detector("fast_rcnn").build_model(
            tiny_detection_config(shapes_root, fast_rcnn={"positive_fraction": 2.0}), 4)
    detector = get_detector("fast_rcnn")
    model = detector.build_model(config, len(CLASS_NAMES))
    detector.compile_model(model, config, 0.003, info=None)
    gt = data.gt_train[:4]
    x = {"images": data.x_train[:4].astype(np.float32),
         "proposals": synthetic_proposals(gt, 14)}
    _fit_decreases(model, x, {"raw": gt})
    raw = model.predict(x, verbose=0)["raw"]
    assert raw.shape == (4, 14, 5 * len(CLASS_NAMES))
    assert np.all(raw[:, -2:, 4 * len(CLASS_NAMES):] == 0)  # padding proposals score 0


def test_two_stage_config_errors(shapes_root):
    with pytest.raises(ConfigError, match="anchor_scales"):
        TASK.build_model(faster_config(shapes_root, faster={"anchor_scales": [[0.1]]}))
    with pytest.raises(ConfigError, match="roi_canonical_level"):
        TASK.build_model(faster_config(shapes_root, faster={"roi_canonical_level": "P5"}))
    with pytest.raises(ConfigError, match="no feature level 'P9'"):
        TASK.build_model(faster_config(shapes_root, faster={
            "levels": ["P9"], "roi_canonical_level": "P9", "anchor_scales": [[0.2]]}))
    with pytest.raises(ConfigError, match="fast_rcnn.positive_fraction"):
        get_detector("fast_rcnn").build_model(
            tiny_detection_config(shapes_root, fast_rcnn={"positive_fraction": 2.0}), 4)
    model = get_detector("fast_rcnn").build_model(
        tiny_detection_config(shapes_root, fast_rcnn=TINY_FAST), 4)
    with pytest.raises(ValueError, match="proposals"):
        model(np.zeros((1, 64, 64, 3), np.float32))


@pytest.fixture(scope="module")
def faster_run(tmp_path_factory, shapes_root):
    from cnn_apps.training import train

    config = faster_config(shapes_root, faster={"box_voting": True})
    root = tmp_path_factory.mktemp("two_stage_runs")
    return train("detection", config, runs_root=root, verbose=0, export=False), config


def test_faster_rcnn_train_evaluate_and_reload(faster_run, tmp_path):
    result, config = faster_run
    for key in ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large"):
        assert key in result.metrics and -1.0 <= result.metrics[key] <= 1.0
    written = json.loads((result.run_dir / "metrics.json").read_text())
    assert written["model"] == "faster_rcnn" and "AP50" in written
    assert (result.run_dir / "predictions.png").is_file()
    info = json.loads((result.run_dir / "model_info.json").read_text())
    assert info["detector"]["box_voting"] is True
    images = TASK.data(config).x_val[:2].astype(np.float32)
    expected = result.model.predict(images, verbose=0)["raw"]
    path = tmp_path / "again.keras"
    result.model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert type(loaded).__name__ == "FasterRCNN"
    np.testing.assert_allclose(loaded.predict(images, verbose=0)["raw"], expected, atol=1e-5)
    preds = TASK.predict(loaded, images, info, top_k=3)
    assert len(preds) == 2 and all(p["num_detections"] <= 3 for p in preds)


def test_faster_rcnn_saved_model_serving_applies_nms(faster_run, tmp_path):
    from cnn_apps.export import export_run

    result, config = faster_run
    info_path = result.run_dir / "model_info.json"
    info = json.loads(info_path.read_text())
    info["postprocess"]["score_threshold"] = 0.0  # NMS, not the threshold, decides
    info["detector"]["box_voting"] = False  # voted boxes may overlap more than the threshold
    info_path.write_text(json.dumps(info))
    loaded = tf.saved_model.load(str(export_run(result.run_dir, "saved_model", tmp_path / "sm")))
    sig = loaded.signatures["serving_default"]
    images = TASK.data(config).x_val[:2]
    out = check_serving_detections(sig, images, info["postprocess"]["nms_iou_threshold"])
    for i in range(2):  # best first
        n = int(out["num_detections"][i])
        assert np.all(np.diff(out["detection_scores"][i, :n]) <= 1e-6)
    # the same detections as the Python post-processing of the Keras model
    direct = TASK.detect(result.model, images.astype(np.float32), info)
    np.testing.assert_allclose(out["num_detections"], direct["num_detections"])


def test_fast_rcnn_trains_end_to_end_on_selective_search_proposals(shapes_root, tmp_path):
    """``train()`` with the task's selective-search proposals, then serving with a proposals
    input: the SavedModel gives the detections of the Keras model + post-processing."""
    from cnn_apps.export import export_run
    from cnn_apps.training import train

    config = tiny_detection_config(shapes_root, name="fast_e2e", model="fast_rcnn",
                                   fast_rcnn=TINY_FAST, proposals={"max_proposals": 16})
    result = train("detection", config, runs_root=tmp_path / "runs", verbose=0, export=False)
    assert "AP50" in result.metrics and result.metrics["model"] == "fast_rcnn"
    info = json.loads((result.run_dir / "model_info.json").read_text())
    proposals = TASK.proposals(config, "val")[:2]
    images = TASK.data(config).x_val[:2].astype(np.float32)
    inputs = {"images": images, "proposals": proposals}
    expected = result.model.predict(inputs, verbose=0)["raw"]
    assert expected.shape == (2, 16, 5 * len(CLASS_NAMES))
    loaded = keras.saving.load_model(result.run_dir / "best.keras", safe_mode=True)
    np.testing.assert_allclose(loaded.predict(inputs, verbose=0)["raw"], expected, atol=1e-5)
    sm = tf.saved_model.load(str(export_run(result.run_dir, "saved_model", tmp_path / "sm")))
    out = sm.signatures["predict_tensor"](images=tf.constant(images),
                                          proposals=tf.constant(proposals))
    direct = TASK.detect(result.model, images, info, proposals=proposals)
    for key in ("num_detections", "detection_classes", "detection_scores"):
        np.testing.assert_allclose(out[key].numpy(), direct[key], atol=1e-5)
