"""Crop images decoded from the image cache's tiles by nvjpeg (torchvision.io.decode_jpeg on the
GPU, one batched call per batch of crops) against the crop engine's CPU path (OpenCV, one thread).

Per sample, median over ISUS crops (MVD preset, 1024x1024) of an index built with
``--cache-images``: (a) ``CropEngine`` image step on the CPU: the window's tiles decoded by
OpenCV, resampled by the separable bilinear kernel; (b) the same tiles (``CachedImageSource.tiles``:
located and CRC-checked on the CPU) decoded by ``torchvision.io.decode_jpeg(device=DEVICE)`` for a
whole batch at once, pasted and resampled with the same taps on DEVICE; the time includes the
tile lookup, the transfer of the encoded bytes and a synchronisation. Prints the ratio CPU / DEVICE
and the PSNR of the DEVICE crops against the CPU ones (the decoders' IDCTs differ slightly).

``--device cpu`` runs path (b) with torchvision's CPU decoder: it checks the code, measures nothing
about GPUs. Without torchvision the script says so and exits 0.

Usage: python bench/tile_decode_gpu.py [--device cuda] [--data MVD_ROOT | --size 4032x3024 --images 6]
                                       [--samples 64] [--batch 16] [--json OUT.json]
"""
from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np

import isus
from _common import parse_size, synthetic_mvd
from isus import kernels
from isus.crop import CropEngine
from isus.crop.functional import choose_reduce, crop_size, warp_plan
from isus.index.image_cache import CachedImageSource


def plan(spec, cw: int, ch: int):
    """The crop engine's level, window and taps for ``spec`` (``isus.crop.functional.warp_plan``)."""
    r = choose_reduce(spec.scale)
    m, win = warp_plan(spec, cw, ch, r)
    return r, win, (m[0, 0], m[0, 2]), (m[1, 1], m[1, 2])


def device_batch(torch, decode_jpeg, source: CachedImageSource, specs, device: str, pad: int) -> list:
    """RGB crops (3, H, W) uint8 on ``device`` for ``specs``, decoded and resampled there."""
    wins, blobs = [], []
    for spec in specs:
        cw, ch = crop_size(spec)
        r, win, tx, ty = plan(spec, cw, ch)
        tw = source.tiles(spec.image, r, win)
        wins.append((cw, ch, win, tx, ty, tw, len(blobs)))
        blobs += [torch.from_numpy(np.array(b)) for b in tw.blobs]
    images = decode_jpeg(blobs, device=device) if blobs else []
    out = []
    for cw, ch, win, (ax, bx), (ay, by), tw, first in wins:
        h, w = tw.shape[:2]
        # a 1-pixel border of pad value: taps outside the window's pixels read it
        buf = torch.full((3, h + 2, w + 2), float(pad), device=device)
        for k in range(len(tw.blobs)):
            y, x = tw.y[k] + 1, tw.x[k] + 1
            buf[:, y:y + tw.h[k], x:x + tw.w[k]] = images[first + k].float()
        xa, ya = max(win[0], tw.ox), max(win[1], tw.oy)  # the engine's origin: the window clipped to the image
        xi, xw = kernels.bilinear_taps(bx - xa, ax, cw)
        yi, yw = kernels.bilinear_taps(by - ya, ay, ch)
        # positions in buf: + the window's offset in the tile buffer, + the border
        # (clipped into the border, so taps beyond it read the pad value too)
        xi, yi = xi + (xa - tw.ox) + 1, yi + (ya - tw.oy) + 1
        x0, x1 = (torch.from_numpy(np.clip(xi + d, 0, w + 1)).to(device) for d in (0, 1))
        y0, y1 = (torch.from_numpy(np.clip(yi + d, 0, h + 1)).to(device) for d in (0, 1))
        xw = torch.from_numpy(xw.astype(np.float32) / 2048).to(device)
        yw = torch.from_numpy(yw.astype(np.float32) / 2048).to(device)
        rows = buf[:, y0] * (1 - yw)[None, :, None] + buf[:, y1] * yw[None, :, None]
        img = rows[:, :, x0] * (1 - xw) + rows[:, :, x1] * xw
        out.append(img.round_().clamp_(0, 255).to(torch.uint8))
    return out


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255 ** 2 / mse)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--data", type=Path, default=None, help="an MVD root (default: synthetic, --size/--images)")
    ap.add_argument("--size", default="4032x3024")
    ap.add_argument("--images", type=int, default=6)
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2, help="index build processes")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    try:
        import torch
        from torchvision.io import decode_jpeg
    except ImportError as e:
        print(f"torchvision is not installed ({e}): skipped; pip install -e '.[examples]'")
        return
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device: skipped (--device cpu runs the code path on the CPU)")
        return
    tmp = tempfile.TemporaryDirectory()
    root = args.data or synthetic_mvd(Path(tmp.name) / "mvd", args.images, parse_size(args.size))
    ds = isus.open_dataset("mvd", root)
    t = time.perf_counter()
    index = isus.build_index(ds, workers=args.workers, cache_dir=Path(tmp.name) / "cache", image_cache=True)
    build_s = time.perf_counter() - t
    cfg = isus.SamplerConfig.preset("mvd")
    draws = isus.SamplingPolicy(index, cfg).draw(np.random.default_rng(0), args.samples)
    specs = [draws.spec(k) for k in range(args.samples)]
    engine = CropEngine(ds, index)
    pad = engine.config.pad_value
    engine._image(specs[0], crop_size(specs[0]))  # warm-up: JIT, entry parsing
    source = CachedImageSource(index)
    device_batch(torch, decode_jpeg, source, specs[:2], args.device, pad)

    def sync() -> None:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    cpu_t, dev_t, quality = [], [], []
    for b0 in range(0, len(specs), args.batch):
        batch = specs[b0:b0 + args.batch]
        t = time.perf_counter()
        ref = [engine._image(s, crop_size(s)) for s in batch]
        cpu_t.append((time.perf_counter() - t) / len(batch))
        sync()
        t = time.perf_counter()
        got = device_batch(torch, decode_jpeg, source, batch, args.device, pad)
        sync()
        dev_t.append((time.perf_counter() - t) / len(batch))
        quality += [psnr(g.permute(1, 2, 0).cpu().numpy(), r) for g, r in zip(got, ref)]
    info = ds.image_info(0)
    res = {"device": args.device, "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
           "images": len(ds), "size": f"{info.width}x{info.height}", "samples": len(specs), "batch": args.batch,
           "cache_build_s": round(build_s, 2), "cpu_ms_per_sample": 1e3 * float(np.median(cpu_t)),
           "device_ms_per_sample": 1e3 * float(np.median(dev_t)),
           "cpu_over_device": float(np.median(np.array(cpu_t) / np.array(dev_t))),
           "psnr_min_db": min(quality), "psnr_median_db": float(np.median(quality))}
    print(f"{len(ds)} images {res['size']}, {len(specs)} ISUS crops (MVD preset), batches of {args.batch}; image step "
          f"per sample (medians over batches):")
    print(f"  CPU, OpenCV tiles + bilinear kernel, 1 thread   {res['cpu_ms_per_sample']:7.2f} ms")
    print(f"  {args.device}, decode_jpeg batched + resample     {res['device_ms_per_sample']:7.2f} ms"
          + (f"  ({res['gpu']})" if res["gpu"] else ""))
    print(f"  CPU / {args.device}: {res['cpu_over_device']:.2f}x; PSNR of the {args.device} crops against the CPU's: "
          f"min {res['psnr_min_db']:.1f} dB, median {res['psnr_median_db']:.1f} dB")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
