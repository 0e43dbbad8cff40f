"""``PanopticCropDataset``: crop specs in, dicts of tensors out; collate and adapters."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from isus.crop.engine import CropConfig, CropEngine, CropSample
from isus.datasets.base import PanopticDataset
from isus.index.index import Index
from isus.torch.targets import expand_targets
from isus.torch.transfer import pack
from isus.types import CropSpec

__all__ = ["PanopticCropDataset", "collate_crops", "sample_to_tensors", "to_tv_tensors", "to_detectron2"]


def sample_to_tensors(s: CropSample) -> dict[str, Any]:
    """A :class:`~isus.crop.CropSample` as a dict of tensors (image channels first).

    Maps a ``CropConfig(compact_targets=True)`` sample does not build (``masks``, and ``semantic``
    and ``crowd`` when it has a ``segment_table``) are left out, and ``segment_table`` is added:
    :func:`~isus.torch.expand_targets` rebuilds them where the model runs. ``ignore`` (N,) bool
    is added for a ``CropConfig(low_visibility="ignore")`` sample.
    """
    hw = s.panoptic.shape
    out: dict[str, Any] = {
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
    for key in ("semantic", "masks", "crowd"):
        if getattr(s, key).shape[-2:] != hw:  # not built (compact targets)
            del out[key]
    if s.segment_table is not None:
        out["segment_table"] = torch.from_numpy(s.segment_table)
    if s.ignore is not None:  # CropConfig(low_visibility="ignore")
        out["ignore"] = torch.from_numpy(s.ignore)
    return out


class PanopticCropDataset(Dataset[dict[str, Any]]):
    """Map-style dataset indexed by :class:`~isus.CropSpec`: use it with a :class:`~isus.torch.CropSampler`.

    ``dataset[spec]`` returns the dict of :func:`sample_to_tensors`: ``image`` (3, H, W) uint8,
    ``panoptic`` (H, W) int32, ``semantic`` (H, W) int64, ``masks`` (N, H, W) bool, ``labels``,
    ``category_ids``, ``segment_ids`` (N,), ``boxes``, ``original_boxes`` (N, 4) float32,
    ``truncated`` (N, 4) bool, ``crowd`` (H, W) bool, ``dropped``, ``spec``, ``window``, ``scale``, ``flip``.
    With ``CropConfig(compact_targets=True)`` the maps it does not build are absent and
    ``segment_table`` is added (:func:`sample_to_tensors`); :func:`~isus.torch.expand_targets`
    rebuilds them on the training device.

    Parameters
    ----------
    ds, index, config
        As for :class:`~isus.crop.CropEngine`. The engine is built lazily in each worker.
    verify
        Check here that ``index`` was built from ``ds`` (identity, file names, a sample of the
        files' sizes and content samples; :class:`~isus.IndexMismatchError` otherwise), and in
        each worker every image's files the first time it is cropped. (Workers do not repeat the
        whole-dataset check: their ``ds`` is a copy of the one checked here, and that check reads
        every file name, which a worker would otherwise pay again each epoch.)
    """

    def __init__(self, ds: PanopticDataset, index: Index | None = None, config: CropConfig = CropConfig(),
                 verify: bool = True) -> None:
        self.ds, self.index, self.config, self.verify = ds, index, config, verify
        self._engine: CropEngine | None = None
        self._verified: set[int] = set()
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
            # the dataset-level check was done in __init__; the first use of each image is checked below
            self._engine = CropEngine(self.ds, self.index, self.config, verify=False)
        if self.verify and self.index is not None and spec.image not in self._verified:
            # this image's files must still be those the index was built from (as CropEngine(verify=True))
            self.index.verify_image(self.ds, spec.image, names=False)
            self._verified.add(spec.image)
        return sample_to_tensors(self._engine(spec))


_STACK = ("image", "panoptic", "semantic", "crowd")


def collate_crops(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch crop dicts: equally sized maps are stacked (B, ...); per-instance fields, specs and
    anything of varying size become lists.

    In a DataLoader worker every tensor of the batch is written into one block of shared memory
    (as views of it), so the batch crosses to the main process as one shared-memory segment
    instead of one per tensor, and the stacked maps are copied once instead of twice; the worker
    refills that block once the main process has freed every tensor of the batch
    (:mod:`isus.torch.transfer`). The values are the same either way.
    """
    stacks: dict[str, list[torch.Tensor]] = {}
    out: dict[str, Any] = {}
    for key in batch[0]:
        values = [b[key] for b in batch]
        if key in _STACK and len({tuple(v.shape) for v in values}) == 1:
            stacks[key] = values
            out[key] = None  # filled below; keeps the key's place
        elif key in ("scale", "dropped"):
            out[key] = torch.tensor(values)
        elif key == "flip":
            out[key] = torch.tensor(values, dtype=torch.bool)
        else:
            out[key] = values
    if get_worker_info() is None:
        for key, values in stacks.items():
            out[key] = _stack(values)
        return out
    return pack(out, stacks)


def _stack(values: list[torch.Tensor]) -> torch.Tensor:
    """``torch.stack(values)``; for CPU tensors copied by numpy, in one thread: torch's parallel
    copy of these large maps waits for every intra-op thread, and where other processes hold
    the cores (a loaded machine, DataLoader workers beside it) it took 6x as long (bench/loader.py)."""
    if all(v.device.type == "cpu" and not v.requires_grad for v in values):
        return torch.from_numpy(np.stack([v.numpy() for v in values]))
    return torch.stack(values)


def to_tv_tensors(sample: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """``(image, target)`` for torchvision's v2 transforms and detection models: ``tv_tensors.Image``
    and a target dict with ``boxes`` (``BoundingBoxes``, XYXY), ``masks`` (``Mask``), ``labels``,
    plus ``original_boxes`` and ``truncated`` for CABB (masks of compact crops rebuilt with
    :func:`~isus.torch.expand_targets`). Requires torchvision."""
    from torchvision import tv_tensors

    sample = expand_targets(sample)
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
    CABB), else a plain dict of the same fields. Masks and maps of compact crops are rebuilt
    (:func:`~isus.torch.expand_targets`).
    """
    sample = expand_targets(sample)
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
