"""Panoptic evaluation (PQ/SQ/RQ) of isus against panopticapi, on the same images in the same run.

Data: a synthetic COCO-panoptic dataset (``isus.synth.write_dataset(..., "coco", ...)``) and a
prediction set in the COCO panoptic format (RGB PNGs + one JSON with ``segments_info``) derived
from the ground truth by deterministic perturbations: thing masks shifted by a few pixels, some
things dropped, a few segments relabelled, crowd regions predicted as separate instances, the
stuff layer shifted, predictions spilling over void ground truth, hallucinated segments.

Timed, single process, every image of the set (decode of both PNGs included in both):
  (a) panopticapi: ``pq_compute_single_core`` over the (gt, pred) pairs, then ``pq_average``
      for All / Things / Stuff;
  (b) isus, as ``isus eval`` does it: ``ds.load_panoptic(i)`` (the COCO reader) and, in a second
      thread of the same process at the same time, the prediction PNG + JSON by
      ``isus.eval.io.PanopticPredictions.load`` (``isus.eval.run.load_pair``; PNG decode, RGB -> id,
      id checks), then ``PanopticEvaluator.add``; ``result()`` at the end. Both PNGs go through
      ``isus.datasets.io.read_panoptic_png``: imagecodecs' libpng decoder for plain 8-bit RGB PNGs
      (all of them here), OpenCV's for the rest;
  (b0) the same with OpenCV decoding every PNG (``decode_plain_rgb8_png`` patched to decline), as
      isus read them before 2026-12-06, so that the change is measured in the same run.
The three run in turn, in a rotating order, ``--repeats`` times; the ratios are taken per round
(panopticapi's time over isus's in the same round) and given as the median and the range.
and, with the PNGs decoded beforehand (untimed), each method's computation alone:
  (a') panopticapi with ``Image.open`` patched to hand back the pre-decoded RGB arrays (its
      uint32 conversion and rgb2id stay in);
  (b') ``PanopticEvaluator.add`` on the pre-loaded ground truth and prediction.
Both must give the same PQ/SQ/RQ (All/Things/Stuff, to 1e-9) and the same per-category TP/FP/FN;
the script exits with status 1 otherwise (a correctness check; timings are never asserted).

PNG decoders alone: each image's ground-truth and prediction PNG (bytes in memory) decoded by PIL
(as panopticapi does), OpenCV (``IMREAD_COLOR``) and the fast path (``decode_plain_rgb8_png``), one
after the other, best of ``--repeats``; the fast path must give OpenCV's pixels (exit status 1
otherwise).

Peak memory per image: the growth of the resident-set high-water mark (VmHWM, reset through
/proc/self/clear_refs) while one image is evaluated, each method and image in a fresh process
after its imports and JIT warm-up on a tiny input, with glibc's mmap threshold fixed at 128 KiB
(so buffers freed earlier cannot be reused unseen). It counts every allocation (numpy, PIL's
decode buffers, numba), unlike tracemalloc.

Usage: python bench/eval.py [--images 24] [--size 4032x3024] [--repeats 3] [--data DIR] [--quick]
                            [--mem-images 2] [--seed 0]
(--data keeps the synthetic data between runs; --quick: 4 images of 1024x768.)
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

import isus
from isus import kernels
from isus.datasets import io as isus_io
from isus.datasets.io import id_to_rgb
from isus.eval import PanopticEvaluator
from isus.eval.io import PanopticPredictions
from isus.eval.run import load_pair
from isus.types import make_segments

PRED_NAME = "panoptic_pred"
PRED_MANIFEST = "bench_eval_pred.json"
PRED_VERSION = 1  # bump when the perturbations change, so cached predictions are rewritten


# -- data ------------------------------------------------------------------------------------
def _paint(dst: np.ndarray, mask: np.ndarray, x0: int, y0: int, value: int) -> None:
    """``dst[y0:, x0:][mask] = value``, with the mask clipped to the image."""
    h, w = dst.shape
    mh, mw = mask.shape
    tx0, ty0, tx1, ty1 = max(x0, 0), max(y0, 0), min(x0 + mw, w), min(y0 + mh, h)
    if tx1 <= tx0 or ty1 <= ty0:
        return
    sub = mask[ty0 - y0:ty1 - y0, tx0 - x0:tx1 - x0]
    dst[ty0:ty1, tx0:tx1][sub] = value


def _shifted(a: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``a`` moved by (dy, dx); the uncovered border is 0."""
    h, w = a.shape
    out = np.zeros_like(a)
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = a[max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
    return out


def perturb(gt: isus.Panoptic, categories, rng: np.random.Generator) -> tuple[np.ndarray, list[dict]]:
    """A plausible prediction for ``gt``: ``(ids (H, W) int32, segments_info)``."""
    h, w = gt.ids.shape
    seg = gt.segments
    g_n = len(seg)
    dense = kernels.dense_segments(gt.ids, np.ascontiguousarray(seg["id"])).astype(np.int32)
    area, box, _, _ = kernels.scan_dense(dense.astype(np.uint16), g_n, 1)
    thing_cat = {c.id: c.isthing for c in categories}
    things = [c.id for c in categories if c.isthing]
    stuffs = [c.id for c in categories if not c.isthing]
    isthing = np.array([False] + [thing_cat[int(c)] for c in seg["category_id"]])
    cat = [0] + [int(c) for c in seg["category_id"]]  # per prediction label; 0 = void
    scale = max(w, h) / 4032

    # stuff: the ground truth's stuff layer moved by a few pixels; where the ground truth is void,
    # whatever stuff lies a bit higher up (predictions cover void; it must not count against them)
    stuff = np.where(isthing[dense] | (dense == 0), 0, dense)
    d = np.round(rng.uniform(-4, 4, 2) * scale).astype(int)
    pred = _shifted(stuff, int(d[0]), int(d[1]))
    above = _shifted(stuff, max(1, int(0.05 * h)), 0)
    void = dense == 0
    pred[void] = above[void]
    # things, largest first (small ones stay on top): shifted, some dropped
    for k in np.argsort(-area, kind="stable"):
        if not isthing[k + 1] or area[k] == 0:
            continue
        x0, y0, x1, y1 = (int(v) for v in box[k])
        mask = dense[y0:y1, x0:x1] == k + 1
        if seg["iscrowd"][k]:
            # a crowd region comes back as 2-3 separate instances of its category
            edges = np.linspace(0, x1 - x0, int(rng.integers(2, 4)) + 1).astype(int)
            for a, b in zip(edges[:-1], edges[1:]):
                part = np.zeros_like(mask)
                part[:, a:b] = mask[:, a:b]
                cat.append(cat[k + 1])
                _paint(pred, part, x0, y0, len(cat) - 1)
            continue
        if rng.random() < 0.1:
            continue  # missed
        d = np.round(rng.normal(0, 0.04 * np.sqrt(area[k]) + 1, 2)).astype(int)
        _paint(pred, mask, x0 + int(d[1]), y0 + int(d[0]), k + 1)
    # a few relabelled segments (same kind, other category)
    for k in range(1, g_n + 1):
        if rng.random() < 0.05:
            pool = [c for c in (things if isthing[k] else stuffs) if c != cat[k]]
            if pool:
                cat[k] = int(rng.choice(pool))
    # hallucinated things
    for _ in range(int(rng.integers(1, 4))):
        rx = rng.uniform(0.005, 0.03) * w
        ry = rx * rng.uniform(0.6, 1.6)
        cx, cy = rng.uniform(0, w), rng.uniform(0.3 * h, h)
        x0, y0 = int(cx - rx), int(cy - ry)
        yy, xx = np.mgrid[y0:int(cy + ry) + 1, x0:int(cx + rx) + 1]
        cat.append(int(rng.choice(things)))
        _paint(pred, ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1, x0, y0, len(cat) - 1)

    n = len(cat) - 1
    lab = pred.astype(np.uint16)
    p_area, p_box, _, _ = kernels.scan_dense(lab, n, 1)
    present = np.flatnonzero(p_area) + 1
    lut = np.zeros(n + 1, dtype=np.int32)
    lut[present] = rng.choice((1 << 24) - 1, size=len(present), replace=False) + 1  # COCO-like RGB ids
    info = []
    for k in present:
        x0, y0, x1, y1 = (int(v) for v in p_box[k - 1])
        info.append({"id": int(lut[k]), "category_id": cat[k], "iscrowd": 0, "area": int(p_area[k - 1]),
                     "bbox": [x0, y0, x1 - x0, y1 - y0]})
    return lut[lab], sorted(info, key=lambda s: s["id"])


def prepare(root: Path, n: int, w: int, h: int, seed: int) -> tuple[Path, Path]:
    """Write (or reuse) the ground truth under ``root/gt`` and the predictions under ``root/pred``."""
    gt_root, pred_root = root / "gt", root / "pred"
    want = {"num_images": n, "width": w, "height": h, "seed": seed}
    man = isus.synth.read_manifest(gt_root)
    if man is None:
        print(f"writing {n} synthetic COCO-panoptic images of {w}x{h} to {gt_root} ...", flush=True)
        isus.synth.write_dataset(gt_root, "coco", n, size=(w, h), seed=seed)
    elif {k: man.get(k) for k in want} != want:
        raise SystemExit(f"{gt_root} holds a synthetic dataset with {({k: man.get(k) for k in want})}, not {want}; "
                         "choose another --data")
    want = {**want, "version": PRED_VERSION}
    pm = pred_root / PRED_MANIFEST
    if pm.is_file() and json.loads(pm.read_text()) == want:
        return gt_root, pred_root
    print(f"writing the perturbed predictions to {pred_root} ...", flush=True)
    ds = isus.open_dataset("coco", gt_root)
    (pred_root / PRED_NAME).mkdir(parents=True, exist_ok=True)
    anns = []
    for i in range(len(ds)):
        info = ds.image_info(i)
        ids, segments = perturb(ds.load_panoptic(i), ds.categories, np.random.default_rng([seed, i, 7]))
        name = f"{info.image_id:012d}.png"
        Image.fromarray(id_to_rgb(ids)).save(pred_root / PRED_NAME / name)  # PIL's defaults, as panopticapi
        anns.append({"image_id": info.image_id, "file_name": name, "segments_info": segments})
    gt_json = json.loads((gt_root / "annotations" / "panoptic_train2017.json").read_text())
    (pred_root / f"{PRED_NAME}.json").write_text(json.dumps({"annotations": anns, "categories": gt_json["categories"]}))
    pm.write_text(json.dumps(want))
    return gt_root, pred_root


class Data:
    """The dataset, both JSONs and panopticapi's inputs."""

    def __init__(self, gt_root: Path, pred_root: Path) -> None:
        self.ds = isus.open_dataset("coco", gt_root)
        self.gt_folder = str(gt_root / "annotations" / "panoptic_train2017")
        self.pred_folder = str(pred_root / PRED_NAME)
        self.pred_json = pred_root / f"{PRED_NAME}.json"
        gt_json = json.loads((gt_root / "annotations" / "panoptic_train2017.json").read_text())
        pred = {a["image_id"]: a for a in json.loads(self.pred_json.read_text())["annotations"]}
        by_id = {a["image_id"]: a for a in gt_json["annotations"]}
        ids = [self.ds.image_info(i).image_id for i in range(len(self.ds))]
        self.pairs = [(by_id[k], pred[k]) for k in ids]
        self.categories = {c["id"]: c for c in gt_json["categories"]}
        self.preds = PanopticPredictions(self.pred_json)

    def load_pred(self, i: int) -> isus.Panoptic:
        """The prediction of image ``i``, read by isus's prediction reader (what ``isus eval`` runs)."""
        return self.preds.load(self.ds.image_info(i).image_id)


# -- the two evaluations -----------------------------------------------------------------------
def papi_run(data: Data, pairs=None):
    from panopticapi.evaluation import pq_compute_single_core

    with contextlib.redirect_stdout(io.StringIO()):  # it prints a progress line per 100 images
        stat = pq_compute_single_core(0, data.pairs if pairs is None else pairs, data.gt_folder, data.pred_folder,
                                      data.categories)
    return stat


def papi_result(stat, categories) -> dict:
    return {name: stat.pq_average(categories, isthing=th)[0] for name, th in (("All", None), ("Things", True),
                                                                             ("Stuff", False))}


@contextlib.contextmanager
def predecoded(arrays: dict[str, np.ndarray]):
    """Make panopticapi's ``Image.open(path)`` return the pre-decoded array of ``path``."""
    import panopticapi.evaluation as pe

    class _Image:
        @staticmethod
        def open(path):
            return arrays[path]

    saved, pe.Image = pe.Image, _Image
    try:
        yield
    finally:
        pe.Image = saved


@contextlib.contextmanager
def opencv_only():
    """Make isus decode every PNG with OpenCV, as before 2026-12-06 (the fast path declines)."""
    saved = isus_io.decode_plain_rgb8_png
    isus_io.decode_plain_rgb8_png = lambda data: None
    try:
        yield
    finally:
        isus_io.decode_plain_rgb8_png = saved


def decoders(data: Data, repeats: int) -> tuple[np.ndarray, bool]:
    """Seconds per PNG, ``[image, (GT, prediction), (PIL, OpenCV, fast path)]``, best of ``repeats``;
    and whether the fast path gave OpenCV's pixels for every PNG."""
    import cv2

    out = np.full((len(data.pairs), 2, 3), np.inf)
    exact = True
    for i, (gt_ann, pred_ann) in enumerate(data.pairs):
        for j, path in enumerate((Path(data.gt_folder, gt_ann["file_name"]), Path(data.pred_folder, pred_ann["file_name"]))):
            raw = path.read_bytes()
            fns = (lambda: np.asarray(Image.open(io.BytesIO(raw))),
                   lambda: cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR),
                   lambda: isus_io.decode_plain_rgb8_png(raw))
            for r in range(repeats):
                for k in np.roll(np.arange(3), r):
                    t0 = time.perf_counter()
                    fns[k]()
                    out[i, j, k] = min(out[i, j, k], time.perf_counter() - t0)
            fast = fns[2]()
            exact &= fast is not None and np.array_equal(fast, fns[1]()[..., ::-1])
    return out, bool(exact)


