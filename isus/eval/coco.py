"""Box and mask AP through pycocotools' ``COCOeval``, overall, by COCO's small/medium/large and by
size buckets (percentiles of the ground-truth instance areas)."""
from __future__ import annotations

import contextlib
import io
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from isus import kernels
from isus.errors import IsusError
from isus.eval.categories import CategoryTable, EvalInputError
from isus.segments import segment_geometry
from isus.types import Panoptic

__all__ = ["Detections", "DEFAULT_PERCENTILES", "bucket_edges", "coco_ap"]

#: Bucket edges of the paper's Fig. 5: percentiles of the evaluated set's instance areas.
DEFAULT_PERCENTILES: tuple[float, ...] = (0.0, 25.0, 50.0, 75.0, 95.0, 100.0)

#: COCO's own area ranges (pixels), reported beside the buckets.
COCO_AREAS = {"small": (0.0, 32.0**2), "medium": (32.0**2, 96.0**2), "large": (96.0**2, 1e10)}


@dataclass(frozen=True, eq=False)
class Detections:
    """Scored instances of one image, as a detector outputs them before panoptic fusion.

    Attributes
    ----------
    boxes
        ``(N, 4)`` float ``x0, y0, x1, y1`` in pixels (torchvision's ``xyxy``).
    scores
        ``(N,)`` confidence scores.
    labels
        ``(N,)`` the dataset's category ids.
    masks
        None (box AP only), an ``(N, H, W)`` bool array, or a list of N COCO RLE dicts
        (``{"size": [H, W], "counts": ...}``).
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    masks: Any = None

    def __post_init__(self) -> None:
        n = len(self.scores)
        if np.shape(self.boxes) != (n, 4) or len(self.labels) != n:
            raise ValueError(f"Detections expects boxes (N, 4), scores (N,) and labels (N,); got boxes "
                             f"{np.shape(self.boxes)}, scores ({n},), labels ({len(self.labels)},)")
        if self.masks is not None and len(self.masks) != n:
            raise ValueError(f"Detections expects N={n} masks; got {len(self.masks)}")
        _check_numbers(self.scores, "scores", "finite numbers")
        boxes = _check_numbers(self.boxes, "boxes", "finite x0, y0, x1, y1")
        back = np.flatnonzero((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])) if n else np.zeros(0, np.int64)
        if len(back):
            raise ValueError(f"Detections expects boxes with x1 >= x0 and y1 >= y0; box {int(back[0])} is "
                             f"{boxes[back[0]].tolist()}")
        labels = _check_numbers(self.labels, "labels", "integral category ids")
        frac = np.flatnonzero(labels != np.round(labels))
        if len(frac):
            raise ValueError(f"Detections expects integral category ids; labels[{int(frac[0])}] is "
                             f"{labels[frac[0]]!r}")

    @classmethod
    def from_coco(cls, results: Sequence[dict[str, Any]]) -> "Detections":
        """From COCO results dicts of one image (``bbox`` in ``x, y, w, h``, ``score``,
        ``category_id`` and optionally ``segmentation`` as RLE)."""
        boxes = np.array([r["bbox"] for r in results], dtype=np.float64).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        masks = None
        if results and all("segmentation" in r for r in results):
            masks = [r["segmentation"] for r in results]
        return cls(boxes, np.array([r["score"] for r in results], dtype=np.float64),
                   np.array([r["category_id"] for r in results], dtype=np.int64), masks)


def _check_numbers(values: Any, name: str, what: str) -> np.ndarray:
    """``values`` as float64 when every one is a finite int or float; ValueError naming the first
    that is not (NaN, inf, a bool, a string)."""
    a = np.asarray(values)
    if a.size and a.dtype.kind not in "iuf":
        raise ValueError(f"Detections expects {name} as {what}; got an array of {a.dtype}")
    f = a.astype(np.float64)
    bad = np.flatnonzero(~np.isfinite(f).reshape(len(f), -1).all(axis=1)) if f.size else np.zeros(0, np.int64)
    if len(bad):
        raise ValueError(f"Detections expects {name} as {what}; {name}[{int(bad[0])}] is {f[bad[0]].tolist()!r}")
    return f


def _rle_string_counts(counts: str | bytes) -> np.ndarray | str:
    """The run lengths of a compressed COCO RLE string (pycocotools' ``rleFrString``, in numpy), or
    why the string is malformed. pycocotools itself checks nothing (a string whose runs exceed
    the mask writes past its buffer), hence this twin."""
    try:
        raw = counts.encode("ascii") if isinstance(counts, str) else bytes(counts)
    except UnicodeEncodeError:
        return "counts is not an ASCII string"
    c = np.frombuffer(raw, np.uint8).astype(np.int64) - 48
    if not len(c):
        return np.zeros(0, np.int64)
    if ((c < 0) | (c > 63)).any():
        return f"counts holds the character {chr(int(c[(c < 0) | (c > 63)][0]) + 48)!r}, outside '0'..'o'"
    more = (c & 0x20) != 0
    if more[-1]:
        return "counts ends inside a run length (truncated)"
    ends = np.flatnonzero(~more)
    starts = np.concatenate(([0], ends[:-1] + 1))
    lengths = ends - starts + 1
    if lengths.max() > 6:  # pycocotools shifts a C int: 6 characters (30 bits) at most
        return "counts holds a run length of more than 6 characters"
    k = np.arange(len(c)) - np.repeat(starts, lengths)
    x = np.add.reduceat((c & 0x1F) << (5 * k), starts)
    neg = (c[ends] & 0x10) != 0
    x[neg] -= np.left_shift(1, 5 * lengths[neg])
    x[1::2] = np.cumsum(x[1::2])  # runs from the fourth on are stored as differences to the run two before
    x[2::2] = np.cumsum(x[2::2])
    return x


def rle_problem(rle: Any) -> str | None:
    """Why ``rle`` is not a COCO RLE dict that decodes to exactly its ``size`` (None when it is):
    ``size`` two non-negative ints ``[H, W]``; ``counts`` non-negative run lengths, a list or a
    compressed string, summing to ``H * W``."""
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        return "expected an RLE dict with 'size' and 'counts' (polygons are not supported)"
    size = rle["size"]
    if not (isinstance(size, (list, tuple)) and len(size) == 2 and
            all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 0 for v in size)):
        return f"size {size!r}: expected [height, width], two non-negative integers"
    h, w = int(size[0]), int(size[1])
    counts = rle["counts"]
    if isinstance(counts, (str, bytes)):
        runs = _rle_string_counts(counts)
        if isinstance(runs, str):
            return runs
    elif isinstance(counts, (list, tuple, np.ndarray)):
        runs = np.asarray(counts)
        if runs.ndim != 1 or (runs.size and runs.dtype.kind not in "iu"):
            return "counts: expected a list of non-negative integer run lengths"
    else:
        return f"counts of type {type(counts).__name__}: expected a list of run lengths or a compressed RLE string"
    if runs.size and (runs.min() < 0 or runs.max() > h * w):
        return f"counts holds the run length {int(runs.min() if runs.min() < 0 else runs.max())}, outside 0..H*W"
    total = int(runs.astype(np.int64).sum())
    if total != h * w:
        return f"counts sum to {total} pixels; expected height x width = {h} x {w} = {h * w}"
    return None


def _mask_api() -> Any:  # pycocotools.mask: no type information
    from pycocotools import mask as mask_utils

    return mask_utils


def _rle_str(rle: dict[str, Any]) -> dict[str, Any]:
    counts = rle["counts"]
    return {"size": [int(v) for v in rle["size"]], "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}


def gt_instances_to_coco(gt: Panoptic, table: CategoryTable) -> list[dict[str, Any]]:
    """The ground-truth segments of thing categories as COCO annotations with RLE masks
    (crowd segments as ``iscrowd``), each with its ``segment_id`` in ``gt``. Each mask is encoded
    from its bounding box only."""
    mu = _mask_api()
    seg = gt.segments
    if not len(seg):
        return []
    pos = table.positions(seg["category_id"].astype(np.int64), "ground truth", "a segment")
    thing = table.isthing[pos]
    if not thing.any():
        return []
    dense, area, box = segment_geometry(gt.ids, seg["id"])
    h, w = gt.ids.shape
    out = []
    for k in np.flatnonzero(thing & (area > 0)):
        x0, y0, x1, y1 = (int(v) for v in box[k])
        counts = kernels.mask_rle_counts(dense, k + 1, x0, y0, x1, y1)
        rle = mu.frPyObjects({"size": [h, w], "counts": counts.tolist()}, h, w)
        out.append({"category_id": int(seg["category_id"][k]), "iscrowd": int(seg["iscrowd"][k]),
                    "area": float(area[k]), "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                    "segmentation": _rle_str(rle), "segment_id": int(seg["id"][k])})
    return out


def detections_to_coco(det: Detections, table: CategoryTable, size: tuple[int, int], image: str) -> list[dict[str, Any]]:
    """COCO results dicts for one image; unknown categories and wrong mask sizes are errors."""
    mu = _mask_api()
    n = len(det.scores)
    if n == 0:
        return []
    labels = np.asarray(det.labels, dtype=np.int64)
    pos = table.positions(labels, image, "a detection")
    if not table.isthing[pos].all():
        bad = labels[~table.isthing[pos]][0]
        raise IsusError(f"{image}: a detection has category id {int(bad)}, which is a stuff category; "
                        "AP is evaluated on thing categories only")
    boxes = np.asarray(det.boxes, dtype=np.float64)
    rles: list[dict[str, Any]] | None = None
    if det.masks is not None:
        if isinstance(det.masks, np.ndarray):
            if det.masks.shape[1:] != size:
                raise IsusError(f"{image}: detection masks are {det.masks.shape[2]}x{det.masks.shape[1]}; "
                                f"expected the image's {size[1]}x{size[0]}")
            rles = [_rle_str(r) for r in mu.encode(np.asfortranarray(np.moveaxis(det.masks.astype(np.uint8), 0, -1)))]
        else:
            rles = []
            for k, r in enumerate(det.masks):
                problem = rle_problem(r)
                if problem is not None:
                    raise EvalInputError(f"{image}: detection {k}: RLE mask {problem}")
                if list(r.get("size", [])) != list(size):
                    raise IsusError(f"{image}: a detection's RLE mask has size {r.get('size')}; expected "
                                    f"[{size[0]}, {size[1]}] (height, width)")
                if isinstance(r["counts"], list):
                    r = mu.frPyObjects(r, size[0], size[1])
                rles.append(_rle_str(r))
    out = []
    for k in range(n):
        x0, y0, x1, y1 = (float(v) for v in boxes[k])
        d = {"category_id": int(labels[k]), "score": float(det.scores[k]), "bbox": [x0, y0, x1 - x0, y1 - y0]}
        if rles is not None:
            d["segmentation"] = rles[k]
        out.append(d)
    return out


def bucket_edges(areas: np.ndarray, percentiles: Sequence[float] = DEFAULT_PERCENTILES) -> np.ndarray:
    """Bucket edges in pixels: the given percentiles (linear interpolation, ``np.percentile``'s
    default) of ``areas``, the evaluated set's non-crowd ground-truth thing-instance areas."""
    p = np.asarray(percentiles, dtype=np.float64)
    if p.ndim != 1 or len(p) < 2 or (np.diff(p) <= 0).any() or p[0] < 0 or p[-1] > 100:
        raise ValueError(f"bucket percentiles must increase within [0, 100]; got {list(percentiles)}")
    if len(areas) == 0:
        return np.full(len(p), np.nan)
    return np.percentile(np.asarray(areas, dtype=np.float64), p)


def _area_ranges(edges: np.ndarray) -> list[list[float]]:
    """COCOeval keeps areas in ``[lo, hi]``; buckets are ``[e_k, e_k+1)`` except the last,
    which includes its upper edge, so that each instance falls in exactly one bucket."""
    rngs = []
    for k in range(len(edges) - 1):
        lo, hi = float(edges[k]), float(edges[k + 1])
        last = k == len(edges) - 2
        rngs.append([lo, hi if last else np.nextafter(hi, -np.inf)])
    return rngs


def coco_ap(gt_images: list[list[dict[str, Any]]], det_images: list[list[dict[str, Any]]], heights: list[int], widths: list[int],
            category_ids: Sequence[int], edges: np.ndarray, max_dets: int = 100,
            ranges: Sequence[tuple[float, float]] = ()) -> dict[str, Any]:
    """Run ``COCOeval`` for ``bbox`` and ``segm`` over the images and summarise AP overall, by COCO
    area, by bucket and by the extra area ``ranges`` (``[lo, hi)`` pixels, hi may be inf). Fractions
    in [0, 1]; NaN where a range holds no ground truth.

    ``out["box"]["ranges"]`` (and ``"mask"``) list ``{"ap", "ap50", "ap75"}`` per range;
    ``out["matches"]`` holds the bbox run's matches at IoU 0.5, area "all" (see :func:`_matches`)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    names = ["all", "small", "medium", "large"] + [f"b{k}" for k in range(len(edges) - 1)]
    rngs = [[0.0, 1e10], *(list(v) for v in COCO_AREAS.values())] + _area_ranges(edges)
    first_range = len(rngs)
    for k, (lo, hi) in enumerate(ranges):  # [lo, hi) as COCOeval's inclusive [lo, hi]
        names.append(f"r{k}")
        rngs.append([float(lo), float(hi) if math.isinf(hi) else float(np.nextafter(float(hi), -np.inf))])
    images: list[dict[str, int]] = []
    anns: list[dict[str, Any]] = []
    for i, (g, h, w) in enumerate(zip(gt_images, heights, widths)):
        images.append({"id": i + 1, "height": int(h), "width": int(w)})
        for a in g:
            anns.append({**a, "image_id": i + 1, "id": len(anns) + 1})
    gt = COCO()
    gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": int(c)} for c in category_ids]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    dets = [{**d, "image_id": i + 1} for i, ds in enumerate(det_images) for d in ds]
    has_masks = all("segmentation" in d for d in dets)
    out: dict[str, Any] = {}
    for iou_type in ("bbox", "segm"):
        key = "box" if iou_type == "bbox" else "mask"
        if iou_type == "segm" and not has_masks:
            out[key] = None
            continue
        if iou_type == "bbox":
            # loadRes derives the detection area from the key it finds; as detectron2 does, hand it
            # only the field of the evaluated type (box area for bbox, mask area for segm)
            res = [{k: v for k, v in d.items() if k != "segmentation"} for d in dets]
        else:
            res = [{k: v for k, v in d.items() if k != "bbox"} for d in dets]
        with contextlib.redirect_stdout(io.StringIO()):
            dt = gt.loadRes(res) if res else COCO()
            if not res:
                dt.dataset = {"images": images, "annotations": [], "categories": gt.dataset["categories"]}
                dt.createIndex()
            ev = COCOeval(gt, dt, iou_type)
            ev.params.imgIds = [im["id"] for im in images]
            ev.params.catIds = [int(c) for c in category_ids]
            ev.params.areaRng = rngs
            ev.params.areaRngLbl = names
            ev.params.maxDets = [1, 10, int(max_dets)]
            ev.evaluate()
            ev.accumulate()
        prec = ev.eval["precision"]  # (T, R, K, A, M); -1 where no ground truth
        iou_thrs = ev.params.iouThrs

        def ap(a: int, t: int | None = None) -> float:
            s = prec[:, :, :, a, -1] if t is None else prec[t, :, :, a, -1]
            s = s[s > -1]
            return float(s.mean()) if s.size else float("nan")

        t50 = int(np.argmin(np.abs(iou_thrs - 0.5)))
        t75 = int(np.argmin(np.abs(iou_thrs - 0.75)))
        out[key] = {"ap": ap(0), "ap50": ap(0, t50), "ap75": ap(0, t75),
                    "ap_small": ap(1), "ap_medium": ap(2), "ap_large": ap(3),
                    "buckets": [ap(4 + k) for k in range(len(edges) - 1)],
                    "ranges": [{"ap": ap(a), "ap50": ap(a, t50), "ap75": ap(a, t75)}
                               for a in range(first_range, len(rngs))],
                    "per_class": _per_class_ap(prec, ev.params.catIds)}
        if iou_type == "bbox":
            out["matches"] = _matches(ev, t50)
    return out


def _matches(ev: Any, t: int) -> dict[str, np.ndarray]:
    """COCOeval's own greedy matches (area range "all", the largest ``maxDets``, IoU threshold
    index ``t``) of non-crowd ground-truth instances, as arrays over the matched pairs: ``image``
    (0-based position), ``segment_id``, ``area`` (GT pixels), ``gt_box`` and ``pred_box``
    (``(M, 4)`` ``x0, y0, x1, y1``)."""
    n_img, n_area = len(ev.params.imgIds), len(ev.params.areaRng)
    image: list[int] = []
    gt_ids: list[int] = []
    dt_ids: list[int] = []
    for k in range(len(ev.params.catIds)):
        for i in range(n_img):
            e = ev.evalImgs[k * n_area * n_img + i]  # area range 0: "all"
            if e is None:
                continue
            for g, d in zip(e["gtIds"], e["gtMatches"][t]):
                if d > 0 and not ev.cocoGt.anns[g]["iscrowd"]:
                    image.append(i)
                    gt_ids.append(int(g))
                    dt_ids.append(int(d))

    def boxes(anns: dict[int, Any], ids: list[int]) -> np.ndarray:
        b = np.array([anns[j]["bbox"] for j in ids], dtype=np.float64).reshape(-1, 4)
        b[:, 2:] += b[:, :2]
        return b

    gts = [ev.cocoGt.anns[g] for g in gt_ids]
    return {"image": np.array(image, dtype=np.int64),
            "segment_id": np.array([a.get("segment_id", -1) for a in gts], dtype=np.int64),
            "area": np.array([a["area"] for a in gts], dtype=np.float64),
            "gt_box": boxes(ev.cocoGt.anns, gt_ids), "pred_box": boxes(ev.cocoDt.anns, dt_ids)}


def _per_class_ap(prec: np.ndarray, cat_ids: list[int]) -> dict[int, float]:
    out = {}
    for k, c in enumerate(cat_ids):
        s = prec[:, :, k, 0, -1]
        s = s[s > -1]
        out[int(c)] = float(s.mean()) if s.size else float("nan")
    return out
