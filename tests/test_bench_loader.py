"""bench/loader.py runs (its smoke size) and prints every part it documents."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "loader.py"


def test_loader_bench_quick_run(tmp_path):
    res = subprocess.run([sys.executable, str(BENCH), "--quick", "--breakdown", "--data", str(tmp_path)],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    for text in ("compact / dense, per crop", "samples/s", "(plain collate)", "fresh shared memory",
                 "first three crops of a fresh process", "other load on the machine"):
        assert text in out, text
    # 2 caches x 2 targets x 3 worker counts, plus the two plain-collate rows
    assert sum(line.lstrip().startswith(("no ", "yes ")) for line in out.splitlines()) == 14