def papi_arrays(data: Data, i: int) -> dict[str, np.ndarray]:
    gt_ann, pred_ann = data.pairs[i]
    out = {}
    for folder, ann in ((data.gt_folder, gt_ann), (data.pred_folder, pred_ann)):
        path = os.path.join(folder, ann["file_name"])
        with Image.open(path) as im:
            out[path] = np.asarray(im)
    return out


def isus_run(data: Data, phases: np.ndarray | None = None):
    ev = PanopticEvaluator(data.ds.categories)
    for i in range(len(data.ds)):
        t0 = time.perf_counter()
        gt, pred = load_pair(data.ds, data.preds, i)  # as isus eval: both PNGs decoded concurrently
        t1 = time.perf_counter()
        ev.add(gt, pred)
        if phases is not None:
            phases += (t1 - t0, 0.0, time.perf_counter() - t1)
    return ev, ev.result()


def warm_up(data: Data) -> None:
    """Compile (or load) the numba kernels on a small crop and touch every file once."""
    gt, pred = data.ds.load_panoptic(0), data.load_pred(0)
    PanopticEvaluator(data.ds.categories).add(isus.Panoptic(np.ascontiguousarray(gt.ids[:64, :64]), gt.segments),
                                              isus.Panoptic(np.ascontiguousarray(pred.ids[:64, :64]), pred.segments))
    for gt_ann, pred_ann in data.pairs:
        Path(data.gt_folder, gt_ann["file_name"]).read_bytes()
        Path(data.pred_folder, pred_ann["file_name"]).read_bytes()
    papi_run(data, data.pairs[:1])


