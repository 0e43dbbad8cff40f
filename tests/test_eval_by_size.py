"""PQ, SQ, RQ and PC by object size (issue 26, part 1): bucketed counts add up to the overall ones,
agree with a loop reference, and with panopticapi run on one bucket's segments; the worked example
of docs/evaluation.md; edges through eval.json, ``isus eval --size-edges`` and ``--compare``."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

import isus
from isus.eval import EvalResult, EvalResultError, PanopticEvaluator
from isus.eval.stats import size_bucket
from isus_cli.main import cli
from tests import eval_reference as ref
from tests.test_eval import (CAR, CATS, PERSON, PERTURBATIONS, ROAD, CocoSet, assert_at_most_one_crowd_per_category,
                             close, image_pairs, pan, panopticapi_pq, perturb, write_coco_panoptic)
from tests.conftest import realdata
from tests.test_eval_cli import _write_predictions

METRICS = ("pq", "sq", "rq", "pc")
SUFFIXES = ("", "_th", "_st")


# ============================================================================================
# the buckets add up, and equal a loop reference
# ============================================================================================

@st.composite
def user_edges(draw):
    """None (percentiles of the GT thing areas) or 2-5 increasing areas within and around the
    0..64 px of the random maps, so that segments fall below the first and above the last edge."""
    if draw(st.booleans()):
        return None
    vals = draw(st.lists(st.integers(0, 70), min_size=2, max_size=5, unique=True))
    return [float(v) for v in sorted(vals)]


@settings(max_examples=200, deadline=None)
@given(st.lists(image_pairs(), min_size=1, max_size=3), user_edges())
def test_bucketed_counts_add_up_and_equal_the_reference(pairs, edges):
    ev = PanopticEvaluator(CATS, edges=edges)
    for k, (gt, pred) in enumerate(pairs):
        ev.add(gt, pred, image=f"random #{k}")
    res = ev.result()
    b = res.by_size
    things = {c.id for c in CATS if c.isthing}
    gt_things = [s for gt, _ in pairs for s in gt.segments
                 if s["category_id"] in things and not s["iscrowd"] and (gt.ids == s["id"]).any()]
    if edges is None and not gt_things:  # nothing to take percentiles of: no buckets
        assert b == {} and ev.size_sums() is None
        return
    assert b["edges"] == (edges if edges is not None else
                          np.percentile([(gt.ids == s["id"]).sum() for gt, _ in pairs for s in gt.segments
                                         if s["category_id"] in things and not s["iscrowd"] and
                                         (gt.ids == s["id"]).any()], [0, 25, 50, 75, 95, 100]).tolist())
    assert b["percentiles"] == (None if edges is not None else [0.0, 25.0, 50.0, 75.0, 95.0, 100.0])
    nb = len(b["edges"]) - 1
    # every TP, FP, FN and ground-truth segment is in exactly one bucket
    z = ev.size_sums()
    per = {v["id"]: v for v in res.per_class.values()}
    for j, c in enumerate(CATS):
        for k in ("tp", "fp", "fn"):
            assert int(getattr(z, k)[:, j].sum()) == per[c.id][k], f"{c.name} {k}"
    for k in ("tp", "fp", "fn"):
        assert sum(b[k]) == sum(v[k] for v in per.values())
        assert sum(b[k + "_th"]) == sum(v[k] for v in per.values() if v["isthing"])
        assert len(b[k]) == nb
    assert np.allclose(z.iou.sum(axis=0), ev.stats.iou, rtol=0, atol=1e-12)
    assert (z.pc_den.sum(axis=0) == ev.stats.pc_den).all()
    assert np.allclose(z.pc_num.sum(axis=0), ev.stats.pc_num, rtol=0, atol=1e-9)
    n_real = sum(1 for gt, _ in pairs for s in gt.segments if not s["iscrowd"] and (gt.ids == s["id"]).any())
    assert sum(b["segments"]) == n_real and sum(b["segments_th"]) == len(gt_things)
    # the loop reference, bucket by bucket
    r = ref.RefSizeEvaluator(CATS, b["edges"])
    for gt, pred in pairs:
        r.add(gt.ids, gt.segments, pred.ids, pred.segments)
    for k, rb in enumerate(r.buckets):
        for j, (cid, v) in enumerate(rb.per_class().items()):
            assert (z.tp[k, j], z.fp[k, j], z.fn[k, j]) == (v["tp"], v["fp"], v["fn"]), f"bucket {k} category {cid}"
        want = rb.result()
        for m in METRICS:
            for s in SUFFIXES:
                assert close(b[m + s][k], want[m + s]), f"bucket {k} {m}{s}: isus {b[m + s][k]}, reference {want[m + s]}"


def test_size_bucket_is_the_ap_bucket_within_the_edges_and_open_outside():
    edges = np.array([4.0, 10.0, 10.0, 50.0])
    areas = np.array([0, 3, 4, 9, 10, 49, 50, 51, 1e9])
    assert size_bucket(areas, edges).tolist() == [0, 0, 0, 0, 2, 2, 2, 2, 2]
    inside = (areas >= edges[0]) & (areas <= edges[-1])
    assert (size_bucket(areas, edges)[inside] == isus.eval.bucket_index(areas, edges)[inside]).all()
    assert [ref.size_bucket(a, edges) for a in areas] == size_bucket(areas, edges).tolist()
    with pytest.raises(ValueError, match="finite"):
        size_bucket(areas, np.array([0.0, np.nan]))


# ============================================================================================
# panopticapi on one bucket's segments
# ============================================================================================

DUMMY = 10 ** 6  # a category id that no evaluated category has


@pytest.fixture(scope="module")
def coco(synth_root) -> CocoSet:
    """The synthetic COCO panoptic set (as tests/test_eval.py's synth_coco)."""
    root = synth_root("coco")
    ann = root / "annotations" / "panoptic_train2017.json"
    return CocoSet(isus.open_dataset("coco", root), ann.with_suffix(""), json.loads(ann.read_text()))


def _areas(p: isus.Panoptic) -> dict[int, int]:
    ids, counts = np.unique(p.ids, return_counts=True)
    return {int(i): int(c) for i, c in zip(ids, counts) if i}


def _matches(gt: isus.Panoptic, pred: isus.Panoptic) -> dict[int, int]:
    """predicted segment id -> ground-truth segment id of its PQ match (panopticapi's rule)."""
    ga, pa = _areas(gt), _areas(pred)
    gcat = {int(s["id"]): (int(s["category_id"]), bool(s["iscrowd"])) for s in gt.segments}
    pcat = {int(s["id"]): int(s["category_id"]) for s in pred.segments}
    key = gt.ids.astype(np.int64) * (1 << 32) + pred.ids.astype(np.int64)
    u, n = np.unique(key, return_counts=True)
    inter = {(int(k >> 32), int(k & 0xFFFFFFFF)): int(c) for k, c in zip(u, n)}
    out = {}
    for (g, p), i in inter.items():
        if g and p and not gcat[g][1] and gcat[g][0] == pcat[p]:
            if i / (ga[g] + pa[p] - i - inter.get((0, p), 0)) > 0.5:
                out[p] = g
    return out


def _bucket_pair(gt_ann: dict, gt: isus.Panoptic, pred: isus.Panoptic, edges, k: int):
    """The ground truth's annotation and the prediction reduced to bucket ``k``'s segments.

    Ground truth: the pixels stay; every non-crowd segment of another bucket becomes category
    DUMMY (not evaluated: its FNs land in a category panopticapi does not average; it matches no
    prediction; its pixels stay non-void, so no union and no void share changes). Crowd segments
    stay. Prediction: the segments matched to a ground-truth segment of another bucket, and the
    unmatched ones whose own area lies in another bucket, become void (removing a predicted
    segment changes nothing for the others: a pair's IoU uses only the pair and the GT void)."""
    ga, pa = _areas(gt), _areas(pred)
    match = _matches(gt, pred)
    info = []
    for s in gt_ann["segments_info"]:
        keep = s["iscrowd"] or ref.size_bucket(ga.get(s["id"], 0), edges) == k
        info.append({**s, "category_id": s["category_id"] if keep else DUMMY})
    drop = [int(s["id"]) for s in pred.segments
            if (ref.size_bucket(ga[match[int(s["id"])]], edges) if int(s["id"]) in match
                else ref.size_bucket(pa.get(int(s["id"]), 0), edges)) != k]
    seg = pred.segments[~np.isin(pred.segments["id"], drop)]
    ids = np.where(np.isin(pred.ids, drop), 0, pred.ids).astype(np.int32)
    return {**gt_ann, "segments_info": info}, isus.Panoptic(ids, seg)


@pytest.fixture(scope="module")
def real() -> CocoSet:
    """panopticapi's real COCO samples (as tests/test_eval.py's real_coco; skipped when absent)."""
    root = realdata("coco_panoptic", "panopticapi", "sample_data")
    ds = isus.open_dataset("coco", root, annotations="panoptic_examples.json", panoptic_dir="panoptic_examples",
                           images_dir="input_images")
    return CocoSet(ds, root / "panoptic_examples", json.loads((root / "panoptic_examples.json").read_text()))


@pytest.mark.parametrize("data", ["coco", "real"])
@pytest.mark.parametrize("kind", ["erode", "dilate", "shift", "merge", "split", "hallucinate", "on_void", "on_crowd"])
def test_pq_per_bucket_equals_panopticapi_on_the_bucket_segments(data, kind, request, tmp_path):
    """Per-bucket PQ, SQ, RQ (all / things / stuff) and per-category TP/FP/FN equal panopticapi's
    ``pq_compute`` run on each bucket's segments only, where that is the same question.

    It is, with this reduction (``_bucket_pair``): the ground-truth segments of other buckets are
    kept in the map but given a category nobody predicts or averages, and the predicted segments
    that count elsewhere (matched to another bucket's ground truth, or unmatched with their own
    area in another bucket) are removed. Then every IoU, void share and crowd share of the segments
    that remain is unchanged, and panopticapi's category means over the categories present are
    the bucket's means.

    It is NOT the same as naively keeping the segments whose own area lies in the bucket, with
    the ground truth's other segments turned void: (1) a TP whose predicted segment is larger or
    smaller than the bucket (its GT is in it) would become an FN plus an FP; (2) void ground
    truth leaves the union and counts towards the "mostly on void" rule, so IoUs and ignored
    predictions change (``test_naive_filtering_is_not_equivalent`` shows (1)). Where isus and
    panopticapi differ overall (several crowd segments of one category in an image) they differ
    here too; the synthetic COCO set has at most one, as the assertion checks.
    """
    cs = request.getfixturevalue(data)  # synthetic COCO, or the real samples (skipped when absent)
    ds = cs.ds
    cat_ids = [c.id for c in ds.categories]
    gt_anns = {a["image_id"]: a for a in cs.gt_json["annotations"]}
    ev = PanopticEvaluator(ds.categories)
    images = []
    for i in range(len(ds)):
        info = ds.image_info(i)
        gt = ds.load_panoptic(i)
        assert_at_most_one_crowd_per_category(gt, info.file_name)
        pred = perturb(kind, gt, cat_ids, np.random.default_rng([i, PERTURBATIONS.index(kind)]))
        ev.add(gt, pred, image=info.file_name)
        images.append((info.image_id, gt, pred))
    res = ev.result()
    b, z = res.by_size, ev.size_sums()
    edges = b["edges"]
    position = {c.id: j for j, c in enumerate(ds.categories)}
    counted = 0
    for k in range(len(edges) - 1):
        pairs = []
        for image_id, gt, pred in images:
            gt_ann, reduced = _bucket_pair(gt_anns[image_id], gt, pred, edges, k)
            pairs.append((gt_ann, write_coco_panoptic(tmp_path / f"b{k}", image_id, reduced)))
        pa, stat = panopticapi_pq(pairs, cs.gt_folder, tmp_path / f"b{k}", cs.gt_json["categories"])
        for name, suffix in (("All", ""), ("Things", "_th"), ("Stuff", "_st")):
            for m in ("pq", "sq", "rq"):
                assert close(b[m + suffix][k], pa[name][m]), \
                    f"bucket {k} {m}{suffix}: isus {b[m + suffix][k]}, panopticapi {pa[name][m]}"
        for c in cs.gt_json["categories"]:
            s, j = stat.pq_per_cat[c["id"]], position[c["id"]]
            assert (z.tp[k, j], z.fp[k, j], z.fn[k, j]) == (s.tp, s.fp, s.fn), f"bucket {k} {c['name']}"
            counted += s.tp + s.fp + s.fn
    assert counted == sum(b["tp"]) + sum(b["fp"]) + sum(b["fn"]) > 0  # not vacuous
    if kind in ("erode", "dilate", "split"):  # and TPs whose prediction's own area is in another bucket occur
        cross = sum(ref.size_bucket(_areas(gt)[g], edges) != ref.size_bucket(_areas(pred)[p], edges)
                    for _, gt, pred in images for p, g in _matches(gt, pred).items())
        assert cross > 0


def test_naive_filtering_is_not_equivalent(tmp_path):
    """The docs' worked example, bucket [3, 5): isus counts person 1-5 as a TP there (the GT's
    area, 4, is in it); keeping only the segments whose own area is in the bucket drops
    prediction 5 (area 5), and panopticapi then sees an FN: a different PQ."""
    gt, pred = worked_example()
    ev = PanopticEvaluator((PERSON, CAR, ROAD), edges=[0, 3, 5, 100])
    ev.add(gt, pred)
    ours = ev.result().by_size["pq_th"][1]
    cats = [{"id": c.id, "name": c.name, "isthing": int(c.isthing)} for c in (PERSON, CAR, ROAD)]
    keep_g = [s for s in gt.segments if s["iscrowd"] or 3 <= (gt.ids == s["id"]).sum() < 5]
    keep_p = [s for s in pred.segments if 3 <= (pred.ids == s["id"]).sum() < 5]
    g_ids = np.where(np.isin(gt.ids, [s["id"] for s in keep_g]), gt.ids, 0)
    p_ids = np.where(np.isin(pred.ids, [s["id"] for s in keep_p]), pred.ids, 0)
    naive_gt = pan(g_ids, [(s["id"], s["category_id"], s["iscrowd"]) for s in keep_g])
    naive_pred = pan(p_ids, [(s["id"], s["category_id"]) for s in keep_p])
    pairs = [(write_coco_panoptic(tmp_path / "gt", 1, naive_gt), write_coco_panoptic(tmp_path / "pred", 1, naive_pred))]
    pa, _ = panopticapi_pq(pairs, tmp_path / "gt", tmp_path / "pred", cats)
    assert ours == pytest.approx(0.775) and pa["Things"]["pq"] == pytest.approx(0.75 / 1.5)  # person: TP 2-6, FN 1


# ============================================================================================
# the worked example of docs/evaluation.md
# ============================================================================================

def worked_example():
    gt = pan([[1, 1, 2, 2, 4],
              [1, 1, 2, 2, 4],
              [3, 3, 3, 0, 4],
              [3, 3, 3, 0, 4]], [(1, PERSON.id), (2, PERSON.id), (3, ROAD.id), (4, PERSON.id, True)])
    pred = pan([[5, 5, 5, 6, 8],
                [5, 5, 6, 6, 8],
                [7, 7, 7, 7, 9],
                [10, 10, 10, 10, 9]], [(5, PERSON.id), (6, PERSON.id), (7, ROAD.id), (8, PERSON.id), (9, CAR.id),
                                       (10, ROAD.id)])
    return gt, pred


def test_worked_example_by_size():
    """docs/evaluation.md, "PQ, SQ, RQ and PC by size", with edges 0, 3, 5, 100 (buckets [0, 3),
    [3, 5), [5, 100]):

    - persons 1 (4 px) and 2 (4 px) are in bucket 2. Prediction 5 (5 px, bucket 3 by its own
      area) matches 1 with IoU 0.8: a TP of bucket 2, the GT's. 6 (3 px) matches 2, IoU 0.75.
    - car 9 (2 px), unmatched, not mostly on crowd of its category: an FP of bucket 1, its own.
    - road 3 (6 px): unmatched, an FN of bucket 3; roads 7 and 10 (4 px each, one on void):
      FPs of bucket 2. 8 lies on the person crowd: ignored, in no bucket.

    bucket 1: car FP: PQ = PQ_th = 0, no stuff (null), no GT (PC null).
    bucket 2: person PQ = SQ = 1.55 / 2 = 0.775, RQ 1; road TP 0 FP 2: PQ 0. PQ = 0.3875,
    SQ = 0.3875, RQ = 0.5, PQ_th = 0.775, PQ_st = 0; PC = PC_th = (4 * 0.8 + 4 * 0.75) / 8 = 0.775.
    bucket 3: road FN: PQ = PQ_st = 0, no thing; PC = PC_st = 0.5 (7 and 10 cover 3 of its 6 px).
    TP 0 + 2 + 0 = 2, FP 1 + 2 + 0 = 3, FN 0 + 0 + 1 = 1: the overall counts.
    """
    gt, pred = worked_example()
    ev = PanopticEvaluator((PERSON, CAR, ROAD), edges=[0, 3, 5, 100])
    ev.add(gt, pred)
    b = ev.result().to_dict()["by_size"]
    assert b["edges"] == [0.0, 3.0, 5.0, 100.0] and b["percentiles"] is None
    assert (b["tp"], b["fp"], b["fn"], b["segments"]) == ([0, 2, 0], [1, 2, 0], [0, 0, 1], [0, 2, 1])
    assert (b["tp_th"], b["fp_th"], b["fn_th"], b["segments_th"]) == ([0, 2, 0], [1, 0, 0], [0, 0, 0], [0, 2, 0])
    expected = {"pq": [0.0, 0.3875, 0.0], "sq": [0.0, 0.3875, 0.0], "rq": [0.0, 0.5, 0.0],
                "pq_th": [0.0, 0.775, None], "sq_th": [0.0, 0.775, None], "rq_th": [0.0, 1.0, None],
                "pq_st": [None, 0.0, 0.0], "sq_st": [None, 0.0, 0.0], "rq_st": [None, 0.0, 0.0],
                "pc": [None, 0.775, 0.5], "pc_th": [None, 0.775, None], "pc_st": [None, None, 0.5]}
    for m, want in expected.items():
        for k, (got, w) in enumerate(zip(b[m], want)):
            assert (got is None) if w is None else got == pytest.approx(w, abs=1e-12), f"{m}[{k}]: {got} != {w}"
    # percentiles of the two persons' areas (4, 4): every edge 4, all in the last bucket but the car (2 px)
    ev = PanopticEvaluator((PERSON, CAR, ROAD))
    ev.add(gt, pred)
    b = ev.result().by_size
    assert b["edges"] == [4.0] * 6 and b["fp"] == [1, 0, 0, 0, 2] and b["tp"] == [0, 0, 0, 0, 2]


# ============================================================================================
# eval.json, the CLI, --compare
# ============================================================================================

@pytest.fixture(scope="module")
def mvd(tmp_path_factory):
    root = tmp_path_factory.mktemp("by_size_mvd") / "mvd"
    isus.synth.write_dataset(root, "mvd", 6, size=(256, 192), seed=3)
    return isus.open_dataset("mvd", root)


@pytest.fixture(scope="module")
def preds(mvd, tmp_path_factory):
    return _write_predictions(mvd, tmp_path_factory.mktemp("by_size_preds") / "p", shift=2)


def _eval(*args):
    return CliRunner().invoke(cli, ["eval", *map(str, args)])


def test_size_edges_round_trip_and_compare_refuses_other_edges(mvd, preds, tmp_path):
    pred, inst = preds
    base = ["--dataset", "mvd", "--root", mvd.root, "--predictions", pred, "--workers", "1"]
    res = _eval(*base, "--instances", inst, "--size-edges", "0,1024,9216,1e10", "--out", tmp_path / "a")
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "a" / "eval.json").read_text())
    b = data["by_size"]
    assert b["edges"] == [0, 1024, 9216, 1e10] == data["buckets"]["edges"]  # AP uses the same edges
    assert b["percentiles"] is None and data["buckets"]["percentiles"] is None
    assert sum(b["tp"]) == sum(v["tp"] for v in data["per_class"].values())
    # the table printed, in percent, with the counts
    assert "PQ by size" in res.output and "bucket 1 area [0, 1.02k) px²" in res.output
    assert f"{100 * b['pq'][0]:5.1f}" in res.output
    # eval.json -> EvalResult -> eval.json
    back = EvalResult.from_dict(data).to_dict()
    assert json.dumps(back, sort_keys=True) == json.dumps(data, sort_keys=True)
    # same edges by percentiles, without instances: buckets only in by_size; the plot has its PQ panel
    res = _eval(*base, "--out", tmp_path / "b")
    assert res.exit_code == 0, res.output
    other = json.loads((tmp_path / "b" / "eval.json").read_text())
    assert other["buckets"] == {} and other["by_size"]["percentiles"] == [0, 25, 50, 75, 95, 100]
    assert (tmp_path / "b" / "eval_by_size.png").stat().st_size > 10_000
    assert "p95-p100" in res.output and "AP by size: no scored instances" in res.output
    # --compare: other edges are refused, with the difference named; --allow-mismatch drops the by-size tables
    res = _eval("--compare", tmp_path / "a" / "eval.json", tmp_path / "b" / "eval.json", "--out", tmp_path / "c")
    assert res.exit_code == 1 and "bucket edges (PQ by size)" in res.output, res.output
    assert "1e+10" in res.output and "percentiles 0,25,50,75,95,100" in res.output
    res = _eval("--compare", tmp_path / "a" / "eval.json", tmp_path / "b" / "eval.json", "--out", tmp_path / "c",
                "--allow-mismatch")
    assert res.exit_code == 0 and "note: bucket edges" in res.output and "PC by size" not in res.output, res.output
    # same edges: tabulated side by side, one plot with AP and PQ panels only where every run has them
    res = _eval(*base, "--size-edges", "0,1024,9216,1e10", "--out", tmp_path / "d")
    assert res.exit_code == 0, res.output
    res = _eval("--compare", tmp_path / "a" / "eval.json", tmp_path / "d" / "eval.json", "--out", tmp_path / "e",
                "--labels", "with-inst,without")
    assert res.exit_code == 0, res.output
    assert "PQ by size" in res.output and "PC by size" in res.output and "no AP by size panels" in res.output
    assert (tmp_path / "e" / "compare_by_size.png").exists()
    # a by_size edit alone is caught too
    data["by_size"]["edges"][1] = 2048.0
    (tmp_path / "f.json").write_text(json.dumps(data))
    res = _eval("--compare", tmp_path / "d" / "eval.json", tmp_path / "f.json", "--out", tmp_path / "g")
    assert res.exit_code == 1 and "bucket edges (PQ by size)" in res.output, res.output


