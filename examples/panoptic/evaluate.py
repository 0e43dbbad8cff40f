"""Evaluation on full (uncropped) images: panoptic fusion, the predictions written in the COCO
formats, and every metric of ``isus.eval`` (PQ/SQ/RQ, PQ†, PC, mIoU, box/mask AP by size).

Each rank runs the model on its share of the images, writes their PNGs and computes their
:class:`isus.eval.ImageStats`; rank 0 gathers the statistics (and the small per-image records
of the two JSONs), adds them in image order and writes ``panoptic.json`` and ``instances.json``.
The result does not depend on the number of ranks.

Data without instance annotations (semantic-only) is evaluated with :func:`evaluate_semantic`:
mIoU of the semantic head's argmax, as ``isus.eval`` defines it.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.distributed as dist

import isus
from examples.panoptic.data import LabelMap
from examples.panoptic.model import panoptic_fusion
from isus.eval import Detections, EvalResult, PanopticEvaluator, PanopticPredictionWriter, write_instances
from isus.types import make_segments

#: Scored instances are binarised at this mask probability (as torchvision/detectron2 do for AP).
MASK_THRESHOLD = 0.5


def to_panoptic(category: np.ndarray, instance: np.ndarray, labels: LabelMap,
                categories: tuple[isus.Category, ...] | list[isus.Category]) -> isus.Panoptic:
    """The fused prediction as an :class:`isus.Panoptic` with the dataset's category ids.

    ``category`` holds training ids (positions in ``categories``, -1 void) and ``instance`` the
    fusion's instance numbers (1, 2, ... for things, 0 elsewhere). Segment ids: the instance
    number for things, then ``K + 1``, ``K + 2``, ... for the stuff classes present (one segment
    per class), 0 for void.
    """
    category = np.asarray(category, dtype=np.int64)
    instance = np.asarray(instance, dtype=np.int64)
    k = int(instance.max(initial=0))
    stuff_rank = np.full(labels.num_classes + 1, -1, np.int64)  # training id -> stuff segment offset
    present = np.unique(category[(instance == 0) & (category >= 0)])
    stuff_rank[present] = np.arange(len(present))
    ids = np.where(instance > 0, instance, np.where(category >= 0, k + 1 + stuff_rank[category], 0))
    seg_ids, first = np.unique(ids, return_index=True)
    keep = seg_ids != 0
    seg_ids, first = seg_ids[keep], first[keep]
    cat_lut = np.array([c.id for c in categories], dtype=np.int64)
    seg_cats = cat_lut[category.ravel()[first]]
    segments = make_segments(seg_ids, seg_cats, np.zeros(len(seg_ids), bool))
    return isus.Panoptic(ids.astype(np.int32), segments)


def to_detections(result: dict[str, torch.Tensor], labels: LabelMap, categories, size: tuple[int, int]) -> Detections:
    """The detector's scored instances (before fusion) in original-image pixels and category ids.

    Boxes are rescaled from the model's input size to ``size`` (H, W), labels 1..K mapped to
    the dataset's category ids, masks resized to ``size``, binarised at :data:`MASK_THRESHOLD`
    and RLE-encoded (compact to gather across ranks and to write).
    """
    from pycocotools import mask as mask_utils

    h, w = size
    masks = result["masks"]
    in_h, in_w = masks.shape[-2:] if masks.numel() else result["semantic_logits"].shape[-2:]
    boxes = result["boxes"].detach().double().cpu().numpy().reshape(-1, 4)
    boxes = boxes * np.array([w / in_w, h / in_h, w / in_w, h / in_h])
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
    cat_lut = np.array([categories[t].id for t in labels.thing_train_ids], dtype=np.int64)
    det_labels = cat_lut[result["labels"].cpu().numpy().astype(np.int64) - 1]
    rles = []
    for m in masks.detach().float().cpu().numpy().reshape(-1, in_h, in_w):
        if (in_h, in_w) != (h, w):
            m = cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR)
        rles.append(mask_utils.encode(np.asfortranarray((m > MASK_THRESHOLD).astype(np.uint8))))
    return Detections(boxes, result["scores"].detach().double().cpu().numpy(), det_labels, rles)


def _forward(model: torch.nn.Module, img: np.ndarray, shortest_side: float | None,
             device: torch.device) -> tuple[dict, float]:
    """The model's output on one full image rescaled to ``shortest_side``, and that scale."""
    h, w = img.shape[:2]
    s = shortest_side / min(h, w) if shortest_side else 1.0
    if s != 1.0:
        img = cv2.resize(img, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    x = torch.from_numpy(img).permute(2, 0, 1).to(device).float().div_(255)
    transform = model.transform
    saved = transform.min_size, transform.max_size
    # images are already at s0: keep torchvision's transform from rescaling them to the crop size
    transform.min_size, transform.max_size = (min(img.shape[:2]),), max(img.shape[:2])
    try:
        return model([x])[0], s
    finally:
        transform.min_size, transform.max_size = saved


@torch.no_grad()
def predict(model: torch.nn.Module, img: np.ndarray, labels: LabelMap, categories, *,
            shortest_side: float | None, device: torch.device) -> tuple[isus.Panoptic, Detections]:
    """Run the model on one full image (rescaled to ``shortest_side``) and return the fused
    panoptic prediction and the scored instances, both at the image's original size."""
    h, w = img.shape[:2]
    result, s = _forward(model, img, shortest_side, device)
    cat, inst = panoptic_fusion(result, labels.thing_train_ids, labels.stuff_train_ids)
    cat, inst = cat.cpu().numpy().astype(np.int32), inst.cpu().numpy().astype(np.int32)
    if s != 1.0:
        cat = cv2.resize(cat, (w, h), interpolation=cv2.INTER_NEAREST_EXACT)
        inst = cv2.resize(inst, (w, h), interpolation=cv2.INTER_NEAREST_EXACT)
    return to_panoptic(cat, inst, labels, categories), to_detections(result, labels, categories, (h, w))


@torch.no_grad()
def evaluate(model: torch.nn.Module, ds: isus.PanopticDataset, labels: LabelMap, *, shortest_side: float | None,
             device: torch.device, out: Path, max_images: int | None = None, rank: int = 0,
             world: int = 1, ranges: dict[str, tuple[float, float]] | None = None) -> EvalResult | None:
    """Evaluate (up to ``max_images``) images of ``ds``, split across ranks.

    Writes ``out/panoptic.json`` + ``out/panoptic/*.png`` (COCO panoptic) and
    ``out/instances.json`` (COCO results of the scored instances) and returns the
    :class:`~isus.eval.EvalResult` on rank 0 (None on the other ranks). ``ranges``: named
    ground-truth area ranges with their own AP and box extent (``PanopticEvaluator(ranges=)``).
    """
    model.eval()
    ev = PanopticEvaluator(ds.categories)
    writer = PanopticPredictionWriter(out)
    n = len(ds) if max_images is None else min(len(ds), max_images)
    mine: list[tuple[int, Any, Any, dict, Detections]] = []
    for i in range(rank, n, world):
        info = ds.image_info(i)
        pred, det = predict(model, ds.load_image(i), labels, ds.categories, shortest_side=shortest_side,
                            device=device)
        st = ev.add(ds.load_panoptic(i), pred, det, image=f"{info.file_name} (image_id {info.image_id!r})")
        # the COCO record of this image (segments_info), for rank 0's panoptic.json
        mine.append((i, info.image_id, st, writer.add(info.image_id, pred), det))
    if dist.is_available() and dist.is_initialized() and world > 1:
        parts: list | None = [None] * world if rank == 0 else None
        dist.gather_object(mine, parts, dst=0)
        if rank != 0:
            return None
        mine = [r for part in parts for r in part]
    mine.sort(key=lambda r: r[0])  # image order: the result does not depend on the number of ranks
    total = PanopticEvaluator(ds.categories, ranges=ranges)
    for _, _, st, _, _ in mine:
        total.add_stats(st)
    writer.close(ds.categories, records=[r[3] for r in mine])
    write_instances(out / "instances.json", {r[1]: r[4] for r in mine})
    return total.result()


def semantic_confusion(gt: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """``(3, C)`` int64 pixel counts per class of one image: ``[intersection, ground truth,
    prediction]``; ``gt`` and ``pred`` hold classes 0..C-1, ``gt`` < 0 is void and ignored (with
    the prediction there), as in ``isus.eval``."""
    keep = gt >= 0
    g, p = gt[keep].astype(np.int64), pred[keep].astype(np.int64)
    return np.stack([np.bincount(g[g == p], minlength=num_classes), np.bincount(g, minlength=num_classes),
                     np.bincount(p, minlength=num_classes)])[:, :num_classes]


def semantic_result(confusion: np.ndarray, categories, images: int) -> dict[str, Any]:
    """mIoU (fraction, over the classes present in the ground truth or the prediction, as
    ``isus.eval``'s ``miou``) and each class's IoU (None where absent from both)."""
    inter, gt, pred = confusion.astype(np.float64)
    union = gt + pred - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1), np.nan)
    return {"miou": float(iou[union > 0].mean()) if (union > 0).any() else None, "images": images,
            "semantic_only": True,
            "per_class": {c.name: {"id": c.id, "isthing": c.isthing, "iou": None if math.isnan(v) else float(v)}
                          for c, v in zip(categories, iou)}}


