"""What several bench scripts share: the synthetic MVD data they measure on."""
from __future__ import annotations

from pathlib import Path

import isus


def parse_size(size: str) -> tuple[int, int]:
    """``"WxH"`` -> ``(w, h)``."""
    w, h = (int(v) for v in size.lower().split("x"))
    return w, h


def synthetic_mvd(root: Path, images: int, size: tuple[int, int]) -> Path:
    """A synthetic MVD-layout dataset at ``root``: reused when a previous run wrote it there
    (``--data``), else written now."""
    if not (root / isus.synth.MANIFEST).exists():
        w, h = size
        print(f"writing {images} synthetic MVD images of {w}x{h} ({w * h / 1e6:.1f} Mpx) to {root} ...", flush=True)
        isus.synth.write_dataset(root, "mvd", images, size=size)
    return root
