"""Study 2's report: every run, means, paired differences and the pre-registered verdicts
(docs/evidence-study-2.md, "Endpoints"), as results.json, table.md, table.txt and plots that show
every seed. Deterministic: the same runs give the same files, byte for byte.

    python examples/scale_study2.py --out runs/scale-study-2 --report [--publish docs/evidence/study-2]
"""
from __future__ import annotations

import json
import math
import re
import statistics
from pathlib import Path
from typing import Any, Callable

from examples.scale_study import _finite, _stat, mean_std

#: arms in the order of the design
ARMS = ("CROP", "CROP+CABB", "CROP+ISUS", "CUS-WIDE", "CROP+CABB+ISUS", "FULL-LOWRES")
#: seeds the design fixes per arm; verdicts on fewer are provisional
DESIGN_SEEDS = {"CROP": 5, "CROP+CABB": 5, "CROP+ISUS": 5, "CUS-WIDE": 5, "CROP+CABB+ISUS": 3, "FULL-LOWRES": 3}
#: minimal detectable effects of the power analysis (fractions: AP points / 100)
MDE = {"E1": 0.037, "E2": 0.0047, "E2-control": 0.0047}
#: E1' non-inferiority margin (fraction)
MARGIN = 0.03
RANGE = "larger_than_crop"
METRICS = ("pq", "pq_th", "pc_th", "ap_box", "ap_mask", "large_box", "large_ap75", "top_box")

Getter = Callable[[dict], "float | None"]


# -- what a run measured -----------------------------------------------------------------------
def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def metric(name: str) -> Getter:
    """A run's value of ``name``: an eval.json key, or one of the derived ones (``large_box``,
    ``large_ap75``: box AP / AP75 on the larger-than-crop range; ``top_box``: box AP in the top
    bucket; ``box_<i>``: in bucket i; ``pc_minus_pq_th``)."""
    def get(ev: dict) -> float | None:
        if name in ("large_box", "large_ap75"):
            box = ((ev.get("ranges") or {}).get(RANGE) or {}).get("box") or {}
            return _num(box.get("ap" if name == "large_box" else "ap75"))
        if name == "top_box" or name.startswith("box_"):
            b = (ev.get("buckets") or {}).get("box") or []
            i = len(b) - 1 if name == "top_box" else int(name[4:])
            return _num(b[i]) if 0 <= i < len(b) else None
        if name == "pc_minus_pq_th":
            a, b = _num(ev.get("pc_th")), _num(ev.get("pq_th"))
            return None if a is None or b is None else a - b
        return _num(ev.get(name))
    return get


def extents(ev: dict) -> dict[tuple[str, int], float]:
    """``(image, gt segment id) -> e = ½ [ln(w_pred / w_gt) + ln(h_pred / h_gt)]`` of the run's
    matched larger-than-crop instances."""
    out = {}
    for rec in ((ev.get("ranges") or {}).get(RANGE) or {}).get("matches") or []:
        image, seg, w, h = rec[0], rec[1], _num(rec[2]), _num(rec[3])
        if w is not None and h is not None and w > 0 and h > 0:
            out[(str(image), int(seg))] = 0.5 * (math.log(w) + math.log(h))
    return out


# -- statistics --------------------------------------------------------------------------------
def stat(d: list[float]) -> dict:
    """Study 1's paired statistics (mean, 95 % CI half-width) with the interval's ends."""
    st = _stat(d)
    return {**st, "lo": st["mean"] - st["ci95"], "hi": st["mean"] + st["ci95"]}


def paired(runs: dict, a: str, b: str, get: Getter) -> dict:
    seeds = sorted(set(runs.get(a, {})) & set(runs.get(b, {})))
    d, used = [], []
    for s in seeds:
        x, y = get(runs[a][s]), get(runs[b][s])
        if x is not None and y is not None:
            d.append(x - y)
            used.append(s)
    return {**stat(d), "seed_ids": used}


