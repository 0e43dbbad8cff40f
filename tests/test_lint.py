"""``ruff check`` and ``mypy`` as part of the test run, so that CI (which runs the README's test
command) lints and type-checks.

The ruff rules are in ``ruff.toml``; mypy's configuration (strict on ``isus/``) is ``[tool.mypy]`` in
``pyproject.toml``. Both are pinned in the ``test`` extra; each test is skipped where its tool is not
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


def _mypy() -> list[str]:
    # mypy of this interpreter, so that it sees the packages installed beside isus (numpy's types)
    pytest.importorskip("mypy", reason="mypy is not installed (pip install -e '.[test]')")
    return [sys.executable, "-m", "mypy"]


def test_ruff_check_is_clean():
    res = subprocess.run([*_ruff(), "check", "--no-cache", "--output-format", "concise", *PATHS], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, f"ruff check {' '.join(PATHS)}:\n{res.stdout}{res.stderr}"


def test_mypy_is_clean():
    """``mypy isus`` with the configuration in pyproject.toml (strict). About 25 s on a cold cache
    (``.mypy_cache``), well under a second on a warm one."""
    res = subprocess.run([*_mypy(), "isus"], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, f"mypy isus:\n{res.stdout}{res.stderr}"
