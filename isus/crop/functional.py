"""The crop engine's geometry as small pure functions, one per target kind (torchvision's
``transforms/v2/functional`` style): where a crop reads, how original boxes map into it, which
of their sides are truncated, which instances it keeps.

Coordinates: boxes are ``(x0, y0, x1, y1)`` pixel edges (``x1`` = last column + 1); a crop spec's
window is in original pixels and its scale maps original pixels to crop pixels. A horizontal flip
mirrors the crop, so it is applied after the window and the scale.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from isus.types import CropSpec

__all__ = ["crop_size", "choose_reduce", "source_pixels", "warp_plan", "sample_map", "crop_boxes",
           "hflip_boxes", "map_boxes", "image_border_sides", "truncated_sides", "semantic_lut",
           "select_instances", "visible_fractions", "low_visibility"]

#: Tolerance of the truncation test: a mapped box edge must pass the crop border by more.
TRUNCATION_EPS = 1e-6


def crop_size(spec: CropSpec) -> tuple[int, int]:
    """``(width, height)`` in crop pixels of ``spec``'s window at its scale."""
    x0, y0, x1, y1 = spec.window
    return max(1, int(round((x1 - x0) * spec.scale))), max(1, int(round((y1 - y0) * spec.scale)))


def choose_reduce(scale: float, allowed: Sequence[int] = (8, 4, 2, 1)) -> int:
    """Coarsest decode reduction whose resolution still covers the crop's (``r * scale <= 1``)."""
    for r in allowed:
        if r * scale <= 1.0 + 1e-9:
            return r
    return 1


def source_pixels(start: float, scale: float, n: int) -> np.ndarray:
    """Original pixel under the centre of each of ``n`` crop pixels (nearest neighbour)."""
    px: np.ndarray = np.floor(start + (np.arange(n) + 0.5) / scale).astype(np.int64)
    return px


