"""The paper's ablation (FULL / CROP / CROP+CABB / CROP+ISUS / CROP+CABB+ISUS) on a synthetic scale
benchmark, several paired seeds, results per object size. Design and results: docs/evidence.md.

Each run is ``examples/train_panoptic.py`` (no second training loop) in its own folder
``OUT/<config>/seed<k>/`` (checkpoint, log.jsonl, train.log, eval.json, predictions/). Finished runs
(a readable ``eval.json``) are skipped; an interrupted run (or one whose eval.json is unreadable)
resumes from its checkpoint. ``--report`` builds the summary from whatever runs exist, and refuses
runs with impossible metric values or evaluated on other data.

    python examples/scale_study.py --out runs/scale-study                 # the whole study (hours; resumable)
    nohup python examples/scale_study.py --out runs/scale-study > study.log 2>&1 &
    python examples/scale_study.py --out runs/scale-study --report        # table, results.json, plots
    python examples/scale_study.py --out /tmp/smoke --scale smoke --configs CROP,CROP+CABB --seeds 0
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import isus  # noqa: E402
from examples.panoptic.cli import INSTALL_HINT, HelpFormatter, require_torchvision  # noqa: E402
from examples.panoptic.runs import RunLock, code_version, die_with_parent  # noqa: E402

TRAIN = ROOT / "examples" / "train_panoptic.py"

#: The paper's configurations (Sec. 4): how each samples and regresses boxes.
CONFIGS: dict[str, dict[str, str]] = {
    "FULL": {"sampling": "full", "box_loss": "smooth_l1"},
    "CROP": {"sampling": "cus", "box_loss": "smooth_l1"},
    "CROP+CABB": {"sampling": "cus", "box_loss": "cabb"},
    "CROP+ISUS": {"sampling": "isus", "box_loss": "smooth_l1"},
    "CROP+CABB+ISUS": {"sampling": "isus", "box_loss": "cabb"},
}
BASELINE = "CROP"
METRICS = ("pq", "pq_th", "pq_st", "pq_dagger", "pc", "pc_th", "ap_box", "ap_mask")


@dataclass(frozen=True)
class Scale:
    """Data and budget of one study size."""

    size: tuple[int, int]  # (width, height) of the synthetic images
    images: tuple[int, int]  # training, validation
    crop: int
    batch: int  # crops per step (crop configurations)
    full_batch: int  # whole images per step (FULL)
    steps: int
    lr: float
    warmup: int
    backbone: str
    workers: int
    data_seed: int = 0
    extra: tuple[str, ...] = field(default=())  # further train_panoptic.py arguments

    def train_args(self) -> list[str]:
        return ["--crop", str(self.crop), "--steps", str(self.steps), "--lr", str(self.lr), "--warmup",
                str(self.warmup), "--backbone", self.backbone, "--workers", str(self.workers), *self.extra]


_CPU_MODEL = ("--norm", "group", "--clip-grad", "10", "--rpn-pre-nms-top-n-train", "600",
              "--rpn-post-nms-top-n-train", "300", "--rpn-pre-nms-top-n-test", "600", "--rpn-post-nms-top-n-test",
              "300", "--box-batch-size-per-image", "128", "--checkpoint-every", "100", "--log-every", "20")

SCALES: dict[str, Scale] = {
    # the default study, sized for a 2-core CPU machine (docs/evidence.md: ~12-15 min per run)
    "cpu": Scale(size=(640, 480), images=(200, 50), crop=256, batch=2, full_batch=1, steps=700, lr=0.01, warmup=100,
                 backbone="resnet18", workers=2, extra=_CPU_MODEL),
    # for the test suite: seconds per run
    "smoke": Scale(size=(128, 96), images=(4, 2), crop=64, batch=2, full_batch=1, steps=2, lr=0.01, warmup=1,
                   backbone="resnet18", workers=0,
                   extra=("--norm", "group", "--rpn-pre-nms-top-n-train", "100", "--rpn-post-nms-top-n-train", "50",
                          "--rpn-pre-nms-top-n-test", "100", "--rpn-post-nms-top-n-test", "50",
                          "--rpn-batch-size-per-image", "32", "--box-batch-size-per-image", "32",
                          "--checkpoint-every", "1", "--log-every", "1")),
    # the same study at the paper's MVD sizes, for a GPU node (App. D: 1024 crops, 4 per GPU, s0 = image)
    "paper": Scale(size=(4032, 3024), images=(2000, 500), crop=1024, batch=4, full_batch=1, steps=30000, lr=0.02,
                   warmup=200, backbone="resnet50", workers=12,
                   extra=("--norm", "group", "--amp", "--checkpoint-every", "1000", "--log-every", "50")),
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter,
                                epilog=f"The runs need torchvision: {INSTALL_HINT}. See docs/evidence.md.")
    p.add_argument("--out", type=Path, required=True, help="study folder: OUT/<config>/seed<k>/, OUT/report/")
    p.add_argument("--scale", choices=sorted(SCALES), default="cpu", help="data size and budget (default: cpu)")
    p.add_argument("--data", type=Path, default=None, help="synthetic dataset root (default: OUT/data)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds; seed k gives every configuration the "
                                                    "same initial weights and crop stream (default: 0,1,2)")
    p.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated, of {', '.join(CONFIGS)}")
    p.add_argument("--report", action="store_true", help="only build the report from the runs that exist")
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    p.add_argument("--allow-new-code", action="store_true",
                   help="continue a study begun with another commit, or with uncommitted changes")
    args = p.parse_args(argv)
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.configs = args.configs.split(",")
    unknown = [c for c in args.configs if c not in CONFIGS]
    if unknown:
        p.error(f"--configs: unknown {unknown}; choose from {', '.join(CONFIGS)}")
    return args


# -- data -------------------------------------------------------------------------------------
def prepare_data(data: Path, scale: Scale) -> Path:
    """Write the scale-study dataset (training + validation) and the training index, once."""
    root = data / "mvd"
    index = data / "mvd-training.isusidx"
    man = isus.synth.read_manifest(root)
    want = {"preset": "scale-study", "width": scale.size[0], "height": scale.size[1], "seed": scale.data_seed}
    if man is not None:
        have = {k: man.get(k) for k in want}
        counts = tuple(man["splits"].get(s, {}).get("num_images") for s in ("training", "validation"))
        if have != want or counts != scale.images:
            raise SystemExit(f"{root} holds another synthetic dataset ({have}, images {counts}); want {want}, "
                             f"images {scale.images}: pass another --data")
    else:
        print(f"writing the scale-study data to {root} ...", flush=True)
        isus.synth.write_dataset(root, "mvd", list(scale.images), size=scale.size, seed=scale.data_seed,
                                 split=["training", "validation"], preset="scale-study")
    if not index.exists():
        print(f"indexing {root} ...", flush=True)
        ds = isus.open_dataset("mvd", root, split="training")
        isus.build_index(ds, workers=min(2, os.cpu_count() or 1)).save(index)
    return root


# -- runs -------------------------------------------------------------------------------------
def run_dir(out: Path, config: str, seed: int) -> Path:
    return out / config / f"seed{seed}"


def command(root: Path, index: Path, run: Path, config: str, seed: int, scale: Scale) -> list[str]:
    c = CONFIGS[config]
    batch = scale.full_batch if c["sampling"] == "full" else scale.batch
    cmd = [sys.executable, str(TRAIN), "--dataset", "mvd", "--root", str(root), "--index", str(index),
           "--val-split", "validation", "--sampling", c["sampling"], "--box-loss", c["box_loss"],
           "--batch-size", str(batch), "--seed", str(seed), "--out", str(run), *scale.train_args()]
    if (run / "checkpoint.pt").exists():
        cmd.append("--resume")
    return cmd


def pin_code(out: Path, allow_new: bool) -> None:
    """Record the commit the study runs (OUT/code.txt) and refuse to continue a study begun with
    other code: runs of one study must differ only in their configuration and seed (the default
    study ran from a frozen worktree of its commit while development went on)."""
    head = code_version(ROOT)
    if head is None:
        return  # not a git checkout: nothing to pin
    if head.endswith("-dirty"):
        print(f"warning: uncommitted changes under isus/ or examples/; the study records {head}", flush=True)
    code = out / "code.txt"
    if code.exists() and code.read_text().strip() != head and not allow_new:
        raise SystemExit(f"{out} was started with commit {code.read_text().strip()}, this is {head}: run the study "
                         "from that commit (git worktree add DIR COMMIT), or pass --allow-new-code to mix them")
    out.mkdir(parents=True, exist_ok=True)
    if not code.exists():
        code.write_text(head + "\n")


def run_all(args, scale: Scale) -> None:
    if not args.dry_run:
        require_torchvision(Path(__file__).name)  # before writing data: every run would fail
    root = prepare_data(args.data, scale)
    index = args.data / "mvd-training.isusidx"
    pin_code(args.out, args.allow_new_code)
    todo = [(c, s) for s in args.seeds for c in args.configs]  # seed-major: every config gets seed 0 first
    for k, (config, seed) in enumerate(todo):
        run = run_dir(args.out, config, seed)
        if read_eval(run / "eval.json") is not None:
            print(f"[{k + 1}/{len(todo)}] {config} seed {seed}: done, skipped", flush=True)
            continue
        cmd = command(root, index, run, config, seed, scale)
        print(f"[{k + 1}/{len(todo)}] {config} seed {seed}: {' '.join(cmd)}", flush=True)
        if args.dry_run:
            continue
        run.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        # one writer per run folder, and the trainer dies with this runner (no orphan keeps writing)
        with RunLock(run), open(run / "train.log", "a") as log:
            res = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, preexec_fn=die_with_parent)
        took = time.perf_counter() - t0
        if res.returncode != 0:
            raise SystemExit(f"{config} seed {seed} failed (exit {res.returncode}) after {took:.0f} s; see "
                             f"{run / 'train.log'}; rerun the same command to resume it")
        ev = json.loads((run / "eval.json").read_text())
        ap = "-" if ev.get("ap_box") is None else f"{100 * ev['ap_box']:.1f}"
        print(f"    finished in {took / 60:.1f} min: PQ {100 * ev['pq']:.1f}, AP_box {ap}", flush=True)


# -- report -----------------------------------------------------------------------------------
#: two-sided 95 % quantiles of Student's t, by degrees of freedom
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042}


def t95(df: int) -> float:
    if df in _T95:
        return _T95[df]
    keys = sorted(_T95)
    return _T95[max(k for k in keys if k <= df)] if df < 30 else 1.96


def mean_std(values: list[float]) -> tuple[float, float]:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return float("nan"), float("nan")
    m = sum(vals) / len(vals)
    sd = math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else float("nan")
    return m, sd


def paired_ci(a: list[float], b: list[float]) -> tuple[float, float, int]:
    """Mean of ``a - b`` over paired seeds and the half-width of its 95 % confidence interval."""
    st = _stat([x - y for x, y in zip(a, b) if x is not None and y is not None
                and not math.isnan(x) and not math.isnan(y)])
    return st["mean"], st["ci95"], st["n"]


def read_eval(path: Path) -> dict | None:
    """A run's eval.json, or None when the run is unfinished: no eval.json, or one that cannot be
    read as a JSON object (truncated by a crash or a full disk); the run then resumes from its
    checkpoint and writes it again. Says so when the file exists."""
    try:
        ev = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        print(f"note: {path} is unreadable ({e}): the run counts as unfinished", flush=True)
        return None
    if not isinstance(ev, dict):
        print(f"note: {path} is not a JSON object: the run counts as unfinished", flush=True)
        return None
    return ev


def collect(out: Path) -> dict:
    """Every finished run: its eval.json metrics, steps and wall time.

    An unreadable eval.json is an unfinished run (a note); impossible values (a metric outside
    [0, 1], NaN, inf) and runs that cannot stand side by side (other split, images, categories or
    bucket edges) stop the report with the file and field named."""
    from isus.eval import EvalResult, check_comparable

    runs: dict[str, dict[int, dict]] = {}
    found = []
    for config in CONFIGS:
        for ev_path in sorted((out / config).glob("seed*/eval.json")):
            seed = int(ev_path.parent.name[4:])
            ev = read_eval(ev_path)
            if ev is None:
                continue
            try:
                EvalResult.from_dict({k: v for k, v in ev.items() if k in EvalResult.__dataclass_fields__},
                                     source=str(ev_path))
            except isus.IsusError as e:
                raise SystemExit(f"refusing the run: {e}") from None
            runs.setdefault(config, {})[seed] = ev
            found.append((str(ev_path), ev))
    try:
        # examples/train_panoptic.py records the split, not the dataset: this study writes its own data
        check_comparable(found)
    except isus.IsusError as e:
        raise SystemExit(f"{out}: {e}") from None
    return runs


def report(out: Path) -> dict:
    from isus.eval import EvalResult
    from isus.eval.plots import format_compare, plot_by_size

    runs = collect(out)
    if not runs:
        raise SystemExit(f"{out}: no finished run (no */seed*/eval.json)")
    rep = out / "report"
    rep.mkdir(parents=True, exist_ok=True)
    summary: dict = {"runs": {}, "mean": {}, "paired_vs_" + BASELINE: {}}
    code = out / "code.txt"
    if code.exists():  # the commit every run executed (run_all refuses to mix commits)
        summary["code"] = code.read_text().strip()
    for config, by_seed in runs.items():
        # every metric of the run's eval.json (per class and per bucket included), its steps and wall
        # times; only the paths of its prediction files are left out
        summary["runs"][config] = {str(s): {k: v for k, v in ev.items() if k not in ("predictions", "instances")}
                                   for s, ev in sorted(by_seed.items())}
        summary["mean"][config] = {m: dict(zip(("mean", "std"), mean_std([ev.get(m) for ev in by_seed.values()])))
                                   for m in METRICS}
        summary["mean"][config]["seeds"] = sorted(by_seed)
    base = runs.get(BASELINE, {})
    for config, by_seed in runs.items():
        if config == BASELINE or not base:
            continue
        seeds = sorted(set(by_seed) & set(base))
        summary["paired_vs_" + BASELINE][config] = {
            m: dict(zip(("diff", "ci95", "n"), paired_ci([by_seed[s].get(m) for s in seeds],
                                                         [base[s].get(m) for s in seeds])))
            for m in METRICS}
    lines = [f"{'config':16s}{'seeds':>6s}" + "".join(f"{m:>14s}" for m in METRICS)]
    for config in CONFIGS:
        if config not in summary["mean"]:
            continue
        row = summary["mean"][config]
        lines.append(f"{config:16s}{len(row['seeds']):6d}" + "".join(
            f"{_pm(row[m]['mean'], row[m]['std']):>14s}" for m in METRICS))
    lines.append("")
    lines.append(f"paired difference to {BASELINE} (mean over seeds ± 95 % CI half-width, percent points)")
    for config, diffs in summary["paired_vs_" + BASELINE].items():
        lines.append(f"{config:16s}{diffs[METRICS[0]]['n']:6d}" + "".join(
            f"{_pm(diffs[m]['diff'], diffs[m]['ci95'], sign=True):>14s}" for m in METRICS))
    # Fig. 5: mean over seeds of AP per size bucket, one bar per configuration
    means, labels = [], []
    for config in CONFIGS:
        evs = list(runs.get(config, {}).values())
        if not evs or not all(ev.get("buckets") for ev in evs):
            continue
        res = EvalResult.from_dict({k: v for k, v in evs[0].items() if k in EvalResult.__dataclass_fields__})
        for kind in ("box", "mask"):
            per = [ev["buckets"].get(kind) or [] for ev in evs]
            res.buckets[kind] = [mean_std([p[k] for p in per if k < len(p)])[0] for k in range(len(per[0]))]
        means.append(res)
        labels.append(f"{config} (n={len(evs)})")
        (rep / f"{config}_mean_eval.json").write_text(json.dumps(res.to_dict(), indent=1))
    table = "\n".join(lines)
    if means:
        table += "\n\n" + format_compare(means, labels)
        try:
            plot_by_size(means, labels, rep / "ap_by_size.png",
                         title="AP by instance size, mean over seeds (scale-study synthetic benchmark)")
        except isus.IsusError as e:
            table += f"\n(no plot: {e})"
    summary["criteria"] = criteria(runs)
    table += "\n\n" + format_criteria(summary["criteria"])
    # strict JSON: an undefined statistic (a std over one seed) is null, not NaN
    (rep / "results.json").write_text(json.dumps(_finite(summary), indent=1, allow_nan=False))
    (rep / "table.txt").write_text(table + "\n")
    (rep / "table.md").write_text(markdown(summary))
    print(table)
    print(f"wrote {rep / 'results.json'}, {rep / 'table.txt'}" + (f", {rep / 'ap_by_size.png'}" if means else ""))
    return summary


# -- the pre-registered criteria (docs/evidence.md, "What counts as reproducing each effect") ---
DESIGN_SEEDS = 3  # the design fixes three seeds; verdicts on fewer are provisional


def _box(ev: dict, kind: str = "box") -> list[float]:
    return list((ev.get("buckets") or {}).get(kind) or [])


def _bucket(i: int, kind: str = "box"):
    """A run's AP in size bucket ``i`` (None when the run has no such bucket)."""
    return lambda ev: _box(ev, kind)[i] if i < len(_box(ev, kind)) else None


