"""Evaluation on full (uncropped) images: panoptic fusion, then PQ with torchmetrics."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.distributed as dist

import isus
from examples.panoptic.data import LabelMap
from examples.panoptic.model import panoptic_fusion


def gt_pairs(ds: isus.PanopticDataset, i: int, labels: LabelMap) -> np.ndarray:
    """(H, W, 2) (training id, instance id) of image ``i``; void and crowd get category -1."""
    pan = ds.load_panoptic(i)
    train = {c.id: k for k, c in enumerate(ds.categories)}
    seg = pan.segments
    lut_ids = np.concatenate([[0], seg["id"]])
    cats = np.array([-1] + [(-1 if s["iscrowd"] else train[int(s["category_id"])]) for s in seg], np.int64)
    inst = np.array([0] + [int(k + 1) if ds.category(int(s["category_id"])).isthing else 0
                           for k, s in enumerate(seg)], np.int64)
    order = np.argsort(lut_ids)
    pos = order[np.searchsorted(lut_ids[order], pan.ids)]
    return np.stack([cats[pos], inst[pos]], axis=-1)


@torch.no_grad()
def evaluate(model: torch.nn.Module, ds: isus.PanopticDataset, labels: LabelMap, *, shortest_side: float | None,
             device: torch.device, max_images: int | None = None, rank: int = 0, world: int = 1) -> dict:
    """PQ, PQ_th, PQ_st, SQ, RQ over (up to ``max_images``) images of ``ds``, split across ranks."""
    from torchmetrics.detection import PanopticQuality

    things, stuffs = set(labels.thing_train_ids), set(labels.stuff_train_ids)
    metric = PanopticQuality(things=things, stuffs=stuffs, allow_unknown_preds_category=True,
                             return_sq_and_rq=True, return_per_class=True).to(device)
    present = torch.zeros(labels.num_classes, dtype=torch.bool, device=device)
    model.eval()
    transform = model.transform
    saved = transform.min_size, transform.max_size
    n = len(ds) if max_images is None else min(len(ds), max_images)
    for i in range(rank, n, world):
        img = ds.load_image(i)
        h, w = img.shape[:2]
        s = shortest_side / min(h, w) if shortest_side else 1.0
        if s != 1.0:
            img = cv2.resize(img, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
        x = torch.from_numpy(img).permute(2, 0, 1).to(device).float().div_(255)
        # images are already at s0: keep torchvision's transform from rescaling them to the crop size
        transform.min_size, transform.max_size = (min(img.shape[:2]),), max(img.shape[:2])
        try:
            result = model([x])[0]
        finally:
            transform.min_size, transform.max_size = saved
        cat, inst = panoptic_fusion(result, labels.thing_train_ids, labels.stuff_train_ids)
        if s != 1.0:
            cat = torch.from_numpy(cv2.resize(cat.cpu().numpy().astype(np.int32), (w, h), interpolation=cv2.INTER_NEAREST_EXACT))
            inst = torch.from_numpy(cv2.resize(inst.cpu().numpy().astype(np.int32), (w, h), interpolation=cv2.INTER_NEAREST_EXACT))
        pred = torch.stack([cat.long(), inst.long()], dim=-1).to(device)
        target = torch.from_numpy(gt_pairs(ds, i, labels)).to(device)
        for t in (pred[..., 0], target[..., 0]):
            c = t[t >= 0].unique()
            present[c] = True
        metric.update(pred[None], target[None])
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(present, op=dist.ReduceOp.MAX)
    order = sorted(things) + sorted(stuffs)  # torchmetrics' class order: things, then stuffs, each sorted
    per_class = metric.compute()
    # torchmetrics 1.9 returns (C, 3) [pq, sq, rq] per class; its docs say (3, C)
    if per_class.shape == (3, len(order)) and len(order) != 3:
        per_class = per_class.T
    pq, sq, rq = per_class.double().T
    keep = present[order].cpu()
    is_thing = torch.tensor([c in things for c in order])

    def mean(v, sel):
        sel = sel & keep
        return float(v.cpu()[sel].mean()) if sel.any() else float("nan")

    every = torch.ones(len(order), dtype=torch.bool)
    return {"PQ": mean(pq, every), "SQ": mean(sq, every), "RQ": mean(rq, every), "PQ_th": mean(pq, is_thing),
            "PQ_st": mean(pq, ~is_thing), "images": n, "classes_present": int(keep.sum())}


def write_results(results: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1))
