"""Compact targets expanded where the model runs: masks, semantic and crowd maps from the segment map.

With ``CropConfig(compact_targets=True)`` a crop ships its ``panoptic`` map (int32 segment ids),
the per-instance table (``segment_ids``, ``labels``, ``boxes``, ...) and a small
``segment_table`` (segment id, semantic value, crowd flag of void and of every segment in the
crop) instead of the (N, H, W) masks and the semantic and crowd maps. These functions rebuild them
on whatever device the tensors are on, equal to the default ``CropConfig``'s bit for bit
(``tests/test_device_targets.py``): segment ids are unique within an image and never 0 (void),
so instance ``j``'s mask is exactly ``panoptic == segment_ids[j]``, and a pixel's semantic value
and crowd flag are those of its segment id.
"""
from __future__ import annotations

from typing import Any, Sequence, overload

import torch

__all__ = ["expand_masks", "expand_semantic", "expand_targets"]

_PAD = torch.iinfo(torch.int32).max  # pads segment tables to one length: never a pixel's id (ids are int32 < this)


@overload
def expand_masks(panoptic: torch.Tensor, segment_ids: torch.Tensor) -> torch.Tensor: ...
@overload
def expand_masks(panoptic: torch.Tensor | Sequence[torch.Tensor],
                 segment_ids: Sequence[torch.Tensor]) -> list[torch.Tensor]: ...