def test_size_edges_option_errors(mvd, preds, tmp_path):
    pred, _ = preds
    base = ["--dataset", "mvd", "--root", mvd.root, "--predictions", pred, "--out", tmp_path / "a"]
    for bad in ("0,abc", "5", "0,10,10", "10,5", "-1,5", "0,inf"):
        res = _eval(*base, "--size-edges", bad)
        assert res.exit_code == 2 and "--size-edges" in res.output, (bad, res.output)
    res = _eval(*base, "--size-edges", "0,100", "--percentiles", "0,50,100")
    assert res.exit_code == 2 and "pass one" in res.output
    (tmp_path / "x.json").write_text("{}")
    res = _eval("--compare", tmp_path / "x.json", "--size-edges", "0,100", "--out", tmp_path / "c")
    assert res.exit_code == 2 and "--size-edges cannot go with --compare" in res.output, res.output


@pytest.mark.parametrize("change,field", [
    (lambda b: b.update(pq=b["pq"][:-1]), "by_size.pq"),
    (lambda b: b["pc_th"].__setitem__(0, 1.5), "by_size.pc_th[0]"),
    (lambda b: b["tp"].__setitem__(1, -1), "by_size.tp[1]"),
    (lambda b: b["edges"].__setitem__(1, None), "by_size.edges[1]"),
    (lambda b: b.update(edges=[5.0, 4.0, 3.0]), "by_size.edges[1]"),
    (lambda b: b.update(percentiles=[0, 50]), "by_size.percentiles"),
])
def test_eval_json_by_size_values_are_checked(change, field):
    gt, pred = worked_example()
    ev = PanopticEvaluator((PERSON, CAR, ROAD), percentiles=(0, 50, 100))
    ev.add(gt, pred)
    d = ev.result().to_dict()
    EvalResult.from_dict(d)
    change(d["by_size"])
    with pytest.raises(EvalResultError, match=field.replace("[", r"\[").replace("]", r"\]")):
        EvalResult.from_dict(d, source="x/eval.json")


