"""Panoptic FPN (Kirillov et al., 2019) from torchvision parts, with the CABB loss in both box heads.

``PanopticFPN`` is a ``torchvision.models.detection.MaskRCNN`` whose RPN and RoI heads are
subclasses that feed the crop-aware bounding box loss (``isus.cabb``, Porzi et al., CVPR 2021)
with the ``truncated`` flags of the targets, plus the Panoptic FPN semantic branch. All Mask
R-CNN parameters keep torchvision's names, so torchvision checkpoints load with
``strict=False`` (only ``semantic_head.*`` is missing).

With ``box_loss="smooth_l1"``, or when no target has a truncated side, every Mask R-CNN loss is
computed by torchvision's own code path, bit for bit.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import resnet
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.backbone_utils import BackboneWithFPN, _resnet_fpn_extractor
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops import misc as misc_nn_ops

from isus.cabb import CabbInputs, fastrcnn_loss, rpn_compute_loss
from examples.panoptic.levels import ANCHOR_SIZES, CANONICAL_SCALE

__all__ = [
    "build_backbone",
    "build_panoptic_fpn",
    "CabbRegionProposalNetwork",
    "CabbRoIHeads",
    "SemanticHead",
    "PanopticFPN",
    "panoptic_fusion",
]

IGNORE_INDEX = 255
BACKBONES = ("resnet18", "resnet50")
NORMS = ("frozen", "group", "sync")
BOX_LOSSES = ("cabb", "smooth_l1")


def _any_truncated(targets: Sequence[dict[str, Tensor]] | None) -> bool:
    """Whether some target has a truncated side (only then is CABB different from smooth L1)."""
    if targets is None:
        return False
    return any(bool(t["truncated"].any()) for t in targets if "truncated" in t and t["truncated"].numel() > 0)


class CabbRegionProposalNetwork(RegionProposalNetwork):
    """torchvision's RPN whose box-regression loss is the CABB loss for truncated ground truth.

    ``assign_targets_to_anchors`` is torchvision's, except that it keeps the per-image
    ``matched_idxs`` (torchvision only returns the matched boxes), which ``compute_loss``
    passes to :func:`isus.cabb.rpn_compute_loss` together with the targets' ``truncated`` flags.

    Parameters
    ----------
    *args, **kwargs
        Those of ``RegionProposalNetwork``.
    use_cabb : bool
        False: exactly torchvision's loss (``box_loss="smooth_l1"``).
    """

    def __init__(self, *args: Any, use_cabb: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.use_cabb = use_cabb
        self._cabb: CabbInputs | None = None

    @classmethod
    def from_rpn(cls, rpn: RegionProposalNetwork, *, use_cabb: bool = True) -> CabbRegionProposalNetwork:
        """The same RPN (same submodules, thresholds and budgets) as a CABB one."""
        return cls(
            rpn.anchor_generator,
            rpn.head,
            fg_iou_thresh=rpn.proposal_matcher.high_threshold,
            bg_iou_thresh=rpn.proposal_matcher.low_threshold,
            batch_size_per_image=rpn.fg_bg_sampler.batch_size_per_image,
            positive_fraction=rpn.fg_bg_sampler.positive_fraction,
            pre_nms_top_n=dict(rpn._pre_nms_top_n),
            post_nms_top_n=dict(rpn._post_nms_top_n),
            nms_thresh=rpn.nms_thresh,
            score_thresh=rpn.score_thresh,
            use_cabb=use_cabb,
        )

    def assign_targets_to_anchors(
        self, anchors: list[Tensor], targets: list[dict[str, Tensor]]
    ) -> tuple[list[Tensor], list[Tensor]]:
        # A copy of torchvision's (0.2x) method that also records matched_idxs.
        labels = []
        matched_gt_boxes = []
        all_matched_idxs = []
        for anchors_per_image, targets_per_image in zip(anchors, targets):
            gt_boxes = targets_per_image["boxes"]

            if gt_boxes.numel() == 0:
                # Background image (negative example)
                device = anchors_per_image.device
                matched_gt_boxes_per_image = torch.zeros(anchors_per_image.shape, dtype=torch.float32, device=device)
                labels_per_image = torch.zeros((anchors_per_image.shape[0],), dtype=torch.float32, device=device)
                matched_idxs = torch.full(
                    (anchors_per_image.shape[0],), self.proposal_matcher.BELOW_LOW_THRESHOLD, device=device
                )
            else:
                match_quality_matrix = self.box_similarity(gt_boxes, anchors_per_image)
                matched_idxs = self.proposal_matcher(match_quality_matrix)
                # matched_idxs can be -1/-2: clamp (as torchvision does) to index a single gt
                matched_gt_boxes_per_image = gt_boxes[matched_idxs.clamp(min=0)]

                labels_per_image = matched_idxs >= 0
                labels_per_image = labels_per_image.to(dtype=torch.float32)

                # Background (negative examples)
                bg_indices = matched_idxs == self.proposal_matcher.BELOW_LOW_THRESHOLD
                labels_per_image[bg_indices] = 0.0

                # discard indices that are between thresholds
                inds_to_discard = matched_idxs == self.proposal_matcher.BETWEEN_THRESHOLDS
                labels_per_image[inds_to_discard] = -1.0

            labels.append(labels_per_image)
            matched_gt_boxes.append(matched_gt_boxes_per_image)
            all_matched_idxs.append(matched_idxs)

        self._cabb = None
        if self.use_cabb and _any_truncated(targets):
            self._cabb = CabbInputs(
                anchors, None, targets, matched_idxs=all_matched_idxs, weights=self.box_coder.weights
            )
        return labels, matched_gt_boxes

    def compute_loss(
        self, objectness: Tensor, pred_bbox_deltas: Tensor, labels: list[Tensor], regression_targets: list[Tensor]
    ) -> tuple[Tensor, Tensor]:
        """torchvision's RPN loss, the box part against the CABB targets of truncated ground truth."""
        cabb, self._cabb = self._cabb, None  # do not keep the graph alive between iterations
        if cabb is None:
            return super().compute_loss(objectness, pred_bbox_deltas, labels, regression_targets)
        return rpn_compute_loss(self, objectness, pred_bbox_deltas, labels, regression_targets, cabb=cabb)