def compare(papi: dict, stat, ev: PanopticEvaluator, res) -> float:
    """Largest |difference| of PQ/SQ/RQ (All/Things/Stuff); inf if per-category counts differ."""
    diff = 0.0
    for name, suffix in (("All", ""), ("Things", "_th"), ("Stuff", "_st")):
        for m in ("pq", "sq", "rq"):
            diff = max(diff, abs(papi[name][m] - getattr(res, m + suffix)))
    s = ev.stats
    for k, c in enumerate(ev.categories):
        p = stat.pq_per_cat[c.id]
        if (p.tp, p.fp, p.fn) != (s.tp[k], s.fp[k], s.fn[k]):
            print(f"  category {c.id} ({c.name}): panopticapi tp/fp/fn {p.tp}/{p.fp}/{p.fn}, "
                  f"isus {s.tp[k]}/{s.fp[k]}/{s.fn[k]}")
            diff = float("inf")
        diff = max(diff, abs(p.iou - s.iou[k]) / max(p.tp, 1))
    return diff


# -- peak memory (one fresh process per method and image) --------------------------------------
def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def peak_child(gt_root: str, pred_root: str, mode: str, i: int) -> float:
    """MiB the resident-set high-water mark grows by while image ``i`` is evaluated by ``mode``."""
    import gc

    data = Data(Path(gt_root), Path(pred_root))
    # warm up on a tiny pair only: a full-size warm-up would leave freed buffers in the process
    gt_ann, pred_ann = data.pairs[i]
    ids = np.zeros((8, 8), np.int32)
    ids[4:] = 1
    tiny = isus.Panoptic(ids, make_segments([1], [data.ds.categories[0].id], [False]))
    PanopticEvaluator(data.ds.categories).add(tiny, tiny)
    import panopticapi.evaluation  # noqa: F401
    Image.open(Path(data.gt_folder, gt_ann["file_name"])).close()  # PIL's PNG plugin, no decode
    if mode == "isus":
        ev = PanopticEvaluator(data.ds.categories)
        run = lambda: ev.add(data.ds.load_panoptic(i), data.load_pred(i))  # noqa: E731
    elif mode == "isus-eval":
        ev = PanopticEvaluator(data.ds.categories)
        gt, pred = data.ds.load_panoptic(i), data.load_pred(i)
        run = lambda: ev.add(gt, pred)  # noqa: E731
    elif mode == "panopticapi":
        run = lambda: papi_run(data, data.pairs[i:i + 1])  # noqa: E731
    else:
        arrays = papi_arrays(data, i)

        def run():
            with predecoded(arrays):
                papi_run(data, data.pairs[i:i + 1])
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = _rss_kib("VmRSS")
    run()
    return (_rss_kib("VmHWM") - before) / 1024


