"""Per-sample time of one training crop: isus vs resize-then-crop vs NVIDIA DALI's CPU ROI decode.

Per sample, single thread, median over ISUS crops (MVD preset, 1024x1024), on synthetic MVD-like
data of several sizes and on the real MVD samples (instance maps derived from their semantic
labels):

(a) resize-then-crop: decode the full JPEG and the full 16-bit instance PNG, resize the image
    (bilinear / area) and the id map (nearest) by the crop's scale, then cut the crop, then the
    crop's masks/boxes;
(b) DALI, image only: ``fn.decoders.image_crop`` (CPU backend, ROI JPEG decode) of the spec's
    window, then ``fn.resize`` to the crop size. The window is clipped to the image and rounded
    out to whole pixels (DALI crops whole pixels and does not pad), the output is the clipped
    window's size at the spec's scale, no flip. Reading the JPEG's bytes from disk is included,
    pipeline build is not. No annotation, no targets: a lower bound for a DALI loader;
(c) isus without caches (CropEngine(use_cache=False): whole JPEG decode at the crop's level,
    full annotation PNG decode);
(d) isus with the index's caches (image tiles, annotation rows), and its time split into image
    (tile decode + warp), annotation (sampled rows) and targets (the rest: semantic, masks, boxes).
Ratios: "DALI image-only / isus whole sample" (goal >= 1.0 at 12 Mpx and on the real samples),
"resize-then-crop / isus with caches" (goal >= 10x at 12 Mpx), and the largest size's per-sample
time over the smallest's (goal <= 1.3). Also the cache build's time over one plain decode pass
of the images, and the cache's bytes per image over the source JPEG's. DALI is optional
(``pip install -e .[bench]``); without it (b) is skipped.

Usage: python bench/crop.py [--sizes 2000x1500,4032x3024,5376x4032] [--images 6] [--samples 40]
                            [--data DIR] [--no-real] [--memory] [--quick]
"""
from __future__ import annotations

import argparse
import math
import tempfile
import time
import tracemalloc
from pathlib import Path

import cv2
import numpy as np

import isus
from _common import synthetic_mvd
from isus import kernels
from isus.crop import CropConfig, CropEngine
from isus.crop.functional import crop_size

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



class DaliCrop:
    """One CPU-only DALI pipeline: encoded JPEG + window in, RGB crop resized to the output size out."""

    def __init__(self) -> None:
        from nvidia.dali import fn, pipeline_def, types

        @pipeline_def(batch_size=1, num_threads=1, device_id=None, prefetch_queue_depth=1,
                      exec_async=False, exec_pipelined=False)
        def pipe():
            jpeg = fn.external_source(name="jpeg", dtype=types.UINT8, ndim=1)
            arg = {k: fn.external_source(name=k, dtype=types.FLOAT, ndim=0)
                   for k in ("crop_pos_x", "crop_pos_y", "crop_w", "crop_h", "resize_x", "resize_y")}
            img = fn.decoders.image_crop(jpeg, device="cpu", output_type=types.RGB, crop_pos_x=arg["crop_pos_x"],
                                         crop_pos_y=arg["crop_pos_y"], crop_w=arg["crop_w"], crop_h=arg["crop_h"])
            return fn.resize(img, resize_x=arg["resize_x"], resize_y=arg["resize_y"])

        self.pipe = pipe()
        self.pipe.build()

    @staticmethod
    def window(spec, w: int, h: int):
        """Spec window clipped to the image, rounded out to whole pixels, and its output size."""
        x0, y0, x1, y1 = spec.window
        xa, ya = max(0, math.floor(x0)), max(0, math.floor(y0))
        xb, yb = min(w, math.ceil(x1)), min(h, math.ceil(y1))
        s = spec.scale
        ow = max(1, round((min(x1, w) - max(x0, 0)) * s))
        oh = max(1, round((min(y1, h) - max(y0, 0)) * s))
        clipped = x0 < 0 or y0 < 0 or x1 > w or y1 > h
        return (xa, ya, xb, yb), (ow, oh), clipped

    def __call__(self, data: np.ndarray, w: int, h: int, box, out) -> np.ndarray:
        xa, ya, xb, yb = box
        cw, ch = xb - xa, yb - ya
        # DALI's anchor is crop_pos * (W - crop_w): normalised over the free range, not over W.
        feed = {"jpeg": data, "crop_pos_x": xa / (w - cw) if w > cw else 0.0, "crop_pos_y": ya / (h - ch) if h > ch else 0.0,
                "crop_w": cw, "crop_h": ch, "resize_x": out[0], "resize_y": out[1]}
        for k, v in feed.items():
            self.pipe.feed_input(k, [v if k == "jpeg" else np.float32(v)])
        (res,) = self.pipe.run()
        return np.asarray(res[0])


