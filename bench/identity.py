"""Byte-level identity of what isus produces, for refactors that must not change behaviour.

Writes a manifest (JSON) of sha256 digests of: the index files built from synthetic datasets in
every layout (with and without the annotation and image caches) and from the real samples in
../shared/realdata; the crops of a fixed stream of ISUS and CUS specs through every engine
configuration (decoded, cached, no index); the sampler's spec stream and state; the statistics
and the evaluation results of perturbed predictions. Run it on two commits with the same
``--work`` folder and compare the manifests with ``--compare``:

    python bench/identity.py --work /tmp/isus-identity --out before.json      # on the old commit
    python bench/identity.py --work /tmp/isus-identity --out after.json       # on the new commit
    python bench/identity.py --compare before.json after.json

Index files record the dataset's absolute root, so both runs must use the same ``--work``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

import isus
from isus.types import Panoptic

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "realdata"
LAYOUTS = ("mvd", "cityscapes", "idd", "coco")
#: EvalResult fields newer than the first manifests (bfe3ab5): digested under ``<key>/eval_added``.
ADDED_EVAL_FIELDS = ("by_size",)


def digest(*parts: Any) -> str:
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, np.ndarray):
            h.update(str((p.dtype.str, p.shape)).encode())
            h.update(np.ascontiguousarray(p).tobytes())
        elif isinstance(p, (bytes, bytearray)):
            h.update(p)
        else:
            h.update(json.dumps(p, sort_keys=True, default=str).encode())
    return h.hexdigest()


def sample_digest(s: Any) -> str:
    parts = [s.image, s.panoptic, s.semantic, s.masks, s.labels, s.category_ids, s.segment_ids, s.boxes,
             s.original_boxes, s.truncated, s.crowd, int(s.dropped), list(s.window), float(s.scale), bool(s.flip)]
    if getattr(s, "segment_table", None) is not None:  # compact targets (manifests before them never had one)
        parts.append(s.segment_table)
    return digest(*parts)


def crops(ds: Any, index: Any, crop: int, n: int, out: dict[str, str], key: str) -> None:
    from isus.torch import CropSampler

    for mode in ("isus", "cus") if ds.has_instances else ("cus",):
        cfg = isus.SamplerConfig(crop_size=(crop, crop), mode=mode, shortest_side=None)
        sampler = CropSampler(index, cfg, num_samples=n, seed=3)
        specs = list(sampler)
        out[f"{key}/specs/{mode}"] = digest([[s.image, list(s.window), s.scale, s.flip] for s in specs])
        out[f"{key}/sampler_state/{mode}"] = digest(sampler.state_dict())
        engines = {"decoded": isus.CropEngine(ds, index, isus.CropConfig(use_cache=False))}
        if index.cache_dir is not None:
            engines["cached"] = isus.CropEngine(ds, index)
            engines["cached_cubic"] = isus.CropEngine(ds, index, isus.CropConfig(interpolation="cubic"))
            engines["cached_compact"] = isus.CropEngine(ds, index, isus.CropConfig(compact_targets=True))
        engines["decoded_compact"] = isus.CropEngine(ds, index, isus.CropConfig(use_cache=False, compact_targets=True))
        if ds.has_instances:
            engines["no_index"] = isus.CropEngine(ds, None)
        engines["full_decode"] = isus.CropEngine(ds, index, isus.CropConfig(use_cache=False, reduced_decode=False))
        for name, engine in engines.items():
            out[f"{key}/crops/{mode}/{name}"] = digest(*[sample_digest(engine(s)) for s in specs])


def stats(index: Any, crop: int, out: dict[str, str], key: str) -> None:
    from isus.stats import compute_stats

    cfg = isus.SamplerConfig(crop_size=(crop, crop))
    try:
        st = compute_stats(index, cfg, samples=300, seed=1, per_class=True)
    except isus.IsusError as e:  # an error is part of the behaviour too
        out[f"{key}/stats"] = f"error {type(e).__name__}: {e}"
        return
    out[f"{key}/stats"] = digest(st)


def evaluate(ds: Any, work: Path, out: dict[str, str], key: str) -> None:
    from isus.eval import Detections, PanopticPredictionWriter, evaluate_dataset

    rng = np.random.default_rng(7)
    pred_dir = work / f"pred-{key.replace('/', '_')}"
    shutil.rmtree(pred_dir, ignore_errors=True)
    dets = {}
    with PanopticPredictionWriter(pred_dir) as w:
        for i in range(len(ds)):
            pan = ds.load_panoptic(i)
            ids = np.roll(pan.ids, (3, -5), axis=(0, 1))  # a shifted prediction: partial overlaps everywhere
            keep = rng.random(len(pan.segments)) < 0.85
            segs = pan.segments[keep]
            ids = np.where(np.isin(ids, segs["id"]), ids, 0).astype(np.int32)
            w.add(ds.image_info(i).image_id, Panoptic(ids, segs))
            things = [s for s in pan.segments if not s["iscrowd"] and ds.category(int(s["category_id"])).isthing]
            boxes = np.array([np.r_[np.argwhere(pan.ids.T == s["id"]).min(0), np.argwhere(pan.ids.T == s["id"]).max(0) + 1]
                              for s in things], np.float64).reshape(-1, 4)
            boxes += rng.normal(0, 3, boxes.shape)
            boxes = np.concatenate([np.minimum(boxes[:, :2], boxes[:, 2:]), np.maximum(boxes[:, :2], boxes[:, 2:])], 1)
            dets[str(ds.image_info(i).image_id)] = Detections(boxes, rng.random(len(things)),
                                                         np.array([s["category_id"] for s in things], np.int64))
        w.close(ds.categories)
    res = evaluate_dataset(ds, str(pred_dir), dets, ranges={"big": (4096.0, float("inf"))})
    # fields added since the manifest format was fixed (PQ by size, issue 26) are digested apart,
    # so that a manifest from before them still compares the results that existed then
    d = res.to_dict()
    added = {k: d.pop(k) for k in ADDED_EVAL_FIELDS if k in d}
    out[f"{key}/eval"] = digest(d)
    if added:
        out[f"{key}/eval_added"] = digest(added)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/isus-identity"))
    ap.add_argument("--out", type=Path)
    ap.add_argument("--compare", nargs=2, type=Path, metavar=("A", "B"))
    args = ap.parse_args()
    if args.compare:
        a, b = (json.loads(p.read_text()) for p in args.compare)
        # an artefact only one side has (a newer field) is listed, not counted as a difference
        only = sorted(set(a) ^ set(b))
        for k in only:
            print(f"only in {'A' if k in a else 'B'}: {k}")
        diff = sorted(k for k in set(a) & set(b) if a[k] != b[k])
        for k in diff:
            print(f"DIFFERS {k}: {a[k][:16]} vs {b[k][:16]}")
        print(f"{len(set(a) & set(b)) - len(diff)} of {len(set(a) & set(b))} artefacts both have are identical")
        return 1 if diff else 0
    work = args.work
    out: dict[str, str] = {}
    for layout in LAYOUTS:
        root = work / "synth" / layout
        if not root.exists():
            isus.synth.write_dataset(root, layout, num_images=6, size=(1280, 960), seed=5)
        ds = isus.open_dataset(layout, root)
        for caches in ("none", "ann", "both"):
            path = work / "idx" / f"{layout}-{caches}.isusidx"
            cache_dir = None if caches == "none" else work / "idx" / f"{layout}-{caches}-cache"
            shutil.rmtree(cache_dir or work / "nonexistent", ignore_errors=True)
            path.parent.mkdir(parents=True, exist_ok=True)
            index = isus.build_index(ds, workers=1, cache_dir=cache_dir, image_cache=caches == "both")
            index.save(path)
            key = f"{layout}/{caches}"
            out[f"{key}/index"] = digest(path.read_bytes())
            if cache_dir is not None:
                out[f"{key}/cache"] = digest(*[p.name.encode() + p.read_bytes() for p in sorted(cache_dir.iterdir())])
            index = isus.Index.load(path)
            out[f"{key}/describe"] = digest(index.describe())
            crops(ds, index, 256, 24, out, key)
            if caches == "none":
                stats(index, 256, out, key)
        evaluate(ds, work, out, layout)
    sim = isus.synth.simulated_index(300, seed=2)
    out["simulated/arrays"] = digest(*[sim.arrays()[k] for k in sorted(sim.arrays())])
    stats(sim, 1024, out, "simulated")
    # real samples: the readers' own layouts
    real = []
    if REAL.is_dir():
        real = [("coco", REAL / "coco_panoptic/panopticapi/sample_data",
                 dict(annotations="panoptic_examples.json", panoptic_dir="panoptic_examples", images_dir="input_images"), None),
                ("mvd", REAL / "mapillary_vistas/deeposlandia/tests/data/mapillary",
                 dict(config=str(REAL / "mapillary_vistas/mseg-api/tests/test_data/mapillary-vistas-dataset_public_v1.1_config.json")),
                 "sample")]
    for name, root, kw, split in real:
        ds = isus.open_dataset(name, root, split=split, **kw)
        for caches in ("none", "both"):
            path = work / "idx" / f"real-{name}-{caches}.isusidx"
            cache_dir = None if caches == "none" else work / "idx" / f"real-{name}-{caches}-cache"
            shutil.rmtree(cache_dir or work / "nonexistent", ignore_errors=True)
            index = isus.build_index(ds, workers=1, cache_dir=cache_dir, image_cache=caches == "both")
            index.save(path)
            key = f"real-{name}/{caches}"
            out[f"{key}/index"] = digest(path.read_bytes())
            index = isus.Index.load(path, root=root)
            crops(ds, index, 512, 12, out, key)
        if ds.has_instances:
            evaluate(ds, work, out, f"real-{name}")
    text = json.dumps(out, indent=1, sort_keys=True) + "\n"
    if args.out:
        args.out.write_text(text)
    print(f"{len(out)} artefacts digested" + (f" -> {args.out}" if args.out else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