def _metric(m: str):
    return lambda ev: ev.get(m)


def _num_buckets(runs: dict) -> int:
    return max((len(_box(ev)) for r in runs.values() for ev in r.values()), default=0)


def _diffs(runs: dict, a: str, b: str, get) -> list[float]:
    """Per-seed ``get(a) - get(b)`` over the seeds both configurations finished."""
    seeds = sorted(set(runs.get(a, {})) & set(runs.get(b, {})))
    out = []
    for s in seeds:
        x, y = get(runs[a][s]), get(runs[b][s])
        if x is not None and y is not None and not (math.isnan(x) or math.isnan(y)):
            out.append(x - y)
    return out


def _stat(d: list[float]) -> dict:
    """Mean, 95 % CI half-width (Student's t) and the sign tests the criteria use."""
    n = len(d)
    m, sd = mean_std(d)
    hw = t95(n - 1) * sd / math.sqrt(n) if n > 1 and not math.isnan(sd) else float("nan")
    return {"n": n, "seeds": d, "mean": m, "ci95": hw,
            "ci_above_0": n > 1 and not math.isnan(hw) and m - hw > 0,
            "ci_below_0": n > 1 and not math.isnan(hw) and m + hw < 0,
            "all_positive": n > 0 and all(x > 0 for x in d)}


