"""Study 2: a scale-consistent, powered test of CABB and ISUS on a synthetic benchmark, with a
direct measure of the box-extent bias CABB targets. Design (pre-registered) and results:
docs/evidence-study-2.md.

Every length is scaled together (``--length-scale 0.25``: 256 crops stand for the paper's 1024,
FPN level rule and anchors included), images are much larger than the crop (1280x960), every arm
fine-tunes one shared warm start (FULL at half resolution, standard loss, trained once on a
disjoint synthetic split), and the validation set is large enough for the primary endpoints.

Each run is ``examples/train_panoptic.py`` in its own folder ``OUT/<arm>/seed<k>/``; the warm
start is ``OUT/warmstart/``. Finished runs (a readable ``eval.json``) are skipped; an
interrupted run resumes from its checkpoint. A lock per run folder stops a second writer, and
each trainer dies with the runner.

    python examples/scale_study2.py --out runs/scale-study-2 --measure    # pre-run measurements (minutes)
    nohup python examples/scale_study2.py --out runs/scale-study-2 > runs/scale-study-2.log 2>&1 &
    python examples/scale_study2.py --out runs/scale-study-2 --report --publish docs/evidence/study-2
    python examples/scale_study2.py --out /tmp/smoke --scale smoke        # the test suite's smoke run
    python examples/scale_study2.py --out /tmp/pilot --scale gpu-pilot --arms CROP,CROP+CABB --seeds 0   # GPU pilot
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

import isus  # noqa: E402
from examples.panoptic.cli import INSTALL_HINT, HelpFormatter, require_torchvision  # noqa: E402
from examples.panoptic.runs import RunLock, code_version, die_with_parent  # noqa: E402

TRAIN = ROOT / "examples" / "train_panoptic.py"
STUDY = "scale-study-2"

#: The arms: how each samples and regresses boxes (docs/evidence-study-2.md, "Arms").
ARMS: dict[str, dict[str, str]] = {
    "CROP": {"sampling": "cus", "box_loss": "smooth_l1"},
    "CROP+CABB": {"sampling": "cus", "box_loss": "cabb"},
    "CROP+ISUS": {"sampling": "isus", "box_loss": "smooth_l1"},
    "CUS-WIDE": {"sampling": "cus", "box_loss": "smooth_l1", "scale_range": "wide"},  # App. E control
    "CROP+CABB+ISUS": {"sampling": "isus", "box_loss": "cabb"},
    "FULL-LOWRES": {"sampling": "full", "box_loss": "smooth_l1"},  # exploratory
}
#: Seeds per arm, fixed by the power analysis before any run (no optional stopping).
SEEDS: dict[str, tuple[int, ...]] = {
    "CROP": (0, 1, 2, 3, 4), "CROP+CABB": (0, 1, 2, 3, 4), "CROP+ISUS": (0, 1, 2, 3, 4),
    "CUS-WIDE": (0, 1, 2, 3, 4), "CROP+CABB+ISUS": (0, 1, 2), "FULL-LOWRES": (0, 1, 2),
}


@dataclass(frozen=True)
class Scale:
    """Data and budget of one study size; every length in network pixels of the evaluated scale."""

    size: tuple[int, int]  # (width, height) of the synthetic images
    images: tuple[int, int]  # training, validation (data seed 0)
    warm_images: int  # the warm start's disjoint training split (data seed 1)
    crop: int
    length_scale: float  # crop / the paper's 1024
    batch: int
    steps: int
    lr: float
    warmup: int
    warm_steps: int
    warm_lr: float
    warm_warmup: int
    lowres: int  # s0 of FULL-LOWRES and of the warm start (half the image height)
    narrow: tuple[float, float]  # r_st of CUS and of ISUS stuff crops
    wide: tuple[float, float]  # the App. E control's CUS range (= ISUS's r_th)
    workers: int
    model: tuple[str, ...]

    @property
    def larger_than_crop(self) -> str:
        return f"larger_than_crop={self.crop * self.crop}:inf"


_CPU_MODEL = ("--backbone", "resnet18", "--norm", "group", "--clip-grad", "10", "--rpn-pre-nms-top-n-train", "600",
              "--rpn-post-nms-top-n-train", "300", "--rpn-pre-nms-top-n-test", "600", "--rpn-post-nms-top-n-test",
              "300", "--box-batch-size-per-image", "128")
SCALES: dict[str, Scale] = {
    # sized for a 2-core CPU machine: about 17 min per arm run, 8 h in all (docs/evidence-study-2.md)
    "cpu": Scale(size=(1280, 960), images=(200, 100), warm_images=200, crop=256, length_scale=0.25, batch=2,
                 steps=400, lr=0.01, warmup=50, warm_steps=1200, warm_lr=0.01, warm_warmup=100, lowres=480,
                 narrow=(0.5, 2.0), wide=(0.25, 4.0), workers=2, model=_CPU_MODEL),
    # the GPU pilot (docs/evidence-study-2.md, "GPU pilot"): the same design at the paper's lengths, 1024 crops
    # from images 4x the CPU study's side (as 256 crops from 1280x960); fewer images, to fit a device lease
    "gpu-pilot": Scale(size=(5120, 3840), images=(60, 30), warm_images=60, crop=1024, length_scale=1.0, batch=2,
                       steps=400, lr=0.01, warmup=50, warm_steps=600, warm_lr=0.01, warm_warmup=50, lowres=1920,
                       narrow=(0.5, 2.0), wide=(0.25, 4.0), workers=12,
                       model=(*_CPU_MODEL, "--device", "cuda", "--amp")),
    # for the test suite: seconds per run
    "smoke": Scale(size=(160, 120), images=(4, 2), warm_images=3, crop=64, length_scale=0.25, batch=2, steps=2,
                   lr=0.01, warmup=1, warm_steps=2, warm_lr=0.01, warm_warmup=1, lowres=60, narrow=(0.5, 2.0),
                   wide=(0.25, 4.0), workers=0,
                   model=("--backbone", "resnet18", "--norm", "group", "--rpn-pre-nms-top-n-train", "100",
                          "--rpn-post-nms-top-n-train", "50", "--rpn-pre-nms-top-n-test", "100",
                          "--rpn-post-nms-top-n-test", "50", "--rpn-batch-size-per-image", "32",
                          "--box-batch-size-per-image", "32")),
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter,
                                epilog=f"The runs need torchvision: {INSTALL_HINT}. See docs/evidence-study-2.md.")
    p.add_argument("--out", type=Path, required=True, help="study folder: OUT/warmstart/, OUT/<arm>/seed<k>/")
    p.add_argument("--scale", choices=sorted(SCALES), default="cpu", help="data size and budget (default: cpu)")
    p.add_argument("--data", type=Path, default=None, help="synthetic data folder (default: OUT/data)")
    p.add_argument("--arms", default=None, help=f"comma-separated subset of {', '.join(ARMS)} (default: all)")
    p.add_argument("--seeds", default=None, help="comma-separated subset of each arm's design seeds (default: all)")
    p.add_argument("--measure", action="store_true",
                   help="only the pre-run measurements of the design (levels, clamping, truncation), to OUT/measure.json")
    p.add_argument("--report", action="store_true",
                   help="only build the report (tables, verdicts, plots) from the runs that exist, to OUT/report")
    p.add_argument("--publish", type=Path, default=None,
                   help="with --report: write it to this folder instead (e.g. docs/evidence/study-2)")
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    p.add_argument("--allow-new-code", action="store_true",
                   help="continue a study begun with another commit, or with uncommitted changes")
    args = p.parse_args(argv)
    args.arms = list(ARMS) if args.arms is None else args.arms.split(",")
    unknown = [a for a in args.arms if a not in ARMS]
    if unknown:
        p.error(f"--arms: unknown {unknown}; choose from {', '.join(ARMS)}")
    args.seeds = None if args.seeds is None else [int(s) for s in args.seeds.split(",")]
    return args


# -- data -------------------------------------------------------------------------------------
def _dataset(root: Path, splits: list[str], counts: list[int], scale: Scale, seed: int) -> None:
    man = isus.synth.read_manifest(root)
    want = {"preset": "scale-study", "width": scale.size[0], "height": scale.size[1], "seed": seed}
    if man is not None:
        have = {k: man.get(k) for k in want}
        got = [man["splits"].get(s, {}).get("num_images") for s in splits]
        if have != want or got != counts:
            raise SystemExit(f"{root} holds another synthetic dataset ({have}, images {got}); want {want}, "
                             f"images {counts}: pass another --data")
        return
    print(f"writing {root} ({', '.join(f'{s} {n}' for s, n in zip(splits, counts))}) ...", flush=True)
    # workers change nothing in the files (each image depends on the seed and its index alone)
    isus.synth.write_dataset(root, "mvd", counts, size=scale.size, seed=seed, split=splits, preset="scale-study",
                             workers=None)


def _index(root: Path, path: Path) -> Path:
    if not path.exists():
        print(f"indexing {root} ...", flush=True)
        ds = isus.open_dataset("mvd", root, split="training")
        isus.build_index(ds).save(path)
    return path


def prepare_data(data: Path, scale: Scale) -> dict[str, Path]:
    """The study data (seed 0: training + validation) and the warm start's disjoint data (seed 1)."""
    _dataset(data / "mvd", ["training", "validation"], list(scale.images), scale, 0)
    _dataset(data / "warm", ["training"], [scale.warm_images], scale, 1)
    return {"root": data / "mvd", "index": _index(data / "mvd", data / "mvd-training.isusidx"),
            "warm_root": data / "warm", "warm_index": _index(data / "warm", data / "warm-training.isusidx")}


