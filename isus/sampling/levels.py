"""Size -> pyramid level rules (which level of the network an object of a given size trains)."""
from __future__ import annotations

import abc

import numpy as np

__all__ = ["LevelRule", "FPNLevels"]


class LevelRule(abc.ABC):
    """A monotone rule assigning an object of size ``s = sqrt(w h)`` (network input pixels) to a
    pyramid level, and the finite size interval of each level that ISUS samples in.

    Subclass it to plug in another network's heuristic: implement :attr:`levels`,
    :meth:`level_of` and :meth:`interval`.
    """

    @property
    @abc.abstractmethod
    def levels(self) -> tuple[int, ...]:
        """The levels, ascending."""

    @abc.abstractmethod
    def level_of(self, size: np.ndarray) -> np.ndarray:
        """Level of objects of ``size`` pixels (vectorised)."""

    @abc.abstractmethod
    def interval(self, level: int) -> tuple[float, float]:
        """``[lo, hi)``: the sizes ISUS aims at for ``level``; finite, and within the sizes the
        rule assigns to ``level``."""

    def intervals(self) -> np.ndarray:
        """``(L, 2)`` array of :meth:`interval` for every level."""
        return np.array([self.interval(l) for l in self.levels], dtype=np.float64)


class FPNLevels(LevelRule):
    """The FPN / Panoptic FPN heuristic: ``k = floor(k0 + log2(s / canonical_size))``, clamped to
    the network's levels.

    Level ``l`` covers ``[c 2^(l-k0), c 2^(l-k0+1))`` with ``c = canonical_size``. Under clamping the
    lowest level also takes every smaller object and the highest every larger one; for sampling,
    their intervals are cut to ``end_octaves`` octaves (default 1, like the inner levels): the
    lowest is ``[c 2^(l-k0+1) / 2^end_octaves, c 2^(l-k0+1))``, the highest
    ``[c 2^(l-k0), c 2^(l-k0) 2^end_octaves)``.

    Parameters
    ----------
    levels
        Consecutive pyramid levels, e.g. ``(2, 3, 4, 5)`` for P2-P5.
    canonical_size, canonical_level
        ``c`` and ``k0`` (224 and 4 in FPN).
    end_octaves
        Width in octaves of the end levels' sampling intervals.
    """

    def __init__(self, levels: tuple[int, ...] = (2, 3, 4, 5), canonical_size: float = 224.0,
                 canonical_level: int = 4, end_octaves: float = 1.0) -> None:
        levels = tuple(int(l) for l in levels)
        if not levels or list(levels) != list(range(levels[0], levels[0] + len(levels))):
            raise ValueError(f"FPNLevels(levels=) expects consecutive ascending ints; got {levels!r}")
        if not canonical_size > 0:
            raise ValueError(f"FPNLevels(canonical_size=) expects a positive number; got {canonical_size!r}")
        if not end_octaves > 0:
            raise ValueError(f"FPNLevels(end_octaves=) expects a positive number; got {end_octaves!r}")
        self._levels = levels
        self.canonical_size = float(canonical_size)
        self.canonical_level = int(canonical_level)
        self.end_octaves = float(end_octaves)

    @property
    def levels(self) -> tuple[int, ...]:
        return self._levels

    def level_of(self, size: np.ndarray) -> np.ndarray:
        # floor(k0 + log2(s / c)) clamped == the number of level lower edges c 2^(l-k0) that s
        # reaches; comparing with the edges avoids log2 rounding at the boundaries.
        size = np.asarray(size, dtype=np.float64)
        edges = self.canonical_size * 2.0 ** (np.array(self._levels[1:], dtype=np.float64) - self.canonical_level)
        return self._levels[0] + np.searchsorted(edges, size, side="right").astype(np.int64)

    def interval(self, level: int) -> tuple[float, float]:
        if level not in self._levels:
            raise ValueError(f"level {level} is not one of {self._levels}")
        c, k0 = self.canonical_size, self.canonical_level
        lo, hi = c * 2.0 ** (level - k0), c * 2.0 ** (level - k0 + 1)
        if level == self._levels[0]:
            lo = hi / 2.0 ** self.end_octaves
        if level == self._levels[-1]:
            hi = lo * 2.0 ** self.end_octaves
        return lo, hi

    def __repr__(self) -> str:
        return (f"FPNLevels(levels={self._levels}, canonical_size={self.canonical_size:g}, "
                f"canonical_level={self.canonical_level}, end_octaves={self.end_octaves:g})")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FPNLevels) and repr(self) == repr(other)
