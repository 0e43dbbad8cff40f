"""``ruff check`` as part of the test run, so that CI (which runs the README's test command) lints.

The rules are in ``ruff.toml``; ruff is pinned in the ``test`` extra. Skipped where ruff is not
installed (an environment without the ``test`` extra).
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PATHS = ["isus", "isus_cli", "examples", "bench", "tests"]


def _ruff() -> list[str]:
    exe = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if exe is None:
        pytest.skip("ruff is not installed (pip install -e '.[test]')")
    return [exe]


def test_ruff_check_is_clean():
    res = subprocess.run([*_ruff(), "check", "--no-cache", "--output-format", "concise", *PATHS], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, f"ruff check {' '.join(PATHS)}:\n{res.stdout}{res.stderr}"
