"""The crop engine against resize-the-whole-image-then-crop, and its instance targets."""
from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import isus
from isus.crop import CropConfig, CropEngine
from isus.crop.functional import choose_reduce, crop_size
from isus.torch import CropSampler, PanopticCropDataset, collate_crops, to_detectron2, to_tv_tensors
from isus.types import CropSpec
from tests.conftest import realdata


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("crop")
    root = isus.synth.write_dataset(tmp / "mvd", "mvd", 8, size=(800, 600), seed=5)
    ds = isus.open_dataset("mvd", root)
    return ds, isus.build_index(ds, workers=1, cache_dir=tmp / "cache")


def reference_crop(ds, spec: CropSpec, pad=0):
    """Resize the whole image and map by the crop's scale, then crop (the usual pipeline)."""
    s = spec.scale
    img = ds.load_image(spec.image)
    ids = ds.load_panoptic(spec.image).ids
    img_r = cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_LINEAR if s >= 1 else cv2.INTER_AREA)
    # NEAREST_EXACT samples at pixel centres (plain INTER_NEAREST is shifted by half a pixel)
    ids_r = cv2.resize(ids, None, fx=s, fy=s, interpolation=cv2.INTER_NEAREST_EXACT)
    cw, ch = crop_size(spec)
    ox, oy = int(round(spec.window[0] * s)), int(round(spec.window[1] * s))
    m = max(cw, ch) + 2
    big_img = cv2.copyMakeBorder(img_r, m, m, m, m, cv2.BORDER_CONSTANT, value=(pad,) * 3)
    big_ids = cv2.copyMakeBorder(ids_r, m, m, m, m, cv2.BORDER_CONSTANT, value=0)
    sl = np.s_[oy + m:oy + m + ch, ox + m:ox + m + cw]
    out_img, out_ids = big_img[sl], big_ids[sl]
    if spec.flip:
        out_img, out_ids = out_img[:, ::-1], out_ids[:, ::-1]
    return out_img, out_ids


def away_from_borders(ids: np.ndarray) -> np.ndarray:
    """Pixels whose 3x3 neighbourhood holds a single segment id (the crop's outer frame, whose
    neighbours lie outside the crop, excluded)."""
    p = np.pad(ids, 1, mode="edge")
    ok = np.ones(ids.shape, bool)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            ok &= p[dy:dy + ids.shape[0], dx:dx + ids.shape[1]] == ids
    ok[[0, -1], :] = False
    ok[:, [0, -1]] = False
    return ok


def check_targets(sample, index, spec, image_hw):
    """Boxes from masks, original boxes from the index, truncation by its definition."""
    h, w = image_hw
    cw, ch = crop_size(spec)
    assert sample.masks.shape == (len(sample.labels), ch, cw)
    for k in range(len(sample.labels)):
        ys, xs = np.nonzero(sample.masks[k])
        assert sample.boxes[k].tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        rows = index.instances_of(int(sample.category_ids[k]), spec.image)
        ob = rows.box[rows.segment_id == sample.segment_ids[k]][0].astype(np.float64)
        x0, y0 = spec.window[:2]
        exp = np.array([(ob[0] - x0) * spec.scale, (ob[1] - y0) * spec.scale,
                        (ob[2] - x0) * spec.scale, (ob[3] - y0) * spec.scale])
        if spec.flip:
            exp = np.array([cw - exp[2], exp[1], cw - exp[0], exp[3]])
            ob = np.array([w - ob[2], ob[1], w - ob[0], ob[3]])  # image borders flip too
        np.testing.assert_allclose(sample.original_boxes[k], exp, rtol=1e-5, atol=1e-3)
        b = sample.boxes[k]
        want = [b[0] <= 0 and exp[0] < 0 and ob[0] > 0, b[1] <= 0 and exp[1] < 0 and ob[1] > 0,
                b[2] >= cw and exp[2] > cw and ob[2] < w, b[3] >= ch and exp[3] > ch and ob[3] < h]
        assert sample.truncated[k].tolist() == want
        assert sample.masks[k].sum() >= 4