def mechanism(runs: dict, a: str = "CROP+CABB", b: str = "CROP") -> dict:
    """E1-mechanism: per seed, the mean log extent ratio over the larger-than-crop instances both
    arms detect, for each arm, and their difference."""
    per_seed = []
    for s in sorted(set(runs.get(a, {})) & set(runs.get(b, {}))):
        ea, eb = extents(runs[a][s]), extents(runs[b][s])
        both = sorted(set(ea) & set(eb))
        if not both:
            continue
        ma = sum(ea[k] for k in both) / len(both)
        mb = sum(eb[k] for k in both) / len(both)
        per_seed.append({"seed": s, "objects": len(both), a: ma, b: mb, "diff": ma - mb})
    return {"per_seed": per_seed, "diff": stat([r["diff"] for r in per_seed]),
            "bias_" + b: stat([r[b] for r in per_seed]), "bias_" + a: stat([r[a] for r in per_seed])}


def verdict(st: dict, mde: float | None = None) -> str:
    """reproduced (CI above 0) / opposite (CI below 0) / absent (CI includes 0, its upper end below
    the MDE) / inconclusive; ``not shown`` replaces absent/inconclusive without an MDE."""
    if st["n"] < 2 or math.isnan(st["ci95"]):
        return "no data" if st["n"] == 0 else "undetermined"
    if st["lo"] > 0:
        return "reproduced"
    if st["hi"] < 0:
        return "opposite"
    if mde is None:
        return "not shown"
    return "absent" if st["hi"] < mde else "inconclusive"


