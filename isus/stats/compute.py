"""Statistics computed from an index and sampled crops only (no image is decoded).

The paper's Fig. 2 (object scale distribution; how crops truncate objects by size) and the
per-level supervision balance under full-image training, CUS and ISUS (and repeat-factor
sampling, RFS, when the configuration's mode is ``"rfs"``).
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

import numpy as np

from isus.errors import InstancesUnavailableError
from isus.index import Index
from isus.sampling.config import RepeatFactorConfig, SamplerConfig
from isus.sampling.levels import LevelRule
from isus.sampling.policy import CropBatch, RepeatFactorPolicy, SamplingPolicy

__all__ = ["crop_instance_pairs", "crop_level_counts", "full_image_level_counts", "compute_stats", "scale_edges",
           "require_instances"]


def scale_edges(lo: float = 2.0, hi: float = 8192.0, per_octave: int = 4) -> np.ndarray:
    """Log-spaced bin edges (pixels), ``per_octave`` bins per factor of 2."""
    n = int(round(np.log2(hi / lo) * per_octave))
    return lo * 2.0 ** (np.arange(n + 1) / per_octave)


def require_instances(index: Index) -> None:
    """Raise :class:`~isus.InstancesUnavailableError` when ``index`` has no non-crowd instance:
    every statistic here is about instances, and would be empty."""
    if (~index.instances.iscrowd).any():
        return
    dataset = index.info.dataset
    if not dataset.has_instances:
        why = (f"it was built from a semantic-only dataset ({dataset.name}, source={dataset.source!r}); "
               "build it from the instance or panoptic annotations")
    else:
        why = "its dataset has no thing segments, or only crowd ones"
    raise InstancesUnavailableError(
        "the index has no instances, and these statistics (object scales, how crops truncate objects, the "
        f"instances each pyramid level receives) are all about instances, so there is nothing to compute: {why}",
        index.path)


def _by_image(index: Index) -> tuple[np.ndarray, np.ndarray]:
    """Non-crowd instance rows grouped by image: (rows, CSR offsets over image positions)."""
    inst = index.instances
    keep = np.flatnonzero(~inst.iscrowd)
    order = keep[np.argsort(inst.image[keep], kind="stable")]
    offsets = np.searchsorted(inst.image[order], np.arange(index.image_range[0], index.image_range[1] + 1))
    return order, offsets


def _base_scale(index: Index, shortest_side: float | None) -> np.ndarray:
    """Per image, the ``s0`` rescale (1 without ``s0``)."""
    short = np.minimum(index.heights, index.widths).astype(np.float64)
    return shortest_side / short if shortest_side else np.ones_like(short)


def crop_instance_pairs(index: Index, batch: CropBatch, by_image: tuple[np.ndarray, np.ndarray] | None = None
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (crop, non-crowd instance) pair whose full box overlaps the crop's window.

    Returns
    -------
    crop : (P,) int64 crop positions in ``batch``
    row : (P,) int64 instance rows of ``index.instances``
    visible : (P, 4) float64 the box clipped to the window (original pixels)
    """
    rows, offsets = by_image if by_image is not None else _by_image(index)
    k = batch.image - index.image_range[0]
    counts = offsets[k + 1] - offsets[k]
    crop = np.repeat(np.arange(len(batch)), counts)
    starts = np.repeat(offsets[k] - np.r_[0, np.cumsum(counts)[:-1]], counts)
    row = rows[starts + np.arange(counts.sum())]
    box = index.instances.box[row].astype(np.float64)
    win = batch.window[crop]
    vis = np.stack([np.maximum(box[:, 0], win[:, 0]), np.maximum(box[:, 1], win[:, 1]),
                    np.minimum(box[:, 2], win[:, 2]), np.minimum(box[:, 3], win[:, 3])], axis=1)
    keep = (vis[:, 2] > vis[:, 0]) & (vis[:, 3] > vis[:, 1])
    return crop[keep], row[keep], vis[keep]


def _levels_of(levels: LevelRule, size: np.ndarray) -> np.ndarray:
    lv = levels.level_of(size)
    return np.array([(lv == l).sum() for l in levels.levels], dtype=np.int64)


