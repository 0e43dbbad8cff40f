"""Predictions next to the ground truth, one PNG per image: the image, the ground truth and the
prediction side by side, segments in their class colours, instance outlines, boxes and labels,
and the image's own PQ (``isus show``)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from isus.fsio import atomic_savefig
from isus.eval.evaluator import EvalResult
from isus.segments import segment_geometry
from isus.types import Category, Panoptic

__all__ = ["render_comparison", "score_line", "DEFAULT_MAX_SIZE", "MAX_LABELS"]

#: Longest side of each panel, in pixels (larger images are shown downscaled).
DEFAULT_MAX_SIZE = 1024
#: Labels written per panel at most (the largest segments first); boxes are drawn for every instance.
MAX_LABELS = 40


def score_line(res: EvalResult) -> str:
    """``PQ 53.2 (things 40.1, stuff 61.0), SQ 80.3, RQ 65.2`` (percent; ``n/a`` where undefined)."""
    def pct(v: float | None) -> str:
        return "n/a" if v is None or not math.isfinite(v) else f"{100 * v:.1f}"

    return f"PQ {pct(res.pq)} (things {pct(res.pq_th)}, stuff {pct(res.pq_st)}), SQ {pct(res.sq)}, RQ {pct(res.rq)}"


def _resize(a: np.ndarray, size: tuple[int, int], nearest: bool) -> np.ndarray:
    import cv2

    h, w = size
    if a.shape[:2] == (h, w):
        return a
    return np.asarray(cv2.resize(a, (w, h), interpolation=cv2.INTER_NEAREST_EXACT if nearest else cv2.INTER_AREA))


def _overlay(image: np.ndarray, p: Panoptic, colors: dict[int, tuple[int, ...]]) -> np.ndarray:
    """The image under the segments' class colours (void: the image darkened), with every
    segment's outline in white."""
    ids = p.ids
    seg = p.segments
    lut_ids = np.asarray(seg["id"], np.int64)
    pal = np.array([colors.get(int(c), (128, 128, 128)) for c in seg["category_id"]], np.float32).reshape(-1, 3)
    pos = np.searchsorted(lut_ids, ids) if len(lut_ids) else np.zeros(ids.shape, np.int64)
    known = (ids != 0) & (pos < len(lut_ids))
    if len(lut_ids):
        known &= lut_ids[np.minimum(pos, len(lut_ids) - 1)] == ids
    out = image.astype(np.float32) * 0.35  # void
    if len(lut_ids):
        color = pal[np.minimum(pos, len(lut_ids) - 1)]
        out[known] = 0.4 * image[known] + 0.6 * color[known]
    edge = np.zeros(ids.shape, bool)
    edge[:, 1:] |= ids[:, 1:] != ids[:, :-1]
    edge[1:, :] |= ids[1:, :] != ids[:-1, :]
    out[edge] = 255
    result: np.ndarray = np.clip(out, 0, 255).astype(np.uint8)
    return result


def _draw(ax: Any, p: Panoptic, categories: dict[int, Category], scale: float) -> int:
    """Boxes of the thing segments and class labels of the largest segments; returns how many
    segments were left without a label (beyond :data:`MAX_LABELS`)."""
    from matplotlib.patches import Rectangle

    seg = p.segments
    if not len(seg):
        return 0
    _, area, box = segment_geometry(p.ids, np.asarray(seg["id"]))
    order = [k for k in np.argsort(-area, kind="stable") if area[k] > 0]
    for k in order:
        cat = categories.get(int(seg["category_id"][k]))
        if cat is not None and cat.isthing:
            x0, y0, x1, y1 = (float(v) * scale for v in box[k])
            ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec="yellow", lw=0.8,
                                   ls="--" if seg["iscrowd"][k] else "-"))
    for k in order[:MAX_LABELS]:
        cat = categories.get(int(seg["category_id"][k]))
        name = (cat.name if cat is not None else f"id {int(seg['category_id'][k])}").split("--")[-1]
        x0, y0, x1, y1 = (float(v) * scale for v in box[k])
        if cat is not None and cat.isthing:
            xy, kw = (x0, y0), {"va": "bottom", "ha": "left"}
        else:
            xy, kw = ((x0 + x1) / 2, (y0 + y1) / 2), {"va": "center", "ha": "center"}
        ax.text(*xy, name + (" (crowd)" if seg["iscrowd"][k] else ""), fontsize=6, color="black",
                bbox={"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.7}, clip_on=True, **kw)
    return max(0, len(order) - MAX_LABELS)


def render_comparison(image: np.ndarray, gt: Panoptic, pred: Panoptic, categories: Sequence[Category],
                      path: str | Path, *, title: str = "", max_size: int = DEFAULT_MAX_SIZE) -> Path:
    """Write ``path``: ``image`` (H, W, 3 uint8 RGB), ``gt`` and ``pred`` side by side.

    Segments take their class colour (``Category.color``), every segment is outlined in white,
    thing segments have a yellow box (dashed: crowd) and the largest segments their class name.
    Panels larger than ``max_size`` on their longest side are downscaled (the title says so).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not isinstance(max_size, int) or max_size < 16:
        raise ValueError(f"render_comparison(max_size=) expects an int >= 16; got {max_size!r}")
    h, w = gt.ids.shape
    if image.shape[:2] != (h, w) or pred.ids.shape != (h, w):
        raise ValueError(f"render_comparison: image {image.shape[1]}x{image.shape[0]}, ground truth {w}x{h} and "
                         f"prediction {pred.ids.shape[1]}x{pred.ids.shape[0]} differ in size")
    scale = min(1.0, max_size / max(h, w))
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    shown = _resize(image, size, nearest=False)
    colors = {c.id: tuple(int(v) for v in c.color) for c in categories}
    by_id = {c.id: c for c in categories}
    dpi = 100
    panel_w = max(size[1] / dpi, 3.0)  # inches; small images are drawn larger, so that the titles fit
    panel_h = panel_w * size[0] / size[1]
    top = 0.75  # inches for the titles
    fig, axes = plt.subplots(1, 3, figsize=(3 * panel_w + 0.2, panel_h + top), dpi=dpi, squeeze=False)
    unlabelled = 0
    for ax, (name, p) in zip(axes[0], (("image", None), ("ground truth", gt), ("prediction", pred))):
        ax.set_axis_off()
        if p is None:
            ax.imshow(shown, interpolation="nearest")
        else:
            small = Panoptic(_resize(p.ids, size, nearest=True), p.segments)
            ax.imshow(_overlay(shown, small, colors), interpolation="nearest")
            unlabelled += _draw(ax, p, by_id, scale)
        ax.set_xlim(-0.5, size[1] - 0.5)
        ax.set_ylim(size[0] - 0.5, -0.5)
        ax.set_title(name + ("" if p is None else f" ({int((p.segments['id'] > 0).sum())} segments)"), fontsize=8)
    notes = []
    if scale < 1:
        notes.append(f"shown at {size[1]}x{size[0]} of {w}x{h} px")
    if unlabelled:
        notes.append(f"labels on the {MAX_LABELS} largest segments per panel")
    fig.suptitle(title + ("\n" + "; ".join(notes) if notes else ""), fontsize=8)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - (top - 0.1) / (panel_h + top), wspace=0.02)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        atomic_savefig(fig, out, dpi=dpi)
    finally:
        plt.close(fig)
    return out
