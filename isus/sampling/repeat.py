"""Repeat factors of repeat-factor sampling (RFS, from LVIS), computed from an index's class table.

LVIS (Gupta, Dollár, Girshick, CVPR 2019; the formula as detectron2's
``RepeatFactorTrainingSampler.repeat_factors_from_category_frequency`` and mmengine's
``ClassBalancedDataset`` implement it): for each category ``c``, ``f_c`` is the fraction of the
training images that contain ``c``; its repeat factor is ``r_c = max(1, sqrt(t / f_c))`` (or
``max(1, t / f_c)`` without the square root, detectron2's ``sqrt=False``); an image's repeat
factor is the largest ``r_c`` of the categories it contains.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from isus.errors import IsusError
from isus.index import Index
from isus.index.schema import csr_gather

__all__ = ["RepeatFactors", "class_repeat_factors", "repeat_factors"]


def class_repeat_factors(frequency: np.ndarray, threshold: float, sqrt: bool = True) -> np.ndarray:
    """``r_c = max(1, sqrt(t / f_c))`` (``sqrt=False``: ``max(1, t / f_c)``) for image
    frequencies ``f_c`` in ``(0, 1]`` and threshold ``t``."""
    f = np.asarray(frequency, dtype=np.float64)
    if not (f > 0).all():
        raise ValueError("class_repeat_factors(frequency=) expects frequencies > 0")
    ratio = threshold / f
    factor: np.ndarray = np.maximum(1.0, np.sqrt(ratio) if sqrt else ratio)
    return factor


@dataclass(frozen=True)
class RepeatFactors:
    """Class and image repeat factors of an index.

    Attributes
    ----------
    classes : (C,) int64 the category ids considered
    images_with_class : (C,) int64 how many of the eligible images contain each
    frequency : (C,) float64 ``f_c = images_with_class / num_eligible``
    class_factor : (C,) float64 ``r_c``
    image_factor : (I,) float64 ``r_i`` of each image of the index (position ``i - image_range[0]``);
        0 for an image that contains none of :attr:`classes` (it is not drawn)
    threshold, sqrt
        ``t`` and whether the square root is taken.
    """

    classes: np.ndarray
    images_with_class: np.ndarray
    frequency: np.ndarray
    class_factor: np.ndarray
    image_factor: np.ndarray
    threshold: float
    sqrt: bool

    @property
    def num_eligible(self) -> int:
        """Images containing at least one of :attr:`classes`: the denominator of ``f_c``."""
        return int((self.image_factor > 0).sum())


def repeat_factors(index: Index, classes: Sequence[int] | np.ndarray | None = None, *, threshold: float = 0.001,
                   sqrt: bool = True) -> RepeatFactors:
    """LVIS repeat factors of ``classes`` (default: the categories present in the index whose
    ``evaluate`` flag is set, the classes :class:`~isus.SamplingPolicy` samples) over the images
    of ``index``.

    An image *contains* a category when it has pixels of it (a row of ``index.classes``; a crowd
    segment counts). The training images are those containing at least one of ``classes``:
    the others get ``r_i = 0`` and are not counted in ``f_c`` -- as in detectron2, whose loader
    drops images without annotations (``DATALOADER.FILTER_EMPTY_ANNOTATIONS``, on by default)
    before computing the factors.
    """
    table = index.classes
    if classes is None:
        counts_all = np.diff(table.class_offsets)
        ids = np.array([c.id for c, n in zip(index.categories, counts_all) if n > 0 and c.evaluate], dtype=np.int64)
    else:
        ids = np.asarray(classes, dtype=np.int64)
    if len(ids) == 0:
        raise IsusError("repeat_factors(): no category to compute repeat factors of (is the index empty?)")
    ranks = index.category_ranks(ids)
    per_class = (table.class_offsets[ranks + 1] - table.class_offsets[ranks]).astype(np.int64)
    if (per_class == 0).any():
        missing = ids[per_class == 0].tolist()
        raise IsusError(f"repeat_factors(): category ids {missing} have no pixels in the index (frequency 0)")
    rows = csr_gather(table.class_offsets, ranks)
    which = np.repeat(np.arange(len(ids)), per_class)
    local = table.image[rows].astype(np.int64) - index.image_range[0]
    num_images = index.image_range[1] - index.image_range[0]
    eligible = np.zeros(num_images, bool)
    eligible[local] = True
    frequency = per_class / eligible.sum()
    factor = class_repeat_factors(frequency, threshold, sqrt)
    image_factor = np.zeros(num_images, np.float64)
    np.maximum.at(image_factor, local, factor[which])
    return RepeatFactors(ids, per_class, frequency, factor, image_factor, float(threshold), bool(sqrt))