# -- commands ---------------------------------------------------------------------------------
def run_dir(out: Path, arm: str, seed: int) -> Path:
    return out / arm / f"seed{seed}"


def _common(scale: Scale) -> list[str]:
    return ["--dataset", "mvd", "--crop", str(scale.crop), "--length-scale", str(scale.length_scale),
            "--workers", str(scale.workers), "--checkpoint-every", "50" if scale.steps > 50 else "1",
            "--log-every", "20" if scale.steps > 50 else "1", "--eval-range", scale.larger_than_crop, *scale.model]


def warm_command(paths: dict[str, Path], out: Path, scale: Scale) -> list[str]:
    """FULL at half resolution with the standard loss, on the disjoint split: neutral to both methods.
    Evaluated on the study's validation images at its own resolution (a reference point)."""
    run = out / "warmstart"
    cmd = [sys.executable, str(TRAIN), "--root", str(paths["warm_root"]), "--index", str(paths["warm_index"]),
           "--val-split", "validation", "--sampling", "full", "--shortest-side", str(scale.lowres), "--box-loss",
           "smooth_l1", "--batch-size", "1", "--seed", "0", "--steps", str(scale.warm_steps), "--lr",
           str(scale.warm_lr), "--warmup", str(scale.warm_warmup), "--out", str(run), *_common(scale), "--no-eval"]
    return cmd + (["--resume"] if (run / "checkpoint.pt").exists() else [])


