"""Per-sample time of one training crop: isus (crop-then-resize) vs the usual resize-then-crop.

(a) baseline: decode the full JPEG and the full 16-bit instance PNG, resize the image (bilinear
    / area) and the id map (nearest) by the crop's scale, then cut the crop;
(b) isus: CropEngine with the index's annotation cache (reduced JPEG decode, only the window
    resampled, only the cached bands of the window decoded).
Both produce the image, the panoptic map and the instances' masks/boxes. ISUS σ distribution,
1024x1024 crops, on synthetic MVD-sized data and on the real MVD samples (instance maps derived
from their semantic labels). Peak memory: tracemalloc peak of the numpy/OpenCV allocations per
sample (Python-visible), largest over the samples.

Usage: python bench/crop.py [--images 12] [--samples 40] [--data DIR]
"""
from __future__ import annotations

import argparse
import tempfile
import time
import tracemalloc
from pathlib import Path

import cv2
import numpy as np

import isus
from isus import kernels
from isus.crop import CropEngine
from isus.crop.engine import crop_size

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata" / "mapillary_vistas"


def baseline(ds, spec):
    s = spec.scale
    img = cv2.cvtColor(cv2.imread(str(ds.image_path(spec.image)), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    pan = ds.load_panoptic(spec.image)
    img_r = cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_LINEAR if s >= 1 else cv2.INTER_AREA)
    ids_r = cv2.resize(pan.ids, None, fx=s, fy=s, interpolation=cv2.INTER_NEAREST_EXACT)
    cw, ch = crop_size(spec)
    ox, oy = int(round(spec.window[0] * s)), int(round(spec.window[1] * s))
    out_img = np.zeros((ch, cw, 3), np.uint8)
    out_ids = np.zeros((ch, cw), np.int32)
    xa, ya = max(ox, 0), max(oy, 0)
    xb, yb = min(ox + cw, img_r.shape[1]), min(oy + ch, img_r.shape[0])
    if xb > xa and yb > ya:
        out_img[ya - oy:yb - oy, xa - ox:xb - ox] = img_r[ya:yb, xa:xb]
        out_ids[ya - oy:yb - oy, xa - ox:xb - ox] = ids_r[ya:yb, xa:xb]
    dense = kernels.dense_segments(out_ids, pan.segments["id"])
    area, boxes, _, _ = kernels.scan_dense(dense, len(pan.segments), 1)
    masks = dense[None] == (np.flatnonzero(area) + 1)[:, None, None].astype(np.uint16)
    return out_img, out_ids, masks, boxes


def timed(fn, specs, memory: bool = False):
    times, peaks = [], []
    for spec in specs:
        if memory:
            tracemalloc.start()
        t = time.perf_counter()
        fn(spec)
        times.append(time.perf_counter() - t)
        if memory:
            peaks.append(tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()
    return np.array(times), (max(peaks) if peaks else 0)


def run(name: str, ds, index, n: int) -> None:
    cfg = isus.SamplerConfig.preset("mvd")
    specs = [isus.SamplingPolicy(index, cfg).draw(np.random.default_rng(0), n).spec(k) for k in range(n)]
    engine = CropEngine(ds, index)
    engine(specs[0]), baseline(ds, specs[0])  # warm up (JIT, caches)
    t_base, _ = timed(lambda s: baseline(ds, s), specs)
    t_isus, _ = timed(engine, specs)
    _, m_base = timed(lambda s: baseline(ds, s), specs[:8], memory=True)
    _, m_isus = timed(engine, specs[:8], memory=True)
    sig = np.array([s.scale for s in specs])
    print(f"\n{name}: {n} ISUS crops of 1024x1024 (scale median {np.median(sig):.2f}, range {sig.min():.2f}-{sig.max():.2f})")
    print(f"  per sample      resize-then-crop {1e3 * t_base.mean():8.1f} ms   isus {1e3 * t_isus.mean():7.1f} ms   "
          f"-> {t_base.mean() / t_isus.mean():4.1f}x faster (target >= 3x, stretch 4x)")
    print(f"  median          resize-then-crop {1e3 * np.median(t_base):8.1f} ms   isus {1e3 * np.median(t_isus):7.1f} ms")
    print(f"  peak memory     resize-then-crop {m_base / 2**20:8.0f} MiB  isus {m_isus / 2**20:7.0f} MiB  "
          f"-> {m_base / max(m_isus, 1):4.1f}x less")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=12)
    ap.add_argument("--samples", type=int, default=40)
    ap.add_argument("--data", type=Path, default=None)
    args = ap.parse_args()
    tmp = tempfile.TemporaryDirectory()
    root = args.data or Path(tmp.name) / "mvd"
    if not (root / isus.synth.MANIFEST).exists():
        print(f"writing {args.images} synthetic MVD images of 4032x3024 to {root} ...", flush=True)
        isus.synth.write_dataset(root, "mvd", args.images, size=(4032, 3024))
    ds = isus.open_dataset("mvd", root)
    index = isus.build_index(ds, workers=2, cache_dir=Path(tmp.name) / "cache")
    run(f"synthetic MVD ({len(ds)} images 4032x3024, JPEG + 16-bit PNG)", ds, index, args.samples)
    sample = REALDATA / "deeposlandia" / "tests" / "data" / "mapillary" / "sample"
    cfg = REALDATA / "mseg-api" / "tests" / "test_data" / "mapillary-vistas-dataset_public_v1.1_config.json"
    if sample.exists():
        real = isus.synth.mvd_from_semantic(sample / "labels", sample / "images", cfg, Path(tmp.name) / "real")
        rds = isus.open_dataset("mvd", real)
        rindex = isus.build_index(rds, workers=1, cache_dir=Path(tmp.name) / "rcache")
        sizes = ", ".join(f"{rds.image_info(i).width}x{rds.image_info(i).height}" for i in range(len(rds)))
        run(f"real MVD samples ({sizes}; instances from semantic labels)", rds, rindex, args.samples)
    else:
        print(f"\n(real MVD samples not found at {sample}: skipped)")


if __name__ == "__main__":
    main()
