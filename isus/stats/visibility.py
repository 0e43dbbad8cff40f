"""How many (crop, instance) pairs a visibility filter would drop or ignore, measured on the crops'
segment maps (the numbers :func:`~isus.stats.compute_stats` cannot give from the index alone).

``CropConfig(min_visible_fraction=f)`` compares an instance's visible pixels in the crop with its
full area at the crop's scale: that needs the crop's segment map. Here the crop engine samples the
segment maps of drawn crops (no image pixels are decoded; the annotation cache is used when the
index has one) and counts, per size bucket, the instances below each fraction: exactly what the
engine would drop or flag, for the crops drawn.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

import numpy as np

from isus.crop.engine import CropEngine
from isus.sampling.config import SamplerConfig
from isus.sampling.policy import SamplingPolicy

__all__ = ["mask_visibility", "SIZE_EDGES"]

#: COCO's small / medium / large edges, sqrt(area) in crop pixels (as ``compute_stats``'s ``visibility``)
SIZE_EDGES = (32.0, 96.0)


def mask_visibility(
    engine: CropEngine,
    config: SamplerConfig,
    samples: int = 200,
    seed: int = 0,
    *,
    visible_fractions: Sequence[float] = (0.1, 0.25, 0.5),
    box_fractions: Sequence[float] = (0.1, 0.25, 0.5),
    progress: Callable[[Iterable[int]], Iterable[int]] | None = None,
) -> dict[str, Any]:
    """Per sampling mode and size bucket, the instances of ``samples`` drawn crops, and how many of
    them each visibility threshold would drop (``low_visibility="drop"``) or flag (``"ignore"``).

    Parameters
    ----------
    engine
        A :class:`~isus.CropEngine` with an index; its ``min_instance_area`` decides which
        instances a crop holds (as when training).
    config
        The sampler configuration; CUS and ISUS crops are drawn with its other fields (and RFS
        crops when its mode is ``"rfs"``). Crops of mode ``m`` (0 CUS, 1 ISUS, 2 RFS) come from
        ``PCG64(SeedSequence([seed, m, 1]))``: not the crops ``compute_stats`` draws.
    samples
        Crops per mode.
    visible_fractions, box_fractions
        Values of ``CropConfig(min_visible_fraction=)`` and ``min_box_fraction=`` to count.

    Returns
    -------
    dict with ``samples``, ``size_buckets``, ``size_edges``, ``size_unit``, ``visible_fractions``,
    ``box_fractions``, and per mode: ``crops``, ``pairs`` (per bucket), ``area_below`` and
    ``box_below`` (one row per fraction, per bucket): pairs whose visible area (box) is below the
    fraction of the full area (box) at the crop's scale.
    """
    if engine.index is None:
        raise ValueError("mask_visibility needs a CropEngine built with the index the crops are drawn from")
    if samples < 1:
        raise ValueError(f"mask_visibility: samples must be at least 1; got {samples}")
    index = engine.index
    area_f = [float(f) for f in visible_fractions]
    box_f = [float(f) for f in box_fractions]
    modes = ("cus", "isus", "rfs") if config.mode == "rfs" else ("cus", "isus")
    edges = np.array(SIZE_EDGES)
    out: dict[str, Any] = {"samples": samples, "size_buckets": ["small", "medium", "large"],
                           "size_edges": list(SIZE_EDGES), "size_unit": "px, sqrt(area) of the full box, in the crop",
                           "visible_fractions": area_f, "box_fractions": box_f}
    todo: Iterable[int] = range(len(modes) * samples)
    for step in (progress(todo) if progress is not None else todo):
        m, k = divmod(step, samples)
        if k == 0:
            rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, m, 1])))
            batch = SamplingPolicy(index, config.with_mode(modes[m])).draw(rng, samples)
            pairs = np.zeros(3, np.int64)
            area_below = np.zeros((len(area_f), 3), np.int64)
            box_below = np.zeros((len(box_f), 3), np.int64)
        v = engine.visibility(batch.spec(k))
        bucket = np.searchsorted(edges, v.size, side="right")
        pairs += np.bincount(bucket, minlength=3)
        for j, f in enumerate(area_f):
            area_below[j] += np.bincount(bucket[v.area_fraction < f], minlength=3)
        for j, f in enumerate(box_f):
            box_below[j] += np.bincount(bucket[v.box_fraction < f], minlength=3)
        if k == samples - 1:
            out[modes[m]] = {"crops": samples, "pairs": pairs.tolist(), "area_below": area_below.tolist(),
                             "box_below": box_below.tolist()}
    return out