def criteria(runs: dict) -> dict:
    """The verdict on each pre-registered effect, computed from the finished runs.

    Each entry has ``verdict`` (``reproduced``, ``suggested``, ``not reproduced`` or ``no data``),
    ``provisional`` (fewer seeds than the design's three; E1' is ``undetermined`` below two) and the paired statistics it rests on.
    "A CI excludes 0" is read as the side the paper claims: above 0 for a gain, below for a loss.
    """
    out: dict[str, dict] = {}
    nb = _num_buckets(runs)
    bucket, metric = _bucket, _metric

    def entry(verdict: str, stats: dict, **extra) -> dict:
        ns = [s["n"] for s in stats.values()]
        n = min(ns) if ns else 0
        if n == 0:
            verdict = "no data"
        return {"verdict": verdict, "n": n, "provisional": n < DESIGN_SEEDS, "stats": stats, **extra}

    top = nb - 1
    # E1: CABB on the largest objects
    s = {"box_top": _stat(_diffs(runs, "CROP+CABB", "CROP", bucket(top))),
         "mask_top": _stat(_diffs(runs, "CROP+CABB", "CROP", bucket(top, "mask")))}
    b = s["box_top"]
    v = ("reproduced" if b["ci_above_0"] else
         "suggested" if b["all_positive"] else "not reproduced")
    out["E1"] = entry(v, {"box_top": b}, beside={"mask_top": s["mask_top"]},
                      what="CROP+CABB - CROP, box AP in the top size bucket")
    # E1': CABB keeps the other buckets
    s = {f"box_{i}": _stat(_diffs(runs, "CROP+CABB", "CROP", bucket(i))) for i in range(max(top, 0))}
    n1 = min((x["n"] for x in s.values()), default=0)
    # without two seeds there is no interval, so "no CI below 0" would hold vacuously
    v = ("not reproduced" if any(x["ci_below_0"] for x in s.values()) else
         "reproduced" if n1 > 1 else "undetermined")
    out["E1'"] = entry(v, s, what="CROP+CABB - CROP, box AP in the other buckets: no CI entirely below 0")
    # E2: ISUS across scales
    s = {f"box_{i}": _stat(_diffs(runs, "CROP+ISUS", "CROP", bucket(i))) for i in range(nb)}
    s["ap_box"] = _stat(_diffs(runs, "CROP+ISUS", "CROP", metric("ap_box")))
    pos = sum(s[f"box_{i}"]["mean"] > 0 for i in range(nb))
    v = ("reproduced" if pos >= 4 and s["ap_box"]["ci_above_0"] else
         "suggested" if pos >= 4 else "not reproduced")
    out["E2"] = entry(v, s, buckets_positive=pos,
                      what="CROP+ISUS - CROP, box AP per bucket (>0 in at least 4 of 5) and overall")
    # E3: the combination
    s = {m: _stat(_diffs(runs, "CROP+CABB+ISUS", "CROP", metric(m))) for m in ("pq", "ap_box")}
    s.update({f"box_{i}": _stat(_diffs(runs, "CROP+CABB+ISUS", "CROP", bucket(i))) for i in range(nb)})
    every = all(s[f"box_{i}"]["mean"] >= 0 for i in range(nb))
    v = ("reproduced" if s["pq"]["ci_above_0"] and s["ap_box"]["ci_above_0"] and every else
         "suggested" if s["pq"]["mean"] > 0 and s["ap_box"]["mean"] > 0 else "not reproduced")
    out["E3"] = entry(v, s, every_bucket_nonnegative=every,
                      what="CROP+CABB+ISUS - CROP, PQ and box AP overall and per bucket")
    # E3': PC_th gains more than PQ_th
    d = _diffs(runs, "CROP+CABB+ISUS", "CROP", lambda ev: (None if ev.get("pc_th") is None or ev.get("pq_th") is None
                                                          else ev["pc_th"] - ev["pq_th"]))
    x = _stat(d)
    v = "reproduced" if x["ci_above_0"] else "suggested" if x["mean"] > 0 else "not reproduced"
    out["E3'"] = entry(v, {"pc_th_minus_pq_th": x},
                       what="(CROP+CABB+ISUS - CROP) in PC_th minus the same in PQ_th")
    # E4: crop vs full (context)
    s = {"box_smallest": _stat(_diffs(runs, "CROP", "FULL", bucket(0))),
         "box_top": _stat(_diffs(runs, "CROP", "FULL", bucket(top)))}
    lo, hi = s["box_smallest"], s["box_top"]
    signs = lo["mean"] > 0 and hi["mean"] < 0
    v = ("reproduced" if signs and lo["ci_above_0"] and hi["ci_below_0"] else
         "suggested" if signs else "not reproduced")
    out["E4"] = entry(v, s, what="CROP - FULL, box AP in the smallest (>0) and the top (<0) bucket")
    return out


