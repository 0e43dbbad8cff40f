"""Progress of the commands' long loops: a bar on a terminal, periodic lines in a log file."""
from __future__ import annotations

from typing import Callable, Iterable

from isus.progress import Progress


def progress(label: str, unit: str = "images") -> Callable[[Iterable[int]], Iterable[int]]:
    """A wrapper for the library's ``progress=`` arguments (an iterable of steps) that reports on
    stderr through :class:`isus.progress.Progress`: click's bar with a rate and ETA when stderr is
    a terminal, otherwise a line every 5 % and at the end (how clusters log)."""

    def wrap(items: Iterable[int]) -> Iterable[int]:
        items = list(items)
        bar = Progress(len(items), label, unit=unit)
        try:
            for k, item in enumerate(items):
                yield item
                bar(k + 1, len(items))
        finally:
            bar.close()

    return wrap