def crop_level_counts(index: Index, batch: CropBatch, levels: LevelRule) -> np.ndarray:
    """Instances each pyramid level receives over the crops of ``batch``: every non-crowd
    instance overlapping a crop counts once, at the level of its visible (window-clipped) box
    rescaled by the crop's scale. Counts per level of ``levels.levels``."""
    crop, _, vis = crop_instance_pairs(index, batch)
    size = np.sqrt((vis[:, 2] - vis[:, 0]) * (vis[:, 3] - vis[:, 1])) * batch.scale[crop]
    return _levels_of(levels, size)


def full_image_level_counts(index: Index, levels: LevelRule, shortest_side: float | None = None) -> np.ndarray:
    """Instances each level receives in one pass of full-image training (each image rescaled to
    ``shortest_side``), per level of ``levels.levels``."""
    inst = index.instances
    keep = ~inst.iscrowd
    b = inst.box[keep].astype(np.float64)
    base = _base_scale(index, shortest_side)[inst.image[keep] - index.image_range[0]]
    return _levels_of(levels, np.sqrt((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])) * base)


def compute_stats(
    index: Index,
    config: SamplerConfig,
    samples: int = 20000,
    seed: int = 0,
    *,
    per_class: bool = False,
    progress: Callable[[Iterable[int]], Iterable[int]] | None = None,
    chunk: int = 4096,
    box_fractions: Sequence[float] = (0.1, 0.25, 0.5),
) -> dict[str, Any]:
    """Every number behind the ``isus stats`` plots, as a JSON-able dict.

    Scales are ``sqrt(area)`` of the instances (non-crowd things) in network pixels at σ = 1,
    i.e. after the ``s0`` rescale of ``config`` (original pixels without ``s0``).

    - ``scale_histogram``: instance counts on log-spaced ``edges`` (and ``per_class``).
    - ``truncation``: for CUS and ISUS crops (``config`` with ``mode`` set to each), the mean over
      every (crop, overlapping instance) pair of IoU(visible box, full box) = area(visible) /
      area(full), binned by the instance's scale.
    - ``levels``: instances per pyramid level under full-image training (one pass over the
      dataset at ``s0``), and over ``samples`` CUS and ``samples`` ISUS crops.

    - ``visibility``: for CUS and ISUS crops (and RFS), per size bucket of the instance in crop
      pixels (``sqrt(area)`` of its full extent times the crop's scale; COCO's edges 32 and 96:
      small, medium, large), how many (crop, overlapping instance) pairs there are
      (``pairs``) and how many a ``CropConfig(min_box_fraction=f)`` would drop, or flag with
      ``low_visibility="ignore"``, for each ``f`` of ``box_fractions`` (``below``, one row per
      ``f``): those whose window-clipped box is below ``f`` of the full box. The mask's visible
      box lies inside the clipped box, so these are lower bounds (the crop engine also drops
      instances below ``min_instance_area``, and measures the box from the resampled mask);
      ``min_visible_fraction`` needs the masks, which the index does not hold, and is not counted.

    With a repeat-factor configuration (``config.mode == "rfs"``, a
    :class:`~isus.RepeatFactorConfig`), ``samples`` RFS crops are drawn too and appear beside CUS
    and ISUS under ``truncation``, ``levels`` (and its ``per_class``); ``settings["rfs"]`` holds
    the RFS settings, and ``classes`` per sampled class: images holding it, ``f_c``, ``r_c``, and
    for each mode the share of crops drawn from an image holding the class (``image_share``) and
    the class's instances overlapping the crops (``instances``). CUS and ISUS use the config's
    other fields. For any other mode the result is what it always was.

    Raises :class:`~isus.InstancesUnavailableError` when the index has no non-crowd instance
    (e.g. it was built from a semantic-only dataset): every number here would be empty.
    """
    require_instances(index)
    dataset = index.info.dataset
    inst = index.instances
    things = ~inst.iscrowd
    start = index.image_range[0]
    base = _base_scale(index, config.shortest_side)
    scale_all = inst.scale * base[inst.image - start]
    # whole octaves covering every instance (the smallest are below a pixel after a s0 downscale)
    smallest = float(scale_all[things].min(initial=2.0))
    lo = 2.0 ** np.floor(np.log2(max(min(smallest, 2.0), 1e-3)))
    edges = scale_edges(lo, 2.0 ** np.ceil(np.log2(max(8192.0, float(scale_all.max(initial=1.0)) * 1.01))))
    levels = config.levels
    cat_names = {c.id: c.name for c in index.categories}

    def hist(values: np.ndarray) -> list[int]:
        counts: list[int] = np.histogram(values, bins=edges)[0].astype(int).tolist()
        return counts

    out: dict[str, Any] = {
        "dataset": {"name": dataset.name, "split": dataset.split, "root": dataset.root, "num_images": dataset.num_images},
        "settings": {"crop_size": list(config.crop_size), "shortest_side": config.shortest_side,
                     "stuff_scale_range": list(config.stuff_scale_range),
                     "thing_scale_range": list(config.thing_scale_range), "samples": samples, "seed": seed,
                     "levels": list(levels.levels), "level_intervals": levels.intervals().tolist(),
                     "scale_unit": "px, sqrt(area), after the s0 rescale" if config.shortest_side
                     else "px, sqrt(area), original image"},
        "num_instances": int(things.sum()),
        "scale_histogram": {"edges": edges.tolist(), "counts": hist(scale_all[things])},
    }
    if per_class:
        out["scale_histogram"]["per_class"] = {
            cat_names[int(c)]: hist(scale_all[things & (inst.category_id == c)])
            for c in np.unique(inst.category_id[things])}

    by_image = _by_image(index)
    full = full_image_level_counts(index, levels, config.shortest_side)
    out["levels"] = {"levels": list(levels.levels), "full_images": full.tolist()}
    out["truncation"] = {"edges": edges.tolist()}
    fractions = [float(f) for f in box_fractions]
    size_edges = np.array([32.0, 96.0])
    out["visibility"] = {"size_buckets": ["small", "medium", "large"], "size_edges": size_edges.tolist(),
                         "size_unit": "px, sqrt(area) of the full box, in the crop", "box_fractions": fractions}
    level_per_class: dict[str, dict[str, list[int]]] = {}
    if per_class:
        b = inst.box[things].astype(np.float64)
        lv = levels.level_of(np.sqrt((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])) * base[inst.image[things] - start])
        for c in np.unique(inst.category_id[things]):
            sel = inst.category_id[things] == c
            level_per_class[cat_names[int(c)]] = {"full_images": [int((lv[sel] == l).sum()) for l in levels.levels]}

    nbins = len(edges) - 1
    chunks = list(range(0, samples, chunk))
    # crops of mode m come from PCG64(SeedSequence([seed, m])): 0 CUS, 1 ISUS, 2 RFS
    modes = ("cus", "isus", "rfs") if config.mode == "rfs" else ("cus", "isus")
    rfs = _RepeatFactorTally(index, config, modes) if config.mode == "rfs" else None
    todo: Iterable[int] = range(len(modes) * len(chunks))
    for step in (progress(todo) if progress is not None else todo):
        mode = modes[step // len(chunks)]
        lo = chunks[step % len(chunks)]
        n = min(chunk, samples - lo)
        if step % len(chunks) == 0:
            policy = SamplingPolicy(index, config.with_mode(mode))
            rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, modes.index(mode)])))
            iou_sum, iou_cnt = np.zeros(nbins), np.zeros(nbins, np.int64)
            lcount = np.zeros(len(levels.levels), np.int64)
            per_cls_l: dict[int, np.ndarray] = {}
            vis_pairs = np.zeros(3, np.int64)
            vis_below = np.zeros((len(fractions), 3), np.int64)
        batch = policy.draw(rng, n)
        crop, row, vis = crop_instance_pairs(index, batch, by_image)
        if rfs is not None:
            rfs.add(mode, batch, row)
        box = inst.box[row].astype(np.float64)
        full_area = (box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1])
        iou = (vis[:, 2] - vis[:, 0]) * (vis[:, 3] - vis[:, 1]) / full_area
        sbin = np.clip(np.searchsorted(edges, scale_all[row], side="right") - 1, 0, nbins - 1)
        # the instance's size in the crop (full box), its bucket, and its box fraction in the crop
        vb = np.searchsorted(size_edges, np.sqrt(full_area) * batch.scale[crop], side="right")
        vis_pairs += np.bincount(vb, minlength=3)
        for j, f in enumerate(fractions):
            vis_below[j] += np.bincount(vb[iou < f], minlength=3)
        iou_sum += np.bincount(sbin, weights=iou, minlength=nbins)
        iou_cnt += np.bincount(sbin, minlength=nbins)
        vsize = np.sqrt((vis[:, 2] - vis[:, 0]) * (vis[:, 3] - vis[:, 1])) * batch.scale[crop]
        lv = levels.level_of(vsize)
        lcount += np.array([(lv == l).sum() for l in levels.levels])
        if per_class:
            for c in np.unique(inst.category_id[row]):
                sel = inst.category_id[row] == c
                per_cls_l.setdefault(int(c), np.zeros(len(levels.levels), np.int64))
                per_cls_l[int(c)] += np.array([(lv[sel] == l).sum() for l in levels.levels])
        if step % len(chunks) == len(chunks) - 1:
            mean = np.where(iou_cnt > 0, iou_sum / np.maximum(iou_cnt, 1), np.nan)
            out["truncation"][mode] = {"mean_iou": [None if np.isnan(v) else float(v) for v in mean],
                                       "count": iou_cnt.tolist()}
            out["levels"][mode] = lcount.tolist()
            out["visibility"][mode] = {"pairs": vis_pairs.tolist(), "below": vis_below.tolist()}
            for c, v in per_cls_l.items():
                level_per_class.setdefault(cat_names[c], {})[mode] = v.tolist()
    for mode in ("full_images",) + modes:
        counts = np.array(out["levels"][mode])
        out["levels"].setdefault("imbalance", {})[mode] = float(counts.max() / max(counts.min(), 1))
    if per_class:
        zeros = [0] * len(levels.levels)
        out["levels"]["per_class"] = {name: {m: v.get(m, zeros) for m in ("full_images",) + modes}
                                      for name, v in level_per_class.items()}
    if rfs is not None:
        out["settings"]["rfs"] = rfs.settings()
        out["classes"] = rfs.result(samples)
    return out