def markdown(summary: dict) -> str:
    """The report as Markdown tables for docs/evidence.md: every run, means ± std, paired
    differences to CROP per size bucket, and the verdict on each pre-registered criterion."""
    def pct(v, sign=False):
        return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else (f"{100 * v:+.1f}" if sign else f"{100 * v:.1f}")

    def pm(st: dict, sign=False):
        m, s = st.get("mean", st.get("diff")), st.get("std", st.get("ci95"))
        return pct(m, sign) + ("" if s is None or math.isnan(s) else f" ± {100 * s:.1f}")

    cols = ("pq", "pq_th", "pq_st", "pq_dagger", "pc", "pc_th", "ap_box", "ap_mask")
    head = "| PQ | PQ_th | PQ_st | PQ† | PC | PC_th | box AP | mask AP |"
    out = ["### Every run (percent)", "",
           "| config | seed " + head + " box AP per size bucket (smallest → largest) | steps | training time |",
           "|---|---|" + "---|" * (len(cols) + 3)]
    for config in CONFIGS:
        for seed, r in sorted(summary["runs"].get(config, {}).items(), key=lambda kv: int(kv[0])):
            bx = " / ".join(pct(v) for v in (r.get("buckets") or {}).get("box") or [])
            t = r.get("train_seconds")
            out.append(f"| {config} | {seed} | " + " | ".join(pct(r.get(m)) for m in cols)
                       + f" | {bx} | {r.get('steps')} | {'–' if t is None else f'{t / 60:.0f} min'} |")
    out += ["", "### Mean ± standard deviation over seeds (percent)", "",
            "| config | seeds " + head, "|---|---|" + "---|" * len(cols)]
    for config in CONFIGS:
        row = summary["mean"].get(config)
        if row:
            out.append(f"| {config} | {len(row['seeds'])} | " + " | ".join(pm(row[m]) for m in cols) + " |")
    crit = summary.get("criteria") or {}
    nb = _num_buckets(summary["runs"])
    pairs = [("CROP+CABB", BASELINE), ("CROP+ISUS", BASELINE), ("CROP+CABB+ISUS", BASELINE), (BASELINE, "FULL"),
             ("CROP+CABB+ISUS", "CROP+ISUS")]  # the last: CABB under ISUS crops, exploratory (not in the design)
    out += ["", "### Paired differences, box AP per size bucket and overall (percent points, mean ± 95 % CI)", "",
            "Rows marked exploratory were not in the pre-registered design; they are reported, not judged.", "",
            "| difference | seeds | " + " | ".join(f"bucket {i + 1}" for i in range(nb)) + " | box AP | PQ |",
            "|---|---|" + "---|" * (nb + 2)]
    for a, b in pairs:
        if a not in summary["runs"] or b not in summary["runs"]:
            continue
        runs = {c: {int(k): v for k, v in summary["runs"][c].items()} for c in (a, b)}
        cells = [_stat(_diffs(runs, a, b, _bucket(i))) for i in range(nb)]
        cells += [_stat(_diffs(runs, a, b, _metric(m))) for m in ("ap_box", "pq")]
        n = min(c["n"] for c in cells)
        tag = " (exploratory)" if (a, b) == ("CROP+CABB+ISUS", "CROP+ISUS") else ""
        out.append(f"| {a} − {b}{tag} | {n} | " + " | ".join(
            pct(c["mean"], True) + ("" if math.isnan(c["ci95"]) else f" ± {100 * c['ci95']:.1f}") for c in cells) + " |")
    if crit:
        out += ["", "### The pre-registered criteria", "", "| effect | measured as | seeds | verdict |", "|---|---|---|---|"]
        for name, c in crit.items():
            v = c["verdict"] + (" (provisional)" if c["provisional"] and c["n"] else "")
            out.append(f"| {name} | {c['what']} | {c['n']} | **{v}** |")
    return "\n".join(out) + "\n"