def arm_command(paths: dict[str, Path], out: Path, arm: str, seed: int, scale: Scale) -> list[str]:
    c = ARMS[arm]
    run = run_dir(out, arm, seed)
    cmd = [sys.executable, str(TRAIN), "--root", str(paths["root"]), "--index", str(paths["index"]),
           "--val-split", "validation", "--sampling", c["sampling"], "--box-loss", c["box_loss"],
           "--seed", str(seed), "--steps", str(scale.steps), "--lr", str(scale.lr), "--warmup", str(scale.warmup),
           "--init-weights", str(out / "warmstart" / "checkpoint.pt"), "--out", str(run), *_common(scale)]
    if c["sampling"] == "full":
        cmd += ["--batch-size", "1", "--shortest-side", str(scale.lowres)]
    else:
        rng = scale.wide if c.get("scale_range") == "wide" else scale.narrow
        cmd += ["--batch-size", str(scale.batch), "--scale-range", f"{rng[0]:g},{rng[1]:g}"]
    return cmd + (["--resume"] if (run / "checkpoint.pt").exists() else [])


# -- provenance, locking, finished runs -------------------------------------------------------
def pin_study(out: Path, scale_name: str, allow_new: bool) -> dict:
    """``OUT/study.json``: the study id, scale and commit every run executes. A folder begun by
    another study or scale is refused; another commit is refused unless ``allow_new``."""
    want = {"study": STUDY, "scale": scale_name, "code": code_version(ROOT) or "unknown (not a git checkout)"}
    path = out / "study.json"
    if path.exists():
        try:
            have = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise SystemExit(f"{path} is unreadable ({e}); it records which study this folder holds") from None
        if have.get("study") != STUDY or have.get("scale") != scale_name:
            raise SystemExit(f"{out} holds study {have.get('study')!r} at scale {have.get('scale')!r}, not {STUDY!r} "
                             f"at {scale_name!r}: pass another --out")
        if have.get("code") != want["code"] and not allow_new:
            raise SystemExit(f"{out} was started with commit {have.get('code')}, this is {want['code']}: run the study "
                             "from that commit (git worktree add DIR COMMIT), or pass --allow-new-code to mix them")
        return have
    if want["code"].endswith("-dirty"):
        print(f"warning: uncommitted changes under isus/ or examples/; the study records {want['code']}", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**want, "scale_settings": asdict(SCALES[scale_name])}, indent=1) + "\n")
    return want


