"""The crop engine's pure functions (isus.crop.functional) on hand-worked cases and against slow,
obvious twins on random inputs; the image and annotation sources (isus.crop.sources and the cached
ones) against each other."""
from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import isus
from isus import kernels
from isus.crop import functional as F
from isus.crop.sources import AnnotationSource, DecodedAnnotationSource, DecodedImageSource, ImageSource
from isus.index.cache import CachedAnnotationSource
from isus.index.image_cache import LEVELS, CachedImageSource, ImageCacheParams
from isus.types import CropSpec


def spec(window, scale, flip=False, image=0):
    return CropSpec(image=image, category=-1, instance=-1, level=-1, scale=scale, window=window, flip=flip)


# -- slow, obvious twins ---------------------------------------------------------------------------
def ref_map_boxes(boxes, window, scale, flip, cw):
    out = []
    for x0, y0, x1, y1 in boxes.tolist():
        a, b, c, d = (x0 - window[0]) * scale, (y0 - window[1]) * scale, (x1 - window[0]) * scale, (y1 - window[1]) * scale
        out.append([cw - c, b, cw - a, d] if flip else [a, b, c, d])
    return np.array(out, np.float64).reshape(-1, 4)


def ref_truncated(visible, original, window, scale, flip, crop, image):
    """Per instance and side, by the definition: the visible box touches the crop border, the
    full extent passes it, and the object does not end at the image border there."""
    cw, ch = crop
    h, w = image
    out = []
    for vis, ob in zip(visible.tolist(), original.tolist()):
        m = ref_map_boxes(np.array([ob]), window, scale, flip, cw)[0]
        left_edge, right_edge = (ob[2] >= w, ob[0] <= 0) if flip else (ob[0] <= 0, ob[2] >= w)
        out.append([vis[0] <= 0 and m[0] < -1e-6 and not left_edge,
                    vis[1] <= 0 and m[1] < -1e-6 and not ob[1] <= 0,
                    vis[2] >= cw and m[2] > cw + 1e-6 and not right_edge,
                    vis[3] >= ch and m[3] > ch + 1e-6 and not ob[3] >= h])
    return np.array(out, bool).reshape(-1, 4)


def ref_sample_map(ids, ys, xs, void):
    h, w = ids.shape
    return np.array([[ids[y, x] if 0 <= y < h and 0 <= x < w else void for x in xs] for y in ys],
                    ids.dtype).reshape(len(ys), len(xs))


# -- hand-worked cases -----------------------------------------------------------------------------
def test_crop_size_rounds_and_is_at_least_one():
    assert F.crop_size(spec((10, 20, 110, 70), 0.5)) == (50, 25)
    assert F.crop_size(spec((0, 0, 101, 99), 1.0)) == (101, 99)
    assert F.crop_size(spec((0, 0, 1, 1), 0.1)) == (1, 1)


def test_choose_reduce_takes_the_coarsest_level_that_keeps_the_resolution():
    assert [F.choose_reduce(s) for s in (2.0, 1.0, 0.5, 0.26, 0.25, 0.125, 0.01)] == [1, 1, 2, 2, 4, 8, 8]
    assert F.choose_reduce(0.1, allowed=(2, 1)) == 2


def test_source_pixels_are_under_the_crop_pixel_centres():
    # centres 10 + (0.5, 1.5, 2.5, 3.5) / 2 = 10.25, 10.75, 11.25, 11.75
    np.testing.assert_array_equal(F.source_pixels(10, 2.0, 4), [10, 10, 11, 11])
    # downscaling by 4 from -3: -3 + (0.5, 1.5, 2.5) * 4 = -1, 3, 7
    np.testing.assert_array_equal(F.source_pixels(-3, 0.25, 3), [-1, 3, 7])


def test_warp_plan_maps_crop_centres_and_reads_a_margin():
    m, win = F.warp_plan(spec((10, 20, 30, 40), 2.0), 40, 40, 1)
    # crop pixel u -> original 10 + (u + 0.5) / 2 -> pixel index that - 0.5
    np.testing.assert_allclose(m, [[0.5, 0, 9.75], [0, 0.5, 19.75]])
    assert win == (7, 17, 33, 43)  # floor(9.75) - 2 .. ceil(9.75 + 39 * 0.5) + 3
    m, _ = F.warp_plan(spec((10, 20, 30, 40), 2.0, flip=True), 40, 40, 1)
    np.testing.assert_allclose(m[0], [-0.5, 0, 29.25])  # crop pixel 0 reads the window's right end
    m, _ = F.warp_plan(spec((16, 0, 48, 32), 0.25), 8, 8, 4)  # level 1/4: pixel index / 4
    np.testing.assert_allclose(m[0], [1.0, 0, (16 + 2) / 4 - 0.5])