def peak_memory(gt_root: Path, pred_root: Path, mode: str, images: list[int]) -> float:
    # glibc's malloc would otherwise keep freed buffers of the pre-loading for reuse (its mmap
    # threshold adapts upwards), which would hide part of the peak: fix the threshold so every
    # buffer >= 128 KiB is its own mapping, returned to the OS when freed
    saved = os.environ.get("MALLOC_MMAP_THRESHOLD_")
    os.environ["MALLOC_MMAP_THRESHOLD_"] = str(128 * 1024)
    out = []
    try:
        for i in images:
            with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as ex:
                out.append(ex.submit(peak_child, str(gt_root), str(pred_root), mode, i).result())
    finally:
        if saved is None:
            del os.environ["MALLOC_MMAP_THRESHOLD_"]
        else:
            os.environ["MALLOC_MMAP_THRESHOLD_"] = saved
    return max(out)


# -- main --------------------------------------------------------------------------------------
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--size", default="4032x3024", help="WxH")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", type=Path, default=None, help="cache directory for the synthetic data")
    ap.add_argument("--mem-images", type=int, default=2, help="images measured for peak memory (0: skip)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 4 images of 1024x768, 1 memory image")
    args = ap.parse_args()
    if args.quick:
        args.images, args.size, args.mem_images = 4, "1024x768", min(args.mem_images, 1)
    w, h = (int(v) for v in args.size.lower().split("x"))
    tmp = tempfile.TemporaryDirectory()
    root = (args.data or Path(tmp.name)) / f"coco-{args.images}x{w}x{h}-seed{args.seed}"
    t = time.perf_counter()
    gt_root, pred_root = prepare(root, args.images, w, h, args.seed)
    data = Data(gt_root, pred_root)
    n, mpx = len(data.ds), w * h / 1e6
    segs = np.array([[len(g["segments_info"]), len(p["segments_info"])] for g, p in data.pairs])
    print(f"{n} images of {w}x{h} ({mpx:.1f} Mpx), ground truth {segs[:, 0].mean():.0f} segments/image, "
          f"prediction {segs[:, 1].mean():.0f} (data ready in {time.perf_counter() - t:.0f} s)\n")
    warm_up(data)

    # correctness first: the timings mean nothing if the results differ
    stat = papi_run(data)
    papi = papi_result(stat, data.categories)
    ev, res = isus_run(data)
    diff = compare(papi, stat, ev, res)
    print("            PQ      SQ      RQ     (panopticapi; isus identical to the printed digits unless flagged)")
    for name, suffix in (("All", ""), ("Things", "_th"), ("Stuff", "_st")):
        print(f"  {name:7s} " + "  ".join(f"{100 * papi[name][m]:6.2f}" for m in ("pq", "sq", "rq")) +
              "   isus " + "  ".join(f"{100 * getattr(res, m + suffix):6.2f}" for m in ("pq", "sq", "rq")))
    s = ev.stats
    print(f"  TP / FP / FN over all categories: {s.tp.sum()} / {s.fp.sum()} / {s.fn.sum()}")
    ok = diff <= 1e-9
    print(f"  max |panopticapi - isus| over PQ/SQ/RQ (All/Things/Stuff) and per-category SQ sums: {diff:.2e} "
          f"-> {'same' if ok else 'DIFFERENT'} (tolerance 1e-9); per-category TP/FP/FN "
          f"{'equal' if np.isfinite(diff) else 'DIFFER'}\n")
    if not ok:
        return 1

    # (a) / (b) / (b0): end to end, decode included; a rotating order spreads drift evenly
    runs: dict[str, list[float]] = {"papi": [], "isus": [], "isus-opencv": []}
    phases: dict[str, list[np.ndarray]] = {"isus": [], "isus-opencv": []}
    for r in range(args.repeats):
        for method in np.roll(np.array(list(runs)), r):
            t0 = time.perf_counter()
            if method == "papi":
                papi_result(papi_run(data), data.categories)
            else:
                ph = np.zeros(3)
                with opencv_only() if method == "isus-opencv" else contextlib.nullcontext():
                    isus_run(data, ph)
                phases[method].append(ph)
            runs[method].append(time.perf_counter() - t0)
    # (a') / (b'): computation only, the PNGs decoded beforehand (untimed), image by image
    c_papi, c_isus, dec = np.zeros((args.repeats, n)), np.zeros((args.repeats, n)), np.zeros(n)
    for i in range(n):
        t0 = time.perf_counter()
        arrays = papi_arrays(data, i)
        dec[i] = time.perf_counter() - t0
        gt, pred = data.ds.load_panoptic(i), data.load_pred(i)
        for r in range(args.repeats):
            with predecoded(arrays):
                t0 = time.perf_counter()
                papi_run(data, data.pairs[i:i + 1])
                c_papi[r, i] = time.perf_counter() - t0
            ev = PanopticEvaluator(data.ds.categories)
            t0 = time.perf_counter()
            ev.add(gt, pred)
            c_isus[r, i] = time.perf_counter() - t0
        del arrays, gt, pred

    ms = lambda v: 1e3 * v / n  # noqa: E731  (per image)
    tp, ti, to = (np.array(runs[k]) for k in ("papi", "isus", "isus-opencv"))
    cp, ci = c_papi.sum(1), c_isus.sum(1)
    spread = lambda r: f"{np.median(r):5.2f}x [{r.min():.2f}-{r.max():.2f}]"  # noqa: E731
    print(f"per image, {args.repeats} rounds over the {n} images, (a) (b) (b0) in turn   min        median"
          "     panopticapi / this, per round: median [range]")
    print(f"  (a)  panopticapi, decode incl.     {ms(tp.min()):8.1f} ms  {ms(np.median(tp)):8.1f} ms")
    print(f"  (b)  isus, decode incl.            {ms(ti.min()):8.1f} ms  {ms(np.median(ti)):8.1f} ms"
          f"     {spread(tp / ti)}   (goal >= 3x)")
    print(f"  (b0) isus, OpenCV decoding (before){ms(to.min()):8.1f} ms  {ms(np.median(to)):8.1f} ms"
          f"     {spread(tp / to)}   (b0 / b: {spread(to / ti)})")
    for name, key in (("(b) ", "isus"), ("(b0)", "isus-opencv")):
        ph = np.median(np.array(phases[key]), axis=0)
        print(f"       {name} phases (median): GT and prediction PNG+JSON decoded concurrently "
              f"(isus.eval.run.load_pair) {ms(ph[0]):.1f} ms = {ph[0] / ph.sum():.0%}, evaluator.add {ms(ph[2]):.1f} ms")
    print(f"       PNG decode alone (PIL, GT + prediction into numpy one after the other, once): {ms(dec.sum()):.1f} ms")
    print(f"  (a') panopticapi, PNGs pre-decoded {ms(cp.min()):8.1f} ms  {ms(np.median(cp)):8.1f} ms")
    print(f"  (b') isus evaluator.add only       {ms(ci.min()):8.1f} ms  {ms(np.median(ci)):8.1f} ms"
          f"   ({ms(ci.min()) / mpx:.2f} ms/Mpx)")
    print(f"       -> panopticapi / isus         {cp.min() / ci.min():8.2f}x    {np.median(cp) / np.median(ci):8.2f}x")

    dt, exact = decoders(data, args.repeats)
    print(f"\nPNG decoders alone, ms per PNG (median over the {n} images of the best of {args.repeats}), "
          "one after the other, into an RGB/BGR array:")
    print("                 PIL    OpenCV  fast path   OpenCV / fast path per PNG: median [range]")
    for j, name in enumerate(("ground truth", "prediction")):
        d = dt[:, j]
        print(f"  {name:12s} {1e3 * np.median(d[:, 0]):6.1f}  {1e3 * np.median(d[:, 1]):7.1f}  "
              f"{1e3 * np.median(d[:, 2]):8.1f}     {spread(d[:, 1] / d[:, 2])}")
    print(f"  the fast path's pixels equal OpenCV's for every PNG: {'yes' if exact else 'NO'}")
    if not exact:
        return 1

    if args.mem_images > 0:
        images = list(range(min(args.mem_images, n)))
        print(f"\npeak memory per image (growth of the RSS high-water mark, fresh process per method and image; "
              f"largest of images {images}):")
        mem = {m: peak_memory(gt_root, pred_root, m, images)
               for m in ("panopticapi", "isus", "panopticapi-predecoded", "isus-eval")}
        print(f"  (a)/(b)   decode incl.       panopticapi {mem['panopticapi']:7.1f} MiB   isus {mem['isus']:7.1f} MiB"
              f"   -> panopticapi / isus {mem['panopticapi'] / max(mem['isus'], 0.1):.1f}x")
        print(f"  (a')/(b') PNGs pre-decoded   panopticapi {mem['panopticapi-predecoded']:7.1f} MiB   "
              f"isus {mem['isus-eval']:7.1f} MiB   (evaluator.add only)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
