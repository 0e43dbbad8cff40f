"""Per-image statistics: everything the metrics need from one image, from one pass over its pixels.

An :class:`ImageStats` holds per-category sums (PQ, semantic confusion, parsing covering), one
small record per ground-truth segment and per false positive (category, area, match IoU, covering;
for PQ and PC by size, whose bucket edges are known only once every image is in) and, when AP is
evaluated, the image's ground-truth instances and detections as COCO annotations with RLE masks.
Stats of several images add up, so images can be evaluated in any order and in any process;
nothing per-pixel is kept.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from isus import kernels
from isus.eval.categories import CategoryTable, EvalInputError
from isus.eval.coco import Detections, detections_to_coco, gt_instances_to_coco
from isus.types import Panoptic

__all__ = ["ImageStats", "CategoryTable", "image_stats", "EvalInputError", "GT_SEGMENT", "FP_SEGMENT", "SizeSums",
           "size_sums", "size_bucket"]

#: Dtype of :attr:`ImageStats.gt_segments` rows: one per non-crowd ground-truth segment present in
#: the map (``cat``: position in the category table; ``area``: pixels; ``iou``: IoU of its PQ match,
#: 0 when unmatched; ``matched``; ``cover``: its best covering IoU, as parsing covering takes it).
GT_SEGMENT = np.dtype([("cat", np.int32), ("area", np.int64), ("iou", np.float64), ("matched", np.bool_),
                       ("cover", np.float64)])
#: Dtype of :attr:`ImageStats.fp_segments` rows: one per PQ false positive (its category position
#: and its own area in pixels, void pixels included, as panopticapi counts a predicted area).
FP_SEGMENT = np.dtype([("cat", np.int32), ("area", np.int64)])

#: Above this many (gt, pred) pairs the pair matrix is counted sparsely instead of densely.
_DENSE_PAIRS_MAX = 1 << 23


@dataclass
class ImageStats:
    """Sufficient statistics of one image (or, after :meth:`merge`, of several).

    Attributes
    ----------
    images
        Number of images summed.
    tp, fp, fn
        ``(C,)`` int64 PQ matches, false positives and false negatives per category.
    iou
        ``(C,)`` float64 sum of the IoUs of the matches.
    sem_tp, sem_gt, sem_pred
        ``(C,)`` int64 semantic confusion: pixels of category c in both maps, in the ground truth,
        and in the prediction where the ground truth is not void.
    pc_num, pc_den
        ``(C,)`` parsing covering sums: ``sum |R| * max IoU(R, R')`` and ``sum |R|`` over
        ground-truth segments R.
    gt_instances, detections
        COCO-style annotation dicts (image-local ``image_id`` 0) for AP; ``detections`` is None
        when no scored instances were given for this image.
    heights, widths
        Image sizes, for the COCO image records.
    names
        Image names (``image_stats``'s ``image``), the key of each ground-truth instance in the
        box-extent matches.
    gt_segments, fp_segments
        Per image, the :data:`GT_SEGMENT` records of its non-crowd ground-truth segments and the
        :data:`FP_SEGMENT` records of its false positives: PQ and PC by size
        (:func:`size_sums`). Their per-category sums are ``tp``, ``fn``, ``iou``, ``fp``,
        ``pc_num`` and ``pc_den``.
    """

    images: int
    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    iou: np.ndarray
    sem_tp: np.ndarray
    sem_gt: np.ndarray
    sem_pred: np.ndarray
    pc_num: np.ndarray
    pc_den: np.ndarray
    gt_instances: list[list[dict[str, Any]] | None] = field(default_factory=list)  # per image: annotation dicts, or None
    detections: list[list[dict[str, Any]] | None] = field(default_factory=list)  # per image: list of result dicts, or None
    heights: list[int] = field(default_factory=list)
    widths: list[int] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    gt_segments: list[np.ndarray] = field(default_factory=list)  # per image: GT_SEGMENT rows
    fp_segments: list[np.ndarray] = field(default_factory=list)  # per image: FP_SEGMENT rows

    @classmethod
    def empty(cls, num_categories: int) -> "ImageStats":
        z: Callable[[type[np.generic]], np.ndarray] = lambda dt: np.zeros(num_categories, dtype=dt)  # noqa: E731
        return cls(0, z(np.int64), z(np.int64), z(np.int64), z(np.float64), z(np.int64), z(np.int64),
                   z(np.int64), z(np.float64), z(np.int64))

    def merge(self, other: "ImageStats") -> "ImageStats":
        """Add ``other``'s statistics to these (in place) and return self."""
        if other.tp.shape != self.tp.shape:
            raise ValueError("ImageStats.merge expects statistics over the same categories")
        self.images += other.images
        for name in ("tp", "fp", "fn", "iou", "sem_tp", "sem_gt", "sem_pred", "pc_num", "pc_den"):
            getattr(self, name).__iadd__(getattr(other, name))
        self.gt_instances.extend(other.gt_instances)
        self.detections.extend(other.detections)
        self.heights.extend(other.heights)
        self.widths.extend(other.widths)
        self.names.extend(other.names)
        self.gt_segments.extend(other.gt_segments)
        self.fp_segments.extend(other.fp_segments)
        return self


def _check_panoptic(p: Panoptic, image: str, what: str) -> None:
    seg_ids = p.segments["id"]
    if seg_ids.size and (np.diff(seg_ids) <= 0).any():
        raise EvalInputError(f"{image}: {what} segments are not sorted by id or list an id twice")
    if seg_ids.size and (seg_ids <= 0).any():
        raise EvalInputError(f"{image}: {what} segments use id {int(seg_ids[seg_ids <= 0][0])}; ids must be > 0 "
                             "(0 is void)")


def _pair_matrix(gt: Panoptic, pred: Panoptic) -> np.ndarray:
    gs = np.ascontiguousarray(gt.segments["id"])
    ps = np.ascontiguousarray(pred.segments["id"])
    if (len(gs) + 2) * (len(ps) + 2) <= _DENSE_PAIRS_MAX:
        return kernels.pair_counts(gt.ids, pred.ids, gs, ps)
    # thousands of segments on both sides: count the pairs that occur instead of all of them
    gi = _dense_positions(gt.ids, gs)
    pi = _dense_positions(pred.ids, ps)
    key = gi * np.int64(len(ps) + 2) + pi
    u, c = np.unique(key, return_counts=True)
    m = np.zeros((len(gs) + 2, len(ps) + 2), dtype=np.int64)  # sparse would do; still small per row
    m[u // (len(ps) + 2), u % (len(ps) + 2)] = c
    return m


def _dense_positions(ids: np.ndarray, seg_ids: np.ndarray) -> np.ndarray:
    pos = np.searchsorted(seg_ids, ids).astype(np.int64)
    found = (pos < len(seg_ids)) & (seg_ids[np.minimum(pos, len(seg_ids) - 1)] == ids) if len(seg_ids) else \
        np.zeros(ids.shape, bool)
    return np.where(ids == 0, 0, np.where(found, pos + 1, len(seg_ids) + 1)).ravel()


def image_stats(
    gt: Panoptic,
    pred: Panoptic,
    table: CategoryTable,
    *,
    instances: "Detections | None" = None,
    image: str = "image",
    ap: bool = False,
) -> ImageStats:
    """Statistics of one image.

    Parameters
    ----------
    gt, pred
        Ground truth and prediction, of equal shape, with the dataset's category ids.
    table
        The evaluated categories.
    instances
        Scored detections for AP (see :class:`~isus.eval.Detections`), or None.
    image
        Name of the image, used in error messages.
    ap
        Also record the ground-truth thing instances for AP (implied by ``instances``).

    Raises
    ------
    isus.IsusError
        When the shapes differ, a map holds a segment id its segments do not list, or a
        segment has a category id outside ``table``.
    """
    if gt.ids.shape != pred.ids.shape:
        raise EvalInputError(f"{image}: prediction is {pred.ids.shape[1]}x{pred.ids.shape[0]}, ground truth is "
                             f"{gt.ids.shape[1]}x{gt.ids.shape[0]} (width x height); they must be equal")
    _check_panoptic(gt, image, "ground-truth")
    _check_panoptic(pred, image, "predicted")
    m = _pair_matrix(gt, pred)
    g_n, p_n = len(gt.segments), len(pred.segments)
    if m[:, p_n + 1].any():
        raise EvalInputError(f"{image}: the predicted map holds segment ids {_unknown(pred)} that its segments "
                             "do not list")
    if m[g_n + 1, :].any():
        raise EvalInputError(f"{image}: the ground-truth map holds segment ids {_unknown(gt)} that its segments "
                             "do not list")
    c_n = len(table.categories)
    g_cat = table.positions(gt.segments["category_id"].astype(np.int64), image, "a ground-truth segment")
    p_cat = table.positions(pred.segments["category_id"].astype(np.int64), image, "a predicted segment")
    crowd = gt.segments["iscrowd"].astype(bool)

    inter = m[1:g_n + 1, 1:p_n + 1]  # (G, P)
    g_area = m[1:g_n + 1, :p_n + 1].sum(axis=1)
    p_area = m[:g_n + 1, 1:p_n + 1].sum(axis=0)
    p_void = m[0, 1:p_n + 1]
    st = ImageStats.empty(c_n)
    st.images = 1

    # -- PQ (panopticapi's rules) --------------------------------------------------------------
    same = g_cat[:, None] == p_cat[None, :]
    cand = same & ~crowd[:, None] & (inter > 0)
    union = g_area[:, None] + p_area[None, :] - inter - p_void[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(cand, inter / np.maximum(union, 1), 0.0)
    match = iou > 0.5  # IoU > 0.5 makes every match unique
    gi, pi = np.nonzero(match)
    np.add.at(st.tp, g_cat[gi], 1)
    np.add.at(st.iou, g_cat[gi], iou[gi, pi])
    g_matched = match.any(axis=1)
    p_matched = match.any(axis=0)
    present_g = g_area > 0
    fn = ~g_matched & ~crowd & present_g
    np.add.at(st.fn, g_cat[fn], 1)
    # an unmatched prediction mostly on void or on crowd of its own category is not a false positive
    on_crowd = (inter * (crowd[:, None] & same)).sum(axis=0)
    ignored = (p_void + on_crowd) / np.maximum(p_area, 1) > 0.5
    fp = ~p_matched & ~ignored & (p_area > 0)
    np.add.at(st.fp, p_cat[fp], 1)

    # -- semantic confusion (void ground truth ignored) ------------------------------------------
    np.add.at(st.sem_gt, g_cat, g_area)
    np.add.at(st.sem_pred, p_cat, p_area - p_void)
    gg, pp = np.nonzero(same & (inter > 0))
    np.add.at(st.sem_tp, g_cat[gg], inter[gg, pp])

    # -- parsing covering (void and crowd ground truth left out of every region) ------------------
    p_region = p_area - p_void - on_crowd_any(inter, crowd)
    with np.errstate(divide="ignore", invalid="ignore"):
        cov = np.where(same & (inter > 0), inter / (g_area[:, None] + p_region[None, :] - inter), 0.0)
    best = cov.max(axis=1) if p_n else np.zeros(g_n)
    real = ~crowd & present_g
    np.add.at(st.pc_num, g_cat[real], g_area[real] * best[real])
    np.add.at(st.pc_den, g_cat[real], g_area[real])

    # -- one record per ground-truth segment and per false positive, for PQ and PC by size --------
    # (real: the ground-truth segments that can be TP or FN, and that parsing covering counts)
    gt_rec = np.zeros(int(real.sum()), dtype=GT_SEGMENT)
    gt_rec["cat"], gt_rec["area"], gt_rec["cover"] = g_cat[real], g_area[real], best[real]
    gt_rec["matched"] = np.asarray(g_matched)[real]
    gt_rec["iou"] = (np.where(match, iou, 0.0).max(axis=1) if p_n else np.zeros(g_n))[real]
    fp_rec = np.zeros(int(fp.sum()), dtype=FP_SEGMENT)
    fp_rec["cat"], fp_rec["area"] = p_cat[fp], p_area[fp]
    st.gt_segments.append(gt_rec)
    st.fp_segments.append(fp_rec)

    # -- instances for AP ------------------------------------------------------------------------
    h, w = gt.ids.shape
    st.heights.append(h)
    st.widths.append(w)
    st.names.append(image)
    if ap or instances is not None:
        st.gt_instances.append(gt_instances_to_coco(gt, table))
    else:
        st.gt_instances.append(None)
    st.detections.append(None if instances is None else detections_to_coco(instances, table, (h, w), image))
    return st


def on_crowd_any(inter: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """Pixels of each predicted segment that lie on crowd ground truth of any category."""
    return inter[crowd].sum(axis=0) if crowd.any() else np.zeros(inter.shape[1], dtype=np.int64)


def _unknown(p: Panoptic) -> list[int]:
    present = np.unique(p.ids)
    ids: list[int] = np.setdiff1d(present[present != 0], p.segments["id"])[:5].tolist()
    return ids


def size_bucket(areas: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """The PQ/PC size bucket of each area: k where ``edges[k] <= area < edges[k+1]``, with the
    outer buckets open (areas below ``edges[1]`` in the first, areas at or above ``edges[-2]`` in
    the last), so that every segment falls in exactly one bucket. Within the edges this is
    :func:`~isus.eval.bucket_index` (the AP buckets). ``edges`` must be finite."""
    e = np.asarray(edges, dtype=np.float64)
    if e.ndim != 1 or len(e) < 2 or not np.isfinite(e).all():
        raise ValueError(f"size_bucket expects at least two finite edges; got {e.tolist()}")
    return np.searchsorted(e[1:-1], np.asarray(areas, dtype=np.float64).ravel(), side="right").astype(np.int64)


@dataclass(frozen=True)
class SizeSums:
    """PQ and PC sums per size bucket and category, each ``(B, C)``: ``tp``, ``fp``, ``fn`` (int64),
    ``iou`` (sum of the TPs' IoUs), ``pc_num`` and ``pc_den`` (parsing covering's numerator and
    denominator), and ``segments`` (non-crowd ground-truth segments, int64). A TP, an FN and a
    ground-truth segment count in the bucket of the ground-truth segment's area, an FP in that of
    its own area (:func:`size_bucket`)."""

    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    iou: np.ndarray
    pc_num: np.ndarray
    pc_den: np.ndarray
    segments: np.ndarray


def size_sums(stats: ImageStats, edges: np.ndarray) -> SizeSums:
    """Sum ``stats``' segment records into size buckets with the given edges (pixels; see
    :func:`size_bucket`). Over the buckets, the counts add up to ``stats.tp``, ``fp``, ``fn``."""
    n_b, n_c = len(edges) - 1, len(stats.tp)
    g = np.concatenate(stats.gt_segments) if stats.gt_segments else np.zeros(0, GT_SEGMENT)
    f = np.concatenate(stats.fp_segments) if stats.fp_segments else np.zeros(0, FP_SEGMENT)
    gb, fb = size_bucket(g["area"], edges), size_bucket(f["area"], edges)
    gk = gb * n_c + g["cat"]
    m = g["matched"]

    def count(keys: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        out: np.ndarray = np.bincount(keys, weights=weights, minlength=n_b * n_c).reshape(n_b, n_c)
        return out

    return SizeSums(tp=count(gk[m]), fp=count(fb * n_c + f["cat"]), fn=count(gk[~m]),
                    iou=count(gk[m], g["iou"][m]), pc_num=count(gk, g["area"] * g["cover"]),
                    pc_den=count(gk, g["area"].astype(np.float64)).astype(np.int64), segments=count(gk))
