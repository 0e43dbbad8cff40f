"""Cost of the index's reliability checks, against the work they guard (same run, warm page cache).

Prints
  (a) opening: Index.load with and without the full checksum; verify_dataset's identity and
      file-name check (no file touched), the sampled fingerprint check (OPEN_SAMPLE images) and a
      check of every image -- per image, and extrapolated to MVD training's 18,000 images;
  (b) unpickling an Index in a worker (header checksum + stat) against a full re-hash;
  (c) per sample: one image's fingerprint check (done once per image per worker) against one
      crop from the crop engine;
  (d) the annotation cache: reading and checking an entry (blake2b of its tables, CRC-32 of the
      bands) against the read and decompression themselves.
Ratios only; nothing is asserted.

Usage: python bench/index_verify.py [--images 100] [--size 1600x1200] [--data DIR]
"""
from __future__ import annotations

import argparse
import pickle
import tempfile
import time
import zlib
from pathlib import Path


import isus
from _common import parse_size, synthetic_mvd
from isus.crop import CropEngine
from isus.index import Index, build_index
from isus.index.cache import CachedAnnotationSource, read_entry
from isus.index.fingerprint import OPEN_SAMPLE
from isus.types import CropSpec

MVD_IMAGES = 18000


def best(fn, repeat: int = 5) -> float:
    """Best of ``repeat`` timings of ``fn()`` in seconds."""
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return min(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--size", default="1600x1200")
    ap.add_argument("--data", type=Path, default=None)
    args = ap.parse_args()
    w, h = parse_size(args.size)
    tmp = tempfile.TemporaryDirectory()
    root = synthetic_mvd(args.data or Path(tmp.name) / "mvd", args.images, (w, h))
    ds = isus.open_dataset("mvd", root)
    n = len(ds)
    path = Path(tmp.name) / "mvd.isusidx"
    build_index(ds, workers=2, cache_dir=Path(tmp.name) / "mvd.isusidx.cache").save(path)
    print(f"{n} images of {w}x{h}; index {path.stat().st_size / 1024:.0f} KiB\n")

    # (a) opening
    t_load = best(lambda: Index.load(path))
    t_load_nv = best(lambda: Index.load(path, verify=False))
    index = Index.load(path)
    index.verify_dataset(ds, images=[])  # unpack the name columns once (cached on the index)
    t_names = best(lambda: index.verify_dataset(ds, images=[]))
    t_sample = best(lambda: index.verify_dataset(ds, images="sample"))
    t_all = best(lambda: index.verify_dataset(ds, images="all"), 3)
    per_fp = (t_all - t_names) / n
    print(f"(a) Index.load, checksum verified      {1e3 * t_load:8.2f} ms   (verify=False: {1e3 * t_load_nv:.2f} ms)")
    print(f"    identity + file names, all images  {1e3 * t_names:8.2f} ms   = {1e6 * t_names / n:.1f} us/image"
          f"  -> {MVD_IMAGES} images: {t_names / n * MVD_IMAGES:.2f} s")
    print(f"    ... + fingerprints of {min(OPEN_SAMPLE, n)} (on open) {1e3 * t_sample:8.2f} ms   "
          f"= {t_sample / t_load:.2f}x Index.load")
    print(f"    fingerprints of every image        {1e3 * t_all:8.2f} ms   = {1e6 * per_fp:.1f} us/image"
          f"  -> {MVD_IMAGES} images: {per_fp * MVD_IMAGES:.2f} s (warm page cache)")

    # (b) unpickling in a worker
    blob = pickle.dumps(index)
    t_unpickle = best(lambda: pickle.loads(blob), 20)
    per_byte = (t_load - t_load_nv) / path.stat().st_size
    big = path.stat().st_size / n * MVD_IMAGES
    print(f"(b) unpickle (header + stat check)      {1e3 * t_unpickle:8.3f} ms   vs full re-hash {1e3 * t_load:.2f} ms"
          f"  -> {MVD_IMAGES} images: index {big / 2**20:.0f} MiB, re-hash {per_byte * big:.2f} s per worker")

    # (c) per sample
    engine = CropEngine(ds, index, verify=False)
    specs = [CropSpec(i % n, 0, -1, -1, 1.0, (100.0, 100.0, 612.0, 612.0), False) for i in range(min(n, 40))]
    engine(specs[0])
    t_crop = best(lambda: [engine(s) for s in specs], 3) / len(specs)
    t_fp = best(lambda: [index.verify_image(ds, s.image, names=False) for s in specs], 5) / len(specs)
    print(f"(c) crop 512x512 (crop engine)          {1e3 * t_crop:8.2f} ms   image fingerprint check {1e3 * t_fp:.3f} ms"
          f"  = {t_fp / t_crop:.1%} of a crop, paid once per image per worker")

    # (d) annotation cache
    k = n // 2
    p, digest = index.cache_path(k), index.annotation_digest(k)
    t_bytes = best(lambda: p.read_bytes(), 20)
    t_entry = best(lambda: read_entry(p, digest), 20)
    e = read_entry(p, digest)
    bands = [e.payload[e.band_offsets[b]:e.band_offsets[b + 1]] for b in range(len(e.band_runs))]
    t_crc = best(lambda: [zlib.crc32(b) for b in bands], 20)
    t_dec = best(lambda: [zlib.decompress(b) for b in bands], 20)
    t_win = best(lambda: CachedAnnotationSource(index).load(k, (100, 100, 612, 612)), 20)
    t_full = best(lambda: CachedAnnotationSource(index).load(k), 5)
    print(f"(d) cache entry ({p.stat().st_size / 1024:.0f} KiB): read {1e3 * t_bytes:.3f} ms, read + parse + table digest "
          f"{1e3 * t_entry:.3f} ms (+{1e3 * (t_entry - t_bytes):.3f} ms)")
    print(f"    CRC-32 of every band {1e3 * t_crc:.3f} ms vs decompressing them {1e3 * t_dec:.3f} ms "
          f"({t_crc / t_dec:.1%}); CachedAnnotationSource.load of a 512x512 window {1e3 * t_win:.2f} ms, whole image {1e3 * t_full:.2f} ms")


if __name__ == "__main__":
    main()
