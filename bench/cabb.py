"""Benchmark of the CABB loss against the standard smooth-L1 box loss, measured in one run.

    python bench/cabb.py [--sizes 1000 16000 128000] [--weights 10 10 5 5] [--beta 0.1111]
                         [--device cpu|cuda|all] [--backward] [--compile] [--json PATH]

For each N (half of the boxes truncated on at least one side) and device (CPU; CUDA when
available, or the one ``--device`` names), prints the fastest of repeated, interleaved calls of:

* ``smooth_l1``: ``F.smooth_l1_loss(pred, targets)`` on precomputed encoded targets;
* ``standard``: the standard box loss from boxes: BoxCoder-style encoding + smooth-L1;
* ``cabb``: ``isus.cabb.cabb_loss`` (targets solved + smooth-L1), forward only;
* ``per-box``: the scalar transcription of the paper's Algorithms 1-3 (one Python call per
  box, ``tests/cabb_reference.paper_targets``), CPU and unweighted only, timed on up to 2,000
  boxes (best of 3 passes) and scaled to N;

and the ratios cabb / smooth_l1, cabb / standard and per-box / cabb. ``--backward`` adds
forward + backward times (``sl1 f+b``, ``cabb f+b``: what a training step pays);
``--compile`` adds ``cabb_loss`` under ``torch.compile(fullgraph=True, dynamic=True)`` (forward +
backward; compiled once per device for every N; the first call's time, i.e. the compilation, and
the largest difference to eager printed below the table). ``--json`` writes every figure (milliseconds) to a file.
"""

from __future__ import annotations

import argparse
import json
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


def fwd_bwd(loss_fn, p):
    """One training-step use of a box loss: forward, then backward into ``p.grad``."""

    def run():
        p.grad = None
        loss_fn(p).backward()

    return run


