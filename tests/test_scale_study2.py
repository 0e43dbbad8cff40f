"""examples/scale_study2.py: the study-2 runner at its smoke scale (warm start + 2 arms x 1 seed x
2 steps), its provenance pin, per-run lock, and how it treats finished and unreadable runs."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torchvision")
SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "scale_study2.py"


def study(*args, ok=True):
    res = subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=1800)
    if ok:
        assert res.returncode == 0, (res.stdout[-3000:], res.stderr[-3000:])
    return res


def test_smoke_study_warm_starts_every_arm_and_skips_and_resumes(tmp_path):
    """One arm is enough to check the runner (every arm runs the same trainer; the commands of all
    of them are checked by --dry-run below): the warm start, an arm started from it, skip, resume."""
    out = tmp_path / "study"
    common = ["--out", out, "--scale", "smoke", "--arms", "CUS-WIDE", "--seeds", "0"]
    log = study(*common).stdout
    warm = out / "warmstart" / "checkpoint.pt"
    assert warm.exists() and "[warm start]" in log and "[1/1] CUS-WIDE seed 0" in log
    run = out / "CUS-WIDE" / "seed0"
    ev = json.loads((run / "eval.json").read_text())
    assert ev["steps"] == 2 and ev["images"] == 2 and "larger_than_crop" in ev["ranges"]
    assert "initial weights:" in (run / "train.log").read_text()
    cmd = log.split("CUS-WIDE seed 0:")[1].splitlines()[0]
    assert "--scale-range 0.25,4" in cmd and "--length-scale 0.25" in cmd and f"--init-weights {warm}" in cmd
    pinned = json.loads((out / "study.json").read_text())
    assert pinned["study"] == "scale-study-2" and pinned["scale"] == "smoke"
    # every other arm's command, without running them: each starts from the warm start
    plan = study("--out", out, "--scale", "smoke", "--seeds", "0", "--dry-run").stdout
    for arm in ("CROP", "CROP+CABB", "CROP+ISUS", "CROP+CABB+ISUS", "FULL-LOWRES"):  # CUS-WIDE: done
        line = plan.split(f"{arm} seed 0:")[1].splitlines()[0]
        assert f"--init-weights {warm}" in line and "--eval-range larger_than_crop=4096:inf" in line
    assert "--box-loss cabb" in plan.split("CROP+CABB seed 0:")[1].splitlines()[0]
    assert "--shortest-side 60" in plan.split("FULL-LOWRES seed 0:")[1].splitlines()[0]
    # a finished run is skipped; a truncated eval.json is an unfinished run, resumed from its checkpoint
    (run / "eval.json").write_text('{"pq": 0.')
    again = study(*common, "--dry-run").stdout
    assert "[warm start]: done, skipped" in again
    assert "--resume" in again.split("CUS-WIDE seed 0:")[1].splitlines()[0]
    study(*common)
    assert json.loads((run / "eval.json").read_text())["steps"] == 2


def test_a_folder_of_another_study_or_scale_is_refused(tmp_path):
    from examples.scale_study2 import pin_study

    pin_study(tmp_path, "smoke", allow_new=False)
    pin_study(tmp_path, "smoke", allow_new=False)  # the same study continues
    with pytest.raises(SystemExit, match="at scale 'smoke', not 'scale-study-2' at 'cpu'"):
        pin_study(tmp_path, "cpu", allow_new=False)
    rec = json.loads((tmp_path / "study.json").read_text())
    (tmp_path / "study.json").write_text(json.dumps({**rec, "code": "0" * 40}))
    with pytest.raises(SystemExit, match="was started with commit 0000"):
        pin_study(tmp_path, "smoke", allow_new=False)
    pin_study(tmp_path, "smoke", allow_new=True)
    (tmp_path / "study.json").write_text(json.dumps({**rec, "study": "scale-study"}))
    with pytest.raises(SystemExit, match="holds study 'scale-study'"):
        pin_study(tmp_path, "smoke", allow_new=True)


def test_a_run_folder_has_one_writer(tmp_path):
    from examples.panoptic.runs import RunLock

    run = tmp_path / "CROP" / "seed0"
    with RunLock(run):
        # a second runner (another process) is refused while the first holds the folder
        code = ("import sys; sys.path.insert(0, %r); from examples.panoptic.runs import RunLock; "
                "from pathlib import Path; RunLock(Path(%r))" % (str(SCRIPT.parents[1]), str(run)))
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
        assert res.returncode != 0 and "being written by another process" in res.stderr
    with RunLock(run):  # released: the folder can be taken again
        pass


def test_the_trainer_dies_with_the_runner(tmp_path):
    """SIGKILL of the runner leaves no trainer writing the run folder (PR_SET_PDEATHSIG)."""
    import os
    import signal
    import time

    if not sys.platform.startswith("linux"):
        pytest.skip("PR_SET_PDEATHSIG is Linux-only")
    pidfile = tmp_path / "child.pid"
    child_code = f"import os, time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); time.sleep(600)"
    runner = tmp_path / "runner.py"
    runner.write_text(f"""import subprocess, sys
