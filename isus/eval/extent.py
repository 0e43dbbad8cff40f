"""Box extent of matched detections: how wide and tall a detector's box is relative to the
ground-truth box it matched, and the pair's IoU (the bias the CABB loss targets: boxes of objects
larger than the training crop come out too small). Pure functions of arrays; the matching itself
is COCOeval's (see :func:`isus.eval.coco.coco_ap`)."""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

__all__ = ["box_extent", "extent_summary", "bucket_index", "check_ranges"]


def box_extent(gt_boxes: np.ndarray, pred_boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Width ratio, height ratio and IoU of paired boxes.

    Parameters
    ----------
    gt_boxes, pred_boxes
        ``(N, 4)`` ``x0, y0, x1, y1`` in pixel-edge coordinates, row k of one paired with row k
        of the other; ground-truth boxes must have positive width and height.

    Returns
    -------
    width_ratio, height_ratio, iou
        ``(N,)`` float64: ``(px1 - px0) / (gx1 - gx0)``, ``(py1 - py0) / (gy1 - gy0)`` and
        ``|P ∩ G| / |P ∪ G|`` of the boxes as continuous rectangles (COCO's box IoU).
    """
    g = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    p = np.asarray(pred_boxes, dtype=np.float64).reshape(-1, 4)
    if g.shape != p.shape:
        raise ValueError(f"box_extent expects two (N, 4) arrays of equal N; got {g.shape} and {p.shape}")
    gw, gh = g[:, 2] - g[:, 0], g[:, 3] - g[:, 1]
    if ((gw <= 0) | (gh <= 0)).any():
        raise ValueError("box_extent expects ground-truth boxes of positive width and height")
    pw, ph = np.maximum(p[:, 2] - p[:, 0], 0.0), np.maximum(p[:, 3] - p[:, 1], 0.0)
    iw = np.maximum(np.minimum(g[:, 2], p[:, 2]) - np.maximum(g[:, 0], p[:, 0]), 0.0)
    ih = np.maximum(np.minimum(g[:, 3], p[:, 3]) - np.maximum(g[:, 1], p[:, 1]), 0.0)
    inter = iw * ih
    union = gw * gh + pw * ph - inter
    return pw / gw, ph / gh, inter / union


def _quartiles(v: np.ndarray) -> dict[str, float]:
    if not len(v):
        return {"median": math.nan, "q25": math.nan, "q75": math.nan}
    q25, med, q75 = (float(x) for x in np.percentile(v, [25.0, 50.0, 75.0]))
    return {"median": med, "q25": q25, "q75": q75}


def extent_summary(width_ratio: np.ndarray, height_ratio: np.ndarray, iou: np.ndarray) -> dict[str, Any]:
    """Summary of matched pairs' extent.

    Parameters
    ----------
    width_ratio, height_ratio, iou
        ``(N,)`` values of :func:`box_extent`.

    Returns
    -------
    dict
        ``{"matched": N, "width_ratio": {"median", "q25", "q75", "geomean"}, "height_ratio": {...},
        "iou": {"median", "q25", "q75", "mean"}}``; quartiles are ``np.percentile``'s (linear
        interpolation), ``geomean`` is ``exp(mean(log r))``. Every statistic is NaN when N == 0.
    """
    w, h, o = (np.asarray(a, dtype=np.float64).ravel() for a in (width_ratio, height_ratio, iou))
    if not len(w) == len(h) == len(o):
        raise ValueError(f"extent_summary expects arrays of equal length; got {len(w)}, {len(h)}, {len(o)}")
    n = len(w)
    with np.errstate(divide="ignore"):
        geo = {k: float(np.exp(np.log(v).mean())) if n else math.nan for k, v in (("w", w), ("h", h))}
    return {"matched": n,
            "width_ratio": {**_quartiles(w), "geomean": geo["w"]},
            "height_ratio": {**_quartiles(h), "geomean": geo["h"]},
            "iou": {**_quartiles(o), "mean": float(o.mean()) if n else math.nan}}


def bucket_index(areas: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """The size bucket of each area: k where ``edges[k] <= area < edges[k+1]`` (the last bucket
    also holds its upper edge), -1 outside every bucket (or where an edge is NaN)."""
    a = np.asarray(areas, dtype=np.float64).ravel()
    e = np.asarray(edges, dtype=np.float64)
    out = np.full(len(a), -1, dtype=np.int64)
    if len(e) < 2 or np.isnan(e).any():
        return out
    k = np.searchsorted(e, a, side="right") - 1
    k[a == e[-1]] = len(e) - 2
    ok = (k >= 0) & (k <= len(e) - 2)
    out[ok] = k[ok]
    return out


def check_ranges(ranges: Mapping[str, tuple[float, float]] | None, where: str) -> dict[str, tuple[float, float]]:
    """Validated named area ranges ``{name: (lo, hi)}``, ``[lo, hi)`` in pixels, hi may be inf;
    ``where`` (e.g. ``PanopticEvaluator(ranges=)``) starts the error messages."""
    out: dict[str, tuple[float, float]] = {}
    for name, rng in (ranges or {}).items():
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"{where} expects non-empty string names; got {name!r}")
        try:
            lo, hi = (float(v) for v in rng)
        except (TypeError, ValueError):
            raise ValueError(f"{where} expects (lo, hi) pairs of numbers; got {name!r}: {rng!r}") from None
        if not (math.isfinite(lo) and lo >= 0 and not math.isnan(hi) and hi > lo):
            raise ValueError(f"{where} expects 0 <= lo < hi (hi may be inf) in pixels; "
                             f"got {name!r}: ({lo:g}, {hi:g})")
        out[name] = (lo, hi)
    return out