def finished(run: Path) -> dict | None:
    """The run's eval.json when it is complete and readable; None otherwise (run it, or resume it)."""
    try:
        ev = json.loads((run / "eval.json").read_text())
    except (OSError, ValueError):
        return None
    return ev if isinstance(ev, dict) and "steps" in ev else None


def execute(cmd: list[str], run: Path, label: str, dry: bool) -> dict | None:
    ev = finished(run)
    if ev is not None:
        print(f"{label}: done, skipped", flush=True)
        return ev
    print(f"{label}: {' '.join(cmd)}", flush=True)
    if dry:
        return None
    with RunLock(run):
        t0 = time.perf_counter()
        with open(run / "train.log", "a") as log:
            res = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, preexec_fn=die_with_parent)
        took = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"{label} failed (exit {res.returncode}) after {took:.0f} s; see {run / 'train.log'}; "
                         "rerun the same command to resume it")
    ev = finished(run)
    if ev is None:
        raise SystemExit(f"{label}: the trainer exited 0 without a readable {run / 'eval.json'}")
    ap = "-" if ev.get("ap_box") is None else f"{100 * ev['ap_box']:.1f}"
    print(f"    finished in {took / 60:.1f} min: PQ {100 * (ev.get('pq') or 0):.1f}, AP_box {ap}", flush=True)
    return ev


def plan(args) -> list[tuple[str, int]]:
    """Seed-major order, so that every arm has seed k before any has seed k + 1."""
    seeds = sorted({s for a in args.arms for s in SEEDS[a]})
    return [(a, s) for s in seeds for a in args.arms if s in SEEDS[a] and (args.seeds is None or s in args.seeds)]


def run_all(args, scale: Scale) -> None:
    if not args.dry_run:
        require_torchvision(Path(__file__).name)
    paths = prepare_data(args.data, scale)
    pin_study(args.out, args.scale, args.allow_new_code)
    execute(warm_command(paths, args.out, scale), args.out / "warmstart", "[warm start]", args.dry_run)
    if not args.dry_run and not (args.out / "warmstart" / "checkpoint.pt").exists():
        raise SystemExit(f"the warm start finished without {args.out / 'warmstart' / 'checkpoint.pt'}")
    todo = plan(args)
    for k, (arm, seed) in enumerate(todo):
        execute(arm_command(paths, args.out, arm, seed, scale), run_dir(args.out, arm, seed),
                f"[{k + 1}/{len(todo)}] {arm} seed {seed}", args.dry_run)


# -- pre-run measurements ---------------------------------------------------------------------
def measure(index_path: Path, scale: Scale, samples: int = 20000, seed: int = 0) -> dict:
    """What the sampler does on the study data under the scaled level rule, before any run:
    per-level shares (every non-crowd instance overlapping a crop counts once, at the level of
    its visible box times the crop's scale), ISUS draws landing on their aimed level, σ-clamp
    rate per aimed level, magnification, and per size bucket how often crops truncate objects
    and how much of the true width the standard (visible) box target keeps."""
    from examples.panoptic.levels import level_rule
    from isus.sampling import SamplingPolicy
    from isus.stats.compute import crop_instance_pairs, crop_level_counts, full_image_level_counts

    index = isus.Index.load(index_path)
    rule = level_rule(scale.length_scale)
    inst = index.instances
    keep = ~inst.iscrowd
    box_all = inst.box.astype(np.float64)
    size_all = np.sqrt((box_all[:, 2] - box_all[:, 0]) * (box_all[:, 3] - box_all[:, 1]))
    edges = np.percentile(size_all[keep] ** 2, [0, 25, 50, 75, 95, 100])
    out: dict = {"level_rule": repr(rule), "samples": samples, "seed": seed, "crop": scale.crop,
                 "bucket_edges_box_area": [float(e) for e in edges],
                 "full_image_level_shares": _shares(full_image_level_counts(index, rule, None)),
                 "full_image_lowres_level_shares": _shares(full_image_level_counts(index, rule, scale.lowres)),
                 "samplers": {}}
    for name, mode, r_st in (("CUS", "cus", scale.narrow), ("ISUS", "isus", scale.narrow),
                             ("CUS-WIDE", "cus", scale.wide)):
        cfg = isus.SamplerConfig(crop_size=(scale.crop, scale.crop), mode=mode, levels=rule,
                                 stuff_scale_range=r_st, thing_scale_range=scale.wide)
        batch = SamplingPolicy(index, cfg).draw(np.random.default_rng(seed), samples)
        rec: dict = {"level_shares": _shares(crop_level_counts(index, batch, rule))}
        rec["sigma_quantiles"] = {q: float(np.quantile(batch.sigma, q / 100)) for q in (5, 25, 50, 75, 95)}
        rec["magnified_2x_or_more"] = float((batch.sigma >= 2).mean())
        if mode == "isus":
            aimed = batch.instance >= 0
            b = inst.box[batch.instance[aimed]].astype(np.float64)
            s = np.sqrt((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])) * batch.scale[aimed]
            hit = rule.level_of(s) == batch.level[aimed]
            rec["instance_draws"] = int(aimed.sum())
            rec["aimed"] = {f"P{lv}": {"draws": int((batch.level[aimed] == lv).sum()),
                                       "landed_on_level": _frac(hit[batch.level[aimed] == lv]),
                                       "sigma_clamped": _frac(batch.clamped[aimed][batch.level[aimed] == lv])}
                            for lv in rule.levels}
        crop, row, vis = crop_instance_pairs(index, batch)
        box = box_all[row]
        true_w = box[:, 2] - box[:, 0]
        vis_w = vis[:, 2] - vis[:, 0]
        truncated = (vis[:, 0] > box[:, 0]) | (vis[:, 1] > box[:, 1]) | (vis[:, 2] < box[:, 2]) | (vis[:, 3] < box[:, 3])
        iou = (vis_w * (vis[:, 3] - vis[:, 1])) / np.maximum(true_w * (box[:, 3] - box[:, 1]), 1e-9)
        area = size_all[row] ** 2
        bucket = np.clip(np.searchsorted(edges, area, side="right") - 1, 0, len(edges) - 2)
        rec["pairs"] = int(len(row))
        rec["by_bucket"] = [{"pairs": int((bucket == k).sum()), "truncated": _frac(truncated[bucket == k]),
                             "width_kept_median": _med((vis_w / np.maximum(true_w, 1e-9))[bucket == k]),
                             "box_iou_mean": _mean(iou[bucket == k])} for k in range(len(edges) - 1)]
        big = area >= scale.crop ** 2
        rec["larger_than_crop"] = {"pairs": int(big.sum()), "truncated": _frac(truncated[big]),
                                   "width_kept_median": _med((vis_w / np.maximum(true_w, 1e-9))[big]),
                                   "box_iou_mean": _mean(iou[big])}
        out["samplers"][name] = rec
    return out


