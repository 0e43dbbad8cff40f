"""CUS, ISUS and repeat-factor sampling (RFS) as vectorised draws over the index arrays.

CUS/ISUS: class -> image -> (ISUS things: instance -> level -> clamped σ) -> crop window; RFS:
image by its repeat factor -> (a class of the image -> σ -> crop window, or the whole image);
for a whole batch of samples at once with numpy; nothing is decoded.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from isus.errors import InstancesUnavailableError, IsusError
from isus.index import Index
from isus.index.schema import csr_gather
from isus.sampling.config import RepeatFactorConfig, SamplerConfig
from isus.sampling.repeat import RepeatFactors, repeat_factors
from isus.types import MAX_CROP_PIXELS, MAX_CROP_SIDE, CropSpec

__all__ = ["CropBatch", "SamplingPolicy", "RepeatFactorPolicy"]


def _check_draw(policy: object, rng: object, n: object) -> None:
    """``draw``'s arguments, refused with the policy's name before any state is touched."""
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"{type(policy).__name__}.draw(rng=) expects a numpy Generator (np.random.default_rng(seed)); "
                        f"got {rng!r:.60}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"{type(policy).__name__}.draw(n=) expects an integer >= 0; got {n!r:.60}")


@dataclass(frozen=True)
class CropBatch:
    """Columns of ``n`` crop specs (see :class:`isus.CropSpec` for the fields)."""

    image: np.ndarray
    category: np.ndarray
    instance: np.ndarray
    level: np.ndarray
    scale: np.ndarray
    window: np.ndarray
    flip: np.ndarray
    sigma: np.ndarray  # σ alone (scale / the s0 rescale)
    clamped: np.ndarray  # ISUS σ hit the r_th bounds

    def __len__(self) -> int:
        return len(self.image)

    def spec(self, k: int) -> CropSpec:
        w = self.window[k]
        return CropSpec(int(self.image[k]), int(self.category[k]), int(self.instance[k]), int(self.level[k]),
                        float(self.scale[k]), (float(w[0]), float(w[1]), float(w[2]), float(w[3])), bool(self.flip[k]))

    def __getitem__(self, sel: slice | np.ndarray | Sequence[int]) -> "CropBatch":
        return CropBatch(*(getattr(self, f)[sel] for f in self.__dataclass_fields__))


def _place(rng: np.random.Generator, a: np.ndarray, b: np.ndarray, size: np.ndarray, extent: np.ndarray) -> np.ndarray:
    """Start of a window of ``size`` containing ``[a, b]`` (b - a <= size), uniformly among the
    positions that keep it inside ``[0, extent]`` -- or, when the image is smaller than the
    window, that keep the image inside it."""
    lo = np.maximum(b - size, np.where(size <= extent, 0.0, extent - size))
    hi = np.minimum(a, np.where(size <= extent, extent - size, 0.0))
    start: np.ndarray = lo + rng.random(len(a)) * np.maximum(hi - lo, 0.0)
    return start


class SamplingPolicy:
    """Draws :class:`CropBatch` es for an index under a :class:`SamplerConfig`.

    Steps (``docs/sampling.md``): (1) a class uniformly among :attr:`classes` (weights from
    :meth:`class_weights`); (2) an image containing it, uniformly; (3) CUS, or ISUS with a stuff
    class: σ uniform in ``r_st``; ISUS with a thing class: a non-crowd instance of the class in
    that image uniformly, a level uniformly, σ log-uniform over the values putting the instance's
    rescaled size ``sqrt(w h)`` in the level's interval, clamped to ``r_th``; (4) a window of the
    crop size placed at random so that it contains a visible part of the class (ISUS things: an
    anchor pixel of the instance; otherwise a grid cell holding the class, or a class anchor
    pixel when the window is smaller than a cell).

    ISUS needs instances: on the index of a semantic-only dataset (e.g. MVD with only
    ``labels/``) it raises :class:`~isus.InstancesUnavailableError`; CUS works there.

    Subclass and override :meth:`class_weights` to change step 1, e.g. by frequency^α::

        class FrequencyWeighted(SamplingPolicy):
            def class_weights(self):
                return self.images_per_class ** 0.5

    ``SamplingPolicy(index, config)`` with ``config.mode == "rfs"`` makes a
    :class:`RepeatFactorPolicy` (so :class:`isus.torch.CropSampler` and ``isus preview`` draw RFS
    from the configuration alone).
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> "SamplingPolicy":
        config = args[1] if len(args) > 1 else kwargs.get("config")
        if cls is SamplingPolicy and getattr(config, "mode", None) == "rfs":
            cls = RepeatFactorPolicy
        return object.__new__(cls)

    def __init__(self, index: Index, config: SamplerConfig) -> None:
        if config.mode == "rfs" and not isinstance(self, RepeatFactorPolicy):
            raise ValueError(f"{type(self).__name__}: mode='rfs' is drawn by isus.RepeatFactorPolicy; subclass it "
                             "(not SamplingPolicy) to change repeat-factor sampling")
        self.index, self.config = index, config
        dataset = index.info.dataset
        if config.mode == "isus" and not dataset.has_instances:
            # ISUS draws instances; without any it would be CUS under another name
            raise InstancesUnavailableError(
                f"ISUS samples object instances and needs instance annotations, but this index was built from "
                f"a semantic-only dataset ({dataset.name}, source={dataset.source!r}) and has none: use "
                "mode='cus' (on the command line: --mode cus) for class-uniform crops, or build the index from the "
                "instance or panoptic annotations", index.path)
        table = self._table = index.classes
        present = {c.id for c in index.present_categories()}
        if config.classes is not None:
            missing = sorted(set(config.classes) - present)
            if missing:
                raise IsusError(f"SamplerConfig(classes=) names category ids {missing} that the index has no pixels of")
            wanted = list(config.classes)
        else:
            wanted = [c.id for c in index.categories if c.id in present and c.evaluate]
        if not wanted:
            raise IsusError("the index has no category to sample from (is it empty?)")
        self.classes = np.array(wanted, dtype=np.int64)
        ranks = index.category_ranks(np.array(wanted, dtype=np.int64))
        self._cls_lo = table.class_offsets[ranks]
        #: Number of images containing each class in :attr:`classes`.
        self.images_per_class = (table.class_offsets[ranks + 1] - self._cls_lo).astype(np.float64)
        isthing = np.array([index.category(c).isthing for c in wanted])

        # Non-crowd instances, grouped by (class, image): the ISUS thing tables.
        inst = self._inst = index.instances
        keep = np.flatnonzero(~inst.iscrowd)
        cat_rank = index.category_ranks(inst.category_id[keep])
        key = cat_rank * (index.image_range[1] + 1) + inst.image[keep]
        self._th_rows = keep  # already sorted by (class, image)
        pair_start = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if len(key) else np.zeros(0, np.int64)
        self._pair_inst_off = np.r_[pair_start, len(keep)].astype(np.int64)
        self._pair_image = inst.image[keep][pair_start] if len(keep) else np.zeros(0, np.int32)
        pair_rank = cat_rank[pair_start] if len(keep) else np.zeros(0, np.int64)
        self._pair_lo = np.searchsorted(pair_rank, ranks)
        self._pair_n = np.searchsorted(pair_rank, ranks, side="right") - self._pair_lo
        self.instance_sampled = (config.mode == "isus") & isthing & (self._pair_n > 0)

        self._cell_cum = np.r_[0, np.cumsum(table.cell_pixels, dtype=np.int64)]
        self._grid = int(index.info.params.grid)
        h, w = index.heights.astype(np.float64), index.widths.astype(np.float64)
        self._h, self._w = h, w
        self._base = (config.shortest_side / np.minimum(h, w)) if config.shortest_side else np.ones_like(h)
        self._levels = np.array(config.levels.levels, dtype=np.int64)
        self._intervals = config.levels.intervals()
        self._start = index.image_range[0]

    def _class_cell(self, row: np.ndarray, u: np.ndarray, W: np.ndarray, H: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Pixel extent ``(x0, x1, y0, y1)`` of a grid cell holding the class of each class-table
        ``row``, drawn by its pixel count with the uniforms ``u``."""
        table = self._table
        c0, c1 = table.cell_offsets[row], table.cell_offsets[row + 1]
        target = self._cell_cum[c0] + np.floor(u * (self._cell_cum[c1] - self._cell_cum[c0]))
        cell_pos = np.clip(np.searchsorted(self._cell_cum, target, side="right") - 1, c0, np.maximum(c1 - 1, c0))
        cell = table.cell_index[np.minimum(cell_pos, len(table.cell_index) - 1)].astype(np.int64)
        g = self._grid
        gy, gx = cell // g, cell % g
        # cell column gx holds the pixels x with x * g // W == gx, i.e. x in [ceil(gx W / g), ceil((gx+1) W / g))
        ax0, ax1 = np.ceil(gx * W / g), np.ceil((gx + 1) * W / g)
        ay0, ay1 = np.ceil(gy * H / g), np.ceil((gy + 1) * H / g)
        return ax0, ax1, ay0, ay1

    def _window(self, rng: np.random.Generator, row: np.ndarray, k: np.ndarray, scale: np.ndarray,
                u_cell: np.ndarray, u_anchor: np.ndarray, instance: np.ndarray | None = None,
                by_inst: np.ndarray | None = None) -> np.ndarray:
        """Crop windows ``(x0, y0, x1, y1)`` in original pixels of images ``k`` (local indices) at
        ``scale``: each contains a grid cell of its class-table ``row`` drawn by pixel count, or,
        where the window is smaller than the cell (and always where ``by_inst``), one anchor pixel:
        of ``instance`` where ``by_inst``, else of the class row."""
        table = self._table
        ww, wh = self.config.crop_size[0] / scale, self.config.crop_size[1] / scale
        H, W = self._h[k], self._w[k]
        ax0, ax1, ay0, ay1 = self._class_cell(row, u_cell, W, H)
        use_point = ~((ww >= ax1 - ax0) & (wh >= ay1 - ay0))
        n_anchors = table.anchors.shape[1]
        j = np.minimum(np.floor(u_anchor * n_anchors).astype(np.int64), n_anchors - 1)
        anchor = table.anchors[row, j].astype(np.float64)
        if by_inst is not None and instance is not None:
            if by_inst.any():
                anchor = np.where(by_inst[:, None], self._inst.anchors[np.maximum(instance, 0), j], anchor)
            use_point = by_inst | use_point
        px, py = anchor[:, 0], anchor[:, 1]
        ax0, ax1 = np.where(use_point, px, ax0), np.where(use_point, px + 1.0, ax1)
        ay0, ay1 = np.where(use_point, py, ay0), np.where(use_point, py + 1.0, ay1)
        x0 = _place(rng, ax0, ax1, ww, W)
        y0 = _place(rng, ay0, ay1, wh, H)
        window: np.ndarray = np.stack([x0, y0, x0 + ww, y0 + wh], axis=1)
        return window

    def class_weights(self) -> np.ndarray:
        """Relative probability of each class in :attr:`classes` (uniform: the CUS/ISUS step 1)."""
        return np.ones(len(self.classes))

    def draw(self, rng: np.random.Generator, n: int) -> CropBatch:
        """Draw ``n`` crops. The generator is consumed in a fixed pattern for a given ``n``."""
        _check_draw(self, rng, n)
        cfg, table, inst = self.config, self._table, self._inst
        weights = np.asarray(self.class_weights(), dtype=np.float64)
        if weights.shape != (len(self.classes),) or not (weights >= 0).all() or weights.sum() <= 0:
            raise ValueError(f"{type(self).__name__}.class_weights() must return {len(self.classes)} non-negative "
                             "weights, not all zero")
        u = rng.random((n, 8))  # every draw of a sample comes from its own row: fixed consumption
        cidx = np.minimum(np.searchsorted(np.cumsum(weights) / weights.sum(), u[:, 0], side="right"), len(weights) - 1)
        category = self.classes[cidx]
        by_inst = self.instance_sampled[cidx]

        # (2) image: uniformly among those containing the class (ISUS things: with an instance).
        row = self._cls_lo[cidx] + np.floor(u[:, 1] * self.images_per_class[cidx]).astype(np.int64)
        pair = self._pair_lo[cidx] + np.floor(u[:, 1] * self._pair_n[cidx]).astype(np.int64)
        pair = np.where(by_inst, pair, 0)
        image = np.where(by_inst, self._pair_image[pair] if len(self._pair_image) else 0, table.image[row])
        k = image - self._start
        base = self._base[k]

        # (3) σ and, for ISUS things, the instance and level.
        r_st = cfg.stuff_scale_range
        sigma = r_st[0] + u[:, 2] * (r_st[1] - r_st[0])
        instance = np.full(n, -1, np.int64)
        level = np.full(n, -1, np.int64)
        clamped = np.zeros(n, bool)
        if by_inst.any():
            lo_i, hi_i = self._pair_inst_off[pair], self._pair_inst_off[pair + 1]
            inst_row = self._th_rows[np.minimum(lo_i + np.floor(u[:, 3] * (hi_i - lo_i)).astype(np.int64), len(self._th_rows) - 1)]
            lidx = np.minimum(np.floor(u[:, 4] * len(self._levels)).astype(np.int64), len(self._levels) - 1)
            box = inst.box[inst_row].astype(np.float64)
            size = np.sqrt((box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1])) * base
            lo, hi = self._intervals[lidx, 0] / size, self._intervals[lidx, 1] / size
            s_inst = lo * (hi / lo) ** u[:, 5]  # log-uniform within the level's interval
            r_th = cfg.thing_scale_range
            s_clamped = np.clip(s_inst, r_th[0], r_th[1])
            sigma = np.where(by_inst, s_clamped, sigma)
            clamped = by_inst & (s_clamped != s_inst)
            instance = np.where(by_inst, inst_row, -1)
            level = np.where(by_inst, self._levels[lidx], -1)
        scale = base * sigma

        # (4) the window, in original pixels, around a visible part of the class or instance.
        window = self._window(rng, row, k, scale, u[:, 6], u[:, 7], instance, by_inst)
        flip = (rng.random(n) < 0.5) if cfg.flip else np.zeros(n, bool)
        return CropBatch(image.astype(np.int64), category, instance, level, scale, window, flip, sigma, clamped)


class RepeatFactorPolicy(SamplingPolicy):
    """Repeat-factor sampling (RFS, from LVIS) under a :class:`~isus.RepeatFactorConfig`
    (``docs/sampling.md``).

    (1) An image ``i`` with probability ``r_i / sum_j r_j`` (:meth:`image_weights`: the LVIS
    repeat factors of :func:`isus.sampling.repeat.repeat_factors` over :attr:`classes`; images
    containing none of them are not drawn). Then, with ``rfs_crop="class"``: (2) a class of
    :attr:`classes` present in the image, uniformly; (3) σ uniform in ``r_st``; (4) a window of
    the crop size containing a grid cell of the class drawn by its pixel count (or a class anchor
    pixel when the window is smaller than a cell), as CUS places it. With ``rfs_crop="image"``:
    the whole image at the ``s0`` rescale (σ = 1), its ``category`` the image's rarest class (the
    one that sets ``r_i``). ``instance`` and ``level`` are -1.

    Drawing with replacement by ``r_i`` gives every image the share of the stream that
    detectron2's epochs of ``r_i`` (stochastically rounded) repeats give it, in expectation.

    Subclass and override :meth:`image_weights` to weight images otherwise.
    """

    config: RepeatFactorConfig

    def __init__(self, index: Index, config: SamplerConfig) -> None:
        if not isinstance(config, RepeatFactorConfig):
            raise ValueError(f"{type(self).__name__} expects a configuration with mode='rfs' (a RepeatFactorConfig); "
                             f"got mode={config.mode!r}")
        super().__init__(index, config)
        #: The LVIS repeat factors of :attr:`classes` over the index's images.
        self.repeat: RepeatFactors = repeat_factors(index, self.classes, threshold=config.rfs_threshold,
                                                    sqrt=config.rfs_sqrt)
        table = self._table
        ranks = index.category_ranks(self.classes)
        rows = csr_gather(table.class_offsets, ranks)
        which = np.repeat(np.arange(len(ranks)), (table.class_offsets[ranks + 1] - table.class_offsets[ranks]))
        local = table.image[rows].astype(np.int64) - self._start
        # the class rows of each image (sampled classes only), rarest class first
        order = np.lexsort((which, self.images_per_class[which], local))
        self._img_rows = rows[order]
        self._img_off = np.searchsorted(local[order], np.arange(len(self._h) + 1)).astype(np.int64)
        self._rarest = np.full(len(self._h), -1, np.int64)
        has = np.diff(self._img_off) > 0
        self._rarest[has] = table.category_id[self._img_rows[self._img_off[:-1][has]]]
        if config.rfs_crop == "image":  # whole images become crops: each must be a valid crop size
            w, h = self._whole_size(np.flatnonzero(self.repeat.image_factor > 0))
            big = np.flatnonzero((w > MAX_CROP_SIDE) | (h > MAX_CROP_SIDE) | (w * h > MAX_CROP_PIXELS))
            if len(big):
                raise IsusError(f"rfs_crop='image' makes whole images at the s0 rescale into crops, but {len(big)} "
                                f"images of this index are larger there than a crop may be ({int(w[big[0]])}x"
                                f"{int(h[big[0]])}; at most {MAX_CROP_SIDE} a side and {MAX_CROP_PIXELS} pixels): set "
                                "shortest_side (s0) to rescale them, or use rfs_crop='class'")

    def image_weights(self) -> np.ndarray:
        """Relative probability of each image of the index (position ``i - image_range[0]``): its
        repeat factor ``r_i``, 0 for images without any of :attr:`classes`."""
        return self.repeat.image_factor

    def _whole_size(self, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Whole images ``k`` at the ``s0`` rescale: crop width and height, rounded."""
        scale = self._base[k]
        return np.round(self._w[k] * scale), np.round(self._h[k] * scale)

    def draw(self, rng: np.random.Generator, n: int) -> CropBatch:
        """Draw ``n`` crops. The generator is consumed in a fixed pattern for a given ``n``."""
        _check_draw(self, rng, n)
        cfg, table = self.config, self._table
        weights = np.asarray(self.image_weights(), dtype=np.float64)
        if weights.shape != (len(self._h),) or not (weights >= 0).all() or weights.sum() <= 0:
            raise ValueError(f"{type(self).__name__}.image_weights() must return {len(self._h)} non-negative "
                             "weights, not all zero")
        u = rng.random((n, 5))  # every draw of a sample comes from its own row: fixed consumption
        # (1) image, by its repeat factor; the clip lands on the last image that can be drawn
        cum = np.cumsum(weights)
        last = int(np.flatnonzero(weights > 0)[-1])
        k = np.minimum(np.searchsorted(cum, u[:, 0] * cum[-1], side="right"), last)
        image = (k + self._start).astype(np.int64)
        base = self._base[k]
        minus = np.full(n, -1, np.int64)
        if cfg.rfs_crop == "image":
            cw, ch = self._whole_size(k)
            window = np.stack([np.zeros(n), np.zeros(n), cw / base, ch / base], axis=1)
            flip = (rng.random(n) < 0.5) if cfg.flip else np.zeros(n, bool)
            return CropBatch(image, self._rarest[k], minus, minus.copy(), base, window, flip, np.ones(n),
                             np.zeros(n, bool))
        # (2) a sampled class of the image, uniformly
        lo, hi = self._img_off[k], self._img_off[k + 1]
        row = self._img_rows[np.minimum(lo + np.floor(u[:, 1] * (hi - lo)).astype(np.int64), hi - 1)]
        category = table.category_id[row].astype(np.int64)
        # (3) σ as CUS
        r_st = cfg.stuff_scale_range
        sigma = r_st[0] + u[:, 2] * (r_st[1] - r_st[0])
        scale = base * sigma
        # (4) the window around a grid cell of the class (an anchor pixel when the window is smaller)
        window = self._window(rng, row, k, scale, u[:, 3], u[:, 4])
        flip = (rng.random(n) < 0.5) if cfg.flip else np.zeros(n, bool)
        return CropBatch(image, category, minus, minus.copy(), scale, window, flip, sigma, np.zeros(n, bool))