class CabbRoIHeads(RoIHeads):
    """torchvision's RoI heads whose box-regression loss is the CABB loss for truncated ground truth.

    ``select_training_samples`` records the sampled proposals and their ``matched_idxs``;
    ``forward`` captures the box predictor's outputs with a forward hook for the duration of
    the call and, when some target has a truncated side, replaces ``loss_box_reg`` by
    :func:`isus.cabb.fastrcnn_loss` on them (``loss_classifier`` is the same function either
    way). torchvision itself is not patched.
    """

    def __init__(self, *args: Any, use_cabb: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.use_cabb = use_cabb
        self._samples: tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor]] | None = None

    @classmethod
    def from_roi_heads(cls, heads: RoIHeads, *, use_cabb: bool = True) -> CabbRoIHeads:
        """The same RoI heads (same submodules and settings) as CABB ones."""
        return cls(
            heads.box_roi_pool,
            heads.box_head,
            heads.box_predictor,
            fg_iou_thresh=heads.proposal_matcher.high_threshold,
            bg_iou_thresh=heads.proposal_matcher.low_threshold,
            batch_size_per_image=heads.fg_bg_sampler.batch_size_per_image,
            positive_fraction=heads.fg_bg_sampler.positive_fraction,
            bbox_reg_weights=heads.box_coder.weights,
            score_thresh=heads.score_thresh,
            nms_thresh=heads.nms_thresh,
            detections_per_img=heads.detections_per_img,
            mask_roi_pool=heads.mask_roi_pool,
            mask_head=heads.mask_head,
            mask_predictor=heads.mask_predictor,
            use_cabb=use_cabb,
        )

    def select_training_samples(
        self, proposals: list[Tensor], targets: list[dict[str, Tensor]] | None
    ) -> tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor]]:
        out = super().select_training_samples(proposals, targets)
        self._samples = out
        return out

    def forward(
        self,
        features: dict[str, Tensor],
        proposals: list[Tensor],
        image_shapes: list[tuple[int, int]],
        targets: list[dict[str, Tensor]] | None = None,
    ) -> tuple[list[dict[str, Tensor]], dict[str, Tensor]]:
        if not (self.training and self.use_cabb and _any_truncated(targets)):
            return super().forward(features, proposals, image_shapes, targets)

        outputs: list[tuple[Tensor, Tensor]] = []

        def capture(_module: nn.Module, _inputs: Any, output: tuple[Tensor, Tensor]) -> None:
            outputs.append(output)

        # A temporary hook rather than one made in __init__: it survives replacing box_predictor.
        handle = self.box_predictor.register_forward_hook(capture)
        try:
            result, losses = super().forward(features, proposals, image_shapes, targets)
        finally:
            handle.remove()
        samples, self._samples = self._samples, None
        if len(outputs) != 1 or samples is None:
            raise RuntimeError("CabbRoIHeads: expected one box predictor call after select_training_samples")
        class_logits, box_regression = outputs[0]
        sampled_proposals, matched_idxs, labels, regression_targets = samples
        assert targets is not None  # _any_truncated(None) is False
        cabb = CabbInputs(
            sampled_proposals, None, targets, matched_idxs=matched_idxs, weights=self.box_coder.weights
        )
        _, losses["loss_box_reg"] = fastrcnn_loss(class_logits, box_regression, labels, regression_targets, cabb)
        return result, losses