def test_sample_map_fills_outside_with_void_and_leaves_the_map():
    ids = np.arange(12, dtype=np.int32).reshape(3, 4)
    before = ids.copy()
    out = F.sample_map(ids, np.array([-1, 0, 2, 3]), np.array([3, 1, 4]), void=-7)
    np.testing.assert_array_equal(out, [[-7, -7, -7], [3, 1, -7], [11, 9, -7], [-7, -7, -7]])
    np.testing.assert_array_equal(ids, before)


def test_map_boxes_scales_translates_and_flips():
    box = np.array([[30, 40, 70, 100]], np.float64)
    np.testing.assert_array_equal(F.map_boxes(box, (20, 30, 0, 0), 2.0, False, 200), [[20, 20, 100, 140]])
    # mirrored in the 200-pixel crop: x0, x1 = 200 - 100, 200 - 20
    np.testing.assert_array_equal(F.map_boxes(box, (20, 30, 0, 0), 2.0, True, 200), [[100, 20, 180, 140]])
    # a box beyond the crop on both sides keeps its full extent
    wide = np.array([[-10, 0, 500, 50]], np.float64)
    np.testing.assert_array_equal(F.map_boxes(wide, (0, 0), 0.5, False, 100), [[-5, 0, 250, 25]])
    np.testing.assert_array_equal(F.map_boxes(wide, (0, 0), 0.5, True, 100), [[-150, 0, 105, 25]])
    assert F.map_boxes(np.zeros((0, 4)), (3, 4), 2.0, True, 10).shape == (0, 4)


def test_hflip_boxes_is_an_involution_and_keeps_its_input():
    boxes = np.array([[1.5, 2, 7, 9], [0, 0, 10, 10]])
    before = boxes.copy()
    np.testing.assert_array_equal(F.hflip_boxes(boxes, 10), [[3, 2, 8.5, 9], [0, 0, 10, 10]])
    np.testing.assert_array_equal(F.hflip_boxes(F.hflip_boxes(boxes, 10), 10), boxes)
    np.testing.assert_array_equal(boxes, before)


def test_image_border_sides_follow_the_flip():
    # image 200 wide, 100 high; the box touches the left and the bottom border
    box = np.array([[0, 10, 50, 100]], np.float64)
    np.testing.assert_array_equal(F.image_border_sides(box, (100, 200), False), [[True, False, False, True]])
    np.testing.assert_array_equal(F.image_border_sides(box, (100, 200), True), [[False, False, True, True]])
    np.testing.assert_array_equal(F.image_border_sides(np.array([[1, 1, 199, 99.0]]), (100, 200), False),
                                  [[False] * 4])


def test_truncation_needs_the_crop_border_the_extent_and_no_image_border():
    crop = (100, 80)
    visible = np.array([[0, 10, 40, 50],      # touches the left crop border
                        [0, 10, 40, 50],      # ... but the object ends at the image border there
                        [0, 10, 40, 50],      # ... and passes it by less than eps only
                        [3, 10, 40, 50],      # does not touch it (its extent passes it: not truncated)
                        [60, 0, 100, 80]], np.float32)  # touches the top, right and bottom borders
    mapped = np.array([[-10, 10, 40, 50], [-10, 10, 40, 50], [-1e-7, 10, 40, 50], [-10, 10, 40, 50],
                       [60, -5, 130, 80.5]], np.float64)
    border = np.zeros((5, 4), bool)
    border[1, 0] = True
    border[4, 3] = True  # the object ends at the image's bottom border
    want = [[True, False, False, False], [False] * 4, [False] * 4, [False] * 4, [False, True, True, False]]
    np.testing.assert_array_equal(F.truncated_sides(visible, mapped, border, crop), want)
    assert F.truncated_sides(np.zeros((0, 4)), np.zeros((0, 4)), np.zeros((0, 4), bool), crop).shape == (0, 4)