sys.path.insert(0, {str(SCRIPT.parents[1])!r})
from examples.panoptic.runs import die_with_parent
subprocess.Popen([sys.executable, "-c", {child_code!r}], preexec_fn=die_with_parent).wait()
""")
    parent = subprocess.Popen([sys.executable, str(runner)])
    for _ in range(6000):  # the child has started once it wrote its pid (a safety net, not a time limit)
        if pidfile.exists() and pidfile.read_text():
            break
        assert parent.poll() is None, "the runner stopped before its child started"
        time.sleep(0.1)
    child = int(pidfile.read_text())
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    for _ in range(6000):
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        # a zombie (dead, not yet reaped by init) counts as dead
        try:
            if Path(f"/proc/{child}/stat").read_text().split()[2] == "Z":
                break
        except OSError:
            break
        time.sleep(0.1)
    else:
        os.kill(child, signal.SIGKILL)
        pytest.fail("the trainer outlived its runner")


# -- the report, on constructed runs -----------------------------------------------------------
def _eval(box: float, large: float, buckets: list[float], matches: list, pq: float = 0.5) -> dict:
    return {"pq": pq, "pq_th": 0.4, "pc_th": 0.45, "ap_box": box, "ap_mask": box, "steps": 400, "train_seconds": 600,
            "images": 100, "eval_split": "validation",
            "buckets": {"box": buckets, "edges": [0, 1, 2, 3, 4, 5]},
            "ranges": {"larger_than_crop": {"instances": 500, "box": {"ap": large, "ap50": large, "ap75": large / 2},
                                            "extent": {"matched": len(matches)}, "matches": matches}}}


def _write(out: Path, arm: str, seed: int, ev: dict, warm: str = "46b91b060131e1fe") -> None:
    (out / arm / f"seed{seed}").mkdir(parents=True, exist_ok=True)
    (out / arm / f"seed{seed}" / "eval.json").write_text(json.dumps(ev))
    (out / arm / f"seed{seed}" / "train.log").write_text(f"initial weights: /x/warmstart/checkpoint.pt (sha256 {warm})\n")


def _constructed(out: Path) -> None:
    for s in range(5):
        jitter = 0.002 * (s - 2)
        # CROP's boxes of large objects are 20 % too small; CABB's 5 %; seed 4 of CABB misses object 2
        crop_m = [["img1", k, 0.8, 0.8, 0.7] for k in range(3)]
        cabb_m = [["img1", k, 0.95, 0.95, 0.9] for k in range(3 if s < 4 else 2)]
        base = [0.3 + jitter, 0.25, 0.2, 0.15, 0.1]
        _write(out, "CROP", s, _eval(0.20 + jitter, 0.10 + jitter, base, crop_m))
        # CABB: +6 points on large objects, others within ±0.5 point
        _write(out, "CROP+CABB", s, _eval(0.202 + jitter, 0.16 + jitter, [b + 0.005 * (-1) ** s for b in base],
                                          cabb_m))
        # ISUS: -1 point overall, every seed; the App. E control equal to ISUS within noise
        _write(out, "CROP+ISUS", s, _eval(0.19 + jitter, 0.1, [b - 0.01 for b in base], crop_m))
        _write(out, "CUS-WIDE", s, _eval(0.19 + jitter + 0.0005 * (-1) ** s, 0.1, base, crop_m))
        if s < 3:
            _write(out, "CROP+CABB+ISUS", s, _eval(0.21 + jitter, 0.15, base, cabb_m, pq=0.52))
            _write(out, "FULL-LOWRES", s, _eval(0.15, 0.2, [0.2, 0.2, 0.2, 0.2, 0.3], crop_m))
    (out / "CROP" / "seed9").mkdir(exist_ok=True)
    (out / "CROP" / "seed9" / "eval.json").write_text('{"pq": 0.')  # truncated: an unfinished run


def test_report_computes_the_preregistered_verdicts(tmp_path):
    from examples.study2_report import report

    _constructed(tmp_path)
    rep = report(tmp_path, tmp_path / "report")
    c = rep["criteria"]
    assert c["E1"]["verdict"] == "reproduced" and c["E1"]["n"] == 5 and not c["E1"]["provisional"]
    assert abs(c["E1"]["stats"]["large_box"]["mean"] - 0.06) < 1e-9
    mech = c["E1-mechanism"]
    assert mech["verdict"] == "reproduced"
    # only objects both arms detect count: seed 4 compares objects 0 and 1
    assert [r["objects"] for r in mech["per_seed"]] == [3, 3, 3, 3, 2]
    import math
    assert abs(mech["stats"]["log_extent_diff"]["mean"] - (math.log(0.95) - math.log(0.8))) < 1e-12
    assert mech["beside"]["bias_CROP"]["hi"] < 0  # CROP's boxes too small, CI below 0
    assert c["E1'"]["verdict"] == "kept"
    assert c["E2"]["verdict"] == "opposite" and c["E2"]["buckets_positive"] == 0
    assert c["E2-control"]["verdict"] == "absent"  # CI includes 0 and lies below the 0.47-point MDE
    assert c["E3"]["verdict"] == "reproduced" and c["E3"]["provisional"] is False  # +2 PQ, +1 AP at every seed
    assert c["E4"]["verdict"] == "signs as the paper"
    md = (tmp_path / "report" / "table.md").read_text()
    assert "| E1 | CROP+CABB - CROP, box AP on objects larger than the crop | 5 (5) | +6.0 ± 0.0 |" in md
    assert "seed9" in md and "unfinished" in md
    assert "resumed" not in md
    for name in ("endpoints.png", "ap_by_size.png", "extent.png", "results.json"):
        assert (tmp_path / "report" / name).stat().st_size > 0
    # the same runs give the same files, byte for byte
    first = {p.name: p.read_bytes() for p in (tmp_path / "report").iterdir()}
    report(tmp_path, tmp_path / "report")
    assert {p.name: p.read_bytes() for p in (tmp_path / "report").iterdir()} == first


def test_report_names_resumed_runs(tmp_path):
    from examples.study2_report import report

    _constructed(tmp_path)
    log = tmp_path / "CROP" / "seed1" / "train.log"
    log.write_text(log.read_text() + "training resnet18 Panoptic FPN (...) from step 0 to 400\n"
                   "training resnet18 Panoptic FPN (...) from step 100 to 400\n")
    report(tmp_path, tmp_path / "r")
    assert "CROP seed 1 was resumed from step 100" in (tmp_path / "r" / "table.md").read_text()
    assert "CROP seed 0 was resumed" not in (tmp_path / "r" / "table.md").read_text()


def test_report_verdicts_on_too_few_seeds_are_provisional(tmp_path):
    from examples.study2_report import report

    _constructed(tmp_path)
    for arm in ("CROP", "CROP+CABB"):
        for s in (2, 3, 4):
            (tmp_path / arm / f"seed{s}" / "eval.json").unlink()
    c = report(tmp_path, tmp_path / "r")["criteria"]
    assert c["E1"]["n"] == 2 and c["E1"]["provisional"]
    assert "(provisional)" in (tmp_path / "r" / "table.md").read_text()


def test_report_refuses_a_run_of_another_study(tmp_path):
    from examples.study2_report import report

    _constructed(tmp_path)
    (tmp_path / "CROP+ISUS" / "seed3" / "train.log").write_text(
        "initial weights: /elsewhere/checkpoint.pt (sha256 0123456789abcdef)\n")
    with pytest.raises(SystemExit, match="warm start is '0123456789abcdef'.*not of one study"):
        report(tmp_path, tmp_path / "r")
    _constructed(tmp_path)
    ev = json.loads((tmp_path / "CUS-WIDE" / "seed1" / "eval.json").read_text())
    (tmp_path / "CUS-WIDE" / "seed1" / "eval.json").write_text(json.dumps({**ev, "images": 50}))
    with pytest.raises(SystemExit, match="images is 50"):
        report(tmp_path, tmp_path / "r")


def test_mde_is_the_effect_a_paired_t_test_detects_four_times_in_five():
    np = pytest.importorskip("numpy")
    stats = pytest.importorskip("scipy.stats")
    from examples.study2_report import mde

    rng = np.random.default_rng(0)
    for n, sd in ((3, 2.2), (5, 0.28), (8, 1.0)):
        d = mde(sd, n)
        # brute force: draw paired differences with that true mean and count the t-tests that reject
        x = rng.normal(d, sd, size=(40000, n))
        p = stats.ttest_1samp(x, 0.0, axis=1).pvalue
        assert abs((p < 0.05).mean() - 0.8) < 0.01, (n, sd, d)
        assert mde(2 * sd, n) == pytest.approx(2 * d, rel=1e-6)  # linear in the spread
    assert mde(2.2, 5) == pytest.approx(3.7, abs=0.05)  # the design's power table
    assert np.isnan(mde(1.0, 1)) and np.isnan(mde(0.0, 5))


def test_report_puts_study_1_and_study_2_side_by_side(tmp_path):
    from examples.study2_report import report

    _constructed(tmp_path)
    top = [0.0068, -0.0291, -0.1557]  # study 1's E1: 3 seeds with a wide spread
    s1 = {"criteria": {
        "E1": {"verdict": "not reproduced", "n": 3, "what": "top bucket",
               "stats": {"box_top": {"n": 3, "seeds": top, "mean": sum(top) / 3, "ci95": 0.212}}},
        "E2": {"verdict": "not reproduced", "n": 3, "what": "overall",
               "stats": {"ap_box": {"n": 3, "seeds": [-0.03, -0.03, -0.04], "mean": -0.0333, "ci95": None}}},
        "E3'": {"verdict": "not reproduced", "n": 3, "what": "PC_th minus PQ_th", "stats": {}}}}
    (tmp_path / "s1.json").write_text(json.dumps(s1))
    report(tmp_path, tmp_path / "r", study1=tmp_path / "s1.json")
    md = (tmp_path / "r" / "side_by_side.md").read_text()
    rows = {line.split(" | ")[0][2:]: line.split(" | ")[1:] for line in md.splitlines() if line.startswith("| ")}
    one, two = rows["CABB: box AP of large objects"]
    assert one.startswith("**not reproduced**: box_top -5.9 ± 21.2 (3 seeds); detectable at 80 % power: 27.")
    assert two.startswith("**reproduced**: large_box +6.0 ± 0.0 (5 seeds)")
    assert rows["ISUS against the same scale range without instance awareness (App. E)"][0] == "not run"
    assert rows["ISUS: overall box AP"][0].startswith("**not reproduced**: ap_box -3.3 (3 seeds)")  # null CI
    assert rows["CABB keeps the other sizes"][0] == "–"  # study 1 result without that criterion
    assert rows["PC_th gains more than PQ_th"][0] == "**not reproduced**, 3 seeds: PC_th minus PQ_th"
    first = (tmp_path / "r" / "side_by_side.md").read_bytes()
    # what the evidence page's test rebuilds from the published results.json is the file itself
    from examples.study2_report import side_by_side
    published = json.loads((tmp_path / "r" / "results.json").read_text())
    assert side_by_side(s1, published) == md
    report(tmp_path, tmp_path / "r", study1=tmp_path / "s1.json")
    assert (tmp_path / "r" / "side_by_side.md").read_bytes() == first
    report(tmp_path, tmp_path / "r2", study1=None)
    assert not (tmp_path / "r2" / "side_by_side.md").exists()


def test_the_evidence_page_shows_both_studies_as_published():
    from examples.study2_report import STUDY1, side_by_side

    docs = Path(__file__).resolve().parents[1] / "docs"
    page = (docs / "evidence.md").read_text()
    block = page.split("<!-- side-by-side:begin")[1].split("-->", 1)[1].split("<!-- side-by-side:end -->")[0]
    study2 = docs / "evidence" / "study-2" / "results.json"
    s2 = json.loads(study2.read_text()) if study2.exists() else {}
    assert block.strip() == side_by_side(json.loads(STUDY1.read_text()), s2).strip(), (
        "docs/evidence.md's side-by-side block is not what the published results give: paste the report's "
        "side_by_side.md (docs/evidence/study-2/side_by_side.md once published) between its markers")
    # study 1's pasted report is its published table
    pasted = page.split("<!-- report:begin")[1].split("-->", 1)[1].split("<!-- report:end -->")[0]
    assert pasted.strip() == (docs / "evidence" / "table.md").read_text().strip()
    # study 2's page shows its published table once there is one, and says it is running until then
    page2 = (docs / "evidence-study-2.md").read_text()
    if study2.exists():
        pasted = page2.split("<!-- report:begin")[1].split("-->", 1)[1].split("<!-- report:end -->")[0]
        assert pasted.strip() == (study2.parent / "table.md").read_text().strip()
        assert "running" not in page2.split("\n\n", 2)[1].lower()
    else:
        assert "<!-- report:begin" not in page2 and "running" in page2.split("\n\n", 2)[1].lower()
