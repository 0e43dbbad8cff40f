"""Statistics computed from an index and sampled crops only (no image is decoded)."""
from __future__ import annotations

import numpy as np

from isus.index.index import Index
from isus.sampling.levels import LevelRule
from isus.sampling.policy import CropBatch


def _by_image(index: Index) -> tuple[np.ndarray, np.ndarray]:
    """Non-crowd instance rows grouped by image: (rows, CSR offsets over image positions)."""
    inst = index.instances
    keep = np.flatnonzero(~inst.iscrowd)
    order = keep[np.argsort(inst.image[keep], kind="stable")]
    start = index.image_range[0]
    offsets = np.searchsorted(inst.image[order], np.arange(start, index.image_range[1] + 1))
    return order, offsets


def crop_level_counts(index: Index, batch: CropBatch, levels: LevelRule) -> np.ndarray:
    """Instances each pyramid level receives over the crops of ``batch``.

    Every non-crowd instance whose box overlaps a crop's window counts once, at the level of
    its visible (window-clipped) box rescaled by the crop's scale. Returns counts per level of
    ``levels.levels``.
    """
    rows, offsets = _by_image(index)
    box = index.instances.box
    start = index.image_range[0]
    sizes = []
    for k in range(len(batch)):
        i = int(batch.image[k]) - start
        r = rows[offsets[i]:offsets[i + 1]]
        if not len(r):
            continue
        b = box[r].astype(np.float64)
        x0, y0, x1, y1 = batch.window[k]
        w = np.minimum(b[:, 2], x1) - np.maximum(b[:, 0], x0)
        h = np.minimum(b[:, 3], y1) - np.maximum(b[:, 1], y0)
        vis = (w > 0) & (h > 0)
        sizes.append(np.sqrt(w[vis] * h[vis]) * batch.scale[k])
    size = np.concatenate(sizes) if sizes else np.zeros(0)
    lv = levels.level_of(size)
    return np.array([(lv == l).sum() for l in levels.levels], dtype=np.int64)


def full_image_level_counts(index: Index, levels: LevelRule, shortest_side: float | None = None) -> np.ndarray:
    """Instances each level receives in one pass of full-image training (each image rescaled to
    ``shortest_side``), per level of ``levels.levels``."""
    inst = index.instances
    keep = ~inst.iscrowd
    b = inst.box[keep].astype(np.float64)
    k = inst.image[keep] - index.image_range[0]
    base = shortest_side / np.minimum(index.heights, index.widths)[k] if shortest_side else 1.0
    lv = levels.level_of(np.sqrt((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])) * base)
    return np.array([(lv == l).sum() for l in levels.levels], dtype=np.int64)