def test_truncation_of_a_flipped_crop_is_on_the_mirrored_side():
    """Image 200x100, an object over x 150..190; the crop (window x 100..170) cuts it at x 170, and
    the flip puts that cut on the crop's left."""
    original = np.array([[150, 20, 190, 60]], np.float64)
    window, crop, image = (100, 0, 170, 80), (70, 80), (100, 200)
    visible = np.array([[0, 20, 20, 60]], np.float32)  # flipped: x 150..170 -> 70 - 70 .. 70 - 50
    mapped = F.map_boxes(original, window, 1.0, True, crop[0])
    np.testing.assert_array_equal(mapped, [[-20, 20, 20, 60]])  # x 50..90 in the crop, mirrored in 70
    got = F.truncated_sides(visible, mapped, F.image_border_sides(original, image, True), crop)
    np.testing.assert_array_equal(got, [[True, False, False, False]])
    # the same object reaching the image's right border is not truncated: it ends there
    at_border = np.array([[150, 20, 200, 60]], np.float64)
    got = F.truncated_sides(visible, F.map_boxes(at_border, window, 1.0, True, crop[0]),
                            F.image_border_sides(at_border, image, True), crop)
    np.testing.assert_array_equal(got, [[False] * 4])


def test_semantic_lut_and_instance_selection():
    train, crowd = np.array([4, 7, 9], np.int64), np.array([False, True, False])
    np.testing.assert_array_equal(F.semantic_lut(train, crowd, 255, True), [255, 4, 255, 9])
    np.testing.assert_array_equal(F.semantic_lut(train, crowd, 255, False), [255, 4, 7, 9])
    assert F.semantic_lut(train, crowd, 255, True).dtype == np.int64
    # segments 0..3: a thing, a thing too small, an absent thing, a crowd thing
    keep, dropped = F.select_instances(np.array([10, 3, 0, 20]), np.array([True, True, True, True]),
                                       np.array([False, False, False, True]), 4)
    np.testing.assert_array_equal(keep, [0])
    assert dropped == 1
    keep, dropped = F.select_instances(np.array([10, 3]), np.array([False, True]), np.array([False, False]), 3)
    np.testing.assert_array_equal(keep, [1])  # stuff is never an instance
    assert dropped == 0


# -- against the twins -----------------------------------------------------------------------------
coord = st.floats(-300, 300, allow_nan=False)
boxes_st = st.lists(st.tuples(st.integers(-50, 250), st.integers(-50, 250), st.integers(1, 200), st.integers(1, 200)),
                    max_size=12).map(lambda r: np.array([[x, y, x + w, y + h] for x, y, w, h in r], np.float64).reshape(-1, 4))


@settings(max_examples=200, deadline=None)
@given(boxes_st, coord, coord, st.floats(0.05, 8), st.booleans(), st.integers(1, 600))
def test_map_boxes_against_the_twin(boxes, wx, wy, scale, flip, cw):
    got = F.map_boxes(boxes, (wx, wy, wx + 10, wy + 10), scale, flip, cw)
    np.testing.assert_array_equal(got, ref_map_boxes(boxes, (wx, wy), scale, flip, cw))  # the same float operations
    np.testing.assert_array_equal(F.hflip_boxes(F.map_boxes(boxes, (wx, wy), scale, False, cw), cw), got if flip
                                  else F.map_boxes(boxes, (wx, wy), scale, True, cw))


@settings(max_examples=200, deadline=None)
@given(boxes_st, st.integers(0, 150), st.integers(0, 150), st.sampled_from([0.25, 0.5, 1.0, 1.7, 3.0]), st.booleans(),
       st.integers(20, 200), st.integers(20, 200), st.integers(0, 2**31))
def test_truncation_against_the_twin(original, wx, wy, scale, flip, cw, ch, seed):
    image = (220, 240)
    original = np.clip(original, 0, [image[1], image[0], image[1], image[0]])
    original[:, 2:] = np.maximum(original[:, 2:], original[:, :2] + 1)
    window = (wx, wy, wx + cw / scale, wy + ch / scale)
    mapped = F.map_boxes(original, window, scale, flip, cw)
    # the visible box: the mapped extent clipped to the crop, sometimes pulled inside it
    rng = np.random.default_rng(seed)
    visible = np.clip(np.round(mapped), 0, [cw, ch, cw, ch]).astype(np.float32)
    visible += rng.integers(0, 2, visible.shape) * np.array([1, 1, -1, -1], np.float32)
    got = F.truncated_sides(visible, mapped, F.image_border_sides(original, image, flip), (cw, ch))
    np.testing.assert_array_equal(got, ref_truncated(visible, original, window, scale, flip, (cw, ch), image))


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 20), st.integers(1, 20), st.lists(st.integers(-5, 25), max_size=15),
       st.lists(st.integers(-5, 25), max_size=15), st.integers(-1, 3))