def _shares(counts) -> dict[str, float]:
    counts = np.asarray(counts, dtype=np.float64)
    tot = counts.sum()
    return {f"P{2 + k}": float(c / tot) if tot else float("nan") for k, c in enumerate(counts)}


def _frac(x: np.ndarray) -> float:
    return float(np.mean(x)) if len(x) else float("nan")


def _med(x: np.ndarray) -> float:
    return float(np.median(x)) if len(x) else float("nan")


def _mean(x: np.ndarray) -> float:
    return float(np.mean(x)) if len(x) else float("nan")


def validation_counts(root: Path, crop: int) -> dict:
    """Thing instances of the validation split: total, larger than the crop (area >= crop²) and in
    each size bucket (percentiles 0/25/50/75/95/100 of their areas), as the evaluation counts them."""
    from isus.eval.coco import bucket_edges
    from isus.segments import segment_geometry

    ds = isus.open_dataset("mvd", root, split="validation")
    things = {c.id for c in ds.categories if c.isthing}
    areas = []
    for i in range(len(ds)):
        p = ds.load_panoptic(i)
        _, area, _ = segment_geometry(p.ids, p.segments["id"])
        for j in range(len(p.segments)):
            if int(p.segments["category_id"][j]) in things and not p.segments["iscrowd"][j] and area[j] > 0:
                areas.append(float(area[j]))
    a = np.array(areas)
    e = bucket_edges(a)
    per = [int(((a >= e[k]) & ((a <= e[k + 1]) if k == len(e) - 2 else (a < e[k + 1]))).sum()) for k in range(len(e) - 1)]
    return {"images": len(ds), "things": len(a), "larger_than_crop": int((a >= crop * crop).sum()),
            "bucket_edges": [float(x) for x in e], "per_bucket": per}


def main(argv=None) -> None:
    args = parse_args(argv)
    scale = SCALES[args.scale]
    args.data = args.data or args.out / "data"
    if args.report:
        from examples.study2_report import report

        report(args.out, args.publish or args.out / "report")
        return
    if args.measure:
        paths = prepare_data(args.data, scale)
        res = {"validation": validation_counts(paths["root"], scale.crop), **measure(paths["index"], scale)}
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "measure.json").write_text(json.dumps(res, indent=1, allow_nan=True) + "\n")
        print(json.dumps(res, indent=1))
        return
    run_all(args, scale)


if __name__ == "__main__":
    main()
