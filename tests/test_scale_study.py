"""examples/scale_study.py: the study runner at its smoke scale (2 configurations x 1 seed x 2 steps),
its report, and that it skips finished runs and resumes interrupted ones."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torchvision")
SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "scale_study.py"


def study(*args):
    res = subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=1800)
    assert res.returncode == 0, (res.stdout[-3000:], res.stderr[-3000:])
    return res.stdout


def test_smoke_study_runs_reports_skips_and_resumes(tmp_path):
    out = tmp_path / "study"
    common = ["--out", out, "--scale", "smoke", "--configs", "CROP,CROP+CABB", "--seeds", "0"]
    log = study(*common)
    for config in ("CROP", "CROP+CABB"):
        ev = json.loads((out / config / "seed0" / "eval.json").read_text())
        assert ev["steps"] == 2 and ev["eval_split"] == "validation" and ev["images"] == 2
        assert 0 <= ev["pq"] <= 1
    assert "[2/2] CROP+CABB seed 0" in log
    rep = json.loads((out / "report" / "results.json").read_text())
    assert set(rep["runs"]) == {"CROP", "CROP+CABB"} and set(rep["paired_vs_CROP"]) == {"CROP+CABB"}
    assert rep["paired_vs_CROP"]["CROP+CABB"]["pq"]["n"] == 1
    assert (out / "report" / "table.txt").read_text().startswith("config")
    md = (out / "report" / "table.md").read_text()
    assert "| CROP+CABB | 0 |" in md and "| CROP+CABB − CROP | 1 |" in md
    assert "### The pre-registered criteria" in md and set(rep["criteria"]) >= {"E1", "E2", "E3", "E4"}
    # the data was written once, with a validation split, in the scale-study preset
    import isus
    man = isus.synth.read_manifest(out / "data" / "mvd")
    assert man["preset"] == "scale-study" and set(man["splits"]) == {"training", "validation"}
    # finished runs are skipped; a run without eval.json but with a checkpoint resumes from it
    (out / "CROP+CABB" / "seed0" / "eval.json").unlink()
    again = study(*common, "--dry-run")
    assert "CROP seed 0: done, skipped" in again
    assert "--resume" in again.split("CROP+CABB seed 0:")[1].splitlines()[0]
    study(*common)
    assert json.loads((out / "CROP+CABB" / "seed0" / "eval.json").read_text())["steps"] == 2
    # --report alone reads what exists
    assert "paired difference to CROP" in study("--out", out, "--report")


def test_a_study_begun_with_other_code_is_not_continued(tmp_path, capsys):
    from examples.scale_study import pin_code

    pin_code(tmp_path, allow_new=False)
    head = (tmp_path / "code.txt").read_text().strip()
    assert len(head.split("-")[0]) == 40
    pin_code(tmp_path, allow_new=False)  # the same code continues
    (tmp_path / "code.txt").write_text("0" * 40 + "\n")
    with pytest.raises(SystemExit, match="was started with commit 0000"):
        pin_code(tmp_path, allow_new=False)
    pin_code(tmp_path, allow_new=True)


def _ev(top=0.1, others=(0.2, 0.2, 0.2, 0.2), pq=0.5, ap=0.2, pq_th=0.3, pc_th=0.5):
    box = [*others, top]
    return {"pq": pq, "pq_th": pq_th, "pc_th": pc_th, "ap_box": ap,
            "buckets": {"box": box, "mask": [b + 0.01 for b in box]}}


def _study(cfgs: dict) -> dict:
    """{config: [eval per seed]} -> the runner's {config: {seed: eval}}."""
    return {c: dict(enumerate(evs)) for c, evs in cfgs.items()}


