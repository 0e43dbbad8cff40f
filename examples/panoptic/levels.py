"""The lengths a Panoptic FPN detector is tuned for, and the sampler's matching level rule.

Kept apart from ``model.py`` so that the sampler side needs no torchvision.
"""
from __future__ import annotations

from isus.sampling import FPNLevels

__all__ = ["CANONICAL_SCALE", "ANCHOR_SIZES", "level_rule"]

#: torchvision's Mask R-CNN defaults, which ``length_scale`` scales together: the RoI level
#: mapper's canonical size (level 4) and the RPN anchor sizes of P2..P6.
CANONICAL_SCALE = 224.0
ANCHOR_SIZES = (32.0, 64.0, 128.0, 256.0, 512.0)


def level_rule(length_scale: float = 1.0) -> FPNLevels:
    """The sampler's size -> level rule matching ``build_panoptic_fpn(length_scale=...)``: P2..P5,
    canonical size ``224 * length_scale`` at level 4 (torchvision's RoI level mapper)."""
    return FPNLevels(levels=(2, 3, 4, 5), canonical_size=CANONICAL_SCALE * float(length_scale), canonical_level=4)