class _RepeatFactorTally:
    """Per sampled class of an RFS configuration: its repeat factor, and for each mode the crops
    drawn from images holding it and its instances overlapping the crops."""

    def __init__(self, index: Index, config: SamplerConfig, modes: tuple[str, ...]) -> None:
        policy = SamplingPolicy(index, config)
        assert isinstance(policy, RepeatFactorPolicy)
        self.index, self.config, self.repeat = index, config, policy.repeat
        classes = self.repeat.classes
        table = index.classes
        ranks = index.category_ranks(classes)
        # which sampled classes each image holds (images x classes)
        self.holds = np.zeros((index.image_range[1] - index.image_range[0], len(classes)), bool)
        for j, r in enumerate(ranks):
            self.holds[table.image[table.class_offsets[r]:table.class_offsets[r + 1]] - index.image_range[0], j] = True
        self.column = np.full(len(index.categories), -1, np.int64)  # category rank -> column
        self.column[ranks] = np.arange(len(classes))
        self.image_crops = {m: np.zeros(len(classes), np.int64) for m in modes}
        self.instances = {m: np.zeros(len(classes), np.int64) for m in modes}

    def add(self, mode: str, batch: CropBatch, rows: np.ndarray) -> None:
        self.image_crops[mode] += self.holds[batch.image - self.index.image_range[0]].sum(axis=0)
        cols = self.column[self.index.category_ranks(self.index.instances.category_id[rows].astype(np.int64))]
        self.instances[mode] += np.bincount(cols[cols >= 0], minlength=len(self.instances[mode]))

    def settings(self) -> dict[str, Any]:
        cfg = self.config
        assert isinstance(cfg, RepeatFactorConfig)
        return {"threshold": cfg.rfs_threshold, "sqrt": cfg.rfs_sqrt, "crop": cfg.rfs_crop,
                "eligible_images": self.repeat.num_eligible}

    def result(self, samples: int) -> dict[str, Any]:
        names = {c.id: c.name for c in self.index.categories}
        r = self.repeat
        return {"name": [names[int(c)] for c in r.classes], "id": r.classes.tolist(),
                "images": r.images_with_class.tolist(), "frequency": r.frequency.tolist(),
                "repeat_factor": r.class_factor.tolist(),
                "image_share": {m: (v / max(samples, 1)).tolist() for m, v in self.image_crops.items()},
                "instances": {m: v.tolist() for m, v in self.instances.items()}}