def test_criteria_follow_the_preregistered_rules():
    from examples.scale_study import criteria, format_criteria

    crop = [_ev(top=0.10), _ev(top=0.12), _ev(top=0.08)]
    # E1: +5, +6, +4 points in the top bucket: mean 5, CI 4.303 * 1 / sqrt(3) = 2.48 -> reproduced
    cabb = [_ev(top=0.15), _ev(top=0.18), _ev(top=0.12)]
    crit = criteria(_study({"CROP": crop, "CROP+CABB": cabb}))
    e1 = crit["E1"]
    assert e1["verdict"] == "reproduced" and e1["n"] == 3 and not e1["provisional"]
    assert abs(e1["stats"]["box_top"]["mean"] - 0.05) < 1e-12
    assert abs(e1["stats"]["box_top"]["ci95"] - 4.303 * 0.01 / 3 ** 0.5) < 1e-9
    assert crit["E1'"]["verdict"] == "reproduced"
    assert crit["E2"]["verdict"] == "no data" and crit["E4"]["verdict"] == "no data"
    # positive at every seed but too spread for the CI: suggested; one seed below: not reproduced
    spread = [_ev(top=0.101), _ev(top=0.30), _ev(top=0.081)]
    assert criteria(_study({"CROP": crop, "CROP+CABB": spread}))["E1"]["verdict"] == "suggested"
    mixed = [_ev(top=0.15), _ev(top=0.11), _ev(top=0.12)]
    assert criteria(_study({"CROP": crop, "CROP+CABB": mixed}))["E1"]["verdict"] == "not reproduced"
    # E1': a bucket whose whole interval lies below 0 breaks it
    worse = [_ev(top=0.15, others=(0.2, 0.15, 0.2, 0.2)), _ev(top=0.18, others=(0.2, 0.16, 0.2, 0.2)),
             _ev(top=0.12, others=(0.2, 0.14, 0.2, 0.2))]
    crit = criteria(_study({"CROP": crop, "CROP+CABB": worse}))
    assert crit["E1'"]["verdict"] == "not reproduced" and crit["E1'"]["stats"]["box_1"]["ci_below_0"]
    # E2: ISUS better in 4 of 5 buckets, overall CI above 0 -> reproduced; overall CI across 0 -> suggested
    isus_ = [_ev(top=t - 0.01, others=(0.21, 0.22, 0.23, 0.24), ap=a)
             for t, a in ((0.10, 0.22), (0.12, 0.225), (0.08, 0.215))]
    crit = criteria(_study({"CROP": crop, "CROP+ISUS": isus_}))
    assert crit["E2"]["verdict"] == "reproduced" and crit["E2"]["buckets_positive"] == 4
    isus_[1]["ap_box"] = 0.1
    assert criteria(_study({"CROP": crop, "CROP+ISUS": isus_}))["E2"]["verdict"] == "suggested"
    # E3 and E3': PQ and box AP up at every seed, no bucket down; PC_th up more than PQ_th
    both = [_ev(top=0.11, pq=0.52, ap=0.22, pc_th=0.55), _ev(top=0.13, pq=0.53, ap=0.23, pc_th=0.56),
            _ev(top=0.09, pq=0.52, ap=0.22, pc_th=0.56)]
    crit = criteria(_study({"CROP": crop, "CROP+CABB+ISUS": both}))
    assert crit["E3"]["verdict"] == "reproduced" and crit["E3'"]["verdict"] == "reproduced"
    both[0]["buckets"]["box"][0] = 0.1  # one bucket's mean below 0 -> only suggested
    assert criteria(_study({"CROP": crop, "CROP+CABB+ISUS": both}))["E3"]["verdict"] == "suggested"
    # E4: crops better on the smallest, worse on the top bucket than FULL
    full = [_ev(top=0.2, others=(0.1, 0.2, 0.2, 0.2)), _ev(top=0.21, others=(0.11, 0.2, 0.2, 0.2)),
            _ev(top=0.19, others=(0.09, 0.2, 0.2, 0.2))]
    crit = criteria(_study({"CROP": crop, "FULL": full}))
    assert crit["E4"]["verdict"] == "reproduced"
    crit = criteria(_study({"CROP": crop, "FULL": [_ev(top=0.05) for _ in range(3)]}))
    assert crit["E4"]["verdict"] == "not reproduced"
    # the Markdown report carries the same numbers and verdicts
    from examples.scale_study import markdown, mean_std

    runs = _study({"CROP": crop, "CROP+CABB": cabb})
    summary = {"runs": {c: {str(k): ev for k, ev in r.items()} for c, r in runs.items()},
               "mean": {c: {"seeds": list(r), **{m: dict(zip(("mean", "std"), mean_std([ev.get(m) for ev in r.values()])))
                                               for m in ("pq", "pq_th", "pq_st", "pq_dagger", "pc", "pc_th", "ap_box",
                                                         "ap_mask")}} for c, r in runs.items()},
               "criteria": criteria(runs)}
    md = markdown(summary)
    assert "| CROP+CABB − CROP | 3 | +0.0 ± 0.0 | +0.0 ± 0.0 | +0.0 ± 0.0 | +0.0 ± 0.0 | +5.0 ± 2.5 |" in md
    assert "| E1 | CROP+CABB - CROP, box AP in the top size bucket | 3 | **reproduced** |" in md
    # fewer seeds than the design: provisional, and E1' has no interval to judge by
    crit = criteria(_study({"CROP": crop[:1], "CROP+CABB": cabb[:1]}))
    assert crit["E1"]["provisional"] and crit["E1"]["verdict"] == "suggested"
    assert crit["E1'"]["verdict"] == "undetermined"
    assert "provisional: 1 of 3 seeds" in format_criteria(crit)