def expand_masks(panoptic: torch.Tensor | Sequence[torch.Tensor],
                 segment_ids: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
    """Instance masks ``panoptic == segment_ids[j]``, computed on ``panoptic``'s device.

    Parameters
    ----------
    panoptic
        One crop's segment map (H, W) int32, or a batch: (B, H, W) (``collate_crops``'s stack) or
        a list of B maps (crops of different sizes).
    segment_ids
        (N,) segment ids of one crop's instances; for a batch, a list of B of them (as
        ``collate_crops`` returns them). Moved to ``panoptic``'s device.

    Returns
    -------
    (N, H, W) bool, or a list of B of them: ``CropSample.masks`` of the default ``CropConfig``.
    One broadcast comparison per crop (crops hold different numbers of instances, and padding
    them to one count would allocate masks for instances that do not exist).
    """
    if isinstance(segment_ids, torch.Tensor):
        if not isinstance(panoptic, torch.Tensor) or panoptic.dim() != 2 or segment_ids.dim() != 1:
            raise ValueError("expand_masks(panoptic, segment_ids) expects an (H, W) map and (N,) ids, or a batch "
                             f"and a list of ids; got {_shape(panoptic)} and {tuple(segment_ids.shape)}")
        ids = segment_ids.to(device=panoptic.device, dtype=panoptic.dtype, non_blocking=True)
        return panoptic.unsqueeze(0) == ids.view(-1, 1, 1)
    _check_batch("expand_masks", panoptic, segment_ids)
    return [expand_masks(p, s) for p, s in zip(panoptic, segment_ids)]


@overload
def expand_semantic(panoptic: torch.Tensor, segment_table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...
@overload
def expand_semantic(panoptic: torch.Tensor | Sequence[torch.Tensor], segment_table: Sequence[torch.Tensor]
                    ) -> tuple[torch.Tensor | list[torch.Tensor], torch.Tensor | list[torch.Tensor]]: ...


def expand_semantic(panoptic: torch.Tensor | Sequence[torch.Tensor],
                    segment_table: torch.Tensor | Sequence[torch.Tensor]
                    ) -> tuple[torch.Tensor | list[torch.Tensor], torch.Tensor | list[torch.Tensor]]:
    """The semantic (int64) and crowd (bool) maps of crops, looked up from their segment ids.

    Parameters
    ----------
    panoptic
        (H, W) int32, or a batch: (B, H, W) or a list of B maps.
    segment_table
        (S, 3) int64 rows ``(segment id, semantic value, crowd flag)`` sorted by id, holding every
        id in the map (``CropSample.segment_table``); for a batch a list of B of them.

    Returns
    -------
    ``(semantic, crowd)`` on ``panoptic``'s device, shaped as ``panoptic`` (lists for a list).
    A stacked batch is looked up in one step: the tables are padded to one length with an id
    that no pixel has.
    """
    if isinstance(segment_table, torch.Tensor):
        if not isinstance(panoptic, torch.Tensor) or panoptic.dim() != 2:
            raise ValueError(f"expand_semantic(panoptic, segment_table) expects an (H, W) map; got {_shape(panoptic)}")
        sem, crowd = _lookup(panoptic.unsqueeze(0), [segment_table])
        return sem[0], crowd[0]
    _check_batch("expand_semantic", panoptic, segment_table)
    if not isinstance(panoptic, torch.Tensor):
        pairs = [_lookup(p.unsqueeze(0), [t]) for p, t in zip(panoptic, segment_table)]
        return [s[0] for s, _ in pairs], [c[0] for _, c in pairs]
    return _lookup(panoptic, segment_table)


def _lookup(panoptic: torch.Tensor, segment_table: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`expand_semantic` of a stacked (B, H, W) batch."""
    if any(t.dim() != 2 or t.shape[1] != 3 for t in segment_table):
        raise ValueError("expand_semantic: each segment_table is (S, 3): segment id, semantic value, crowd flag")
    dev = panoptic.device
    n = max(t.shape[0] for t in segment_table)
    table = torch.full((len(segment_table), n, 3), _PAD, dtype=torch.int64)
    for b, t in enumerate(segment_table):
        table[b, :t.shape[0]] = t
    table = table.to(dev, non_blocking=True)
    # every pixel's id is in its crop's table, so the first entry >= the id is that id's row
    rows = torch.searchsorted(table[:, :, 0].to(panoptic.dtype).contiguous(), panoptic.flatten(1))
    sem = torch.gather(table[:, :, 1], 1, rows).view(panoptic.shape)
    crowd = torch.gather(table[:, :, 2], 1, rows).view(panoptic.shape) != 0
    return sem, crowd


def expand_targets(batch: dict[str, Any], device: torch.device | str | None = None) -> dict[str, Any]:
    """A crop dict or a ``collate_crops`` batch with the targets that compact crops leave out
    (``masks``, ``semantic``, ``crowd``) rebuilt on ``device``.

    Parameters
    ----------
    batch
        :func:`~isus.torch.sample_to_tensors`'s dict, or a batch of them from
        :func:`~isus.torch.collate_crops`, with ``panoptic`` and ``segment_ids`` (and
        ``segment_table`` where ``semantic`` or ``crowd`` is absent).
    device
        Where to build them (default: where ``panoptic`` is). ``panoptic`` is moved there too.

    Returns
    -------
    A new dict: ``batch``'s entries (the maps that were shipped left as they are), ``panoptic``
    on ``device``, and the missing maps as the default ``CropConfig`` gives them (a batch: masks
    as a list; semantic and crowd stacked where the crops share a size).
    """
    out = dict(batch)
    pan = batch["panoptic"]
    if isinstance(pan, torch.Tensor):
        pan = pan.to(device if device is not None else pan.device, non_blocking=True)
    else:
        pan = [p.to(device if device is not None else p.device, non_blocking=True) for p in pan]
    out["panoptic"] = pan
    if "masks" not in batch:
        out["masks"] = expand_masks(pan, batch["segment_ids"])
    if "semantic" not in batch or "crowd" not in batch:
        if "segment_table" not in batch:
            raise KeyError("expand_targets: the batch lacks 'semantic' or 'crowd' and has no 'segment_table' to "
                           "rebuild them from (crops of CropConfig(compact_targets=True) carry one)")
        sem, crowd = expand_semantic(pan, batch["segment_table"])
        out.setdefault("semantic", sem)
        out.setdefault("crowd", crowd)
    return out


def _check_batch(name: str, panoptic: torch.Tensor | Sequence[torch.Tensor], per_crop: Sequence[torch.Tensor]) -> None:
    if isinstance(panoptic, torch.Tensor) and panoptic.dim() != 3:
        raise ValueError(f"{name}: a batch of maps is (B, H, W) or a list; got {_shape(panoptic)}")
    if len(panoptic) != len(per_crop):
        raise ValueError(f"{name}: {len(panoptic)} segment maps but {len(per_crop)} per-crop tensors")


def _shape(x: object) -> object:
    return tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
