"""isus.eval against independent computations: the kernels against numpy/pycocotools twins, PQ/SQ/RQ
against panopticapi's ``pq_compute`` (real COCO samples and synthetic COCO data, predictions
perturbed in every way a model errs), PC/PQ†/mIoU against the loop references of
``tests/eval_reference.py``, AP by size bucket through pycocotools, bad input, serialisation and
streaming."""
from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from panopticapi.utils import id2rgb
from PIL import Image
from pycocotools import mask as mask_utils

import isus
from isus import kernels
from isus.eval import (DEFAULT_PERCENTILES, CategoryTable, Detections, EvalResult, ImageStats,
                       PanopticEvaluator, image_stats)
from isus.eval import stats as eval_stats
from isus.types import make_segments
from tests import eval_reference as ref
from tests.conftest import realdata

TOL = 1e-9


# ============================================================================================
# helpers
# ============================================================================================

def pan(ids, segments=()) -> isus.Panoptic:
    """A Panoptic from a nested list / array and ``(id, category_id[, iscrowd])`` rows."""
    segments = list(segments)
    return isus.Panoptic(np.asarray(ids, dtype=np.int32),
                         make_segments([s[0] for s in segments], [s[1] for s in segments],
                                       [bool(s[2]) if len(s) > 2 else False for s in segments]))


def close(a, b, tol=TOL) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= tol


def assert_same_tree(a, b, tol=1e-12, path="result"):
    """Recursive equality, floats to ``tol``, NaN equal to NaN."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{path}: keys {sorted(a)} != {sorted(b)}"
        for k in a:
            assert_same_tree(a[k], b[k], tol, f"{path}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), f"{path}: {a} != {b}"
        for k, (x, y) in enumerate(zip(a, b)):
            assert_same_tree(x, y, tol, f"{path}[{k}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert isinstance(a, (int, float)) and isinstance(b, (int, float)) and close(a, b, tol), f"{path}: {a} != {b}"
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def by_id(res: EvalResult) -> dict[int, dict]:
    return {v["id"]: v for v in res.per_class.values()}


def assert_at_most_one_crowd_per_category(gt: isus.Panoptic, image) -> None:
    """Where isus and panopticapi agree on crowd: isus sums every crowd segment of a category when
    deciding whether an unmatched prediction is ignored, panopticapi uses the last one listed."""
    crowd = Counter(int(c) for c in gt.segments["category_id"][gt.segments["iscrowd"]])
    assert all(n <= 1 for n in crowd.values()), f"{image}: several crowd segments of one category: {crowd}"


# -- COCO panoptic files and panopticapi -------------------------------------------------------

def write_coco_panoptic(folder: Path, image_id, p: isus.Panoptic) -> dict:
    """Write ``p`` as an RGB PNG and return its COCO panoptic annotation (with areas)."""
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{image_id}.png"
    Image.fromarray(id2rgb(p.ids.astype(np.int64))).save(folder / name)
    info = [{"id": int(s["id"]), "category_id": int(s["category_id"]), "iscrowd": int(s["iscrowd"]),
             "area": int((p.ids == s["id"]).sum())} for s in p.segments]
    return {"image_id": image_id, "file_name": name, "segments_info": info}


def panopticapi_pq(pairs, gt_folder: Path, pred_folder: Path, categories: list[dict]):
    """panopticapi's own per-category statistics and averages for ``(gt_ann, pred_ann)`` pairs."""
    from panopticapi.evaluation import pq_compute_single_core

    cats = {c["id"]: c for c in categories}
    with contextlib.redirect_stdout(io.StringIO()):
        stat = pq_compute_single_core(0, pairs, str(gt_folder), str(pred_folder), cats)
    out = {}
    for name, isthing in (("All", None), ("Things", True), ("Stuff", False)):
        try:
            out[name], per_class = stat.pq_average(cats, isthing=isthing)
        except ZeroDivisionError:  # no category of the kind counted
            out[name], per_class = {"pq": math.nan, "sq": math.nan, "rq": math.nan}, {}
        if name == "All":
            out["per_class"] = per_class
    return out, stat


def assert_pq_equals_panopticapi(res: EvalResult, pa: dict, stat, categories: list[dict]) -> None:
    for name, suffix in (("All", ""), ("Things", "_th"), ("Stuff", "_st")):
        for m in ("pq", "sq", "rq"):
            assert close(getattr(res, m + suffix), pa[name][m]), \
                f"{m}{suffix}: isus {getattr(res, m + suffix)!r}, panopticapi {pa[name][m]!r}"
    per = by_id(res)
    for c in categories:
        s, v = stat.pq_per_cat[c["id"]], per[c["id"]]
        assert (v["tp"], v["fp"], v["fn"]) == (s.tp, s.fp, s.fn), f"{c['name']}: isus {v}, panopticapi {vars(s)}"
        if s.tp + s.fp + s.fn:
            for m in ("pq", "sq", "rq"):
                expected = pa["per_class"][c["id"]][m]
                assert close(v[m], expected), f"{c['name']} {m}: isus {v[m]}, panopticapi {expected}"
        else:
            assert math.isnan(v["pq"]) and math.isnan(v["sq"]) and math.isnan(v["rq"])


