"""Selective search (similarity terms against hand-computed numbers, region features against
numpy, recall on the shapes data), the proposal cache and the proposal plumbing of the
detection task (augmentation moves proposals exactly like the ground truth)."""

import numpy as np
import pytest

from cnn_apps.applications.detection.proposals import (compute_proposals, proposal_settings,
                                                       split_proposals)
from cnn_apps.errors import ConfigError
from cnn_apps.ops import selective_search
from cnn_apps.ops.selective_search import (colour_histograms, fill_similarity,
                                           histogram_intersection, region_features,
                                           size_similarity, texture_histograms)
from tests.applications.test_detection import (np_iou, shapes_root,  # noqa: F401
                                                tiny_detection_config)

pytestmark = pytest.mark.tf_only


# -- similarity terms -----------------------------------------------------------------------
def test_similarity_terms_match_hand_computed_values():
    # histogram intersection: min(.5,.2) + min(.5,.3) + min(0,.5) = 0.5
    assert histogram_intersection([0.5, 0.5, 0.0], [0.2, 0.3, 0.5]) == pytest.approx(0.5)
    assert histogram_intersection([0.25] * 4, [0.25] * 4) == pytest.approx(1.0)
    # size: 1 - (10 + 20) / 100
    assert size_similarity(10, 20, 100) == pytest.approx(0.7)
    # fill: two touching 2x2 squares fill their 2x4 bounding box exactly -> 1
    assert fill_similarity([0, 0, 2, 2], [0, 2, 2, 4], 4, 4, 100) == pytest.approx(1.0)
    # far apart: the 6x6 box holds 36 - 8 = 28 empty pixels -> 1 - 28/100
    assert fill_similarity([0, 0, 2, 2], [4, 4, 6, 6], 4, 4, 100) == pytest.approx(0.72)


def test_region_features_match_numpy():
    rng = np.random.default_rng(0)
    labels = np.zeros((12, 10), np.int64)
    labels[2:7, 3:9] = 1
    labels[8:, :4] = 2
    image = rng.uniform(0, 1, size=(12, 10, 3))
    sizes, boxes, colour, texture = region_features(labels, image)
    for r in range(3):
        rows, cols = np.nonzero(labels == r)
        assert sizes[r] == len(rows)
        np.testing.assert_array_equal(boxes[r], [rows.min(), cols.min(), rows.max() + 1,
                                                 cols.max() + 1])
        expected = np.concatenate([np.histogram(image[..., c][labels == r], bins=25,
                                                range=(0, 1))[0] for c in range(3)])
        np.testing.assert_allclose(colour[r], expected / expected.sum(), atol=1e-12)
        assert texture[r].shape == (3 * 8 * 10,)
        assert texture[r].sum() == pytest.approx(1.0)
    # one colour histogram per channel, each summing to 1/3 of the L1 norm
    np.testing.assert_allclose(colour_histograms(labels, image, 3).reshape(3, 3, 25).sum(-1),
                               1 / 3)
    assert texture_histograms(labels, image, 3).shape == (3, 240)


def test_selective_search_finds_objects_on_a_plain_background():
    image = np.full((64, 64, 3), 200, np.uint8)
    image[8:28, 10:40] = (220, 30, 30)
    image[36:60, 30:50] = (20, 40, 200)
    boxes = selective_search(image, max_proposals=50)
    assert boxes.dtype == np.float32 and boxes.ndim == 2 and 0 < len(boxes) <= 50
    assert np.all((boxes >= 0) & (boxes <= 1))
    assert np.all(boxes[:, 2] > boxes[:, 0]) and np.all(boxes[:, 3] > boxes[:, 1])
    assert len(np.unique(boxes, axis=0)) == len(boxes)
    for target in ([8, 10, 28, 40], [36, 30, 60, 50]):
        best = max(np_iou(b * 64, target) for b in boxes)
        assert best > 0.95
    np.testing.assert_array_equal(boxes, selective_search(image, max_proposals=50))


def test_selective_search_rejects_bad_arguments():
    with pytest.raises(ValueError, match="image"):
        selective_search(np.zeros((8, 8)))
    with pytest.raises(ValueError, match="colour_spaces"):
        selective_search(np.zeros((8, 8, 3)), colour_spaces=("cmyk",))
    with pytest.raises(ValueError, match="similarity_sets"):
        selective_search(np.zeros((8, 8, 3)), similarity_sets=(("shape",),))
    with pytest.raises(ConfigError, match="proposals"):
        proposal_settings({"proposals": {"max_proposal": 3}})
    with pytest.raises(ConfigError, match="max_proposals"):
        proposal_settings({"proposals": {"max_proposals": 0}})


