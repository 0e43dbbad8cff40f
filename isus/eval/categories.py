"""The evaluated categories and the error for malformed evaluation input: what the per-image
statistics (:mod:`isus.eval.stats`) and the COCO conversions (:mod:`isus.eval.coco`) share."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from isus.errors import IsusError
from isus.types import Category

__all__ = ["CategoryTable", "EvalInputError"]


class EvalInputError(IsusError):
    """A ground truth or prediction handed to the evaluator is malformed."""


@dataclass(frozen=True)
class CategoryTable:
    """The evaluated categories and a fast id -> position lookup."""

    categories: tuple[Category, ...]

    def __post_init__(self) -> None:
        ids = [c.id for c in self.categories]
        if len(set(ids)) != len(ids):
            raise ValueError("PanopticEvaluator(categories=) expects distinct category ids")
        if not ids:
            raise ValueError("PanopticEvaluator(categories=) expects at least one category")

    @property
    def ids(self) -> np.ndarray:
        return np.array([c.id for c in self.categories], dtype=np.int64)

    @property
    def isthing(self) -> np.ndarray:
        return np.array([c.isthing for c in self.categories], dtype=bool)

    def positions(self, category_ids: np.ndarray, image: str, what: str) -> np.ndarray:
        """Positions of ``category_ids`` in :attr:`categories`; an unknown id is an error."""
        ids = self.ids
        order = np.argsort(ids)
        pos = np.searchsorted(ids[order], category_ids)
        pos = np.minimum(pos, len(ids) - 1)
        bad = ids[order][pos] != category_ids
        if bad.any():
            raise EvalInputError(f"{image}: {what} has unknown category id {int(np.asarray(category_ids)[bad][0])} "
                                 f"(the evaluated categories have ids {_show(np.sort(ids))})")
        return order[pos]


def _show(values: np.ndarray, k: int = 12) -> str:
    v = [int(x) for x in values[:k]]
    return ", ".join(map(str, v)) + (", ..." if len(values) > k else "")