def warp_plan(spec: CropSpec, cw: int, ch: int, r: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The inverse map (2x3, crop pixel -> pixel of the level 1/``r``) of ``spec``'s image, and the
    level pixels ``(x0, y0, x1, y1)`` it reads (2 beyond the extremes: bicubic's support).

    Crop pixel centre u + 0.5 sits at original x0 + (u + 0.5) / s, i.e. at level pixel index
    (x0 + (u + 0.5) / s) / r - 0.5 (pixel centres at integers). A flip reads u from the right.
    The resampling gets exactly the window's pixels, clipped to the image, whether they come from
    cache tiles or a whole decode, so a lossless cache gives bit-identical crops.
    """
    s = spec.scale
    x0, y0 = spec.window[:2]
    if spec.flip:
        mx = [-1 / (s * r), 0, (x0 + (cw - 0.5) / s) / r - 0.5]
    else:
        mx = [1 / (s * r), 0, (x0 + 0.5 / s) / r - 0.5]
    m = np.array([mx, [0, 1 / (s * r), (y0 + 0.5 / s) / r - 0.5]], dtype=np.float64)
    xs = (m[0, 2], m[0, 0] * (cw - 1) + m[0, 2])
    ys = (m[1, 2], m[1, 1] * (ch - 1) + m[1, 2])
    win = (int(np.floor(min(xs))) - 2, int(np.floor(min(ys))) - 2,
           int(np.ceil(max(xs))) + 3, int(np.ceil(max(ys))) + 3)
    return m, win


def sample_map(ids: np.ndarray, ys: np.ndarray, xs: np.ndarray, void: int) -> np.ndarray:
    """Nearest-neighbour sample ``ids[ys][:, xs]`` of a label map; rows and columns outside the
    map read ``void``. A new array (``ids`` is not changed)."""
    h, w = ids.shape
    inside_x, inside_y = (xs >= 0) & (xs < w), (ys >= 0) & (ys < h)
    out: np.ndarray = ids[np.ix_(np.clip(ys, 0, h - 1), np.clip(xs, 0, w - 1))]
    out[~inside_y, :] = void
    out[:, ~inside_x] = void
    return out


def crop_boxes(boxes: np.ndarray, origin: tuple[float, float], scale: float) -> np.ndarray:
    """Boxes (N, 4) in original pixels -> pixels of a crop whose top-left corner is original
    point ``origin`` and whose scale is ``scale`` (float64)."""
    x0, y0 = origin
    out = np.empty((len(boxes), 4), np.float64)
    out[:, [0, 2]] = (boxes[:, [0, 2]] - x0) * scale
    out[:, [1, 3]] = (boxes[:, [1, 3]] - y0) * scale
    return out


def hflip_boxes(boxes: np.ndarray, width: float) -> np.ndarray:
    """Boxes (N, 4) mirrored in a canvas ``width`` wide: ``x0, x1 -> width - x1, width - x0``."""
    out = np.array(boxes, np.float64)
    out[:, 0], out[:, 2] = width - boxes[:, 2], width - boxes[:, 0]
    return out


def map_boxes(boxes: np.ndarray, window: Sequence[float], scale: float, flip: bool, crop_width: int) -> np.ndarray:
    """Boxes (N, 4) in original pixels -> crop pixels of the crop of ``window`` at ``scale``,
    mirrored in its ``crop_width`` when ``flip`` (float64; they may extend beyond the crop)."""
    out = crop_boxes(boxes, (window[0], window[1]), scale)
    return hflip_boxes(out, crop_width) if flip else out


def image_border_sides(boxes: np.ndarray, image_size: tuple[int, int], flip: bool) -> np.ndarray:
    """(N, 4) bool: which sides ``(x0, y0, x1, y1)`` of boxes (N, 4) in original pixels lie on
    the border of their ``image_size`` ``(H, W)`` image, named as the sides of the crop (a flip
    swaps left and right)."""
    h, w = image_size
    left, right = boxes[:, 0] <= 0, boxes[:, 2] >= w
    if flip:
        left, right = right, left
    return np.stack([left, boxes[:, 1] <= 0, right, boxes[:, 3] >= h], axis=1)


def truncated_sides(visible: np.ndarray, mapped: np.ndarray, at_image_border: np.ndarray,
                    crop_size: tuple[int, int], eps: float = TRUNCATION_EPS) -> np.ndarray:
    """(N, 4) bool: which sides ``(x0, y0, x1, y1)`` of each instance are truncated by a
    ``crop_size`` ``(W, H)`` crop.

    A side is truncated when the visible box (``visible``, crop pixels) touches the crop border
    there and the object really continues past it: its full extent (``mapped``, from
    :func:`map_boxes`) passes the border by more than ``eps``, and that side is not at the image
    border (``at_image_border``, from :func:`image_border_sides`): an object ending at the image
    border does not continue.
    """
    cw, ch = crop_size
    inside = ~at_image_border
    return np.stack([
        (visible[:, 0] <= 0) & (mapped[:, 0] < -eps) & inside[:, 0],
        (visible[:, 1] <= 0) & (mapped[:, 1] < -eps) & inside[:, 1],
        (visible[:, 2] >= cw) & (mapped[:, 2] > cw + eps) & inside[:, 2],
        (visible[:, 3] >= ch) & (mapped[:, 3] > ch + eps) & inside[:, 3],
    ], axis=1)


def semantic_lut(train_ids: np.ndarray, crowd: np.ndarray, ignore_label: int, crowd_as_ignore: bool) -> np.ndarray:
    """Semantic value (int64) of each dense segment index: ``ignore_label`` for void (index 0)
    and, with ``crowd_as_ignore``, for crowd segments; else the segment's training id."""
    lut: np.ndarray = np.concatenate([[ignore_label], np.where(crowd & crowd_as_ignore, ignore_label, train_ids)])
    return lut.astype(np.int64)


def select_instances(area: np.ndarray, isthing: np.ndarray, crowd: np.ndarray, min_area: int) -> tuple[np.ndarray, int]:
    """Positions of the segments kept as instances (things, not crowd, at least ``min_area``
    visible pixels) and how many visible thing segments were dropped for being smaller."""
    cand = np.flatnonzero((area > 0) & isthing & ~crowd)
    keep = cand[area[cand] >= min_area]
    return keep, len(cand) - len(keep)


def visible_fractions(visible_area: np.ndarray, full_area: np.ndarray, visible: np.ndarray,
                      mapped: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N,) float64 each: the visible area over the full area, and the visible box's area over the
    full box's area, all at the crop's scale.

    ``visible_area``: visible pixels in the crop; ``full_area``: the instance's whole area in
    crop pixels (original area x scale²); ``visible``: visible boxes (crop pixels); ``mapped``:
    the full boxes mapped into the crop (:func:`map_boxes`). Both fractions are clipped to 1
    (nearest-neighbour sampling can count a few more pixels than area x scale²); an empty full
    area or box gives 1 (nothing to lose).
    """
    full_area = np.asarray(full_area, np.float64)
    va = np.asarray(visible_area, np.float64)
    area_frac = np.where(full_area > 0, va / np.where(full_area > 0, full_area, 1), 1.0)

    def box_area(b: np.ndarray) -> np.ndarray:
        b = np.asarray(b, np.float64).reshape(-1, 4)
        out: np.ndarray = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
        return out

    fb = box_area(mapped)
    box_frac = np.where(fb > 0, box_area(visible) / np.where(fb > 0, fb, 1), 1.0)
    return np.minimum(area_frac, 1.0), np.minimum(box_frac, 1.0)


def low_visibility(visible_area: np.ndarray, full_area: np.ndarray, visible: np.ndarray, mapped: np.ndarray,
                   min_visible_fraction: float, min_box_fraction: float) -> np.ndarray:
    """(N,) bool: instances whose visible area is below ``min_visible_fraction`` of their full
    area, or whose visible box's area is below ``min_box_fraction`` of their full box's area (at
    the crop's scale; :func:`visible_fractions`). A threshold of 0 tests nothing."""
    area_frac, box_frac = visible_fractions(visible_area, full_area, visible, mapped)
    low: np.ndarray = np.zeros(len(area_frac), bool)
    if min_visible_fraction > 0:
        low |= area_frac < min_visible_fraction
    if min_box_fraction > 0:
        low |= box_frac < min_box_fraction
    return low
