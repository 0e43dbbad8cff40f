"""TensorBoard logs of the example (issue 26, part 4): training scalars, evaluation metrics with
the size buckets, and a few crop previews, written with ``torch.utils.tensorboard`` into
``OUT/tensorboard`` when the ``tensorboard`` package is installed (the examples' extra); without
it, one note and nothing else. ``log.jsonl`` and ``eval.json`` are written as before either way.

Open the logs with ``tensorboard --logdir OUT`` (docs/training.md, "TensorBoard").
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

__all__ = ["TensorBoard", "flatten_eval", "train_scalars", "NOTE"]

#: printed once (rank 0) when the tensorboard package is missing
NOTE = ('note: tensorboard is not installed, so no TensorBoard logs are written (pip install tensorboard, or '
        'pip install -e ".[examples]"); log.jsonl and eval.json as usual')

#: keys of a log.jsonl record that are not plotted (the step is the x axis; the ETA is not a measurement)
_SKIP = frozenset({"step", "eta_s"})
#: eval.json's keys that are not metrics
_RUN_KEYS = frozenset({"steps", "params_in_sync", "eval_split", "predictions", "instances", "dataset", "per_class"})


def train_scalars(record: dict[str, Any]) -> dict[str, float]:
    """One log.jsonl record as TensorBoard tags: ``loss/total`` and ``loss/<term>`` (each term of
    the model's loss dict), ``train/lr``, ``train/samples_per_s``, ``train/data_wait_share``,
    ``train/steps_per_s`` and, on CUDA, ``gpu/peak_gib`` and ``gpu/reserved_gib``."""
    out: dict[str, float] = {}
    for k, v in record.items():
        if k in _SKIP or not _number(v):
            continue
        if k == "loss":
            tag = "loss/total"
        elif k.startswith("loss_"):
            tag = f"loss/{k[len('loss_'):]}"
        elif k.startswith("gpu_"):
            tag = f"gpu/{k[len('gpu_'):]}"
        else:
            tag = f"train/{k}"
        out[tag] = float(v)
    return out


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _bucket_names(b: dict[str, Any]) -> list[str]:
    """Tag-friendly bucket names, in order: ``1_p0-p25`` (percentile edges) or ``1_area_0-1024``
    (edges in pixels given by the user); the number keeps TensorBoard's sort in bucket order."""
    edges, pcts = b.get("edges") or [], b.get("percentiles")
    names = []
    for k in range(len(edges) - 1):
        if pcts:
            names.append(f"{k + 1}_p{pcts[k]:g}-p{pcts[k + 1]:g}")
        else:
            hi = edges[k + 1]
            names.append(f"{k + 1}_area_{edges[k]:g}-" + ("inf" if hi is None or not math.isfinite(hi) else f"{hi:g}"))
    return names


def _flatten(prefix: str, v: Any, out: dict[str, float]) -> None:
    if _number(v):
        out[prefix] = float(v)
    elif isinstance(v, dict):
        for k, x in v.items():
            _flatten(f"{prefix}/{k}", x, out)


def flatten_eval(results: dict[str, Any]) -> dict[str, float]:
    """An ``eval.json`` dict (isus.eval's result plus the run's keys, or the semantic-only result)
    as TensorBoard tags, undefined (None/NaN) values left out:

    - ``eval/<metric>``: every top-level number (pq, sq, rq and their _th/_st, pq_dagger, pc,
      miou, ap_box, ap_mask, images, train_seconds, eval_seconds, ...);
    - ``eval/ap/<box|mask>/<ap|ap50|ap75|ap_small|...>``;
    - ``eval_buckets/<box|mask|instances>/<bucket>`` and ``eval_buckets/extent/<stat>/<bucket>``:
      AP by size (``buckets``);
    - ``eval_by_size/<pq|sq|rq|pc|..._th|_st|tp|fp|fn|segments...>/<bucket>``: PQ, SQ, RQ, PC by
      size (``by_size``), where present;
    - ``eval_ranges/<name>/<box|mask>/<ap|ap50|ap75>``, ``.../instances`` and ``.../extent/<stat>``.

    Buckets are named by :func:`_bucket_names`. Per-class metrics are left to eval.json (a
    hundred categories would bury the rest).
    """
    out: dict[str, float] = {}
    for k, v in results.items():
        if k in _RUN_KEYS or k in ("ap", "buckets", "by_size", "ranges"):
            continue
        if _number(v):
            out[f"eval/{k}"] = float(v)
    _flatten("eval/ap", results.get("ap") or {}, out)
    for key, group in (("buckets", "eval_buckets"), ("by_size", "eval_by_size")):
        b = results.get(key) or {}
        names = _bucket_names(b)
        for name, values in b.items():
            if name in ("edges", "percentiles", "counts") or not isinstance(values, list) or len(values) != len(names):
                continue
            for bucket, v in zip(names, values):
                if isinstance(v, dict):  # the box extent summary of one bucket
                    _flatten(f"{group}/{name}", {kk: {bucket: vv} for kk, vv in v.items()}, out)
                else:
                    _flatten(f"{group}/{name}/{bucket}", v, out)
    for name, r in (results.get("ranges") or {}).items():
        if isinstance(r, dict):
            _flatten(f"eval_ranges/{name}", {k: v for k, v in r.items() if k not in ("area", "matches")}, out)
    return out


def crop_grid(images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]], n: int = 4) -> torch.Tensor:
    """Up to ``n`` crops of a batch side by side as one uint8 CHW image: each crop with its
    instance masks overlaid and its visible boxes (yellow; red where the crop truncates the
    instance), as ``isus preview`` draws them; crops of different sizes are padded."""
    from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks, make_grid

    tiles = []
    for img, t in list(zip(images, targets))[:n]:
        tile = (img.detach().float().clamp(0, 1) * 255).to(torch.uint8).cpu()
        masks = t.get("masks")
        if masks is not None and len(masks):
            tile = draw_segmentation_masks(tile, masks.detach().cpu().bool(), alpha=0.4)
        boxes = t.get("boxes")
        if boxes is not None and len(boxes):
            trunc = t.get("truncated")
            cut = trunc.detach().cpu().reshape(len(boxes), -1).any(1).tolist() if trunc is not None else [False] * len(boxes)
            tile = draw_bounding_boxes(tile, boxes.detach().float().cpu(),
                                       colors=["red" if c else "yellow" for c in cut], width=1)
        tiles.append(tile)
    h = max(x.shape[1] for x in tiles)
    w = max(x.shape[2] for x in tiles)
    tiles = [torch.nn.functional.pad(x, (0, w - x.shape[2], 0, h - x.shape[1])) for x in tiles]
    return make_grid(tiles, nrow=len(tiles), padding=2, pad_value=128)


