"""``PanopticCropDataset``: crop specs in, dicts of tensors out; collate and adapters."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from isus.crop.engine import CropConfig, CropEngine, CropSample
from isus.datasets.base import PanopticDataset
from isus.index.index import Index
from isus.types import CropSpec

__all__ = ["PanopticCropDataset", "collate_crops", "sample_to_tensors", "to_tv_tensors", "to_detectron2"]


def sample_to_tensors(s: CropSample) -> dict[str, Any]:
    """A :class:`~isus.crop.CropSample` as a dict of tensors (image channels first)."""
    return {
        "image": torch.from_numpy(np.ascontiguousarray(s.image.transpose(2, 0, 1))),
        "panoptic": torch.from_numpy(s.panoptic),
        "semantic": torch.from_numpy(s.semantic),
        "masks": torch.from_numpy(s.masks),
        "labels": torch.from_numpy(s.labels),
        "category_ids": torch.from_numpy(s.category_ids),
        "segment_ids": torch.from_numpy(s.segment_ids),
        "boxes": torch.from_numpy(s.boxes),
        "original_boxes": torch.from_numpy(s.original_boxes),
        "truncated": torch.from_numpy(s.truncated),
        "crowd": torch.from_numpy(s.crowd),
        "dropped": s.dropped,
        "spec": s.spec,
        "window": torch.tensor(s.window, dtype=torch.float64),
        "scale": s.scale,
        "flip": s.flip,
    }


class PanopticCropDataset(Dataset[dict[str, Any]]):
    """Map-style dataset indexed by :class:`~isus.CropSpec`: use it with a :class:`~isus.torch.CropSampler`.

    ``dataset[spec]`` returns the dict of :func:`sample_to_tensors`: ``image`` (3, H, W) uint8,
    ``panoptic`` (H, W) int32, ``semantic`` (H, W) int64, ``masks`` (N, H, W) bool, ``labels``,
    ``category_ids``, ``segment_ids`` (N,), ``boxes``, ``original_boxes`` (N, 4) float32,
    ``truncated`` (N, 4) bool, ``crowd`` (H, W) bool, ``dropped``, ``spec``, ``window``, ``scale``, ``flip``.

    Parameters
    ----------
    ds, index, config
        As for :class:`~isus.crop.CropEngine`. The engine is built lazily in each worker.
    verify
        Check here that ``index`` was built from ``ds`` (identity, file names, a sample of the
        files' sizes and content samples; :class:`~isus.IndexMismatchError` otherwise), and in
        each worker every image's files the first time it is cropped.
    """

    def __init__(self, ds: PanopticDataset, index: Index | None = None, config: CropConfig = CropConfig(),
                 verify: bool = True) -> None:
        self.ds, self.index, self.config, self.verify = ds, index, config, verify
        self._engine: CropEngine | None = None
        if index is not None and verify:
            index.verify_dataset(ds)  # fail in the main process, before any worker starts

    def __len__(self) -> int:
        return len(self.ds)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_engine"] = None  # workers rebuild it; nothing large crosses the process boundary
        return state

    def __getitem__(self, spec: CropSpec) -> dict[str, Any]:
        if not isinstance(spec, CropSpec):
            raise TypeError(f"PanopticCropDataset is indexed by CropSpec (use isus.torch.CropSampler); got {type(spec).__name__}")
        if self._engine is None:
            self._engine = CropEngine(self.ds, self.index, self.config, verify=self.verify)
        return sample_to_tensors(self._engine(spec))


_STACK = ("image", "panoptic", "semantic", "crowd")


def collate_crops(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch crop dicts: equally sized maps are stacked (B, ...); per-instance fields, specs and
    anything of varying size become lists."""
    out: dict[str, Any] = {}
    for key in batch[0]:
        values = [b[key] for b in batch]
        if key in _STACK and len({tuple(v.shape) for v in values}) == 1:
            out[key] = torch.stack(values)
        elif key in ("scale", "dropped"):
            out[key] = torch.tensor(values)
        elif key == "flip":
            out[key] = torch.tensor(values, dtype=torch.bool)
        else:
            out[key] = values
    return out


def to_tv_tensors(sample: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """``(image, target)`` for torchvision's v2 transforms and detection models: ``tv_tensors.Image``
    and a target dict with ``boxes`` (``BoundingBoxes``, XYXY), ``masks`` (``Mask``), ``labels``,
    plus ``original_boxes`` and ``truncated`` for CABB. Requires torchvision."""
    from torchvision import tv_tensors

    h, w = sample["image"].shape[-2:]
    target = {
        "boxes": tv_tensors.BoundingBoxes(sample["boxes"], format="XYXY", canvas_size=(h, w)),
        "masks": tv_tensors.Mask(sample["masks"]),
        "labels": sample["labels"],
        "original_boxes": sample["original_boxes"],
        "truncated": sample["truncated"],
    }
    return tv_tensors.Image(sample["image"]), target


def to_detectron2(sample: dict[str, Any]) -> dict[str, Any]:
    """A detectron2-style dict (``image``, ``height``, ``width``, ``sem_seg``, ``instances``).

    ``instances`` is a ``detectron2.structures.Instances`` when detectron2 is installed (with
    ``gt_boxes``, ``gt_classes``, ``gt_masks``, and ``gt_original_boxes``/``gt_truncated`` for
    CABB), else a plain dict of the same fields.
    """
    h, w = sample["image"].shape[-2:]
    fields = {"gt_classes": sample["labels"], "gt_masks": sample["masks"],
              "gt_original_boxes": sample["original_boxes"], "gt_truncated": sample["truncated"]}
    try:
        from detectron2.structures import BitMasks, Boxes, Instances
    except ImportError:
        instances: Any = {"gt_boxes": sample["boxes"], **fields}
    else:  # pragma: no cover - detectron2 is not a dependency
        instances = Instances((h, w))
        instances.gt_boxes = Boxes(sample["boxes"])
        instances.gt_classes = fields["gt_classes"]
        instances.gt_masks = BitMasks(fields["gt_masks"])
        instances.gt_original_boxes = fields["gt_original_boxes"]
        instances.gt_truncated = fields["gt_truncated"]
    return {"image": sample["image"], "height": h, "width": w, "sem_seg": sample["semantic"], "instances": instances}
