"""Pascal VOC XML reader/writer: 1-based coordinates, difficult flags, splits and errors."""

import numpy as np
import pytest

from cnn_apps.data.coco import AnnotationError
from cnn_apps.data.voc import (VOC_CLASSES, load_voc_annotation, load_voc_detection,
                               write_voc_annotation)

XML = """<annotation>
  <folder>VOC2007</folder>
  <filename>{name}.jpg</filename>
  <size><width>50</width><height>40</height><depth>3</depth></size>
  {objects}
</annotation>
"""
OBJ = ("<object><name>{cls}</name><difficult>{hard}</difficult><bndbox><xmin>{x0}</xmin>"
       "<ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>")


def voc_root(tmp_path, files):
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "ImageSets" / "Main").mkdir(parents=True)
    for name, objects in files.items():
        body = "".join(OBJ.format(**o) for o in objects)
        (tmp_path / "Annotations" / f"{name}.xml").write_text(XML.format(name=name,
                                                                         objects=body))
    return tmp_path


DOG = dict(cls="dog", hard=0, x0=1, y0=1, x1=50, y1=40)     # the full 50x40 image
CAT = dict(cls="cat", hard=1, x0=11, y0=6, x1=20, y1=15)


def test_single_annotation_coordinates_and_flags(tmp_path):
    root = voc_root(tmp_path, {"000001": [DOG, CAT]})
    rec = load_voc_annotation(root / "Annotations" / "000001.xml")
    # 1-based inclusive -> 0-based pixel edges: (ymin-1, xmin-1, ymax, xmax)
    np.testing.assert_array_equal(rec["boxes"], [[0, 0, 40, 50], [5, 10, 15, 20]])
    np.testing.assert_array_equal(rec["classes"], [VOC_CLASSES.index("dog"),
                                                   VOC_CLASSES.index("cat")])
    np.testing.assert_array_equal(rec["difficult"], [False, True])
    assert (rec["height"], rec["width"]) == (40, 50)
    assert rec["image_path"] == str(root / "JPEGImages" / "000001.jpg")
    assert rec["image_id"] == "000001" and rec["name"] == "000001"


def test_detection_split_file_class_names_and_skip_difficult(tmp_path):
    root = voc_root(tmp_path, {"a": [DOG], "b": [CAT, DOG], "c": []})
    (root / "ImageSets" / "Main" / "val.txt").write_text("b\nc\n")
    data = load_voc_detection(root, "val", class_names=["dog", "cat"])
    assert [r["name"] for r in data.records] == ["b", "c"]
    assert [r["image_id"] for r in data.records] == [0, 1]
    assert data.class_names == ["dog", "cat"] and data.categories[0]["id"] == 1
    np.testing.assert_array_equal(data.records[0]["classes"], [1, 0])
    assert data.records[1]["boxes"].shape == (0, 4)
    easy = load_voc_detection(root, None, ["dog", "cat"], skip_difficult=True)
    assert [r["name"] for r in easy.records] == ["a", "b", "c"]
    np.testing.assert_array_equal(easy.records[1]["classes"], [0])


def test_write_read_round_trip(tmp_path):
    record = {"file_name": "x.png", "height": 32, "width": 48,
              "boxes": np.array([[0, 0, 32, 48], [3, 4, 10.5, 20]], np.float32),
              "classes": np.array([1, 0]), "difficult": np.array([False, True])}
    path = write_voc_annotation(tmp_path / "Annotations" / "x.xml", record, ["sq", "tri"])
    back = load_voc_annotation(path, class_names=["sq", "tri"])
    np.testing.assert_allclose(back["boxes"], record["boxes"])
    np.testing.assert_array_equal(back["classes"], [1, 0])
    np.testing.assert_array_equal(back["difficult"], [False, True])
    assert "<xmin>1</xmin>" in open(path).read()               # integer boxes stay integers


@pytest.mark.parametrize("body,pattern", [
    ("<annotation><filename>x.jpg</filename", r"malformed XML"),
    ("<notvoc/>", r"root element is <notvoc>"),
    (XML.format(name="x", objects="<object><name>dog</name></object>"),
     r"object #0 \('dog'\): missing <bndbox>"),
    (XML.format(name="x", objects="<object><bndbox/></object>"), r"object #0: missing <name>"),
    (XML.format(name="x", objects=OBJ.format(cls="unicorn", hard=0, x0=1, y0=1, x1=2, y1=2)),
     r"object #0 \('unicorn'\): unknown class"),
    (XML.format(name="x", objects=OBJ.format(cls="dog", hard=0, x0=9, y0=1, x1=2, y1=5)),
     r"inverted or empty box"),
    (XML.format(name="x", objects=OBJ.format(cls="dog", hard=0, x0=1, y0=1, x1=60, y1=5)),
     r"outside the 50x40 image"),
    (XML.format(name="x", objects="<object><name>dog</name><bndbox><xmin>a</xmin></bndbox>"
                                  "</object>"), r"<xmin> is not a number"),
    ("<annotation><filename>x.jpg</filename></annotation>", r"missing <size>"),
])
def test_bad_xml_errors_name_the_file(tmp_path, body, pattern):
    path = tmp_path / "broken_one.xml"
    path.write_text(body)
    with pytest.raises(AnnotationError, match="broken_one.xml") as info:
        load_voc_annotation(path)
    assert info.match(pattern)


def test_box_one_pixel_outside_is_clipped_with_warning(tmp_path):
    path = tmp_path / "edge.xml"
    path.write_text(XML.format(name="e", objects=OBJ.format(cls="dog", hard=0, x0=1, y0=1,
                                                            x1=51, y1=40)))
    with pytest.warns(UserWarning, match="clipped 1 box"):
        rec = load_voc_annotation(path)
    np.testing.assert_array_equal(rec["boxes"], [[0, 0, 40, 50]])


def test_missing_split_ids_and_layout_errors(tmp_path):
    root = voc_root(tmp_path, {"a": [DOG]})
    (root / "ImageSets" / "Main" / "train.txt").write_text("a\nghost\n")
    with pytest.raises(AnnotationError, match=r"train.txt: 1 listed id\(s\).*ghost"):
        load_voc_detection(root, "train")
    with pytest.raises(AnnotationError, match="split file 'nosplit' not found"):
        load_voc_detection(root, "nosplit")
    with pytest.raises(AnnotationError, match="no Annotations/ folder"):
        load_voc_detection(tmp_path / "ImageSets")
