"""The ``isus`` command group: argument parsing and error translation only."""
from __future__ import annotations

import errno
import functools
import os
import re

import click

import isus
from isus_cli.demo import demo
from isus_cli.eval import eval_
from isus_cli.index import index
from isus_cli.predict import predict
from isus_cli.preview import preview
from isus_cli.show import show
from isus_cli.stats import stats
from isus_cli.synth import synth


def printable(text) -> str:
    """``text`` with what cannot be printed as UTF-8 -- the surrogate escapes of a file name that is
    not valid UTF-8 -- shown as Python escapes (``\\udcff``), so the message names the exact file."""
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    return str(text).encode("utf-8", "backslashreplace").decode("utf-8")


def os_error_message(e: OSError) -> str:
    """One line naming the path(s) and what failed: ``PATH: No space left on device``, or
    ``SRC -> DST: Read-only file system`` for a rename."""
    what = e.strerror or (os.strerror(e.errno) if e.errno else "") or str(e) or type(e).__name__
    if e.filename is None:
        return printable(str(e) if e.strerror is None and str(e) else what).replace("\n", " ")
    where = printable(e.filename)
    if getattr(e, "filename2", None) is not None:
        where += f" -> {printable(e.filename2)}"
    hint = {errno.ENOSPC: " (the disk is full: free space and run again)",
            errno.EROFS: " (write somewhere else)"}.get(e.errno, "")
    return printable(f"{where}: {what}{hint}").replace("\n", " ")


def cli_words(message: str) -> str:
    """Library messages name Python arguments (``open_dataset('mvd', version=) expects ...``); on
    the command line the user typed an option: say ``--version expects ...``. A dataset root that
    is not there, when it came from an index, gets the way to point at where it is now."""
    message = re.sub(r"\bopen_dataset\('?[\w-]*'?, (\w+)=\)", lambda m: "--" + m.group(1).replace("_", "-"), message)
    if "root not found" in message and "--root" not in message:
        message += " (if the dataset moved, pass --root with its new location)"
    return message


def translate_errors(fn):
    """Turn isus's own exceptions and operating-system errors (disk full, read-only file system,
    permission denied, a name too long, ...) into clean one-line CLI errors (exit code 1)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (isus.IsusError, ValueError) as e:
            raise click.ClickException(printable(cli_words(str(e)))) from e
        except OSError as e:  # FileExistsError included: isus raises it with a full message and no filename
            raise click.ClickException(os_error_message(e)) from e

    return wrapper


class _Group(click.Group):
    def invoke(self, ctx):
        return translate_errors(super().invoke)(ctx)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(isus.__version__, prog_name="isus")
def cli() -> None:
    """isus: crop-based panoptic training at all scales (ISUS sampling, CABB loss).

    Start with `isus demo`.
    """


cli.add_command(demo)
cli.add_command(synth)
cli.add_command(index)
cli.add_command(preview)
cli.add_command(stats)
cli.add_command(eval_)
cli.add_command(predict)
cli.add_command(show)

if __name__ == "__main__":
    cli()