def criteria(runs: dict) -> dict:
    """Every pre-registered verdict, computed from the runs."""
    def entry(v: str, arms: tuple[str, ...], what: str, stats: dict, **extra) -> dict:
        ns = [s["n"] for s in stats.values() if isinstance(s, dict) and "n" in s]
        n = min(ns) if ns else 0
        design = min(DESIGN_SEEDS[x] for x in arms)
        return {"verdict": v, "what": what, "n": n, "design_seeds": design, "provisional": n < design,
                "stats": stats, **extra}

    out: dict[str, dict] = {}
    e1 = paired(runs, "CROP+CABB", "CROP", metric("large_box"))
    out["E1"] = entry(verdict(e1, MDE["E1"]), ("CROP", "CROP+CABB"),
                      "CROP+CABB - CROP, box AP on objects larger than the crop", {"large_box": e1},
                      beside={"top_box": paired(runs, "CROP+CABB", "CROP", metric("top_box")),
                              "large_ap75": paired(runs, "CROP+CABB", "CROP", metric("large_ap75"))})
    mech = mechanism(runs)
    out["E1-mechanism"] = entry(verdict(mech["diff"]), ("CROP", "CROP+CABB"),
                                "CROP+CABB - CROP, mean log extent ratio of larger-than-crop objects both detect",
                                {"log_extent_diff": mech["diff"]},
                                beside={"bias_CROP": mech["bias_CROP"], "bias_CROP+CABB": mech["bias_CROP+CABB"]},
                                per_seed=mech["per_seed"])
    nb = max((len((ev.get("buckets") or {}).get("box") or []) for r in runs.values() for ev in r.values()), default=0)
    other = {f"box_{i}": paired(runs, "CROP+CABB", "CROP", metric(f"box_{i}")) for i in range(max(nb - 1, 0))}
    if not other or any(s["n"] < 2 for s in other.values()):
        v = "undetermined"
    elif any(s["hi"] < 0 for s in other.values()):
        v = "harmed"
    elif all(s["lo"] > -MARGIN for s in other.values()):
        v = "kept"
    else:
        v = "inconclusive"
    out["E1'"] = entry(v, ("CROP", "CROP+CABB"), "CROP+CABB - CROP, box AP in buckets 1-4 (margin -3 points)", other)
    e2 = paired(runs, "CROP+ISUS", "CROP", metric("ap_box"))
    per_bucket = {f"box_{i}": paired(runs, "CROP+ISUS", "CROP", metric(f"box_{i}")) for i in range(nb)}
    out["E2"] = entry(verdict(e2, MDE["E2"]), ("CROP", "CROP+ISUS"), "CROP+ISUS - CROP, box AP overall",
                      {"ap_box": e2}, beside=per_bucket,
                      buckets_positive=sum(1 for s in per_bucket.values() if s["n"] and s["mean"] > 0))
    e2c = paired(runs, "CROP+ISUS", "CUS-WIDE", metric("ap_box"))
    out["E2-control"] = entry(verdict(e2c, MDE["E2-control"]), ("CROP+ISUS", "CUS-WIDE"),
                              "CROP+ISUS - CUS-WIDE (App. E control), box AP overall", {"ap_box": e2c},
                              beside={"range_alone": paired(runs, "CUS-WIDE", "CROP", metric("ap_box"))})
    e3 = {m: paired(runs, "CROP+CABB+ISUS", "CROP", metric(m)) for m in ("pq", "ap_box")}
    if min(s["n"] for s in e3.values()) < 2:
        v = "undetermined"
    elif all(s["lo"] > 0 for s in e3.values()):
        v = "reproduced"
    elif all(s["mean"] > 0 for s in e3.values()):
        v = "suggested"
    else:
        v = "not reproduced"
    out["E3"] = entry(v, ("CROP", "CROP+CABB+ISUS"), "CROP+CABB+ISUS - CROP, PQ and box AP", e3)
    e3p = paired(runs, "CROP+CABB+ISUS", "CROP", metric("pc_minus_pq_th"))
    v = ("undetermined" if e3p["n"] < 2 else "reproduced" if e3p["lo"] > 0 else
         "suggested" if e3p["mean"] > 0 else "not reproduced")
    out["E3'"] = entry(v, ("CROP", "CROP+CABB+ISUS"), "(CROP+CABB+ISUS - CROP) in PC_th minus PQ_th",
                       {"pc_minus_pq_th": e3p})
    e4 = {"box_smallest": paired(runs, "CROP", "FULL-LOWRES", metric("box_0")),
          "box_top": paired(runs, "CROP", "FULL-LOWRES", metric("top_box"))}
    if min(s["n"] for s in e4.values()) == 0:
        v = "no data"
    else:
        v = "signs as the paper" if e4["box_smallest"]["mean"] > 0 and e4["box_top"]["mean"] < 0 else \
            "signs not as the paper"
    out["E4"] = entry(v, ("CROP", "FULL-LOWRES"), "CROP - FULL-LOWRES, box AP in bucket 1 (>0) and 5 (<0), "
                      "exploratory", e4)
    return out


