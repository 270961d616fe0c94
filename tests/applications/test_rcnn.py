"""R-CNN and SPP-net: the hinge SVM (against scikit-learn's liblinear), ridge regression
(against the closed form and scikit-learn), SPP over regions against numpy, and tiny
end-to-end runs (fine-tuning, SVM stage, COCO metrics, reload, SavedModel serving with
image bytes + proposals, CLI predict)."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from cnn_apps.applications.detection import TASK
from cnn_apps.applications.detection.svm_stage import (box_iou_np, fit_class_svms, fit_ridge,
                                                       hinge_objective, same_image_overlaps,
                                                       svm_settings, train_linear_svm)
from tests.applications.test_detection import shapes_root, tiny_detection_config  # noqa: F401

pytestmark = pytest.mark.tf_only


# -- SVM and ridge --------------------------------------------------------------------------
def toy_set(seed=0, n=60, d=5, gap=1.0):
    rng = np.random.default_rng(seed)
    direction = rng.normal(size=d)
    direction /= np.linalg.norm(direction)
    x = rng.normal(size=(n, d))
    y = np.where(x @ direction > 0, 1.0, -1.0)
    x += np.outer(y * gap, direction)  # push the classes apart along the normal
    return x, y


def test_hinge_svm_separates_a_separable_set_like_liblinear():
    from sklearn.svm import LinearSVC

    x, y = toy_set()
    w, b = train_linear_svm(x, y, c=1.0, bias_scale=1.0, max_epochs=500, tol=1e-6)
    assert np.all(np.sign(x @ w + b) == y)
    ref = LinearSVC(C=1.0, loss="hinge", dual=True, intercept_scaling=1.0, tol=1e-8,
                    max_iter=100000).fit(x, y)
    ours = hinge_objective(w, b, x, y, 1.0, 1.0, 1.0)
    theirs = hinge_objective(ref.coef_[0], float(ref.intercept_[0]), x, y, 1.0, 1.0, 1.0)
    assert ours == pytest.approx(theirs, rel=1e-3)
    np.testing.assert_allclose(x @ w + b, ref.decision_function(x), atol=2e-2)


def test_positive_weight_and_bias_scale_match_liblinear():
    from sklearn.svm import LinearSVC

    x, y = toy_set(1, gap=0.0)  # overlapping classes: the weights matter
    for weight, scale in ((1.0, 1.0), (3.0, 1.0), (2.0, 10.0)):
        w, b = train_linear_svm(x, y, c=0.5, positive_weight=weight, bias_scale=scale,
                                max_epochs=2000, tol=1e-7)
        ref = LinearSVC(C=0.5, loss="hinge", dual=True, intercept_scaling=scale,
                        class_weight={1: weight, -1: 1.0}, tol=1e-9, max_iter=1000000).fit(x, y)
        ours = hinge_objective(w, b, x, y, 0.5, weight, scale)
        theirs = hinge_objective(ref.coef_[0], float(ref.intercept_[0]), x, y, 0.5, weight,
                                 scale)
        assert ours == pytest.approx(theirs, rel=1e-3)
    w1, b1 = train_linear_svm(x, y, c=0.5, positive_weight=1.0, max_epochs=500)
    w3, b3 = train_linear_svm(x, y, c=0.5, positive_weight=3.0, max_epochs=500)
    # heavier positives: at least as many positives on the positive side
    assert np.sum((x @ w3 + b3 > 0) & (y > 0)) >= np.sum((x @ w1 + b1 > 0) & (y > 0))
    with pytest.raises(ValueError, match="labels"):
        train_linear_svm(x, np.zeros(len(x)))


def test_ridge_matches_the_closed_form_and_sklearn():
    from sklearn.linear_model import Ridge

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 6))
    t = x @ rng.normal(size=(6, 4)) + rng.normal(size=4) + 0.1 * rng.normal(size=(40, 4))
    lam = 3.0
    w, b = fit_ridge(x, t, lam)
    # normal equations of [x, 1] with the intercept unpenalized
    xa = np.concatenate([x, np.ones((40, 1))], axis=1)
    penalty = np.diag([lam] * 6 + [0.0])
    solution = np.linalg.solve(xa.T @ xa + penalty, xa.T @ t)
    np.testing.assert_allclose(w, solution[:6], atol=1e-10)
    np.testing.assert_allclose(b, solution[6], atol=1e-10)
    ref = Ridge(alpha=lam).fit(x, t)
    np.testing.assert_allclose(w, ref.coef_.T, atol=1e-8)
    np.testing.assert_allclose(b, ref.intercept_, atol=1e-8)


def test_class_svms_with_hard_negative_mining_rank_positives_first():
    rng = np.random.default_rng(0)
    d, num_classes = 8, 2
    centres = rng.normal(scale=4.0, size=(num_classes, d))
    gt_classes = np.repeat(np.arange(num_classes), 10)
    gt_features = centres[gt_classes] + rng.normal(size=(20, d))
    negatives = rng.normal(size=(400, d))
    near = centres[0] + rng.normal(size=(20, d))  # proposals on objects of class 0
    features = np.concatenate([negatives, near])
    max_iou = np.zeros((420, num_classes))
    max_iou[400:, 0] = 0.8  # not negatives for class 0
    settings = svm_settings({"initial_negatives": 20, "mining_rounds": 2, "svm_c": 1.0})
    weights, biases = fit_class_svms(gt_features, gt_classes, features, max_iou, num_classes,
                                     settings)
    for cls in range(num_classes):
        pos = gt_features[gt_classes == cls] @ weights[:, cls] + biases[cls]
        neg = negatives @ weights[:, cls] + biases[cls]
        assert pos.min() > neg.max()


# -- SPP over regions -----------------------------------------------------------------------
def np_roi_spp(fmap, roi, bins):
    """SPP-net pooling of one window: the roi's rounded cells, b x b floor/ceil bins, max."""
    height, width, _ = fmap.shape
    y0, y1 = int(np.floor(roi[0] * height + 0.5)), int(np.floor(roi[2] * height + 0.5))
    x0, x1 = int(np.floor(roi[1] * width + 0.5)), int(np.floor(roi[3] * width + 0.5))
    h, w = max(y1 - y0, 1), max(x1 - x0, 1)
    out = []
    for b in bins:
        for i in range(b):
            for j in range(b):
                r0 = min(max(y0 + int(np.floor(i * h / b)), 0), height)
                r1 = min(max(y0 + int(np.ceil((i + 1) * h / b)), 0), height)
                c0 = min(max(x0 + int(np.floor(j * w / b)), 0), width)
                c1 = min(max(x0 + int(np.ceil((j + 1) * w / b)), 0), width)
                out.append(fmap[r0:r1, c0:c1].max(axis=(0, 1)))
    return np.concatenate(out)


