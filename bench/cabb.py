"""Benchmark of the CABB loss against the standard smooth-L1 box loss, measured in one run.

    python bench/cabb.py [--sizes 1000 16000 128000] [--weights 10 10 5 5] [--beta 0.1111]

For each N (half of the boxes truncated on at least one side) and device (CPU; CUDA when
available), prints the fastest of repeated, interleaved calls of:

* ``smooth_l1``: ``F.smooth_l1_loss(pred, targets)`` on precomputed encoded targets;
* ``standard``: the standard box loss from boxes: BoxCoder-style encoding + smooth-L1;
* ``cabb``: ``isus.cabb.cabb_loss`` (targets solved + smooth-L1), forward only;
* ``per-box``: the scalar transcription of the paper's Algorithms 1-3 (one Python call per
  box, ``tests/cabb_reference.paper_targets``), CPU and unweighted only, timed on up to 2,000
  boxes (best of 3 passes) and scaled to N;

and the ratios cabb / smooth_l1, cabb / standard and per-box / cabb.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import isus.cabb as cabb  # noqa: E402
from tests.cabb_reference import paper_targets  # noqa: E402

CROP = (0.0, 0.0, 1024.0, 1024.0)


def make_inputs(n: int, weights, seed: int = 0):
    """Matched anchors, visible boxes, truncation flags (half the boxes cut) and predictions."""
    rng = np.random.default_rng(seed)
    crop = np.array(CROP)
    size = np.exp(rng.uniform(math.log(8), math.log(800), (n, 2)))
    ctr = rng.uniform(crop[:2] + size / 2, crop[2:] - size / 2)
    orig = np.concatenate([ctr - size / 2, ctr + size / 2], 1)
    cut = rng.random(n) < 0.5
    sides = rng.random((n, 4)) < 0.4
    sides[cut & ~sides.any(1), rng.integers(0, 4)] = True
    sides[~cut] = False
    grow = np.exp(rng.uniform(0, math.log(3), (n, 4))) * np.concatenate([size, size], 1)
    orig = orig + np.where(sides, grow, 0.0) * np.array([-1, -1, 1, 1])
    vis = np.concatenate([np.maximum(orig[:, :2], crop[:2]), np.minimum(orig[:, 2:], crop[2:])], 1)
    truncated = np.concatenate([orig[:, :2] < crop[:2], orig[:, 2:] > crop[2:]], 1)
    jitter = rng.normal(0, 0.1, (n, 4)) * np.concatenate([size, size], 1)
    anchors = vis + jitter
    anchors[:, 2:] = np.maximum(anchors[:, 2:], anchors[:, :2] + 2.0)
    wx, wy, ww, wh = weights
    aw, ah = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    gw, gh = vis[:, 2] - vis[:, 0], vis[:, 3] - vis[:, 1]
    std = np.stack(
        [
            wx * (vis[:, 0] + gw / 2 - anchors[:, 0] - aw / 2) / aw,
            wy * (vis[:, 1] + gh / 2 - anchors[:, 1] - ah / 2) / ah,
            ww * np.log(gw / aw),
            wh * np.log(gh / ah),
        ],
        1,
    )
    pred = std + rng.normal(0, 0.3, (n, 4)) * np.asarray(weights)
    return pred, anchors, vis, truncated, std


def encode(boxes: torch.Tensor, anchors: torch.Tensor, weights) -> torch.Tensor:
    """torchvision's encode_boxes, inlined so the baseline needs no torchvision."""
    wx, wy, ww, wh = weights
    aw = anchors[:, 2:3] - anchors[:, 0:1]
    ah = anchors[:, 3:4] - anchors[:, 1:2]
    ax = anchors[:, 0:1] + 0.5 * aw
    ay = anchors[:, 1:2] + 0.5 * ah
    gw = boxes[:, 2:3] - boxes[:, 0:1]
    gh = boxes[:, 3:4] - boxes[:, 1:2]
    gx = boxes[:, 0:1] + 0.5 * gw
    gy = boxes[:, 1:2] + 0.5 * gh
    return torch.cat([wx * (gx - ax) / aw, wy * (gy - ay) / ah, ww * torch.log(gw / aw), wh * torch.log(gh / ah)], 1)


def timeit(fns, device: torch.device, min_time: float = 1.0, max_reps: int = 500) -> list[float]:
    """Fastest seconds per call of each function (the least disturbed measurement on a shared
    machine), calls interleaved so that load from other processes hits all of them alike."""

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for fn in fns:
        fn()
    sync()
    times: list[list[float]] = [[] for _ in fns]
    start = time.perf_counter()
    while len(times[0]) < 7 or (time.perf_counter() - start < min_time and len(times[0]) < max_reps):
        for fn, ts in zip(fns, times):
            t0 = time.perf_counter()
            fn()
            sync()
            ts.append(time.perf_counter() - t0)
    return [min(ts) for ts in times]


def fmt(seconds: float) -> str:
    return f"{seconds * 1e3:10.3f} ms"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 16000, 128000])
    ap.add_argument("--weights", type=float, nargs=4, default=[1.0, 1.0, 1.0, 1.0])
    ap.add_argument("--beta", type=float, default=1.0 / 9.0)
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    ap.add_argument("--loop-boxes", type=int, default=2000, help="boxes timed for the per-box loop")
    args = ap.parse_args(argv)
    weights, beta = tuple(args.weights), args.beta
    dtype = getattr(torch, args.dtype)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, weights {weights}, beta {beta:.4g}, {args.dtype}")
    if not torch.cuda.is_available():
        print("no CUDA device: CPU only")
    header = (
        f"{'device':6} {'N':>7} {'smooth_l1':>13} {'standard':>13} {'cabb':>13} "
        f"{'cabb/sl1':>9} {'cabb/std':>9} {'per-box':>13} {'loop/cabb':>10}"
    )
    print(header)
    print("-" * len(header))
    for device in devices:
        for n in args.sizes:
            pred, anchors, vis, truncated, std = make_inputs(n, weights)
            p, a, b, s = (torch.tensor(x, dtype=dtype, device=device) for x in (pred, anchors, vis, std))
            tr = torch.tensor(truncated, device=device)
            crop = torch.tensor(CROP, dtype=dtype, device=device)
            t_sl1, t_std, t_cabb = timeit(
                [
                    lambda: F.smooth_l1_loss(p, s, beta=beta, reduction="sum"),
                    lambda: F.smooth_l1_loss(p, encode(b, a, weights), beta=beta, reduction="sum"),
                    lambda: cabb.cabb_loss(p, a, b, tr, crop, weights, beta),
                ],
                device,
            )
            loop = ""
            if device.type == "cpu" and weights == (1.0, 1.0, 1.0, 1.0):
                m = min(n, args.loop_boxes)
                passes = []
                for _ in range(3):
                    t0 = time.perf_counter()
                    for i in range(m):
                        paper_targets(pred[i], anchors[i], vis[i], truncated[i], CROP, beta)
                    passes.append((time.perf_counter() - t0) / m * n)
                t_loop = min(passes)
                loop = f"{fmt(t_loop)} {t_loop / t_cabb:9.0f}x"
            print(
                f"{device.type:6} {n:7d} {fmt(t_sl1)} {fmt(t_std)} {fmt(t_cabb)} "
                f"{t_cabb / t_sl1:8.0f}x {t_cabb / t_std:8.1f}x {loop}"
            )


if __name__ == "__main__":
    main()
