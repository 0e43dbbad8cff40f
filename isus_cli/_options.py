"""Parameter types shared by several commands."""
from __future__ import annotations

from pathlib import Path

import click


class OutDir(click.Path):
    """An output directory; refuses an empty string, which ``Path("")`` would silently turn
    into the current directory."""

    def __init__(self) -> None:
        super().__init__(file_okay=False, path_type=Path)

    def convert(self, value, param, ctx):
        if isinstance(value, str) and not value.strip():
            self.fail("expected a directory; got an empty string", param, ctx)
        return super().convert(value, param, ctx)