def test_older_eval_json_without_by_size_still_loads():
    gt, pred = worked_example()
    ev = PanopticEvaluator((PERSON, CAR, ROAD))
    ev.add(gt, pred)
    d = ev.result().to_dict()
    del d["by_size"]
    assert EvalResult.from_dict(d).by_size == {}


def test_plot_by_size_draws_pq_without_instances_and_checks_edges(tmp_path):
    from isus.eval.plots import format_by_size, format_compare, plot_by_size

    gt, pred = worked_example()
    ev = PanopticEvaluator((PERSON, CAR, ROAD), edges=[0, 3, 5, 100])
    ev.add(gt, pred)
    a = ev.result()
    assert a.buckets == {}
    assert plot_by_size([a], ["a"], tmp_path / "a.png").stat().st_size > 5_000
    text = format_by_size(a)
    assert "bucket 2 area [3, 5) px²" in text and " 38.8 " in text and "77.5" in text
    b = EvalResult.from_dict(a.to_dict())
    b.by_size["edges"] = [0.0, 3.0, 6.0, 100.0]
    for call in (lambda: format_compare([a, b], ["a", "b"]), lambda: plot_by_size([a, b], ["a", "b"], tmp_path / "b.png")):
        with pytest.raises(isus.IsusError, match="bucket edges"):
            call()
    assert math.isnan(EvalResult.from_dict(a.to_dict()).by_size["pq_st"][0])
