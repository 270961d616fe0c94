"""Built-in shapes dataset: written files read back through the COCO and VOC readers."""

import json
import os
import socket

import cv2
import numpy as np
import pytest

from cnn_apps.data import shapes
from cnn_apps.data.coco import load_coco_detection
from cnn_apps.data.voc import load_voc_detection
from cnn_apps.errors import DataError

SMALL = dict(num_train=4, num_val=2, image_size=64, seed=3, max_objects=4)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes") / "data"
    return shapes.make_shapes_dataset(root, write_voc=True, **SMALL)


def test_files_written_in_standard_layout(dataset):
    assert sorted(os.listdir(dataset["train_images"])) == [f"train_{i:06d}.png" for i in range(4)]
    assert sorted(os.listdir(dataset["val_images"])) == [f"val_{i:06d}.png" for i in range(2)]
    meta = json.loads(open(dataset["meta"]).read())
    assert meta["params"]["image_size"] == 64 and meta["class_names"] == list(shapes.CLASS_NAMES)
    raw = json.loads(open(dataset["train_annotations"]).read())
    assert {c["name"] for c in raw["categories"]} == set(shapes.CLASS_NAMES)


def test_coco_read_back_gives_valid_boxes_and_images(dataset):
    train = load_coco_detection(dataset["train_annotations"], dataset["train_images"])
    assert train.class_names == list(shapes.CLASS_NAMES)
    assert len(train.records) == 4
    for rec in train.records:
        image = cv2.imread(rec["image_path"])
        assert image is not None and image.shape == (64, 64, 3)
        boxes = rec["boxes"]
        assert 1 <= len(boxes) <= 4
        assert np.all(boxes >= 0) and np.all(boxes <= 64)
        assert np.all(boxes[:, 2] > boxes[:, 0]) and np.all(boxes[:, 3] > boxes[:, 1])
        assert np.all((rec["classes"] >= 0) & (rec["classes"] < 4))
        # Boxes are integer pixel edges of drawn pixels.
        np.testing.assert_array_equal(boxes, np.round(boxes))


def test_voc_copy_matches_coco(dataset):
    for split in ("train", "val"):
        coco = load_coco_detection(dataset[f"{split}_annotations"], dataset[f"{split}_images"])
        voc = load_voc_detection(dataset["voc_root"], split, class_names=shapes.CLASS_NAMES)
        assert len(voc.records) == len(coco.records)
        for a, b in zip(coco.records, voc.records):
            np.testing.assert_array_equal(a["boxes"], b["boxes"])
            np.testing.assert_array_equal(a["classes"], b["classes"])
            assert os.path.basename(a["image_path"]) == os.path.basename(b["image_path"])
            assert os.path.isfile(b["image_path"])


def test_deterministic_for_a_seed(dataset, tmp_path):
    again = shapes.make_shapes_dataset(tmp_path / "again", **SMALL)
    for key in ("train_annotations", "val_annotations"):
        assert open(dataset[key], "rb").read() == open(again[key], "rb").read()
    name = "train_000002.png"
    a = cv2.imread(os.path.join(dataset["train_images"], name))
    b = cv2.imread(os.path.join(again["train_images"], name))
    np.testing.assert_array_equal(a, b)
    other = shapes.make_shapes_dataset(tmp_path / "other", **{**SMALL, "seed": 4})
    assert open(dataset["train_annotations"]).read() != open(other["train_annotations"]).read()


def test_idempotent_and_regenerates_on_new_parameters(tmp_path):
    paths = shapes.make_shapes_dataset(tmp_path / "d", num_train=2, num_val=1, image_size=48)
    marker = tmp_path / "d" / "marker.txt"
    marker.write_text("kept if not regenerated")
    stamp = os.stat(paths["meta"]).st_mtime_ns
    shapes.make_shapes_dataset(tmp_path / "d", num_train=2, num_val=1, image_size=48)
    assert marker.exists() and os.stat(paths["meta"]).st_mtime_ns == stamp
    shapes.make_shapes_dataset(tmp_path / "d", num_train=3, num_val=1, image_size=48)
    assert not marker.exists()
    assert len(os.listdir(paths["train_images"])) == 3


def test_interrupted_generation_leaves_nothing(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = cv2.imwrite

    def failing_imwrite(path, image):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("simulated interruption")
        return real(path, image)

    monkeypatch.setattr(cv2, "imwrite", failing_imwrite)
    with pytest.raises(KeyboardInterrupt):
        shapes.make_shapes_dataset(tmp_path / "half", num_train=4, num_val=1, image_size=48)
    assert os.listdir(tmp_path) == []


def test_refuses_to_overwrite_foreign_folder_and_validates(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(DataError, match="not a shapes dataset"):
        shapes.make_shapes_dataset(tmp_path / "mine", num_train=1, num_val=0, image_size=32)
    assert (tmp_path / "mine" / "thesis.tex").exists()
    with pytest.raises(ValueError, match="image_size"):
        shapes.make_shapes_dataset(tmp_path / "x", image_size=16)
    with pytest.raises(ValueError, match="min_objects"):
        shapes.make_shapes_dataset(tmp_path / "x", min_objects=3, max_objects=2)


def test_background_images_load_without_network(monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    shapes._background_sources.cache_clear()
    sources = shapes._background_sources()
    assert len(sources) == len(shapes._BACKGROUNDS)
    assert all(s.ndim == 3 and s.shape[-1] == 3 and s.dtype == np.uint8 for s in sources)


def test_load_shapes_reads_split(tmp_path):
    data = shapes.load_shapes(tmp_path / "s", "val", num_train=1, num_val=2, image_size=32)
    assert len(data.records) == 2 and data.records[0]["height"] == 32