def make_dali():
    try:
        return DaliCrop()
    except ImportError as e:
        print(f"(NVIDIA DALI not installed ({e}): the DALI column is skipped; pip install -e .[bench])")
        return None


def dali_sample(dali, ds, spec):
    info = ds.image_info(spec.image)
    data = np.fromfile(ds.image_path(spec.image), np.uint8)
    box, out, _ = DaliCrop.window(spec, info.width, info.height)
    return dali(data, info.width, info.height, box, out)


def dali_sanity(dali, ds, spec) -> str:
    """Mean |DALI - OpenCV reference (full decode, cut, resize)| on one window, and with the reference shifted 1 px."""
    info = ds.image_info(spec.image)
    box, out, _ = DaliCrop.window(spec, info.width, info.height)
    got = dali_sample(dali, ds, spec).astype(np.int16)
    full = cv2.cvtColor(cv2.imread(str(ds.image_path(spec.image)), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    xa, ya, xb, yb = box

    def ref(d):
        a, b = max(0, min(xa + d, info.width - (xb - xa))), max(0, min(ya + d, info.height - (yb - ya)))
        cut = full[b:b + yb - ya, a:a + xb - xa]
        interp = cv2.INTER_AREA if out[0] < xb - xa else cv2.INTER_LINEAR
        return np.abs(got - cv2.resize(cut, out, interpolation=interp).astype(np.int16)).mean()

    return (f"window {box} -> {out[0]}x{out[1]}: mean |DALI - OpenCV| = {ref(0):.2f} "
            f"(reference shifted by 1 px: {ref(1):.2f}; 0-255 scale)")


class SplitTimer:
    """Wraps an engine's image and annotation steps to time them; targets = total - both."""

    def __init__(self, engine: CropEngine) -> None:
        self.engine, self.t = engine, {"image": 0.0, "annotation": 0.0}
        for attr, key in (("_image", "image"), ("_panoptic", "annotation")):
            setattr(engine, attr, self._wrap(getattr(engine, attr), key))

    def _wrap(self, f, key):
        def g(*a, **k):
            t = time.perf_counter()
            r = f(*a, **k)
            self.t[key] += time.perf_counter() - t
            return r
        return g

    def __call__(self, specs):
        rows = []
        for spec in specs:
            self.t.update(image=0.0, annotation=0.0)
            t = time.perf_counter()
            self.engine(spec)
            total = time.perf_counter() - t
            rows.append((total, self.t["image"], self.t["annotation"], total - self.t["image"] - self.t["annotation"]))
        return np.array(rows)


def run(name: str, ds, index, n: int, dali, memory: bool) -> dict:
    cfg = isus.SamplerConfig.preset("mvd")
    specs = [isus.SamplingPolicy(index, cfg).draw(np.random.default_rng(0), n).spec(k) for k in range(n)]
    cached = CropEngine(ds, index)
    nocache = CropEngine(ds, index, CropConfig(use_cache=False))
    split_timer = SplitTimer(cached)
    cached(specs[0]), nocache(specs[0]), baseline(ds, specs[0])  # warm up (JIT, caches)
    if dali is not None:
        dali_sample(dali, ds, specs[0])
    # Interleaved, spec by spec: a drift in the shared machine's speed hits every column alike,
    # and the per-spec ratios pair the same window.
    t_base, t_dali, t_nocache, split = [], [], [], []
    dali_cpu = dali_wall = 0.0
    for spec in specs:
        t_base.append(timed(lambda s: baseline(ds, s), [spec])[0][0])
        if dali is not None:
            cpu = time.process_time()
            t = timed(lambda s: dali_sample(dali, ds, s), [spec])[0][0]
            dali_cpu += time.process_time() - cpu
            dali_wall += t
            t_dali.append(t)
        t_nocache.append(timed(nocache, [spec])[0][0])
        split.append(split_timer([spec])[0])
    t_base, t_nocache, split = np.array(t_base), np.array(t_nocache), np.array(split)
    t_dali = np.array(t_dali) if dali is not None else None
    med = {k: float(np.median(v)) for k, v in (("base", t_base), ("nocache", t_nocache))}
    med["isus"] = float(np.median(split[:, 0]))
    med["ratio_base"] = float(np.median(t_base / split[:, 0]))
    if t_dali is not None:
        med["dali"] = float(np.median(t_dali))
        med["ratio_dali"] = float(np.median(t_dali / split[:, 0]))
        dali_cpu /= dali_wall
    sig = np.array([s.scale for s in specs])
    n_clip = sum(DaliCrop.window(s, ds.image_info(s.image).width, ds.image_info(s.image).height)[2] for s in specs)
    def ms(x):
        return f"{1e3 * x:7.1f} ms"

    print(f"\n{name}: {n} ISUS crops of 1024x1024 (scale median {np.median(sig):.2f}, range {sig.min():.2f}-{sig.max():.2f}; "
          f"{n_clip} windows extend past the image)")
    print("  per sample, median, 1 thread")
    print(f"    resize-then-crop (full decode, resize, cut; all targets)   {ms(med['base'])}")
    if t_dali is not None:
        print(f"    DALI CPU ROI decode + resize, image only (clipped window) {ms(med['dali'])}")
    else:
        print("    DALI CPU ROI decode + resize                               skipped (DALI not installed)")
    print(f"    isus, no caches (full annotation decode)                   {ms(med['nocache'])}")
    print(f"    isus, image + annotation caches                            {ms(med['isus'])}")
    sm = np.median(split, axis=0)
    print(f"      split (medians): image {1e3 * sm[1]:.1f} ms, annotation {1e3 * sm[2]:.1f} ms, targets {1e3 * sm[3]:.1f} ms")
    if t_dali is not None:
        print(f"  DALI image-only / isus whole sample: {med['ratio_dali']:.2f} with caches (median of per-window ratios; "
              f"{med['dali'] / med['isus']:.2f} of medians), {med['dali'] / med['nocache']:.2f} without (goal >= 1.0)")
        print(f"  DALI image-only / isus image step alone: {med['dali'] / sm[1]:.2f}")
        print(f"  DALI process CPU time / wall time: {dali_cpu:.2f} (1.0 = single-threaded)")
        print(f"  DALI sanity: {dali_sanity(dali, ds, specs[0])}")
    print(f"  resize-then-crop / isus with caches: {med['ratio_base']:.1f}x (median of per-window ratios; "
          f"{med['base'] / med['isus']:.1f}x of medians; goal >= 10x at 12 Mpx)")
    if memory:
        _, m_base = timed(lambda s: baseline(ds, s), specs[:8], memory=True)
        _, m_isus = timed(cached, specs[:8], memory=True)
        print(f"  peak memory     resize-then-crop {m_base / 2**20:6.0f} MiB  isus {m_isus / 2**20:5.0f} MiB  "
              f"-> {m_base / max(m_isus, 1):4.1f}x less")
    return med


def build_with_caches(ds, cache_dir: Path):
    """The index with both caches, and what the caches cost: build time over one plain decode
    pass of the images (1 process each), cache bytes per image over the source JPEG's."""
    t = time.perf_counter()
    for i in range(len(ds)):
        ds.load_image(i)
    t_decode = time.perf_counter() - t
    t = time.perf_counter()
    isus.build_index(ds, workers=1, cache_dir=cache_dir.with_name(cache_dir.name + "-ann"))
    t_plain = time.perf_counter() - t
    t = time.perf_counter()
    index = isus.build_index(ds, workers=1, cache_dir=cache_dir, image_cache=True)
    t_cached = time.perf_counter() - t
    jpeg = sum(ds.image_path(i).stat().st_size for i in range(len(ds)))
    print(f"  cache build: index + caches {t_cached:.1f} s, index + annotation cache {t_plain:.1f} s, one decode pass "
          f"{t_decode:.1f} s -> image cache costs {(t_cached - t_plain) / t_decode:.1f} decode passes; image cache "
          f"{index.info.image_cache_bytes / jpeg:.2f}x the JPEGs' bytes, annotation cache "
          f"{index.info.cache_bytes / len(ds) / 1e3:.0f} kB per image")
    return index


def parse_sizes(text: str) -> list[tuple[int, int]]:
    return [tuple(int(v) for v in s.lower().split("x")) for s in text.split(",") if s]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="2000x1500,4032x3024,5376x4032",
                    help="synthetic image sizes WxH, comma-separated (about 3, 12 and 22 Mpx by default)")
    ap.add_argument("--images", type=int, default=6, help="synthetic images per size")
    ap.add_argument("--samples", type=int, default=40)
    ap.add_argument("--data", type=Path, default=None, help="a synthetic MVD dataset to use instead of --sizes")
    ap.add_argument("--no-real", action="store_true", help="skip the real MVD samples")
    ap.add_argument("--memory", action="store_true", help="also print tracemalloc peaks")
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 images of 800x600, 6 samples")
    args = ap.parse_args()
    if args.quick:
        args.sizes, args.images, args.samples = "800x600", 2, 6
    tmp = tempfile.TemporaryDirectory()
    dali = make_dali()
    roots = []
    if args.data is not None:
        roots.append(args.data)
    else:
        for w, h in parse_sizes(args.sizes):
            roots.append(synthetic_mvd(Path(tmp.name) / f"mvd_{w}x{h}", args.images, (w, h)))
    per_size = []
    for k, root in enumerate(roots):
        ds = isus.open_dataset("mvd", root)
        index = build_with_caches(ds, Path(tmp.name) / f"cache{k}")
        info = ds.image_info(0)
        med = run(f"synthetic MVD ({len(ds)} images {info.width}x{info.height} = {info.width * info.height / 1e6:.1f} Mpx, "
                  f"JPEG + 16-bit PNG)", ds, index, args.samples, dali, args.memory)
        per_size.append((info.width * info.height / 1e6, med["isus"]))
    if len(per_size) > 1:
        (mp0, t0), (mp1, t1) = min(per_size), max(per_size)
        print(f"\nper sample with caches, {mp1:.0f} Mpx / {mp0:.0f} Mpx: {t1 / t0:.2f} (goal <= 1.3)")
    sample = REALDATA / "deeposlandia" / "tests" / "data" / "mapillary" / "sample"
    cfg = REALDATA / "mseg-api" / "tests" / "test_data" / "mapillary-vistas-dataset_public_v1.1_config.json"
    if args.no_real:
        return
    if sample.exists():
        real = isus.synth.mvd_from_semantic(sample / "labels", sample / "images", cfg, Path(tmp.name) / "real")
        rds = isus.open_dataset("mvd", real)
        rindex = build_with_caches(rds, Path(tmp.name) / "rcache")
        sizes = ", ".join(f"{rds.image_info(i).width}x{rds.image_info(i).height}" for i in range(len(rds)))
        run(f"real MVD samples ({sizes}; instances from semantic labels)", rds, rindex, args.samples, dali, args.memory)
    else:
        print(f"\n(real MVD samples not found at {sample}: skipped)")


if __name__ == "__main__":
    main()
