"""Crop-aware bounding box (CABB) loss, Porzi et al., CVPR 2021, Sec. 2.3-2.4.

``cabb_targets`` solves the inner minimisation (vectorised, any device); ``cabb_loss`` is the
smooth-L1 loss against those targets (exact gradient by the envelope theorem). The
``isus.cabb.torchvision`` adapters plug it into torchvision's RPN and box head through
subclasses (torchvision is neither imported nor patched). See ``docs/cabb.md``.
"""

from isus.cabb.loss import cabb_loss, cabb_targets
from isus.cabb.torchvision import (
    CabbInputs,
    fastrcnn_loss,
    rpn_box_loss,
    rpn_compute_loss,
)

__all__ = [
    "cabb_targets",
    "cabb_loss",
    "CabbInputs",
    "fastrcnn_loss",
    "rpn_box_loss",
    "rpn_compute_loss",
]
