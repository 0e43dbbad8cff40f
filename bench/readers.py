"""Reader hot paths, each as a ratio against a baseline measured in the same run.

1. ``load_image(reduce=r)`` (libjpeg DCT scaling) vs decoding in full and resizing with OpenCV.
2. ``load_panoptic`` on MVD 16-bit instance PNGs (one bincount + a lookup table) vs PIL plus
   the obvious np.unique-based decode (PNG decode time included in both).

Usage: python bench/readers.py [--size 4032x3024] [--images 4]
"""
from __future__ import annotations

import argparse
import tempfile
import time

import cv2
import numpy as np
from PIL import Image

import isus
from isus.types import make_segments


def best_of(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def naive_decode(values: np.ndarray, void_label: int, crowd_of_label: np.ndarray):
    uniq, inverse = np.unique(values, return_inverse=True)
    seg = np.where(uniq // 256 == void_label, 0, uniq.astype(np.int64) + 1)
    ids = seg[inverse].reshape(values.shape).astype(np.int32)
    keep = seg != 0
    return ids, make_segments(seg[keep], uniq[keep] // 256, crowd_of_label[uniq[keep] // 256])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="4032x3024")
    ap.add_argument("--images", type=int, default=4)
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        root = isus.synth.write_dataset(f"{tmp}/mvd", "mvd", args.images, size=(w, h))
        ds = isus.open_dataset("mvd", root)
        mpx = w * h / 1e6
        print(f"{args.images} synthetic MVD images of {w}x{h} ({mpx:.1f} Mpx)\n")
        print("image decode at 1/r            isus ms   full+resize ms   speed-up")
        for r in (2, 4, 8):
            isus_t = np.mean([best_of(lambda: ds.load_image(i, reduce=r)) for i in range(len(ds))])

            def baseline(i=0):
                img = cv2.imdecode(np.fromfile(ds.image_path(i), np.uint8), cv2.IMREAD_COLOR)
                img = cv2.resize(img, (-(-w // r), -(-h // r)), interpolation=cv2.INTER_AREA)
                return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)

            base_t = np.mean([best_of(lambda i=i: baseline(i)) for i in range(len(ds))])
            print(f"  r={r}                        {1e3 * isus_t:8.1f}   {1e3 * base_t:14.1f}   {base_t / isus_t:7.2f}x")
        full = np.mean([best_of(lambda i=i: ds.load_image(i)) for i in range(len(ds))])
        print(f"  r=1 (full decode)            {1e3 * full:8.1f}   ({1e3 * full / mpx:.1f} ms/Mpx)")

        print("\n16-bit instance PNG -> Panoptic  isus ms   PIL+np.unique ms  speed-up")
        crowd = np.zeros(256, dtype=bool)
        for c in ds.categories:
            crowd[c.id] = not c.evaluate

        def baseline_pan(i):
            key = ds.image_info(i).image_id
            values = np.asarray(Image.open(root / "training" / "v1.2" / "instances" / f"{key}.png"))
            return naive_decode(values, ds.void_label, crowd)

        tot_i = tot_n = 0.0
        for i in range(len(ds)):
            pan, (ids, seg) = ds.load_panoptic(i), baseline_pan(i)
            if not (np.array_equal(ids, pan.ids) and np.array_equal(seg, pan.segments)):
                raise SystemExit("isus and the baseline disagree: the benchmark would be meaningless")
            tot_i += best_of(lambda i=i: ds.load_panoptic(i))
            tot_n += best_of(lambda i=i: baseline_pan(i))
        print(f"  per image (PNG decode incl.) {1e3 * tot_i / len(ds):8.1f}   {1e3 * tot_n / len(ds):15.1f}   "
              f"{tot_n / tot_i:7.2f}x")
        print(f"  isus per Mpx: {1e3 * tot_i / len(ds) / mpx:.1f} ms")


if __name__ == "__main__":
    main()
