"""CUS and ISUS as vectorised draws over the index arrays.

class -> image -> (ISUS things: instance -> level -> clamped σ) -> crop window, for a whole
batch of samples at once with numpy; nothing is decoded.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from isus.errors import InstancesUnavailableError, IsusError
from isus.index import Index
from isus.sampling.config import SamplerConfig
from isus.types import CropSpec

__all__ = ["CropBatch", "SamplingPolicy"]


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
    """

    def __init__(self, index: Index, config: SamplerConfig) -> None:
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

    def class_weights(self) -> np.ndarray:
        """Relative probability of each class in :attr:`classes` (uniform: the CUS/ISUS step 1)."""
        return np.ones(len(self.classes))

    def draw(self, rng: np.random.Generator, n: int) -> CropBatch:
        """Draw ``n`` crops. The generator is consumed in a fixed pattern for a given ``n``."""
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"{type(self).__name__}.draw(rng=) expects a numpy Generator (np.random.default_rng(seed)); "
                            f"got {rng!r:.60}")
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"{type(self).__name__}.draw(n=) expects an integer >= 0; got {n!r:.60}")
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
        ww, wh = cfg.crop_size[0] / scale, cfg.crop_size[1] / scale
        H, W = self._h[k], self._w[k]
        # a grid cell holding the class, drawn by its pixel count
        c0, c1 = table.cell_offsets[row], table.cell_offsets[row + 1]
        target = self._cell_cum[c0] + np.floor(u[:, 6] * (self._cell_cum[c1] - self._cell_cum[c0]))
        cell_pos = np.clip(np.searchsorted(self._cell_cum, target, side="right") - 1, c0, np.maximum(c1 - 1, c0))
        cell = table.cell_index[np.minimum(cell_pos, len(table.cell_index) - 1)].astype(np.int64)
        g = self._grid
        gy, gx = cell // g, cell % g
        # cell column gx holds the pixels x with x * g // W == gx, i.e. x in [ceil(gx W / g), ceil((gx+1) W / g))
        ax0, ax1 = np.ceil(gx * W / g), np.ceil((gx + 1) * W / g)
        ay0, ay1 = np.ceil(gy * H / g), np.ceil((gy + 1) * H / g)
        fits = (ww >= ax1 - ax0) & (wh >= ay1 - ay0)
        # otherwise (and for ISUS things) an anchor pixel: of the instance, or of the class
        n_anchors = table.anchors.shape[1]
        j = np.minimum(np.floor(u[:, 7] * n_anchors).astype(np.int64), n_anchors - 1)
        anchor = table.anchors[row, j].astype(np.float64)
        if by_inst.any():
            anchor = np.where(by_inst[:, None], inst.anchors[np.maximum(instance, 0), j], anchor)
        use_point = by_inst | ~fits
        px, py = anchor[:, 0], anchor[:, 1]
        ax0, ax1 = np.where(use_point, px, ax0), np.where(use_point, px + 1.0, ax1)
        ay0, ay1 = np.where(use_point, py, ay0), np.where(use_point, py + 1.0, ay1)
        x0 = _place(rng, ax0, ax1, ww, W)
        y0 = _place(rng, ay0, ay1, wh, H)
        window = np.stack([x0, y0, x0 + ww, y0 + wh], axis=1)
        flip = (rng.random(n) < 0.5) if cfg.flip else np.zeros(n, bool)
        return CropBatch(image.astype(np.int64), category, instance, level, scale, window, flip, sigma, clamped)
