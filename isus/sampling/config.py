"""Sampler settings and the paper's dataset presets."""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Any, Iterable, Sequence

import numpy as np

from isus.datasets import canonical_name, dataset_formats, reader_class
from isus.sampling.levels import FPNLevels, LevelRule
from isus.types import check_crop_size

__all__ = ["SamplerConfig", "RepeatFactorConfig"]

MODES = ("isus", "cus", "rfs")
#: How repeat-factor sampling turns a drawn image into a crop (:attr:`RepeatFactorConfig.rfs_crop`).
RFS_CROPS = ("class", "image")


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
        ``"isus"``, ``"cus"`` or ``"rfs"`` (repeat-factor sampling, LVIS). ``SamplerConfig(mode="rfs",
        ...)`` makes a :class:`RepeatFactorConfig`, whose ``rfs_*`` fields set its parameters.
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

    def __new__(cls, *args: Any, **kwargs: Any) -> "SamplerConfig":
        # mode="rfs" has parameters of its own: it is a RepeatFactorConfig, whose extra fields leave
        # the fields (and so the sampler states) of every other configuration as they were.
        mode = args[5] if len(args) > 5 else kwargs.get("mode")
        if cls is SamplerConfig:
            if mode == "rfs":
                cls = RepeatFactorConfig
            else:
                extra = sorted(k for k in kwargs if k.startswith("rfs_"))
                if extra:
                    raise ValueError(f"SamplerConfig({extra[0]}=) applies to mode='rfs' only; got mode="
                                     f"{mode if mode is not None else 'isus'!r}")
        return object.__new__(cls)

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
        if (self.mode == "rfs") != isinstance(self, RepeatFactorConfig):
            raise ValueError(f"{type(self).__name__}(mode={self.mode!r}): mode='rfs' is a RepeatFactorConfig and a "
                             "RepeatFactorConfig has mode='rfs'; to change the mode of a configuration use "
                             "config.with_mode(mode)")
        if not isinstance(self.levels, LevelRule):
            raise ValueError(f"SamplerConfig(levels=) expects a LevelRule (e.g. FPNLevels()); got {self.levels!r}")
        if self.classes is not None:
            object.__setattr__(self, "classes", _classes(self.classes))

    def with_mode(self, mode: str, **rfs: Any) -> "SamplerConfig":
        """This configuration under another ``mode``: the shared fields kept; a
        :class:`RepeatFactorConfig` leaving ``"rfs"`` drops its ``rfs_*`` fields, and ``rfs``
        sets them when entering or staying in ``"rfs"``."""
        if isinstance(self, RepeatFactorConfig) and mode != "rfs":
            if rfs:
                raise ValueError(f"SamplerConfig.with_mode({mode!r}) takes rfs_* settings with mode 'rfs' only")
            return SamplerConfig(**{**{f.name: getattr(self, f.name) for f in fields(SamplerConfig)}, "mode": mode})
        return replace(self, mode=mode, **rfs)

    @classmethod
    def preset(cls, dataset: str, **overrides: Any) -> "SamplerConfig":
        """The paper's App. D settings for ``"mvd"``, ``"cityscapes"`` or ``"idd"``, and ours for ``"coco"``.

        Cityscapes: crop 512, s0 = 1024, r_st = [0.5, 2]; IDD: crop 512, s0 = 1080, r_st = [0.5, 2];
        MVD: crop 1024 and, since the paper's text loses its s0/r_st line, our choice of
        s0 = 2048 and r_st = [0.5, 2]. COCO is not in the paper: our choice is s0 = 800 (the usual
        COCO training size) with 640 crops and the same ranges. All use r_th = [0.25, 4] and flips.
        Dataset aliases (``"mapillary"``, ``"coco_panoptic"``) name the same presets. ``overrides``
        replace fields (``mode="rfs", rfs_threshold=...`` for repeat-factor sampling). Each preset is its reader's ``sampler_preset``
        (:class:`isus.datasets.SamplerPreset`), so a registered format brings its own.
        """
        with_preset = {f: p for f in dataset_formats() if (p := reader_class(f).sampler_preset) is not None}
        try:
            base = with_preset[canonical_name(dataset)]
        except (KeyError, ValueError):
            raise ValueError(f"SamplerConfig.preset() expects one of {sorted(with_preset)}; got {dataset!r}") from None
        return replace(cls(**base.as_kwargs()), **overrides)


@dataclass(frozen=True)
class RepeatFactorConfig(SamplerConfig):
    """A :class:`SamplerConfig` with ``mode="rfs"``: repeat-factor sampling as in LVIS (Gupta et
    al., CVPR 2019, Sec. 4 and App. B.2; detectron2's ``RepeatFactorTrainingSampler``), see
    ``docs/sampling.md``. ``SamplerConfig(mode="rfs", ...)`` and
    ``SamplerConfig.preset(dataset, mode="rfs", ...)`` make one.

    Attributes
    ----------
    rfs_threshold
        ``t``: classes in a smaller fraction of the images than ``t`` are repeated
        (``r_c = max(1, sqrt(t / f_c))``). Default 0.001, the value of detectron2's LVIS configs
        (``DATALOADER.REPEAT_THRESHOLD``; detectron2's global default is 0.0, i.e. no repeats).
        0 gives every image the same weight.
    rfs_sqrt
        ``True``: ``r_c = max(1, sqrt(t / f_c))`` (LVIS; detectron2's default ``sqrt=True``);
        ``False``: ``r_c = max(1, t / f_c)``.
    rfs_crop
        ``"class"``: a crop of ``crop_size`` around a class of the drawn image (the class uniformly
        among the image's sampled classes, σ uniform in ``stuff_scale_range``, the window as CUS
        places it); ``"image"``: the whole image at the ``shortest_side`` rescale (σ = 1; crops of
        varying sizes, as in LVIS's whole-image training).
    """

    mode: str = "rfs"
    rfs_threshold: float = 0.001
    rfs_sqrt: bool = True
    rfs_crop: str = "class"

    def __post_init__(self) -> None:
        super().__post_init__()
        t = self.rfs_threshold
        if isinstance(t, bool) or not isinstance(t, (int, float, np.integer, np.floating)) or not 0 <= t <= 1:
            raise ValueError(f"SamplerConfig(rfs_threshold=) expects a frequency in [0, 1] (e.g. 0.001); got {t!r}")
        object.__setattr__(self, "rfs_threshold", float(t))
        if not isinstance(self.rfs_sqrt, (bool, np.bool_)):
            raise ValueError(f"SamplerConfig(rfs_sqrt=) expects True (LVIS: sqrt(t / f)) or False (t / f); "
                             f"got {self.rfs_sqrt!r}")
        object.__setattr__(self, "rfs_sqrt", bool(self.rfs_sqrt))
        if self.rfs_crop not in RFS_CROPS:
            raise ValueError(f"SamplerConfig(rfs_crop=) expects one of {RFS_CROPS}; got {self.rfs_crop!r}")
