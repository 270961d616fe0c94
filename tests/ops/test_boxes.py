"""Box toolkit (cnn_apps.ops.boxes) against direct numpy loops of each formula."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from keras import ops

from cnn_apps.ops import boxes as B


def npy(x):
    return np.asarray(ops.convert_to_numpy(x), dtype=np.float64)


def random_boxes(rng, n, size=20.0, min_side=0.0):
    """n random (ymin, xmin, ymax, xmax) boxes inside [0, size]²."""
    y0 = rng.uniform(0, size * 0.8, n)
    x0 = rng.uniform(0, size * 0.8, n)
    h = rng.uniform(min_side, size * 0.5, n)
    w = rng.uniform(min_side, size * 0.5, n)
    return np.stack([y0, x0, y0 + h, x0 + w], axis=1).astype(np.float32)


def iou_loop(a, b):
    out = np.zeros((len(a), len(b)))
    for i, p in enumerate(a):
        for j, q in enumerate(b):
            ih = max(0.0, min(p[2], q[2]) - max(p[0], q[0]))
            iw = max(0.0, min(p[3], q[3]) - max(p[1], q[1]))
            inter = ih * iw
            union = (p[2] - p[0]) * (p[3] - p[1]) + (q[2] - q[0]) * (q[3] - q[1]) - inter
            out[i, j] = inter / union if union > 0 else 0.0
    return out


def greedy_nms_loop(boxes, scores, thr, max_out, score_thr=-np.inf):
    order = [i for i in np.argsort(-scores, kind="stable") if scores[i] >= score_thr]
    keep = []
    for i in order:
        if len(keep) == max_out:
            break
        if all(iou_loop(boxes[i:i + 1], boxes[k:k + 1])[0, 0] <= thr for k in keep):
            keep.append(i)
    return keep


def test_box_area_and_iou_match_loops():
    rng = np.random.default_rng(0)
    a, b = random_boxes(rng, 7), random_boxes(rng, 5)
    area = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    np.testing.assert_allclose(npy(B.box_area(a)), area, rtol=1e-5)
    np.testing.assert_allclose(npy(B.box_iou(a, b)), iou_loop(a, b), rtol=1e-5, atol=1e-6)


def test_box_iou_zero_area_boxes_give_zero_not_nan():
    a = np.array([[1, 1, 1, 1], [0, 0, 2, 2]], np.float32)   # a point and a square
    b = np.array([[1, 1, 1, 1], [5, 5, 5, 9]], np.float32)   # the same point and a segment
    iou = npy(B.box_iou(a, b))
    assert np.all(np.isfinite(iou))
    np.testing.assert_array_equal(iou, np.zeros((2, 2)))


def test_box_iou_batched_leading_axes():
    rng = np.random.default_rng(1)
    a = np.stack([random_boxes(rng, 4), random_boxes(rng, 4)])
    b = np.stack([random_boxes(rng, 3), random_boxes(rng, 3)])
    out = npy(B.box_iou(a, b))
    assert out.shape == (2, 4, 3)
    for k in range(2):
        np.testing.assert_allclose(out[k], iou_loop(a[k], b[k]), rtol=1e-5, atol=1e-6)


def test_box_giou_matches_definition():
    rng = np.random.default_rng(2)
    a, b = random_boxes(rng, 4), random_boxes(rng, 6)
    expected = np.zeros((4, 6))
    iou = iou_loop(a, b)
    for i, p in enumerate(a):
        for j, q in enumerate(b):
            hull = (max(p[2], q[2]) - min(p[0], q[0])) * (max(p[3], q[3]) - min(p[1], q[1]))
            ih = max(0.0, min(p[2], q[2]) - max(p[0], q[0]))
            iw = max(0.0, min(p[3], q[3]) - max(p[1], q[1]))
            union = (p[2] - p[0]) * (p[3] - p[1]) + (q[2] - q[0]) * (q[3] - q[1]) - ih * iw
            expected[i, j] = iou[i, j] - (hull - union) / hull
    np.testing.assert_allclose(npy(B.box_giou(a, b)), expected, rtol=1e-5, atol=1e-6)


def test_encode_matches_formula_and_decode_round_trips():
    rng = np.random.default_rng(3)
    boxes, anchors = random_boxes(rng, 10, min_side=1.0), random_boxes(rng, 10, min_side=1.0)
    v = (0.1, 0.1, 0.2, 0.2)
    deltas = npy(B.encode_boxes(boxes, anchors, v))
    b64, a64 = boxes.astype(np.float64), anchors.astype(np.float64)
    for k in range(10):
        ah, aw = a64[k, 2] - a64[k, 0], a64[k, 3] - a64[k, 1]
        acy, acx = (a64[k, 0] + a64[k, 2]) / 2, (a64[k, 1] + a64[k, 3]) / 2
        h, w = b64[k, 2] - b64[k, 0], b64[k, 3] - b64[k, 1]
        cy, cx = (b64[k, 0] + b64[k, 2]) / 2, (b64[k, 1] + b64[k, 3]) / 2
        expected = [(cy - acy) / ah / 0.1, (cx - acx) / aw / 0.1,
                    np.log(h / ah) / 0.2, np.log(w / aw) / 0.2]
        np.testing.assert_allclose(deltas[k], expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(npy(B.decode_boxes(deltas, anchors, v)), boxes, atol=1e-3)


def test_decode_clips_huge_size_deltas():
    anchors = np.array([[0, 0, 10, 10]], np.float32)
    out = npy(B.decode_boxes(np.array([[0, 0, 1e4, 1e4]], np.float32), anchors,
                             variances=(1, 1, 1, 1)))
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out[0, 2] - out[0, 0], 10 * 1000 / 16, rtol=1e-4)


def match_loop(gt, anchors, pos, neg, force=True):
    if len(gt) == 0:
        return np.full(len(anchors), -1)
    iou = iou_loop(gt, anchors)
    out = np.empty(len(anchors), np.int64)
    for a in range(len(anchors)):
        m = iou[:, a].max()
        out[a] = int(np.argmax(iou[:, a])) if m >= pos else (-1 if m < neg else -2)
    if force:
        claimed = {}
        for g in range(len(gt)):
            if iou[g].max() > 0:
                claimed.setdefault(int(np.argmax(iou[g])), g)  # lowest gt index wins
        for a, g in claimed.items():
            out[a] = g
    return out


@pytest.mark.parametrize("force", [True, False])
def test_match_anchors_matches_loop(force):
    rng = np.random.default_rng(4)
    anchors = random_boxes(rng, 40, min_side=2.0)
    gt = random_boxes(rng, 5, min_side=2.0)
    got = npy(B.match_anchors(gt, anchors, 0.5, 0.3, force_best_anchor=force)).astype(int)
    np.testing.assert_array_equal(got, match_loop(gt, anchors, 0.5, 0.3, force))
    assert set(np.unique(got)) <= set(range(-2, 5))


def test_match_anchors_batch_equals_each_image_alone():
    rng = np.random.default_rng(7)
    anchors = random_boxes(rng, 30, min_side=2.0)
    gt = np.stack([random_boxes(rng, 4, min_side=2.0) for _ in range(3)])  # (3, 4, 4)
    valid = np.array([[True] * 4, [True, True, False, False], [False] * 4])
    got = npy(B.match_anchors(gt, anchors, 0.6, 0.3, gt_valid=valid)).astype(int)
    assert got.shape == (3, 30)
    for i in range(3):
        np.testing.assert_array_equal(got[i], match_loop(gt[i][valid[i]], anchors, 0.6, 0.3, True))


def test_match_anchors_best_anchor_guarantee_below_threshold():
    anchors = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 4, 4]], np.float32)
    gt = np.array([[0, 0, 10, 20]], np.float32)  # IoU 0.5 with anchor 0 only
    got = npy(B.match_anchors(gt, anchors, positive_iou=0.7, negative_iou=0.3)).astype(int)
    np.testing.assert_array_equal(got, [0, -1, -1])
    got = npy(B.match_anchors(gt, anchors, 0.7, 0.3, force_best_anchor=False)).astype(int)
    np.testing.assert_array_equal(got, [-2, -1, -1])


def test_match_anchors_zero_gt_and_padding_rows():
    anchors = random_boxes(np.random.default_rng(5), 6, min_side=1.0)
    got = npy(B.match_anchors(np.zeros((0, 4), np.float32), anchors)).astype(int)
    np.testing.assert_array_equal(got, np.full(6, -1))
    gt = np.concatenate([anchors[2:3], np.zeros((2, 4), np.float32)])
    got = npy(B.match_anchors(gt, anchors, gt_valid=np.array([True, False, False]))).astype(int)
    expected = match_loop(anchors[2:3], anchors, 0.5, 0.4)
    np.testing.assert_array_equal(got, expected)


def test_match_anchors_rejects_bad_thresholds_and_shapes():
    with pytest.raises(ValueError, match="negative_iou"):
        B.match_anchors(np.zeros((1, 4)), np.zeros((1, 4)), positive_iou=0.3, negative_iou=0.5)
    with pytest.raises(ValueError, match="gt_boxes"):
        B.match_anchors(np.zeros((1, 3)), np.zeros((1, 4)))


@pytest.mark.tf_only
@pytest.mark.parametrize("thr,score_thr", [(0.5, -np.inf), (0.3, 0.2), (0.7, -np.inf)])
def test_nms_matches_greedy_loop(thr, score_thr):
    rng = np.random.default_rng(6)
    boxes = random_boxes(rng, 60, min_side=1.0)
    scores = rng.uniform(0, 1, 60).astype(np.float32)
    got = B.nms(boxes, scores, iou_threshold=thr, max_outputs=25, score_threshold=score_thr)
    expected = greedy_nms_loop(boxes, scores, thr, 25, score_thr)
    np.testing.assert_array_equal(got.numpy(), expected)


@pytest.mark.tf_only
def test_batched_nms_is_per_class_nms_then_top_k():
    rng = np.random.default_rng(7)
    n, k = 30, 3
    boxes = random_boxes(rng, 2 * n, min_side=1.0).reshape(2, n, 4)
    scores = rng.uniform(0, 1, (2, n, k)).astype(np.float32)
    out = B.batched_nms(boxes, scores, max_output_per_class=5, max_total_size=12,
                        iou_threshold=0.4)
    assert set(out) == {"boxes", "scores", "classes", "num_detections"}
    assert out["classes"].dtype.name == "int32"
    for b in range(2):
        cands = []
        for c in range(k):
            for i in greedy_nms_loop(boxes[b], scores[b, :, c], 0.4, 5):
                cands.append((scores[b, i, c], c, i))
        cands.sort(key=lambda t: -t[0])
        cands = cands[:12]
        num = int(out["num_detections"][b])
        assert num == len(cands)
        np.testing.assert_allclose(out["scores"][b, :num].numpy(), [t[0] for t in cands],
                                   rtol=1e-6)
        np.testing.assert_array_equal(out["classes"][b, :num].numpy(), [t[1] for t in cands])
        np.testing.assert_allclose(out["boxes"][b, :num].numpy(),
                                   boxes[b, [t[2] for t in cands]], rtol=1e-6)


@pytest.mark.tf_only
def test_nms_rejects_bad_shapes():
    with pytest.raises(ValueError, match="boxes"):
        B.nms(np.zeros((3, 5)), np.zeros(3))
    with pytest.raises(ValueError, match="scores"):
        B.batched_nms(np.zeros((1, 3, 4)), np.zeros((1, 3)))


def test_box_voting_is_score_weighted_mean_of_overlaps():
    rng = np.random.default_rng(8)
    all_boxes = random_boxes(rng, 20, min_side=2.0)
    scores = rng.uniform(0.1, 1, 20).astype(np.float32)
    kept = all_boxes[[0, 5, 9]]
    kept = np.concatenate([kept, [[100, 100, 101, 101]]]).astype(np.float32)  # no neighbour
    got = npy(B.box_voting(kept, all_boxes, scores, iou_threshold=0.4))
    iou = iou_loop(kept, all_boxes)
    for k in range(len(kept)):
        sel = iou[k] >= 0.4
        expected = kept[k] if not sel.any() else (
            (scores[sel, None] * all_boxes[sel]).sum(0) / scores[sel].sum())
        np.testing.assert_allclose(got[k], expected, rtol=1e-5, atol=1e-4)


def test_clip_scale_normalize_flip_and_coco_conversions():
    boxes = np.array([[-2, 3, 12, 25], [1, -1, 5, 4]], np.float32)
    np.testing.assert_allclose(npy(B.clip_boxes(boxes, (10, 20))),
                               [[0, 3, 10, 20], [1, 0, 5, 4]])
    np.testing.assert_allclose(npy(B.scale_boxes(boxes, 2.0, 0.5)),
                               boxes * np.array([2, 0.5, 2, 0.5]))
    norm = npy(B.to_normalized(boxes, 10, 20))
    np.testing.assert_allclose(norm, boxes / np.array([10, 20, 10, 20]), rtol=1e-6)
    np.testing.assert_allclose(npy(B.to_absolute(norm, 10, 20)), boxes, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(npy(B.flip_boxes_horizontal(boxes, 20)),
                               [[-2, -5, 12, 17], [1, 16, 5, 21]])
    xywh = npy(B.yxyx_to_xywh(boxes))
    np.testing.assert_allclose(xywh, [[3, -2, 22, 14], [-1, 1, 5, 4]])
    np.testing.assert_allclose(npy(B.xywh_to_yxyx(xywh)), boxes)
    with pytest.raises(ValueError, match="height"):
        B.to_normalized(boxes, 0, 20)


def test_bad_box_shapes_and_variances_raise():
    with pytest.raises(ValueError, match="boxes_a"):
        B.box_iou(np.zeros((3, 5)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="variances"):
        B.encode_boxes(np.ones((1, 4)), np.ones((1, 4)), variances=(0.1, 0.1, 0.2))


box_strategy = st.tuples(
    st.floats(0, 50), st.floats(0, 50), st.floats(1, 40), st.floats(1, 40),
).map(lambda t: [t[0], t[1], t[0] + t[2], t[1] + t[3]])


@settings(max_examples=40, deadline=None)
@given(st.lists(box_strategy, min_size=1, max_size=6), st.lists(box_strategy, min_size=1,
                                                                max_size=6))
def test_property_iou_symmetric_bounded_and_self_one(a, b):
    a = np.asarray(a, np.float32)
    b = np.asarray(b, np.float32)
    ab = npy(B.box_iou(a, b))
    assert np.all(ab >= 0) and np.all(ab <= 1 + 1e-6)
    np.testing.assert_allclose(ab, npy(B.box_iou(b, a)).T, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.diag(npy(B.box_iou(a, a))), 1.0, rtol=1e-5)
    giou = npy(B.box_giou(a, b))
    assert np.all(giou <= ab + 1e-6) and np.all(giou >= -1 - 1e-6)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(box_strategy, box_strategy), min_size=1, max_size=5),
       st.sampled_from([(0.1, 0.1, 0.2, 0.2), (1.0, 1.0, 1.0, 1.0)]))
def test_property_encode_decode_round_trip(pairs, variances):
    boxes = np.asarray([p[0] for p in pairs], np.float32)
    anchors = np.asarray([p[1] for p in pairs], np.float32)
    deltas = B.encode_boxes(boxes, anchors, variances)
    np.testing.assert_allclose(npy(B.decode_boxes(deltas, anchors, variances)), boxes,
                               rtol=1e-4, atol=1e-3)