def test_same_image_overlaps_equal_the_masked_full_matrix():
    """Image by image equals the (P, G) IoU matrix with other images' pairs zeroed."""
    rng = np.random.default_rng(3)

    def boxes(n):
        corner = rng.uniform(0, 0.7, (n, 2))
        return np.concatenate([corner, corner + rng.uniform(0.05, 0.3, (n, 2))], axis=1)

    proposals, gt_boxes = boxes(120), boxes(14)
    image_index = rng.integers(0, 6, 120)           # image 5 has proposals but no ground truth
    gt_image_index = np.sort(rng.integers(0, 5, 14))[::-1]  # unsorted input is fine
    gt_classes = rng.integers(0, 3, 14)
    max_iou, best, best_iou = same_image_overlaps(proposals, image_index, gt_boxes, gt_classes,
                                                  gt_image_index, 4)
    iou = box_iou_np(proposals, gt_boxes)
    iou[image_index[:, None] != gt_image_index[None, :]] = 0.0
    for cls in range(4):  # class 3 has no ground truth: 0 everywhere
        cols = gt_classes == cls
        expected = iou[:, cols].max(axis=1) if cols.any() else np.zeros(len(proposals))
        np.testing.assert_allclose(max_iou[:, cls], expected)
    np.testing.assert_allclose(best_iou, iou.max(axis=1))
    hit = best_iou > 0
    np.testing.assert_array_equal(best[hit], iou.argmax(axis=1)[hit])
    assert (best[image_index == 5] == -1).all()


