"""The crop engine: a CropSpec applied to an image and its annotation, crop-then-resize.

Only the window is resampled: the image is decoded at the coarsest level (1/2, 1/4, 1/8: JPEG
DCT scaling) that still has at least the crop's resolution, and warped straight into the crop.
With the index's image cache only the tiles the window covers are decoded, from that level;
without it the whole image is decoded at that level. With the annotation cache, the segment map
is sampled straight into the crop from the rows the crop's pixels fall on (nearest neighbour,
exactly as from the full-resolution map).

A semantic-only dataset (e.g. an MVD tree with only ``labels/``) has no segment ids: its semantic
map is read as one segment per category, as the index's scan reads it
(:func:`~isus.types.category_segments`), so its crops have an image and a semantic map and no
instance targets.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, NamedTuple

import cv2
import numpy as np

from isus import kernels
from isus.crop import functional as F
from isus.crop.functional import choose_reduce, crop_size, source_pixels, warp_plan
from isus.crop.sources import AnnotationSource, DecodedAnnotationSource, DecodedImageSource, ImageSource
from isus.datasets.base import PanopticDataset
from isus.index.cache import CachedAnnotationSource
from isus.index.image_cache import CachedImageSource
from isus.index.index import Index
from isus.types import CropSpec, SampledTargets

__all__ = ["CropConfig", "CropSample", "crop_sample", "CropEngine", "InstanceVisibility"]


_INTERPOLATION = {"linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC}


@dataclass(frozen=True)
class CropConfig:
    """How crops are produced.

    Attributes
    ----------
    ignore_label
        Semantic value of void, padding and (with ``crowd_as_ignore``) crowd pixels.
    pad_value
        Image value of pixels outside the original image.
    min_instance_area
        Instances with fewer visible pixels in the crop are dropped (counted in ``dropped``).
    crowd_as_ignore
        Crowd pixels get ``ignore_label`` in ``semantic`` (else their class).
    use_cache
        Read annotations and pixels from the index's caches when it has them.
    reduced_decode
        Decode JPEGs at 1/2, 1/4 or 1/8 when the crop's scale allows it.
    interpolation
        Image resampling: ``"linear"`` (bilinear) or ``"cubic"``. Downscaling by 2x or more is done
        by the JPEG decoder's DCT scaling (an area average), so the warp itself never shrinks by
        more than 2x.
    compact_targets
        Ship the segment map and tables instead of the maps derived from it. The per-instance
        masks are not built (``masks`` has shape (N, 0, 0)); for a dataset with segment ids the
        semantic and crowd maps are not built either (shape (0, 0)) and ``segment_table`` maps
        each segment id in the crop to its semantic value and crowd flag.
        :func:`isus.torch.expand_targets` rebuilds all three, equal to the default's, on the
        device the model runs on. Saves the CPU writing them and (N + 9) x H x W bytes per crop
        copied between processes. A semantic-only dataset keeps its semantic and crowd maps.
    min_visible_fraction
        Instances whose visible pixels in the crop are fewer than this fraction of their full area
        at the crop's scale (the index's area x scale², or the full annotation's without an index)
        are low-visibility. 0 (default): none.
    min_box_fraction
        Instances whose visible box's area is below this fraction of their full box's area (both
        in crop pixels, the full box as in ``original_boxes``) are low-visibility. 0 (default): none.
    low_visibility
        What happens to low-visibility instances: ``"drop"`` (default; removed like instances
        below ``min_instance_area`` and counted in ``dropped``) or ``"ignore"`` (kept, flagged
        ``True`` in ``CropSample.ignore``; the loss decides what to do with them).
    """

    ignore_label: int = 255
    pad_value: int = 0
    min_instance_area: int = 4
    crowd_as_ignore: bool = True
    use_cache: bool = True
    reduced_decode: bool = True
    interpolation: str = "linear"
    compact_targets: bool = False
    min_visible_fraction: float = 0.0
    min_box_fraction: float = 0.0
    low_visibility: str = "drop"

    def __post_init__(self) -> None:
        if self.interpolation not in _INTERPOLATION:
            raise ValueError(f"CropConfig(interpolation=) expects one of {sorted(_INTERPOLATION)}; "
                             f"got {self.interpolation!r}")
        if not 0 <= self.pad_value <= 255:
            raise ValueError(f"CropConfig(pad_value=) expects 0..255; got {self.pad_value!r}")
        if not self.min_instance_area >= 1:  # also NaN
            raise ValueError(f"CropConfig(min_instance_area=) expects >= 1; got {self.min_instance_area!r}")
        for name in ("min_visible_fraction", "min_box_fraction"):
            v = getattr(self, name)
            if not 0 <= v <= 1:  # also NaN
                raise ValueError(f"CropConfig({name}=) expects 0..1; got {v!r}")
        if self.low_visibility not in ("drop", "ignore"):
            raise ValueError(f"CropConfig(low_visibility=) expects 'drop' or 'ignore'; got {self.low_visibility!r}")

    @property
    def filters_visibility(self) -> bool:
        """Whether ``min_visible_fraction`` or ``min_box_fraction`` tests anything."""
        return self.min_visible_fraction > 0 or self.min_box_fraction > 0


@dataclass(frozen=True, eq=False)
class CropSample:
    """One crop and its targets, in crop pixel coordinates (after the flip, if any).

    Attributes
    ----------
    image : (H, W, 3) uint8 RGB
    panoptic : (H, W) int32 segment ids, 0 for void and padding (0 everywhere for a semantic-only
        dataset, which has no segment ids; its instance fields are then empty)
    semantic : (H, W) int64 training ids (position of the category in ``ds.categories``), ``ignore_label``
        for void, padding and crowd; (0, 0), not built, with ``compact_targets`` (see ``segment_table``)
    masks : (N, H, W) bool, one per thing instance in the crop (crowd excluded); (N, 0, 0), not
        built, with ``CropConfig(compact_targets=True)`` (mask ``j`` is ``panoptic == segment_ids[j]``)
    labels : (N,) int64 training ids; ``category_ids`` (N,) the dataset's ids; ``segment_ids`` (N,)
    boxes : (N, 4) float32 visible boxes xyxy, pixel edges, from the cropped masks
    original_boxes : (N, 4) float32 the instances' full extent, mapped into the crop (may extend beyond it)
    truncated : (N, 4) bool per side (x0, y0, x1, y1): the visible box touches the crop border
        there and the object extends beyond it (never at an image border)
    crowd : (H, W) bool pixels of crowd segments; (0, 0), not built, with ``compact_targets``
    dropped : instances dropped for having fewer than ``min_instance_area`` visible pixels, or
        (``low_visibility="drop"``) for being low-visibility (``min_visible_fraction``,
        ``min_box_fraction``)
    spec, window, scale, flip : what was applied
    segment_table : (S, 3) int64 with ``compact_targets`` (else None): rows ``(segment id,
        semantic value, crowd flag)`` of void (id 0) and of each segment in the crop, sorted by id,
        so that ``semantic`` and ``crowd`` are functions of ``panoptic``
    ignore : (N,) bool with ``CropConfig(low_visibility="ignore")`` (else None): the instance is
        low-visibility (``min_visible_fraction``, ``min_box_fraction``) and kept only to be ignored
    """

    image: np.ndarray
    panoptic: np.ndarray
    semantic: np.ndarray
    masks: np.ndarray
    labels: np.ndarray
    category_ids: np.ndarray
    segment_ids: np.ndarray
    boxes: np.ndarray
    original_boxes: np.ndarray
    truncated: np.ndarray
    crowd: np.ndarray
    dropped: int
    spec: CropSpec
    window: tuple[float, float, float, float] = field(default=(0, 0, 0, 0))
    scale: float = 1.0
    flip: bool = False
    segment_table: np.ndarray | None = None
    ignore: np.ndarray | None = None


@dataclass(frozen=True, eq=False)
class InstanceVisibility:
    """What a crop shows of each of its instances (:meth:`CropEngine.visibility`).

    Attributes
    ----------
    segment_ids, category_ids : (N,) int64
    size : (N,) float64 ``sqrt(area)`` of the instance's full box, in crop pixels
    area_fraction : (N,) float64 visible pixels over the full area at the crop's scale (clipped to 1)
    box_fraction : (N,) float64 the visible box's area over the full box's, in the crop (clipped to 1)
    """

    segment_ids: np.ndarray
    category_ids: np.ndarray
    size: np.ndarray
    area_fraction: np.ndarray
    box_fraction: np.ndarray


class _Tables(NamedTuple):
    isthing: np.ndarray
    crowd: np.ndarray
    lut_ids: np.ndarray
    train: np.ndarray
    sem_lut: np.ndarray
    crowd_lut: np.ndarray


class CropEngine:
    """Applies crop specs to one dataset, using its index for original boxes and the caches.

    The sources of pixels and segment maps are chosen once, here: the index's caches when
    ``config.use_cache`` and the index has them (:attr:`image_source`, :attr:`annotation_source`),
    else the dataset's files.

    Parameters
    ----------
    ds
        The dataset the index was built from.
    index
        Its :class:`~isus.Index` (original boxes, annotation cache). Without one the full
        annotation is decoded and boxes are computed from it.
    config
        A :class:`CropConfig`.
    verify
        Check that ``index`` was built from ``ds``: on construction the dataset's identity, every
        file name and a sample of images' file sizes and content samples
        (:meth:`Index.verify_dataset`); then each image's files the first time it is cropped.
        Raises :class:`~isus.IndexMismatchError` naming the first image that differs.
    """

    def __init__(self, ds: PanopticDataset, index: Index | None = None, config: CropConfig = CropConfig(),
                 verify: bool = True) -> None:
        self.ds, self.index, self.config = ds, index, config
        self._train_id = {c.id: k for k, c in enumerate(ds.categories)}
        self._isthing = {c.id: c.isthing for c in ds.categories}
        self._verify = verify and index is not None
        # Semantic-only: each category is one segment (as in the index), and none is an instance.
        self._semantic_only = not ds.has_instances
        self._verified: set[int] = set()
        self._decoded = DecodedAnnotationSource(ds)
        # original boxes: the index's, else scanned from the whole annotation
        self._boxes: Callable[[int, np.ndarray, np.ndarray], np.ndarray] = self._decoded_boxes
        if index is not None:
            if verify:
                index.verify_dataset(ds)
            elif [c.id for c in index.categories] != [c.id for c in ds.categories] or index.info.dataset.num_images != len(ds):
                raise ValueError("CropEngine(index=) was not built from this dataset (categories or image count differ)")
            inst = index.instances
            self._by_image = np.argsort(inst.image, kind="stable")
            self._image_offsets = np.searchsorted(inst.image[self._by_image],
                                                  np.arange(index.image_range[0], index.image_range[1] + 1))
            self._boxes = self._index_boxes
        #: where the pixels come from (:mod:`isus.crop.sources`)
        self.image_source: ImageSource = DecodedImageSource(ds)
        #: where the segment maps come from
        self.annotation_source: AnnotationSource = self._decoded
        if index is not None and config.use_cache and index.cache_dir is not None:
            self.annotation_source = CachedAnnotationSource(index)
            if index.image_cache is not None:
                self.image_source = CachedImageSource(index)

    # -- pieces -----------------------------------------------------------------------------------
    def _image(self, spec: CropSpec, size: tuple[int, int]) -> np.ndarray:
        cw, ch = size
        r = choose_reduce(spec.scale) if self.config.reduced_decode else 1
        m, win = warp_plan(spec, cw, ch, r)
        if self.config.interpolation == "linear":
            # Taps relative to the window's first pixel inside the image (the origin they always
            # had: the same floating-point values, so the same taps), then the source reads only
            # the pixels they touch, and the kernel reads the whole buffer it returns (no copy).
            xa, ya = max(win[0], 0), max(win[1], 0)
            xi, xw = kernels.bilinear_taps(m[0, 2] - xa, m[0, 0], cw)
            yi, yw = kernels.bilinear_taps(m[1, 2] - ya, m[1, 1], ch)
            taps = (xa + int(xi.min()), ya + int(yi.min()), xa + int(xi.max()) + 2, ya + int(yi.max()) + 2)
            img, ox, oy = self.image_source.window(spec.image, r, taps)
            if img.size == 0:  # the window lies outside the image
                return np.full((ch, cw, 3), self.config.pad_value, np.uint8)
            # separable, in exact integer arithmetic, straight into RGB order; neighbours outside
            # the buffer are outside the image (it covers the taps' pixels inside it) and read pad
            if xa != ox:
                xi += xa - ox
            if ya != oy:
                yi += ya - oy
            return kernels.resample_bilinear(img, xi, xw, yi, yw, self.config.pad_value, True,
                                             np.empty((ch, cw, 3), np.uint8))
        img, ox, oy = self.image_source.window(spec.image, r, win)
        # the resampling reads exactly the window clipped to the image, wherever the buffer starts
        xa, ya = max(win[0], ox), max(win[1], oy)
        xb, yb = min(win[2], ox + img.shape[1]), min(win[3], oy + img.shape[0])
        if xb <= xa or yb <= ya:
            return np.full((ch, cw, 3), self.config.pad_value, np.uint8)
        img = img[ya - oy:yb - oy, xa - ox:xb - ox]
        m[0, 2] -= xa
        m[1, 2] -= ya
        pad = (self.config.pad_value,) * 3
        out = cv2.warpAffine(img, m, (cw, ch), flags=_INTERPOLATION[self.config.interpolation] | cv2.WARP_INVERSE_MAP,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=pad)
        return cv2.cvtColor(out, cv2.COLOR_BGR2RGB)

    def _index_boxes(self, i: int, seg_ids: np.ndarray, keep: np.ndarray) -> np.ndarray:
        """Full-extent boxes (original pixels, float64) of segments ``seg_ids[keep]`` of image
        ``i``, from the index."""
        return self._index_extent(i, seg_ids, keep)[0]

    def _index_extent(self, i: int, seg_ids: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Full-extent boxes (original pixels, float64) and areas (original pixels, float64) of
        segments ``seg_ids[keep]`` of image ``i``, from the index."""
        assert self.index is not None  # chosen only with an index
        if not len(keep):
            return np.zeros((0, 4), np.float64), np.zeros(0, np.float64)
        k = i - self.index.image_range[0]
        rows = self._by_image[self._image_offsets[k]:self._image_offsets[k + 1]]
        inst = self.index.instances
        order = np.argsort(inst.segment_id[rows])
        pos = np.searchsorted(inst.segment_id[rows][order], seg_ids[keep])
        at = rows[order[np.minimum(pos, len(order) - 1)]]
        boxes: np.ndarray = inst.box[at].astype(np.float64)
        return boxes, inst.area[at].astype(np.float64)

    def _decoded_boxes(self, i: int, seg_ids: np.ndarray, keep: np.ndarray) -> np.ndarray:
        """Without an index: full-extent boxes of segments ``seg_ids[keep]`` (``seg_ids``: all of
        image ``i``'s) from its whole annotation."""
        if not len(keep):
            return np.zeros((0, 4), np.float64)
        boxes: np.ndarray = self._decoded.boxes(i, seg_ids)[keep]
        return boxes

    def _decoded_extent(self, i: int, seg_ids: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Without an index: full-extent boxes and areas (float64, original pixels) of segments
        ``seg_ids[keep]`` from image ``i``'s whole annotation."""
        if not len(keep):
            return np.zeros((0, 4), np.float64), np.zeros(0, np.float64)
        full = self.ds.load_panoptic(i).ids
        fd = kernels.dense_segments(full, seg_ids.astype(np.int32))
        area, box = kernels.scan_dense(fd, len(seg_ids), 1)[:2]
        return box[keep].astype(np.float64), area[keep].astype(np.float64)

    # -- the sample -------------------------------------------------------------------------------
    def _verify_once(self, i: int) -> None:
        if self._verify and i not in self._verified:
            # First use of this image here: its files must still be those the index was built from.
            assert self.index is not None  # _verify implies an index
            self.index.verify_image(self.ds, i, names=False)
            self._verified.add(i)

    def _tables(self, segments: np.ndarray) -> _Tables:
        """Per segment of ``segments``: thing and crowd flags, training id, and the lookup tables
        of segment id, semantic value and crowd flag by position + 1 (0 void)."""
        cfg = self.config
        cats = segments["category_id"]
        isthing = np.array([self._isthing[int(c)] for c in cats], dtype=bool)
        lut_ids = np.concatenate([[0], segments["id"]]).astype(np.int32)
        if self._semantic_only:  # a category segment is a class, not an instance, and has no id
            isthing[:] = False
            lut_ids[:] = 0
        crowd = segments["iscrowd"].astype(bool)
        train = np.array([self._train_id[int(c)] for c in cats], dtype=np.int64)
        return _Tables(isthing, crowd, lut_ids, train, F.semantic_lut(train, crowd, cfg.ignore_label, cfg.crowd_as_ignore),
                       np.concatenate([[False], crowd]))

    def _sampled(self, spec: CropSpec, size: tuple[int, int], maps: bool) -> tuple[SampledTargets, _Tables]:
        """The crop's segment map and per-pixel targets, sampled in one pass where the source can
        (``maps=False``, compact targets: the id map only), and the segments' tables."""
        self._verify_once(spec.image)
        cw, ch = size
        xs = source_pixels(spec.window[0], spec.scale, cw)
        ys = source_pixels(spec.window[1], spec.scale, ch)
        tables: list[_Tables] = []  # the source hands the segments over once, before sampling

        def luts(segments: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            tables.append(self._tables(segments))
            return tables[0].lut_ids, tables[0].sem_lut, tables[0].crowd_lut

        got = self.annotation_source.sample_targets(spec.image, ys, xs, spec.flip, luts, maps)
        return got, tables[0]

    def _extent_in_crop(self, spec: CropSpec, size: tuple[int, int], seg_ids: np.ndarray, keep: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Full boxes (original pixels) of segments ``seg_ids[keep]``, their full areas at the
        crop's scale, and the full boxes mapped into the crop: what the visibility filters compare."""
        extent = self._index_extent if self.index is not None else self._decoded_extent
        full, full_area = extent(spec.image, seg_ids, keep)
        return full, full_area * spec.scale ** 2, F.map_boxes(full, spec.window, spec.scale, spec.flip, size[0])

    def visibility(self, spec: CropSpec) -> InstanceVisibility:
        """How much of each instance ``spec``'s crop shows, from its segment map alone (no pixels
        are decoded): the instances the crop would hold before any visibility filter (things, not
        crowd, at least ``min_instance_area`` visible pixels), with the fractions that
        ``min_visible_fraction`` and ``min_box_fraction`` compare (:func:`~isus.crop.functional.visible_fractions`)."""
        size = crop_size(spec)
        got, tab = self._sampled(spec, size, maps=False)
        segments, area, vbox = got.segments, got.area, got.box
        keep, _ = F.select_instances(area, tab.isthing, tab.crowd, self.config.min_instance_area)
        full, full_area, original = self._extent_in_crop(spec, size, segments["id"], keep)
        area_frac, box_frac = F.visible_fractions(area[keep], full_area, vbox[keep], original)
        side = np.sqrt(np.clip(full[:, 2] - full[:, 0], 0, None) * np.clip(full[:, 3] - full[:, 1], 0, None))
        return InstanceVisibility(segment_ids=segments["id"][keep].astype(np.int64),
                                  category_ids=segments["category_id"][keep].astype(np.int64),
                                  size=side * spec.scale, area_fraction=area_frac, box_fraction=box_frac)

    def __call__(self, spec: CropSpec) -> CropSample:
        cfg = self.config
        size = crop_size(spec)
        image = self._image(spec, size)
        compact = cfg.compact_targets and not self._semantic_only
        got, tab = self._sampled(spec, size, maps=not compact)
        ids, area, vbox, segments, image_size = got.ids, got.area, got.box, got.segments, got.size
        isthing, crowd_flag, train = tab.isthing, tab.crowd, tab.train
        seg_ids, cats = segments["id"], segments["category_id"]
        table = None
        if compact:
            # semantic and crowd are functions of the segment id here: ship the table, not the maps
            semantic, crowd = np.zeros((0, 0), np.int64), np.zeros((0, 0), bool)
            rows = np.concatenate([[0], 1 + np.flatnonzero(area > 0)])  # void and the segments present
            table = np.stack([tab.lut_ids[rows], tab.sem_lut[rows], tab.crowd_lut[rows]], axis=1).astype(np.int64)
            table = table[np.argsort(table[:, 0], kind="stable")]
        else:
            semantic, crowd = got.semantic, got.crowd
        keep, dropped = F.select_instances(area, isthing, crowd_flag, cfg.min_instance_area)
        ignore = None
        if cfg.filters_visibility:
            full, full_area, original = self._extent_in_crop(spec, size, seg_ids, keep)
            low = F.low_visibility(area[keep], full_area, vbox[keep], original, cfg.min_visible_fraction,
                                   cfg.min_box_fraction)
            if cfg.low_visibility == "drop":
                keep, full, original = keep[~low], full[~low], original[~low]
                dropped += int(low.sum())
            else:
                ignore = low
        else:
            full = self._boxes(spec.image, seg_ids, keep)
            original = F.map_boxes(full, spec.window, spec.scale, spec.flip, size[0])
            if cfg.low_visibility == "ignore":
                ignore = np.zeros(len(keep), bool)
        boxes = vbox[keep].astype(np.float32)
        truncated = F.truncated_sides(boxes, original, F.image_border_sides(full, image_size, spec.flip), size)
        if cfg.compact_targets:
            masks = np.zeros((len(keep), 0, 0), bool)
        else:
            # Compare only inside each visible box: most instances are small next to the crop.
            assert got.dense is not None  # sampled with maps
            masks = kernels.instance_masks(got.dense, keep.astype(np.int64), vbox[keep])
        return CropSample(
            image=image, panoptic=ids, semantic=semantic, masks=masks,
            labels=train[keep], category_ids=cats[keep].astype(np.int64), segment_ids=seg_ids[keep].astype(np.int64),
            boxes=boxes, original_boxes=original.astype(np.float32), truncated=truncated,
            crowd=crowd, dropped=int(dropped), spec=spec, window=spec.window,
            scale=spec.scale, flip=spec.flip, segment_table=table, ignore=ignore)


def crop_sample(ds: PanopticDataset, spec: CropSpec, *, index: Index | None = None,
                config: CropConfig | None = None, **options: Any) -> CropSample:
    """Apply ``spec`` to ``ds`` (one-off; build a :class:`CropEngine` to crop many).

    ``options`` override :class:`CropConfig` fields, e.g. ``ignore_label=255``.
    """
    config = replace(config or CropConfig(), **options)
    return CropEngine(ds, index, config)(spec)