# -- issue 22: unreadable and impossible eval.json -----------------------------------------------
def _valid_eval(pq=0.5, images=2):
    fr = ("pq", "sq", "rq", "pq_th", "sq_th", "rq_th", "pq_st", "sq_st", "rq_st", "pq_dagger", "pq_dagger_th",
          "pq_dagger_st", "pc", "pc_th", "pc_st", "miou", "ap_box", "ap_mask")
    box = [0.1, 0.2, 0.3, 0.4, 0.5]
    return {**{k: pq for k in fr}, "images": images, "steps": 2, "eval_split": "validation",
            "ap": {"box": {"ap": 0.2, "ap50": 0.4}, "mask": {"ap": 0.2}},
            "buckets": {"percentiles": [0, 25, 50, 75, 95, 100], "edges": [1.0, 10.0, 20.0, 30.0, 40.0, 50.0],
                        "instances": [1, 1, 1, 1, 1], "box": box, "mask": box},
            "per_class": {"car": {"id": 1, "isthing": True, "pq": pq, "tp": 1, "fp": 0, "fn": 0}}}


def _write_runs(out, evs):
    for (config, seed), ev in evs.items():
        run = out / config / f"seed{seed}"
        run.mkdir(parents=True, exist_ok=True)
        (run / "eval.json").write_text(ev if isinstance(ev, str) else json.dumps(ev))


def test_an_unreadable_eval_json_is_an_unfinished_run(tmp_path, capsys):
    from examples.scale_study import collect, report

    good = json.dumps(_valid_eval())
    _write_runs(tmp_path, {("CROP", 0): _valid_eval(), ("CROP+CABB", 0): good[: len(good) // 2],
                           ("CROP+ISUS", 0): "", ("FULL", 0): "[1, 2]"})
    runs = collect(tmp_path)
    assert set(runs) == {"CROP"}
    said = capsys.readouterr().out
    for config in ("CROP+CABB", "CROP+ISUS", "FULL"):
        assert f"{config}/seed0/eval.json" in said
    assert "unfinished" in said
    assert set(report(tmp_path)["runs"]) == {"CROP"}
    # the runner reruns it instead of skipping it (dry run: prints the command)
    log = study("--out", tmp_path, "--scale", "smoke", "--configs", "CROP,CROP+CABB", "--seeds", "0", "--dry-run")
    assert "CROP seed 0: done, skipped" in log and "CROP+CABB seed 0: done" not in log
    assert "CROP+CABB seed 0: " + sys.executable in log and "unfinished" in log


@pytest.mark.parametrize("change,field", [(lambda d: d.update(pq=5.0), "pq"),
                                          (lambda d: d["buckets"]["box"].__setitem__(4, float("nan")), "buckets.box"),
                                          (lambda d: d.update(ap_box=float("inf")), "ap_box")])
def test_a_run_with_impossible_values_is_refused(tmp_path, change, field):
    from examples.scale_study import report

    bad = _valid_eval()
    change(bad)
    _write_runs(tmp_path, {("CROP", 0): _valid_eval(), ("CROP+CABB", 0): bad})
    with pytest.raises(SystemExit) as e:
        report(tmp_path)
    assert "CROP+CABB/seed0/eval.json" in str(e.value) and field in str(e.value)


def test_runs_evaluated_on_other_data_are_refused(tmp_path):
    from examples.scale_study import report

    other = _valid_eval(images=3)
    other["buckets"]["edges"] = [2.0, 10.0, 20.0, 30.0, 40.0, 50.0]
    _write_runs(tmp_path, {("CROP", 0): _valid_eval(), ("CROP+CABB", 0): other})
    with pytest.raises(SystemExit, match="cannot be compared") as e:
        report(tmp_path)
    assert "images" in str(e.value) and "bucket edges" in str(e.value)
