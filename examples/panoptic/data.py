"""Inputs of the example: isus crops -> torchvision Mask R-CNN images and targets."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

import isus
from isus.sampling import CropBatch, SamplingPolicy
from isus.torch import expand_targets


#: semantic value of ignored pixels (CropConfig's ignore_label, the semantic loss's ignore_index)
IGNORE_LABEL = 255


@dataclass(frozen=True)
class LabelMap:
    """Training ids of the example: the semantic head predicts every category (its position in
    ``ds.categories``); the detector's labels are 1..K over the thing categories."""

    num_classes: int
    thing_train_ids: tuple[int, ...]  # detector label L -> semantic/training id thing_train_ids[L - 1]
    stuff_train_ids: tuple[int, ...]

    @classmethod
    def from_dataset(cls, ds: isus.PanopticDataset) -> "LabelMap":
        things = tuple(k for k, c in enumerate(ds.categories) if c.isthing)
        stuff = tuple(k for k, c in enumerate(ds.categories) if not c.isthing)
        return cls(len(ds.categories), things, stuff)

    def detector_labels(self, train_ids: torch.Tensor) -> torch.Tensor:
        lut = torch.zeros(self.num_classes, dtype=torch.int64)
        lut[list(self.thing_train_ids)] = torch.arange(1, len(self.thing_train_ids) + 1)
        return lut[train_ids]


def to_model_inputs(batch: dict[str, Any], labels: LabelMap, device: torch.device):
    """A collated batch of isus crops as (images, targets) for the model. Compact crops
    (``CropConfig(compact_targets=True)``: no masks, semantic or crowd maps) get them rebuilt on
    ``device`` first, equal to the ones the CPU would have built.

    Instances flagged ``ignore`` (``CropConfig(low_visibility="ignore")``) are left out of the
    detector's targets (torchvision's Mask R-CNN has no per-box ignore: a left-out instance's
    pixels are background to the RPN and RoI heads), and their pixels get the semantic ignore
    label (255), so that neither loss is taught about a sliver either way."""
    if "masks" not in batch or "semantic" not in batch:
        batch = expand_targets(batch, device)
    images, targets = [], []
    for i in range(len(batch["spec"])):
        images.append(batch["image"][i].to(device, non_blocking=True).float().div_(255))
        target = {
            "boxes": batch["boxes"][i].to(device),
            "labels": labels.detector_labels(batch["labels"][i]).to(device),
            "masks": batch["masks"][i].to(device, dtype=torch.uint8),
            "truncated": batch["truncated"][i].to(device),
            "semantic": batch["semantic"][i].to(device),
        }
        if "ignore" in batch and bool(batch["ignore"][i].any()):
            ignore = batch["ignore"][i].to(device)
            target["semantic"] = target["semantic"].clone()
            target["semantic"][target["masks"][ignore].any(0).bool()] = IGNORE_LABEL
            target = {k: v if k == "semantic" else v[~ignore] for k, v in target.items()}
        targets.append(target)
    return images, targets


class FullImagePolicy(SamplingPolicy):
    """``--sampling full``: whole images (rescaled to ``s0``), chosen uniformly, flipped at random;
    reuses CropSampler's deterministic, distributed, resumable stream."""

    def draw(self, rng: np.random.Generator, n: int) -> CropBatch:
        image = rng.integers(self.index.image_range[0], self.index.image_range[1], n)
        k = image - self.index.image_range[0]
        w, h = self._w[k], self._h[k]
        scale = self._base[k]
        # round the window so that (x1 - x0) * scale is an integer crop size
        cw, ch = np.round(w * scale), np.round(h * scale)
        window = np.stack([np.zeros(n), np.zeros(n), cw / scale, ch / scale], axis=1)
        flip = rng.random(n) < 0.5 if self.config.flip else np.zeros(n, bool)
        minus = np.full(n, -1, np.int64)
        return CropBatch(image.astype(np.int64), np.full(n, -1, np.int64), minus, minus, scale, window, flip,
                         np.ones(n), np.zeros(n, bool))
