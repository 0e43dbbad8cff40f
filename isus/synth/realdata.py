"""Instance annotations derived from real semantic labels (for tests on the real MVD samples)."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from isus.synth.writers import _save_png, _write_json

__all__ = ["mvd_from_semantic"]


def mvd_from_semantic(labels_dir: str | Path, images_dir: str | Path, config: str | Path, out: str | Path,
                      split: str = "training") -> Path:
    """Turn an MVD tree that has only semantic ``labels/`` into one with v1.2 ``instances/``.

    Each connected component (8-connectivity) of a thing label becomes an instance (beyond 256
    per label, the smallest are merged into the 256th). Images are symlinked. For tests and
    benchmarks on the real samples, whose instance PNGs are not public.
    """
    labels_dir, images_dir, out = Path(labels_dir), Path(images_dir), Path(out)
    cfg = json.loads(Path(config).read_text())
    things = [k for k, lab in enumerate(cfg["labels"]) if lab["instances"]]
    (out / split / "images").mkdir(parents=True, exist_ok=True)
    (out / split / "v1.2" / "instances").mkdir(parents=True, exist_ok=True)
    _write_json(out / "config_v1.2.json", cfg)
    for png in sorted(labels_dir.glob("*.png")):
        lab = np.asarray(Image.open(png)).astype(np.int64)
        values = lab * 256
        for t in things:
            mask = (lab == t).astype(np.uint8)
            if not mask.any():
                continue
            n, comp, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
            order = np.argsort(-stats[1:, cv2.CC_STAT_AREA]) + 1  # largest first
            inst = np.zeros(n, np.int64)
            inst[order] = np.minimum(np.arange(len(order)), 255)
            values[mask.astype(bool)] += inst[comp[mask.astype(bool)]]
        _save_png(out / split / "v1.2" / "instances" / png.name, values, "I;16")
        src = next(images_dir.glob(png.stem + ".*"))
        dst = out / split / "images" / src.name
        if not dst.exists():
            dst.symlink_to(src.resolve())
    return out
