"""Sampler settings and the paper's dataset presets."""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Sequence

import numpy as np

from isus.datasets import canonical_name, dataset_formats, reader_class
from isus.sampling.levels import FPNLevels, LevelRule
from isus.types import check_crop_size

__all__ = ["SamplerConfig"]

MODES = ("isus", "cus")


def _range(name: str, value: Any) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"SamplerConfig({name}=) expects (low, high); got {value!r}") from None
    if not 0 < lo <= hi < math.inf:
        raise ValueError(f"SamplerConfig({name}=) expects finite 0 < low <= high; got {value!r}")
    return lo, hi


def _classes(value: object) -> tuple[int, ...]:
    """Category ids as a tuple of ints; an empty list or a non-integer id is an argument error
    (rather than an index "without categories" later)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ValueError(f"SamplerConfig(classes=) expects None or a non-empty list of category ids; got {value!r}")
    items = list(value)
    if not items:
        raise ValueError("SamplerConfig(classes=) expects None (every evaluated class) or a non-empty list of "
                         "category ids; got an empty list")
    bad = [c for c in items if isinstance(c, bool) or not isinstance(c, (int, np.integer))]
    if bad:
        raise ValueError(f"SamplerConfig(classes=) expects integer category ids; got {bad[0]!r} in {value!r}")
    if len(set(items)) != len(items):
        raise ValueError(f"SamplerConfig(classes=) lists a category id twice; got {value!r}")
    return tuple(int(c) for c in items)


@dataclass(frozen=True)
class SamplerConfig:
    """How crops are drawn (see ``docs/sampling.md``).

    Attributes
    ----------
    crop_size
        ``(width, height)`` of a crop in network input pixels.
    shortest_side
        ``s0``: each image is first rescaled so its shortest side is ``s0`` (None: no rescale).
    stuff_scale_range
        ``r_st``: σ is uniform in it for stuff classes, and for every class under CUS.
    thing_scale_range
        ``r_th``: ISUS clamps the σ computed for a thing instance to it.
    levels
        The network's size -> level rule (:class:`FPNLevels` or any :class:`LevelRule`).
    mode
        ``"isus"`` or ``"cus"``.
    flip
        Draw horizontal flips with probability 1/2.
    classes
        Category ids to sample from (default: every category present in the index whose
        ``evaluate`` flag is set, i.e. not MVD's ``*-group``/``ambiguous`` labels).
    """

    crop_size: tuple[int, int] = (1024, 1024)
    shortest_side: float | None = None
    stuff_scale_range: tuple[float, float] = (0.5, 2.0)
    thing_scale_range: tuple[float, float] = (0.25, 4.0)
    levels: LevelRule = field(default_factory=FPNLevels)
    mode: str = "isus"
    flip: bool = True
    classes: Sequence[int] | None = None

    def __post_init__(self) -> None:
        try:
            w, h = (int(v) for v in self.crop_size)
        except (TypeError, ValueError, OverflowError):
            raise ValueError(f"SamplerConfig(crop_size=) expects (width, height); got {self.crop_size!r}") from None
        if w < 1 or h < 1:
            raise ValueError(f"SamplerConfig(crop_size=) expects positive sizes; got {self.crop_size!r}")
        check_crop_size(w, h, "SamplerConfig(crop_size=)")
        object.__setattr__(self, "crop_size", (w, h))
        object.__setattr__(self, "stuff_scale_range", _range("stuff_scale_range", self.stuff_scale_range))
        object.__setattr__(self, "thing_scale_range", _range("thing_scale_range", self.thing_scale_range))
        if self.shortest_side is not None and not (
                isinstance(self.shortest_side, (int, float, np.integer, np.floating))
                and not isinstance(self.shortest_side, bool) and 0 < self.shortest_side < math.inf):
            raise ValueError(f"SamplerConfig(shortest_side=) expects a finite positive number or None; got {self.shortest_side!r}")
        if self.mode not in MODES:
            raise ValueError(f"SamplerConfig(mode=) expects one of {MODES}; got {self.mode!r}")
        if not isinstance(self.levels, LevelRule):
            raise ValueError(f"SamplerConfig(levels=) expects a LevelRule (e.g. FPNLevels()); got {self.levels!r}")
        if self.classes is not None:
            object.__setattr__(self, "classes", _classes(self.classes))

    @classmethod
    def preset(cls, dataset: str, **overrides: Any) -> "SamplerConfig":
        """The paper's App. D settings for ``"mvd"``, ``"cityscapes"`` or ``"idd"``, and ours for ``"coco"``.

        Cityscapes: crop 512, s0 = 1024, r_st = [0.5, 2]; IDD: crop 512, s0 = 1080, r_st = [0.5, 2];
        MVD: crop 1024 and, since the paper's text loses its s0/r_st line, our choice of
        s0 = 2048 and r_st = [0.5, 2]. COCO is not in the paper: our choice is s0 = 800 (the usual
        COCO training size) with 640 crops and the same ranges. All use r_th = [0.25, 4] and flips.
        Dataset aliases (``"mapillary"``, ``"coco_panoptic"``) name the same presets. ``overrides``
        replace fields. Each preset is its reader's ``sampler_preset``
        (:class:`isus.datasets.SamplerPreset`), so a registered format brings its own.
        """
        with_preset = {f: p for f in dataset_formats() if (p := reader_class(f).sampler_preset) is not None}
        try:
            base = with_preset[canonical_name(dataset)]
        except (KeyError, ValueError):
            raise ValueError(f"SamplerConfig.preset() expects one of {sorted(with_preset)}; got {dataset!r}") from None
        return replace(cls(**base.as_kwargs()), **overrides)
