"""What is in a dataset: images, classes, instances and how their sizes are distributed."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np

from isus.datasets.base import PanopticDataset

__all__ = ["DatasetSummary", "summarize", "scale_histogram", "histogram_lines", "SCALE_EDGES"]

#: Edges (pixels of sqrt(area)) of the size histogram; FPN's canonical 224 sits between bins.
SCALE_EDGES = (0, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, np.inf)


@dataclass(frozen=True)
class DatasetSummary:
    """Counts over a whole dataset, as printed by ``isus demo``.

    Attributes
    ----------
    instances_per_category
        ``{category name: number of non-crowd thing segments}``, for the thing categories that have
        any; they sum to ``num_instances``.
    thing_categories_without_instances
        Names of the thing categories without any non-crowd segment (so that
        ``len(instances_per_category) + len(thing_categories_without_instances) ==
        num_thing_categories``).
    scale_counts
        Instances per bin of :data:`SCALE_EDGES`, over instance scale ``sqrt(area)`` in pixels.
    scale_quantiles
        ``{q: sqrt(area) quantile}`` for q in 0, 0.1, 0.5, 0.9, 0.99, 1.
    """

    name: str
    source: str
    num_images: int
    num_categories: int
    num_thing_categories: int
    num_instances: int
    num_crowd: int
    images_without_things: int
    void_fraction: float
    image_sizes: dict[str, int]
    instances_per_category: dict[str, int]
    scale_counts: tuple[int, ...]
    scale_quantiles: dict[float, float] = field(default_factory=dict)
    thing_categories_without_instances: tuple[str, ...] = ()

    def format(self) -> str:
        """Human-readable multi-line report."""
        lines = [
            f"dataset        {self.name} ({self.source} annotations)",
            f"images         {self.num_images}  (sizes: "
            + ", ".join(f"{k} x{v}" for k, v in sorted(self.image_sizes.items())) + ")",
            f"classes        {self.num_categories} ({self.num_thing_categories} thing, "
            f"{self.num_categories - self.num_thing_categories} stuff)",
            f"instances      {self.num_instances} (+{self.num_crowd} crowd regions); "
            f"{self.images_without_things} images without any thing; {100 * self.void_fraction:.1f}% void pixels",
        ]
        if self.num_thing_categories:
            none = self.thing_categories_without_instances
            lines.append("per class      " + ", ".join(f"{k} {v}" for k, v in self.instances_per_category.items())
                         + ("; " if self.instances_per_category and none else "")
                         + (f"none of {', '.join(none)}" if none else "")
                         + f" ({len(self.instances_per_category)} of {self.num_thing_categories} thing classes "
                           "have instances)")
        if self.num_instances:
            q = self.scale_quantiles
            lines.append("instance size  sqrt(area) px: min {:.0f}, p10 {:.0f}, median {:.0f}, p90 {:.0f}, "
                         "p99 {:.0f}, max {:.0f}".format(q[0.0], q[0.1], q[0.5], q[0.9], q[0.99], q[1.0]))
            lines += histogram_lines(self.scale_counts)
        return "\n".join(lines)


def format_bytes(n: float) -> str:
    """``1536`` -> ``'1.5 KiB'``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def scale_histogram(scales: np.ndarray) -> tuple[int, ...]:
    """Counts of ``scales`` (sqrt(area), pixels) in the bins of :data:`SCALE_EDGES`."""
    counts, _ = np.histogram(np.asarray(scales, np.float64), bins=np.array(SCALE_EDGES, dtype=np.float64))
    return tuple(int(v) for v in counts)


def histogram_lines(counts: tuple[int, ...], width: int = 40) -> list[str]:
    """A text bar chart of :func:`scale_histogram` counts, one line per bin."""
    peak = max(max(counts), 1)
    lines = []
    for k, n in enumerate(counts):
        lo, hi = SCALE_EDGES[k], SCALE_EDGES[k + 1]
        label = f"{lo:>5.0f}-{hi:<5.0f}" if np.isfinite(hi) else f"{lo:>5.0f}+     "
        lines.append(f"  {label} {n:6d} {'#' * round(width * n / peak)}")
    return lines


def summarize(
    ds: PanopticDataset, progress: Callable[[Iterable[int]], Iterable[int]] | None = None
) -> DatasetSummary:
    """Decode every annotation of ``ds`` once and count what is there.

    Parameters
    ----------
    ds
        A dataset with instances (``ds.has_instances``).
    progress
        Optional wrapper around the image index iterable (e.g. a progress bar).
    """
    per_cat = {c.id: 0 for c in ds.categories if c.isthing}
    scales, crowd, no_things, void, total = [], 0, 0, 0, 0
    sizes: dict[str, int] = {}
    indices: Iterable[int] = range(len(ds))
    for i in progress(indices) if progress is not None else indices:
        pan = ds.load_panoptic(i)
        h, w = pan.ids.shape
        sizes[f"{w}x{h}"] = sizes.get(f"{w}x{h}", 0) + 1
        seg_ids, counts = np.unique(pan.ids, return_counts=True)
        area = dict(zip(seg_ids.tolist(), counts.tolist()))
        void += area.get(0, 0)
        total += pan.ids.size
        things = 0
        for s in pan.segments:
            if not ds.category(int(s["category_id"])).isthing:
                continue
            if s["iscrowd"]:
                crowd += 1
                continue
            things += 1
            per_cat[int(s["category_id"])] += 1
            scales.append(np.sqrt(area[int(s["id"])]))
        no_things += things == 0
    scales_a = np.asarray(scales, dtype=np.float64)
    quant = {q: float(np.quantile(scales_a, q)) for q in (0.0, 0.1, 0.5, 0.9, 0.99, 1.0)} if scales else {}
    return DatasetSummary(
        name=ds.name,
        source=ds.source,
        num_images=len(ds),
        num_categories=len(ds.categories),
        num_thing_categories=sum(c.isthing for c in ds.categories),
        num_instances=len(scales),
        num_crowd=crowd,
        images_without_things=no_things,
        void_fraction=void / max(total, 1),
        image_sizes=sizes,
        instances_per_category={ds.category(k).name: v for k, v in per_cat.items() if v},
        thing_categories_without_instances=tuple(ds.category(k).name for k, v in per_cat.items() if not v),
        scale_counts=scale_histogram(scales_a),
        scale_quantiles=quant,
    )