@pytest.mark.parametrize("mode", ["isus", "cus"])
def test_crop_then_resize_equals_resize_then_crop(world, mode):
    ds, index = world
    policy = isus.SamplingPolicy(index, isus.SamplerConfig(crop_size=(256, 192), mode=mode))
    batch = policy.draw(np.random.default_rng(1), 30)
    engine = CropEngine(ds, index)
    diffs = []
    for k in range(len(batch)):
        spec = batch.spec(k)
        sample = engine(spec)
        ref_img, ref_ids = reference_crop(ds, spec)
        ok = away_from_borders(ref_ids) & away_from_borders(sample.panoptic)  # thin parts may alias in either
        assert ok.mean() > 0.5
        np.testing.assert_array_equal(sample.panoptic[ok], ref_ids[ok])
        inner = np.zeros_like(ok)
        inner[2:-2, 2:-2] = True
        diffs.append(np.abs(sample.image.astype(np.int16) - ref_img)[ok & inner].mean())
        check_targets(sample, index, spec, (ds.image_info(spec.image).height, ds.image_info(spec.image).width))
    assert np.mean(diffs) < 6 and max(diffs) < 12  # interpolation (and JPEG DCT scaling) tolerance


def test_cache_and_full_decode_give_the_same_crop(world):
    ds, index = world
    batch = isus.SamplingPolicy(index, isus.SamplerConfig(crop_size=(200, 200))).draw(np.random.default_rng(2), 20)
    a, b = CropEngine(ds, index), CropEngine(ds, index, CropConfig(use_cache=False))
    c = CropEngine(ds, None)
    for k in range(len(batch)):
        sa, sb, sc = a(batch.spec(k)), b(batch.spec(k)), c(batch.spec(k))
        for f in ("panoptic", "semantic", "masks", "boxes", "truncated", "labels"):
            np.testing.assert_array_equal(getattr(sa, f), getattr(sb, f))
            np.testing.assert_array_equal(getattr(sa, f), getattr(sc, f))
        np.testing.assert_allclose(sa.original_boxes, sc.original_boxes, atol=1e-4)


def test_flip_mirrors_everything(world):
    ds, index = world
    batch = isus.SamplingPolicy(index, isus.SamplerConfig(crop_size=(240, 160))).draw(np.random.default_rng(3), 15)
    engine = CropEngine(ds, index)
    for k in range(len(batch)):
        spec = dataclasses.replace(batch.spec(k), flip=False)
        a, b = engine(spec), engine(dataclasses.replace(spec, flip=True))
        cw = a.image.shape[1]
        # the flip happens inside the warp: fixed-point interpolation may differ by one level
        assert np.abs(b.image.astype(np.int16) - a.image[:, ::-1]).max() <= 1
        np.testing.assert_array_equal(b.panoptic, a.panoptic[:, ::-1])
        np.testing.assert_array_equal(b.semantic, a.semantic[:, ::-1])
        np.testing.assert_array_equal(b.masks, a.masks[:, :, ::-1])
        np.testing.assert_allclose(b.boxes, np.stack([cw - a.boxes[:, 2], a.boxes[:, 1], cw - a.boxes[:, 0], a.boxes[:, 3]], 1))
        np.testing.assert_allclose(b.original_boxes, np.stack(
            [cw - a.original_boxes[:, 2], a.original_boxes[:, 1], cw - a.original_boxes[:, 0], a.original_boxes[:, 3]], 1),
            atol=1e-4)
        np.testing.assert_array_equal(b.truncated, a.truncated[:, [2, 1, 0, 3]])
        check_targets(b, index, b.spec, (ds.image_info(spec.image).height, ds.image_info(spec.image).width))


