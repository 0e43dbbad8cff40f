"""synth -> open_dataset -> exactly the segments, categories and pixel ids that were written."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import isus
from isus.synth import SYNTH_CLASSES, make_scene, render_image
from tests.conftest import SYNTH_SIZE, scene_of

CITYSCAPES_EVAL_IDS = {7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33}
MVD_GROUP = {"person": "human--person--person-group", "car": "object--vehicle--vehicle-group"}

# (layout, open_dataset kwargs) for every annotation source each reader supports.
SOURCES = [
    ("mvd", {"version": "v1.2"}),
    ("mvd", {"version": "v2.0"}),
    ("mvd", {"version": "v1.2", "source": "panoptic"}),
    ("mvd", {"version": "v2.0", "source": "instances"}),
    ("cityscapes", {}),
    ("cityscapes", {"source": "panoptic"}),
    ("cityscapes", {"source": "polygons"}),
    ("idd", {}),
    ("idd", {"source": "panoptic"}),
    ("idd", {"source": "polygons"}),
    ("coco", {}),
]


def rgb_ids(path):
    rgb = np.array(Image.open(path).convert("RGB")).astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


def expected_ids(layout: str, kw: dict, ds, i: int, root) -> np.ndarray:
    """Decode the written files with plain PIL/json, independently of isus's readers."""
    info = ds.image_info(i)
    key = info.image_id
    if layout == "mvd":
        version = kw["version"]
        src = kw.get("source", "instances" if version == "v1.2" else "panoptic")
        if src == "panoptic":
            return rgb_ids(root / "training" / version / "panoptic" / f"{key}.png")
        raw = np.array(Image.open(root / "training" / version / "instances" / f"{key}.png")).astype(np.int64)
        labels = json.loads((root / f"config_{version}.json").read_text())["labels"]
        void = [k for k, lab in enumerate(labels) if lab["name"] == "void--unlabeled"][0]
        return np.where(raw // 256 == void, 0, raw + 1)
    if layout == "coco":
        return rgb_ids(root / "annotations" / "panoptic_train2017" / f"{key:012d}.png")
    src = kw.get("source", "instances")
    folder = info.file_name.split("/")[2]
    stem = info.file_name.split("/")[3][: -len("_leftImg8bit.png")]
    if src == "panoptic":
        name = (f"cityscapes_panoptic_train/{key}_gtFine_panoptic.png" if layout == "cityscapes"
                else f"train_panoptic/{key}_gtFine_panopticlevel3Ids.png")
        return rgb_ids(root / "gtFine" / name)
    suffix = "_gtFine_instanceIds.png" if layout == "cityscapes" else "_gtFine_instancelevel3Ids.png"
    raw = np.array(Image.open(root / "gtFine" / "train" / folder / f"{stem}{suffix}")).astype(np.int64)
    if layout == "cityscapes":
        cls = np.where(raw >= 1000, raw // 1000, raw)
        return np.where(np.isin(cls, list(CITYSCAPES_EVAL_IDS)), raw, 0)
    return np.where(raw == 255, 0, raw + 1)


def expected_name(layout: str, cls: int, crowd: bool) -> str:
    c = SYNTH_CLASSES[cls]
    if layout == "mvd":
        return MVD_GROUP[c.key] if crowd else c.mvd
    if layout == "coco":
        return c.coco[1]
    return getattr(c, layout)


@pytest.mark.parametrize("layout,kw", SOURCES, ids=[f"{l}-{'-'.join(map(str, k.values())) or 'default'}" for l, k in SOURCES])
def test_roundtrip(layout, kw, synth_root):
    root = synth_root(layout)
    ds = isus.open_dataset(layout, root, **kw)
    assert len(ds) == 8 and ds.has_instances
    for i in range(len(ds)):
        pan = ds.load_panoptic(i)
        scene = scene_of(root, ds.image_info(i).image_id)
        # The exact pixel ids of the files.
        np.testing.assert_array_equal(pan.ids, expected_ids(layout, kw, ds, i, root))
        # One loaded segment per scene segment, pixel for pixel; void stays void.
        pairs = np.unique(np.stack([pan.ids.ravel(), scene.ids.ravel()]), axis=1)
        assert len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]
        assert ((pairs[0] == 0) == (pairs[1] == 0)).all()
        seg = {int(s["id"]): s for s in pan.segments}
        assert set(seg) == set(pairs[0][pairs[0] != 0].tolist())
        for lid, sid in pairs.T[pairs[0] != 0]:
            cls, crowd = scene.segments[int(sid)]
            s = seg[int(lid)]
            assert ds.category(int(s["category_id"])).name == expected_name(layout, cls, crowd)
            assert bool(s["iscrowd"]) == crowd
            assert ds.category(int(s["category_id"])).isthing == SYNTH_CLASSES[cls].isthing


@pytest.mark.parametrize("layout", ["mvd", "cityscapes", "idd", "coco"])
def test_images_roundtrip(layout, synth_root):
    root = synth_root(layout)
    ds = isus.open_dataset(layout, root)
    w, h = SYNTH_SIZE
    for i in range(len(ds)):
        info = ds.image_info(i)
        assert (info.width, info.height) == (w, h)
        img = ds.load_image(i)
        assert img.shape == (h, w, 3) and img.dtype == np.uint8
        manifest = isus.synth.read_manifest(root)
        split = manifest["splits"][ds.split]
        index = split["first_index"] + split["image_ids"].index(info.image_id)
        ref = render_image(scene_of(root, info.image_id), manifest["seed"], index)
        diff = np.abs(img.astype(np.int16) - ref).mean()
        # PNG is lossless; JPEG (MVD, COCO) only roughly so.
        assert diff == 0 if layout in ("cityscapes", "idd") else diff < 8
        for r in (2, 4, 8):
            small = ds.load_image(i, reduce=r)
            assert small.shape == (-(-h // r), -(-w // r), 3)
            assert np.abs(small.astype(np.float64).mean() - img.mean()) < 6


@pytest.mark.parametrize("layout,kw,ref_kw", [
    ("mvd", {"source": "labels"}, {}),
    ("mvd", {"version": "v2.0", "source": "labels"}, {"version": "v2.0"}),
    ("cityscapes", {"source": "labels"}, {}),
    ("idd", {"source": "labels"}, {}),
])
def test_semantic_only(layout, kw, ref_kw, synth_root):
    root = synth_root(layout)
    sem_ds = isus.open_dataset(layout, root, **kw)
    ref = isus.open_dataset(layout, root, **ref_kw)
    assert not sem_ds.has_instances and sem_ds.categories == ref.categories
    for i in range(len(sem_ds)):
        np.testing.assert_array_equal(sem_ds.load_semantic(i), ref.load_semantic(i))
        np.testing.assert_array_equal(ref.load_semantic(i), ref.load_panoptic(i).semantic())
    with pytest.raises(isus.InstancesUnavailableError, match="semantic-only"):
        sem_ds.load_panoptic(0)


def test_all_sources_agree(synth_root):
    """Cityscapes' instanceIds, panoptic and polygons give the same panoptic maps."""
    root = synth_root("cityscapes")
    dss = [isus.open_dataset("cityscapes", root, source=s) for s in ("instances", "panoptic", "polygons")]
    for i in range(len(dss[0])):
        pans = [d.load_panoptic(i) for d in dss]
        for p in pans[1:]:
            np.testing.assert_array_equal(p.ids, pans[0].ids)
            np.testing.assert_array_equal(p.segments, pans[0].segments)


def test_idd_deleted_objects_are_written_and_skipped(synth_root):
    root = synth_root("idd")
    files = sorted((root / "gtFine" / "train").glob("*/*_gtFine_polygons.json"))
    objects = [o for f in files for o in json.loads(f.read_text())["objects"]]
    assert any(o["deleted"] for o in objects), "the synthetic IDD should contain deleted ghost objects"
    assert any(isinstance(v, float) and not v.is_integer() for o in objects for pt in o["polygon"] for v in pt)


def test_synth_content_exercises_everything(synth_root):
    ds = isus.open_dataset("mvd", synth_root("mvd"))
    no_things = crowd = void = border = 0
    for i in range(len(ds)):
        pan = ds.load_panoptic(i)
        things = [s for s in pan.segments if ds.category(int(s["category_id"])).isthing and not s["iscrowd"]]
        no_things += not things
        crowd += int(pan.segments["iscrowd"].sum())
        void += int((pan.ids == 0).sum())
        edge = np.concatenate([pan.ids[0], pan.ids[-1], pan.ids[:, 0], pan.ids[:, -1]])
        border += len(set(edge.tolist()) & {int(s["id"]) for s in things})
    assert no_things >= 1 and crowd >= 1 and void > 0 and border >= 1
    stuff = [c for c in ds.categories if not c.isthing]
    things = [c for c in ds.categories if c.isthing and c.evaluate]
    assert len(stuff) >= 3 and len(things) >= 3


def test_synth_sizes_are_long_tailed_at_mvd_size():
    scales = []
    for i in (0, 1, 2, 4):
        scene = make_scene(0, i, 3024, 4032)
        ids, counts = np.unique(scene.ids, return_counts=True)
        area = dict(zip(ids.tolist(), counts.tolist()))
        scales += [np.sqrt(area[s]) for s, (c, crowd) in scene.segments.items()
                   if SYNTH_CLASSES[c].isthing and not crowd]
    scales = np.array(scales)
    assert scales.min() < 8 and scales.max() > 1024
    # long tail: the median is small, far below the mean of the top decile
    assert np.median(scales) < 40 < np.quantile(scales, 0.9)


def test_make_scene_is_deterministic():
    a, b = make_scene(3, 5, 100, 120), make_scene(3, 5, 100, 120)
    np.testing.assert_array_equal(a.ids, b.ids)
    assert a.segments == b.segments
    assert not np.array_equal(a.ids, make_scene(3, 6, 100, 120).ids)


def test_write_dataset_refuses_non_empty_dir(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        isus.synth.write_dataset(tmp_path / "x", "coco", 1)
    assert (tmp_path / "x" / "keep.txt").read_text() == "mine"
    with pytest.raises(ValueError, match="layout"):
        isus.synth.write_dataset(tmp_path / "y", "kitti", 1)


@pytest.mark.parametrize("layout", ["coco", "idd"])
def test_written_areas_and_boxes_match_the_pngs(layout, synth_root):
    root = synth_root(layout)
    name = "annotations/panoptic_train2017.json" if layout == "coco" else "gtFine/train_panoptic.json"
    data = json.loads((root / name).read_text())
    png_dir = root / ("annotations/panoptic_train2017" if layout == "coco" else "gtFine/train_panoptic")
    for ann in data["annotations"]:
        ids = rgb_ids(png_dir / ann["file_name"])
        for s in ann["segments_info"]:
            ys, xs = np.nonzero(ids == s["id"])
            assert s["area"] == len(ys)
            assert s["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
