"""The paper's Fig. 5 (box and mask AP per size bucket), for one run or several, and the tables that
print beside it (matplotlib, Agg, imported lazily)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from isus.fsio import atomic_savefig
from isus.errors import IsusError
from isus.eval.evaluator import EvalResult

__all__ = ["plot_by_size", "bucket_labels", "format_row", "format_buckets", "format_ranges", "format_compare"]


def _px(v: float) -> str:
    if v >= 1e6:
        return f"{v / 1e6:.3g}M"
    if v >= 1e3:
        return f"{v / 1e3:.3g}k"
    return f"{v:.0f}"


def bucket_labels(res: EvalResult, newline: bool = True) -> list[str]:
    """One label per bucket: its percentile range, its area range in px² and, since object sizes
    are usually quoted as ``sqrt(area)`` (the FPN level rule, isus stats), that side in px."""
    b = res.buckets
    edges, pcts = b["edges"], b.get("percentiles")
    sep = "\n" if newline else " "
    out = []
    for k in range(len(edges) - 1):
        head = f"p{pcts[k]:g}-p{pcts[k + 1]:g}" if pcts else f"bucket {k + 1}"
        close = "]" if k == len(edges) - 2 else ")"
        side = f"side {math.sqrt(edges[k]):.0f}-{math.sqrt(edges[k + 1]):.0f} px"
        out.append(f"{head}{sep}area [{_px(edges[k])}, {_px(edges[k + 1])}{close} px²{sep}{side}")
    return out


def _pct(v: float | None) -> str:
    return "   -" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:5.1f}"


def format_row(res: EvalResult, label: str | None = None, header: bool = True, width: int = 16) -> str:
    """The Table-1 row in percent, as papers print it; ``width`` is the label column's."""
    row = res.row()
    lines = []
    if header:
        lines.append(" " * width + "".join(f"{k:>8s}" for k in row))
    lines.append(f"{(label or '')[:width]:{width}s}" + "".join(f"{_pct(v):>8s}" for v in row.values()))
    return "\n".join(lines)


def format_buckets(res: EvalResult) -> str:
    """Box/mask AP per size bucket, in percent, with the bucket's edges and instance count."""
    if not res.buckets:
        return "AP by size: no scored instances were evaluated (pass --instances)"
    lines = [f"{'size bucket':50s}{'GT inst.':>10s}{'box AP':>8s}{'mask AP':>9s}"]
    mask = res.buckets.get("mask") or [None] * len(res.buckets["box"])
    for lab, n, b, m in zip(bucket_labels(res, newline=False), res.buckets["instances"], res.buckets["box"], mask):
        lines.append(f"{lab:50s}{n:10d}{_pct(b):>8s}{_pct(m):>9s}")
    ap = res.ap
    for name in ("small", "medium", "large"):
        b = (ap.get("box") or {}).get(f"ap_{name}")
        m = (ap.get("mask") or {}).get(f"ap_{name}")
        lines.append(f"{'COCO ' + name:50s}{'':10s}{_pct(b):>8s}{_pct(m):>9s}")
    return "\n".join(lines)


def format_ranges(res: EvalResult) -> str:
    """Per named area range: its pixels, GT instances, box/mask AP (percent), matched instances and
    the median width ratio, height ratio and IoU of the matched boxes (see docs/evaluation.md)."""
    lines = [f"{'area range':34s}{'GT inst.':>10s}{'box AP':>8s}{'mask AP':>9s}{'matched':>9s}"
             f"{'w ratio':>9s}{'h ratio':>9s}{'IoU':>7s}"]

    def num(v: float | None, width: int) -> str:
        return f"{'-':>{width}s}" if v is None or math.isnan(v) else f"{v:{width}.3f}"

    for name, r in res.ranges.items():
        lo, hi = r["area"]
        lab = f"{name} area [{_px(lo)}, {'inf' if hi is None else _px(hi)}) px²"
        e = r["extent"]
        lines.append(f"{lab:34s}{r['instances']:10d}{_pct(r['box']['ap']):>8s}"
                     f"{_pct((r['mask'] or {}).get('ap')):>9s}{e['matched']:9d}{num(e['width_ratio']['median'], 9)}"
                     f"{num(e['height_ratio']['median'], 9)}{num(e['iou']['median'], 7)}")
    return "\n".join(lines)


_EDGES_DIFFER = ("the runs have different size-bucket edges (evaluated on different ground truth or with other "
                 "percentiles); compare runs evaluated on the same set")