# -- study 1 and study 2 side by side ----------------------------------------------------------
def mde(sd: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest true paired difference a two-sided paired t-test on ``n`` seeds with paired
    standard deviation ``sd`` detects with probability ``power`` (noncentral t, exact)."""
    if n < 2 or not sd > 0 or math.isnan(sd):
        return float("nan")
    try:
        from scipy import optimize, stats
    except ImportError as e:  # pragma: no cover - scipy is in the test extra
        raise SystemExit("the side-by-side table needs scipy (pip install -e '.[test]')") from e
    df = n - 1
    crit = stats.t.ppf(1 - alpha / 2, df)

    def short(delta: float) -> float:
        nc = delta * math.sqrt(n) / sd
        p = float(stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc))
        return (1.0 if math.isnan(p) else p) - power  # scipy's nct gives NaN far in the tail, where power is 1

    return float(optimize.brentq(short, 1e-12 * sd, 100 * sd, xtol=1e-12 * sd))


#: (question, (study-1 criterion, its statistics), (study-2 ...)); None: not asked by that study; no
#: statistics: the verdict and what it tested
SIDE_BY_SIDE = (
    ("CABB: box AP of large objects", ("E1", ("box_top",)), ("E1", ("large_box",))),
    ("CABB: boxes of large objects come out too small, and CABB enlarges them", None,
     ("E1-mechanism", ("log_extent_diff",))),
    ("CABB keeps the other sizes", ("E1'", ()), ("E1'", ())),
    ("ISUS: overall box AP", ("E2", ("ap_box",)), ("E2", ("ap_box",))),
    ("ISUS against the same scale range without instance awareness (App. E)", None, ("E2-control", ("ap_box",))),
    ("CABB + ISUS: PQ and box AP", ("E3", ("pq", "ap_box")), ("E3", ("pq", "ap_box"))),
    ("PC_th gains more than PQ_th", ("E3'", ()), ("E3'", ())),
    ("crops against full images (study 1: at the test resolution; study 2: at half, exploratory)", ("E4", ("box_smallest", "box_top")),
     ("E4", ("box_smallest", "box_top"))),
)
#: what a missing cell means, per question
ABSENT = {"CABB: boxes of large objects come out too small, and CABB enlarges them": "not measured",
          "ISUS against the same scale range without instance awareness (App. E)": "not run"}


def _cell(crit: dict, name: str, keys: tuple[str, ...]) -> str:
    c = crit.get(name)
    if c is None:
        return "–"
    v = f"**{c['verdict']}**" + (" (provisional)" if c.get("provisional") and c.get("n") else "")
    if not keys:
        return f"{v}, {c.get('n', '–')} seeds: {c['what']}"
    digits = 2 if name == "E1-mechanism" else 1
    parts = []
    for key in keys:
        st = c["stats"].get(key)
        if not st or not st.get("n"):
            continue
        st = {**st, "ci95": float("nan") if st.get("ci95") is None else st["ci95"]}  # a published NaN reads as null
        seeds = [float(x) for x in st["seeds"]]
        part = f"{key} {_ci(st, 100.0, digits)} ({st['n']} seeds)"
        if name in ("E1", "E2", "E2-control"):
            d = mde(float(statistics.stdev(seeds)) if len(seeds) > 1 else float("nan"), len(seeds))
            if not math.isnan(d):
                part += f"; detectable at 80 % power: {100 * d:.{digits}f}"
        parts.append(part)
    return v + (": " + "; ".join(parts) if parts else "")


def side_by_side(study1: dict, study2: dict) -> str:
    """Markdown: each question both studies ask, with each one's paired difference (percent points,
    mean ± 95 % CI), seeds, verdict and, for the CABB and ISUS endpoints, the smallest effect its
    seeds' observed spread would detect at 80 % power. A ``study2`` without criteria (not yet
    reported) reads as running in every row."""
    c1, c2 = study1.get("criteria") or {}, study2.get("criteria") or {}
    running = "running: no verdict before its last run"
    out = ["| question | study 1 (3 seeds from scratch, 224-px level rule) | study 2 (warm start, "
           "scale-consistent lengths) |", "|---|---|---|"]
    for question, one, two in SIDE_BY_SIDE:
        cells = [_cell(c, *spec) if spec else ABSENT.get(question, "–") for c, spec in ((c1, one), (c2, two))]
        if not c2:
            cells[1] = running
        out.append(f"| {question} | " + " | ".join(cells) + " |")
    out += ["", "Differences in AP (or PQ) points; the mechanism row in hundredths of the log extent ratio. "
            "\"detectable at 80 % power\": the true paired difference that study's seeds, with the spread they "
            "showed, would detect in 4 of 5 repetitions (two-sided paired t-test, α = 0.05)."]
    return "\n".join(out) + "\n"


# -- the report --------------------------------------------------------------------------------
def collect(out: Path) -> tuple[dict, list[str]]:
    """Every finished run (a readable eval.json with its steps) and notes on those skipped."""
    runs: dict[str, dict[int, dict]] = {}
    notes = []
    for arm in ARMS:
        for path in sorted((out / arm).glob("seed*/eval.json")):
            try:
                ev = json.loads(path.read_text())
            except (OSError, ValueError) as e:
                notes.append(f"{path}: unreadable ({type(e).__name__}), counted as unfinished")
                continue
            if not isinstance(ev, dict) or "steps" not in ev:
                notes.append(f"{path}: not a finished run's eval.json, counted as unfinished")
                continue
            runs.setdefault(arm, {})[int(path.parent.name[4:])] = ev
            starts = resumed_at(path.parent)
            if starts:
                notes.append(f"{arm} seed {path.parent.name[4:]} was resumed from step "
                             + ", ".join(map(str, starts)) + " (not bit-identical to an uninterrupted run)")
    check_same_study(out, runs)
    return runs, notes


def resumed_at(run: Path) -> list[int]:
    """Steps a run's trainer resumed from (its train.log says "from step N to M" at each start)."""
    try:
        text = (run / "train.log").read_text(errors="replace")
    except OSError:
        return []
    return [int(n) for n in re.findall(r" from step (\d+) to \d+$", text, flags=re.M) if int(n) > 0]


