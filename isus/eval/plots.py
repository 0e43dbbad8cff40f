"""The paper's Fig. 5 (box and mask AP per size bucket, and PQ per size bucket), for one run or
several, and the tables that print beside it (matplotlib, Agg, imported lazily)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from isus.fsio import atomic_savefig
from isus.errors import IsusError
from isus.eval.evaluator import EvalResult

__all__ = ["plot_by_size", "bucket_labels", "format_row", "format_buckets", "format_by_size", "format_ranges",
           "format_compare"]


def _px(v: float) -> str:
    if v >= 1e9:
        return f"{v:.3g}"
    if v >= 1e6:
        return f"{v / 1e6:.3g}M"
    if v >= 1e3:
        return f"{v / 1e3:.3g}k"
    return f"{v:.0f}"


def _side(area: float) -> str:
    side = math.sqrt(area)
    return f"{side:.0f}" if side < 1e4 else f"{side:.3g}"


def bucket_labels(res: EvalResult, newline: bool = True) -> list[str]:
    """One label per bucket: its percentile range, its area range in px² and, since object sizes
    are usually quoted as ``sqrt(area)`` (the FPN level rule, isus stats), that side in px."""
    b = _size_buckets(res)
    edges, pcts = b["edges"], b.get("percentiles")
    sep = "\n" if newline else " "
    out = []
    for k in range(len(edges) - 1):
        head = f"p{pcts[k]:g}-p{pcts[k + 1]:g}" if pcts else f"bucket {k + 1}"
        close = "]" if k == len(edges) - 2 else ")"
        side = f"side {_side(edges[k])}-{_side(edges[k + 1])} px"
        out.append(f"{head}{sep}area [{_px(edges[k])}, {_px(edges[k + 1])}{close} px²{sep}{side}")
    return out


def _size_buckets(res: EvalResult) -> dict[str, Any]:
    """The dict that holds the size buckets' ``edges`` and ``percentiles``: the AP buckets', else
    (no scored instances) PQ by size's; the two record the same edges when both are there."""
    return res.buckets if res.buckets and res.buckets.get("edges") else res.by_size


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


def format_by_size(res: EvalResult) -> str:
    """PQ, PQ_th, SQ, RQ, PC and PC_th (percent) and the TP / FP / FN counts per size bucket, with
    the bucket's edges and its non-crowd ground-truth segments (all categories)."""
    b = res.by_size
    if not b:
        return "PQ by size: no size buckets (no ground-truth thing instance to take percentiles of; pass edges)"
    metrics = ("pq", "pq_th", "sq", "rq", "pc", "pc_th")
    lines = [f"{'PQ by size':50s}{'GT segm.':>9s}" + "".join(f"{m[:2].upper() + m[2:]:>7s}" for m in metrics)
             + "".join(f"{m:>7s}" for m in ("TP", "FP", "FN"))]
    for k, lab in enumerate(bucket_labels(res, newline=False)):
        lines.append(f"{lab:50s}{b['segments'][k]:9d}" + "".join(f"{_pct(b[m][k]):>7s}" for m in metrics)
                     + "".join(f"{b[m][k]:7d}" for m in ("tp", "fp", "fn")))
    lines.append("(a TP and an FN count in the bucket of the GT segment's area, an FP in that of its own area; "
                 "the outer buckets are open)")
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
                 "percentiles or size edges); compare runs evaluated on the same set")


def format_compare(results: Sequence[EvalResult], labels: Sequence[str], by_size: bool = True) -> str:
    """Several runs: their Table-1 rows, then (``by_size``) box/mask AP and PQ, PQ_th and PC per
    bucket (runs as rows), which needs the runs' bucket edges to agree (:class:`~isus.IsusError`
    otherwise)."""
    # labels are never cut: "CROP+CABB+ISUS (n=3)" must stay readable
    width = max([16] + [len(lab) + 1 for lab in labels])
    lines = [format_row(r, lab, header=k == 0, width=width)
             for k, (r, lab) in enumerate(zip(results, labels))]
    with_b = [(r, lab) for r, lab in zip(results, labels) if r.buckets] if by_size else []
    with_p = [(r, lab) for r, lab in zip(results, labels) if r.by_size] if by_size else []
    if not _same_buckets([r for r, _ in with_b] + [r for r, _ in with_p]):
        raise IsusError(_EDGES_DIFFER)
    if with_b:
        heads = [lab.split("\n")[0] for lab in bucket_labels(with_b[0][0])]
        for kind in ("box", "mask"):
            lines.append("")
            lines.append(f"{kind + ' AP by size':{width}s}" + "".join(f"{h:>12s}" for h in heads))
            for r, lab in with_b:
                vals = r.buckets.get(kind) or [None] * len(heads)
                lines.append(f"{lab:{width}s}" + "".join(f"{_pct(v):>12s}" for v in vals))
    if with_p:
        heads = [lab.split("\n")[0] for lab in bucket_labels(with_p[0][0])]
        for key, name in (("pq", "PQ"), ("pq_th", "PQ_th"), ("pc", "PC")):
            lines.append("")
            lines.append(f"{name + ' by size':{width}s}" + "".join(f"{h:>12s}" for h in heads))
            for r, lab in with_p:
                lines.append(f"{lab:{width}s}" + "".join(f"{_pct(v):>12s}" for v in r.by_size[key]))
    return "\n".join(lines)