def test_spp_on_regions_of_varied_sizes_matches_numpy():
    from cnn_apps.applications.detection.sppnet import RoISpatialPyramidPooling
    from cnn_apps.layers import SpatialPyramidPooling2D

    rng = np.random.default_rng(0)
    fmap = rng.normal(size=(2, 12, 10, 3)).astype(np.float32)
    rois = np.array([[[0.0, 0.0, 1.0, 1.0], [0.1, 0.2, 0.5, 0.9], [0.3, 0.3, 0.45, 0.5]],
                     [[0.5, 0.0, 1.0, 0.4], [0.2, 0.1, 0.9, 0.8], [0.0, 0.6, 0.35, 1.0]]],
                    np.float32)
    bins = (1, 2, 4)
    out = np.asarray(RoISpatialPyramidPooling(bins)([fmap, rois]))
    assert out.shape == (2, 3, 3 * 21)  # the same length for every window size
    for n in range(2):
        for r in range(3):
            np.testing.assert_allclose(out[n, r], np_roi_spp(fmap[n], rois[n, r], bins),
                                       rtol=1e-6)
    # the whole-map window is exactly image-level SPP (SpatialPyramidPooling2D)
    np.testing.assert_allclose(out[0, 0], np.asarray(SpatialPyramidPooling2D(bins)(fmap))[0],
                               rtol=1e-6)


# -- end to end -----------------------------------------------------------------------------
def tiny_rcnn_config(root, model, tmp_path, formats=()):
    section = {"batch_rois": 8, "svm_proposals_per_image": 12, "initial_negatives": 30,
               "mining_rounds": 1, "svm_epochs": 10}
    if model == "rcnn":
        section.update({"warp_size": 32, "fc_units": 16})
    else:
        section.update({"feature_channels": 16, "fc_units": [16]})
    return tiny_detection_config(
        root, name=model, model=model, **{model: section},
        proposals={"max_proposals": 16, "cache_dir": str(tmp_path / "proposals"),
                   "scales": [100], "similarity_sets": [["colour", "size", "fill"]]},
        export={"formats": list(formats)})


def _train(tmp_path_factory, root, model, formats=()):
    from cnn_apps.training import train

    tmp = tmp_path_factory.mktemp(f"{model}_run")
    config = tiny_rcnn_config(root, model, tmp, formats)
    return train("detection", config, runs_root=tmp / "runs", verbose=0), config


@pytest.fixture(scope="module")
def rcnn_run(tmp_path_factory, shapes_root):  # noqa: F811
    return _train(tmp_path_factory, shapes_root, "rcnn")


@pytest.fixture(scope="module")
def sppnet_run(tmp_path_factory, shapes_root):  # noqa: F811
    # the export path (serving_endpoints) is shared by every proposal detector: one export
    return _train(tmp_path_factory, shapes_root, "sppnet", formats=["saved_model"])


@pytest.fixture(params=["rcnn", "sppnet"])
def trained(request):
    return request.getfixturevalue(f"{request.param}_run")