# ============================================================================================
# kernels against their twins
# ============================================================================================

_ID = st.integers(1, 2**31 - 1)


@st.composite
def id_maps(draw):
    h, w = draw(st.integers(0, 7)), draw(st.integers(0, 7))
    gs = sorted(draw(st.sets(_ID, max_size=5)))
    ps = sorted(draw(st.sets(_ID, max_size=5)))
    unknown = draw(st.lists(_ID, max_size=2))  # ids the lists may not hold (or, by chance, do)
    g = draw(arrays(np.int32, (h, w), elements=st.sampled_from([0, *gs, *unknown])))
    p = draw(arrays(np.int32, (h, w), elements=st.sampled_from([0, *ps, *unknown])))
    return g, p, np.array(gs, dtype=np.int32), np.array(ps, dtype=np.int32)


@settings(max_examples=300)
@given(id_maps())
def test_pair_counts_equals_bincount_twin(maps):
    g, p, gs, ps = maps
    np.testing.assert_array_equal(kernels.pair_counts(g, p, gs, ps), ref.pair_counts(g, p, gs, ps))


@settings(max_examples=150)
@given(id_maps())
def test_sparse_pair_matrix_equals_dense(maps):
    """The np.unique path for images with thousands of segments counts what the kernel counts."""
    g, p, gs, ps = maps
    gt = pan(g, [(s, 1) for s in gs])
    pred = pan(p, [(s, 1) for s in ps])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(eval_stats, "_DENSE_PAIRS_MAX", 0)
        sparse = eval_stats._pair_matrix(gt, pred)
    np.testing.assert_array_equal(sparse, ref.pair_counts(g, p, gs, ps))


@settings(max_examples=300)
@given(st.data())
def test_mask_rle_counts_equals_pycocotools(data):
    h, w = data.draw(st.integers(1, 9)), data.draw(st.integers(1, 9))
    dense = data.draw(arrays(np.uint16, (h, w), elements=st.integers(0, 3)))
    k = data.draw(st.integers(1, 4))
    ys, xs = np.nonzero(dense == k)
    if len(ys):  # any box holding the mask
        x0, y0 = data.draw(st.integers(0, int(xs.min()))), data.draw(st.integers(0, int(ys.min())))
        x1, y1 = data.draw(st.integers(int(xs.max()) + 1, w)), data.draw(st.integers(int(ys.max()) + 1, h))
    else:
        x0, y0 = data.draw(st.integers(0, w)), data.draw(st.integers(0, h))
        x1, y1 = data.draw(st.integers(x0, w)), data.draw(st.integers(y0, h))
    counts = kernels.mask_rle_counts(dense, k, x0, y0, x1, y1)
    assert counts.tolist() == ref.mask_rle_counts(dense, k)
    rle = mask_utils.frPyObjects({"size": [h, w], "counts": counts.tolist()}, h, w)
    assert rle["counts"] == ref.mask_rle(dense, k)["counts"]


@settings(max_examples=200)
@given(st.data())
def test_colors_to_ids_and_segment_areas_equal_their_twins(data):
    from tests import reference

    h, w = data.draw(st.integers(0, 7)), data.draw(st.integers(0, 7))
    img = data.draw(arrays(np.uint8, (h, w, 3), elements=st.sampled_from([0, 1, 7, 128, 255])))
    for bgr in (False, True):
        np.testing.assert_array_equal(kernels.colors_to_ids(img, bgr), reference.colors_to_ids(img, bgr))
    ids = reference.colors_to_ids(img, False)
    present = np.unique(ids[ids != 0])
    listed = np.array(sorted(data.draw(st.sets(st.sampled_from(present.tolist() + [5, 2**24 - 1])))
                             if present.size else [5]), dtype=np.int32)
    got = kernels.segment_areas(ids, listed)
    want = reference.segment_areas(ids, listed)
    np.testing.assert_array_equal(got[0], want[0])
    assert (int(got[1]), int(got[2])) == want[1:]


# ============================================================================================
# PQ / SQ / RQ against panopticapi
# ============================================================================================

PERTURBATIONS = ("identity", "erode", "dilate", "shift", "merge", "split", "drop", "hallucinate", "wrong_class",
                 "on_void", "on_crowd")


def _boundary(ids):
    """Pixels with a 4-neighbour of another id."""
    b = np.zeros(ids.shape, bool)
    d = ids[1:] != ids[:-1]
    b[1:] |= d
    b[:-1] |= d
    d = ids[:, 1:] != ids[:, :-1]
    b[:, 1:] |= d
    b[:, :-1] |= d
    return b


def _max3(ids):
    h, w = ids.shape
    p = np.pad(ids, 1)
    return np.max([p[dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)], axis=0)


