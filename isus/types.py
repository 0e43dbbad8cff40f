"""Small immutable values passed between the stages of isus."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, NamedTuple, Sequence

import numpy as np

__all__ = ["Category", "ImageInfo", "Panoptic", "CropSpec", "SEGMENT_DTYPE", "make_segments", "category_segments", "SampledTargets"]

#: Structured dtype of :attr:`Panoptic.segments`: one row per segment of an image.
SEGMENT_DTYPE = np.dtype([("id", "<i4"), ("category_id", "<i4"), ("iscrowd", "?")])


@dataclass(frozen=True)
class Category:
    """A semantic class of a dataset.

    Attributes
    ----------
    id
        The dataset's own category id (MVD: index in the config's label list; Cityscapes:
        labelId; IDD: level3Id; COCO: the JSON's id). Not necessarily contiguous.
    name
        The dataset's own name of the class.
    isthing
        True for countable classes whose segments are instances.
    color
        RGB colour from the dataset's own config.
    evaluate
        False for classes the dataset excludes from evaluation (e.g. MVD's ``*-group``
        labels); their segments are loaded as crowd.
    """

    id: int
    name: str
    isthing: bool
    color: tuple[int, int, int]
    evaluate: bool = True

    def __post_init__(self) -> None:
        if len(self.color) != 3:
            raise ValueError(f"Category(color=) expects 3 ints (r, g, b); got {self.color!r}")


@dataclass(frozen=True)
class ImageInfo:
    """Where one image of a dataset is and how big it is.

    Attributes
    ----------
    index
        Position of the image in the dataset (0-based).
    image_id
        The dataset's own id: an int for COCO, a string key elsewhere.
    file_name
        Path of the image file, relative to the dataset root.
    height, width
        Size in pixels of the image and of its annotation.
    """

    index: int
    image_id: int | str
    file_name: str
    height: int
    width: int


@dataclass(frozen=True, eq=False)
class Panoptic:
    """Panoptic annotation of one image.

    Attributes
    ----------
    ids
        ``(H, W)`` int32 segment ids; 0 is void/unlabelled.
    segments
        Structured array of dtype :data:`SEGMENT_DTYPE` (``id``, ``category_id``,
        ``iscrowd``), one row per segment present in ``ids``, sorted by id.
    """

    ids: np.ndarray
    segments: np.ndarray

    def __post_init__(self) -> None:
        if self.ids.ndim != 2 or self.ids.dtype != np.int32:
            raise ValueError(f"Panoptic(ids=) expects an (H, W) int32 array; got {self.ids.dtype} {self.ids.shape}")
        if self.segments.dtype != SEGMENT_DTYPE:
            raise ValueError(f"Panoptic(segments=) expects dtype {SEGMENT_DTYPE}; got {self.segments.dtype}")

    def semantic(self, void: int = -1) -> np.ndarray:
        """``(H, W)`` int32 map of category ids, ``void`` where no segment is."""
        lut_ids = np.concatenate([[0], self.segments["id"]])
        lut_cat = np.concatenate([[void], self.segments["category_id"]]).astype(np.int32)
        order = np.argsort(lut_ids, kind="stable")
        pos = np.searchsorted(lut_ids[order], self.ids)
        return lut_cat[order][pos]


def make_segments(ids: Sequence[int] | np.ndarray, category_ids: Sequence[int] | np.ndarray,
                  iscrowd: Sequence[bool] | np.ndarray) -> np.ndarray:
    """Build a sorted :data:`SEGMENT_DTYPE` array from three equally long sequences."""
    seg = np.empty(len(ids), dtype=SEGMENT_DTYPE)
    seg["id"] = ids
    seg["category_id"] = category_ids
    seg["iscrowd"] = iscrowd
    return np.sort(seg, order="id")


def category_segments(category_ids: Iterable[int]) -> np.ndarray:
    """The segments of a semantic-only annotation: one per category, whose id is the category id.

    A semantic map read through it gives the index's scan (and annotation cache) and the crop
    engine the same segments: each class is one segment, and there are no instances.
    """
    ids = np.array(sorted(category_ids), dtype=np.int32)
    return make_segments(ids, ids, np.zeros(len(ids), bool))


#: Largest crop side and area (pixels) a sampler or the crop engine makes: a crop is decoded into
#: several full-size buffers (image, ids, semantic map, one mask per instance), so ``--crop 100000``
#: would otherwise try to allocate tens of GiB.
MAX_CROP_SIDE = 16384
MAX_CROP_PIXELS = 4096 * 4096


def check_crop_size(width: int, height: int, what: str) -> None:
    """Refuse a crop larger than :data:`MAX_CROP_SIDE` per side or :data:`MAX_CROP_PIXELS` in all."""
    if not (width <= MAX_CROP_SIDE and height <= MAX_CROP_SIDE and width * height <= MAX_CROP_PIXELS):
        raise ValueError(f"{what} expects a crop of at most {MAX_CROP_SIDE} pixels a side and {MAX_CROP_PIXELS} "
                         f"pixels in all (4096x4096); got {width}x{height}")


@dataclass(frozen=True)
class CropSpec:
    """One training crop, as a sampler draws it and the crop engine applies it.

    Attributes
    ----------
    image
        Image index in the dataset.
    category
        The sampled category id.
    instance
        Row of the chosen instance in ``index.instances`` (ISUS thing samples), else -1.
    level
        The pyramid level ISUS aimed the instance at, else -1.
    scale
        Total factor from original pixels to crop pixels (the ``s0`` rescale times σ).
    window
        ``(x0, y0, x1, y1)`` in original-image pixel-edge coordinates; ``(x1 - x0) * scale`` is the
        crop width. It may extend past the image border, where the crop engine pads.
    flip
        Flip the crop horizontally.
    """

    image: int
    category: int
    instance: int
    level: int
    scale: float
    window: tuple[float, float, float, float]
    flip: bool

    def __post_init__(self) -> None:
        if len(self.window) != 4:
            raise ValueError(f"CropSpec expects window=(x0, y0, x1, y1); got {self.window!r}")
        x0, y0, x1, y1 = self.window
        if not (x1 > x0 and y1 > y0 and self.scale > 0):
            raise ValueError(f"CropSpec expects x0 < x1, y0 < y1 and scale > 0; got window={self.window}, "
                             f"scale={self.scale}")
        w, h = (x1 - x0) * self.scale, (y1 - y0) * self.scale
        if not (math.isfinite(w) and math.isfinite(h)):
            raise ValueError(f"CropSpec expects a finite window and scale; got window={self.window}, scale={self.scale}")
        check_crop_size(round(w), round(h), "CropSpec")


class SampledTargets(NamedTuple):
    """A crop's segment map sampled with its per-pixel targets, from an annotation source
    (:meth:`isus.crop.sources.AnnotationSource.sample_targets`).

    Attributes
    ----------
    dense : (H, W) uint16 position + 1 in ``segments`` of each pixel's segment (0 void); None
        when only the ids were asked for
    ids : (H, W) int32 ``id_lut[dense]``
    semantic : (H, W) int64 ``sem_lut[dense]``, (0, 0) when only the ids were asked for
    crowd : (H, W) bool ``crowd_lut[dense]``, (0, 0) likewise
    area : (S,) int64 sampled pixels of each segment
    box : (S, 4) int64 each segment's box ``(x0, y0, x1, y1)`` in output pixels (exclusive ends;
        zeros when absent)
    segments : the segments table (:data:`SEGMENT_DTYPE`)
    size : the image's ``(H, W)``
    """

    dense: np.ndarray | None
    ids: np.ndarray
    semantic: np.ndarray
    crowd: np.ndarray
    area: np.ndarray
    box: np.ndarray
    segments: np.ndarray
    size: tuple[int, int]
