"""Progress bars shared by the commands."""
from __future__ import annotations

from typing import Callable, Iterable

import sys

import click


def progress(label: str) -> Callable[[Iterable[int]], Iterable[int]]:
    """A wrapper for the library's ``progress=`` arguments that shows click's bar on stderr."""

    def wrap(items: Iterable[int]) -> Iterable[int]:
        items = list(items)
        with click.progressbar(items, label=label, show_pos=True, show_eta=True, file=sys.stderr) as bar:
            yield from bar

    return wrap
