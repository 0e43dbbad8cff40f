"""The readers on real sample annotations (../shared/realdata), checked against the files' own
JSON and label configs. Every test skips when the samples are absent."""
from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
from PIL import Image

import isus
from isus.datasets.cityscapes import IDD
from tests.conftest import realdata

MVD_V11_CONFIG = ("mapillary_vistas", "mseg-api", "tests", "test_data", "mapillary-vistas-dataset_public_v1.1_config.json")
MVD_V20_CONFIG = ("mapillary_vistas", "Mapillary2COCO-Toolbox", "config_Full.json")


def test_coco_panoptic_samples():
    root = realdata("coco_panoptic", "panopticapi", "sample_data")
    ds = isus.open_dataset("coco", root, annotations="panoptic_examples.json", panoptic_dir="panoptic_examples",
                           images_dir="input_images")
    data = json.loads((root / "panoptic_examples.json").read_text())
    assert [(c.id, c.name, c.isthing) for c in ds.categories] == [
        (c["id"], c["name"], bool(c["isthing"])) for c in data["categories"]]
    assert len(ds) == len(data["images"]) == 2
    for i, ann in enumerate(data["annotations"]):
        pan = ds.load_panoptic(i)
        assert ds.image_info(i).image_id == ann["image_id"]
        by_id = {s["id"]: s for s in ann["segments_info"]}
        assert sorted(by_id) == pan.segments["id"].tolist()
        for s in pan.segments:
            ref = by_id[int(s["id"])]
            assert s["category_id"] == ref["category_id"] and s["iscrowd"] == bool(ref["iscrowd"])
            ys, xs = np.nonzero(pan.ids == s["id"])
            assert len(ys) == ref["area"]
            assert [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1] == ref["bbox"]
        assert (pan.ids == 0).any() and pan.segments["iscrowd"].any()
        img = ds.load_image(i)
        assert img.shape[:2] == pan.ids.shape


def test_coco_trimmed_json_with_separate_categories(tmp_path):
    """mseg-api-style copies hold only 'annotations'; categories come from another file."""
    root = realdata("coco_panoptic", "panopticapi")
    data = json.loads((root / "sample_data" / "panoptic_examples.json").read_text())
    (tmp_path / "trimmed.json").write_text(json.dumps({"annotations": data["annotations"]}))
    shutil.copytree(root / "sample_data" / "panoptic_examples", tmp_path / "png")
    shutil.copytree(root / "sample_data" / "input_images", tmp_path / "img")
    ds = isus.open_dataset("coco", tmp_path, annotations="trimmed.json", panoptic_dir="png", images_dir="img",
                           categories=str(root / "panoptic_coco_categories.json"))
    assert len(ds.categories) == 133 and len(ds) == 2
    assert ds.load_panoptic(1).segments.size == len(data["annotations"][1]["segments_info"])
    with pytest.raises(isus.DatasetError, match="categories"):
        isus.open_dataset("coco", tmp_path, annotations="trimmed.json", panoptic_dir="png", images_dir="img")


