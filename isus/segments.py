"""Per-segment geometry of a segment-id map, from the index's scan kernels (one pass each)."""
from __future__ import annotations

import numpy as np

from isus import kernels

__all__ = ["segment_geometry"]


def segment_geometry(ids: np.ndarray, seg_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(dense, area, box)`` of the segments ``seg_ids`` (sorted ascending) in the id map ``ids``.

    ``dense`` maps ``seg_ids[k]`` to ``k + 1`` and everything else to 0; ``area`` is ``(n,)`` pixel
    counts; ``box`` is ``(n, 4)`` ``x0, y0, x1, y1`` in pixel-edge coordinates (empty segments:
    ``x0 > x1``).
    """
    seg_ids = np.ascontiguousarray(seg_ids)
    dense = kernels.dense_segments(ids, seg_ids)
    area, box, _, _ = kernels.scan_dense(dense, len(seg_ids), 1)
    return dense, area, box
