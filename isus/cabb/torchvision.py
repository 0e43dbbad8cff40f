"""Drop-in CABB box losses for torchvision's Faster/Mask R-CNN (RPN and box head).

Nothing here imports torchvision, so ``import isus`` works without it, and nothing in
torchvision is patched: the losses are plain functions that a subclass calls. Targets are
torchvision's per-image dicts; CABB is used for the images whose target carries
``"truncated"`` ((G, 4) bool, per side x0, y0, x1, y1, as emitted by the crop engine, e.g.
``isus.torch.to_tv_tensors``) and optionally ``"crop_box"`` ((4,), the region the network saw,
xyxy; without it a truncated side's border is the visible box's edge there, which the crop
engine guarantees touches the crop border). Without ``"truncated"`` the functions compute
exactly what torchvision computes.

Plugging in takes a subclass of a few lines (see ``docs/cabb.md``)::

    class CabbRPN(RegionProposalNetwork):
        def assign_targets_to_anchors(self, anchors, targets):
            labels, matched = super().assign_targets_to_anchors(anchors, targets)
            self._cabb = CabbInputs(anchors, matched, targets, weights=self.box_coder.weights)
            return labels, matched

        def compute_loss(self, objectness, pred_bbox_deltas, labels, regression_targets):
            return rpn_compute_loss(self, objectness, pred_bbox_deltas, labels,
                                    regression_targets, cabb=self._cabb)

and for the box head, whose ``forward`` calls ``fastrcnn_loss`` itself, the subclass keeps the
sampled proposals, captures the box predictor's outputs for the duration of the call and
replaces ``loss_box_reg`` (``docs/cabb.md`` has the whole class; ``examples/panoptic/model.py``
uses it)::

    class CabbRoIHeads(RoIHeads):
        def select_training_samples(self, proposals, targets):
            self._samples = super().select_training_samples(proposals, targets)
            return self._samples

        def forward(self, features, proposals, image_shapes, targets=None):
            if not self.training:
                return super().forward(features, proposals, image_shapes, targets)
            outputs = []
            hook = self.box_predictor.register_forward_hook(lambda m, i, out: outputs.append(out))
            try:
                result, losses = super().forward(features, proposals, image_shapes, targets)
            finally:
                hook.remove()
            (class_logits, box_regression), = outputs
            sampled, matched_idxs, labels, regression_targets = self._samples
            cabb = CabbInputs(sampled, None, targets, matched_idxs=matched_idxs,
                              weights=self.box_coder.weights)
            _, losses["loss_box_reg"] = fastrcnn_loss(class_logits, box_regression, labels,
                                                      regression_targets, cabb)
            return result, losses
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from isus.cabb.loss import cabb_loss

__all__ = ["CabbInputs", "rpn_compute_loss", "rpn_box_loss", "fastrcnn_loss"]

# torchvision hard-codes this beta in both losses.
TORCHVISION_BETA = 1.0 / 9.0


@dataclass(frozen=True)
class CabbInputs:
    """What the CABB loss needs beyond torchvision's encoded regression targets.

    Parameters
    ----------
    references : list of Tensor, (R_i, 4) each
        Anchors (RPN) or proposals (box head) per image, xyxy, in the order of the
        regression targets.
    matched_boxes : list of Tensor, (R_i, 4) each
        The ground-truth box matched to each reference (``matched_gt_boxes`` of the RPN).
        May be None when ``matched_idxs`` is given.
    targets : list of dict
        torchvision targets; ``"boxes"`` (G_i, 4) and optionally ``"truncated"`` (G_i, 4)
        bool and ``"crop_box"`` (4,) (default: each box's own edges, see the module docstring).
    matched_idxs : list of Tensor, (R_i,) each, optional
        Index of the matched ground truth (negative for background), as returned by
        ``RoIHeads.select_training_samples``. Without it, the ground truth of a positive
        reference is found by exact equality of its matched box with the image's boxes.
    weights : 4 floats
        The ``BoxCoder`` weights the regression targets were encoded with.
    """

    references: Sequence[Tensor]
    matched_boxes: Sequence[Tensor] | None
    targets: Sequence[dict[str, Tensor]]
    matched_idxs: Sequence[Tensor] | None = None
    weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0)

    def uses_cabb(self) -> bool:
        return any("truncated" in t for t in self.targets)

    def gather(self, rows: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """References, visible boxes, truncation flags and crop boxes of ``rows`` (global indices)."""
        refs = torch.cat(list(self.references), dim=0)
        device, dtype = refs.device, refs.dtype
        sizes = [int(r.shape[0]) for r in self.references]
        image_of_ref = torch.repeat_interleave(
            torch.arange(len(sizes), device=device), torch.tensor(sizes, device=device)
        )
        img = image_of_ref[rows]
        gt_boxes, gt_trunc, crops, gt_offsets = [], [], [], [0]
        has_crop: list[bool] = []
        for i, t in enumerate(self.targets):
            b = t["boxes"].to(dtype)
            gt_boxes.append(b)
            if "truncated" in t:
                tr = t["truncated"]
                if tr.dtype != torch.bool or tuple(tr.shape) != (b.shape[0], 4):
                    raise ValueError(
                        f"targets[{i}]['truncated'] expects a bool tensor of shape ({b.shape[0]}, 4); "
                        f"got shape {tuple(tr.shape)}, dtype {tr.dtype}"
                    )
                gt_trunc.append(tr.to(device))
            else:
                gt_trunc.append(torch.zeros(b.shape[0], 4, dtype=torch.bool, device=device))
            if "crop_box" in t:
                crops.append(t["crop_box"].to(device=device, dtype=dtype).reshape(4))
                has_crop.append(True)
            else:
                crops.append(torch.zeros(4, dtype=dtype, device=device))
                has_crop.append(False)
            gt_offsets.append(gt_offsets[-1] + int(b.shape[0]))
        all_gt = torch.cat(gt_boxes, dim=0)
        all_tr = torch.cat(gt_trunc, dim=0)
        crop = torch.stack(crops)[img]
        if self.matched_idxs is None and self.matched_boxes is None:
            raise ValueError("CabbInputs needs matched_boxes or matched_idxs")
        if all_gt.shape[0] == 0:  # no ground truth anywhere: no positives either
            n = rows.shape[0]
            return refs[rows], refs[rows], torch.zeros(n, 4, dtype=torch.bool, device=device), crop
        if self.matched_idxs is not None:
            offs = torch.tensor(gt_offsets[:-1], device=device)
            local = torch.cat(list(self.matched_idxs), dim=0)[rows].clamp_min(0)
            gt_idx = local + offs[img]
            boxes = all_gt[gt_idx]
        else:
            matched_boxes = self.matched_boxes
            assert matched_boxes is not None  # (checked above: one of the two is given)
            boxes = torch.cat(list(matched_boxes), dim=0)[rows].to(dtype)
            gt_img = torch.repeat_interleave(
                torch.arange(len(gt_boxes), device=device),
                torch.tensor([int(b.shape[0]) for b in gt_boxes], device=device),
            )
            # the RPN gives matched boxes, not indices: find each one among its image's boxes
            same = (boxes[:, None, :] == all_gt[None, :, :]).all(-1) & (img[:, None] == gt_img[None, :])
            gt_idx = same.to(torch.int8).argmax(dim=1)
        truncated = all_tr[gt_idx]
        if not all(has_crop):
            # Without a crop box, the visible box is its own border: the crop engine marks a
            # side truncated only where the visible box touches the crop border.
            own = ~torch.tensor(has_crop, device=device)[img]
            crop = torch.where(own[:, None], boxes, crop)
        return refs[rows], boxes, truncated, crop


def rpn_box_loss(
    pred_bbox_deltas: Tensor,
    regression_targets: Tensor,
    sampled_pos_inds: Tensor,
    num_sampled: int,
    cabb: CabbInputs | None = None,
) -> Tensor:
    """Box part of ``RegionProposalNetwork.compute_loss``, with CABB when targets carry ``truncated``.

    ``smooth_l1(pred[pos], target[pos], beta=1/9, reduction="sum") / num_sampled``, the target
    of rows whose ground truth is truncated replaced by ``cabb_targets`` (paper Eq. 2).
    """
    pred = pred_bbox_deltas[sampled_pos_inds]
    if cabb is None or not cabb.uses_cabb():
        loss = F.smooth_l1_loss(pred, regression_targets[sampled_pos_inds], beta=TORCHVISION_BETA, reduction="sum")
        return loss / num_sampled
    refs, boxes, truncated, crop = cabb.gather(sampled_pos_inds)
    loss = cabb_loss(pred, refs, boxes, truncated, crop, cabb.weights, TORCHVISION_BETA, reduction="sum")
    return loss / num_sampled


def rpn_compute_loss(
    rpn: Any,
    objectness: Tensor,
    pred_bbox_deltas: Tensor,
    labels: list[Tensor],
    regression_targets: list[Tensor],
    cabb: CabbInputs | None = None,
) -> tuple[Tensor, Tensor]:
    """``RegionProposalNetwork.compute_loss`` (``rpn`` is the module, for its sampler) with CABB.

    Returns ``(objectness_loss, box_loss)`` exactly as torchvision does when ``cabb`` is None
    or no target carries ``"truncated"``.
    """
    sampled_pos_inds, sampled_neg_inds = rpn.fg_bg_sampler(labels)
    sampled_pos_inds = torch.where(torch.cat(sampled_pos_inds, dim=0))[0]
    sampled_neg_inds = torch.where(torch.cat(sampled_neg_inds, dim=0))[0]
    sampled_inds = torch.cat([sampled_pos_inds, sampled_neg_inds], dim=0)
    objectness = objectness.flatten()
    labels_cat = torch.cat(labels, dim=0)
    targets_cat = torch.cat(regression_targets, dim=0)
    box_loss = rpn_box_loss(pred_bbox_deltas, targets_cat, sampled_pos_inds, sampled_inds.numel(), cabb)
    objectness_loss = F.binary_cross_entropy_with_logits(objectness[sampled_inds], labels_cat[sampled_inds])
    return objectness_loss, box_loss


def fastrcnn_loss(
    class_logits: Tensor,
    box_regression: Tensor,
    labels: list[Tensor],
    regression_targets: list[Tensor],
    cabb: CabbInputs | None = None,
) -> tuple[Tensor, Tensor]:
    """``torchvision.models.detection.roi_heads.fastrcnn_loss`` with CABB for truncated targets.

    Returns ``(classification_loss, box_loss)``; identical to torchvision's when ``cabb`` is
    None or no target carries ``"truncated"``. ``cabb.weights`` must be the box coder's
    weights (torchvision: ``(10, 10, 5, 5)``).
    """
    labels_cat = torch.cat(labels, dim=0)
    targets_cat = torch.cat(regression_targets, dim=0)
    classification_loss = F.cross_entropy(class_logits, labels_cat)
    pos = torch.where(labels_cat > 0)[0]
    labels_pos = labels_cat[pos]
    n, _ = class_logits.shape
    box_regression = box_regression.reshape(n, box_regression.size(-1) // 4, 4)
    pred = box_regression[pos, labels_pos]
    if cabb is None or not cabb.uses_cabb():
        box_loss = F.smooth_l1_loss(pred, targets_cat[pos], beta=TORCHVISION_BETA, reduction="sum")
    else:
        refs, boxes, truncated, crop = cabb.gather(pos)
        box_loss = cabb_loss(pred, refs, boxes, truncated, crop, cabb.weights, TORCHVISION_BETA, reduction="sum")
    return classification_loss, box_loss / labels_cat.numel()