def test_cubic_interpolation_and_bad_config(world):
    ds, index = world
    spec = CropSpec(0, 0, -1, -1, 1.7, (100.0, 80.0, 250.0, 200.0), False)
    lin = CropEngine(ds, index)(spec)
    cub = CropEngine(ds, index, CropConfig(interpolation="cubic"))(spec)
    np.testing.assert_array_equal(lin.panoptic, cub.panoptic)
    assert 0 < np.abs(lin.image.astype(np.int16) - cub.image).mean() < 5
    with pytest.raises(ValueError, match="interpolation"):
        CropConfig(interpolation="lanczos9")


def test_padding_beyond_the_border(world):
    ds, index = world
    info = ds.image_info(0)
    # a window hanging 100 px off the left and top of the image, at scale 1
    spec = CropSpec(0, index.categories[0].id, -1, -1, 1.0, (-100.0, -50.0, 300.0, 250.0), False)
    s = CropEngine(ds, index, CropConfig(pad_value=77, ignore_label=250))(spec)
    assert s.image.shape == (300, 400, 3)
    assert (s.image[:, :100] == 77).all() and (s.image[:50] == 77).all()
    assert (s.panoptic[:, :100] == 0).all() and (s.semantic[:50] == 250).all()
    np.testing.assert_array_equal(s.panoptic[50:, 100:], ds.load_panoptic(0).ids[:250, :300])
    # objects at the image border are not truncated by the padded crop border
    assert not s.truncated[:, :2].any()
    assert info.width == 800


def test_tiny_instances_are_dropped_and_counted(world):
    ds, index = world
    batch = isus.SamplingPolicy(index, isus.SamplerConfig(crop_size=(300, 300), mode="cus")).draw(np.random.default_rng(4), 12)
    for k in range(len(batch)):
        spec = batch.spec(k)
        small, big = CropEngine(ds, index, CropConfig(min_instance_area=1)), CropEngine(ds, index, CropConfig(min_instance_area=200))
        a, b = small(spec), big(spec)
        areas = a.masks.sum(axis=(1, 2))
        assert len(b.labels) == (areas >= 200).sum() and b.dropped == a.dropped + (areas < 200).sum()
        assert (b.masks.sum(axis=(1, 2)) >= 200).all()


def test_crowd_handling(world):
    ds, index = world
    crowd_rows = np.flatnonzero(index.instances.iscrowd)
    assert len(crowd_rows)
    r = crowd_rows[0]
    img = int(index.instances.image[r])
    x0, y0, x1, y1 = index.instances.box[r].astype(float)
    spec = CropSpec(img, int(index.instances.category_id[r]), -1, -1, 1.0, (x0, y0, x0 + 200, y0 + 200), False)
    for crowd_as_ignore in (True, False):
        s = CropEngine(ds, index, CropConfig(crowd_as_ignore=crowd_as_ignore))(spec)
        seg = index.instances.segment_id[r]
        is_crowd = s.panoptic == seg
        assert is_crowd.any() and (s.crowd == is_crowd).all()
        assert seg not in s.segment_ids.tolist()
        train = [c.id for c in ds.categories].index(int(index.instances.category_id[r]))
        assert (s.semantic[is_crowd] == (255 if crowd_as_ignore else train)).all()


def test_image_without_instances(world):
    ds, index = world
    empty = [i for i in range(len(ds)) if not any(
        ds.category(int(s["category_id"])).isthing and not s["iscrowd"] for s in ds.load_panoptic(i).segments)]
    assert empty
    spec = CropSpec(empty[0], index.categories[0].id, -1, -1, 0.5, (0.0, 0.0, 400.0, 300.0), True)
    s = CropEngine(ds, index)(spec)
    assert s.masks.shape == (0, 150, 200) and s.boxes.shape == (0, 4) and s.truncated.shape == (0, 4)
    d = PanopticCropDataset(ds, index)[spec]
    assert d["boxes"].shape == (0, 4) and d["image"].shape == (3, 150, 200)


