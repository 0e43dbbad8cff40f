"""``PanopticEvaluator``: PQ/SQ/RQ, PQ†, PC, mIoU, PQ/SQ/RQ/PC by size and box/mask AP by size, in one
streaming pass."""
from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable, Mapping, Sequence, cast

import numpy as np

from isus.errors import IsusError
from isus.eval.coco import DEFAULT_PERCENTILES, Detections, bucket_edges, coco_ap
from isus.eval.extent import box_extent, bucket_index, check_ranges, extent_summary
from isus.eval.categories import CategoryTable
from isus.eval.stats import GT_SEGMENT, ImageStats, SizeSums, image_stats, size_sums
from isus.types import Category, Panoptic

__all__ = ["PanopticEvaluator", "EvalResult", "EvalResultError"]


@dataclass
class EvalResult:
    """Every metric of an evaluation, as fractions in [0, 1] (NaN where undefined).

    Attributes
    ----------
    pq, sq, rq, pq_th, sq_th, rq_th, pq_st, sq_st, rq_st
        Panoptic quality and its factors (Kirillov et al., 2019), panopticapi's semantics,
        averaged over categories with TP + FP + FN > 0, overall / things / stuff.
    pq_dagger, pq_dagger_th, pq_dagger_st
        PQ† (Porzi et al., 2019): PQ for things, semantic IoU for stuff.
    pc, pc_th, pc_st
        Parsing covering (Yang et al., 2019), mean over categories with ground truth.
    miou
        Mean semantic IoU over categories present in the ground truth or the prediction.
    ap_box, ap_mask
        COCO AP@[.5:.95] (pycocotools) over thing categories; None when no scored instances
        were evaluated (``ap_mask`` also when they had no masks).
    ap
        ``{"box": {...}, "mask": {...}}``: ap, ap50, ap75, ap_small, ap_medium, ap_large.
    buckets
        ``{"percentiles", "edges", "instances", "box", "mask", "extent"}``: the size buckets'
        percentiles, their edges in pixels, the ground-truth instances in each, box/mask AP per
        bucket and the box extent of the matched detections per bucket (a list of
        :func:`~isus.eval.extent_summary` dicts).
    ranges
        The named area ranges (``PanopticEvaluator(ranges=)``): name -> ``{"area": [lo, hi]``
        (hi None for inf)``, "instances"`` (non-crowd GT instances in ``[lo, hi)``), ``"box"``
        and ``"mask"`` (``{"ap", "ap50", "ap75"}``; mask None without masks), ``"extent"`` (an
        :func:`~isus.eval.extent_summary`) and ``"matches"``: ``[image, gt_segment_id,
        width_ratio, height_ratio, iou]`` per matched GT instance in the range``}``.
    per_class
        Category name -> ``{"id", "isthing", "pq", "sq", "rq", "tp", "fp", "fn", "iou", "pc",
        "ap_box", "ap_mask"}``.
    images
        Number of images evaluated.
    dataset
        What was evaluated, where known: ``{"name", "split", "image_ids_sha256"}`` (the dataset's
        registry name, its split, and the SHA-256 of the evaluated image ids, sorted, one per
        line); :func:`~isus.eval.evaluate_dataset` fills it, an empty dict means unknown.
        ``isus eval --compare`` refuses runs whose identities differ.
    by_size
        PQ, SQ, RQ and PC per size bucket (docs/evaluation.md, "PQ, SQ, RQ and PC by size"):
        ``{"percentiles", "edges"`` (as in ``buckets``; equal to them when both are present)``,
        "segments", "segments_th"`` (non-crowd ground-truth segments, all / things)``, "tp", "fp",
        "fn", "tp_th", "fp_th", "fn_th"`` (summed over the categories)``, "pq", "sq", "rq", "pq_th",
        "sq_th", "rq_th", "pq_st", "sq_st", "rq_st", "pc", "pc_th", "pc_st"}``, one value per
        bucket. A TP and an FN count in the bucket of the ground-truth segment's area, an FP in
        that of its own area; the outer buckets are open, so the counts add up to the overall
        ones. Empty when there are no edges (no ground-truth thing instance and no ``edges=``).
    """

    pq: float
    sq: float
    rq: float
    pq_th: float
    sq_th: float
    rq_th: float
    pq_st: float
    sq_st: float
    rq_st: float
    pq_dagger: float
    pq_dagger_th: float
    pq_dagger_st: float
    pc: float
    pc_th: float
    pc_st: float
    miou: float
    ap_box: float | None = None
    ap_mask: float | None = None
    ap: dict[str, Any] = field(default_factory=dict)
    buckets: dict[str, Any] = field(default_factory=dict)
    per_class: dict[str, dict[str, Any]] = field(default_factory=dict)
    images: int = 0
    ranges: dict[str, Any] = field(default_factory=dict)
    dataset: dict[str, Any] = field(default_factory=dict)
    by_size: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (NaN becomes None)."""
        out: dict[str, Any] = _nan_to_none(asdict(self))
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str | None = None) -> "EvalResult":
        """Inverse of :meth:`to_dict`; other keys (a training run's ``steps``, ...) are ignored.

        Impossible values are refused with :class:`EvalResultError` naming ``source`` (e.g. the
        file) and the field: a metric that is not a fraction in [0, 1] or ``null`` (undefined;
        a NaN or infinite number is refused), a count that is not an integer >= 0 (``images``
        >= 1), bucket edges that are not increasing finite areas, lists whose lengths disagree.
        """
        where = source or "evaluation result"
        if not isinstance(data, dict):
            raise EvalResultError(f"{where}: an evaluation result must be a JSON object; got {type(data).__name__}")
        names = {f.name for f in fields(cls)}
        data = copy.deepcopy(data)
        missing = [f.name for f in fields(cls) if f.name not in data and f.type == "float"]
        if missing:
            raise EvalResultError(f"{where}: evaluation result lacks the fields {missing}; is it an isus eval.json?")
        _Check(where).result(data)
        kw = {k: v for k, v in data.items() if k in names}
        for f in fields(cls):
            if f.type == "float" and kw[f.name] is None:
                kw[f.name] = float("nan")
        # nested NaNs: to_dict wrote them as None wherever a float is always present
        nan: Callable[[Any], Any] = lambda v: float("nan") if v is None else v  # noqa: E731
        ap = kw.get("ap") or {}
        evaluated = {k: isinstance(ap.get(k), dict) for k in ("box", "mask")}
        for k in ("box", "mask"):
            if evaluated[k]:
                kw[f"ap_{k}"] = nan(kw.get(f"ap_{k}"))
                ap[k] = {kk: nan(vv) for kk, vv in ap[k].items()}
        buckets = kw.get("buckets") or {}
        for k in ("edges", "box", "mask"):
            if buckets.get(k) is not None:
                buckets[k] = [nan(v) for v in buckets[k]]
        if buckets.get("extent") is not None:
            buckets["extent"] = [_extent_nan(e) for e in buckets["extent"]]
        for r in (kw.get("ranges") or {}).values():
            for k in ("box", "mask"):
                if isinstance(r.get(k), dict):
                    r[k] = {kk: nan(vv) for kk, vv in r[k].items()}
            if isinstance(r.get("extent"), dict):
                r["extent"] = _extent_nan(r["extent"])
        by_size = kw.get("by_size") or {}
        for k in _BY_SIZE_FRACTIONS:
            if by_size.get(k) is not None:
                by_size[k] = [nan(v) for v in by_size[k]]
        for v in (kw.get("per_class") or {}).values():
            for k in ("pq", "sq", "rq", "iou", "pc"):
                if k in v:
                    v[k] = nan(v[k])
            for k in ("box", "mask"):
                if evaluated[k] and v.get("isthing"):
                    v[f"ap_{k}"] = nan(v.get(f"ap_{k}"))
        return cls(**kw)

    def row(self) -> dict[str, float | None]:
        """The paper's Table 1 row: PQ, PQ_th, PQ_st, PC, PC_th, PC_st, PQ†, mIoU, box AP, mask AP."""
        return {"PQ": self.pq, "PQ_th": self.pq_th, "PQ_st": self.pq_st, "SQ": self.sq, "RQ": self.rq,
                "PC": self.pc, "PC_th": self.pc_th, "PC_st": self.pc_st, "PQ†": self.pq_dagger,
                "mIoU": self.miou, "AP_box": self.ap_box, "AP_mask": self.ap_mask}


class EvalResultError(IsusError):
    """An evaluation result (an ``eval.json``) lacks fields or holds impossible values."""


_FRACTIONS = ("pq", "sq", "rq", "pq_th", "sq_th", "rq_th", "pq_st", "sq_st", "rq_st", "pq_dagger", "pq_dagger_th",
              "pq_dagger_st", "pc", "pc_th", "pc_st", "miou", "ap_box", "ap_mask")


_BY_SIZE_FRACTIONS = ("pq", "sq", "rq", "pq_th", "sq_th", "rq_th", "pq_st", "sq_st", "rq_st", "pc", "pc_th", "pc_st")
_BY_SIZE_COUNTS = ("segments", "segments_th", "tp", "fp", "fn", "tp_th", "fp_th", "fn_th")


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


class _Check:
    """The value checks of :meth:`EvalResult.from_dict`; ``where`` names the file in errors."""

    def __init__(self, where: str) -> None:
        self.where = where

    def fail(self, name: str, value: Any, expected: str) -> None:
        raise EvalResultError(f"{self.where}: {name} is {value!r}; expected {expected}")

    def frac(self, name: str, v: Any) -> None:
        # 1e-9: float sums of IoUs <= 1 may round a hair above 1
        if v is not None and not (_is_num(v) and -1e-9 <= v <= 1 + 1e-9):  # NaN and inf fail too
            self.fail(name, v, "a fraction in [0, 1], or null where undefined")

    def count(self, name: str, v: Any, least: int = 0) -> None:
        if not (isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= least):
            self.fail(name, v, f"an integer >= {least}")

    def positive(self, name: str, v: Any) -> None:
        if v is not None and not (_is_num(v) and math.isfinite(v) and v >= 0):
            self.fail(name, v, "a finite number >= 0, or null where undefined")

    def obj(self, name: str, v: Any, null: bool = False) -> bool:
        """Whether ``v`` is a dict (to check further); None passes when ``null``."""
        if v is None and null:
            return False
        if not isinstance(v, dict):
            self.fail(name, v, "an object" + (" or null" if null else ""))
        return True

    def values(self, name: str, v: Any, n: int | None, check: Callable[[str, Any], None], null: bool = False) -> None:
        if v is None and null:
            return
        if not isinstance(v, list) or (n is not None and len(v) != n):
            self.fail(name, v, "a list" + ("" if n is None else f" of {n} values (one per bucket)")
                      + (" or null" if null else ""))
        for k, x in enumerate(v):
            check(f"{name}[{k}]", x)

    def fracs(self, name: str, v: Any, null: bool = False) -> None:
        if self.obj(name, v, null):
            for k, x in v.items():
                self.frac(f"{name}.{k}", x)

    def extent(self, name: str, v: Any) -> None:
        if not self.obj(name, v):
            return
        self.count(f"{name}.matched", v.get("matched"))
        for k in ("width_ratio", "height_ratio", "iou"):
            if self.obj(f"{name}.{k}", v.get(k)):
                for kk, x in v[k].items():
                    (self.frac if k == "iou" else self.positive)(f"{name}.{k}.{kk}", x)

    def result(self, d: dict[str, Any]) -> None:
        for k in _FRACTIONS:
            self.frac(k, d.get(k))
        if "images" in d:
            self.count("images", d["images"], 1)
        if self.obj("ap", d.get("ap", {}), null=True):
            for k, v in d.get("ap", {}).items():
                self.fracs(f"ap.{k}", v, null=True)
        self.buckets(d.get("buckets") or {})
        self.by_size(d.get("by_size") or {})
        if self.obj("per_class", d.get("per_class", {}), null=True):
            for name, v in (d.get("per_class") or {}).items():
                at = f"per_class[{name!r}]"
                if self.obj(at, v):
                    for k in ("pq", "sq", "rq", "iou", "pc", "ap_box", "ap_mask"):
                        self.frac(f"{at}.{k}", v.get(k))
                    for k in ("tp", "fp", "fn"):
                        if k in v:
                            self.count(f"{at}.{k}", v[k])
        if self.obj("ranges", d.get("ranges", {}), null=True):
            for name, r in (d.get("ranges") or {}).items():
                at = f"ranges[{name!r}]"
                if self.obj(at, r):
                    self.count(f"{at}.instances", r.get("instances"))
                    self.fracs(f"{at}.box", r.get("box"))
                    self.fracs(f"{at}.mask", r.get("mask"), null=True)
                    self.extent(f"{at}.extent", r.get("extent"))
        ident = d.get("dataset", {})
        if self.obj("dataset", ident, null=True):
            for k in ("name", "split", "image_ids_sha256"):
                if ident.get(k) is not None and not isinstance(ident[k], str):
                    self.fail(f"dataset.{k}", ident[k], "a string")

    def edges(self, name: str, b: Any, null: bool) -> int:
        """Check ``b``'s ``edges`` (all null allowed when ``null``) and ``percentiles``; the number
        of buckets."""
        edges = b.get("edges")
        if not isinstance(edges, list) or len(edges) < 2:
            self.fail(f"{name}.edges", edges, "a list of at least two areas")
        if not null or any(e is not None for e in edges):  # all null: no ground-truth instance to take percentiles of
            def area(at: str, x: Any) -> None:
                if not (_is_num(x) and math.isfinite(x) and x >= 0):
                    self.fail(at, x, "a finite area >= 0 (pixels)")

            self.values(f"{name}.edges", edges, None, area)
            step = [k for k in range(1, len(edges)) if edges[k] < edges[k - 1]]
            if step:
                self.fail(f"{name}.edges[{step[0]}]", edges[step[0]], "non-decreasing areas (pixels)")
        pcts = b.get("percentiles")
        if pcts is not None:
            self.values(f"{name}.percentiles", pcts, len(edges),
                        lambda n, x: None if _is_num(x) and 0 <= x <= 100 else self.fail(n, x, "a percentile in [0, 100]"))
        return len(edges) - 1

    def by_size(self, b: Any) -> None:
        if not self.obj("by_size", b) or not b:
            return
        nb = self.edges("by_size", b, null=False)
        for k in _BY_SIZE_COUNTS:
            self.values(f"by_size.{k}", b.get(k), nb, self.count)
        for k in _BY_SIZE_FRACTIONS:
            self.values(f"by_size.{k}", b.get(k), nb, self.frac)

    def buckets(self, b: Any) -> None:
        if not self.obj("buckets", b) or not b:
            return
        nb = self.edges("buckets", b, null=True)
        self.values("buckets.instances", b.get("instances"), nb, self.count)
        self.values("buckets.box", b.get("box"), nb, self.frac)
        self.values("buckets.mask", b.get("mask"), nb, self.frac, null=True)
        if b.get("extent") is not None:
            self.values("buckets.extent", b["extent"], nb, self.extent)


def _extent_nan(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: ({kk: float("nan") if vv is None else vv for kk, vv in v.items()} if isinstance(v, dict) else v)
            for k, v in summary.items()}


def _nan_to_none(v: Any) -> Any:
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, dict):
        return {k: _nan_to_none(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_nan_to_none(x) for x in v]
    if isinstance(v, np.generic):
        return _nan_to_none(v.item())
    return v


def _mean(values: np.ndarray, keep: np.ndarray) -> float:
    return float(values[keep].mean()) if keep.any() else float("nan")


def _pq_per_class(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray,
                  iou: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """PQ, SQ, RQ per category (0 where not counted) and whether each is counted (TP + FP + FN > 0);
    any shape, elementwise."""
    counted = (tp + fp + fn) > 0
    denom = tp + 0.5 * fp + 0.5 * fn
    with np.errstate(divide="ignore", invalid="ignore"):
        pq_c = np.where(counted, iou / np.where(denom > 0, denom, 1), 0.0)
        sq_c = np.where(tp > 0, iou / np.maximum(tp, 1), 0.0)
        rq_c = np.where(counted, tp / np.where(denom > 0, denom, 1), 0.0)
    return pq_c, sq_c, rq_c, counted


def _pc_per_class(num: np.ndarray, den: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Parsing covering per category (NaN without ground truth) and whether it has ground truth."""
    with np.errstate(divide="ignore", invalid="ignore"):
        pc_c = np.where(den > 0, num / np.maximum(den, 1), np.nan)
    return pc_c, den > 0


class PanopticEvaluator:
    """Accumulates per-image statistics and turns them into :class:`EvalResult`.

    Parameters
    ----------
    categories
        The evaluated categories (``isthing`` decides things and stuff); segments with other
        category ids are an error.
    percentiles
        Size-bucket edges (of AP by size and of PQ/SQ/RQ/PC by size, :attr:`EvalResult.by_size`)
        as percentiles of the evaluated set's ground-truth thing-instance areas (non-crowd);
        default the paper's Fig. 5 split 0/25/50/75/95/100.
    edges
        Fixed bucket edges in pixels instead of percentiles (e.g. the validation set's, when
        evaluating a subset, or COCO's ``[0, 32**2, 96**2, 1e10]``).
    max_dets
        Detections per image that COCOeval considers (COCO's 100).
    ranges
        Extra named ranges of ground-truth area in pixels, ``{name: (lo, hi)}`` meaning
        ``[lo, hi)`` (hi may be ``float("inf")``), for which box/mask AP and the box extent of the
        matched detections are reported in :attr:`EvalResult.ranges`.

    Examples
    --------
    >>> ev = PanopticEvaluator(ds.categories)                      # doctest: +SKIP
    >>> for i in range(len(ds)):                                   # doctest: +SKIP
    ...     ev.add(ds.load_panoptic(i), predict(i), instances=detections(i))
    >>> ev.result().pq                                             # doctest: +SKIP
    """

    def __init__(self, categories: Sequence[Category], *, percentiles: Sequence[float] = DEFAULT_PERCENTILES,
                 edges: Sequence[float] | None = None, max_dets: int = 100,
                 ranges: Mapping[str, tuple[float, float]] | None = None) -> None:
        self.table = CategoryTable(tuple(categories))
        self.percentiles = tuple(float(p) for p in percentiles)
        bucket_edges(np.zeros(0), self.percentiles)  # validates them
        if edges is not None:
            e = np.asarray(edges, dtype=np.float64)
            if e.ndim != 1 or len(e) < 2 or (np.diff(e) <= 0).any():
                raise ValueError(f"PanopticEvaluator(edges=) expects increasing pixel areas; got {list(edges)}")
        self.edges = None if edges is None else [float(v) for v in edges]
        if max_dets < 1:
            raise ValueError(f"PanopticEvaluator(max_dets=) expects a positive int; got {max_dets}")
        self.max_dets = int(max_dets)
        self.ranges = check_ranges(ranges, "PanopticEvaluator(ranges=)")
        self.stats = ImageStats.empty(len(self.table.categories))

    @property
    def categories(self) -> tuple[Category, ...]:
        return self.table.categories

    def add(self, gt: Panoptic, pred: Panoptic, instances: Detections | None = None, *,
            image: str | None = None) -> ImageStats:
        """Evaluate one image and add it; returns its statistics.

        Parameters
        ----------
        gt, pred
            Ground truth and prediction of equal shape, with the dataset's category ids.
        instances
            The detector's scored instances for AP, before panoptic fusion (see
            :class:`Detections`); give them for every image or for none.
        image
            Name used in error messages and as the image's key in the box-extent matches of
            :attr:`EvalResult.ranges` (default: its position in the stream).
        """
        st = image_stats(gt, pred, self.table, instances=instances,
                         image=image if image is not None else f"image #{self.stats.images}")
        self.stats.merge(st)
        return st

    def add_stats(self, stats: ImageStats) -> None:
        """Add statistics computed elsewhere (e.g. by :func:`isus.eval.image_stats` in a worker)."""
        self.stats.merge(stats)

    def result(self) -> EvalResult:
        """The metrics over every image added so far."""
        s, t = self.stats, self.table
        if s.images == 0:
            raise IsusError("PanopticEvaluator.result(): no image was added")
        thing = t.isthing
        pq_c, sq_c, rq_c, counted = _pq_per_class(s.tp, s.fp, s.fn, s.iou)
        pc_c, has_gt = _pc_per_class(s.pc_num, s.pc_den)
        with np.errstate(divide="ignore", invalid="ignore"):
            union = s.sem_gt + s.sem_pred - s.sem_tp
            iou_c = np.where(union > 0, s.sem_tp / np.maximum(union, 1), np.nan)
        has_union = union > 0
        dag_c = np.where(thing, pq_c, iou_c)
        dag_keep = np.where(thing, counted, has_union)
        edges = self._edges()
        ap = self._ap(edges)
        res = EvalResult(
            pq=_mean(pq_c, counted), sq=_mean(sq_c, counted), rq=_mean(rq_c, counted),
            pq_th=_mean(pq_c, counted & thing), sq_th=_mean(sq_c, counted & thing), rq_th=_mean(rq_c, counted & thing),
            pq_st=_mean(pq_c, counted & ~thing), sq_st=_mean(sq_c, counted & ~thing),
            rq_st=_mean(rq_c, counted & ~thing),
            pq_dagger=_mean(dag_c, dag_keep), pq_dagger_th=_mean(dag_c, dag_keep & thing),
            pq_dagger_st=_mean(dag_c, dag_keep & ~thing),
            pc=_mean(pc_c, has_gt), pc_th=_mean(pc_c, has_gt & thing), pc_st=_mean(pc_c, has_gt & ~thing),
            miou=_mean(iou_c, has_union), images=s.images,
        )
        res.by_size = self._by_size(edges)
        per_ap: dict[str, dict[int, float | None]] = {"box": {}, "mask": {}}
        if ap is not None:
            res.ap_box = ap["box"]["ap"]
            res.ap_mask = ap["mask"]["ap"] if ap["mask"] is not None else None
            res.ap = {k: ({kk: vv for kk, vv in v.items() if kk not in ("buckets", "ranges", "per_class")}
                          if v else None)
                      for k, v in (("box", ap["box"]), ("mask", ap["mask"]))}
            res.buckets = {"percentiles": None if self.edges is not None else list(self.percentiles),
                           "edges": ap["edges"], "instances": ap["counts"], "box": ap["box"]["buckets"],
                           "mask": ap["mask"]["buckets"] if ap["mask"] is not None else None,
                           "extent": ap["extent"]}
            res.ranges = ap["ranges"]
            per_ap = {"box": ap["box"]["per_class"], "mask": (ap["mask"] or {}).get("per_class", {})}
        for k, c in enumerate(t.categories):
            res.per_class[c.name if c.name not in res.per_class else f"{c.name} ({c.id})"] = {
                "id": c.id, "isthing": c.isthing,
                "pq": float(pq_c[k]) if counted[k] else float("nan"),
                "sq": float(sq_c[k]) if counted[k] else float("nan"),
                "rq": float(rq_c[k]) if counted[k] else float("nan"),
                "tp": int(s.tp[k]), "fp": int(s.fp[k]), "fn": int(s.fn[k]),
                "iou": float(iou_c[k]), "pc": float(pc_c[k]),
                "ap_box": per_ap["box"].get(c.id) if c.isthing else None,
                "ap_mask": per_ap["mask"].get(c.id) if c.isthing else None,
            }
        return res

    def _edges(self) -> np.ndarray:
        """The size-bucket edges in pixels: ``edges=``, or the percentiles of the non-crowd
        ground-truth thing-segment areas (all NaN when there is none)."""
        if self.edges is not None:
            return np.asarray(self.edges, dtype=np.float64)
        recs = self.stats.gt_segments
        g = np.concatenate(recs) if recs else np.zeros(0, GT_SEGMENT)
        areas = g["area"][self.table.isthing[g["cat"]]].astype(np.float64)
        return bucket_edges(areas, self.percentiles)

    def size_sums(self) -> SizeSums | None:
        """PQ and PC sums per size bucket and category (:class:`~isus.eval.stats.SizeSums`, buckets
        as in :attr:`EvalResult.by_size`); None when there are no edges."""
        edges = self._edges()
        return size_sums(self.stats, edges) if np.isfinite(edges).all() else None

    def _by_size(self, edges: np.ndarray) -> dict[str, Any]:
        if not np.isfinite(edges).all():
            return {}
        z = size_sums(self.stats, edges)
        thing = self.table.isthing
        pq_c, sq_c, rq_c, counted = _pq_per_class(z.tp, z.fp, z.fn, z.iou)
        pc_c, has_gt = _pc_per_class(z.pc_num, z.pc_den)
        out: dict[str, Any] = {"percentiles": None if self.edges is not None else list(self.percentiles),
                               "edges": [float(e) for e in edges],
                               "segments": z.segments.sum(axis=1).tolist(),
                               "segments_th": z.segments[:, thing].sum(axis=1).tolist()}
        for k in ("tp", "fp", "fn"):
            out[k] = getattr(z, k).sum(axis=1).tolist()
        for k in ("tp", "fp", "fn"):
            out[k + "_th"] = getattr(z, k)[:, thing].sum(axis=1).tolist()
        for name, v, keep in (("pq", pq_c, counted), ("sq", sq_c, counted), ("rq", rq_c, counted),
                              ("pc", pc_c, has_gt)):
            for suffix, sel in (("", np.ones_like(thing)), ("_th", thing), ("_st", ~thing)):
                out[name + suffix] = [_mean(v[b], keep[b] & sel) for b in range(len(edges) - 1)]
        return out

    def _ap(self, edges: np.ndarray) -> dict[str, Any] | None:
        s = self.stats
        with_dets = [d is not None for d in s.detections]
        if not any(with_dets):
            return None
        if not all(with_dets):
            missing = with_dets.index(False)
            raise IsusError(f"scored instances were given for {sum(with_dets)} of {len(with_dets)} images "
                            f"(none for image #{missing}); AP needs them for every image or for none")
        # every image has detections, hence its ground-truth instances (image_stats records both)
        gts = cast("list[list[dict[str, Any]]]", s.gt_instances)
        dets = cast("list[list[dict[str, Any]]]", s.detections)
        areas = np.array([a["area"] for g in gts for a in g if not a["iscrowd"]], dtype=np.float64)
        thing_ids = [c.id for c in self.table.categories if c.isthing]
        out = coco_ap(gts, dets, s.heights, s.widths, thing_ids, edges, self.max_dets,
                      ranges=list(self.ranges.values()))
        n_buckets = len(edges) - 1
        counts = np.bincount(bucket_index(areas, edges) + 1, minlength=n_buckets + 1)[1:]
        out["edges"] = [float(e) for e in edges]
        out["counts"] = [int(c) for c in counts]
        m = out.pop("matches")
        order = np.lexsort((m["segment_id"], m["image"]))  # by image, then segment id
        m = {k: v[order] for k, v in m.items()}
        wr, hr, iou = box_extent(m["gt_box"], m["pred_box"])
        b = bucket_index(m["area"], edges)
        out["extent"] = [extent_summary(wr[b == k], hr[b == k], iou[b == k]) for k in range(n_buckets)]
        names = s.names if len(s.names) == len(gts) else [f"image #{i}" for i in range(len(gts))]
        out["ranges"] = {}
        for j, (name, (lo, hi)) in enumerate(self.ranges.items()):
            sel = np.flatnonzero((m["area"] >= lo) & (m["area"] < hi))
            out["ranges"][name] = {
                "area": [lo, None if math.isinf(hi) else hi],
                "instances": int(((areas >= lo) & (areas < hi)).sum()),
                "box": out["box"]["ranges"][j],
                "mask": out["mask"]["ranges"][j] if out["mask"] is not None else None,
                "extent": extent_summary(wr[sel], hr[sel], iou[sel]),
                "matches": [[names[int(m["image"][i])], int(m["segment_id"][i]), float(wr[i]), float(hr[i]),
                             float(iou[i])] for i in sel]}
        return out