@torch.no_grad()
def evaluate_semantic(model: torch.nn.Module, ds: isus.PanopticDataset, labels: LabelMap, *,
                      shortest_side: float | None, device: torch.device, max_images: int | None = None,
                      rank: int = 0, world: int = 1) -> dict[str, Any] | None:
    """mIoU of the semantic head on (up to ``max_images``) full images of ``ds``, split across
    ranks: for data without instance annotations, where PQ and AP have no ground truth. Returns
    :func:`semantic_result` on rank 0 (None on the other ranks)."""
    model.eval()
    lut = {c.id: k for k, c in enumerate(ds.categories)}  # category id -> training id
    n = len(ds) if max_images is None else min(len(ds), max_images)
    confusion = np.zeros((3, labels.num_classes), np.int64)
    for i in range(rank, n, world):
        img = ds.load_image(i)
        h, w = img.shape[:2]
        result, s = _forward(model, img, shortest_side, device)
        logits = result["semantic_logits"]
        pred = logits.argmax(dim=0).cpu().numpy().astype(np.int32)
        if s != 1.0:
            pred = cv2.resize(pred, (w, h), interpolation=cv2.INTER_NEAREST_EXACT)
        sem = ds.load_semantic(i)
        gt = np.full(sem.shape, -1, np.int64)
        for cid in np.unique(sem[sem >= 0]):
            gt[sem == cid] = lut[int(cid)]
        confusion += semantic_confusion(gt, pred, labels.num_classes)
    if dist.is_available() and dist.is_initialized() and world > 1:
        total = torch.from_numpy(confusion).to(device)
        dist.reduce(total, dst=0)
        if rank != 0:
            return None
        confusion = total.cpu().numpy()
    return semantic_result(confusion, ds.categories, n)


