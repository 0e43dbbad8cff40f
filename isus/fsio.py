"""File-system helpers for isus's writers: errors that name their file, temp files that never pile up.

Every atomic writer in isus writes ``.NAME.tmp-PID`` (or a fixed ``.NAME.tmp`` in a directory only
one process writes) beside its target, removes it when the write fails, and the next writer of
that directory removes those a killed process left (:func:`remove_stale_temps`).
"""
from __future__ import annotations

import contextlib
import os
import re
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, Iterator

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["naming", "pid_alive", "remove_stale_temps", "atomic_file", "atomic_write_bytes", "atomic_savefig",
           "open_regular", "read_regular"]


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a plain file"


def open_regular(path: str | Path, what: str, error: Callable[[str, Path], Exception]) -> BinaryIO:
    """``path`` opened for binary reading, if it is a regular file (or a symlink to one).

    A FIFO, device, socket or directory raises ``error(message, path)`` instead of being opened:
    reading a FIFO would block forever, a device may never end. The type is checked by path first
    (so a device is never opened), then again on the opened descriptor, which is opened
    non-blocking so that a file swapped for a FIFO in between cannot block either. A missing file
    raises :class:`FileNotFoundError` as ``open`` does.
    """
    path = Path(path)
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise error(f"{what} is {_kind(mode)}, not a regular file; isus reads only regular files", path)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise error(f"{what} is {_kind(mode)}, not a regular file; isus reads only regular files", path)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: str | Path, what: str, error: Callable[[str, Path], Exception]) -> bytes:
    """The bytes of ``path``, a regular file (see :func:`open_regular`)."""
    with open_regular(path, what, error) as f:
        return f.read()


@contextlib.contextmanager
def naming(path: str | Path) -> Iterator[None]:
    """Re-raise an :class:`OSError` without a file name (``write()``, ``fsync()`` on a full disk)
    as the same error naming ``path``, so it reads ``PATH: No space left on device``."""
    try:
        yield
    except OSError as e:
        if e.filename is None and e.errno is not None:
            raise OSError(e.errno, e.strerror or os.strerror(e.errno), str(path)) from e
        raise


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine (a temp file of a live writer is kept)."""
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def remove_stale_temps(directory: str | Path, pattern: str) -> list[Path]:
    """Delete the files in ``directory`` whose name matches ``pattern`` (a regex) and, when it has a
    group, whose group -- the writer's process id -- is no longer a live process. Returns them.

    Only ever called with isus's own temp-file patterns; a missing or unreadable directory is left
    alone (the write that follows reports it)."""
    rx = re.compile(pattern)
    removed: list[Path] = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        m = rx.match(name)
        if m is None:
            continue
        if m.groups() and m.group(1) is not None and pid_alive(int(m.group(1))):
            continue
        path = Path(directory) / name
        try:
            path.unlink()
        except OSError:
            continue
        removed.append(path)
    return removed


@contextlib.contextmanager
def atomic_file(path: str | Path, *, tmp: str | Path | None = None, clean: bool = True,
                fsync: bool = True) -> Iterator[BinaryIO]:
    """A binary file whose content replaces ``path`` when the block ends without error (flush,
    fsync, rename): ``path`` holds the old content or the new one, never a mix, and a failed write
    leaves no temp file behind.

    Parameters
    ----------
    path
        The file to write.
    tmp
        A fixed temp-file name, for directories that only one process writes; default
        ``.NAME.tmp-PID`` beside ``path``.
    clean
        With the default temp name, first remove those that killed processes left (skip it where
        one directory receives many files, and clean the directory once instead).
    fsync
        Flush the data to disk before the rename.
    """
    path = Path(path)
    if tmp is None:
        if clean:
            # also the mkstemp-style names (".NAME.tmp-PID-xxxx") earlier versions wrote
            remove_stale_temps(path.parent, rf"^\.{re.escape(path.name)}\.tmp-(\d+)(?:-\w+)?$")
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp = Path(tmp)
    try:
        with naming(path):
            with open(tmp, "wb") as f:
                yield f
                f.flush()
                if fsync:
                    os.fsync(f.fileno())
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through :func:`atomic_file`."""
    with atomic_file(path) as f:
        f.write(data)


def atomic_savefig(fig: Figure, path: str | Path, **kwargs: Any) -> Path:
    """``fig.savefig`` rendered in memory and written with :func:`atomic_write_bytes`, so an
    interrupted or failed write never leaves a damaged plot where the previous one was."""
    import io

    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format=path.suffix.lstrip(".") or "png", **kwargs)
    atomic_write_bytes(path, buf.getvalue())
    return path
