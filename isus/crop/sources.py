"""Where the crop engine reads pixels and segment maps: one interface, two implementations.

An :class:`ImageSource` gives the BGR pixels of a window of an image at a reduction level; an
:class:`AnnotationSource` samples an image's segment map at given rows and columns. The
decoding implementations here read the dataset's files through its public API; the cached ones
live with their caches (:class:`~isus.index.image_cache.CachedImageSource`,
:class:`~isus.index.cache.CachedAnnotationSource`) and give the same values (bit-identical with a
lossless image cache). :class:`~isus.crop.CropEngine` picks its sources once, when it is built.
"""
from __future__ import annotations

from typing import Callable, Protocol, runtime_checkable

import numpy as np

from isus import kernels
from isus.crop.functional import sample_map
from isus.datasets.base import PanopticDataset
from isus.types import Panoptic, SampledTargets, category_segments

__all__ = ["ImageSource", "AnnotationSource", "DecodedImageSource", "DecodedAnnotationSource"]


@runtime_checkable
class ImageSource(Protocol):
    """Pixels of image ``i`` at level ``1/reduce``."""

    def window(self, i: int, reduce: int, window: tuple[int, int, int, int]) -> tuple[np.ndarray, int, int]:
        """BGR uint8 pixels (h, w, 3) of image ``i`` at level ``1/reduce`` (1, 2, 4, 8) covering at
        least the part of ``window`` ``(x0, y0, x1, y1)`` (that level's pixels) inside the image,
        and the level pixel ``(ox, oy)`` of the buffer's pixel (0, 0)."""
        ...


@runtime_checkable
class AnnotationSource(Protocol):
    """Nearest-neighbour samples of image ``i``'s segment map."""

    def sample(self, i: int, ys: np.ndarray, xs: np.ndarray, flip: bool) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
        """Sample image ``i``'s segment map at rows ``ys`` and columns ``xs`` (non-decreasing
        original pixels, void outside the image; ``flip`` reverses the columns).

        Returns
        -------
        dense : (len(ys), len(xs)) uint16, the position + 1 in ``segments`` of each sampled
            pixel's segment, 0 for void
        segments : the segments table (:data:`~isus.types.SEGMENT_DTYPE`)
        size : the image's ``(H, W)``
        """
        ...

    def sample_targets(self, i: int, ys: np.ndarray, xs: np.ndarray, flip: bool,
                       luts: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]], maps: bool = True
                       ) -> SampledTargets:
        """:meth:`sample` with the crop's per-pixel targets (one pass where the source can).

        ``luts(segments)`` gives the lookup tables ``(id_lut, sem_lut, crowd_lut)`` indexed by
        position + 1 in ``segments`` (0 void). With ``maps=False`` only the id map is built (compact
        targets: no dense indices, semantic map or crowd mask). Returns
        :class:`~isus.types.SampledTargets`, the values :func:`~isus.kernels.crop_maps` gives on
        :meth:`sample`'s dense map.
        """
        ...


class DecodedImageSource:
    """Decodes the whole image at the level (JPEG DCT scaling), whatever the window: origin (0, 0)."""

    def __init__(self, ds: PanopticDataset) -> None:
        self.ds = ds

    def window(self, i: int, reduce: int, window: tuple[int, int, int, int]) -> tuple[np.ndarray, int, int]:
        return self.ds.load_image(i, reduce, bgr=True), 0, 0


class DecodedAnnotationSource:
    """Decodes the whole annotation and samples it.

    A semantic-only dataset has no segment ids: its semantic map is read as one segment per
    category, as the index's scan reads it (:func:`~isus.types.category_segments`).
    """

    def __init__(self, ds: PanopticDataset) -> None:
        self.ds = ds
        self._semantic_only = not ds.has_instances
        self._category_segments = category_segments(c.id for c in ds.categories)

    def sample(self, i: int, ys: np.ndarray, xs: np.ndarray, flip: bool) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
        if flip:
            xs = xs[::-1]
        if self._semantic_only:  # void is -1 here: 0 is a category
            ids, segments, void = self.ds.load_semantic(i), self._category_segments, -1
        else:
            pan: Panoptic = self.ds.load_panoptic(i)
            ids, segments, void = pan.ids, pan.segments, 0
        out = sample_map(ids, ys, xs, void)
        h, w = ids.shape
        return kernels.dense_segments(out, segments["id"].astype(np.int32)), segments, (h, w)

    def sample_targets(self, i: int, ys: np.ndarray, xs: np.ndarray, flip: bool,
                       luts: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]], maps: bool = True
                       ) -> SampledTargets:
        dense, segments, size = self.sample(i, ys, xs, flip)
        id_lut, sem_lut, crowd_lut = luts(segments)
        if maps:
            ids, sem, crowd, area, box = kernels.crop_maps(dense, id_lut, sem_lut, crowd_lut)
            return SampledTargets(dense, ids, sem, crowd, area, box, segments, size)
        ids, area, box = kernels.crop_ids(dense, id_lut)
        empty = np.zeros((0, 0), np.int64)
        return SampledTargets(None, ids, empty, empty.astype(bool), area, box, segments, size)

    def boxes(self, i: int, segment_ids: np.ndarray) -> np.ndarray:
        """Full-extent boxes (len(segment_ids), 4) float64 in original pixels of image ``i``'s
        segments ``segment_ids`` (all of the image's, in its order), from the whole annotation."""
        full = self.ds.load_panoptic(i).ids
        fd = kernels.dense_segments(full, segment_ids.astype(np.int32))
        boxes: np.ndarray = kernels.scan_dense(fd, len(segment_ids), 1)[1].astype(np.float64)
        return boxes