class SemanticHead(nn.Module):
    """The Panoptic FPN semantic branch (Kirillov et al., 2019, Fig. 3).

    For P2..P5 (strides 4..32): ``k`` = 0..3 stages of conv3x3 + GroupNorm + ReLU + 2x bilinear
    upsampling (P2 gets one conv stage and no upsampling), summed at stride 4, a 1x1 conv to
    the classes and a 4x bilinear upsampling to the input resolution.

    Parameters
    ----------
    in_channels : int
        FPN channels (256).
    num_classes : int
        Semantic classes (things and stuff).
    channels : int
        Width of the branch (128 in the paper).
    num_levels : int
        Number of FPN levels used, from P2.
    """

    def __init__(self, in_channels: int, num_classes: int, channels: int = 128, num_levels: int = 4) -> None:
        super().__init__()
        self.num_levels = num_levels
        self.levels = nn.ModuleList()
        for level in range(num_levels):
            stages: list[nn.Module] = []
            for s in range(max(level, 1)):
                stages.append(
                    nn.Sequential(
                        nn.Conv2d(in_channels if s == 0 else channels, channels, 3, padding=1, bias=False),
                        nn.GroupNorm(32, channels),
                        nn.ReLU(inplace=True),
                    )
                )
            self.levels.append(nn.ModuleList(stages))
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: Sequence[Tensor], out_size: tuple[int, int]) -> Tensor:
        """Logits (B, num_classes, *out_size) from the FPN maps P2.. (finest first)."""
        if len(features) < self.num_levels:
            raise ValueError(f"SemanticHead expects {self.num_levels} feature maps; got {len(features)}")
        total: Tensor | None = None
        for level, stages in enumerate(self.levels):
            x = features[level]
            for s, stage in enumerate(stages):
                x = stage(x)
                if level > 0:
                    # upsample to the next finer level's exact size (robust to odd sizes)
                    target = features[level - s - 1].shape[-2:]
                    x = F.interpolate(x, size=target, mode="bilinear", align_corners=False)
            total = x if total is None else total + x
        assert total is not None
        logits = self.classifier(total)
        return F.interpolate(logits, size=out_size, mode="bilinear", align_corners=False)


