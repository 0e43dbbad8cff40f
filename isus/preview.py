"""Preview grids of sampled crops: masks, visible boxes, original boxes, truncated sides."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from isus.fsio import atomic_savefig
from isus.crop.engine import CropEngine
from isus.index import Index
from isus.sampling.config import RepeatFactorConfig, SamplerConfig
from isus.sampling.policy import SamplingPolicy

__all__ = ["render_preview", "sigma_label"]


def sigma_label(sigma: float, clamped: bool) -> str:
    """``"σ 1.73"``; ``"σ 4.00 (clamped)"`` when ISUS clamped the instance's σ to
    ``config.thing_scale_range`` (r_th)."""
    return f"σ {sigma:.2f}" + (" (clamped)" if clamped else "")


def render_preview(index: Index, out: str | Path, n: int = 16, *, config: SamplerConfig | None = None,
                   seed: int = 0, cols: int = 4) -> Path:
    """Draw ``n`` sampled crops into one PNG grid.

    Each tile shows the crop with its instance masks overlaid, visible boxes (solid), original
    boxes (dashed, extending past the crop, whose border is the grey frame) and truncated sides
    (thick red). Titles give the class, σ (the scale relative to the s0 rescale; "clamped" when
    ISUS clamped it to ``r_th``) and (ISUS) the level aimed at.

    A semantic-only dataset has no instances: its tiles show the semantic map in the classes'
    colours instead (CUS only; ISUS raises :class:`~isus.InstancesUnavailableError`).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    ds = index.open_dataset(verify=False)  # the crop engine verifies it against the index
    config = config or SamplerConfig(crop_size=(512, 512))
    batch = SamplingPolicy(index, config).draw(np.random.default_rng(seed), n)
    engine = CropEngine(ds, index)
    semantic_only = not ds.has_instances
    colors = np.array([c.color for c in ds.categories], dtype=np.float32)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.4 * rows), squeeze=False)
    rng = np.random.default_rng(seed + 1)
    for k, ax in enumerate(axes.ravel()):
        ax.set_axis_off()
        if k >= n:
            continue
        spec = batch.spec(k)
        s = engine(spec)
        h, w = s.image.shape[:2]
        overlay = s.image.astype(np.float32)
        for m in s.masks:
            overlay[m] = 0.55 * overlay[m] + 0.45 * rng.integers(40, 255, 3)
        if semantic_only:
            known = s.semantic != engine.config.ignore_label
            overlay[known] = 0.55 * overlay[known] + 0.45 * colors[s.semantic[known]]
        ax.imshow(overlay.astype(np.uint8), extent=(0, w, h, 0))
        mx, my = (0.0, 0.0) if semantic_only else (0.35 * w, 0.35 * h)  # room for original boxes
        ax.set_xlim(-mx, w + mx)
        ax.set_ylim(h + my, -my)
        ax.add_patch(Rectangle((0, 0), w, h, fill=False, ec="0.5", lw=1))
        for b, ob, t in zip(s.boxes, s.original_boxes, s.truncated):
            ax.add_patch(Rectangle((b[0], b[1]), b[2] - b[0], b[3] - b[1], fill=False, ec="yellow", lw=0.8))
            ax.add_patch(Rectangle((ob[0], ob[1]), ob[2] - ob[0], ob[3] - ob[1], fill=False, ec="cyan", lw=0.8,
                                   ls=(0, (3, 2))))
            for side, (xa, ya, xb, yb) in enumerate([(b[0], b[1], b[0], b[3]), (b[0], b[1], b[2], b[1]),
                                                     (b[2], b[1], b[2], b[3]), (b[0], b[3], b[2], b[3])]):
                if t[side]:
                    ax.plot([xa, xb], [ya, yb], color="red", lw=2.5)
        aimed = ""
        if spec.instance >= 0:  # ISUS: the instance this crop was drawn for, outlined in magenta
            seg = int(index.instances.segment_id[spec.instance])
            hit = np.flatnonzero(s.segment_ids == seg)
            if len(hit):
                b = s.boxes[hit[0]]
                ax.add_patch(Rectangle((b[0], b[1]), b[2] - b[0], b[3] - b[1], fill=False, ec="magenta", lw=2.2))
                aimed = ", aimed instance: magenta"
            else:
                aimed = ", aimed instance not kept"
        name = ds.category(spec.category).name.split("--")[-1]
        level = f", aimed P{spec.level}" if spec.level >= 0 else ""
        targets = "semantic map only" if semantic_only else (
            f"{len(s.labels)} inst., {int(s.truncated.any(1).sum())} truncated")
        ax.set_title(f"{name}: {sigma_label(float(batch.sigma[k]), bool(batch.clamped[k]))}{level}\n"
                     + targets + aimed + (", flipped" if spec.flip else ""), fontsize=8)
    lo, hi = config.thing_scale_range
    s0 = (f"s0: images first rescaled to shortest side {config.shortest_side:g}" if config.shortest_side else
          "no s0: images as they are")
    drawn = ("the semantic map in the classes' colours (a semantic-only dataset: no instances), crop border (grey)"
             if semantic_only else "masks, visible boxes (yellow), original boxes (cyan, dashed), truncated sides "
             "(red), crop border (grey)")
    isus_line = ("" if config.mode != "isus" or semantic_only else
                 "\nISUS thing crops: an instance (magenta) and a level P_l are drawn, and σ is chosen so that the "
                 "instance's size sqrt(w h) x σ falls in P_l's range; clamped: σ was held to r_th")
    if isinstance(config, RepeatFactorConfig):
        how = ("a class of the image and σ in r_st, the window around it" if config.rfs_crop == "class"
               else "the whole image at σ = 1 (titled with its rarest class)")
        isus_line = (f"\nRFS crops: an image drawn by its repeat factor, the largest of its classes' "
                     f"max(1, (t / f_c)^{0.5 if config.rfs_sqrt else 1:g}) with t = {config.rfs_threshold:g}; then {how}")
    st_lo, st_hi = config.stuff_scale_range
    fig.suptitle(f"{ds.name} {config.mode.upper()} crops {config.crop_size[0]}x{config.crop_size[1]}: {drawn}\n"
                 f"{s0}; σ: the crop's scale on top of that, uniform in r_st = "
                 f"[{st_lo:g}, {st_hi:g}] (stuff, and every class under CUS); r_th = [{lo:g}, {hi:g}]" + isus_line,
                 fontsize=9)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_savefig(fig, out, dpi=90)
    plt.close(fig)
    return out