def test_reduced_decode_is_used_when_the_scale_allows(world, monkeypatch):
    ds, index = world
    assert [choose_reduce(s) for s in (1.5, 1.0, 0.6, 0.5, 0.3, 0.2, 0.1)] == [1, 1, 1, 2, 2, 4, 8]
    calls = []
    original = ds.load_image
    monkeypatch.setattr(ds, "load_image", lambda i, reduce, bgr: calls.append(reduce) or original(i, reduce, bgr=bgr))
    CropEngine(ds, index)(CropSpec(0, 0, -1, -1, 0.2, (0.0, 0.0, 800.0, 600.0), False))
    assert calls == [4]


def test_dataset_loader_and_adapters(world):
    ds, index = world
    cfg = isus.SamplerConfig(crop_size=(160, 128))
    loader = DataLoader(PanopticCropDataset(ds, index), sampler=CropSampler(index, cfg, 12, seed=0), batch_size=4,
                        num_workers=2, collate_fn=collate_crops)
    batches = list(loader)
    assert len(batches) == 3
    b = batches[0]
    assert b["image"].shape == (4, 3, 128, 160) and b["image"].dtype == torch.uint8
    assert b["semantic"].shape == (4, 128, 160) and b["semantic"].dtype == torch.int64
    assert len(b["boxes"]) == 4 and all(t.shape[1:] == (4,) for t in b["truncated"])
    sample = PanopticCropDataset(ds, index)[b["spec"][0]]
    image, target = to_tv_tensors(sample)
    assert image.shape == (3, 128, 160) and target["boxes"].format.name == "XYXY"
    assert torch.equal(target["truncated"], sample["truncated"])
    d2 = to_detectron2(sample)
    assert d2["height"] == 128 and torch.equal(d2["sem_seg"], sample["semantic"])
    with pytest.raises(TypeError, match="CropSpec"):
        PanopticCropDataset(ds, index)[0]


def test_real_mvd_samples_with_derived_instances(tmp_path):
    base = realdata("mapillary_vistas", "deeposlandia", "tests", "data", "mapillary", "sample")
    cfg = realdata("mapillary_vistas", "mseg-api", "tests", "test_data", "mapillary-vistas-dataset_public_v1.1_config.json")
    root = isus.synth.mvd_from_semantic(base / "labels", base / "images", cfg, tmp_path / "mvd")
    ds = isus.open_dataset("mvd", root)
    index = isus.build_index(ds, workers=1, cache_dir=tmp_path / "cache")
    batch = isus.SamplingPolicy(index, isus.SamplerConfig.preset("mvd")).draw(np.random.default_rng(0), 8)
    engine = CropEngine(ds, index)
    for k in range(len(batch)):
        spec = batch.spec(k)
        sample = engine(spec)
        _, ref_ids = reference_crop(ds, spec)
        ok = away_from_borders(ref_ids) & away_from_borders(sample.panoptic)  # thin parts may alias in either
        np.testing.assert_array_equal(sample.panoptic[ok], ref_ids[ok])
        info = ds.image_info(spec.image)
        check_targets(sample, index, spec, (info.height, info.width))


def test_real_cityscapes_sample(tmp_path):
    root = realdata("cityscapes", "mmsegmentation", "tests", "data", "pseudo_cityscapes_dataset")
    ds = isus.open_dataset("cityscapes", root, split="val")
    index = isus.build_index(ds, workers=1)
    batch = isus.SamplingPolicy(index, isus.SamplerConfig(crop_size=(128, 96))).draw(np.random.default_rng(0), 10)
    for k in range(len(batch)):
        spec = batch.spec(k)
        sample = CropEngine(ds, index)(spec)
        _, ref_ids = reference_crop(ds, spec)
        ok = away_from_borders(ref_ids) & away_from_borders(sample.panoptic)  # thin parts may alias in either
        np.testing.assert_array_equal(sample.panoptic[ok], ref_ids[ok])
        check_targets(sample, index, spec, (128, 256))
