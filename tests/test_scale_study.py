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
    res = subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=600)
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
