"""Each kind of bad input raises DatasetError naming the file at fault."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

import isus


@pytest.fixture
def coco(synth_root, tmp_path):
    root = tmp_path / "coco"
    shutil.copytree(synth_root("coco"), root)
    return root


@pytest.fixture
def mvd(synth_root, tmp_path):
    root = tmp_path / "mvd"
    shutil.copytree(synth_root("mvd"), root)
    return root


def _edit_json(path, fn):
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


def test_missing_root(tmp_path):
    for name in isus.dataset_names():
        with pytest.raises(isus.DatasetError, match="not found") as e:
            isus.open_dataset(name, tmp_path / "nope")
        assert str(tmp_path / "nope") in str(e.value)


def test_missing_split_directory(mvd):
    with pytest.raises(isus.DatasetError, match="images directory not found") as e:
        isus.open_dataset("mvd", mvd, split="validation")
    assert "validation" in str(e.value)


def test_unknown_format_lists_the_known_ones(tmp_path):
    with pytest.raises(ValueError, match="cityscapes.*coco.*idd.*mvd"):
        isus.open_dataset("kitti", tmp_path)


def test_json_lists_a_segment_missing_from_the_png(coco):
    ann = coco / "annotations" / "panoptic_train2017.json"
    _edit_json(ann, lambda d: d["annotations"][0]["segments_info"].append(
        {"id": 123, "category_id": 1, "iscrowd": 0, "area": 1, "bbox": [0, 0, 1, 1]}))
    ds = isus.open_dataset("coco", coco)
    with pytest.raises(isus.DatasetError, match=r"lists segment ids \[123\]") as e:
        ds.load_panoptic(0)
    assert "000000001000.png" in str(e.value)


def test_png_holds_a_segment_the_json_does_not_list(coco):
    ann = coco / "annotations" / "panoptic_train2017.json"
    _edit_json(ann, lambda d: d["annotations"][0]["segments_info"].pop())
    with pytest.raises(isus.DatasetError, match="does not list") as e:
        isus.open_dataset("coco", coco).load_panoptic(0)
    assert "000000001000.png" in str(e.value)


def test_image_without_annotation(coco):
    ann = coco / "annotations" / "panoptic_train2017.json"
    _edit_json(ann, lambda d: d["annotations"].pop(2))
    with pytest.raises(isus.DatasetError, match="has no annotation") as e:
        isus.open_dataset("coco", coco)
    assert "panoptic_train2017.json" in str(e.value)


def test_unknown_category_in_json(coco):
    ann = coco / "annotations" / "panoptic_train2017.json"
    _edit_json(ann, lambda d: d["annotations"][0]["segments_info"][0].update(category_id=999))
    with pytest.raises(isus.DatasetError, match="unknown category id 999") as e:
        isus.open_dataset("coco", coco).load_panoptic(0)
    assert "panoptic_train2017.json" in str(e.value)


def test_unknown_label_in_mvd_instance_png(mvd):
    key = isus.open_dataset("mvd", mvd).image_info(0).image_id
    png = mvd / "training" / "v1.2" / "instances" / f"{key}.png"
    arr = np.array(Image.open(png))
    arr[0, 0] = 200 * 256  # label 200: the synthetic config has 13 labels
    Image.fromarray(arr).save(png)
    with pytest.raises(isus.DatasetError, match="label 200") as e:
        isus.open_dataset("mvd", mvd).load_panoptic(0)
    assert png.name in str(e.value)


def test_wrong_bit_depth(mvd):
    key = isus.open_dataset("mvd", mvd).image_info(0).image_id
    png = mvd / "training" / "v1.2" / "instances" / f"{key}.png"
    Image.fromarray((np.array(Image.open(png)) // 256).astype(np.uint8)).save(png)  # now 8-bit
    with pytest.raises(isus.DatasetError, match="mode 'L'.*expected 'I;16'") as e:
        isus.open_dataset("mvd", mvd).load_panoptic(0)
    assert png.name in str(e.value)


def test_unreadable_image(coco):
    img = coco / "train2017" / "000000001000.jpg"
    img.write_bytes(b"this is not an image")
    with pytest.raises(isus.DatasetError, match="cannot decode image") as e:
        isus.open_dataset("coco", coco).load_image(0)
    assert img.name in str(e.value)


def test_truncated_jpeg(coco):
    img = coco / "train2017" / "000000001000.jpg"
    img.write_bytes(img.read_bytes()[: img.stat().st_size // 2])
    with pytest.raises(isus.DatasetError, match="truncated") as e:
        isus.open_dataset("coco", coco).load_image(0)
    assert img.name in str(e.value)


def test_truncated_png_annotation(coco):
    png = coco / "annotations" / "panoptic_train2017" / "000000001000.png"
    png.write_bytes(png.read_bytes()[: png.stat().st_size // 2])
    with pytest.raises(isus.DatasetError, match="cannot decode") as e:
        isus.open_dataset("coco", coco).load_panoptic(0)
    assert png.name in str(e.value)


def test_invalid_json(coco):
    ann = coco / "annotations" / "panoptic_train2017.json"
    ann.write_text("{not json")
    with pytest.raises(isus.DatasetError, match="not valid JSON") as e:
        isus.open_dataset("coco", coco)
    assert ann.name in str(e.value)


def test_annotation_size_differs_from_image(coco):
    png = coco / "annotations" / "panoptic_train2017" / "000000001000.png"
    Image.open(png).crop((0, 0, 100, 100)).save(png)
    with pytest.raises(isus.DatasetError, match="expected 192x144") as e:
        isus.open_dataset("coco", coco).load_panoptic(0)
    assert png.name in str(e.value)


def test_bad_mvd_config(mvd):
    cfg = mvd / "config_v1.2.json"
    _edit_json(cfg, lambda d: d["labels"][3].pop("color"))
    with pytest.raises(isus.DatasetError, match=r"labels\[3\]") as e:
        isus.open_dataset("mvd", mvd)
    assert cfg.name in str(e.value)


def test_polygon_with_unknown_label(synth_root, tmp_path):
    root = tmp_path / "cs"
    shutil.copytree(synth_root("cityscapes"), root)
    poly = sorted((root / "gtFine" / "train").glob("*/*_polygons.json"))[0]
    _edit_json(poly, lambda d: d["objects"].append({"label": "dragon", "polygon": [[0, 0], [5, 0], [5, 5]]}))
    ds = isus.open_dataset("cityscapes", root, source="polygons")
    with pytest.raises(isus.DatasetError, match="unknown label 'dragon'") as e:
        ds.load_panoptic(0)
    assert poly.name in str(e.value)


def test_bad_arguments(mvd):
    ds = isus.open_dataset("mvd", mvd)
    with pytest.raises(ValueError, match="reduce"):
        ds.load_image(0, reduce=3)
    with pytest.raises(IndexError, match="out of range"):
        ds.image_info(len(ds))
    with pytest.raises(ValueError, match="version"):
        isus.open_dataset("mvd", mvd, version="v3")
