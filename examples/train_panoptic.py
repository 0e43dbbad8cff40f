"""Panoptic FPN training on crops (CUS or ISUS) with the smooth-L1 or CABB box loss, single
process or torchrun/DDP.

The defaults are the paper's method, ISUS crops and the CABB box loss, on data with instance
annotations (CUS crops on semantic-only data): study 2 (docs/evidence-study-2.md), pre-registered,
measured both gains on a scale-consistent synthetic benchmark (docs/training.md, "Which sampling
and box loss").

Examples
--------
Synthetic data on a CPU (see docs/training.md)::

    isus synth --dataset mvd --out data/mvd --images 64 --size 1024x768
    isus index build --dataset mvd --root data/mvd --out data/mvd.isusidx
    python examples/train_panoptic.py --dataset mvd --root data/mvd --index data/mvd.isusidx \\
        --crop 256 --batch-size 2 --steps 400 --out runs/synthetic

MVD on an 8-GPU node, the paper's settings::

    torchrun --nproc_per_node=8 examples/train_panoptic.py --dataset mvd --root /data/mvd \\
        --index mvd-training.isusidx --preset mvd --sampling isus --box-loss cabb --backbone resnet50 \\
        --sync-bn --amp --out runs/mvd
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import pickle
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `examples` importable when run as a script

import isus  # noqa: E402
from examples.panoptic.cli import INSTALL_HINT, HelpFormatter, require_torchvision  # noqa: E402
from examples.panoptic.data import FullImagePolicy, LabelMap, to_model_inputs  # noqa: E402
from examples.panoptic.levels import level_rule  # noqa: E402
from isus.torch import CropSampler, PanopticCropDataset, collate_crops  # noqa: E402

#: crops per GPU of the paper's App. D (MVD: 4; IDD and Cityscapes: 8)
PRESET_BATCH = {"mvd": 4, "cityscapes": 8, "idd": 8}

#: Why the defaults are ISUS crops and CABB (said in --help and printed at the start of a run).
EVIDENCE = ("study 2 (docs/evidence-study-2.md, 5 paired seeds, synthetic) measured ISUS at +2.5 +- 1.3 box AP overall and CABB at "
            "+2.2 +- 1.8 box AP on objects larger than the crop")
#: the defaults of --sampling and --box-loss: on data with instance annotations, and on semantic-only data
DEFAULTS = {True: ("isus", "cabb"), False: ("cus", "smooth_l1")}


def resolve_defaults(args: argparse.Namespace, has_instances: bool) -> list[str]:
    """Fill ``--sampling`` and ``--box-loss`` left unset: the paper's ISUS and CABB on data with
    instance annotations, CUS and smooth L1 on semantic-only data (which has no instances to aim
    crops at, nor boxes). Returns the options it filled."""
    filled = []
    for name, value in zip(("sampling", "box_loss"), DEFAULTS[has_instances]):
        if getattr(args, name) is None:
            setattr(args, name, value)
            filled.append("--" + name.replace("_", "-"))
    return filled


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter,
                                epilog=f"Needs torchvision: {INSTALL_HINT}. See docs/training.md.")
    d = p.add_argument_group("data")
    d.add_argument("--dataset", required=True, choices=["mvd", "cityscapes", "idd", "coco"], help="dataset reader")
    d.add_argument("--root", required=True, type=Path, help="dataset root (the one the index was built from)")
    d.add_argument("--split", default=None, help="training split (default: the reader's)")
    d.add_argument("--val-split", default=None,
                   help="evaluation split (default: the dataset's validation split when the root has one, "
                        "else the training split)")
    d.add_argument("--version", default=None, help="MVD label version (v1.2 / v2.0)")
    d.add_argument("--index", required=True, type=Path, help="index of the training split (isus index build)")
    d.add_argument("--preset", choices=sorted(PRESET_BATCH), default=None,
                   help="crop size, s0, scale ranges and crops per GPU of the paper's App. D")
    d.add_argument("--crop", type=_int(16, 4096), default=None, help="square crop size (default: the preset's, else 512)")
    d.add_argument("--shortest-side", type=_float(0, strict=True), default=None, help="s0 (default: the preset's, else none: images at their own size)")
    d.add_argument("--sampling", choices=["isus", "cus", "full", "rfs"], default=None,
                   help="ISUS crops (the paper's), CUS crops, whole images at s0, or repeat-factor sampling (rfs: "
                        "LVIS / detectron2's baseline, images drawn by their rarest class's repeat factor). Default "
                        "isus (cus on data without instance annotations, which needs cus, full or rfs): " + EVIDENCE)
    d.add_argument("--rfs-threshold", type=_fraction, default=None, metavar="T",
                   help="--sampling rfs: frequency threshold t below which a class's images are repeated (default "
                        "0.001, LVIS's)")
    d.add_argument("--rfs-sqrt", action=argparse.BooleanOptionalAction, default=None,
                   help="--sampling rfs: repeat factor max(1, sqrt(t / f)) (the default, LVIS's) or, with "
                        "--no-rfs-sqrt, max(1, t / f)")
    d.add_argument("--rfs-crop", choices=["class", "image"], default=None,
                   help="--sampling rfs: a crop around a class of the drawn image (class, the default) or the "
                        "whole image at s0")
    d.add_argument("--scale-range", type=_pair, default=None, metavar="LO,HI",
                   help="r_st: the scale range of CUS crops (every class) and of ISUS stuff crops (default: the "
                        "preset's, else 0.5,2); 0.25,4 with --sampling cus is the paper's App. E control")
    d.add_argument("--batch-size", type=_int(1), default=None, help="crops per GPU (preset's, else 2)")
    d.add_argument("--workers", type=_int(0), default=2, help="DataLoader workers per process")
    d.add_argument("--min-visible-fraction", type=_fraction, default=0.0,
                   help="instances a crop leaves with less than this fraction of their area are low-visibility "
                        "(CropConfig(min_visible_fraction=); default 0: none)")
    d.add_argument("--min-box-fraction", type=_fraction, default=0.0,
                   help="instances whose visible box has less than this fraction of their full box's area are "
                        "low-visibility (CropConfig(min_box_fraction=); default 0: none)")
    d.add_argument("--low-visibility", choices=["drop", "ignore"], default="drop",
                   help="drop low-visibility instances (default) or ignore them: out of the detector's targets, "
                        "their pixels ignored by the semantic loss")
    m = p.add_argument_group("model")
    m.add_argument("--backbone", choices=["resnet18", "resnet50"], default="resnet18",
                   help="ResNet-FPN depth (the paper: resnet50; resnet18 suits CPUs and the quick start)")
    m.add_argument("--backbone-weights", type=Path, default=None, help="torchvision ResNet state_dict (.pth)")
    m.add_argument("--init-weights", type=Path, default=None,
                   help="initial weights of the whole model: a checkpoint.pt of this script (e.g. a warm start "
                        "trained once and shared by several runs) or a bare state_dict; loaded as tensors only")
    m.add_argument("--length-scale", type=float, default=1.0,
                   help="scale every length the detector is tuned for, together: the RoI level mapper's canonical "
                        "size (224 x s), the RPN anchor sizes (32..512 x s) and the sampler's FPN level rule, so a "
                        "miniature (e.g. 0.25 with 256 crops for the paper's 1024) assigns levels as the original")
    m.add_argument("--norm", choices=["frozen", "group"], default=None,
                   help="normalisation without --sync-bn (default: group, which also runs on CPU DDP)")
    m.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm (multi-GPU only)")
    m.add_argument("--box-loss", choices=["cabb", "smooth_l1"], default=None,
                   help="box regression loss of the RPN and the box head: cabb (the paper's) or smooth_l1 "
                        "(torchvision's, bit-identical to stock Mask R-CNN). Default cabb (smooth_l1 on data without "
                        "instance annotations, where no box head is trained): " + EVIDENCE)
    tv = "torchvision's Mask R-CNN argument of the same name"
    m.add_argument("--rpn-pre-nms-top-n-train", type=int, default=2000, help=tv)
    m.add_argument("--rpn-post-nms-top-n-train", type=int, default=2000, help=tv)
    m.add_argument("--rpn-pre-nms-top-n-test", type=int, default=1000, help=tv)
    m.add_argument("--rpn-post-nms-top-n-test", type=int, default=1000, help=tv)
    m.add_argument("--rpn-batch-size-per-image", type=_int(1), default=256, help=tv)
    m.add_argument("--box-batch-size-per-image", type=_int(1), default=512, help=tv)
    o = p.add_argument_group("optimisation (paper App. D)")
    o.add_argument("--steps", type=_int(1), default=1000, help="training steps (the learning rate reaches 0 there)")
    o.add_argument("--lr", type=_float(0, strict=True), default=0.02, help="lr0 (the paper scales it with the batch)")
    o.add_argument("--warmup", type=_int(0), default=200,
                   help="linear warm-up steps from 0 to lr0, then linear decay from lr0 to 0 at --steps")
    o.add_argument("--momentum", type=_float(0), default=0.9, help="SGD momentum")
    o.add_argument("--weight-decay", type=_float(0), default=1e-4, help="SGD weight decay")
    o.add_argument("--amp", action="store_true", help="mixed precision (CUDA only)")
    o.add_argument("--clip-grad", type=_float(0, strict=True), default=None,
                   help="clip the gradient norm (not in the paper; steadies training from scratch)")
    o.add_argument("--seed", type=int, default=0, help="initial weights and crop stream")
    r = p.add_argument_group("run")
    r.add_argument("--out", type=Path, required=True, help="checkpoints, log.jsonl, eval.json, predictions/")
    r.add_argument("--checkpoint-every", type=_int(1), default=500, help="steps between checkpoints (and at the end)")
    r.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt (exact sample stream)")
    r.add_argument("--log-every", type=_int(1), default=20,
                   help="steps between log lines (losses, lr, samples/s, steps/s, ETA)")
    r.add_argument("--eval-images", type=int, default=None, help="evaluate on at most this many images (default: all)")
    r.add_argument("--no-eval", action="store_true", help="skip the evaluation at the end")
    r.add_argument("--eval-range", action="append", default=[], metavar="NAME=LO:HI",
                   help="a named range of ground-truth areas (pixels, HI may be inf) with its own AP and box extent "
                        "of matched detections, as `isus eval --range`; repeatable (e.g. larger_than_crop=65536:inf)")
    r.add_argument("--device", default=None, help="cuda / cpu (default: cuda when available)")
    r.add_argument("--no-tensorboard", action="store_true",
                   help="do not write TensorBoard logs to OUT/tensorboard (losses by term, lr, samples/s, data-wait "
                        "share, GPU memory, evaluation metrics by size, crop previews; written when the tensorboard "
                        "package is installed, see docs/training.md)")
    args = p.parse_args(argv)
    rfs_given = [("--no-rfs-sqrt" if getattr(args, k) is False else f"--{k.replace('_', '-')}")
                 for k in ("rfs_threshold", "rfs_sqrt", "rfs_crop") if getattr(args, k) is not None]
    if rfs_given and args.sampling != "rfs":
        p.error(f"{', '.join(rfs_given)} appl{'y' if len(rfs_given) > 1 else 'ies'} to --sampling rfs only")
    args.eval_range = _ranges(p, args.eval_range)
    if args.eval_images is not None and args.eval_images < 1:
        p.error(f"--eval-images expects a positive number of images; got {args.eval_images}")
    if not 0 < args.length_scale <= 16:
        p.error(f"--length-scale expects a number in (0, 16]; got {args.length_scale}")
    if args.sync_bn and not torch.cuda.is_available():
        p.error("--sync-bn needs GPUs (SyncBatchNorm does not run on CPU DDP); use --norm group")
    return args


def _int(lo: int, hi: int | None = None):
    """argparse type: an integer in [lo, hi] (a bad value is an argument error naming the option)."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expects an integer; got {text!r}") from None
        if v < lo or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(f"expects an integer >= {lo}" + (f" and <= {hi}" if hi is not None else "")
                                             + f"; got {text!r}")
        return v
    return parse