def _finite(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


def format_criteria(crit: dict) -> str:
    lines = ["pre-registered criteria (docs/evidence.md), paired differences in percent points, mean ± 95 % CI"]
    for name, c in crit.items():
        flag = f" (provisional: {c['n']} of {DESIGN_SEEDS} seeds)" if c["provisional"] and c["n"] else ""
        lines.append(f"{name:4s} {c['verdict'] + flag:40s} {c['what']}")
        for key, st in {**c["stats"], **c.get("beside", {})}.items():
            if st["n"]:
                per = " ".join(f"{100 * x:+.1f}" for x in st["seeds"])
                lines.append(f"       {key:18s}{_pm(st['mean'], st['ci95'], sign=True):>14s}   per seed: {per}")
    return "\n".join(lines)


def _pm(m: float, s: float, sign: bool = False) -> str:
    if m is None or math.isnan(m):
        return "-"
    head = f"{100 * m:+.1f}" if sign else f"{100 * m:.1f}"
    return head if s is None or math.isnan(s) else f"{head}±{100 * s:.1f}"


def main(argv=None) -> None:
    args = parse_args(argv)
    scale = SCALES[args.scale]
    args.data = args.data or args.out / "data"
    if not args.report:
        run_all(args, scale)
    if not args.dry_run:
        report(args.out)


if __name__ == "__main__":
    main()
