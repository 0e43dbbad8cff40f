"""Whether evaluation results belong side by side: ``isus eval --compare`` and the scale study's
report put runs in one table only when they were evaluated on the same images, the same
categories and the same size buckets."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from isus.errors import IsusError

__all__ = ["RunMismatchError", "Comparison", "check_comparable", "dataset_identity"]


class RunMismatchError(IsusError):
    """Evaluation results that cannot stand side by side (other data, categories or buckets)."""


def dataset_identity(name: str, split: str | None, image_ids: Iterable[Any]) -> dict[str, Any]:
    """``EvalResult.dataset``: the dataset's registry name, its split and the SHA-256 of the
    evaluated image ids (as strings, sorted, one per line) — cheap, and equal on every machine."""
    text = "\n".join(sorted(str(i) for i in image_ids))
    return {"name": name, "split": split, "image_ids_sha256": hashlib.sha256(text.encode()).hexdigest()}


@dataclass(frozen=True)
class Comparison:
    """What :func:`check_comparable` found.

    Attributes
    ----------
    mismatches
        Differences that make the table misleading (dataset, split, evaluated images, image count,
        bucket edges); ``allow_mismatch`` turns them from an error into notes.
    notes
        What could not be checked (an identity an older eval.json does not record).
    same_buckets
        Whether the runs that have size buckets share their edges (the AP-by-size and PQ-by-size
        tables and plot need it).
    """

    mismatches: tuple[str, ...]
    notes: tuple[str, ...]
    same_buckets: bool


def _obj(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _identity(data: Mapping[str, Any]) -> dict[str, Any]:
    ds = _obj(data.get("dataset"))
    split = ds.get("split", data.get("eval_split"))  # examples/train_panoptic.py records eval_split
    per_class = _obj(data.get("per_class"))
    buckets = _obj(data.get("buckets"))
    by_size = _obj(data.get("by_size"))
    return {"dataset": ds.get("name"), "split": split, "image ids": ds.get("image_ids_sha256"),
            "images": data.get("images"),
            "categories": {(v.get("id"), name, bool(v.get("isthing"))) for name, v in per_class.items()
                           if isinstance(v, dict)},
            "edges": buckets.get("edges") or None, "percentiles": buckets.get("percentiles"),
            "pq edges": by_size.get("edges") or None, "pq percentiles": by_size.get("percentiles")}


def _same_edges(a: Sequence[float | None], b: Sequence[float | None]) -> bool:
    if len(a) != len(b):
        return False
    x, y = (np.array([np.nan if v is None else v for v in e], dtype=np.float64) for e in (a, b))
    return bool(np.allclose(x, y, rtol=1e-9, atol=0.0, equal_nan=True))


def _edges_text(ident: dict[str, Any], key: str = "edges") -> str:
    edges = ", ".join("-" if e is None else f"{e:.6g}" for e in ident[key])
    pcts = ident[key.replace("edges", "percentiles")]
    return f"[{edges}] px" + (f" (percentiles {','.join(f'{p:g}' for p in pcts)})" if pcts else "")


def check_comparable(runs: Sequence[tuple[str, Mapping[str, Any]]], allow_mismatch: bool = False) -> Comparison:
    """Check that evaluation results (``eval.json`` dicts, each with the name of its file) may be
    tabulated together; every run is compared with the first.

    Raises :class:`RunMismatchError` listing every difference when the categories differ (never
    overridden: per-class rows and category means would mean different things), or, unless
    ``allow_mismatch``, when the dataset, split, evaluated image ids, image count or bucket edges
    (``buckets.edges`` of AP, ``by_size.edges`` of PQ/PC by size) differ. A dataset identity that a file does not record (an eval.json written before isus
    recorded it, or by examples/train_panoptic.py) counts as unknown: allowed, with a note.
    """
    if not runs:
        return Comparison((), (), True)
    ids = [(name, _identity(d)) for name, d in runs]
    (first, a) = ids[0]
    mismatches: list[str] = []
    notes: list[str] = []
    hard: list[str] = []
    for name, b in ids[1:]:
        if a["categories"] != b["categories"]:
            only_a = sorted(a["categories"] - b["categories"], key=str)[:3]
            only_b = sorted(b["categories"] - a["categories"], key=str)[:3]
            hard.append(f"categories: {len(a['categories'])} in {first}, {len(b['categories'])} in {name}; only in "
                        f"the first: {[c[1] for c in only_a]}, only in the second: {[c[1] for c in only_b]}")
        for key in ("dataset", "split", "image ids"):
            if a[key] is not None and b[key] is not None and a[key] != b[key]:
                show = (lambda v: f"{v[:12]}...") if key == "image ids" else repr
                mismatches.append(f"{key}: {show(a[key])} in {first}, {show(b[key])} in {name}")
        if a["images"] != b["images"]:
            mismatches.append(f"images: {a['images']} evaluated in {first}, {b['images']} in {name}")
    unknown = [name for name, b in ids if b["dataset"] is None or b["image ids"] is None]
    if unknown:
        notes.append(f"the dataset identity of {', '.join(unknown)} is unknown (an eval.json of an older isus or "
                     "of examples/train_panoptic.py); compared as if it matched")
    # the AP buckets (buckets.edges) and the PQ/PC ones (by_size.edges; the same edges where both
    # are recorded), each against the first run that has them; a pair is named once
    same = True
    named: set[str] = set()
    for key, what in (("edges", "bucket edges"), ("pq edges", "bucket edges (PQ by size)")):
        with_b = [(name, b) for name, b in ids if b[key]]
        for name, b in with_b[1:]:
            n0, b0 = with_b[0]
            if not _same_edges(b0[key], b[key]):
                same = False
                if name not in named:
                    named.add(name)
                    mismatches.append(f"{what}: {_edges_text(b0, key)} in {n0}, {_edges_text(b, key)} in {name} "
                                      "(other ground truth, other --percentiles or other --size-edges)")
    if hard or (mismatches and not allow_mismatch):
        lines = hard + mismatches
        hint = ("" if hard else "; pass --allow-mismatch (isus eval --compare) to tabulate them anyway, without "
                "the AP-by-size and PQ-by-size tables when the bucket edges differ")
        raise RunMismatchError("the runs cannot be compared:\n  - " + "\n  - ".join(lines) + "\n" +
                               ("categories must match" if hard else hint.lstrip("; ")))
    return Comparison(tuple(mismatches), tuple(notes), same)
