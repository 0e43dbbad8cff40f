"""Visibility-aware instance filtering (issue 26, part 2) on a hand-made COCO panoptic image whose
visible fractions are known exactly."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

import isus
from isus.crop import CropConfig, CropEngine
from isus.crop import functional as F
from isus.torch import sample_to_tensors
from isus.types import CropSpec

# id -> pixels (y0, y1, x0, x1) of its rectangles, in a 100 x 100 image
SHAPES = {
    1: [(10, 30, 10, 30)],                       # A: 20 x 20 square, area 400, box 400
    2: [(40, 60, 50, 90)],                       # B: 20 x 40, area 800, inside every crop below
    3: [(70, 80, 0, 10), (90, 100, 40, 50)],     # C: two 10 x 10 squares, area 200, box 50 x 30 = 1500
}


@pytest.fixture(scope="module")
def hand(tmp_path_factory):
    root = tmp_path_factory.mktemp("vis")
    (root / "images").mkdir()
    (root / "pan").mkdir()
    ids = np.zeros((100, 100), np.int64)
    segments = []
    for sid, rects in SHAPES.items():
        for y0, y1, x0, x1 in rects:
            ids[y0:y1, x0:x1] = sid
        ys, xs = np.nonzero(ids == sid)
        segments.append({"id": sid, "category_id": 1, "iscrowd": 0, "area": int(len(ys)),
                         "bbox": [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]})
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)
    cv2.imwrite(str(root / "pan" / "a.png"), rgb[:, :, ::-1])
    cv2.imwrite(str(root / "images" / "a.jpg"), np.full((100, 100, 3), 128, np.uint8))
    data = {"images": [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 100}],
            "annotations": [{"image_id": 1, "file_name": "a.png", "segments_info": segments}],
            "categories": [{"id": 1, "name": "thing", "isthing": 1, "supercategory": "x"}]}
    (root / "pan.json").write_text(json.dumps(data))
    ds = isus.open_dataset("coco", root, annotations="pan.json", panoptic_dir="pan", images_dir="images")
    return ds, isus.build_index(ds, workers=1)


# window x 20..100: A keeps half (area 0.5, box 0.5), B all, C its right square (area 0.5, box 100/1500)
WINDOW = (20.0, 0.0, 100.0, 100.0)


def crop(hand, use_index=True, scale=1.0, flip=False, **options):
    ds, index = hand
    return CropEngine(ds, index if use_index else None, CropConfig(**options))(CropSpec(0, -1, -1, -1, scale, WINDOW, flip))


def by_id(s):
    return {int(i): k for k, i in enumerate(s.segment_ids)}


def test_fractions_of_the_hand_made_crop(hand):
    s = crop(hand)
    assert sorted(by_id(s)) == [1, 2, 3] and s.ignore is None and s.dropped == 0
    vis = s.masks.sum(axis=(1, 2))
    full = np.array([400, 800, 200], np.float64)[[int(i) - 1 for i in s.segment_ids]]
    area_frac, box_frac = F.visible_fractions(vis, full, s.boxes, s.original_boxes)
    want_area = {1: 0.5, 2: 1.0, 3: 0.5}
    want_box = {1: 0.5, 2: 1.0, 3: 100 / 1500}
    for sid, k in by_id(s).items():
        assert area_frac[k] == pytest.approx(want_area[sid])
        assert box_frac[k] == pytest.approx(want_box[sid])


@pytest.mark.parametrize("use_index", [True, False])
@pytest.mark.parametrize("scale,flip", [(1.0, False), (0.5, False), (0.5, True), (2.0, False)])
def test_min_visible_fraction_drops_below_the_threshold(hand, use_index, scale, flip):
    # the thresholds straddle 0.5: A and C (half visible) are dropped at 0.6, kept at 0.4
    s = crop(hand, use_index, scale, flip, min_visible_fraction=0.6)
    assert sorted(by_id(s)) == [2] and s.dropped == 2
    s = crop(hand, use_index, scale, flip, min_visible_fraction=0.4)
    assert sorted(by_id(s)) == [1, 2, 3] and s.dropped == 0


@pytest.mark.parametrize("use_index", [True, False])
def test_min_box_fraction_tells_the_split_instance_apart(hand, use_index):
    # C keeps half its area but only 1/15 of its box: the box test drops it, the area test keeps it
    s = crop(hand, use_index, min_box_fraction=0.1)
    assert sorted(by_id(s)) == [1, 2] and s.dropped == 1
    s = crop(hand, use_index, min_box_fraction=0.06)
    assert sorted(by_id(s)) == [1, 2, 3]
    s = crop(hand, use_index, min_box_fraction=0.6)
    assert sorted(by_id(s)) == [2]
    s = crop(hand, use_index, min_visible_fraction=0.4, min_box_fraction=0.1)
    assert sorted(by_id(s)) == [1, 2]


def test_ignore_keeps_the_instances_and_flags_them(hand):
    base = crop(hand)
    s = crop(hand, min_visible_fraction=0.6, low_visibility="ignore")
    assert s.dropped == 0 and s.ignore is not None and s.ignore.dtype == bool
    assert {int(i): bool(f) for i, f in zip(s.segment_ids, s.ignore)} == {1: True, 2: False, 3: True}
    for name in ("masks", "labels", "segment_ids", "boxes", "original_boxes", "truncated", "semantic", "panoptic"):
        np.testing.assert_array_equal(getattr(s, name), getattr(base, name))
    t = sample_to_tensors(s)
    assert t["ignore"].tolist() == s.ignore.tolist()
    assert "ignore" not in sample_to_tensors(base)
    # "ignore" without thresholds: a flag that is never set
    s = crop(hand, low_visibility="ignore")
    assert s.ignore is not None and not s.ignore.any() and len(s.ignore) == 3


def test_drop_keeps_the_rest_unchanged(hand):
    base, s = crop(hand), crop(hand, min_visible_fraction=0.6)
    k = [by_id(base)[2]]
    for name in ("masks", "labels", "segment_ids", "boxes", "original_boxes", "truncated"):
        np.testing.assert_array_equal(getattr(s, name), getattr(base, name)[k])
    for name in ("image", "panoptic", "semantic", "crowd"):  # the maps do not change: only targets
        np.testing.assert_array_equal(getattr(s, name), getattr(base, name))


def test_defaults_are_unchanged(hand):
    cfg = CropConfig()
    assert (cfg.min_visible_fraction, cfg.min_box_fraction, cfg.low_visibility) == (0.0, 0.0, "drop")
    assert not cfg.filters_visibility
    a = crop(hand)
    b = crop(hand, min_visible_fraction=0.0, min_box_fraction=0.0)
    for name in ("image", "panoptic", "semantic", "masks", "labels", "segment_ids", "boxes",
                 "original_boxes", "truncated", "crowd"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.ignore is None and b.ignore is None and a.dropped == b.dropped


def test_bad_options():
    for bad in ({"min_visible_fraction": -0.1}, {"min_visible_fraction": 1.5}, {"min_box_fraction": float("nan")},
                {"low_visibility": "mask"}):
        with pytest.raises(ValueError):
            CropConfig(**bad)


def test_low_visibility_function():
    low = F.low_visibility(np.array([50, 100, 10]), np.array([100, 100, 0]),
                           np.array([[0, 0, 10, 5], [0, 0, 10, 10], [0, 0, 1, 1]], float),
                           np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 1, 1]], float), 0.6, 0.0)
    assert low.tolist() == [True, False, False]  # an empty full area gives 1
    low = F.low_visibility(np.array([100]), np.array([100]), np.array([[0, 0, 10, 4]], float),
                           np.array([[0, 0, 10, 10]], float), 0.0, 0.5)
    assert low.tolist() == [True]
    assert F.low_visibility(np.array([1]), np.array([100]), np.zeros((1, 4)), np.zeros((1, 4)), 0, 0).tolist() == [False]


def test_stats_box_fractions_are_upper_bounds_of_the_engines(tmp_path):
    """isus stats counts window-clipped boxes: the engine's box fraction (from the resampled mask)
    is never above it (up to the nearest-neighbour sampling's half pixel), so the stats' counts
    of pairs below a fraction are lower bounds of what the engine drops."""
    root = isus.synth.write_dataset(tmp_path / "mvd", "mvd", 4, size=(640, 480), seed=2)
    ds = isus.open_dataset("mvd", root)
    index = isus.build_index(ds, workers=1)
    engine = CropEngine(ds, index)
    inst = index.instances
    checked = 0
    for spec in isus.torch.CropSampler(index, isus.SamplerConfig(crop_size=(128, 128), mode="isus"), 40, seed=1):
        s = engine(spec)
        x0, y0, x1, y1 = spec.window
        for j, sid in enumerate(s.segment_ids):
            r = np.flatnonzero((inst.image == spec.image) & (inst.segment_id == sid))[0]
            bx0, by0, bx1, by1 = inst.box[r].astype(float)
            clipped = (min(bx1, x1) - max(bx0, x0)) * (min(by1, y1) - max(by0, y0)) / ((bx1 - bx0) * (by1 - by0))
            _, engine_frac = F.visible_fractions(np.ones(1), np.ones(1), s.boxes[j:j + 1], s.original_boxes[j:j + 1])
            # one crop pixel of slack on each side for the nearest-neighbour sampling
            b = s.original_boxes[j]
            slack = ((b[2] - b[0] + 2) * (b[3] - b[1] + 2)) / ((b[2] - b[0]) * (b[3] - b[1]))
            assert engine_frac[0] <= clipped * slack + 1e-9
            checked += 1
    assert checked > 20


@pytest.fixture(scope="module")
def synth_world(tmp_path_factory):
    root = isus.synth.write_dataset(tmp_path_factory.mktemp("vis") / "mvd", "mvd", 4, size=(640, 480), seed=2)
    ds = isus.open_dataset("mvd", root)
    return ds, isus.build_index(ds, workers=1)


@pytest.mark.parametrize("use_index", [True, False])
def test_engine_visibility_is_what_the_filters_compare(synth_world, use_index):
    """CropEngine.visibility (segment map only) lists the instances a crop holds before the
    visibility filters, and its fractions are the ones they compare: with low_visibility="ignore"
    an instance is flagged exactly when its fraction is below the threshold; with "drop" the
    kept ones are exactly the others."""
    ds, index = synth_world
    specs = list(isus.torch.CropSampler(index, isus.SamplerConfig(crop_size=(128, 96), mode="isus"), 40, seed=3))
    plain = CropEngine(ds, index if use_index else None)
    flags = {f: CropEngine(ds, index if use_index else None,
                           CropConfig(min_visible_fraction=f, low_visibility="ignore")) for f in (0.3, 0.7)}
    box = CropEngine(ds, index if use_index else None, CropConfig(min_box_fraction=0.4))
    seen = low = 0
    for spec in specs:
        v = plain.visibility(spec)
        s = plain(spec)
        assert v.segment_ids.tolist() == s.segment_ids.tolist() and v.category_ids.tolist() == s.category_ids.tolist()
        b = s.original_boxes.astype(np.float64)
        # the full box's side in the crop, from the sample's own original boxes (float32 there)
        np.testing.assert_allclose(v.size, np.sqrt((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])), rtol=1e-5)
        assert ((0 <= v.area_fraction) & (v.area_fraction <= 1) & (v.box_fraction <= 1)).all()
        for f, engine in flags.items():
            assert engine(spec).ignore.tolist() == (v.area_fraction < f).tolist()
        assert box(spec).segment_ids.tolist() == v.segment_ids[v.box_fraction >= 0.4].tolist()
        seen += len(v.segment_ids)
        low += int((v.area_fraction < 0.7).sum())
    assert seen > 30 and 0 < low < seen  # both outcomes occur


def test_mask_visibility_counts_what_the_engine_flags(synth_world):
    """isus.stats.mask_visibility redrawn by hand: the same crops (PCG64(SeedSequence([seed, m, 1]))),
    each cropped whole by an engine that flags low-visibility instances, bucketed by the size of
    the sample's original box."""
    from isus.sampling import SamplingPolicy
    from isus.stats import mask_visibility
    ds, index = synth_world
    config = isus.SamplerConfig(crop_size=(128, 96), mode="isus")
    got = mask_visibility(CropEngine(ds, index), config, 30, seed=5, visible_fractions=(0.2, 0.6),
                          box_fractions=(0.5,))
    assert got["samples"] == 30 and got["visible_fractions"] == [0.2, 0.6] and got["box_fractions"] == [0.5]
    for m, mode in enumerate(("cus", "isus")):
        batch = SamplingPolicy(index, config.with_mode(mode)).draw(
            np.random.Generator(np.random.PCG64(np.random.SeedSequence([5, m, 1]))), 30)
        pairs, area, boxb = np.zeros(3, int), np.zeros((2, 3), int), np.zeros((1, 3), int)
        for k in range(30):
            spec = batch.spec(k)
            for j, f in enumerate((0.2, 0.6)):
                s = CropEngine(ds, index, CropConfig(min_visible_fraction=f, low_visibility="ignore"))(spec)
                ob = s.original_boxes.astype(np.float64)
                size = np.sqrt((ob[:, 2] - ob[:, 0]) * (ob[:, 3] - ob[:, 1]))
                bucket = np.where(size < 32, 0, np.where(size < 96, 1, 2))
                area[j] += np.bincount(bucket[s.ignore], minlength=3)
            pairs += np.bincount(bucket, minlength=3)
            s = CropEngine(ds, index, CropConfig(min_box_fraction=0.5, low_visibility="ignore"))(spec)
            boxb[0] += np.bincount(bucket[s.ignore], minlength=3)
        assert got[mode]["crops"] == 30
        assert got[mode]["pairs"] == pairs.tolist() and got[mode]["area_below"] == area.tolist()
        assert got[mode]["box_below"] == boxb.tolist()
        assert (area[0] <= area[1]).all() and area[1].sum() > 0
    with pytest.raises(ValueError, match="needs a CropEngine built with the index"):
        mask_visibility(CropEngine(ds), config, 5)