def _shift(ids, dy, dx):
    h, w = ids.shape
    out = np.zeros_like(ids)
    src = ids[max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)]
    out[max(0, dy):max(0, dy) + src.shape[0], max(0, dx):max(0, dx) + src.shape[1]] = src
    return out


def _rect(h, w, rng, cy=None, cx=None):
    rh = int(rng.integers(max(1, h // 8), max(2, h // 3)))
    rw = int(rng.integers(max(1, w // 8), max(2, w // 3)))
    if cy is None:
        cy, cx = int(rng.integers(h)), int(rng.integers(w))
    y0, x0 = max(0, cy - rh // 2), max(0, cx - rw // 2)
    return slice(y0, min(h, y0 + rh)), slice(x0, min(w, x0 + rw))


def perturb(kind: str, gt: isus.Panoptic, cat_ids: list[int], rng: np.random.Generator) -> isus.Panoptic:
    """A prediction derived from the ground truth by one kind of error; segment ids renumbered."""
    ids = gt.ids.astype(np.int64)
    cat = {int(s): int(c) for s, c in zip(gt.segments["id"], gt.segments["category_id"])}
    crowd = [int(s) for s in gt.segments["id"][gt.segments["iscrowd"]]]
    plain = [int(s) for s in gt.segments["id"][~gt.segments["iscrowd"]]]
    h, w = ids.shape
    fresh = iter(range(max(cat, default=0) + 1, 1 << 40))

    def new(c) -> int:
        s = next(fresh)
        cat[s] = int(c)
        return s

    def tiles(mask, label, size):
        for y in range(0, h, size):
            for x in range(0, w, size):
                sub = mask[y:y + size, x:x + size]
                if sub.any():
                    ids[y:y + size, x:x + size][sub] = new(label())

    if kind == "erode":
        for _ in range(int(rng.integers(1, 3))):
            ids[_boundary(ids)] = 0
    elif kind == "dilate":
        for _ in range(int(rng.integers(1, 3))):
            ids = _max3(ids)
    elif kind == "shift":
        d = max(2, min(h, w) // 24)
        ids = _shift(ids, int(rng.choice([-d, d])), int(rng.integers(-d, d + 1)))
    elif kind == "merge":
        groups = defaultdict(list)
        for s in plain:
            groups[cat[s]].append(s)
        for ss in groups.values():  # two segments of one category
            if len(ss) >= 2:
                a, b = rng.choice(ss, 2, replace=False)
                ids[ids == b] = a
        left = [int(s) for s in np.unique(ids) if s]
        if len(left) >= 2:  # and any two, possibly of different categories
            a, b = rng.choice(left, 2, replace=False)
            ids[ids == b] = a
    elif kind == "split":
        for s in plain:
            ys, xs = np.nonzero(ids == s)
            if len(ys) < 2 or rng.random() < 0.3:
                continue
            coord = xs if (rng.random() < 0.5 and xs.min() < xs.max()) or ys.min() == ys.max() else ys
            part = coord >= np.median(coord)
            if part.all():
                part = coord > coord.min()
            ids[ys[part], xs[part]] = new(cat[s])
    elif kind == "drop":
        for s in list(cat):
            if rng.random() < 0.4:
                ids[ids == s] = 0
    elif kind == "hallucinate":
        for _ in range(6):
            ids[_rect(h, w, rng)] = new(rng.choice(cat_ids))
    elif kind == "wrong_class":
        for s in list(cat):
            if rng.random() < 0.4:
                cat[s] = int(rng.choice([c for c in cat_ids if c != cat[s]]))
    elif kind == "on_void":
        void = gt.ids == 0
        vy, vx = np.nonzero(void)
        for j in rng.choice(len(vy), min(3, len(vy)), replace=False):  # rectangles partly on void
            ids[_rect(h, w, rng, int(vy[j]), int(vx[j]))] = new(rng.choice(cat_ids))
        tiles(void & (ids == 0), lambda: rng.choice(cat_ids), max(4, min(h, w) // 4))  # segments all on void
    elif kind == "on_crowd":
        for s in crowd:
            m = gt.ids == s
            ys, xs = np.nonzero(m)
            j = int(rng.integers(len(ys)))
            r = max(1, int(np.sqrt(len(ys))) // 2)
            sl = (slice(max(0, ys[j] - r), ys[j] + r), slice(max(0, xs[j] - r), xs[j] + r))
            ids[sl] = new(cat[s])  # partly on the crowd region, partly not
            others = [c for c in cat_ids if c != cat[s]]
            tiles(ids == s, lambda: cat[s] if rng.random() < 0.7 else rng.choice(others), max(3, r))
    elif kind != "identity":
        raise ValueError(kind)

    present = np.unique(ids)
    present = present[present != 0]
    draw = np.unique(rng.integers(1, 1 << 24, size=3 * len(present) + 8))
    assert len(draw) >= len(present)
    new_ids = rng.permutation(draw)[:len(present)]
    out = np.where(ids == 0, 0, new_ids[np.searchsorted(present, ids).clip(0, max(len(present) - 1, 0))]
                   if len(present) else 0)
    return isus.Panoptic(out.astype(np.int32),
                         make_segments(new_ids, [cat[int(s)] for s in present], np.zeros(len(present), bool)))


@dataclasses.dataclass
class CocoSet:
    ds: object
    gt_folder: Path
    gt_json: dict


@pytest.fixture(scope="module")
def real_coco() -> CocoSet:
    root = realdata("coco_panoptic", "panopticapi", "sample_data")
    ds = isus.open_dataset("coco", root, annotations="panoptic_examples.json", panoptic_dir="panoptic_examples",
                           images_dir="input_images")
    return CocoSet(ds, root / "panoptic_examples", json.loads((root / "panoptic_examples.json").read_text()))


@pytest.fixture(scope="module")
def synth_coco(synth_root) -> CocoSet:
    root = synth_root("coco")
    ann = root / "annotations" / "panoptic_train2017.json"
    return CocoSet(isus.open_dataset("coco", root), ann.with_suffix(""), json.loads(ann.read_text()))


def check_against_panopticapi(cs: CocoSet, kind: str, pred_folder: Path) -> EvalResult:
    ds = cs.ds
    cat_ids = [c.id for c in ds.categories]
    gt_anns = {a["image_id"]: a for a in cs.gt_json["annotations"]}
    ev = PanopticEvaluator(ds.categories)
    pairs, n_pred = [], 0
    for i in range(len(ds)):
        info = ds.image_info(i)
        gt = ds.load_panoptic(i)
        assert_at_most_one_crowd_per_category(gt, info.file_name)
        pred = perturb(kind, gt, cat_ids, np.random.default_rng([i, PERTURBATIONS.index(kind)]))
        n_pred += len(pred.segments)
        ev.add(gt, pred, image=info.file_name)
        pairs.append((gt_anns[info.image_id], write_coco_panoptic(pred_folder, info.image_id, pred)))
    pa, stat = panopticapi_pq(pairs, cs.gt_folder, pred_folder, cs.gt_json["categories"])
    res = ev.result()
    assert_pq_equals_panopticapi(res, pa, stat, cs.gt_json["categories"])
    # not vacuous: something matched, and the void/crowd rule fired where the predictions aim at it
    tp = sum(v["tp"] for v in res.per_class.values())
    fp = sum(v["fp"] for v in res.per_class.values())
    assert tp > 0
    if kind in ("on_void", "on_crowd"):
        assert n_pred - tp - fp > 0, "no prediction was ignored"
    if kind == "identity":
        assert res.pq == res.sq == res.rq == 1.0
    return res


@pytest.mark.parametrize("kind", PERTURBATIONS)
def test_pq_equals_panopticapi_on_synthetic_coco(synth_coco, kind, tmp_path):
    check_against_panopticapi(synth_coco, kind, tmp_path / "pred")


@pytest.mark.parametrize("kind", PERTURBATIONS)
def test_pq_equals_panopticapi_on_real_coco_samples(real_coco, kind, tmp_path):
    check_against_panopticapi(real_coco, kind, tmp_path / "pred")


PERSON = isus.Category(1, "person", True, (220, 20, 60))
CAR = isus.Category(3, "car", True, (0, 0, 142))
ROAD = isus.Category(7, "road", False, (128, 64, 128))
SKY = isus.Category(9, "sky", False, (70, 130, 180))
CATS = (PERSON, CAR, ROAD, SKY)


def _coco_categories(cats):
    return [{"id": c.id, "name": c.name, "isthing": int(c.isthing), "color": list(c.color)} for c in cats]


def test_two_crowd_segments_of_one_category_are_summed(tmp_path):
    """The documented deviation: an unmatched prediction lying 1/3 on each of two person crowds
    (2/3 in all) is ignored by isus; panopticapi looks only at the last crowd listed (1/3) and
    counts a false positive. With the two crowds as one segment both ignore it."""
    gt_two = pan([[1, 1, 2, 2],
                  [3, 3, 3, 3],
                  [3, 3, 3, 3],
                  [3, 3, 3, 3]], [(1, PERSON.id, True), (2, PERSON.id, True), (3, ROAD.id)])
    gt_one = pan(np.where(gt_two.ids == 2, 1, gt_two.ids), [(1, PERSON.id, True), (3, ROAD.id)])
    pred = pan([[0, 5, 5, 0],
                [6, 5, 6, 6],
                [6, 6, 6, 6],
                [6, 6, 6, 6]], [(5, PERSON.id), (6, ROAD.id)])
    cats = _coco_categories(CATS)
    for gt, isus_fp, api_fp in ((gt_two, 0, 1), (gt_one, 0, 0)):
        ev = PanopticEvaluator(CATS)
        ev.add(gt, pred)
        res = ev.result()
        folder = tmp_path / f"crowds{len(gt.segments)}"
        pair = (write_coco_panoptic(folder / "gt", 1, gt), write_coco_panoptic(folder / "pred", 1, pred))
        pa, stat = panopticapi_pq([pair], folder / "gt", folder / "pred", cats)
        assert by_id(res)[PERSON.id]["fp"] == isus_fp
        assert stat.pq_per_cat[PERSON.id].fp == api_fp
        assert (by_id(res)[ROAD.id]["tp"], stat.pq_per_cat[ROAD.id].tp) == (1, 1)
    assert math.isnan(by_id(res)[PERSON.id]["pq"]) and res.pq == pytest.approx(11 / 12)


# ============================================================================================
# PC, PQ†, mIoU (and PQ) against the loop references on random maps
# ============================================================================================

CAT_IDS = [c.id for c in CATS]


@st.composite
def image_pairs(draw):
    """A ground truth with random segments, categories and crowd flags, and a prediction that
    relabels it, repaints part of it at random and draws its own categories."""
    h, w = draw(st.integers(1, 8)), draw(st.integers(1, 8))
    n_g = draw(st.integers(0, 5))
    g_ids = draw(st.lists(_ID, min_size=n_g, max_size=n_g, unique=True))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if draw(st.booleans()):  # scattered pixels
        g_idx = rng.integers(0, n_g + 1, size=(h, w))
    else:  # rectangles painted over a background of void or of one segment
        g_idx = np.full((h, w), rng.integers(0, n_g + 1))
        for k in range(1, n_g + 1):
            y0, x0 = rng.integers(0, h), rng.integers(0, w)
            g_idx[y0:rng.integers(y0 + 1, h + 1), x0:rng.integers(x0 + 1, w + 1)] = k
    gt_ids = np.array([0, *g_ids], dtype=np.int64)[g_idx]
    g_present = sorted(set(gt_ids.ravel().tolist()) - {0})
    g_cat = {s: draw(st.sampled_from(CAT_IDS)) for s in g_present}
    g_crowd = {s: draw(st.sampled_from([False, False, True])) for s in g_present}
    bijective = draw(st.booleans())
    n_p = n_g + draw(st.integers(0, 2)) if bijective else draw(st.integers(0, 6))
    p_ids = draw(st.lists(_ID, min_size=n_p, max_size=n_p, unique=True))
    if bijective:  # one predicted segment per ground-truth segment
        lut = np.array([0, *draw(st.permutations(range(1, n_p + 1)))[:n_g]])
    else:  # any: merges, segments on void
        lut = np.array(draw(st.lists(st.integers(0, n_p), min_size=n_g + 1, max_size=n_g + 1)))
    repaint = rng.random((h, w)) < draw(st.sampled_from([0.0, 0.0, 0.0, 0.1, 0.25, 1.0]))
    noise = rng.integers(0, n_p + 1, size=(h, w))
    pred_ids = np.array([0, *p_ids], dtype=np.int64)[np.where(repaint, noise, lut[g_idx])]
    p_present = sorted(set(pred_ids.ravel().tolist()) - {0})
    p_cat = {}
    for s in p_present:
        c = draw(st.sampled_from([None, None, None, *CAT_IDS]))  # None: the category of a segment it covers
        if c is None:
            src = gt_ids[(pred_ids == s) & (gt_ids != 0)]
            c = g_cat[int(src[0])] if len(src) else CAT_IDS[0]
        p_cat[s] = c
    gt = pan(gt_ids, [(s, g_cat[s], g_crowd[s]) for s in g_present])
    pred = pan(pred_ids, [(s, p_cat[s]) for s in p_present])
    return gt, pred


def _ref_evaluate(pairs, cats=CATS):
    r = ref.RefEvaluator(cats)
    for gt, pred in pairs:
        r.add(gt.ids, gt.segments, pred.ids, pred.segments)
    return r


@settings(max_examples=250)
@given(st.lists(image_pairs(), min_size=1, max_size=3))
def test_pc_pq_dagger_miou_pq_equal_the_references(pairs):
    ev = PanopticEvaluator(CATS)
    for k, (gt, pred) in enumerate(pairs):
        ev.add(gt, pred, image=f"random #{k}")
    res = ev.result()
    r = _ref_evaluate(pairs)
    for name, value in r.result().items():
        assert close(getattr(res, name), value), f"{name}: isus {getattr(res, name)}, reference {value}"
    per = by_id(res)
    for cid, v in r.per_class().items():
        got = per[cid]
        assert (got["tp"], got["fp"], got["fn"]) == (v["tp"], v["fp"], v["fn"])
        for m in ("pq", "sq", "rq", "iou", "pc"):
            assert close(got[m], v[m]), f"category {cid} {m}: isus {got[m]}, reference {v[m]}"


def test_worked_example():
    """A 4x5 image with a crowd region, void and one IoU of exactly 0.5.

    Ground truth (ids; 1, 2 person, 3 road, 4 person crowd, 0 void)::

        1 1 2 2 4
        1 1 2 2 4
        3 3 3 0 4
        3 3 3 0 4

    Prediction (5, 6, 8 person, 9 car, 7 and 10 road)::

        5 5 5 6 8
        5 5 6 6 8
        7 7 7 7 9
        10 10 10 10 9

    PQ. person: 1-5 IoU 4 / (4 + 5 - 4) = 0.8, 2-6 IoU 3 / (4 + 3 - 3) = 0.75, both matches; 8 lies
    wholly on the person crowd and is ignored: TP 2, PQ = SQ = 1.55 / 2 = 0.775, RQ 1. car: 9 lies
    on crowd of another category: FP 1, PQ = SQ = RQ = 0. road: 3-7 IoU 3 / (6 + 4 - 3 - 1) = 0.5
    (the void pixel leaves the union) and likewise 3-10: not > 0.5, so FN 1, FP 2, PQ 0.
    PQ = (0.775 + 0 + 0) / 3 = 0.258333, PQ_th = 0.3875, PQ_st = 0; RQ = 1/3.

    mIoU (void ignored, crowd counts as person): person 10 / (12 + 10 - 10) = 5/6, car 0 / 2 = 0,
    road 6 / 6 = 1; mIoU = (5/6 + 0 + 1) / 3 = 0.611111.

    PQ† = (PQ_person + PQ_car + IoU_road) / 3 = (0.775 + 0 + 1) / 3 = 0.591667.

    PC (void and crowd left out of every predicted region): person: segment 1 is best covered by
    5 (IoU 0.8), segment 2 by 6 (0.75; 5 gives 1/8): (4 * 0.8 + 4 * 0.75) / 8 = 0.775. road:
    7 and 10 are 3 pixels each off void, IoU 3 / 6 = 0.5: PC_road = 0.5. car has no ground truth.
    PC = (0.775 + 0.5) / 2 = 0.6375, PC_th = 0.775, PC_st = 0.5.
    """
    gt = pan([[1, 1, 2, 2, 4],
              [1, 1, 2, 2, 4],
              [3, 3, 3, 0, 4],
              [3, 3, 3, 0, 4]], [(1, PERSON.id), (2, PERSON.id), (3, ROAD.id), (4, PERSON.id, True)])
    pred = pan([[5, 5, 5, 6, 8],
                [5, 5, 6, 6, 8],
                [7, 7, 7, 7, 9],
                [10, 10, 10, 10, 9]], [(5, PERSON.id), (6, PERSON.id), (7, ROAD.id), (8, PERSON.id), (9, CAR.id),
                                       (10, ROAD.id)])
    cats = (PERSON, CAR, ROAD)
    ev = PanopticEvaluator(cats)
    ev.add(gt, pred)
    res = ev.result()
    expected = {"pq": 0.775 / 3, "sq": 0.775 / 3, "rq": 1 / 3, "pq_th": 0.3875, "sq_th": 0.3875, "rq_th": 0.5,
                "pq_st": 0.0, "sq_st": 0.0, "rq_st": 0.0,
                "miou": (5 / 6 + 1) / 3, "pq_dagger": 1.775 / 3, "pq_dagger_th": 0.3875, "pq_dagger_st": 1.0,
                "pc": 0.6375, "pc_th": 0.775, "pc_st": 0.5}
    for name, value in expected.items():
        assert getattr(res, name) == pytest.approx(value, abs=1e-12), name
    per = res.per_class
    assert {k: (v["tp"], v["fp"], v["fn"]) for k, v in per.items()} == \
        {"person": (2, 0, 0), "car": (0, 1, 0), "road": (0, 2, 1)}
    assert per["person"]["iou"] == pytest.approx(5 / 6) and per["car"]["iou"] == 0.0 and per["road"]["iou"] == 1.0
    assert math.isnan(per["car"]["pc"]) and per["road"]["pc"] == pytest.approx(0.5)
    for name, value in _ref_evaluate([(gt, pred)], cats).result().items():  # the references agree
        assert close(getattr(res, name), value), name


# ============================================================================================
# AP by size bucket
# ============================================================================================

def thing_instances(gt: isus.Panoptic, things: set[int]):
    """(segment row, area, mask) of the non-crowd thing segments."""
    out = []
    for s in gt.segments:
        if s["category_id"] in things and not s["iscrowd"]:
            m = gt.ids == s["id"]
            out.append((s, int(m.sum()), m))
    return out


def perfect_detections(gt: isus.Panoptic, things: set[int], keep=lambda area: True, masks=True,
                       scores=None) -> Detections:
    inst = [(s, a, m) for s, a, m in thing_instances(gt, things) if keep(a)]
    boxes = []
    for _, _, m in inst:
        ys, xs = np.nonzero(m)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    n = len(inst)
    return Detections(np.array(boxes, dtype=np.float64).reshape(n, 4),
                      np.ones(n) if scores is None else scores(n),
                      np.array([int(s["category_id"]) for s, _, _ in inst], dtype=np.int64),
                      np.array([m for _, _, m in inst], dtype=bool).reshape(n, *gt.ids.shape) if masks else None)


@pytest.fixture(scope="module")
def synth_gts(synth_coco):
    ds = synth_coco.ds
    return ds.categories, [ds.load_panoptic(i) for i in range(len(ds))]


def _evaluate_ap(cats, gts, keep=lambda area: True, masks=True, **kw) -> EvalResult:
    things = {c.id for c in cats if c.isthing}
    ev = PanopticEvaluator(cats, **kw)
    for gt in gts:
        ev.add(gt, gt, instances=perfect_detections(gt, things, keep, masks))
    return ev.result()


def test_perfect_detections_give_ap_one_in_every_bucket(synth_gts):
    cats, gts = synth_gts
    res = _evaluate_ap(cats, gts)
    things = {c.id for c in cats if c.isthing}
    areas = np.array([a for gt in gts for _, a, _ in thing_instances(gt, things)], dtype=np.float64)
    b = res.buckets
    assert b["percentiles"] == list(DEFAULT_PERCENTILES)
    np.testing.assert_array_equal(b["edges"], np.percentile(areas, DEFAULT_PERCENTILES))
    assert sum(b["instances"]) == len(areas) > 50
    e = b["edges"]
    expect = [int(((areas >= e[k]) & ((areas <= e[k + 1]) if k == len(e) - 2 else (areas < e[k + 1]))).sum())
              for k in range(len(e) - 1)]
    assert b["instances"] == expect and all(n > 0 for n in expect)
    assert res.ap_box == pytest.approx(1.0, abs=TOL) and res.ap_mask == pytest.approx(1.0, abs=TOL)
    for kind in ("box", "mask"):
        assert res.ap[kind]["ap50"] == pytest.approx(1.0, abs=TOL)
        for k, n in enumerate(b["instances"]):
            assert b[kind][k] == pytest.approx(1.0, abs=TOL), f"{kind} AP of bucket {k} ({n} instances)"
    for v in res.per_class.values():
        if v["isthing"] and (v["tp"] or v["fn"]):
            assert v["ap_box"] == pytest.approx(1.0, abs=TOL) and v["ap_mask"] == pytest.approx(1.0, abs=TOL)
        if not v["isthing"]:
            assert v["ap_box"] is None and v["ap_mask"] is None


def test_missing_the_largest_instances_lowers_only_the_top_bucket(synth_gts):
    cats, gts = synth_gts
    full = _evaluate_ap(cats, gts)
    top = full.buckets["edges"][-2]
    res = _evaluate_ap(cats, gts, keep=lambda area: area < top)
    assert res.buckets["edges"] == full.buckets["edges"] and res.buckets["instances"] == full.buckets["instances"]
    for kind in ("box", "mask"):
        assert res.buckets[kind][:-1] == full.buckets[kind][:-1]
        assert res.buckets[kind][-1] < full.buckets[kind][-1] - 0.5
    assert res.ap_box < full.ap_box and res.ap_mask < full.ap_mask


def test_fixed_edges_override_the_percentiles(synth_gts):
    cats, gts = synth_gts
    things = {c.id for c in cats if c.isthing}
    areas = np.array([a for gt in gts for _, a, _ in thing_instances(gt, things)])
    edges = [0.0, 100.0, 400.0, 1e9]
    res = _evaluate_ap(cats, gts, edges=edges)
    assert res.buckets["edges"] == edges and res.buckets["percentiles"] is None
    assert res.buckets["instances"] == [int(((areas >= lo) & (areas < hi)).sum()) for lo, hi in zip(edges, edges[1:])]
    assert sum(res.buckets["instances"]) == len(areas)
    for k, n in enumerate(res.buckets["instances"]):
        assert (res.buckets["mask"][k] == pytest.approx(1.0)) if n else math.isnan(res.buckets["mask"][k])


def test_boxes_only_give_no_mask_ap(synth_gts):
    cats, gts = synth_gts
    res = _evaluate_ap(cats, gts[:3], masks=False)
    assert res.ap_box == pytest.approx(1.0, abs=TOL)
    assert res.ap_mask is None and res.ap["mask"] is None and res.buckets["mask"] is None
    assert all(v["ap_mask"] is None for v in res.per_class.values())


# ============================================================================================
# bad input
# ============================================================================================

_GT = [[1, 1, 2], [1, 0, 2]]
_GT_SEGS = [(1, PERSON.id), (2, ROAD.id)]


def _raises(gt, pred, match, instances=None, image="frame_07.png"):
    ev = PanopticEvaluator(CATS)
    with pytest.raises(isus.IsusError, match=match) as e:
        ev.add(gt, pred, instances=instances, image=image)
    assert image in str(e.value)


def test_shapes_differ():
    _raises(pan(_GT, _GT_SEGS), pan([[1, 1], [1, 1]], [(1, PERSON.id)]), r"prediction is 2x2, ground truth is 3x2")


def test_predicted_id_not_listed():
    _raises(pan(_GT, _GT_SEGS), pan([[1, 1, 5], [1, 1, 5]], [(1, PERSON.id)]), r"predicted map .*\[5\]")


def test_unknown_category_in_prediction():
    _raises(pan(_GT, _GT_SEGS), pan(_GT, [(1, 42), (2, ROAD.id)]), r"unknown category id 42")


def test_unknown_category_in_detections():
    det = Detections(np.array([[0.0, 0.0, 2.0, 2.0]]), np.array([0.9]), np.array([42]))
    _raises(pan(_GT, _GT_SEGS), pan(_GT, _GT_SEGS), r"detection has unknown category id 42", instances=det)


def test_default_image_name_is_its_position():
    ev = PanopticEvaluator(CATS)
    ev.add(pan(_GT, _GT_SEGS), pan(_GT, _GT_SEGS))
    with pytest.raises(isus.IsusError, match=r"image #1: prediction is"):
        ev.add(pan(_GT, _GT_SEGS), pan([[0]]))


def test_instances_for_some_images_only():
    gt = pan(_GT, _GT_SEGS)
    det = perfect_detections(gt, {PERSON.id})
    ev = PanopticEvaluator(CATS)
    ev.add(gt, gt, instances=det)
    ev.add(gt, gt)
    ev.add(gt, gt, instances=det)
    with pytest.raises(isus.IsusError, match=r"for 2 of 3 images \(none for image #1\)"):
        ev.result()


# ============================================================================================
# serialisation and streaming
# ============================================================================================

@pytest.fixture(scope="module")
def ap_result(synth_gts) -> EvalResult:
    """A result with NaNs at every level: a category never seen, an empty bucket, an AP of a
    category without ground truth."""
    cats, gts = synth_gts
    extra = (isus.Category(90, "ghost", True, (1, 2, 3)), isus.Category(91, "nothing", False, (4, 5, 6)))
    things = {c.id for c in cats if c.isthing}
    ev = PanopticEvaluator(cats + extra, edges=[0.0, 1.0, 2.0, 1e9])
    for i, gt in enumerate(gts):
        pred = perturb("shift", gt, [c.id for c in cats], np.random.default_rng(i))
        ev.add(gt, pred, instances=perfect_detections(gt, things, keep=lambda a: a % 3 != 0))
    return ev.result()


def test_to_dict_from_dict_round_trip_through_json(ap_result):
    d = ap_result.to_dict()
    text = json.dumps(d, allow_nan=False)  # every NaN became None
    assert math.isnan(ap_result.buckets["mask"][0]) and math.isnan(ap_result.per_class["ghost"]["pq"])
    data = json.loads(text)
    back = EvalResult.from_dict(data)
    assert data == json.loads(text)  # the input is left as it was
    assert_same_tree(dataclasses.asdict(back), dataclasses.asdict(ap_result), tol=0.0)
    assert back.to_dict() == d
    with pytest.raises(isus.IsusError):
        EvalResult.from_dict([1, 2])
    with pytest.raises(isus.IsusError, match="lacks"):
        EvalResult.from_dict({"pq": 0.5})


def test_streaming_equals_merged_image_stats_in_another_order(synth_gts):
    cats, gts = synth_gts
    things = {c.id for c in cats if c.isthing}
    cat_ids = [c.id for c in cats]
    rng = np.random.default_rng(3)
    inputs = []
    for i, gt in enumerate(gts):
        pred = perturb(PERTURBATIONS[1 + i % (len(PERTURBATIONS) - 1)], gt, cat_ids, np.random.default_rng(i))
        det = perfect_detections(gt, things, keep=lambda a: a % 4 != 1, scores=lambda n: rng.random(n))
        inputs.append((gt, pred, det))
    ev = PanopticEvaluator(cats)
    for k, (gt, pred, det) in enumerate(inputs):
        ev.add(gt, pred, instances=det, image=f"#{k}")
    table = CategoryTable(tuple(cats))
    parts = [image_stats(gt, pred, table, instances=det, image=f"#{k}") for k, (gt, pred, det) in enumerate(inputs)]
    order = [5, 2, 7, 0, 3, 6, 1, 4]
    assert sorted(order) == list(range(len(parts)))
    merged = ImageStats.empty(len(cats))
    for k in order[:4]:
        merged.merge(parts[k])
    rest = ImageStats.empty(len(cats))
    for k in order[4:]:
        rest.merge(parts[k])
    merged.merge(rest)
    other = PanopticEvaluator(cats)
    other.add_stats(merged)
    a, b = ev.result(), other.result()
    assert a.images == b.images == len(gts)
    assert_same_tree(dataclasses.asdict(a), dataclasses.asdict(b), tol=1e-12)
    assert 0 < a.pq < 1 and 0 < a.ap_mask < 1