class TensorBoard:
    """The run's TensorBoard writer, or a no-op: disabled (``enabled=False``, ranks other than 0)
    or without the tensorboard package (then :data:`NOTE` is printed once, by rank 0).

    ``purge_step``: a resumed run's step, so that events a crashed run wrote after its last
    checkpoint are hidden (SummaryWriter's own option).
    """

    def __init__(self, out: Path, *, enabled: bool = True, rank: int = 0, purge_step: int | None = None,
                 print_fn: Callable[[str], None] | None = None) -> None:
        self.writer: Any = None
        self.log_dir = Path(out) / "tensorboard"
        say = print_fn or (lambda s: print(s, flush=True))
        if not enabled or rank != 0:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            say(NOTE)
            return
        self.writer = SummaryWriter(str(self.log_dir), purge_step=purge_step)
        say(f"tensorboard: {self.log_dir} (open it with: tensorboard --logdir {Path(out)})")

    def __bool__(self) -> bool:
        return self.writer is not None

    def text(self, tag: str, text: str) -> None:
        if self.writer is not None:
            self.writer.add_text(tag, text, 0)

    def scalars(self, step: int, record: dict[str, Any]) -> None:
        """A log.jsonl record (:func:`train_scalars`), flushed like log.jsonl."""
        if self.writer is None:
            return
        for tag, v in train_scalars(record).items():
            self.writer.add_scalar(tag, v, step)
        self.writer.flush()

    def crops(self, step: int, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]], n: int = 4) -> None:
        """``crops``: up to ``n`` crops of the batch of ``step`` (:func:`crop_grid`)."""
        if self.writer is None or not images:
            return
        self.writer.add_image("crops", crop_grid(images, targets, n), step, dataformats="CHW")
        self.writer.flush()

    def evaluation(self, step: int, results: dict[str, Any], figures: Sequence[Path] = ()) -> None:
        """The metrics of eval.json (:func:`flatten_eval`) at ``step``, and PNG figures the
        evaluation wrote (e.g. eval_by_size.png) as images named after their files."""
        if self.writer is None:
            return
        for tag, v in flatten_eval(results).items():
            self.writer.add_scalar(tag, v, step)
        for path in figures:
            if Path(path).suffix == ".png" and Path(path).is_file():
                import numpy as np
                from PIL import Image

                with Image.open(path) as im:
                    self.writer.add_image(f"eval/{Path(path).stem}", np.asarray(im.convert("RGB")), step,
                                          dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