def test_sample_map_against_the_twin(h, w, ys, xs, void):
    ids = np.random.default_rng(h * 31 + w).integers(0, 9, (h, w)).astype(np.int32)
    ys, xs = np.array(sorted(ys), np.int64), np.array(sorted(xs), np.int64)
    np.testing.assert_array_equal(F.sample_map(ids, ys, xs, void), ref_sample_map(ids, ys, xs, void))


@settings(max_examples=200, deadline=None)
@given(coord, st.floats(0.05, 8), st.integers(0, 64))
def test_source_pixels_against_the_twin(start, scale, n):
    np.testing.assert_array_equal(F.source_pixels(start, scale, n),
                                  np.array([math.floor(start + (k + 0.5) / scale) for k in range(n)], np.int64))


@settings(max_examples=200, deadline=None)
@given(coord, coord, st.floats(0.05, 8), st.integers(1, 300), st.integers(1, 300), st.sampled_from(LEVELS),
       st.booleans())
def test_warp_plan_against_the_twin(x0, y0, scale, cw, ch, r, flip):
    m, win = F.warp_plan(spec((x0, y0, x0 + cw / scale, y0 + ch / scale), scale, flip), cw, ch, r)
    for u in (0, cw // 2, cw - 1):
        src = x0 + ((cw - 1 - u if flip else u) + 0.5) / scale  # original x under crop pixel u
        assert math.isclose(m[0, 0] * u + m[0, 2], src / r - 0.5, rel_tol=1e-9, abs_tol=1e-6)
        assert win[0] + 2 <= m[0, 0] * u + m[0, 2] + 1e-6 and m[0, 0] * u + m[0, 2] <= win[2] - 3 + 1e-6
    for v in (0, ch - 1):
        src = y0 + (v + 0.5) / scale
        assert math.isclose(m[1, 1] * v + m[1, 2], src / r - 0.5, rel_tol=1e-9, abs_tol=1e-6)
        assert win[1] + 2 <= m[1, 1] * v + m[1, 2] + 1e-6 and m[1, 1] * v + m[1, 2] <= win[3] - 3 + 1e-6


@settings(max_examples=200, deadline=None)
@given(st.floats(0.001, 20))
def test_choose_reduce_against_the_twin(scale):
    fits = [r for r in (8, 4, 2, 1) if r * scale <= 1 + 1e-9]
    assert F.choose_reduce(scale) == (fits[0] if fits else 1)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 30), st.booleans(), st.booleans()), max_size=12), st.integers(1, 6))
def test_select_instances_against_the_twin(rows, min_area):
    area = np.array([a for a, _, _ in rows], np.int64)
    isthing = np.array([t for _, t, _ in rows], bool)
    crowd = np.array([c for _, _, c in rows], bool)
    keep, dropped = F.select_instances(area, isthing, crowd, min_area)
    cand = [k for k, (a, t, c) in enumerate(rows) if a > 0 and t and not c]
    assert keep.tolist() == [k for k in cand if rows[k][0] >= min_area]
    assert dropped == sum(rows[k][0] < min_area for k in cand)


# -- the sources -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A small MVD tree with a lossless image cache, and its semantic-only copy with an annotation cache."""
    tmp = tmp_path_factory.mktemp("sources")
    root = isus.synth.write_dataset(tmp / "mvd", "mvd", 3, size=(200, 150), seed=4)
    ds = isus.open_dataset("mvd", root)
    index = isus.build_index(ds, workers=1, cache_dir=tmp / "c", image_cache=ImageCacheParams(codec="png", tile=64))
    sem_root = tmp / "sem"
    shutil.copytree(root, sem_root)
    for version in ("v1.2", "v2.0"):
        for folder in ("instances", "panoptic"):
            shutil.rmtree(sem_root / "training" / version / folder)
    sem = isus.open_dataset("mvd", sem_root)
    return ds, index, sem, isus.build_index(sem, workers=1, cache_dir=tmp / "sc")


def test_sources_satisfy_their_protocols(world):
    ds, index, _, _ = world
    for source in (DecodedImageSource(ds), CachedImageSource(index)):
        assert isinstance(source, ImageSource)
    for source in (DecodedAnnotationSource(ds), CachedAnnotationSource(index)):
        assert isinstance(source, AnnotationSource)
    engine = isus.CropEngine(ds, index)
    assert isinstance(engine.image_source, CachedImageSource) and isinstance(engine.annotation_source, CachedAnnotationSource)
    engine = isus.CropEngine(ds, index, isus.CropConfig(use_cache=False))
    assert isinstance(engine.image_source, DecodedImageSource) and isinstance(engine.annotation_source, DecodedAnnotationSource)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2), st.sampled_from(LEVELS), st.integers(-40, 220), st.integers(-40, 170), st.integers(1, 120),
       st.integers(1, 120))
