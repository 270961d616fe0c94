"""COCO JSON reader/writer: record contents, keypoints, and errors naming file + annotation."""

import copy
import json

import numpy as np
import pytest

from cnn_apps.data.coco import (AnnotationError, load_coco_detection, normalize_categories,
                                write_coco_detection)


def coco_dict():
    return {
        "images": [{"id": 10, "file_name": "a.png", "height": 40, "width": 60},
                   {"id": 11, "file_name": "b.png", "height": 30, "width": 30},
                   {"id": 12, "file_name": "empty.png", "height": 20, "width": 20}],
        "categories": [{"id": 7, "name": "cat"}, {"id": 3, "name": "dog"}],
        "annotations": [
            {"id": 1, "image_id": 10, "category_id": 7, "bbox": [5, 6, 10, 20], "area": 150.0},
            {"id": 2, "image_id": 10, "category_id": 3, "bbox": [0, 0, 60, 40], "iscrowd": 1},
            {"id": 3, "image_id": 11, "category_id": 3, "bbox": [1.5, 2.5, 3, 4]},
        ],
    }


def write(tmp_path, data, name="ann.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def test_records_boxes_classes_and_categories(tmp_path):
    path = write(tmp_path, coco_dict())
    data = load_coco_detection(path, image_root="/images")
    records, categories = data
    assert [c["id"] for c in categories] == [3, 7] and data.class_names == ["dog", "cat"]
    assert [c["index"] for c in categories] == [0, 1]
    assert [r["image_id"] for r in records] == [10, 11, 12]
    a = records[0]
    assert a["image_path"] == "/images/a.png" and (a["height"], a["width"]) == (40, 60)
    # bbox [x, y, w, h] = [5, 6, 10, 20] -> (ymin, xmin, ymax, xmax) = (6, 5, 26, 15)
    np.testing.assert_array_equal(a["boxes"], [[6, 5, 26, 15], [0, 0, 40, 60]])
    assert a["boxes"].dtype == np.float32 and a["classes"].dtype == np.int32
    np.testing.assert_array_equal(a["classes"], [1, 0])         # cat (id 7) -> 1, dog -> 0
    np.testing.assert_array_equal(a["category_ids"], [7, 3])
    np.testing.assert_array_equal(a["annotation_ids"], [1, 2])
    np.testing.assert_array_equal(a["iscrowd"], [False, True])
    np.testing.assert_allclose(a["areas"], [150.0, 2400.0])     # given area, else w*h
    np.testing.assert_allclose(records[1]["boxes"], [[2.5, 1.5, 6.5, 4.5]])
    assert records[2]["boxes"].shape == (0, 4) and records[2]["classes"].shape == (0,)
    assert "keypoints" not in a


def test_default_image_root_is_json_folder(tmp_path):
    records, _ = load_coco_detection(write(tmp_path, coco_dict()))
    assert records[0]["image_path"] == str(tmp_path / "a.png")


def test_keypoints_are_read_as_n_k_3(tmp_path):
    data = coco_dict()
    data["categories"][0]["keypoints"] = ["nose", "tail"]
    data["annotations"][0]["keypoints"] = [6, 7, 2, 12, 20, 1]
    records, _ = load_coco_detection(write(tmp_path, data))
    kps = records[0]["keypoints"]
    assert kps.shape == (2, 2, 3)
    np.testing.assert_array_equal(kps[0], [[6, 7, 2], [12, 20, 1]])
    np.testing.assert_array_equal(kps[1], 0)                    # annotation without keypoints


def test_clip_within_one_pixel_warns_and_beyond_raises(tmp_path):
    data = coco_dict()
    data["annotations"][0]["bbox"] = [-0.5, 6, 61, 20]          # 0.5 px left, 0.5 px right
    with pytest.warns(UserWarning, match=r"clipped 1 box.*\[1\]"):
        records, _ = load_coco_detection(write(tmp_path, data))
    np.testing.assert_allclose(records[0]["boxes"][0], [6, 0, 26, 60])
    data["annotations"][0]["bbox"] = [5, 6, 10, 40]             # 6 px below a 40 px image
    path = write(tmp_path, data, "far.json")
    with pytest.raises(AnnotationError, match=r"far\.json: annotation id 1: .*outside image 10"):
        load_coco_detection(path)


def test_zero_size_boxes_are_dropped_with_warning(tmp_path):
    data = coco_dict()
    data["annotations"][2]["bbox"] = [1, 2, 0, 4]
    with pytest.warns(UserWarning, match=r"dropped 1 zero-width"):
        records, _ = load_coco_detection(write(tmp_path, data))
    assert records[1]["boxes"].shape == (0, 4)


@pytest.mark.parametrize("mutate,pattern", [
    (lambda d: d["annotations"][1].pop("bbox"), r"annotation id 2: missing key\(s\) \['bbox'\]"),
    (lambda d: d["annotations"][1].update(bbox=[1, 1, -3, 2]), r"annotation id 2: .*negative"),
    (lambda d: d["annotations"][1].update(bbox=[1, 1, 2]), r"annotation id 2: 'bbox' must be 4"),
    (lambda d: d["annotations"][2].update(category_id=99),
     r"annotation id 3: unknown category id 99"),
    (lambda d: d["annotations"][2].update(image_id=404),
     r"annotation id 3: refers to image id 404"),
    (lambda d: d["annotations"][0].pop("id"), r"annotation #0 \(no 'id'\): missing"),
    (lambda d: d["images"][1].pop("height"), r"image #1 \(id 11\): missing key"),
    (lambda d: d.pop("categories"), r"top-level key 'categories'"),
])
def test_invalid_annotations_name_file_and_annotation(tmp_path, mutate, pattern):
    data = copy.deepcopy(coco_dict())
    mutate(data)
    path = write(tmp_path, data, "bad_file.json")
    with pytest.raises(AnnotationError, match="bad_file.json") as info:
        load_coco_detection(path)
    assert isinstance(info.value, ValueError)
    assert info.match(pattern)


def test_invalid_json_and_missing_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(AnnotationError, match=r"broken\.json: not valid JSON"):
        load_coco_detection(path)
    with pytest.raises(AnnotationError, match="nothere.json: annotation file not found"):
        load_coco_detection(tmp_path / "nothere.json")


def test_write_then_read_round_trip(tmp_path):
    records, categories = load_coco_detection(write(tmp_path, coco_dict()))
    out = write_coco_detection(tmp_path / "sub" / "copy.json", records, categories)
    raw = json.loads(open(out).read())
    assert raw["annotations"][0]["bbox"] == [5, 6, 10, 20]
    assert raw["annotations"][0]["category_id"] == 7
    again, cats = load_coco_detection(out)
    assert [c["id"] for c in cats] == [3, 7]
    for a, b in zip(records, again):
        np.testing.assert_allclose(a["boxes"], b["boxes"])
        np.testing.assert_array_equal(a["classes"], b["classes"])
        np.testing.assert_array_equal(a["iscrowd"], b["iscrowd"])
    assert not list((tmp_path / "sub").glob(".*tmp"))          # no temporary left behind


def test_writer_and_categories_validate_input():
    with pytest.raises(ValueError, match="duplicate ids"):
        normalize_categories([{"id": 1, "name": "a"}, {"id": 1, "name": "b"}])
    assert [c["id"] for c in normalize_categories(["x", "y"])] == [1, 2]
    with pytest.raises(ValueError, match=r"records\[0\].*classes"):
        write_coco_detection("/tmp/never_written.json",
                             [{"boxes": np.zeros((1, 4)), "classes": [5], "height": 4,
                               "width": 4, "file_name": "x.png"}], ["a"])