def test_train_runs_every_stage_and_reloads(trained):
    from cnn_apps.export import load_run_model

    result, config = trained
    for key in ("AP", "AP50", "AP75"):
        assert -1.0 <= result.metrics[key] <= 1.0
    stage = json.loads((result.run_dir / "svm_stage.json").read_text())
    assert stage["positives"] > 0 and stage["proposals"] > 0
    assert json.loads((result.run_dir / "metrics.json").read_text())["model"] == config["model"]
    model, info = load_run_model(result.run_dir)
    assert model.score_mode == "svm" and result.model.score_mode == "svm"
    np.testing.assert_allclose(model.cls_score.get_weights()[0],
                               result.model.cls_score.get_weights()[0])
    inputs = TASK.example_inputs(info, 2)
    expected = np.asarray(result.model(inputs)["raw"])
    np.testing.assert_allclose(np.asarray(model(inputs)["raw"]), expected, atol=1e-5)
    c = len(info["class_names"])
    assert expected.shape == (2, 16, 5 * c)
    scores = expected[..., 4 * c:]
    assert np.all((scores >= 0) & (scores <= 1))
    padding = ~np.any(inputs["proposals"] != 0, axis=-1)
    assert np.all(scores[padding] == 0)


def test_saved_model_takes_image_bytes_and_proposals(sppnet_run):
    import cv2

    result, config = sppnet_run
    path = sorted((result.run_dir / "export" / "saved_model").iterdir())[-1]
    loaded = tf.saved_model.load(str(path))
    sig = loaded.signatures["serving_default"]
    inputs = sig.structured_input_signature[1]
    assert inputs["image_bytes"].dtype == tf.string
    assert inputs["proposals"].shape.as_list() == [None, 16, 4]
    assert set(sig.structured_outputs) == {"detection_boxes", "detection_scores",
                                           "detection_classes", "num_detections"}
    data = TASK.data(config)
    proposals = TASK.proposals(config, "val")[:2]
    blobs = [cv2.imencode(".png", cv2.cvtColor(im, cv2.COLOR_RGB2BGR))[1].tobytes()
             for im in data.x_val[:2]]
    out = sig(image_bytes=tf.constant(blobs), proposals=tf.constant(proposals))
    assert out["detection_boxes"].shape == (2, 100, 4)
    assert np.all(out["num_detections"].numpy() >= 0)
    tensor = loaded.signatures["predict_tensor"](
        images=tf.constant(data.x_val[:2], tf.float32), proposals=tf.constant(proposals))
    info = TASK.model_info(config)
    direct = TASK.detect(result.model, data.x_val[:2], info, proposals=proposals)
    np.testing.assert_allclose(tensor["detection_scores"], direct["detection_scores"],
                               atol=1e-4)


def test_predict_and_cli_compute_proposals(rcnn_run, tmp_path, capsys):
    import cv2

    from cnn_apps.cli import main

    result, config = rcnn_run
    info = TASK.model_info(config)
    preds = TASK.predict(result.model, TASK.data(config).x_val[:1], info, top_k=3)
    assert len(preds) == 1 and preds[0]["num_detections"] <= 3
    image = tmp_path / "shape.png"
    cv2.imwrite(str(image), TASK.data(config).x_val[0][..., ::-1])
    assert main(["predict", str(result.run_dir), str(image), "--top-k", "3"]) == 0
    row = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert row["image"] == str(image) and len(row["detections"]) <= 3


@pytest.mark.slow
def test_fresh_process_cli_predict_loads_the_lazily_registered_model(rcnn_run, tmp_path):
    """``cnn-apps predict`` in a new interpreter: the detector module (which registers the
    model class) is imported by ``load_run_model`` through ``DetectionTask.prepare_loading``."""
    import subprocess
    import sys

    import cv2

    result, config = rcnn_run
    image = tmp_path / "shape.png"
    cv2.imwrite(str(image), TASK.data(config).x_val[1][..., ::-1])
    code = ("import sys; from cnn_apps.cli import main; "
            f"sys.exit(main(['predict', {str(result.run_dir)!r}, {str(image)!r}]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    row = json.loads(done.stdout.strip().splitlines()[-1])
    assert row["image"] == str(image) and "detections" in row