def compiled_loss(compiled, p, a, b, tr, crop, weights, beta, device):
    """``compiled`` (``cabb_loss`` under ``torch.compile``) on these inputs: (loss_fn, seconds of
    the first forward + backward -- the compilation, for the first N --, largest relative
    difference of the per-box loss to eager)."""
    t0 = time.perf_counter()
    q = p.detach().clone().requires_grad_(True)
    compiled(q, a, b, tr, crop, weights, beta).backward()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    eager = cabb.cabb_loss(p.detach(), a, b, tr, crop, weights, beta, reduction="none")
    comp = compiled(p.detach(), a, b, tr, crop, weights, beta, reduction="none")
    diff = float(((comp - eager).abs() / (1.0 + eager.abs())).max()) if eager.numel() else 0.0
    return (lambda x: compiled(x, a, b, tr, crop, weights, beta)), seconds, diff


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 16000, 128000])
    ap.add_argument("--weights", type=float, nargs=4, default=[1.0, 1.0, 1.0, 1.0])
    ap.add_argument("--beta", type=float, default=1.0 / 9.0)
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    ap.add_argument("--loop-boxes", type=int, default=2000, help="boxes timed for the per-box loop")
    ap.add_argument("--device", choices=["all", "cpu", "cuda"], default="all",
                    help="all: the CPU, and CUDA when available (default)")
    ap.add_argument("--backward", action="store_true", help="also time forward + backward")
    ap.add_argument("--compile", action="store_true", help="also time cabb_loss under torch.compile (f+b)")
    ap.add_argument("--min-time", type=float, default=1.0, help="seconds of repeated calls per measurement")
    ap.add_argument("--json", type=Path, default=None, help="write the figures (ms) to this file")
    args = ap.parse_args(argv)
    weights, beta = tuple(args.weights), args.beta
    dtype = getattr(torch, args.dtype)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench/cabb.py --device cuda: no CUDA device")
    devices = [torch.device("cpu")] if args.device in ("all", "cpu") else []
    if args.device == "cuda" or (args.device == "all" and torch.cuda.is_available()):
        devices.append(torch.device("cuda"))
    gpu = f", {torch.cuda.get_device_name()}" if any(d.type == "cuda" for d in devices) else ""
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads{gpu}, weights {weights}, "
          f"beta {beta:.4g}, {args.dtype}")
    if not torch.cuda.is_available():
        print("no CUDA device: CPU only")
    header = (
        f"{'device':6} {'N':>7} {'smooth_l1':>13} {'standard':>13} {'cabb':>13} "
        f"{'cabb/sl1':>9} {'cabb/std':>9}"
    )
    if args.backward:
        header += f" {'sl1 f+b':>13} {'cabb f+b':>13}"
    if args.compile:
        header += f" {'compiled f+b':>13}"
    header += f" {'per-box':>13} {'loop/cabb':>10}"
    print(header)
    print("-" * len(header))
    rows: list[dict] = []
    notes: list[str] = []
    for device in devices:
        # one compilation per device serves every N (dynamic shapes: N changes every training step)
        compiled = torch.compile(cabb.cabb_loss, fullgraph=True, dynamic=True) if args.compile else None
        for n in args.sizes:
            pred, anchors, vis, truncated, std = make_inputs(n, weights)
            p, a, b, s = (torch.tensor(x, dtype=dtype, device=device) for x in (pred, anchors, vis, std))
            tr = torch.tensor(truncated, device=device)
            crop = torch.tensor(CROP, dtype=dtype, device=device)
            fns = [
                lambda: F.smooth_l1_loss(p, s, beta=beta, reduction="sum"),
                lambda: F.smooth_l1_loss(p, encode(b, a, weights), beta=beta, reduction="sum"),
                lambda: cabb.cabb_loss(p, a, b, tr, crop, weights, beta),
            ]
            row = {"device": device.type, "n": n, "weights": list(weights), "beta": beta, "dtype": args.dtype}
            pg = p.clone().requires_grad_(True)
            if args.backward:
                fns.append(fwd_bwd(lambda x: F.smooth_l1_loss(x, s, beta=beta, reduction="sum"), pg))
                fns.append(fwd_bwd(lambda x: cabb.cabb_loss(x, a, b, tr, crop, weights, beta), pg))
            use_compiled = compiled is not None
            if use_compiled:
                try:
                    fn, first_s, diff = compiled_loss(compiled, p, a, b, tr, crop, weights, beta, device)
                except Exception as e:  # the eager figures still count (bench/gpu_check.py runs this unattended)
                    use_compiled = False
                    row["compile_error"] = f"{type(e).__name__}: {e}"[:2000]
                    notes.append(f"{device.type} N={n}: torch.compile failed: {row['compile_error'][:300]}")
                else:
                    fns.append(fwd_bwd(fn, pg))
                    row.update(first_call_s=first_s, compiled_max_rel_diff=diff)
                    notes.append(f"{device.type} N={n}: first compiled call {first_s:.1f} s (forward + backward), "
                                 f"largest |compiled - eager| / (1 + |eager|) of the per-box loss {diff:.2g}")
            times = timeit(fns, device, min_time=args.min_time)
            t_sl1, t_std, t_cabb = times[:3]
            row.update(smooth_l1_ms=t_sl1 * 1e3, standard_ms=t_std * 1e3, cabb_ms=t_cabb * 1e3)
            extra = ""
            k = 3
            if args.backward:
                row.update(smooth_l1_fwd_bwd_ms=times[k] * 1e3, cabb_fwd_bwd_ms=times[k + 1] * 1e3)
                extra += f" {fmt(times[k])} {fmt(times[k + 1])}"
                k += 2
            if use_compiled:
                row.update(compiled_cabb_fwd_bwd_ms=times[k] * 1e3)
                extra += f" {fmt(times[k])}"
            elif args.compile:
                extra += f" {'failed':>13}"
            loop = ""
            if device.type == "cpu" and weights == (1.0, 1.0, 1.0, 1.0) and args.loop_boxes > 0:
                m = min(n, args.loop_boxes)
                passes = []
                for _ in range(3):
                    t0 = time.perf_counter()
                    for i in range(m):
                        paper_targets(pred[i], anchors[i], vis[i], truncated[i], CROP, beta)
                    passes.append((time.perf_counter() - t0) / m * n)
                t_loop = min(passes)
                row.update(per_box_ms=t_loop * 1e3)
                loop = f" {fmt(t_loop)} {t_loop / t_cabb:9.0f}x"
            rows.append(row)
            if args.json is not None:  # after every row: a run cut short keeps what it measured
                args.json.write_text(json.dumps(rows, indent=1) + "\n")
            print(
                f"{device.type:6} {n:7d} {fmt(t_sl1)} {fmt(t_std)} {fmt(t_cabb)} "
                f"{t_cabb / t_sl1:8.0f}x {t_cabb / t_std:8.1f}x{extra}{loop}",
                flush=True,
            )
    for line in notes:
        print(line)
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return rows


if __name__ == "__main__":
    main()