def warm_digest(run: Path) -> str | None:
    """The sha256 prefix of the initial weights a run's trainer loaded (its train.log says so)."""
    try:
        text = (run / "train.log").read_text(errors="replace")
    except OSError:
        return None
    found = re.findall(r"^initial weights: .* \(sha256 ([0-9a-f]+)\)$", text, flags=re.M)
    return found[-1] if found else None


def check_same_study(out: Path, runs: dict) -> None:
    """Refuse runs that cannot belong to one study: evaluated on other data (split, image count,
    bucket edges) or started from other initial weights than the study's warm start. A run copied
    in from another study would otherwise be reported as this one's."""
    seen: dict[str, dict] = {}
    for arm, by_seed in runs.items():
        for seed, ev in by_seed.items():
            key = f"{arm}/seed{seed}"
            ident = {"eval_split": ev.get("eval_split"), "images": ev.get("images"),
                     "edges": (ev.get("buckets") or {}).get("edges"),
                     "warm start": warm_digest(out / arm / f"seed{seed}")}
            for k, v in ident.items():
                if v is None:
                    continue
                first = seen.setdefault(k, {"value": v, "run": key})
                if first["value"] != v:
                    raise SystemExit(f"{out / key}: {k} is {v!r}, but {first['run']} has {first['value']!r}; the runs "
                                     "are not of one study (copied in from another?): remove it or fix the folder")


def summarise(runs: dict) -> dict:
    summary: dict = {"runs": {}, "mean": {}}
    for arm in ARMS:
        by_seed = runs.get(arm)
        if not by_seed:
            continue
        summary["runs"][arm] = {str(s): {k: v for k, v in ev.items() if k not in ("predictions", "instances")}
                                for s, ev in sorted(by_seed.items())}
        summary["mean"][arm] = {m: dict(zip(("mean", "std"), mean_std(
            [x for x in (metric(m)(ev) for ev in by_seed.values()) if x is not None]))) for m in METRICS}
        summary["mean"][arm]["seeds"] = sorted(by_seed)
    summary["criteria"] = criteria(runs)
    return summary