def _float(lo: float, strict: bool = False):
    """argparse type: a finite number >= lo (> lo when ``strict``); NaN and inf are argument errors."""
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expects a number; got {text!r}") from None
        if not math.isfinite(v) or v < lo or (strict and v == lo):
            raise argparse.ArgumentTypeError(f"expects a finite number {'>' if strict else '>='} {lo}; got {text!r}")
        return v
    return parse


def _fraction(text: str) -> float:
    """argparse type: a number in [0, 1]."""
    v = _float(0)(text)
    if v > 1:
        raise argparse.ArgumentTypeError(f"expects a fraction in [0, 1]; got {text!r}")
    return v


def _pair(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expects LO,HI (two numbers); got {text!r}") from None
    if not 0 < lo <= hi:
        raise argparse.ArgumentTypeError(f"expects 0 < LO <= HI; got {text!r}")
    return lo, hi


def _ranges(p: argparse.ArgumentParser, values: list[str]) -> dict[str, tuple[float, float]]:
    from isus.eval.extent import check_ranges

    out: dict[str, tuple[float, float]] = {}
    for value in values:
        name, eq, rng = value.partition("=")
        lo, colon, hi = rng.partition(":")
        try:
            out[name] = (float(lo), float(hi))
        except ValueError:
            p.error(f"--eval-range expects NAME=LO:HI in pixels, such as large=65536:inf; got {value!r}")
        if not (eq and colon and name.strip()):
            p.error(f"--eval-range expects NAME=LO:HI in pixels, such as large=65536:inf; got {value!r}")
    try:
        check_ranges(out, "--eval-range")
    except ValueError as e:
        p.error(str(e))
    return out


#: options that only say how a run is carried out: a resumed run may change them
RUN_ONLY = frozenset({"out", "checkpoint_every", "resume", "log_every", "eval_images", "no_eval", "eval_range", "device", "workers",
                      "no_tensorboard", "val_split", "root", "index"})  # root/index: data may move; the sampler checks the index itself
#: options a resumed run may change with a note: more --steps extends a run (the schedule is recomputed)
RESUME_NOTE = frozenset({"steps"})
CHECKPOINT_KEYS = ("model", "optimizer", "scheduler", "scaler", "step", "sampler", "args")


def resume_mismatch(saved: dict, args: argparse.Namespace) -> dict[str, tuple]:
    """The options that define the run (model, loss, data, schedule) whose value differs from the
    checkpoint's: ``{name: (checkpoint value, value now)}``."""
    now = plain_args(args)
    # an option the checkpoint lacks did not exist when it was written: nothing to compare
    return {k: (saved[k], now[k]) for k in sorted(set(saved) & set(now) - RUN_ONLY)
            if plain_args(argparse.Namespace(v=saved[k]))["v"] != now[k]}


def load_checkpoint(path: Path, args: argparse.Namespace, world: int, device: torch.device) -> dict:
    """``path``'s training state, after checking it is whole and describes the run ``args`` asks for.

    Resuming with another loss, data or model would silently train a mixture of two runs (and
    the optimiser and scheduler states would override a new --lr), so any difference in a
    run-defining option is refused, naming each option. A new --steps (extending a run) is
    accepted with a note, since the schedule is then recomputed.
    """
    if not path.exists():
        raise SystemExit(f"--resume: no checkpoint at {path}")
    try:
        # tensors and plain data only: a received checkpoint must not run code on load
        state = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as e:
        raise SystemExit(f"--resume: {path} holds more than tensors and plain data (refused: loading it could run "
                         f"code; checkpoints of this script hold only tensors, numbers, strings, lists and dicts): "
                         f"{str(e).splitlines()[0]}") from None
    except Exception as e:  # a truncated or foreign file: torch's own message does not name it
        raise SystemExit(f"--resume: {path} is not a readable checkpoint ({type(e).__name__}: {e})") from None
    missing = [k for k in CHECKPOINT_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise SystemExit(f"--resume: {path} lacks {missing}; expected a checkpoint written by this script "
                         f"(keys {list(CHECKPOINT_KEYS)})")
    lines = {k: f"--{k.replace('_', '-')}: checkpoint {a!r}, now {b!r}"
             for k, (a, b) in resume_mismatch(state["args"], args).items()}
    for k in RESUME_NOTE & lines.keys():
        print(f"note: resuming with {lines.pop(k)}; the learning-rate schedule is recomputed for the new length",
              flush=True)
    diff = list(lines.values())
    if state.get("world", world) != world:
        diff.append(f"processes: checkpoint {state['world']}, now {world} (the batch, and so the schedule, changes)")
    if diff:
        raise SystemExit(f"--resume: {path} was written by a different run; these options differ:\n  "
                         + "\n  ".join(diff) + "\nresume with the checkpoint's options, or start a new --out")
    return state


def plain_args(args: argparse.Namespace) -> dict:
    """``vars(args)`` as JSON-like values (paths as strings, pairs as lists), so a checkpoint
    loads with ``torch.load(weights_only=True)``."""
    def plain(v):
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        return v
    return {k: plain(v) for k, v in vars(args).items()}


def checkpoint_categories(ds: isus.PanopticDataset) -> list[dict]:
    """The training categories as plain data, in the label map's order (``isus predict`` rebuilds
    the label map from them when it predicts a folder of images)."""
    return [{"id": c.id, "name": c.name, "isthing": c.isthing, "color": list(c.color), "evaluate": c.evaluate}
            for c in ds.categories]


def load_init_weights(model: torch.nn.Module, path: Path) -> str:
    """Load ``path`` (a checkpoint of this script, or a bare state_dict) into ``model`` as
    tensors only, every parameter present with its shape; returns the file's sha256."""
    try:
        data = path.read_bytes()
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise SystemExit(f"--init-weights: {path} holds more than tensors and plain data (refused: loading it "
                         f"could run code): {str(e).splitlines()[0]}") from None
    except Exception as e:
        raise SystemExit(f"--init-weights: {path} is not a readable checkpoint ({type(e).__name__}: {e})") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SystemExit(f"--init-weights: {path} is neither a checkpoint of this script nor a state_dict")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise SystemExit(f"--init-weights: {path} does not fit this model (other backbone, classes or norm?): "
                         f"{str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else e}") from None
    return hashlib.sha256(data).hexdigest()


def setup_distributed(args) -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    use_cuda = (args.device or ("cuda" if torch.cuda.is_available() else "cpu")) == "cuda"
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return rank, world, device


def lr_lambda(warmup: int, steps: int):
    """Linear warm-up from 0 to lr0 over ``warmup`` steps, then linear decay from lr0 to 0 at ``steps``.

    The paper (App. D) decays as lr0 (1 - i / steps); applied after a warm-up that would drop the
    rate from lr0 to lr0 (1 - warmup / steps) in one step, visible in short runs. The decay is
    therefore stretched over the steps after the warm-up, so the curve is continuous.
    """
    def f(i: int) -> float:
        if i < warmup:
            return i / max(warmup, 1)
        return max(0.0, 1.0 - (i - warmup) / max(steps - warmup, 1))
    return f


def has_instances(index: isus.Index) -> bool:
    """Whether the indexed data has instance annotations (False: semantic labels only)."""
    return index.info.dataset.has_instances


def sampler_config(args, index: isus.Index) -> isus.SamplerConfig:
    cfg = isus.SamplerConfig.preset(args.preset) if args.preset else isus.SamplerConfig(crop_size=(512, 512))
    # whole images draw nothing per instance: on semantic-only data their policy is set up as CUS
    cus = args.sampling == "cus" or (args.sampling == "full" and not has_instances(index))
    changes: dict = {"mode": "cus" if cus else "isus", "levels": level_rule(args.length_scale)}
    if args.scale_range:
        changes["stuff_scale_range"] = args.scale_range
    if args.crop:
        changes["crop_size"] = (args.crop, args.crop)
    if args.shortest_side:
        changes["shortest_side"] = args.shortest_side
    cfg = dataclasses.replace(cfg, **changes)
    if args.sampling == "rfs":
        rfs = {k: getattr(args, k) for k in ("rfs_threshold", "rfs_sqrt", "rfs_crop") if getattr(args, k) is not None}
        cfg = cfg.with_mode("rfs", **rfs)
    return cfg


#: The split each reader's dataset evaluates on, when the root has it.
VALIDATION_SPLIT = {"mvd": "validation", "cityscapes": "val", "idd": "val", "coco": "val"}


def open_eval_split(ds: isus.PanopticDataset, val_split: str | None, options: dict, rank: int) -> isus.PanopticDataset:
    """``--val-split``, else the dataset's validation split when the root has one, else the
    training split (said in one line: training images measure fit, not generalisation)."""
    if val_split is not None:
        return isus.open_dataset(ds.name, ds.root, split=val_split, **options)
    candidate = VALIDATION_SPLIT.get(ds.name)
    if candidate and candidate != ds.split:
        try:
            return isus.open_dataset(ds.name, ds.root, split=candidate, **options)
        except isus.DatasetError:
            pass
    if rank == 0:
        print(f"note: {ds.root} has no {candidate!r} split; evaluating on the training split {ds.split!r} "
              "(pass --val-split)", flush=True)
    return isus.open_dataset(ds.name, ds.root, split=ds.split, **options)


def check_data(args, ds: isus.PanopticDataset, index: isus.Index, rank: int) -> isus.PanopticDataset | None:
    """What the options need of the data, checked before the first step (one-line errors naming
    the option): instance annotations for ISUS, CABB and --eval-range; an evaluation split that
    exists, with panoptic ground truth when the model detects instances. Returns the evaluation
    split (None with --no-eval)."""
    where = f"{ds.name} split {ds.split!r} at {ds.root}"
    if not has_instances(index):
        if args.sampling == "isus":
            raise SystemExit(f"--sampling isus draws crops around instances, and {where} has no instance annotations "
                             "(semantic labels only): use --sampling cus (the default on such data) or full")
        if args.box_loss == "cabb":
            raise SystemExit(f"--box-loss cabb is a box loss, and {where} has no instance annotations (semantic labels "
                             "only), so only the semantic head is trained: drop --box-loss cabb")
        if args.eval_range:
            raise SystemExit(f"--eval-range measures instance AP, and {where} has no instance annotations (semantic "
                             "labels only; the evaluation is mIoU): drop --eval-range")
    if args.no_eval:
        return None
    options = dict(index.info.dataset.options)
    if args.version:
        options["version"] = args.version
    try:
        val = open_eval_split(ds, args.val_split, options, rank)
    except isus.DatasetError as e:
        raise SystemExit(f"--val-split {args.val_split or ds.split}: {str(e).splitlines()[0]} (or pass --no-eval)") from None
    if has_instances(index) and not val.has_instances:
        raise SystemExit(f"--val-split {val.split}: {val.name} at {val.root} has no panoptic ground truth there "
                         "(semantic labels only), which the evaluation of instances (PQ, AP) needs; choose another "
                         "--val-split or pass --no-eval")
    return val


def checkpoint_bytes(model: torch.nn.Module) -> int:
    """A checkpoint's size, estimated: the model's state and one SGD momentum buffer per
    trainable parameter (the rest of a checkpoint is small)."""
    state = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    return state + sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)


def check_output(out: Path, need: int, each: int) -> None:
    """``out`` can be created and written, with ``need`` bytes free (checkpoints of ``each``
    bytes); a one-line error naming --out otherwise. Folders created for the check are removed
    again when it fails."""
    missing = [d for d in (out, *out.parents) if not d.exists()]

    def undo() -> None:
        for d in missing:  # deepest first: only the empty folders this check made
            try:
                d.rmdir()
            except OSError:
                break

    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as e:
        undo()
        raise SystemExit(f"--out {out}: cannot write there ({e.strerror or e})") from None
    free = shutil.disk_usage(out).free
    if free < need:
        undo()
        raise SystemExit(f"--out {out}: {free / 2**30:.2f} GiB free, training needs about {need / 2**30:.2f} GiB "
                         f"for checkpoints ({each / 2**30:.2f} GiB each, two while one replaces the other); free "
                         "space or choose another --out")


def format_duration(seconds: float) -> str:
    """``1h02m``, ``12m34s`` or ``45s``."""
    s = max(0, round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def params_in_sync(model: torch.nn.Module, device: torch.device, world: int) -> bool:
    """Whether every rank holds bit-identical parameters: a 64-bit hash of this rank's parameter
    bytes, and one all-reduce (MAX of ``[h, -h]``: all equal iff max == min)."""
    if world == 1 or not dist.is_initialized():
        return True
    h = hashlib.blake2b(digest_size=7)  # 56 bits: -h fits an int64
    for p in model.parameters():
        h.update(p.detach().reshape(-1).contiguous().cpu().view(torch.uint8).numpy().tobytes())
    v = int.from_bytes(h.digest(), "little")
    t = torch.tensor([v, -v], dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t[0]) == -int(t[1])


def atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def main(argv=None) -> dict:
    args = parse_args(argv)
    require_torchvision(Path(__file__).name)
    from examples.panoptic.evaluate import evaluate, evaluate_semantic, report, report_semantic, write_results
    from examples.panoptic.model import build_panoptic_fpn
    from examples.panoptic.tensorboard import TensorBoard

    rank, world, device = setup_distributed(args)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)  # identical initial weights on every rank (DDP broadcasts them anyway)

    # everything that can fail is checked before the first step (and before anything is written)
    index = isus.Index.load(args.index)
    ds = index.open_dataset()
    if ds.name != args.dataset or Path(ds.root).resolve() != args.root.resolve():
        raise SystemExit(f"--index {args.index} was built from {ds.name} at {ds.root}, not {args.dataset} at {args.root}")
    semantic_only = not has_instances(index)
    defaulted = resolve_defaults(args, not semantic_only)
    val = check_data(args, ds, index, rank)
    labels = LabelMap.from_dataset(ds)
    cfg = sampler_config(args, index)
    batch = args.batch_size or PRESET_BATCH.get(args.preset, 2)
    policy = FullImagePolicy(index, cfg) if args.sampling == "full" else None
    sampler = CropSampler(index, cfg, num_samples=args.steps * batch * world, seed=args.seed, rank=rank,
                          world_size=world, policy=policy)
    crop = cfg.crop_size
    if args.sampling == "full" or getattr(cfg, "rfs_crop", None) == "image":  # whole images
        s0 = cfg.shortest_side or int(min(index.heights.min(), index.widths.min()))
        min_size, max_size = int(s0), int(4 * s0)  # full images at s0: the transform must not rescale them
    else:
        min_size, max_size = min(crop), max(crop)
    norm = "sync" if args.sync_bn else (args.norm or "group")
    model = build_panoptic_fpn(
        len(labels.thing_train_ids), labels.num_classes, backbone=args.backbone,
        backbone_weights=str(args.backbone_weights) if args.backbone_weights else None, norm=norm,
        box_loss=args.box_loss, min_size=min_size, max_size=max_size,
        rpn_pre_nms_top_n_train=args.rpn_pre_nms_top_n_train, rpn_post_nms_top_n_train=args.rpn_post_nms_top_n_train,
        rpn_pre_nms_top_n_test=args.rpn_pre_nms_top_n_test, rpn_post_nms_top_n_test=args.rpn_post_nms_top_n_test,
        rpn_batch_size_per_image=args.rpn_batch_size_per_image, box_batch_size_per_image=args.box_batch_size_per_image,
        length_scale=args.length_scale, semantic_only=semantic_only,
    ).to(device)
    if args.init_weights is not None and not args.resume:  # a resumed run has its own weights
        init_digest = load_init_weights(model, args.init_weights)
        if rank == 0:
            print(f"initial weights: {args.init_weights} (sha256 {init_digest[:16]})", flush=True)
    if args.sync_bn:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(args.warmup, args.steps))
    scaler = torch.amp.GradScaler("cuda", enabled=args.amp and device.type == "cuda")
    step = 0
    ckpt_path = args.out / "checkpoint.pt"
    if args.resume:
        state = load_checkpoint(ckpt_path, args, world, device)
    each = checkpoint_bytes(model)
    # the first checkpoint needs one copy; every later one is written beside the last before replacing it
    check_output(args.out, each if ckpt_path.exists() else 2 * each, each)
    log = (args.out / "log.jsonl").open("a") if rank == 0 else None
    if rank == 0:
        if semantic_only:
            print(f"configuration: {ds.name} {ds.split!r} has no instance annotations (semantic labels only): the "
                  f"semantic head alone is trained (--sampling {args.sampling}) and evaluated with mIoU", flush=True)
        else:
            how = f"defaults: {', '.join(defaulted)}" if defaulted else "as given"
            print(f"configuration: --sampling {args.sampling} --box-loss {args.box_loss} ({how}; the defaults are the "
                  f"paper's isus and cabb, the baseline is cus and smooth_l1); {EVIDENCE}", flush=True)
        if isinstance(cfg, isus.RepeatFactorConfig):
            print(f"repeat-factor sampling: t = {cfg.rfs_threshold:g}, {'sqrt' if cfg.rfs_sqrt else 'no sqrt'}, "
                  f"{'crops around a class of each drawn image' if cfg.rfs_crop == 'class' else 'whole images at s0'}"
                  " (isus stats --mode rfs shows the repeat factors)", flush=True)
    if args.resume:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        step = state["step"]
        sampler.load_state_dict({**state["sampler"], "rank": rank, "position": step * batch})
    ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                  find_unused_parameters=True) if world > 1 else model

    # On a GPU the loader ships compact targets (segment map and tables) and to_model_inputs rebuilds
    # masks and semantic maps there: the same targets, without N x H x W bytes per crop written on
    # the CPU and copied through the workers, pinned memory and the bus.
    crop_config = isus.CropConfig(compact_targets=device.type == "cuda",
                                  min_visible_fraction=args.min_visible_fraction,
                                  min_box_fraction=args.min_box_fraction, low_visibility=args.low_visibility)
    loader = DataLoader(PanopticCropDataset(ds, index, crop_config), sampler=sampler, batch_size=batch,
                        num_workers=args.workers, collate_fn=collate_crops, pin_memory=device.type == "cuda",
                        drop_last=True, persistent_workers=False)
    if rank == 0:
        print(f"training {args.backbone} Panoptic FPN ({args.box_loss} box loss, {args.sampling} sampling, "
              f"crop {crop[0]}x{crop[1]}, {batch} per process x {world}) from step {step} to {args.steps}", flush=True)
    # rank 0 only; a resumed run hides what a crashed run logged after its checkpoint (purge_step)
    tb = TensorBoard(args.out, enabled=not args.no_tensorboard, rank=rank, purge_step=step if args.resume else None)
    tb.text("args", "  \n".join(f"--{k.replace('_', '-')} {v}" for k, v in sorted(plain_args(args).items())))
    ddp.train()
    t_start = t_last = time.perf_counter()
    first_step = last_step = step
    wait = 0.0
    it = iter(loader)
    while step < args.steps:
        t0 = time.perf_counter()
        try:
            data = next(it)
        except StopIteration:
            break
        wait += time.perf_counter() - t0
        images, targets = to_model_inputs(data, labels, device)
        if tb and (step == first_step or (step + 1) % args.checkpoint_every == 0):
            tb.crops(step + 1, images, targets)  # a few crops of the first batch and of each checkpoint's
        with torch.autocast(device_type=device.type, enabled=args.amp and device.type == "cuda"):
            losses = ddp(images, targets)
            loss = sum(losses.values())
        if not torch.isfinite(loss):
            raise SystemExit(f"step {step}: non-finite loss { {k: v.item() for k, v in losses.items()} }; "
                             "lower --lr or set --clip-grad")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if args.clip_grad:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, args.clip_grad)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        step += 1
        if rank == 0 and (step % args.log_every == 0 or step == args.steps):
            now = time.perf_counter()
            steps_per_s = (step - first_step) / max(now - t_start, 1e-9)  # since this process started
            record = {"step": step, "lr": scheduler.get_last_lr()[0], "loss": loss.item(),
                      **{k: v.item() for k, v in losses.items()},
                      "samples_per_s": (step - last_step) * batch * world / max(now - t_last, 1e-9),
                      "data_wait_share": wait / max(now - t_last, 1e-9),
                      "steps_per_s": steps_per_s, "eta_s": (args.steps - step) / max(steps_per_s, 1e-9)}
            if device.type == "cuda":  # peak since the start, GiB (allocated by tensors / held by the allocator)
                record["gpu_peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
                record["gpu_reserved_gib"] = torch.cuda.max_memory_reserved(device) / 2**30
            t_last, last_step, wait = now, step, 0.0
            log.write(json.dumps(record) + "\n")
            log.flush()
            tb.scalars(step, record)
            # plain lines, flushed: the same in a terminal and in a log file (clusters redirect stdout)
            print(f"step {step}/{args.steps} " + " ".join(
                f"{k}={v:.4g}" for k, v in record.items() if k not in ("step", "eta_s"))
                + f" eta={format_duration(record['eta_s'])}", flush=True)
        if step % args.checkpoint_every == 0 or step == args.steps:
            if rank == 0:
                atomic_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                             "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "step": step,
                             "sampler": sampler.state_dict(num_consumed=step * batch), "args": plain_args(args),
                             "world": world, "categories": checkpoint_categories(ds)}, ckpt_path)
            if world > 1:
                dist.barrier()
    if log is not None:
        log.close()
    results = {"steps": step, "train_seconds": time.perf_counter() - t_start}
    written: list[Path] = []
    if val is not None and semantic_only:
        t_eval = time.perf_counter()
        sem = evaluate_semantic(model, val, labels, shortest_side=cfg.shortest_side, device=device,
                                max_images=args.eval_images, rank=rank, world=world)
        if rank == 0:
            assert sem is not None
            report_semantic(sem, val)
            results = {**sem, **results, "eval_seconds": time.perf_counter() - t_eval, "eval_split": val.split}
    elif val is not None:
        t_eval = time.perf_counter()
        res = evaluate(model, val, labels, shortest_side=cfg.shortest_side, device=device, out=args.out / "predictions",
                       max_images=args.eval_images, rank=rank, world=world, ranges=args.eval_range or None)
        if rank == 0:
            # eval.json: isus.eval's EvalResult (fractions; `isus eval --compare` reads it) plus the run's keys
            results = {**res.to_dict(), **results, "eval_seconds": time.perf_counter() - t_eval,
                       "eval_split": val.split, "predictions": "predictions/panoptic.json",
                       "instances": "predictions/instances.json"}
            written = [args.out / "predictions" / "panoptic.json", args.out / "predictions" / "panoptic",
                       args.out / "predictions" / "instances.json"]
            written += report(res, val, args.out, args.out.name or "this run")
    if val is not None and rank == 0:
        tb.evaluation(step, results, written)
    tb.close()
    # every rank must end with the same weights (DDP keeps them in step); one process: trivially true
    results["params_in_sync"] = params_in_sync(model, device, world)
    if world > 1:
        if rank == 0:
            write_results(results, args.out / "eval.json")
            print("wrote " + ", ".join(str(p) for p in [args.out / "eval.json", *written]), flush=True)
        dist.barrier()
        dist.destroy_process_group()
    elif rank == 0:
        write_results(results, args.out / "eval.json")
        print("wrote " + ", ".join(str(p) for p in [args.out / "eval.json", *written]), flush=True)
    return results


if __name__ == "__main__":
    main()
