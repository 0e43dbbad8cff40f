"""Per-sample time of one training crop: isus against the strongest ROI-decode + resize peer, per
scale regime, and against resize-then-crop.

Per sample, single thread, on ISUS crops (MVD preset, 1024x1024) of synthetic MVD-like data of
several sizes and of the real MVD samples (instance maps derived from their semantic labels). The
windows are drawn by ISUS and kept per scale regime of the crop's scale s (original pixels -> crop
pixels, s = s0 * sigma; ``--regime-by sigma`` for sigma alone): s < 0.5, 0.5-1, 1-2, > 2, up to
``--per-regime`` windows each (the regimes ISUS draws less often are filled from more draws).
Every column is measured window by window, interleaved, so a drift in the shared machine's speed
hits them alike, and the ratios are medians of per-window ratios.

The peers (image only: no annotation, no targets, so each is a lower bound for a loader built on
it; the window is clipped to the image and rounded out to whole pixels, the output is the clipped
window at the spec's scale, no flip; reading the JPEG's bytes from disk is included, pipeline
build is not):

(A) DALI+DALI: ``fn.decoders.image_crop`` (CPU backend: libjpeg-turbo ROI decode, only the
    window's rows and columns), then DALI's ``fn.resize``, in one pipeline (batch 1, 1 thread);
(B) DALI+cv2: the same ROI decode, then ``cv2.resize`` (INTER_LINEAR enlarging, INTER_AREA
    shrinking; ``cv2.setNumThreads(1)``);
(C) sjpeg+cv2: a plain libjpeg-turbo decode of the whole JPEG at the smallest of its DCT scales
    M/8 that keeps at least the crop's resolution (simplejpeg, which bundles libjpeg-turbo; it has
    no ROI decode), then cut and ``cv2.resize`` as (B).
    PyTurboJPEG is not a peer here: it needs the system's libturbojpeg (>= 3.0 for PyTurboJPEG 2;
    Debian 13 ships 2.1.5), and its "crop" is a lossless transform that entropy-decodes and
    re-encodes the JPEG before the decode, not an ROI decode.
The peer of a window is the fastest of those installed, per window ("peer" below).

isus: the default engine on an index built with ``--cache-images`` (JPEG tiles 256 px, q95,
4:4:4), split into image (the window's tiles decoded at the crop's level, then resampled),
annotation (the sampled rows of the cached map, and since the fused sampler the id, semantic and
crowd maps written in the same pass) and targets (everything else: masks, boxes, original boxes,
truncation); and, where ``CropConfig.compact_targets`` exists, the same
sample with compact targets (the maps the model can rebuild on its device not built).

With ``--raw`` (default on): the sample (dense and compact) again on an index whose image cache holds raw
tiles (``ImageCacheParams(codec="raw")``: lossless, uncompressed, reading a tile is a copy; about
4 bytes per source pixel on disk), and the peer a user with the same disk budget could assemble,
"raw+cv2" (image only): the same pyramid levels stored as uncompressed RGB ``.npy`` files,
memory-mapped, the level picked as isus picks it, the window cut and ``cv2.resize``d as (B). It
is reported beside the JPEG peers, not among them: it reads the decoded pixels from disk where
they decode the JPEG.

At the baseline sizes (``--baseline``, default the 12 Mpx one) also: resize-then-crop (decode the
full JPEG and 16-bit PNG, resize both by the crop's scale, cut, then masks/boxes) and isus without
caches (``CropEngine(use_cache=False)``: whole JPEG decoded at the crop's level, whole annotation).

Goals (issue 25): peer image-only / isus whole sample >= 1.0 in every regime and size;
resize-then-crop / isus >= 10x at 12 Mpx; isus per sample at 22 Mpx within 1.3x of 3 Mpx.

Times are process CPU time by default (``--clock cpu``: what the work costs, not what other
processes on a shared machine take from it; every column is single-threaded, the DALI line checks
DALI's) or wall time (``--clock wall``); the other clock's ratios are printed too.

Usage: python bench/crop.py [--sizes 2000x1500,4032x3024,5376x4032] [--images 6] [--per-regime 16]
                            [--data-dir DIR] [--no-real] [--no-raw] [--memory] [--quick] [--clock cpu|wall]
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

import isus
from _common import synthetic_mvd
from isus import kernels
from isus.crop import CropConfig, CropEngine
from isus.crop.functional import choose_reduce, crop_size
from isus.index.image_cache import ImageCacheParams

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata" / "mapillary_vistas"
REGIMES = ((0.0, 0.5, "< 0.5"), (0.5, 1.0, "0.5-1"), (1.0, 2.0, "1-2"), (2.0, math.inf, "> 2"))
PEERS = ("DALI+DALI", "DALI+cv2", "sjpeg+cv2")


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


class Clock:
    """Process CPU time or wall time, and both around one call."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    @staticmethod
    def both() -> tuple[float, float]:
        return time.process_time(), time.perf_counter()

    def __call__(self) -> float:
        return time.process_time() if self.kind == "cpu" else time.perf_counter()

    def time(self, fn: Callable[[], object]) -> tuple[float, float]:
        """(cpu, wall) seconds of one call."""
        c, w = self.both()
        fn()
        c1, w1 = self.both()
        return c1 - c, w1 - w


