"""What the study runners share: one writer per run folder, and trainers that die with their runner."""
from __future__ import annotations

import ctypes
import fcntl
import os
import signal
import subprocess
import sys
from pathlib import Path

__all__ = ["RunLock", "code_version", "die_with_parent"]


class RunLock:
    """An exclusive lock on ``run/.lock`` for as long as a trainer writes the folder, so a second
    runner (e.g. started again after the first lost its terminal) cannot write it too."""

    def __init__(self, run: Path) -> None:
        run.mkdir(parents=True, exist_ok=True)
        self.path = run / ".lock"
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise SystemExit(f"{run} is being written by another process (lock {self.path}); wait for it or stop it") \
                from None

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def die_with_parent() -> None:
    """Linux: the trainer gets SIGKILL when this runner dies, even by SIGKILL (no orphan keeps
    writing the run folder)."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


def code_version(root: Path) -> str | None:
    """The commit checked out at ``root``, ``-dirty`` with uncommitted changes under isus/ or
    examples/ (what a study records as the code its runs execute); None outside a git checkout."""
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "isus", "examples"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("-dirty" if dirty else "")