def format_compare(results: Sequence[EvalResult], labels: Sequence[str], by_size: bool = True) -> str:
    """Several runs: their Table-1 rows, then (``by_size``) box/mask AP per bucket (runs as rows),
    which needs the runs' bucket edges to agree (:class:`~isus.IsusError` otherwise)."""
    # labels are never cut: "CROP+CABB+ISUS (n=3)" must stay readable
    width = max([16] + [len(lab) + 1 for lab in labels])
    lines = [format_row(r, lab, header=k == 0, width=width)
             for k, (r, lab) in enumerate(zip(results, labels))]
    with_b = [(r, lab) for r, lab in zip(results, labels) if r.buckets] if by_size else []
    if with_b and not _same_buckets([r for r, _ in with_b]):
        raise IsusError(_EDGES_DIFFER)
    if with_b:
        heads = [lab.split("\n")[0] for lab in bucket_labels(with_b[0][0])]
        for kind in ("box", "mask"):
            lines.append("")
            lines.append(f"{kind + ' AP by size':{width}s}" + "".join(f"{h:>12s}" for h in heads))
            for r, lab in with_b:
                vals = r.buckets.get(kind) or [None] * len(heads)
                lines.append(f"{lab:{width}s}" + "".join(f"{_pct(v):>12s}" for v in vals))
    return "\n".join(lines)


def _same_buckets(results: Sequence[EvalResult]) -> bool:
    e0 = np.asarray(results[0].buckets["edges"], dtype=np.float64)
    return all(len(r.buckets["edges"]) == len(e0) and
               np.allclose(np.asarray(r.buckets["edges"], dtype=np.float64), e0, equal_nan=True) for r in results)


def plot_by_size(results: Sequence[EvalResult], labels: Sequence[str], path: str | Path,
                 title: str | None = None) -> Path:
    """Fig. 5: grouped bars of box (left) and mask (right) AP per size bucket, one bar per run.

    The runs must share their bucket edges (evaluated on the same ground truth).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = list(results)
    if not results or any(not r.buckets for r in results):
        raise IsusError("AP by size needs scored instances: evaluate with instances (isus eval --instances)")
    if not _same_buckets(results):
        raise IsusError(_EDGES_DIFFER)
    ticks = bucket_labels(results[0])
    nb, nr = len(ticks), len(results)
    fig, axes = plt.subplots(1, 2, figsize=(min(16.0, max(9.0, 1.4 * nb * max(1, nr) ** 0.5 * 2)), 4.6), sharey=False)
    width = 0.8 / nr
    x = np.arange(nb)
    for ax, kind in zip(axes, ("box", "mask")):
        for j, (r, lab) in enumerate(zip(results, labels)):
            vals = r.buckets.get(kind)
            ys = np.array([np.nan if v is None else 100 * v for v in (vals or [None] * nb)], dtype=float)
            bars = ax.bar(x - 0.4 + width * (j + 0.5), np.nan_to_num(ys), width, label=lab)
            for xb, y in zip(x - 0.4 + width * (j + 0.5), ys):
                ax.text(xb, (0 if math.isnan(y) else y) + 0.5, "n/a" if math.isnan(y) else f"{y:.1f}",
                        ha="center", va="bottom", fontsize=7, rotation=90 if nr > 2 else 0)
            del bars
        ax.set_xticks(x, ticks, fontsize=8)
        ax.set_title(f"{kind} AP by instance size")
        ax.set_ylabel("AP (%)")
        ax.set_xlabel("size bucket: percentiles of GT instance area, area range in pixels")
        ax.grid(axis="y", alpha=0.3)
        ymax = max([100 * v for r in results for v in (r.buckets.get(kind) or []) if v is not None and not
                    math.isnan(v)] + [1.0])
        ax.set_ylim(0, ymax * 1.18 + 1)
    # below both panels: inside an axis the legend hid the tallest bars
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, fontsize=8, loc="lower center", ncol=min(nr, 5), frameon=False)
    n_inst = sum(results[0].buckets["instances"])
    fig.suptitle(title or f"AP by size ({results[0].images} images, {n_inst} GT instances)", fontsize=10)
    fig.tight_layout(rect=(0.0, 0.07 * ((nr + 4) // 5), 1.0, 1.0))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_savefig(fig, path, dpi=110)
    plt.close(fig)
    return path