def clipped_window(spec, w: int, h: int):
    """Spec window clipped to the image, rounded out to whole pixels, and its output size."""
    x0, y0, x1, y1 = spec.window
    xa, ya = max(0, math.floor(x0)), max(0, math.floor(y0))
    xb, yb = min(w, math.ceil(x1)), min(h, math.ceil(y1))
    s = spec.scale
    ow = max(1, round((min(x1, w) - max(x0, 0)) * s))
    oh = max(1, round((min(y1, h) - max(y0, 0)) * s))
    clipped = x0 < 0 or y0 < 0 or x1 > w or y1 > h
    return (max(0, min(xa, w - 1)), max(0, min(ya, h - 1)), max(xb, xa + 1), max(yb, ya + 1)), (ow, oh), clipped


def cv2_resize(img: np.ndarray, out: tuple[int, int]) -> np.ndarray:
    """INTER_AREA shrinking, INTER_LINEAR enlarging (what a user picks for quality)."""
    interp = cv2.INTER_AREA if out[0] < img.shape[1] else cv2.INTER_LINEAR
    return cv2.resize(img, out, interpolation=interp)


class RawPyramid:
    """The raw-storage peer: each image's levels 1/1..1/8 (the decodes isus's cache holds) as
    uncompressed RGB ``.npy``, memory-mapped; a window is a cut at the crop's level, resized."""

    def __init__(self, ds, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.levels = {}
        for i in range(len(ds)):
            for r in (1, 2, 4, 8):
                path = folder / f"{i}-{r}.npy"
                if not path.exists():
                    np.save(path, ds.load_image(i, r))
                self.levels[i, r] = np.load(path, mmap_mode="r")

    def __call__(self, spec) -> np.ndarray:
        r = choose_reduce(spec.scale)
        img = self.levels[spec.image, r]
        # the spec in the level's pixels, clipped as the JPEG peers clip theirs
        level = dataclasses.replace(spec, window=tuple(v / r for v in spec.window), scale=spec.scale * r)
        (xa, ya, xb, yb), out, _ = clipped_window(level, img.shape[1], img.shape[0])
        return cv2_resize(np.ascontiguousarray(img[ya:yb, xa:xb]), out)


class DaliPeers:
    """Two CPU-only DALI pipelines: encoded JPEG + window in, (A) the ROI decode resized by DALI,
    (B) the ROI decode alone (resized by OpenCV outside)."""

    def __init__(self) -> None:
        from nvidia.dali import fn, pipeline_def, types

        def build(resize: bool):
            @pipeline_def(batch_size=1, num_threads=1, device_id=None, prefetch_queue_depth=1,
                          exec_async=False, exec_pipelined=False)
            def pipe():
                jpeg = fn.external_source(name="jpeg", dtype=types.UINT8, ndim=1)
                names = ("crop_pos_x", "crop_pos_y", "crop_w", "crop_h") + (("resize_x", "resize_y") if resize else ())
                arg = {k: fn.external_source(name=k, dtype=types.FLOAT, ndim=0) for k in names}
                img = fn.decoders.image_crop(jpeg, device="cpu", output_type=types.RGB, crop_pos_x=arg["crop_pos_x"],
                                             crop_pos_y=arg["crop_pos_y"], crop_w=arg["crop_w"], crop_h=arg["crop_h"])
                return fn.resize(img, resize_x=arg["resize_x"], resize_y=arg["resize_y"]) if resize else img

            p = pipe()
            p.build()
            return p

        self.resize_pipe, self.roi_pipe = build(True), build(False)

    @staticmethod
    def _run(pipe, data: np.ndarray, w: int, h: int, box, out=None) -> np.ndarray:
        xa, ya, xb, yb = box
        cw, ch = xb - xa, yb - ya
        # DALI's anchor is crop_pos * (W - crop_w): normalised over the free range, not over W.
        feed = {"jpeg": data, "crop_pos_x": xa / (w - cw) if w > cw else 0.0, "crop_pos_y": ya / (h - ch) if h > ch else 0.0,
                "crop_w": cw, "crop_h": ch}
        if out is not None:
            feed.update(resize_x=out[0], resize_y=out[1])
        for k, v in feed.items():
            pipe.feed_input(k, [v if k == "jpeg" else np.float32(v)])
        (res,) = pipe.run()
        return np.asarray(res[0])

    def dali_dali(self, data, w, h, box, out) -> np.ndarray:
        return self._run(self.resize_pipe, data, w, h, box, out)

    def dali_cv2(self, data, w, h, box, out) -> np.ndarray:
        return cv2_resize(self._run(self.roi_pipe, data, w, h, box), out)


def sjpeg_cv2(sj, data, w, h, box, out, scale: float) -> np.ndarray:
    """Whole decode at the smallest DCT scale M/8 keeping the crop's resolution, cut, resize."""
    img = sj.decode_jpeg(data, colorspace="RGB", min_width=math.ceil(w * min(scale, 1.0)),
                         min_height=math.ceil(h * min(scale, 1.0)))
    fx, fy = img.shape[1] / w, img.shape[0] / h
    xa, ya, xb, yb = box
    a, b = int(math.floor(xa * fx)), int(math.floor(ya * fy))
    c, d = max(int(math.ceil(xb * fx)), a + 1), max(int(math.ceil(yb * fy)), b + 1)
    return cv2_resize(img[b:d, a:c], out)


def make_peers() -> tuple[dict[str, Callable], list[str]]:
    """The installed peers as ``name -> f(data, w, h, box, out, scale)``, and notes on the missing ones."""
    peers: dict[str, Callable] = {}
    notes = []
    try:
        dali = DaliPeers()
        peers["DALI+DALI"] = lambda data, w, h, box, out, s: dali.dali_dali(data, w, h, box, out)
        peers["DALI+cv2"] = lambda data, w, h, box, out, s: dali.dali_cv2(data, w, h, box, out)
    except ImportError as e:
        notes.append(f"NVIDIA DALI not installed ({e}): DALI+DALI and DALI+cv2 skipped; pip install -e .[bench]")
    try:
        import simplejpeg
        peers["sjpeg+cv2"] = lambda data, w, h, box, out, s: sjpeg_cv2(simplejpeg, data, w, h, box, out, s)
    except ImportError as e:
        notes.append(f"simplejpeg not installed ({e}): sjpeg+cv2 skipped; pip install -e .[bench]")
    return peers, notes


def peer_sanity(peers, ds, spec) -> list[str]:
    """Mean |peer - OpenCV reference (full decode, cut, resize)| on one window, and with the reference shifted 1 px."""
    info = ds.image_info(spec.image)
    box, out, _ = clipped_window(spec, info.width, info.height)
    full = cv2.cvtColor(cv2.imread(str(ds.image_path(spec.image)), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    data = np.fromfile(ds.image_path(spec.image), np.uint8)
    xa, ya, xb, yb = box

    def ref(got, d):
        a, b = max(0, min(xa + d, info.width - (xb - xa))), max(0, min(ya + d, info.height - (yb - ya)))
        return np.abs(got - cv2_resize(full[b:b + yb - ya, a:a + xb - xa], out).astype(np.int16)).mean()

    lines = []
    for name, f in peers.items():
        got = f(data, info.width, info.height, box, out, spec.scale).astype(np.int16)
        lines.append(f"{name}: window {box} -> {out[0]}x{out[1]}: mean |{name} - OpenCV| = {ref(got, 0):.2f} "
                     f"(reference shifted by 1 px: {ref(got, 1):.2f}; 0-255 scale)")
    return lines


class SplitTimer:
    """Wraps an engine's image and annotation steps to time them; targets = total - both."""

    def __init__(self, engine: CropEngine, clock: Clock) -> None:
        self.engine, self.clock, self.t = engine, clock, {"image": 0.0, "annotation": 0.0}
        for attr, key in (("_image", "image"), ("_sampled", "annotation")):
            setattr(engine, attr, self._wrap(getattr(engine, attr), key))

    def _wrap(self, f, key):
        def g(*a, **k):
            t = self.clock()
            r = f(*a, **k)
            self.t[key] += self.clock() - t
            return r
        return g

    def __call__(self, spec) -> tuple[tuple[float, float, float, float], float]:
        """((total, image, annotation, targets) on the bench's clock, total on the other clock)."""
        self.t.update(image=0.0, annotation=0.0)
        cpu, wall = self.clock.time(lambda: self.engine(spec))
        total = cpu if self.clock.kind == "cpu" else wall
        other = wall if self.clock.kind == "cpu" else cpu
        return (total, self.t["image"], self.t["annotation"], total - self.t["image"] - self.t["annotation"]), other


def regime_of(x: float) -> int:
    return next(k for k, (lo, hi, _) in enumerate(REGIMES) if lo <= x < hi)


def select_specs(index, per_regime: int, by: str, seed: int = 0, max_draws: int = 20000):
    """ISUS specs in draw order, at most ``per_regime`` in each scale regime (of the crop's scale,
    or of sigma alone); the regimes drawn less often are filled from up to ``max_draws`` draws."""
    cfg = isus.SamplerConfig.preset("mvd")
    batch = isus.SamplingPolicy(index, cfg).draw(np.random.default_rng(seed), max_draws)
    key = batch.scale if by == "scale" else batch.sigma
    reg = np.array([regime_of(float(v)) for v in key])
    chosen = np.sort(np.concatenate([np.flatnonzero(reg == k)[:per_regime] for k in range(len(REGIMES))]))
    return [batch.spec(int(k)) for k in chosen], reg[chosen]


def compact_config() -> CropConfig | None:
    names = {f.name for f in dataclasses.fields(CropConfig)}
    return CropConfig(compact_targets=True) if "compact_targets" in names else None


def run(name: str, ds, index, args, peers, clock: Clock, with_baseline: bool, raw_index=None, raw_peer=None) -> dict:
    specs, regimes = select_specs(index, args.per_regime, args.regime_by)
    cached = CropEngine(ds, index)
    split_timer = SplitTimer(cached, clock)
    ccfg = compact_config()
    compact = CropEngine(ds, index, ccfg) if ccfg is not None else None
    compact_raw = CropEngine(ds, raw_index, ccfg) if ccfg is not None and raw_index is not None else None
    dense_raw = CropEngine(ds, raw_index) if compact_raw is not None else None
    nocache = CropEngine(ds, index, CropConfig(use_cache=False)) if with_baseline else None
    jpeg = {i: np.fromfile(ds.image_path(i), np.uint8) for i in range(len(ds))}  # warm the page cache

    def peer_call(f, spec):
        info = ds.image_info(spec.image)
        data = np.fromfile(ds.image_path(spec.image), np.uint8)
        box, out, _ = clipped_window(spec, info.width, info.height)
        return f(data, info.width, info.height, box, out, spec.scale)

    # warm-up (JIT, caches, pipelines) on one window per regime
    for k in range(len(REGIMES)):
        for spec in [s for s, r in zip(specs, regimes) if r == k][:1]:
            cached(spec)
            if compact is not None:
                compact(spec)
            if compact_raw is not None:
                compact_raw(spec), dense_raw(spec), raw_peer(spec)
            for f in peers.values():
                peer_call(f, spec)
            if with_baseline:
                nocache(spec), baseline(ds, spec)
    del jpeg
    cols: dict[str, list[float]] = {k: [] for k in [*peers, "base", "nocache", "compact", "compact_raw", "dense_raw", "raw+cv2"]}
    other: dict[str, list[float]] = {k: [] for k in [*peers, "isus", "compact"]}
    split = []
    dali_cpu = dali_wall = 0.0
    pick = 0 if clock.kind == "cpu" else 1
    for spec in specs:
        if with_baseline:
            cols["base"].append(clock.time(lambda: baseline(ds, spec))[pick])
        for pname, f in peers.items():
            t = clock.time(lambda: peer_call(f, spec))
            cols[pname].append(t[pick])
            other[pname].append(t[1 - pick])
            if pname.startswith("DALI"):
                dali_cpu += t[0]
                dali_wall += t[1]
        if with_baseline:
            cols["nocache"].append(clock.time(lambda: nocache(spec))[pick])
        row, o = split_timer(spec)
        split.append(row)
        other["isus"].append(o)
        if compact is not None:
            t = clock.time(lambda: compact(spec))
            cols["compact"].append(t[pick])
            other["compact"].append(t[1 - pick])
        if compact_raw is not None:
            cols["compact_raw"].append(clock.time(lambda: compact_raw(spec))[pick])
            cols["dense_raw"].append(clock.time(lambda: dense_raw(spec))[pick])
            cols["raw+cv2"].append(clock.time(lambda: raw_peer(spec))[pick])
    split = np.array(split)
    arr = {k: np.array(v) for k, v in cols.items() if v}
    oth = {k: np.array(v) for k, v in other.items() if v}
    have = [p for p in PEERS if p in arr]
    n_clip = sum(clipped_window(s, ds.image_info(s.image).width, ds.image_info(s.image).height)[2] for s in specs)
    key = np.array([s.scale for s in specs])
    levels = np.array([choose_reduce(s.scale) for s in specs])
    print(f"\n{name}: {len(specs)} ISUS crops of 1024x1024 (up to {args.per_regime} per regime of the "
          f"{'crop scale s' if args.regime_by == 'scale' else 'ISUS sigma'}; crop scale median {np.median(key):.2f}, "
          f"range {key.min():.2f}-{key.max():.2f}; {n_clip} windows extend past the image)")
    print(f"  per sample, ms, medians over the windows ({'process CPU' if clock.kind == 'cpu' else 'wall'} time, 1 thread, "
          "columns interleaved window by window); peer = the fastest peer of each window; ratios = medians of per-window ratios")
    head = f"  {'s' if args.regime_by == 'scale' else 'sigma':5s}     n lvl | " + " ".join(f"{p:>9s}" for p in have) + " |  image  annot targets  whole"
    head += " | peer/whole peer/image" + (" | compact peer/compact" if "compact" in arr else "") + " | fastest peer"
    print(head)
    res = {"regimes": {}}
    best = np.min(np.stack([arr[p] for p in have]), axis=0) if have else None
    best_other = np.min(np.stack([oth[p] for p in have]), axis=0) if have else None
    rows = [(k, regimes == k) for k in range(len(REGIMES))] + [(None, np.ones(len(specs), bool))]
    for k, sel in rows:
        if not sel.any():
            print(f"  {REGIMES[k][2]:7s}   0  (no window drawn in this regime)")
            continue
        label = REGIMES[k][2] if k is not None else "all"
        md = np.median(split[sel], axis=0)
        line = f"  {label:7s} {sel.sum():3d} {int(np.median(levels[sel])):>3d} | "
        line += " ".join(f"{1e3 * np.median(arr[p][sel]):9.1f}" for p in have)
        line += f" | {1e3 * md[1]:6.1f} {1e3 * md[2]:6.1f} {1e3 * md[3]:6.1f} {1e3 * md[0]:6.1f}"
        entry = {"n": int(sel.sum()), "isus": float(md[0]), "image": float(md[1]), "annotation": float(md[2]),
                 "targets": float(md[3])}
        if best is not None:
            r_whole = best[sel] / split[sel, 0]
            r_image = best[sel] / split[sel, 1]
            entry.update(peer=float(np.median(best[sel])), ratio=float(np.median(r_whole)),
                         ratio_min=float(r_whole.min()), ratio_image=float(np.median(r_image)),
                         ratio_other_clock=float(np.median(best_other[sel] / oth["isus"][sel])))
            line += f" | {entry['ratio']:10.2f} {entry['ratio_image']:10.2f}"
            if "compact" in arr:
                entry["compact"] = float(np.median(arr["compact"][sel]))
                entry["ratio_compact"] = float(np.median(best[sel] / arr["compact"][sel]))
                line += f" | {1e3 * entry['compact']:7.1f} {entry['ratio_compact']:12.2f}"
            if "compact_raw" in arr:
                entry["compact_raw"] = float(np.median(arr["compact_raw"][sel]))
                entry["raw_peer"] = float(np.median(arr["raw+cv2"][sel]))
                entry["ratio_compact_raw"] = float(np.median(best[sel] / arr["compact_raw"][sel]))
                entry["dense_raw"] = float(np.median(arr["dense_raw"][sel]))
                entry["ratio_dense_raw"] = float(np.median(best[sel] / arr["dense_raw"][sel]))
                entry["ratio_raw_peer"] = float(np.median(arr["raw+cv2"][sel] / arr["compact_raw"][sel]))
            winners = np.argmin(np.stack([arr[p][sel] for p in have]), axis=0)
            line += " | " + ", ".join(f"{p} {int((winners == j).sum())}" for j, p in enumerate(have) if (winners == j).any())
        print(line)
        res["regimes"][label] = entry
    if "compact_raw" in arr:
        print("  raw tiles (ms; peer = the fastest JPEG peer; raw+cv2 = the raw-storage peer, image only):")
        print("  dense targets: " + "; ".join(f"{lab} isus {1e3 * e['dense_raw']:.1f}, peer/isus {e['ratio_dense_raw']:.2f}"
                                            for lab, e in res["regimes"].items() if "dense_raw" in e))
        print("  compact targets: " + "; ".join(f"{lab} isus {1e3 * e['compact_raw']:.1f}, peer/isus {e['ratio_compact_raw']:.2f}, "
                               f"raw+cv2 {1e3 * e['raw_peer']:.1f}, raw+cv2/isus {e['ratio_raw_peer']:.2f}"
                               for lab, e in res["regimes"].items() if "compact_raw" in e))
    if best is not None:
        print("  peer/whole per regime, spread over the windows (min / 25% / 75%): " + "; ".join(
            f"{REGIMES[k][2]} {np.min(best[sel] / split[sel, 0]):.2f} / {np.percentile(best[sel] / split[sel, 0], 25):.2f} / "
            f"{np.percentile(best[sel] / split[sel, 0], 75):.2f}" for k, sel in rows[:-1] if sel.any()))
        print(f"  the same ratio on {'wall' if clock.kind == 'cpu' else 'process CPU'} time: " + "; ".join(
            f"{lab} {e['ratio_other_clock']:.2f}" for lab, e in res["regimes"].items()))
    if dali_wall:
        print(f"  DALI process CPU time / wall time: {dali_cpu / dali_wall:.2f} (1.0 = single-threaded)")
    if peers:
        for line in peer_sanity(peers, ds, specs[0]):
            print(f"  sanity: {line}")
    if with_baseline:
        r_base = arr["base"] / split[:, 0]
        print(f"  resize-then-crop (full decode, resize, cut; all targets) {1e3 * np.median(arr['base']):7.1f} ms, "
              f"isus without caches {1e3 * np.median(arr['nocache']):7.1f} ms, isus with caches {1e3 * np.median(split[:, 0]):6.1f} ms "
              f"(all {len(specs)} windows)")
        print(f"  resize-then-crop / isus with caches: {np.median(r_base):.1f}x (median of per-window ratios; "
              f"{np.median(arr['base']) / np.median(split[:, 0]):.1f}x of medians; goal >= 10x at 12 Mpx)")
        res["ratio_base"] = float(np.median(r_base))
    if args.memory:
        _, m_base = timed_memory(lambda s: baseline(ds, s), specs[:8])
        _, m_isus = timed_memory(cached, specs[:8])
        print(f"  peak memory     resize-then-crop {m_base / 2**20:6.0f} MiB  isus {m_isus / 2**20:5.0f} MiB  "
              f"-> {m_base / max(m_isus, 1):4.1f}x less")
    res["split"], res["regime"] = split, regimes
    res["specs"], res["ds"], res["engines"] = specs, ds, {"default": cached, "compact, raw tiles": compact_raw}
    if "compact_raw" in arr:
        res["compact_raw_times"] = arr["compact_raw"]
    return res


def timed_memory(fn, specs):
    peaks = []
    for spec in specs:
        tracemalloc.start()
        fn(spec)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    return None, max(peaks)


def build_with_caches(ds, cache_dir: Path, raw: bool = False):
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
    if not raw:
        return index, None
    raw_index = isus.build_index(ds, workers=1, cache_dir=cache_dir.with_name(cache_dir.name + "-raw"),
                                 image_cache=ImageCacheParams(codec="raw"))
    print(f"  raw tiles: image cache {raw_index.info.image_cache_bytes / jpeg:.1f}x the JPEGs' bytes "
          f"({raw_index.info.image_cache_bytes / sum(ds.image_info(i).width * ds.image_info(i).height for i in range(len(ds))):.1f} "
          "bytes per source pixel)")
    return index, raw_index


def parse_sizes(text: str) -> list[tuple[int, int]]:
    return [tuple(int(v) for v in s.lower().split("x")) for s in text.split(",") if s]


def goals(per_size: list[tuple[str, float, dict]], real: dict | None) -> None:
    """The issue's goals, one line each."""
    print("\ngoals")
    rows = [(lab, res) for lab, _, res in per_size] + ([("real", real)] if real is not None else [])
    for lab, res in rows:
        ent = res["regimes"]
        if all("ratio" in e for e in ent.values()):
            worst = min((e["ratio"], k) for k, e in ent.items() if k != "all")
            print(f"  peer image-only / isus whole sample >= 1.0 in every regime, {lab}: " + ", ".join(
                f"{k} {e['ratio']:.2f}" for k, e in ent.items() if k != "all") +
                f" -> {'met' if worst[0] >= 1.0 else f'not met (worst {worst[1]}: {worst[0]:.2f})'}")
    for key, what in (("ratio_compact", "compact targets"), ("ratio_dense_raw", "raw tiles"),
                      ("ratio_compact_raw", "compact targets on raw tiles")):
        for lab, res in rows:
            ent = {k: e for k, e in res["regimes"].items() if k != "all" and key in e}
            if ent:
                worst = min((e[key], k) for k, e in ent.items())
                print(f"  the same with {what}, {lab}: " + ", ".join(f"{k} {e[key]:.2f}" for k, e in ent.items()) +
                      f" -> {'met' if worst[0] >= 1.0 else f'not met (worst {worst[1]}: {worst[0]:.2f})'}")
    for lab, res in rows:
        ent = {k: e for k, e in res["regimes"].items() if k != "all" and "ratio_raw_peer" in e}
        if ent:
            print(f"  raw-storage peer (raw+cv2, image only) / isus compact on raw tiles, {lab}: " +
                  ", ".join(f"{k} {e['ratio_raw_peer']:.2f}" for k, e in ent.items()))
    for lab, _, res in per_size:
        if "ratio_base" in res:
            print(f"  resize-then-crop / isus >= 10x at {lab}: {res['ratio_base']:.1f}x -> "
                  f"{'met' if res['ratio_base'] >= 10 else 'not met'}")
    if len(per_size) > 1:
        (lab0, _, r0), (lab1, _, r1) = min(per_size, key=lambda t: t[1]), max(per_size, key=lambda t: t[1])
        per = []
        for k, (_, _, name) in enumerate(REGIMES):
            a, b = r0["split"][r0["regime"] == k, 0], r1["split"][r1["regime"] == k, 0]
            if len(a) and len(b):
                per.append(f"{name} {np.median(b) / np.median(a):.2f}")
        tot = np.median(r1["split"][:, 0]) / np.median(r0["split"][:, 0])
        print(f"  isus per sample, {lab1} / {lab0} <= 1.3: {tot:.2f} over all windows "
              f"({'met' if tot <= 1.3 else 'not met'}); per regime: " + ", ".join(per))
        if "compact_raw_times" in r0 and "compact_raw_times" in r1:
            a, b = r0["compact_raw_times"], r1["compact_raw_times"]
            tot = np.median(b) / np.median(a)
            per = [f"{name} {np.median(b[r1['regime'] == k]) / np.median(a[r0['regime'] == k]):.2f}"
                   for k, (_, _, name) in enumerate(REGIMES) if (r0["regime"] == k).any() and (r1["regime"] == k).any()]
            print(f"  the same with compact targets on raw tiles: {tot:.2f} over all windows "
                  f"({'met' if tot <= 1.3 else 'not met'}); per regime: " + ", ".join(per))


def matched_geometry(small, large, clock: Clock) -> None:
    """isus per sample on the largest images over the smallest, crop by crop with the same geometry:
    each of the small set's ISUS windows placed at the same relative position in a large image, at
    the same scale and size (so the same level and the same pixels read). ISUS's own windows differ
    between the sizes (the preset's s0 and the clamp of sigma put other crops in a regime), which
    the per-regime ratio above mixes with the loader's cost; this one is the loader's alone."""
    (lab0, _, r0), (lab1, _, r1) = small, large
    ds0, ds1 = r0["ds"], r1["ds"]
    pairs = []
    for k, spec in enumerate(r0["specs"]):
        a, b = ds0.image_info(spec.image), ds1.image_info(k % len(ds1))
        x0, y0, x1, y1 = spec.window
        fx, fy = x0 / a.width * b.width, y0 / a.height * b.height
        pairs.append((spec, dataclasses.replace(spec, image=k % len(ds1), window=(fx, fy, fx + x1 - x0, fy + y1 - y0))))
    print(f"\nthe same windows on both sizes ({len(pairs)} of the {lab0} set's ISUS windows placed at the same relative "
          f"position in the {lab1} images, same scale and size): isus per sample {lab1} / {lab0}, medians of per-window ratios")
    for name in r0["engines"]:
        e0, e1 = r0["engines"][name], r1["engines"].get(name)
        if e0 is None or e1 is None:
            continue
        for spec, other in pairs[:4]:
            e0(spec), e1(other)
        ratios = []
        for spec, other in pairs:
            t0 = clock.time(lambda: e0(spec))[0 if clock.kind == "cpu" else 1]
            t1 = clock.time(lambda: e1(other))[0 if clock.kind == "cpu" else 1]
            ratios.append(t1 / t0)
        ratios = np.array(ratios)
        reg = r0["regime"]
        print(f"  {name}: {np.median(ratios):.2f} over all windows ({'met' if np.median(ratios) <= 1.3 else 'not met'}: "
              "goal <= 1.3); per regime: " + ", ".join(f"{REGIMES[k][2]} {np.median(ratios[reg == k]):.2f}"
                                                     for k in range(len(REGIMES)) if (reg == k).any()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="2000x1500,4032x3024,5376x4032",
                    help="synthetic image sizes WxH, comma-separated (about 3, 12 and 22 Mpx by default)")
    ap.add_argument("--images", type=int, default=6, help="synthetic images per size")
    ap.add_argument("--per-regime", type=int, default=16, help="windows per scale regime and data set")
    ap.add_argument("--regime-by", choices=("scale", "sigma"), default="scale",
                    help="regimes of the crop's scale s (default) or of ISUS's sigma alone (s = s0 * sigma)")
    ap.add_argument("--baseline", default="4032x3024",
                    help="sizes (WxH, comma-separated, or 'all') that also time resize-then-crop and isus without caches")
    ap.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    ap.add_argument("--data", type=Path, default=None, help="a synthetic MVD dataset to use instead of --sizes")
    ap.add_argument("--data-dir", type=Path, default=None,
                    help="keep the synthetic data sets here (written once, reused by later runs)")
    ap.add_argument("--no-real", action="store_true", help="skip the real MVD samples")
    ap.add_argument("--raw", action=argparse.BooleanOptionalAction, default=True,
                    help="also time compact targets on a raw-tile image cache, and the raw-storage peer")
    ap.add_argument("--memory", action="store_true", help="also print tracemalloc peaks")
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 images of 800x600, 2 windows per regime")
    args = ap.parse_args()
    if args.quick:
        args.sizes, args.images, args.per_regime, args.baseline = "800x600", 2, 2, "800x600"
    cv2.setNumThreads(1)
    clock = Clock(args.clock)
    tmp = tempfile.TemporaryDirectory()
    data_dir = args.data_dir or Path(tmp.name)
    peers, notes = make_peers()
    for note in notes:
        print(f"({note})")
    roots = []
    if args.data is not None:
        roots.append(args.data)
    else:
        for w, h in parse_sizes(args.sizes):
            roots.append(synthetic_mvd(data_dir / f"mvd_{w}x{h}", args.images, (w, h)))
    base_sizes = None if args.baseline == "all" else set(parse_sizes(args.baseline))
    per_size = []
    for k, root in enumerate(roots):
        ds = isus.open_dataset("mvd", root)
        index, raw_index = build_with_caches(ds, Path(tmp.name) / f"cache{k}", args.raw)
        raw_peer = RawPyramid(ds, Path(tmp.name) / f"rawpeer{k}") if args.raw else None
        info = ds.image_info(0)
        mp = info.width * info.height / 1e6
        res = run(f"synthetic MVD ({len(ds)} images {info.width}x{info.height} = {mp:.1f} Mpx, JPEG + 16-bit PNG)",
                  ds, index, args, peers, clock, base_sizes is None or (info.width, info.height) in base_sizes,
                  raw_index, raw_peer)
        per_size.append((f"{mp:.0f} Mpx", mp, res))
    real = None
    sample = REALDATA / "deeposlandia" / "tests" / "data" / "mapillary" / "sample"
    cfg = REALDATA / "mseg-api" / "tests" / "test_data" / "mapillary-vistas-dataset_public_v1.1_config.json"
    if args.no_real:
        pass
    elif sample.exists():
        rroot = isus.synth.mvd_from_semantic(sample / "labels", sample / "images", cfg, Path(tmp.name) / "real")
        rds = isus.open_dataset("mvd", rroot)
        rindex, rraw = build_with_caches(rds, Path(tmp.name) / "rcache", args.raw)
        rpeer = RawPyramid(rds, Path(tmp.name) / "rawpeer-real") if args.raw else None
        sizes = ", ".join(f"{rds.image_info(i).width}x{rds.image_info(i).height}" for i in range(len(rds)))
        real = run(f"real MVD samples ({sizes}; instances from semantic labels)", rds, rindex, args, peers, clock,
                   base_sizes is None, rraw, rpeer)
    else:
        print(f"\n(real MVD samples not found at {sample}: skipped)")
    goals(per_size, real)
    if len(per_size) > 1:
        matched_geometry(min(per_size, key=lambda t: t[1]), max(per_size, key=lambda t: t[1]), clock)


if __name__ == "__main__":
    main()
