"""What the example scripts share on their command line (no torch or torchvision import)."""
from __future__ import annotations

import argparse

INSTALL_HINT = 'pip install -e ".[examples]"'


def require_torchvision(script: str) -> None:
    """Exit with one line (no traceback) when torchvision, the examples' extra, is missing."""
    try:
        import torchvision  # noqa: F401
    except ImportError as e:
        raise SystemExit(f"{script} needs torchvision ({e}); install the examples' extra: {INSTALL_HINT}") from None


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The description as written, and each option's default (unless None/False, or the help
    already says it)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False, argparse.SUPPRESS) or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)