def test_cityscapes_instance_ids_sample():
    root = realdata("cityscapes", "mmsegmentation", "tests", "data", "pseudo_cityscapes_dataset")
    ds = isus.open_dataset("cityscapes", root, split="val")
    assert ds.source == "instances" and len(ds) == 1
    assert [c.id for c in ds.categories] == [7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33]
    pan = ds.load_panoptic(0)
    gt = root / "gtFine" / "val" / "frankfurt"
    raw = np.array(Image.open(gt / "frankfurt_000000_000294_gtFine_instanceIds.png")).astype(np.int64)
    label_ids = np.array(Image.open(gt / "frankfurt_000000_000294_gtFine_labelIds.png")).astype(np.int64)
    # The semantic map equals labelIds.png wherever the label is one of the 19 evaluated classes.
    evaluated = np.isin(label_ids, [c.id for c in ds.categories])
    sem = pan.semantic()
    np.testing.assert_array_equal(sem[evaluated], label_ids[evaluated])
    assert (sem[~evaluated] == -1).all() and (pan.ids[~evaluated] == 0).all()
    np.testing.assert_array_equal(pan.ids[evaluated], raw[evaluated])
    things = pan.segments[pan.segments["id"] >= 1000]
    assert set(things["id"].tolist()) == {24000, 24001, 24002, 24003, 26000, 26001, 26002}
    assert (things["category_id"] == things["id"] // 1000).all() and not things["iscrowd"].any()
    assert ds.load_image(0).shape == (128, 256, 3)
    sem_ds = isus.open_dataset("cityscapes", root, split="val", source="labels")
    np.testing.assert_array_equal(sem_ds.load_semantic(0), sem)


def test_mvd_full_resolution_semantic_samples():
    root = realdata("mapillary_vistas", "deeposlandia", "tests", "data", "mapillary")
    cfg_path = realdata(*MVD_V11_CONFIG)
    ds = isus.open_dataset("mvd", root, split="sample", config=str(cfg_path))
    labels = json.loads(cfg_path.read_text())["labels"]
    assert not ds.has_instances and ds.source == "labels" and len(ds) == 3
    assert len(ds.categories) == 65 and ds.void_label == 65
    for c in ds.categories:  # colours from the config, never from the PNG palette
        assert c.name == labels[c.id]["name"] and list(c.color) == labels[c.id]["color"]
        assert c.isthing == labels[c.id]["instances"]
    sizes = set()
    for i in range(len(ds)):
        key = ds.image_info(i).image_id
        raw = np.array(Image.open(root / "sample" / "labels" / f"{key}.png")).astype(np.int64)
        sem = ds.load_semantic(i)
        np.testing.assert_array_equal(sem, np.where(raw == 65, -1, raw))
        info = ds.image_info(i)
        sizes.add((info.width, info.height))
        assert ds.load_image(i, reduce=8).shape == (-(-info.height // 8), -(-info.width // 8), 3)
    assert (3680, 2760) in sizes and (1920, 1080) in sizes
    with pytest.raises(isus.InstancesUnavailableError, match="semantic-only"):
        ds.load_panoptic(0)


@pytest.mark.parametrize("version,config,void", [("v1.2", MVD_V11_CONFIG, 65), ("v2.0", MVD_V20_CONFIG, 123)])
def test_mvd_cut_sample_both_versions(version, config, void):
    root = realdata("mapillary_vistas", "mmsegmentation", "tests", "data", "pseudo_mapillary_dataset")
    ds = isus.open_dataset("mvd", root, split=".", version=version, images_dir="images", labels_dir=version,
                           config=str(realdata(*config)))
    assert ds.void_label == void and len(ds.categories) == void
    raw = np.array(Image.open(root / version / "__CRyFzoDOXn6unQ6a3DnQ.png")).astype(np.int64)
    np.testing.assert_array_equal(ds.load_semantic(0), np.where(raw == void, -1, raw))
    assert ds.image_info(0).image_id == "__CRyFzoDOXn6unQ6a3DnQ"


def test_mvd_v20_config_flags():
    cfg = realdata(*MVD_V20_CONFIG)
    from isus.datasets.mapillary import mvd_categories

    cats, void = mvd_categories(json.loads(cfg.read_text()), cfg)
    assert void == 123 and len(cats) == 123
    not_evaluated = {c.id for c in cats if not c.evaluate}
    assert not_evaluated == {2, 31, 38, 79, 86, 96, 115}
    assert sum(c.isthing for c in cats) == 72 - 0  # void--unlabeled has no instances


def test_idd_categories_match_official_panoptic_skeleton():
    path = realdata("idd", "AutoNUE-public-code", "preperation", "gtFine", "val_panoptic.json")
    ref = json.loads(path.read_text())
    assert ref["images"] == [] and ref["annotations"] == []
    assert [(c.id, c.name, c.isthing, list(c.color)) for c in IDD.scheme.categories] == [
        (c["id"], c["name"], bool(c["isthing"]), c["color"]) for c in ref["categories"]]


def _idd_tree(tmp_path, polygons_json):
    """An IDD layout around a real polygons file (its image is not public: a blank stand-in)."""
    data = json.loads(polygons_json.read_text())
    (tmp_path / "gtFine" / "val" / "89").mkdir(parents=True)
    (tmp_path / "leftImg8bit" / "val" / "89").mkdir(parents=True)
    shutil.copy(polygons_json, tmp_path / "gtFine" / "val" / "89" / "946749_gtFine_polygons.json")
    Image.new("RGB", (data["imgWidth"], data["imgHeight"])).save(tmp_path / "leftImg8bit" / "val" / "89" / "946749_leftImg8bit.png")
    return data


# pycocotools' Cython __array__ predates numpy 2's copy keyword; harmless here.
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_idd_real_polygons_are_rasterised_in_order_without_deleted_objects(tmp_path):
    from pycocotools import mask as mask_utils

    from isus.datasets.labels import IDD_LABELS

    path = realdata("idd", "AutoNUE-panopticapi", "cityscapes_gt_converter", "sample.json")
    data = _idd_tree(tmp_path, path)
    ds = isus.open_dataset("idd", tmp_path, split="val")
    assert ds.source == "polygons"
    pan = ds.load_panoptic(0)
    h, w = data["imgHeight"], data["imgWidth"]
    assert pan.ids.shape == (h, w)

    level3 = {l.name: l.level3_id for l in IDD_LABELS}
    things = {l.name for l in IDD_LABELS if l.has_instances}

    def paint(include_deleted: bool) -> np.ndarray:
        """Independent rasterisation with pycocotools, drawing objects in list order."""
        out = np.full((h, w), -1, dtype=np.int64)
        for obj in data["objects"]:
            if obj["deleted"] and not include_deleted:
                continue
            rle = mask_utils.frPyObjects([np.asarray(obj["polygon"], float).ravel().tolist()], h, w)
            m = mask_utils.decode(mask_utils.merge(rle)).astype(bool)
            out[m] = level3[obj["label"]]
        return out

    sem = pan.semantic()
    ref = paint(False)
    labelled = ref >= 0
    agree = (sem[labelled] == ref[labelled]).mean()
    assert agree > 0.99  # the two rasterisers differ only on boundary pixels
    with_ghosts = paint(True)
    # Interior of where the deleted objects would change the map (boundaries differ between
    # rasterisers anyway).
    ghost = cv2.erode(((with_ghosts != ref) & labelled).astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    assert ghost.sum() > 500  # the deleted objects matter...
    assert (sem[ghost] == ref[ghost]).mean() > 0.99  # ...and isus did not paint them
    assert (sem[ghost] == with_ghosts[ghost]).mean() < 0.01

    n_instances = sum(1 for o in data["objects"] if not o["deleted"] and o["label"] in things)
    thing_segments = pan.segments[[ds.category(int(c)).isthing for c in pan.segments["category_id"]]]
    assert 0 < len(thing_segments) <= n_instances
    assert not thing_segments["iscrowd"].any()
    # segment id = level3Id*1000 + k + 1, k counted per level-3 class from 0
    assert ((thing_segments["id"] - 1) // 1000 == thing_segments["category_id"]).all()


def test_idd_real_panoptic_json_parses():
    from isus.datasets._panoptic_json import categories_from_json, load_panoptic_json

    path = realdata("idd", "AutoNUE-panopticapi", "cityscapes_gt_converter", "cityscapes_panoptic_val.json")
    data = load_panoptic_json(path)
    cats = categories_from_json(data["categories"], path)
    assert len(cats) == 26 and [c.id for c in cats] == list(range(26))
    assert data["annotations"][0]["image_id"] == "frame0340"
