"""Slow, obvious reference implementations of the evaluation metrics and of the eval kernels,
written straight from their definitions (docs/evaluation.md) with Python loops over segments and
one boolean mask per segment. For tests only; deliberately independent of ``isus.eval``.

A map is an ``(H, W)`` array of segment ids (0 = void); its segments are given as an iterable of
``(id, category_id, iscrowd)`` rows (an isus segments structured array works as is).
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np


# --------------------------------------------------------------------------------------------
# kernel twins
# --------------------------------------------------------------------------------------------

def _dense_index(ids: np.ndarray, seg_ids) -> np.ndarray:
    """0 for id 0, k + 1 for ``seg_ids[k]``, ``len(seg_ids) + 1`` for any other id."""
    out = np.full(ids.shape, len(seg_ids) + 1, dtype=np.int64)
    out[ids == 0] = 0
    for k, s in enumerate(seg_ids):
        out[ids == s] = k + 1
    return out


def pair_counts(gt_ids, pred_ids, gt_seg_ids, pred_seg_ids) -> np.ndarray:
    """Twin of ``isus.kernels.pair_counts``: a bincount of the combined (gt, pred) positions."""
    g = _dense_index(np.asarray(gt_ids), list(gt_seg_ids))
    p = _dense_index(np.asarray(pred_ids), list(pred_seg_ids))
    rows, cols = len(gt_seg_ids) + 2, len(pred_seg_ids) + 2
    return np.bincount((g * cols + p).ravel(), minlength=rows * cols).reshape(rows, cols).astype(np.int64)


def mask_rle(dense: np.ndarray, k: int) -> dict:
    """Compressed COCO RLE of ``dense == k`` by pycocotools from the full mask."""
    from pycocotools import mask as mask_utils

    return mask_utils.encode(np.asfortranarray((np.asarray(dense) == k).astype(np.uint8)))


def mask_rle_counts(dense: np.ndarray, k: int) -> list[int]:
    """Uncompressed COCO RLE counts of ``dense == k``: column-major runs, zeros first."""
    flat = (np.asarray(dense) == k).T.ravel()
    counts, cur, run = [], False, 0
    for v in flat:
        if v == cur:
            run += 1
        else:
            counts.append(run)
            cur, run = v, 1
    counts.append(run)
    return counts


# --------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------

@dataclass
class Seg:
    id: int
    category: int
    crowd: bool
    mask: np.ndarray

    @property
    def area(self) -> int:
        return int(self.mask.sum())


def segments_of(ids: np.ndarray, segments) -> list[Seg]:
    return [Seg(int(s[0]), int(s[1]), bool(s[2]), np.asarray(ids) == int(s[0])) for s in segments]


def size_bucket(area: float, edges) -> int:
    """The PQ/PC size bucket of an area (docs/evaluation.md): k with ``edges[k] <= area <
    edges[k + 1]``, the first bucket also holding smaller areas and the last larger ones."""
    k = 0
    while k < len(edges) - 2 and area >= edges[k + 1]:
        k += 1
    return k


def pq_image(gt_ids, gt_segments, pred_ids, pred_segments, edges=None) -> dict:
    """``{category: [tp, fp, fn, iou_sum]}`` of one image, panopticapi's rules, except that an
    unmatched prediction is ignored when more than half of it lies on void or on crowd ground
    truth of its category, ALL crowd segments of that category counted.

    With ``edges``, keyed ``(size bucket, category)`` instead: a TP and an FN in the bucket of the
    ground-truth segment's area, an FP in that of the predicted segment's own area."""
    void = np.asarray(gt_ids) == 0
    gts, preds = segments_of(gt_ids, gt_segments), segments_of(pred_ids, pred_segments)
    out: dict = defaultdict(lambda: [0, 0, 0, 0.0])

    def key(s: Seg):
        return s.category if edges is None else (size_bucket(s.area, edges), s.category)

    g_matched, p_matched = set(), set()
    for g in gts:
        if g.crowd:
            continue
        for p in preds:
            if p.category != g.category:
                continue
            inter = int((g.mask & p.mask).sum())
            if inter == 0:
                continue
            union = g.area + p.area - inter - int((p.mask & void).sum())
            iou = inter / union
            if iou > 0.5:
                out[key(g)][0] += 1
                out[key(g)][3] += iou
                g_matched.add(g.id)
                p_matched.add(p.id)
    for g in gts:
        if not g.crowd and g.id not in g_matched and g.area > 0:
            out[key(g)][2] += 1
    for p in preds:
        if p.id in p_matched or p.area == 0:
            continue
        ignore = void.copy()
        for g in gts:
            if g.crowd and g.category == p.category:
                ignore |= g.mask
        if int((p.mask & ignore).sum()) / p.area > 0.5:
            continue
        out[key(p)][1] += 1
    return dict(out)


def semantic_image(gt_ids, gt_segments, pred_ids, pred_segments) -> dict[int, list]:
    """``{category: [both, gt, pred]}`` pixel counts of the semantic maps (crowd ground truth
    counts as its category; pixels on void ground truth are left out)."""
    gt_sem = np.full(np.shape(gt_ids), -1, dtype=np.int64)
    for g in segments_of(gt_ids, gt_segments):
        gt_sem[g.mask] = g.category
    pred_sem = np.full(np.shape(pred_ids), -1, dtype=np.int64)
    for p in segments_of(pred_ids, pred_segments):
        pred_sem[p.mask] = p.category
    valid = np.asarray(gt_ids) != 0
    out: dict[int, list] = {}
    for c in set(gt_sem[valid].tolist()) | set(pred_sem[valid].tolist()):
        if c == -1:
            continue
        g, p = (gt_sem == c) & valid, (pred_sem == c) & valid
        out[c] = [int((g & p).sum()), int(g.sum()), int(p.sum())]
    return out


def covering_image(gt_ids, gt_segments, pred_ids, pred_segments, edges=None) -> dict:
    """``{category: [sum |R| max IoU(R, R'), sum |R|]}`` over non-crowd ground-truth segments R;
    every predicted region R' is taken without the void and crowd ground-truth pixels. With
    ``edges``, keyed ``(size bucket of |R|, category)``."""
    gts, preds = segments_of(gt_ids, gt_segments), segments_of(pred_ids, pred_segments)
    keep = np.asarray(gt_ids) != 0
    for g in gts:
        if g.crowd:
            keep &= ~g.mask
    out: dict[int, list] = defaultdict(lambda: [0.0, 0])
    for g in gts:
        if g.crowd or g.area == 0:
            continue
        best = 0.0
        for p in preds:
            if p.category != g.category:
                continue
            region = p.mask & keep
            inter = int((g.mask & region).sum())
            if inter:
                best = max(best, inter / int((g.mask | region).sum()))
        k = g.category if edges is None else (size_bucket(g.area, edges), g.category)
        out[k][0] += g.area * best
        out[k][1] += g.area
    return dict(out)


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


class RefEvaluator:
    """Accumulates the three per-image references over images; ``categories`` are objects with
    ``id`` and ``isthing``."""

    def __init__(self, categories):
        self.categories = list(categories)
        self.pq = defaultdict(lambda: [0, 0, 0, 0.0])
        self.sem = defaultdict(lambda: [0, 0, 0])
        self.cov = defaultdict(lambda: [0.0, 0])

    def add(self, gt_ids, gt_segments, pred_ids, pred_segments) -> None:
        for c, v in pq_image(gt_ids, gt_segments, pred_ids, pred_segments).items():
            self.pq[c] = [a + b for a, b in zip(self.pq[c], v)]
        for c, v in semantic_image(gt_ids, gt_segments, pred_ids, pred_segments).items():
            self.sem[c] = [a + b for a, b in zip(self.sem[c], v)]
        for c, v in covering_image(gt_ids, gt_segments, pred_ids, pred_segments).items():
            self.cov[c] = [a + b for a, b in zip(self.cov[c], v)]

    def per_class(self) -> dict[int, dict]:
        out = {}
        for cat in self.categories:
            tp, fp, fn, iou = self.pq.get(cat.id, [0, 0, 0, 0.0])
            both, g, p = self.sem.get(cat.id, [0, 0, 0])
            num, den = self.cov.get(cat.id, [0.0, 0])
            counted = tp + fp + fn > 0
            d = tp + 0.5 * fp + 0.5 * fn
            union = g + p - both
            out[cat.id] = {
                "isthing": bool(cat.isthing), "tp": tp, "fp": fp, "fn": fn, "iou_sum": iou, "counted": counted,
                "pq": iou / d if counted else float("nan"),
                "sq": (iou / tp if tp else 0.0) if counted else float("nan"),
                "rq": tp / d if counted else float("nan"),
                "iou": both / union if union > 0 else float("nan"),
                "pc": num / den if den > 0 else float("nan"),
            }
        return out

    def result(self) -> dict[str, float]:
        pc = self.per_class()
        res = {}
        for suffix, keep in (("", lambda v: True), ("_th", lambda v: v["isthing"]),
                             ("_st", lambda v: not v["isthing"])):
            sel = [v for v in pc.values() if keep(v)]
            for m in ("pq", "sq", "rq"):
                res[m + suffix] = _mean([v[m] for v in sel if v["counted"]])
            dagger = [v["pq"] for v in sel if v["isthing"] and v["counted"]]
            dagger += [v["iou"] for v in sel if not v["isthing"] and not np.isnan(v["iou"])]
            res["pq_dagger" + suffix] = _mean(dagger)
            res["pc" + suffix] = _mean([v["pc"] for v in sel if not np.isnan(v["pc"])])
        res["miou"] = _mean([v["iou"] for v in pc.values() if not np.isnan(v["iou"])])
        return res


class RefSizeEvaluator:
    """PQ, SQ, RQ and PC per size bucket: one :class:`RefEvaluator` per bucket, fed the by-size
    keyed references (its PQ† and mIoU mean nothing here)."""

    def __init__(self, categories, edges):
        self.edges = [float(e) for e in edges]
        self.buckets = [RefEvaluator(categories) for _ in range(len(self.edges) - 1)]

    def add(self, gt_ids, gt_segments, pred_ids, pred_segments) -> None:
        for (b, c), v in pq_image(gt_ids, gt_segments, pred_ids, pred_segments, self.edges).items():
            r = self.buckets[b]
            r.pq[c] = [x + y for x, y in zip(r.pq[c], v)]
        for (b, c), v in covering_image(gt_ids, gt_segments, pred_ids, pred_segments, self.edges).items():
            r = self.buckets[b]
            r.cov[c] = [x + y for x, y in zip(r.cov[c], v)]