def semantic_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Pixel-wise cross entropy, ``ignore_index=255``; 0 (with a graph) when every pixel is ignored."""
    if not bool((target != IGNORE_INDEX).any()):
        return logits.sum() * 0.0  # cross_entropy would be 0/0 = nan
    return F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX)


class PanopticFPN(MaskRCNN):
    """Mask R-CNN with CABB box losses and a Panoptic FPN semantic head.

    Parameters
    ----------
    backbone : BackboneWithFPN
        e.g. :func:`build_backbone`; its outputs ``"0"``..``"3"`` are P2..P5.
    num_thing_classes : int
        Thing classes; target labels are 1..num_thing_classes (0 is background).
    num_semantic_classes : int
        Classes of the semantic head (things and stuff), contiguous from 0; 255 is ignored.
    box_loss : {"cabb", "smooth_l1"}
        Box-regression loss of the RPN and the box head.
    semantic_channels : int
        Width of the semantic branch.
    semantic_only : bool
        Run the backbone and the semantic head only (data without instance annotations): the
        RPN and the RoI heads are skipped, training returns ``loss_semantic`` alone and eval
        returns no detections. The parameters are the same, so checkpoints load either way.
    **kwargs
        Passed to ``MaskRCNN`` (``min_size``, ``rpn_*``, ``box_*``, ...).

    Notes
    -----
    Training: ``model(images, targets)`` returns torchvision's Mask R-CNN losses plus
    ``loss_semantic``; a target's ``"semantic"`` (H, W) int64 map is required, and
    ``"truncated"`` (N, 4) bool is optional. Eval: torchvision's detections plus
    ``"semantic_logits"`` (num_semantic_classes, H, W) in the original image size.
    """

    def __init__(
        self,
        backbone: BackboneWithFPN,
        num_thing_classes: int,
        num_semantic_classes: int,
        *,
        box_loss: str = "cabb",
        semantic_channels: int = 128,
        semantic_only: bool = False,
        **kwargs: Any,
    ) -> None:
        if box_loss not in BOX_LOSSES:
            raise ValueError(f"PanopticFPN(box_loss=) expects 'cabb' or 'smooth_l1'; got {box_loss!r}")
        super().__init__(backbone, num_classes=num_thing_classes + 1, **kwargs)
        use_cabb = box_loss == "cabb"
        # Same submodules (same state_dict keys), CABB-aware losses.
        self.rpn = CabbRegionProposalNetwork.from_rpn(self.rpn, use_cabb=use_cabb)
        self.roi_heads = CabbRoIHeads.from_roi_heads(self.roi_heads, use_cabb=use_cabb)
        self.semantic_head = SemanticHead(backbone.out_channels, num_semantic_classes, semantic_channels)
        self.num_thing_classes = num_thing_classes
        self.num_semantic_classes = num_semantic_classes
        self.box_loss = box_loss
        self.semantic_only = semantic_only

    def _semantic_targets(self, images: ImageList, targets: list[dict[str, Tensor]]) -> Tensor:
        """The targets' semantic maps, resized as the images were and padded with 255 like the batch."""
        height, width = images.tensors.shape[-2:]
        out = torch.full(
            (len(targets), height, width), IGNORE_INDEX, dtype=torch.int64, device=images.tensors.device
        )
        for i, (t, (h, w)) in enumerate(zip(targets, images.image_sizes)):
            if "semantic" not in t:
                raise ValueError(f"targets[{i}] has no 'semantic' map (PanopticFPN needs one per image)")
            sem = t["semantic"]
            if sem.dim() != 2:
                raise ValueError(f"targets[{i}]['semantic'] expects shape (H, W); got {tuple(sem.shape)}")
            if tuple(sem.shape) != (h, w):
                # the transform resized the image (min_size/max_size): nearest keeps labels valid
                sem = F.interpolate(sem[None, None].float(), size=(h, w), mode="nearest")[0, 0]
            out[i, :h, :w] = sem.to(device=out.device, dtype=torch.int64)
        return out

    def forward(  # type: ignore[override]
        self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        """Losses (train mode) or detections with ``semantic_logits`` (eval mode).

        The logic of ``GeneralizedRCNN.forward`` (torchvision), plus the semantic head on the
        FPN features.
        """
        if self.training:
            if targets is None:
                raise ValueError("PanopticFPN: targets should not be None in training mode")
            for i, target in enumerate(targets):
                boxes = target["boxes"]
                if not isinstance(boxes, Tensor) or boxes.dim() != 2 or boxes.shape[-1] != 4:
                    raise ValueError(f"targets[{i}]['boxes'] expects a tensor of shape (N, 4)")

        original_image_sizes: list[tuple[int, int]] = []
        for img in images:
            if img.dim() != 3:
                raise ValueError(f"PanopticFPN expects images of shape (C, H, W); got {tuple(img.shape)}")
            original_image_sizes.append((int(img.shape[-2]), int(img.shape[-1])))

        image_list, targets = self.transform(images, targets)

        if targets is not None:
            for target_idx, target in enumerate(targets):
                boxes = target["boxes"]
                degenerate = boxes[:, 2:] <= boxes[:, :2]
                if degenerate.any():
                    bb_idx = torch.where(degenerate.any(dim=1))[0][0]
                    raise ValueError(
                        "All bounding boxes should have positive height and width."
                        f" Found invalid box {boxes[bb_idx].tolist()} for target at index {target_idx}."
                    )

        features = self.backbone(image_list.tensors)
        if isinstance(features, Tensor):
            features = OrderedDict([("0", features)])
        if self.semantic_only:  # no instance annotations: the detector is neither trained nor run
            proposal_losses: dict[str, Tensor] = {}
            detector_losses: dict[str, Tensor] = {}
            none = image_list.tensors.new_zeros((0, 4))
            detections = [{"boxes": none, "labels": none.new_zeros(0, dtype=torch.int64), "scores": none.new_zeros(0)}
                          for _ in images]
        else:
            proposals, proposal_losses = self.rpn(image_list, features, targets)
            detections, detector_losses = self.roi_heads(features, proposals, image_list.image_sizes, targets)
        detections = self.transform.postprocess(detections, image_list.image_sizes, original_image_sizes)

        fpn_maps = [features[k] for k in features if k != "pool"]
        semantic_logits = self.semantic_head(fpn_maps, tuple(image_list.tensors.shape[-2:]))

        if self.training:
            assert targets is not None
            losses: dict[str, Tensor] = {}
            losses.update(detector_losses)
            losses.update(proposal_losses)
            losses["loss_semantic"] = semantic_loss(semantic_logits, self._semantic_targets(image_list, targets))
            return losses

        for i, (det, (h, w), size) in enumerate(zip(detections, image_list.image_sizes, original_image_sizes)):
            logits = semantic_logits[i : i + 1, :, :h, :w]  # drop the batch padding
            if (h, w) != size:  # undo the transform's resize
                logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
            det["semantic_logits"] = logits[0]
        return detections


def _norm_layer(norm: str) -> Callable[[int], nn.Module]:
    if norm == "frozen":
        return misc_nn_ops.FrozenBatchNorm2d
    if norm == "group":
        return lambda channels: nn.GroupNorm(32, channels)
    if norm == "sync":
        return nn.BatchNorm2d
    raise ValueError(f"build_panoptic_fpn(norm=) expects 'frozen', 'group' or 'sync'; got {norm!r}")


def build_backbone(
    backbone: str = "resnet18",
    *,
    backbone_weights: str | None = None,
    norm: str = "frozen",
    trainable_backbone_layers: int = 3,
) -> BackboneWithFPN:
    """A torchvision ResNet-FPN backbone (P2..P5 + max-pooled P6), optionally loaded from a file.

    Parameters
    ----------
    backbone : {"resnet18", "resnet50"}
    backbone_weights : str, optional
        Path to a torchvision ResNet ``state_dict`` (``fc.*`` may be present). Without it the
        ResNet is randomly initialised (nothing is downloaded).
    norm : {"frozen", "group", "sync"}
        ``FrozenBatchNorm2d``, ``GroupNorm(32, C)`` or ``BatchNorm2d`` (to convert with
        ``nn.SyncBatchNorm.convert_sync_batchnorm``). With "group", a checkpoint's BN affine
        parameters initialise the GroupNorm ones and its running statistics are dropped.
    trainable_backbone_layers : int
        0..5, torchvision's meaning (the others are frozen with ``requires_grad=False``).
    """
    if backbone not in BACKBONES:
        raise ValueError(f"build_panoptic_fpn(backbone=) expects 'resnet18' or 'resnet50'; got {backbone!r}")
    norm_layer = _norm_layer(norm)
    if not isinstance(trainable_backbone_layers, int) or not 0 <= trainable_backbone_layers <= 5:
        raise ValueError(
            f"build_panoptic_fpn(trainable_backbone_layers=) expects an int in 0..5; got {trainable_backbone_layers!r}"
        )
    net = getattr(resnet, backbone)(weights=None, norm_layer=norm_layer)
    if backbone_weights is not None:
        state = torch.load(backbone_weights, map_location="cpu", weights_only=True)
        if not isinstance(state, dict):
            raise ValueError(f"build_panoptic_fpn(backbone_weights=) expects a state_dict file; got {type(state)}")
        try:
            missing, unexpected = net.load_state_dict(state, strict=False)
        except RuntimeError as err:  # shape mismatches raise even with strict=False
            raise ValueError(
                f"build_panoptic_fpn(backbone_weights=) {backbone_weights!r} is not a torchvision {backbone} "
                f"state_dict: {str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else err}"
            ) from err
        # GroupNorm has no running statistics; anything else missing/unexpected is a wrong file
        stats = ("running_mean", "running_var", "num_batches_tracked")
        unexpected = [k for k in unexpected if not (norm == "group" and k.endswith(stats))]
        if missing or unexpected:
            raise ValueError(
                f"build_panoptic_fpn(backbone_weights=) {backbone_weights!r} is not a torchvision {backbone} "
                f"state_dict: missing {missing[:5]}, unexpected {unexpected[:5]}"
            )
    return _resnet_fpn_extractor(net, trainable_backbone_layers)


def build_panoptic_fpn(
    num_thing_classes: int,
    num_classes: int,
    *,
    backbone: str = "resnet18",
    backbone_weights: str | None = None,
    norm: str = "frozen",
    box_loss: str = "cabb",
    min_size: int = 512,
    max_size: int = 512,
    rpn_pre_nms_top_n_train: int = 2000,
    rpn_post_nms_top_n_train: int = 2000,
    rpn_pre_nms_top_n_test: int = 1000,
    rpn_post_nms_top_n_test: int = 1000,
    rpn_batch_size_per_image: int = 256,
    box_batch_size_per_image: int = 512,
    box_detections_per_img: int = 100,
    trainable_backbone_layers: int = 3,
    length_scale: float = 1.0,
    semantic_only: bool = False,
) -> PanopticFPN:
    """A :class:`PanopticFPN` on a ResNet-FPN backbone.

    Parameters
    ----------
    num_thing_classes : int
        Thing classes (target labels 1..num_thing_classes, 0 = background).
    num_classes : int
        Semantic classes, things and stuff, contiguous 0..num_classes-1 (255 = ignore).
    backbone, backbone_weights, norm, trainable_backbone_layers
        See :func:`build_backbone`.
    box_loss : {"cabb", "smooth_l1"}
        Box-regression loss in the RPN and the box head.
    min_size, max_size : int
        torchvision's resize; set both to the crop size so that crops are not rescaled.
    rpn_*, box_*
        torchvision's ``MaskRCNN`` arguments of the same names.
    length_scale : float
        Scales every length the detector is tuned for: the RoI level mapper's canonical size
        (``224 * length_scale`` at P4) and the RPN anchor sizes (``32..512 * length_scale`` on
        P2..P6). A miniature of a setting (e.g. 256 crops for the paper's 1024) uses the crop
        ratio, so each object goes to the level it would at full size; pair it with
        ``isus.FPNLevels(canonical_size=224 * length_scale)`` in the sampler (see
        ``examples.panoptic.levels.level_rule``).
    semantic_only : bool
        See :class:`PanopticFPN` (for data without instance annotations).
    """
    if not isinstance(num_thing_classes, int) or num_thing_classes < 1:
        raise ValueError(f"build_panoptic_fpn(num_thing_classes=) expects an int >= 1; got {num_thing_classes!r}")
    if not isinstance(num_classes, int) or not num_thing_classes <= num_classes < IGNORE_INDEX:
        raise ValueError(
            f"build_panoptic_fpn(num_classes=) expects an int in {num_thing_classes}..{IGNORE_INDEX - 1} "
            f"(all categories, things included); got {num_classes!r}"
        )
    if box_loss not in BOX_LOSSES:
        raise ValueError(f"build_panoptic_fpn(box_loss=) expects 'cabb' or 'smooth_l1'; got {box_loss!r}")
    if not (isinstance(length_scale, (int, float)) and 0 < length_scale <= 16):
        raise ValueError(f"build_panoptic_fpn(length_scale=) expects a number in (0, 16]; got {length_scale!r}")
    body = build_backbone(
        backbone, backbone_weights=backbone_weights, norm=norm, trainable_backbone_layers=trainable_backbone_layers
    )
    canonical = CANONICAL_SCALE * float(length_scale)
    # torchvision types canonical_scale as int; its level mapper only divides by it
    pools = {name: MultiScaleRoIAlign(["0", "1", "2", "3"], size, 2, canonical_scale=canonical)  # type: ignore[arg-type]
             for name, size in (("box_roi_pool", 7), ("mask_roi_pool", 14))}
    anchors = AnchorGenerator(tuple((a * float(length_scale),) for a in ANCHOR_SIZES), ((0.5, 1.0, 2.0),) * 5)
    return PanopticFPN(
        body,
        num_thing_classes,
        num_classes,
        box_loss=box_loss,
        min_size=min_size,
        max_size=max_size,
        rpn_pre_nms_top_n_train=rpn_pre_nms_top_n_train,
        rpn_post_nms_top_n_train=rpn_post_nms_top_n_train,
        rpn_pre_nms_top_n_test=rpn_pre_nms_top_n_test,
        rpn_post_nms_top_n_test=rpn_post_nms_top_n_test,
        rpn_batch_size_per_image=rpn_batch_size_per_image,
        box_batch_size_per_image=box_batch_size_per_image,
        box_detections_per_img=box_detections_per_img,
        rpn_anchor_generator=anchors,
        semantic_only=semantic_only,
        **pools,
    )


def panoptic_fusion(
    result: dict[str, Tensor],
    thing_ids: Sequence[int],
    stuff_ids: Sequence[int],
    *,
    score_thresh: float = 0.5,
    mask_thresh: float = 0.5,
    overlap_thresh: float = 0.5,
    stuff_area: int = 64,
) -> tuple[Tensor, Tensor]:
    """Panoptic FPN's heuristic merge of one image's instances and semantic prediction.

    Instances with ``score >= score_thresh`` are pasted by descending score where their mask
    exceeds ``mask_thresh`` and no earlier instance is; an instance whose free part is less
    than ``overlap_thresh`` of its mask is dropped. Remaining pixels take the semantic argmax
    when it is a stuff class covering at least ``stuff_area`` of them.

    Parameters
    ----------
    result : dict
        One image of :class:`PanopticFPN`'s eval output: ``boxes``, ``labels`` (1..K),
        ``scores``, ``masks`` (N, 1, H, W) probabilities, ``semantic_logits`` (C, H, W).
    thing_ids : sequence of int
        Semantic class of each thing label: label ``L`` is class ``thing_ids[L - 1]``.
    stuff_ids : sequence of int
        Semantic classes that are stuff.

    Returns
    -------
    category : Tensor, (H, W) int64
        Semantic class per pixel, -1 for void.
    instance : Tensor, (H, W) int64
        0 for stuff and void, 1, 2, ... for the pasted instances (in pasting order).
    """
    logits = result["semantic_logits"]
    if logits.dim() != 3:
        raise ValueError(f"panoptic_fusion(result['semantic_logits']) expects (C, H, W); got {tuple(logits.shape)}")
    height, width = logits.shape[-2:]
    device = logits.device
    masks, scores, labels = result["masks"], result["scores"], result["labels"]
    if masks.numel() > 0 and tuple(masks.shape[-2:]) != (height, width):
        raise ValueError(
            f"panoptic_fusion: masks are {tuple(masks.shape[-2:])} but semantic_logits are {(height, width)}"
        )
    if labels.numel() > 0 and (int(labels.min()) < 1 or int(labels.max()) > len(thing_ids)):
        raise ValueError(f"panoptic_fusion: labels must be in 1..{len(thing_ids)} (len(thing_ids))")
    thing_lut = torch.as_tensor(list(thing_ids), dtype=torch.int64, device=device)

    category = torch.full((height, width), -1, dtype=torch.int64, device=device)
    instance = torch.zeros((height, width), dtype=torch.int64, device=device)
    taken = torch.zeros((height, width), dtype=torch.bool, device=device)

    order = torch.sort(scores, descending=True, stable=True).indices
    next_id = 1
    for k in order.tolist():
        if float(scores[k]) < score_thresh:
            break  # sorted: all the rest are below too
        mask = masks[k].reshape(height, width) > mask_thresh
        area = int(mask.sum())
        if area == 0:
            continue
        free = mask & ~taken
        if int(free.sum()) < overlap_thresh * area:
            continue
        category[free] = thing_lut[int(labels[k]) - 1]
        instance[free] = next_id
        taken |= free
        next_id += 1

    semantic = logits.argmax(dim=0)
    for c in stuff_ids:
        region = (semantic == c) & ~taken
        if int(region.sum()) < stuff_area:
            continue
        category[region] = c
        taken |= region
    return category, instance
