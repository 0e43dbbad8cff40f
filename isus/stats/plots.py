"""PNG plots of :func:`isus.stats.compute_stats` numbers (matplotlib, Agg, imported lazily)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from isus.fsio import atomic_savefig
from isus.errors import InstancesUnavailableError

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["write_plots"]

_MODES = (("full_images", "full images", "0.55"), ("cus", "CUS", "tab:orange"), ("isus", "ISUS", "tab:blue"))
_RFS = ("rfs", "RFS", "tab:green")


def _modes(stats: dict[str, Any]) -> tuple[tuple[str, str, str], ...]:
    """The modes of ``stats``: full images, CUS, ISUS, and RFS when it was drawn."""
    return _MODES + ((_RFS,) if "rfs" in stats["levels"] else ())


def _subtitle(stats: dict[str, Any]) -> str:
    st, ds = stats["settings"], stats["dataset"]
    s0 = f"s0={st['shortest_side']:g}" if st["shortest_side"] else "no s0"
    rfs = st.get("rfs")
    rfs_text = (f", RFS t={rfs['threshold']:g}{' (sqrt)' if rfs['sqrt'] else ' (no sqrt)'}"
                f"{', whole images' if rfs['crop'] == 'image' else ''}") if rfs else ""
    return (f"{ds['name']} {ds.get('split') or ''} ({ds['num_images']} images, {stats['num_instances']} instances)\n"
            f"crop {st['crop_size'][0]}x{st['crop_size'][1]}, {s0}, r_st={st['stuff_scale_range']}, "
            f"r_th={st['thing_scale_range']}{rfs_text}, {st['samples']} crops per mode")


def _level_bands(ax: Axes, stats: dict[str, Any], span: tuple[float, float]) -> None:
    """Shade every level's range of sizes over ``span`` (the plotted sizes). The lowest level
    also takes every smaller object and the highest every larger one (the rule clamps), so their
    bands reach the plot's edges; ``level_intervals`` are only ISUS's sampling intervals."""
    colors = ("#e8f0fe", "#fdf1e6")
    intervals = stats["settings"]["level_intervals"]
    levels = stats["settings"]["levels"]
    for k, (level, (lo, hi)) in enumerate(zip(levels, intervals)):
        lo = min(span[0], lo) if k == 0 else lo
        hi = max(span[1], hi) if k == len(levels) - 1 else hi
        ax.axvspan(lo, hi, color=colors[k % 2], zorder=0)
        a, b = max(lo, span[0]), min(hi, span[1])
        if a < b:
            ax.text(np.sqrt(a * b), 0.97, f"P{level}", transform=ax.get_xaxis_transform(), ha="center", va="top",
                    fontsize=9, color="0.3")


def write_plots(stats: dict[str, Any], out: str | Path) -> list[Path]:
    """Write ``scale_distribution.png``, ``crop_truncation.png``, ``level_supervision.png`` (and
    with per-class numbers ``per_class_levels.png``) into ``out``; returns their paths.

    Raises :class:`~isus.InstancesUnavailableError`, writing nothing, when ``stats`` count no
    instance: every plot would be empty."""
    if not stats.get("num_instances"):
        raise InstancesUnavailableError("these statistics count no instances: there is nothing to plot")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    unit = stats["settings"]["scale_unit"]
    edges = np.array(stats["scale_histogram"]["edges"])
    centres = np.sqrt(edges[:-1] * edges[1:])
    paths = []

    # 1. object scale distribution (Fig. 2 right)
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    counts = np.array(stats["scale_histogram"]["counts"])
    ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color="tab:blue", edgecolor="white", lw=0.5)
    ax.set_xscale("log")
    used = np.flatnonzero(counts)
    span = (edges[max(used[0] - 1, 0)], edges[min(used[-1] + 2, len(edges) - 1)]) if len(used) else \
        (edges[0], edges[-1])
    _level_bands(ax, stats, span)
    ax.set_xlim(*span)
    ax.set_xlabel(f"instance scale ({unit})")
    ax.set_ylabel("instances")
    ax.set_title("Object scale distribution (shaded: the sizes each FPN level takes)\n" + _subtitle(stats), fontsize=9)
    fig.tight_layout()
    paths.append(out / "scale_distribution.png")
    atomic_savefig(fig, paths[-1], dpi=100)
    plt.close(fig)

    # 2. crop truncation (Fig. 2 left)
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    _level_bands(ax, stats, span)
    for mode, label, color in _modes(stats)[1:]:
        t = stats["truncation"][mode]
        mean = np.array([np.nan if v is None else v for v in t["mean_iou"]], dtype=float)
        ok = np.array(t["count"]) >= 5
        ax.plot(centres[ok], mean[ok], "o-", ms=3, color=color, label=f"{label} crops")
    ax.set_xscale("log")
    ax.set_ylim(0, 1.02)
    ax.set_xlim(*span)
    ax.set_xlabel(f"instance scale ({unit})")
    ax.set_ylabel("mean IoU(cropped box, original box)")
    ax.legend(loc="lower left")
    ax.set_title("Crop truncation: how much of each object's box a crop keeps\n" + _subtitle(stats), fontsize=9)
    fig.tight_layout()
    paths.append(out / "crop_truncation.png")
    atomic_savefig(fig, paths[-1], dpi=100)
    plt.close(fig)

    # 3. per-level supervision
    lv = stats["levels"]
    names = [f"P{l}" for l in lv["levels"]]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    modes = _modes(stats)
    width = 0.27 if len(modes) == 3 else 0.8 / len(modes)
    for k, (mode, label, color) in enumerate(modes):
        counts = np.array(lv[mode], dtype=float)
        share = 100 * counts / max(counts.sum(), 1)
        bars = ax.bar(x + (k - (len(modes) - 1) / 2) * width, share, width, color=color,
                      label=f"{label} (max/min {lv['imbalance'][mode]:.1f})")
        for b, c in zip(bars, counts):
            ax.text(b.get_x() + b.get_width() / 2, b.get_height(), f"{int(c)}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x, names)
    ax.set_yscale("log")  # the smallest level dominates; a log axis keeps the others readable
    ax.set_xlabel("FPN level (instance assigned by the size of its visible box in the crop)")
    ax.set_ylabel("share of instances (%, log scale)")
    ax.legend()
    ax.set_title("Per-level supervision: " + " vs ".join(m[1] for m in modes) + " (bar labels: instance counts)\n"
                 + _subtitle(stats), fontsize=9)
    fig.tight_layout()
    paths.append(out / "level_supervision.png")
    atomic_savefig(fig, paths[-1], dpi=100)
    plt.close(fig)

    # 4. per class
    per_class = lv.get("per_class")
    if per_class:
        classes = sorted(per_class)
        from matplotlib.colors import LogNorm

        modes = _modes(stats)
        fig, axes = plt.subplots(1, len(modes), figsize=(11 + 3 * (len(modes) - 3), 0.35 * len(classes) + 2.6),
                                 sharey=True)
        fig.subplots_adjust(top=1 - 1.3 / (0.35 * len(classes) + 2.6), bottom=0.15, left=0.15, right=0.85)
        for ax, (mode, label, _) in zip(axes, modes):
            m = np.array([per_class[c][mode] for c in classes], dtype=float)
            share = 100 * m / np.maximum(m.sum(axis=1, keepdims=True), 1)
            im = ax.imshow(np.maximum(share, 0.1), aspect="auto", cmap="viridis", norm=LogNorm(0.1, 100))
            ax.set_xticks(range(len(names)), names)
            ax.set_title(label, fontsize=9)
        axes[0].set_yticks(range(len(classes)), [c.split("--")[-1] for c in classes], fontsize=7)
        fig.colorbar(im, ax=axes, label="share of the class's instances (%, log)")
        fig.suptitle("Per-class level supervision\n" + _subtitle(stats), fontsize=9)
        paths.append(out / "per_class_levels.png")
        atomic_savefig(fig, paths[-1], dpi=100)
        plt.close(fig)
    return paths