def _pct(v: float | None, sign: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{100 * v:+.1f}" if sign else f"{100 * v:.1f}"


def _ci(st: dict, scale: float = 100.0, digits: int = 1) -> str:
    if not st["n"]:
        return "–"
    m = f"{scale * st['mean']:+.{digits}f}"
    return m if math.isnan(st["ci95"]) else f"{m} ± {scale * st['ci95']:.{digits}f}"


def markdown(summary: dict, notes: list[str]) -> str:
    heads = ("PQ", "PQ_th", "PC_th", "box AP", "mask AP", "box AP > crop", "AP75 > crop", "box AP top bucket")
    out = ["### Every run (percent)", "",
           "| arm | seed | " + " | ".join(heads) + " | box AP per size bucket | matched > crop | steps | training, last start |",
           "|---|---|" + "---|" * (len(heads) + 4)]
    for arm, by_seed in summary["runs"].items():
        for seed, ev in sorted(by_seed.items(), key=lambda kv: int(kv[0])):
            bx = " / ".join(_pct(_num(v)) for v in (ev.get("buckets") or {}).get("box") or [])
            rng = (ev.get("ranges") or {}).get(RANGE) or {}
            matched = f"{(rng.get('extent') or {}).get('matched', '–')} of {rng.get('instances', '–')}"
            t = ev.get("train_seconds")
            out.append(f"| {arm} | {seed} | " + " | ".join(_pct(metric(m)(ev)) for m in METRICS)
                       + f" | {bx} | {matched} | {ev.get('steps')} | {'–' if t is None else f'{t / 60:.0f} min'} |")
    out += ["", "\"training, last start\": the training time of the trainer's last start only; a run's earlier "
            "starts (the notes list them) are not counted (the runner's log times each), and it includes whatever else shared the "
            "machine.", "", "### Mean ± standard deviation over seeds (percent)", "",
            "| arm | seeds | " + " | ".join(heads) + " |", "|---|---|" + "---|" * len(heads)]
    for arm, row in summary["mean"].items():
        cells = []
        for m in METRICS:
            mu, sd = row[m]["mean"], row[m]["std"]
            cells.append(_pct(mu) + ("" if sd is None or math.isnan(sd) else f" ± {100 * sd:.1f}"))
        out.append(f"| {arm} | {len(row['seeds'])} | " + " | ".join(cells) + " |")
    out += ["", "### The pre-registered endpoints (paired by seed; percent points, mean ± 95 % CI)", "",
            "| endpoint | measured as | seeds (design) | difference | per seed | verdict |", "|---|---|---|---|---|---|"]
    for name, c in summary["criteria"].items():
        for key, st in c["stats"].items():
            scale, digits = (100.0, 2) if name == "E1-mechanism" else (100.0, 1)
            per = " ".join(f"{scale * x:+.{digits}f}" for x in st["seeds"])
            v = c["verdict"] + (" (provisional)" if c["provisional"] and c["n"] else "")
            label = c["what"] if len(c["stats"]) == 1 else f"{c['what']}: {key}"
            out.append(f"| {name} | {label} | {st['n']} ({c['design_seeds']}) | {_ci(st, scale, digits)} | {per} | "
                       f"**{v}** |")
    out += ["", "E1-mechanism is in hundredths of the log extent ratio (−5 ≈ boxes 5 % too small).", "",
            "### Reported beside the endpoints (no verdict)", "", "| endpoint | quantity | seeds | difference |",
            "|---|---|---|---|"]
    for name, c in summary["criteria"].items():
        for key, st in (c.get("beside") or {}).items():
            digits = 2 if name == "E1-mechanism" else 1
            out.append(f"| {name} | {key} | {st['n']} | {_ci(st, 100.0, digits)} |")
    if notes:
        out += ["", "Notes: " + "; ".join(notes)]
    return "\n".join(out) + "\n"


def plots(summary: dict, runs: dict, folder: Path) -> list[Path]:
    """Every plot shows each seed: paired differences per endpoint (points and CI bars), box AP
    per size bucket per arm (seed points and means), and the extent of large objects per arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.hashsalt"] = "isus"
    written = []
    crit = summary["criteria"]
    rows = [(n, k, st) for n, c in crit.items() for k, st in c["stats"].items() if st["n"] and n != "E1-mechanism"]
    if rows:
        fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.2))
        for y, (_, _, st) in enumerate(rows):
            ax.scatter([100 * x for x in st["seeds"]], [y] * st["n"], s=14, color="0.4", zorder=3)
            if not math.isnan(st["ci95"]):
                ax.errorbar(100 * st["mean"], y, xerr=100 * st["ci95"], fmt="o", color="C3", capsize=3, zorder=4)
        ax.axvline(0, color="k", lw=0.8)
        ax.set_yticks(range(len(rows)), [f"{n} {k}" for n, k, _ in rows], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("paired difference, AP points (grey: each seed; red: mean ± 95 % CI)")
        ax.set_title("Study 2: pre-registered endpoints")
        fig.tight_layout()
        written.append(folder / "endpoints.png")
        fig.savefig(written[-1], dpi=110, metadata={"Software": None})
        plt.close(fig)
    arms = [a for a in ARMS if a in runs]
    nb = max((len((ev.get("buckets") or {}).get("box") or []) for r in runs.values() for ev in r.values()), default=0)
    if arms and nb:
        fig, ax = plt.subplots(figsize=(10, 4))
        width = 0.8 / len(arms)
        for j, arm in enumerate(arms):
            for i in range(nb):
                vals = [v for v in (metric(f"box_{i}")(ev) for ev in runs[arm].values()) if v is not None]
                x = i + (j - (len(arms) - 1) / 2) * width
                if vals:
                    ax.bar(x, 100 * sum(vals) / len(vals), width, color=f"C{j}", alpha=0.5,
                           label=arm if i == 0 else None)
                    ax.scatter([x] * len(vals), [100 * v for v in vals], s=8, color=f"C{j}", zorder=3)
        ax.set_xticks(range(nb), [f"bucket {i + 1}" for i in range(nb)])
        ax.set_ylabel("box AP (%)")
        ax.set_title("Box AP by size bucket: bars are means, points are seeds")
        ax.legend(fontsize=8, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.1))
        fig.tight_layout()
        written.append(folder / "ap_by_size.png")
        fig.savefig(written[-1], dpi=110, metadata={"Software": None})
        plt.close(fig)
    per = crit["E1-mechanism"].get("per_seed") or []
    if per:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for r in per:
            ax.plot([0, 1], [r["CROP"], r["CROP+CABB"]], "-o", color="0.5", ms=4)
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xticks([0, 1], ["CROP", "CROP+CABB"])
        ax.set_xlim(-0.3, 1.3)
        ax.set_ylabel("mean log extent ratio")
        ax.set_title("Objects larger than the crop that both arms detect\n(one line per seed; < 0: boxes too small)",
                     fontsize=9)
        fig.tight_layout()
        written.append(folder / "extent.png")
        fig.savefig(written[-1], dpi=110, metadata={"Software": None})
        plt.close(fig)
    return written


#: study 1's published results, for the side-by-side table
STUDY1 = Path(__file__).resolve().parents[1] / "docs" / "evidence" / "results.json"


def report(out: Path, folder: Path, study1: Path | None = STUDY1) -> dict:
    """Build every file of the report into ``folder``; with ``study1`` (its results.json) also
    ``side_by_side.md``, the two studies' answers to the same questions."""
    runs, notes = collect(out)
    if not runs:
        raise SystemExit(f"{out}: no finished run (no <arm>/seed*/eval.json)")
    folder.mkdir(parents=True, exist_ok=True)
    summary = summarise(runs)
    study = out / "study.json"
    if study.exists():
        summary["study"] = json.loads(study.read_text())
    summary["notes"] = notes
    md = markdown(summary, notes)
    (folder / "results.json").write_text(json.dumps(_finite(summary), indent=1, allow_nan=False) + "\n")
    (folder / "table.md").write_text(md)
    files = [folder / "results.json", folder / "table.md", *plots(summary, runs, folder)]
    if study1 is not None and study1.exists():
        files.append(folder / "side_by_side.md")
        files[-1].write_text(side_by_side(json.loads(study1.read_text()), summary))
    print(md)
    print("wrote " + ", ".join(str(p) for p in files))
    return summary