def test_cached_and_decoded_image_sources_agree(world, i, r, x0, y0, w, h):
    ds, index, _, _ = world
    window = (x0 // r, y0 // r, (x0 + w) // r + 1, (y0 + h) // r + 1)
    (a, ax, ay), (b, bx, by) = CachedImageSource(index).window(i, r, window), DecodedImageSource(ds).window(i, r, window)
    assert (bx, by) == (0, 0) and b.shape == ds.load_image(i, r).shape
    # the cached buffer is whole tiles: compare what it holds of the window, clipped to the image
    xa, ya = max(window[0], ax, 0), max(window[1], ay, 0)
    xb, yb = min(window[2], ax + a.shape[1], b.shape[1]), min(window[3], ay + a.shape[0], b.shape[0])
    if xb > xa and yb > ya:
        np.testing.assert_array_equal(a[ya - ay:yb - ay, xa - ax:xb - ax], b[ya:yb, xa:xb])
        assert (xa, ya, xb, yb) == (max(window[0], 0), max(window[1], 0), min(window[2], b.shape[1]),
                                    min(window[3], b.shape[0]))


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2), st.floats(-60, 220), st.floats(-60, 170), st.floats(0.1, 3), st.integers(1, 60),
       st.integers(1, 60), st.booleans(), st.booleans())
def test_cached_and_decoded_annotation_sources_agree(world, i, x0, y0, scale, cw, ch, flip, semantic_only):
    ds, index, sem, sem_index = world
    if semantic_only:
        ds, index = sem, sem_index
    ys, xs = F.source_pixels(y0, scale, ch), F.source_pixels(x0, scale, cw)
    a = CachedAnnotationSource(index).sample(i, ys, xs, flip)
    b = DecodedAnnotationSource(ds).sample(i, ys, xs, flip)
    assert a[2] == b[2] == (ds.image_info(i).height, ds.image_info(i).width)
    # the same segments at every sampled pixel (a cached table may list them in another order)
    np.testing.assert_array_equal(np.r_[0, a[1]["id"]][a[0]], np.r_[0, b[1]["id"]][b[0]])
    # sample_targets: crop_maps of each source's dense map (its own table order), with and without maps
    rng = np.random.default_rng(len(ys) * 1000 + len(xs))
    for source, (dense, segments, size) in ((CachedAnnotationSource(index), a), (DecodedAnnotationSource(ds), b)):
        n = len(segments)
        tables = (np.r_[0, segments["id"]].astype(np.int32), rng.integers(0, 50, n + 1), rng.random(n + 1) < 0.3)
        want = kernels.crop_maps(dense, *tables)
        for maps in (True, False):
            got = source.sample_targets(i, ys, xs, flip, lambda seg: tables, maps)
            assert got.size == size and (got.segments == segments).all()
            for g, w in zip((got.ids, got.area, got.box), (want[0], want[3], want[4])):
                np.testing.assert_array_equal(g, w)
            if maps:
                for g, w in zip((got.dense, got.semantic, got.crowd), (dense, want[1], want[2])):
                    np.testing.assert_array_equal(g, w)
            else:
                assert got.dense is None and got.semantic.shape == got.crowd.shape == (0, 0)


def test_cached_annotation_load_is_the_decoded_annotation(world):
    ds, index, _, _ = world
    for i in range(len(ds)):
        got, want = CachedAnnotationSource(index).load(i), ds.load_panoptic(i)
        np.testing.assert_array_equal(got.ids, want.ids)
        np.testing.assert_array_equal(got.segments, want.segments)
    win = CachedAnnotationSource(index).load(1, (-5, 10, 40, 30))
    np.testing.assert_array_equal(win.ids[:, 5:], ds.load_panoptic(1).ids[10:30, :40])
    assert (win.ids[:, :5] == 0).all()


def test_decoded_boxes_are_the_full_extents(world):
    ds, index, _, _ = world
    pan = ds.load_panoptic(0)
    boxes = DecodedAnnotationSource(ds).boxes(0, pan.segments["id"])
    for k, sid in enumerate(pan.segments["id"]):
        ys, xs = np.nonzero(pan.ids == sid)
        assert boxes[k].tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    inst = index.instances
    rows = np.flatnonzero(inst.image == 0)
    assert len(rows)
    for r in rows:  # the index's boxes are the same full extents
        k = int(np.flatnonzero(pan.segments["id"] == inst.segment_id[r])[0])
        np.testing.assert_array_equal(boxes[k], inst.box[r])
