"""bench/gpu_check.sh: its CPU fallback end to end (the mode CI can run), and the figures it
derives from a training log. The CUDA mode itself runs on a GPU machine only
(docs/benchmarks.md, "GPU check")."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import gpu_check  # noqa: E402

pytestmark = pytest.mark.filterwarnings("error")


def test_cpu_fallback_runs_every_part_and_names_what_it_skips(tmp_path):
    """~35 s on a busy 2-core machine: two tiny training runs dominate.

    ``--no-time-limits``: every part runs to its end, so the outcome does not depend on the
    machine's speed or load (the parts' time limits once failed this test on a loaded machine);
    the subprocess timeout is only a net for a hang."""
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable, "ISUS_GPU_CHECK_NO_INSTALL": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run(["bash", "bench/gpu_check.sh", "--cpu", "--no-time-limits", "--work", str(tmp_path / "work")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
    seconds = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads((out / "gpu_figures.json").read_text())
    assert (out / "gpu_check.log").read_text().count("GPU check (cpu)") == 1  # the summary, teed
    assert data["mode"] == "cpu" and data["gpu"] is None
    parts = data["parts"]
    assert list(parts) == list(gpu_check.PART_NAMES)
    assert parts["study2_pilot"]["status"] == "skipped"  # a lease of its own: only when named in --parts
    for name in ("env", "cabb_bench", "data", "train_isus", "train_full", "gpu_decode"):
        assert parts[name]["status"] == "ok", (name, parts[name])
    assert parts["cuda_tests"]["status"] == "skipped" and parts["cuda_tests"]["reason"]  # and saying why
    decode = parts["gpu_decode"]["figures"]  # the nvjpeg path's code, run with torchvision's CPU decoder
    assert decode["device"] == "cpu" and decode["psnr_min_db"] > 40 and "nvjpeg" in parts["gpu_decode"]["skipped_here"][0]
    assert "CUDA" in parts["cuda_tests"]["reason"]
    assert any("compile" in s for s in parts["cabb_bench"]["skipped_here"])
    assert parts["env"]["figures"]["cuda_available"] is False
    row = parts["cabb_bench"]["figures"]["rows"][0]
    assert row["device"] == "cpu" and row["cabb_fwd_bwd_ms"] > 0
    for name in ("train_isus", "train_full"):
        f = parts[name]["figures"]
        assert f["steps_logged"] >= 1 and f["samples_per_s"] > 0 and 0 <= f["data_wait_share"] <= 1
        assert "gpu_peak_gib" not in f  # CPU: no GPU memory to report
        assert (out / f"{name}.log.jsonl").exists()
    assert data["time_limits"] is False and data["budget_s"] is None
    print(f"CPU fallback: {seconds:.0f} s")


def test_study2_pilot_part_runs_the_study_and_its_report(tmp_path):
    """The CPU fallback runs the pilot's code at the study's smoke scale: data, warm start, CROP and
    CROP+CABB at seed 0, the report; the arms' figures and files come back in OUT."""
    pytest.importorskip("torchvision")
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable, "ISUS_GPU_CHECK_NO_INSTALL": "1"}
    proc = subprocess.run(["bash", "bench/gpu_check.sh", "--cpu", "--no-time-limits", "--parts", "env,study2_pilot",
                           "--work", str(tmp_path / "work")], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=3600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    part = json.loads((out / "gpu_figures.json").read_text())["parts"]["study2_pilot"]
    assert part["status"] == "ok", part
    f = part["figures"]
    assert f["scale"] == "smoke" and f["report"] == "ok" and sorted(f["runs"]) == ["CROP", "CROP+CABB"]
    for arm, r in f["runs"].items():
        assert 0 <= r["pq"] <= 1 and r["instances_larger_than_crop"] > 0, (arm, r)
        assert (out / f"study2_pilot_{arm.replace('+', '_')}_eval.json").exists()
    assert "| E1 |" in (out / "study2_pilot_table.md").read_text()
    assert "CROP+CABB: PQ" in (out / "gpu_check.log").read_text()  # the summary line


def test_train_figures_leave_out_the_first_window(tmp_path):
    log = tmp_path / "log.jsonl"
    records = [
        {"step": 10, "samples_per_s": 4.0, "data_wait_share": 0.5, "loss": 3.0},  # start-up: apart
        {"step": 20, "samples_per_s": 40.0, "data_wait_share": 0.02, "loss": 2.0, "gpu_peak_gib": 9.0},
        {"step": 30, "samples_per_s": 20.0, "data_wait_share": 0.08, "loss": 1.5, "gpu_peak_gib": 10.0,
         "gpu_reserved_gib": 12.0},
    ]
    log.write_text("\n".join(json.dumps(r) for r in records) + '\n{"step": 4')  # last line cut by a kill
    f = gpu_check.train_figures(log, batch=4)
    # windows of 40 samples: 1 s at 40/s, 2 s at 20/s -> 80 samples in 3 s; wait (0.02 + 0.16) / 3
    assert f["samples_per_s"] == pytest.approx(80 / 3)
    assert f["data_wait_share"] == pytest.approx(0.18 / 3)
    assert f["first_window_samples_per_s"] == 4.0
    assert (f["steps_logged"], f["windows"], f["gpu_peak_gib"], f["gpu_reserved_gib"]) == (30, 3, 10.0, 12.0)
    assert gpu_check.train_figures(tmp_path / "missing.jsonl", batch=4) == {}


def test_unknown_part_is_refused(capsys):
    with pytest.raises(SystemExit):
        gpu_check.main(["--parts", "env,warp_drive"])
    assert "warp_drive" in capsys.readouterr().err


def test_budget_and_no_time_limits_exclude_each_other(capsys):
    with pytest.raises(SystemExit):
        gpu_check.main(["--budget", "60", "--no-time-limits"])
    assert "exclude each other" in capsys.readouterr().err