def _same_buckets(results: Sequence[EvalResult]) -> bool:
    """Whether every size-bucket edge list of ``results`` (AP's ``buckets`` and ``by_size``) is the
    same."""
    edges = [np.asarray(b["edges"], dtype=np.float64) for r in results for b in (r.buckets, r.by_size)
             if b and b.get("edges")]
    return all(len(e) == len(edges[0]) and np.allclose(e, edges[0], equal_nan=True) for e in edges[1:])


def plot_by_size(results: Sequence[EvalResult], labels: Sequence[str], path: str | Path,
                 title: str | None = None) -> Path:
    """Fig. 5: grouped bars per size bucket, one bar per run: box AP and mask AP (when every run has
    scored instances) and PQ, with PQ_th as a black tick on each bar (when every run has PQ by size).

    The runs must share their bucket edges (evaluated on the same ground truth).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = list(results)
    ap = bool(results) and all(r.buckets for r in results)
    pq = bool(results) and all(r.by_size for r in results)
    if not (ap or pq):
        raise IsusError("AP by size needs scored instances: evaluate with instances (isus eval --instances)")
    if not _same_buckets(results):
        raise IsusError(_EDGES_DIFFER)
    ticks = bucket_labels(results[0])
    nb, nr = len(ticks), len(results)
    # (panel title, y label, values per run, a second value per run drawn as a tick)
    panels: list[tuple[str, str, list[list[float | None]], list[list[float | None]] | None]] = []
    if ap:
        for kind in ("box", "mask"):
            panels.append((f"{kind} AP by instance size", "AP (%)",
                           [r.buckets.get(kind) or [None] * nb for r in results], None))
    if pq:
        panels.append(("PQ by segment size (tick: PQ_th)", "PQ (%)", [r.by_size["pq"] for r in results],
                       [r.by_size["pq_th"] for r in results]))
    per_panel = min(8.0, max(4.5, 1.4 * nb * max(1, nr) ** 0.5))
    fig, axes = plt.subplots(1, len(panels), figsize=(min(24.0, per_panel * len(panels)), 4.6), squeeze=False)
    width = 0.8 / nr
    x = np.arange(nb)
    for ax, (name, ylabel, runs, ticks_th) in zip(axes[0], panels):
        for j, (vals, lab) in enumerate(zip(runs, labels)):
            ys = np.array([np.nan if v is None else 100 * v for v in vals], dtype=float)
            xs = x - 0.4 + width * (j + 0.5)
            ax.bar(xs, np.nan_to_num(ys), width, label=lab, color=f"C{j}")
            top = np.nan_to_num(ys)
            if ticks_th is not None:
                th = np.array([np.nan if v is None else 100 * v for v in ticks_th[j]], dtype=float)
                ax.plot(xs, th, linestyle="none", marker="_", markersize=max(6.0, 40 * width), color="black",
                        markeredgewidth=2)
                top = np.fmax(top, th)  # the value above the tick, not through it
            for xb, y, t in zip(xs, ys, top):
                ax.text(xb, t + 1.0, "n/a" if math.isnan(y) else f"{y:.1f}",
                        ha="center", va="bottom", fontsize=7, rotation=90 if nr > 2 else 0)
        ax.set_xticks(x, ticks, fontsize=8)
        ax.set_title(name)
        ax.set_ylabel(ylabel)
        ax.set_xlabel("size bucket: percentiles of GT instance area, area range in pixels")
        ax.grid(axis="y", alpha=0.3)
        ymax = max([100 * v for vals in runs + (ticks_th or []) for v in vals if v is not None and not
                    math.isnan(v)] + [1.0])
        ax.set_ylim(0, ymax * 1.18 + 1)
    # below the panels: inside an axis the legend hid the tallest bars
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, fontsize=8, loc="lower center", ncol=min(nr, 5), frameon=False)
    if ap:
        n_inst = sum(results[0].buckets["instances"])
        default = f"AP{' and PQ' if pq else ''} by size ({results[0].images} images, {n_inst} GT instances)"
    else:
        default = f"PQ by size ({results[0].images} images, {sum(results[0].by_size['segments'])} GT segments)"
    fig.suptitle(title or default, fontsize=10)
    fig.tight_layout(rect=(0.0, 0.07 * ((nr + 4) // 5), 1.0, 1.0))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_savefig(fig, path, dpi=110)
    plt.close(fig)
    return path