def report(res: EvalResult, ds: isus.PanopticDataset, out: Path, label: str) -> list[Path]:
    """Print the Table-1 row and AP by size (percent) and plot AP by size; returns the plot's path
    (if any)."""
    from isus.eval.plots import format_buckets, format_ranges, format_row, plot_by_size

    print(f"evaluation on {res.images} full images of {ds.name} {ds.split}, {len(ds.categories)} categories "
          "(percent; eval.json holds fractions):", flush=True)
    print(format_row(res, label))
    print("")
    print(format_buckets(res), flush=True)
    if res.ranges:
        print("")
        print(format_ranges(res), flush=True)
    edges = (res.buckets or {}).get("edges") or []
    if res.ap_box is None or not edges or not all(e is not None and math.isfinite(e) for e in edges):
        print("(no eval_by_size.png: no ground-truth thing instance or no scored instance)", flush=True)
        return []
    return [plot_by_size([res], [label], out / "eval_by_size.png")]


def report_semantic(res: dict[str, Any], ds: isus.PanopticDataset) -> None:
    """Print the mIoU (percent; eval.json has each class's IoU)."""
    miou = "n/a" if res["miou"] is None else f"{100 * res['miou']:.1f}"
    print(f"evaluation on {res['images']} full images of {ds.name} {ds.split}, {len(ds.categories)} categories, "
          f"semantic only (no instance annotations: no PQ or AP): mIoU {miou} % (eval.json: fractions, "
          "and the IoU of each class)", flush=True)


def write_results(results: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(results, indent=1))
    tmp.replace(path)