def test_recall_on_the_shapes_validation_images(tmp_path):
    """Share of ground-truth boxes covered by a proposal at IoU >= 0.5, with at most 300
    proposals, on 12 shapes validation images at 128 px (measured: 27 of 30 = 0.90; objects
    of 6-7 px are the misses)."""
    from cnn_apps.applications.detection.data import records_to_arrays
    from cnn_apps.data.shapes import load_shapes

    val = load_shapes(tmp_path / "shapes", "val", num_train=2, num_val=12, image_size=128)
    images, gt = records_to_arrays(val.records, 128, max_boxes=8)
    settings = proposal_settings({"proposals": {"max_proposals": 300}})
    props = compute_proposals(images, settings)
    covered = total = 0
    for i in range(len(images)):
        valid = props[i][np.any(props[i] != 0, axis=-1)]
        assert 0 < len(valid) <= 300
        for g in gt[i][gt[i, :, 4] >= 0, :4]:
            total += 1
            covered += max(np_iou(p, g) for p in valid) >= 0.5
    assert total >= 20 and covered / total >= 0.85


def test_parallel_search_matches_the_serial_one(tmp_path):
    """Two spawned worker processes give exactly the boxes of the in-process loop, in image
    order."""
    from cnn_apps.applications.detection.data import records_to_arrays
    from cnn_apps.data.shapes import load_shapes

    val = load_shapes(tmp_path / "shapes", "val", num_train=2, num_val=5, image_size=96)
    images, _ = records_to_arrays(val.records, 96, max_boxes=8)
    settings = proposal_settings({"proposals": {"max_proposals": 50}})
    serial = compute_proposals(images, settings, workers=1)
    parallel = compute_proposals(images, settings, workers=2)
    assert np.any(serial != 0)
    np.testing.assert_array_equal(parallel, serial)


# -- cache ----------------------------------------------------------------------------------
def test_proposal_cache_is_reused_and_rebuilt_when_stale(tmp_path, monkeypatch):
    import cnn_apps.applications.detection.proposals as proposals_module

    rng = np.random.default_rng(1)
    images = rng.integers(0, 255, size=(2, 32, 32, 3)).astype(np.uint8)
    settings = proposal_settings({"proposals": {"max_proposals": 20, "scales": [100],
                                                "similarity_sets": [["colour", "size"]]}})
    first = split_proposals(images, settings, tmp_path, "train")
    assert first.shape == (2, 20, 4) and first.dtype == np.float32
    files = list(tmp_path.glob("train_*.npz"))
    assert len(files) == 1

    def refuse(*args, **kwargs):
        raise AssertionError("recomputed although a valid cache file exists")

    monkeypatch.setattr(proposals_module, "compute_proposals", refuse)
    np.testing.assert_array_equal(split_proposals(images, settings, tmp_path, "train"), first)
    monkeypatch.undo()
    changed = images.copy()
    changed[0, 0, 0] ^= 1
    split_proposals(changed, settings, tmp_path, "train")
    assert len(list(tmp_path.glob("train_*.npz"))) == 2
    # zero rows are padding: the real boxes come first
    real = np.any(first != 0, axis=-1)
    assert np.all(np.diff(real.astype(int), axis=1) <= 0)


# -- plumbing -------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5])
def test_augmentation_moves_proposals_exactly_like_ground_truth(seed):
    import tensorflow as tf

    from cnn_apps.applications.detection.data import augment_example

    gt = np.array([[0.1, 0.1, 0.5, 0.4, 2], [0.5, 0.6, 0.9, 0.95, 0], [0.0, 0.0, 0.08, 0.1, 1],
                   [0, 0, 0, 0, -1]], np.float32)
    image = np.random.default_rng(seed).uniform(0, 255, (32, 32, 3)).astype(np.float32)
    augment = {"horizontal_flip": True, "scale_range": [0.5, 1.3], "crop_probability": 1.0,
               "min_visible": 0.5}
    out_image, out_gt, out_props = augment_example(
        image, gt, tf.constant([seed, 7]), augment, proposals=gt[:, :4])
    ref_image, ref_gt = augment_example(image, gt, tf.constant([seed, 7]), augment)
    np.testing.assert_allclose(out_image, ref_image)
    np.testing.assert_allclose(out_gt, ref_gt)
    expected = np.where(ref_gt.numpy()[:, 4:5] >= 0, ref_gt.numpy()[:, :4], 0.0)
    np.testing.assert_allclose(out_props, expected, atol=1e-6)


def test_task_datasets_yield_images_and_proposals(shapes_root, tmp_path):  # noqa: F811
    from cnn_apps.applications.detection import TASK

    config = tiny_detection_config(shapes_root, model="rcnn",
                                   proposals={"max_proposals": 24,
                                              "cache_dir": str(tmp_path / "cache")})
    x, y = next(iter(TASK.train_dataset(config)))
    assert set(x) == {"images", "proposals"} and set(y) == {"raw"}
    assert x["images"].shape == (4, 64, 64, 3) and x["proposals"].shape == (4, 24, 4)
    boxes = x["proposals"].numpy()
    real = np.any(boxes != 0, axis=-1)
    assert real.any()
    assert np.all((boxes[real] >= 0) & (boxes[real] <= 1))
    assert np.all(boxes[real][:, 2] >= boxes[real][:, 0])
    xv, _ = next(iter(TASK.eval_dataset(config)))
    np.testing.assert_allclose(xv["proposals"].numpy(), TASK.proposals(config, "val")[:4])
    assert list((tmp_path / "cache").glob("val_*.npz"))
    info = TASK.model_info(config)
    assert info["proposals"]["max_proposals"] == 24 and "cache_dir" not in info["proposals"]
