"""Exceptions raised by isus.

Every error isus raises on purpose derives from :class:`IsusError`, so callers (and the CLI) can
tell a problem with the user's data or arguments from a bug.
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["IsusError", "DatasetError", "InstancesUnavailableError"]


class IsusError(Exception):
    """Base class of every error isus raises deliberately."""


class DatasetError(IsusError):
    """A dataset on disk is missing, malformed or inconsistent.

    Parameters
    ----------
    message
        What was wrong and what was expected.
    path
        The file or directory at fault; it is prefixed to the message so that every report
        names the file.
    """

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.path = None if path is None else Path(path)
        super().__init__(f"{path}: {message}" if path is not None else message)


class InstancesUnavailableError(DatasetError):
    """The dataset was opened without instance annotations (e.g. an MVD tree with only
    ``labels/``), and the caller asked for something that needs them."""
