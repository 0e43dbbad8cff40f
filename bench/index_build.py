"""Index build throughput on synthetic MVD-sized data, against baselines measured in the same run.

Prints
  (a) decode-only throughput: ``ds.load_panoptic`` for every image in one process (the floor:
      a build must decode each annotation once);
  (b) isus build throughput with 1 and 2 workers, without and with the annotation cache;
  (c) the per-image scan: isus's kernels vs a plain-numpy scan (np.unique + per-segment
      min/max/bincount) on the same decoded id maps;
and the index size per image, the cache size per image and the peak RSS of the build.

Usage: python bench/index_build.py [--images 20] [--size 4032x3024] [--data DIR]
(--data keeps the synthetic dataset between runs.)
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

import isus
from _common import parse_size, synthetic_mvd
from isus import kernels
from isus.index import build_index


def numpy_scan(ids: np.ndarray, grid: int, k: int):
    """The obvious numpy scan: per segment, a mask, its area, box, centroid, grid counts, anchors."""
    h, w = ids.shape
    out = []
    cell = (np.arange(h)[:, None] * grid // h) * grid + np.arange(w)[None, :] * grid // w
    for s in np.unique(ids):
        if s == 0:
            continue
        ys, xs = np.nonzero(ids == s)
        ranks = (2 * np.arange(k) + 1) * len(ys) // (2 * k)
        out.append((len(ys), xs.min(), ys.min(), xs.max() + 1, ys.max() + 1, xs.mean(), ys.mean(),
                    np.bincount(cell[ys, xs], minlength=grid * grid), xs[ranks], ys[ranks]))
    return out


def isus_scan(ids: np.ndarray, seg_ids: np.ndarray, grid: int, k: int):
    dense = kernels.dense_segments(ids, seg_ids)
    area, box, sums, cells = kernels.scan_dense(dense, len(seg_ids), grid)
    return area, box, sums, cells, kernels.anchor_points(dense, area, k)


def timed_build(open_args: dict, workers: int, cache_dir, save) -> tuple[float, float]:
    """Open the dataset, build its index; returns (images/s, peak RSS MiB of this process or a worker)."""
    args = dict(open_args)
    ds = isus.open_dataset(args.pop("name"), args.pop("root"), **args)
    t = time.perf_counter()
    index = build_index(ds, workers=workers, cache_dir=cache_dir)
    rate = len(ds) / (time.perf_counter() - t)
    if save is not None:
        index.save(save)
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return rate, max(self_kb, child_kb) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--size", default="4032x3024")
    ap.add_argument("--data", type=Path, default=None)
    args = ap.parse_args()
    w, h = parse_size(args.size)
    tmp = tempfile.TemporaryDirectory()
    root = synthetic_mvd(args.data or Path(tmp.name) / "mvd", args.images, (w, h))
    ds = isus.open_dataset("mvd", root)
    n, mpx = len(ds), w * h / 1e6
    print(f"{n} images of {w}x{h} ({mpx:.1f} Mpx), MVD v1.2 16-bit instance PNGs\n")

    results, rss = {}, {}
    with tempfile.TemporaryDirectory() as out:
        for workers in (1, 2):
            for cache in (False, True):
                cache_dir = Path(out) / f"cache{workers}" if cache else None
                save = Path(out) / "x.isusidx" if (workers, cache) == (1, True) else None
                # A fresh process per build: its timing and peak RSS are the build's alone (builds
                # run first: a child inherits the parent's peak RSS, so the parent stays small).
                with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as ex:
                    results[workers, cache], rss[workers, cache] = ex.submit(
                        timed_build, ds.open_args, workers, cache_dir, save).result()
                if save is not None:
                    size = save.stat().st_size
                    cache_bytes = sum(p.stat().st_size for p in cache_dir.iterdir())
    t = time.perf_counter()
    pans = [ds.load_panoptic(i) for i in range(min(n, 6))]
    for i in range(len(pans), n):
        ds.load_panoptic(i)
    decode = n / (time.perf_counter() - t)
    print(f"(a) decode only (load_panoptic, 1 process)   {decode:6.2f} img/s   {1e3 / decode / mpx:5.1f} ms/Mpx")

    isus_scan(pans[0].ids[:8, :8], pans[0].segments["id"], 16, 4)  # compile
    t_isus = t_np = 0.0
    for pan in pans:
        t = time.perf_counter()
        isus_scan(pan.ids, pan.segments["id"], 16, 4)
        t_isus += time.perf_counter() - t
        t = time.perf_counter()
        numpy_scan(pan.ids, 16, 4)
        t_np += time.perf_counter() - t
    print(f"(c) scan per image: isus kernels {1e3 * t_isus / len(pans):7.1f} ms   numpy {1e3 * t_np / len(pans):8.1f} ms"
          f"   -> kernels {t_np / t_isus:5.1f}x faster  (target >= 20x)")

    print()
    for (workers, cache), rate in results.items():
        print(f"(b) build, {workers} worker{'s' if workers > 1 else ' '}, cache {'on ' if cache else 'off'}       "
              f"{rate:6.2f} img/s   = {rate / decode:4.2f}x decode-only")
    print(f"    build/decode (1 worker, no cache):       {results[1, False] / decode:5.2f}x  (target >= 0.75x)")
    print(f"    2 workers / 1 worker (no cache):         {results[2, False] / results[1, False]:5.2f}x  (target >= 1.6x)")
    print(f"    cache overhead (1 worker):               {results[1, False] / results[1, True] - 1:+6.1%}  (target <= +20%)")
    print(f"\nindex size {size / n / 1024:.1f} KiB per image; annotation cache {cache_bytes / n / 1024:.0f} KiB per image "
          f"(16-bit instance PNGs: {sum(p.stat().st_size for p in (root / 'training/v1.2/instances').iterdir()) / n / 1024:.0f} KiB)")
    for (workers, cache), mib in rss.items():
        print(f"peak RSS of the build, {workers} worker(s), cache {'on' if cache else 'off'}: {mib:.0f} MiB "
              "(largest single process)")


if __name__ == "__main__":
    main()
