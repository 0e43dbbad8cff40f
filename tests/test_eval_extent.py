"""Named area ranges and the box extent of matched detections (``EvalResult.ranges``,
``buckets["extent"]``): exact values on hand-built images, against a slow reference on random
images, serialisation and the ``isus eval --range`` option."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import isus
from isus.eval import Detections, EvalResult, PanopticEvaluator, box_extent, bucket_index, extent_summary
from isus.types import make_segments
from isus_cli.main import cli

CATS = [isus.Category(1, "person", True, (220, 20, 60)), isus.Category(3, "car", True, (0, 0, 142)),
        isus.Category(5, "bike", True, (119, 11, 32)), isus.Category(7, "road", False, (128, 64, 128))]
INF = float("inf")


def scene(h, w, rects):
    """A Panoptic of rectangles ``(segment_id, category_id, x0, y0, x1, y1[, iscrowd])``, later ones on top."""
    ids = np.zeros((h, w), np.int32)
    for r in rects:
        ids[r[3]:r[5], r[2]:r[4]] = r[0]
    rects = sorted(rects)
    return isus.Panoptic(ids, make_segments([r[0] for r in rects], [r[1] for r in rects],
                                            [bool(r[6]) if len(r) > 6 else False for r in rects]))


def dets(rows, size=None):
    """Detections from ``(category_id, x0, y0, x1, y1, score)`` rows (box masks when ``size``)."""
    boxes = np.array([r[1:5] for r in rows], float).reshape(-1, 4)
    masks = None
    if size is not None:
        masks = np.zeros((len(rows),) + size, bool)
        for m, b in zip(masks, boxes.astype(int)):
            m[b[1]:b[3], b[0]:b[2]] = True
    return Detections(boxes, np.array([r[5] for r in rows], float), np.array([r[0] for r in rows], np.int64), masks)


def hand_built(**kw) -> EvalResult:
    gt = scene(100, 200, [(1, 1, 10, 10, 50, 30),           # person 40x20, area 800
                          (2, 3, 100, 50, 180, 90),         # car 80x40, area 3200
                          (3, 3, 0, 60, 40, 100),           # car 40x40, area 1600: its detection misses
                          (4, 1, 120, 0, 160, 20, True)])   # person crowd
    det = dets([(1, 10, 10, 60, 30, 0.9),       # 50x20: width 1.25, height 1, IoU 800/1000
                (3, 110, 55, 170, 85, 0.8),     # 60x30 inside: 0.75, 0.75, IoU 1800/3200
                (3, 20, 80, 60, 100, 0.7),      # IoU 400/2000 = 0.2 with car 3: no match
                (1, 120, 0, 160, 20, 0.95)])    # exactly on the crowd: ignored
    ev = PanopticEvaluator(CATS, **kw)
    ev.add(gt, gt, det, image="img-a")
    return ev.result()


def test_exact_ratios_iou_buckets_and_ranges():
    res = hand_built(edges=[0, 1000, 10_000], ranges={"small": (0, 1000), "big": (1000, INF), "none": (5000, 6000)})
    b0, b1 = res.buckets["extent"]
    assert b0["matched"] == 1 and b1["matched"] == 1
    assert b0["width_ratio"]["median"] == pytest.approx(1.25) and b0["height_ratio"]["geomean"] == pytest.approx(1.0)
    assert b0["iou"]["mean"] == pytest.approx(0.8)
    for k in ("median", "q25", "q75", "geomean"):
        assert b1["width_ratio"][k] == pytest.approx(0.75) and b1["height_ratio"][k] == pytest.approx(0.75)
    assert b1["iou"]["median"] == pytest.approx(0.5625)
    big = res.ranges["big"]
    assert big["area"] == [1000.0, None] and big["instances"] == 2  # the missed car counts as GT, not as a match
    assert big["extent"]["matched"] == 1
    assert big["matches"] == [["img-a", 2, pytest.approx(0.75), pytest.approx(0.75), pytest.approx(0.5625)]]
    assert res.ranges["small"]["matches"] == [["img-a", 1, pytest.approx(1.25), pytest.approx(1.0), pytest.approx(0.8)]]
    assert res.ranges["small"]["instances"] == 1  # the crowd is not an instance
    none = res.ranges["none"]
    assert none["instances"] == 0 and none["extent"]["matched"] == 0 and math.isnan(none["extent"]["iou"]["median"])
    assert math.isnan(none["box"]["ap"]) and none["mask"] is None and none["matches"] == []
    # one of two cars found at IoU 0.5: AP50 of big 0.5; the small person is found perfectly at IoU 0.5
    assert big["box"]["ap50"] == pytest.approx(0.5, abs=0.01) and res.ranges["small"]["box"]["ap50"] == pytest.approx(1.0)
    assert "ranges" not in res.ap["box"]


def test_pure_functions():
    w, h, o = box_extent(np.array([[0, 0, 10, 20]]), np.array([[5, 0, 25, 10]]))
    assert (w[0], h[0]) == (2.0, 0.5) and o[0] == pytest.approx(50 / (200 + 200 - 50))
    s = extent_summary([1.0, 2.0, 4.0, 8.0], [1, 1, 1, 1], [0.5, 0.6, 0.7, 0.8])
    assert s["width_ratio"]["geomean"] == pytest.approx(8 ** 0.5) and s["width_ratio"]["median"] == 3.0
    assert s["width_ratio"]["q25"] == 1.75 and s["iou"]["mean"] == pytest.approx(0.65)
    assert bucket_index([0, 5, 10, 11, -1], [0, 5, 10]).tolist() == [0, 1, 1, -1, -1]
    assert bucket_index([3], [np.nan, np.nan]).tolist() == [-1]
    with pytest.raises(ValueError, match="positive width"):
        box_extent(np.array([[0, 0, 0, 5]]), np.array([[0, 0, 1, 1]]))


@pytest.mark.parametrize("bad", [{"x": (-1, 5)}, {"x": (5, 5)}, {"x": (0, float("nan"))}, {"": (0, 1)},
                                 {"x": (1, 2, 3)}, {"x": (INF, INF)}])
def test_bad_ranges_are_value_errors(bad):
    with pytest.raises(ValueError, match=r"PanopticEvaluator\(ranges=\)"):
        PanopticEvaluator(CATS, ranges=bad)


def _random_images(seed: int, n: int):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        rects, rows = [], []
        for k, cat in enumerate((1, 3, 5)):  # one object of each category in its own strip of rows
            w, h = int(rng.integers(2, 150)), int(rng.integers(2, 40))
            x0, y0 = int(rng.integers(0, 150 - w + 1)), 40 * k + int(rng.integers(0, 40 - h + 1))
            rects.append((k + 1, cat, x0, y0, x0 + w, y0 + h))
            sx, sy = rng.uniform(0.5, 1.6, 2)
            cx, cy = x0 + w * rng.uniform(0.3, 0.7), y0 + h * rng.uniform(0.3, 0.7)
            rows.append((cat, cx - sx * w / 2, cy - sy * h / 2, cx + sx * w / 2, cy + sy * h / 2, rng.uniform(0.1, 1)))
        out.append((f"r{i}", scene(120, 150, rects), dets(rows)))
    return out


def _ref_pct(v, q):
    v = sorted(v)
    pos = (len(v) - 1) * q
    lo = math.floor(pos)
    return v[lo] + (v[min(lo + 1, len(v) - 1)] - v[lo]) * (pos - lo)


def _ref_summary(recs):
    if not recs:
        return None
    out = {"matched": len(recs)}
    for j, key in ((0, "width_ratio"), (1, "height_ratio"), (2, "iou")):
        v = [r[j] for r in recs]
        out[key] = {"median": _ref_pct(v, 0.5), "q25": _ref_pct(v, 0.25), "q75": _ref_pct(v, 0.75)}
        if key == "iou":
            out[key]["mean"] = sum(v) / len(v)
        else:
            out[key]["geomean"] = math.exp(sum(math.log(x) for x in v) / len(v))
    return out


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31), st.integers(1, 4))
def test_extent_against_a_slow_reference(seed, n):
    """One GT and one detection per category and image: the detection matches iff box IoU >= 0.5."""
    images = _random_images(seed, n)
    edges = [0.0, 300.0, 1500.0, 6000.0]
    ev = PanopticEvaluator(CATS, edges=edges, ranges={"all": (0, INF), "mid": (300, 3000)})
    per_bucket, mid, every = [[], [], []], [], []
    for name, gt, det in images:
        ev.add(gt, gt, det, image=name)
        for s in gt.segments:
            m = gt.ids == s["id"]
            ys, xs = np.nonzero(m)
            g = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            p = det.boxes[list(det.labels).index(s["category_id"])]
            iw = max(0.0, min(g[2], p[2]) - max(g[0], p[0]))
            ih = max(0.0, min(g[3], p[3]) - max(g[1], p[1]))
            union = (g[2] - g[0]) * (g[3] - g[1]) + (p[2] - p[0]) * (p[3] - p[1]) - iw * ih
            iou = iw * ih / union
            assume(abs(iou - 0.5) > 1e-9)
            if iou < 0.5:
                continue
            rec = ((p[2] - p[0]) / (g[2] - g[0]), (p[3] - p[1]) / (g[3] - g[1]), iou)
            area = int(m.sum())
            k = next((k for k in range(3) if edges[k] <= area < edges[k + 1] or (k == 2 and area == edges[3])), None)
            if k is not None:
                per_bucket[k].append(rec)
            if 300 <= area < 3000:
                mid.append(rec)
            every.append((name, int(s["id"])) + rec)
    res = ev.result()
    for got, recs in [*zip(res.buckets["extent"], per_bucket), (res.ranges["mid"]["extent"], mid)]:
        want = _ref_summary(recs)
        if want is None:
            assert got["matched"] == 0 and math.isnan(got["width_ratio"]["median"])
        else:
            assert got["matched"] == want["matched"]
            for key in ("width_ratio", "height_ratio", "iou"):
                assert got[key] == pytest.approx(want[key], rel=1e-9), key
    got = res.ranges["all"]["matches"]
    assert [m[:2] for m in got] == [list(r[:2]) for r in sorted(every)]
    assert np.allclose([m[2:] for m in got], [r[2:] for r in sorted(every)], rtol=1e-9, atol=0)


def test_range_ap_equals_the_ap_of_a_bucket_with_the_same_edges():
    images = _random_images(7, 6)
    size = (120, 150)
    lo, hi = 300.0, 2500.5  # no area (an integer) lies on hi, where [lo, hi) and the last bucket's [lo, hi] differ
    a = PanopticEvaluator(CATS, ranges={"r": (lo, hi)})
    b = PanopticEvaluator(CATS, edges=[lo, hi])
    for name, gt, det in images:
        det = Detections(det.boxes, det.scores, det.labels, dets([(c, *bx, 1) for c, bx in zip(det.labels, det.boxes.astype(int))], size).masks)
        a.add(gt, gt, det, image=name)
        b.add(gt, gt, det, image=name)
    ra, rb = a.result(), b.result()
    r = ra.ranges["r"]
    assert r["instances"] == rb.buckets["instances"][0] > 0
    assert r["box"]["ap"] == rb.buckets["box"][0] and r["mask"]["ap"] == rb.buckets["mask"][0]
    assert 0 < r["box"]["ap"] < 1
    assert r["extent"] == rb.buckets["extent"][0]


def test_json_round_trip_and_old_files():
    res = hand_built(edges=[0, 1000, 10_000], ranges={"big": (1000, INF), "none": (5000, 6000)})
    d = res.to_dict()
    text = json.dumps(d, allow_nan=False)
    back = EvalResult.from_dict(json.loads(text))
    assert back.to_dict() == d
    assert math.isnan(back.ranges["none"]["extent"]["iou"]["median"]) and math.isnan(back.ranges["none"]["box"]["ap"])
    assert back.ranges["big"]["area"] == [1000.0, None]
    old = json.loads(text)
    del old["ranges"], old["buckets"]["extent"]
    assert EvalResult.from_dict(old).ranges == {}


def test_cli_range_option(tmp_path):
    from isus_cli.eval import parse_ranges

    assert parse_ranges(None, None, ("large=16384:inf", "mid=0:1e3")) == {"large": (16384.0, INF), "mid": (0.0, 1000.0)}
    (tmp_path / "e.json").write_text("{}")
    for bad in ("large", "large=5", "=1:2", "x=a:b", "x=5:1", "x=-1:2"):
        res = CliRunner().invoke(cli, ["eval", "--range", bad, "--compare", str(tmp_path / "e.json"),
                                       "--out", str(tmp_path / "o")])
        assert res.exit_code == 2 and "--range" in res.output, (bad, res.output)


def test_cli_prints_and_records_the_ranges(tmp_path):
    from tests.test_eval_cli import _write_predictions

    root = isus.synth.write_dataset(tmp_path / "mvd", "mvd", 2, size=(160, 120), seed=3)
    ds = isus.open_dataset("mvd", root)
    _, inst = _write_predictions(ds, tmp_path / "p", shift=1)
    res = CliRunner().invoke(cli, ["eval", "--dataset", "mvd", "--root", str(root), "--predictions", str(tmp_path / "p"),
                                   "--instances", str(inst), "--out", str(tmp_path / "ev"), "--workers", "1",
                                   "--range", "big=1000:inf", "--range", "small=0:1000"])
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert list(data["ranges"]) == ["big", "small"] and data["ranges"]["big"]["area"] == [1000.0, None]
    assert data["ranges"]["big"]["extent"]["matched"] > 0
    assert "big area [1k, inf) px²" in res.output and "w ratio" in res.output
