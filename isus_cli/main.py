"""The ``isus`` command group: argument parsing and error translation only."""
from __future__ import annotations

import functools

import click

import isus
from isus_cli.demo import demo
from isus_cli.eval import eval_
from isus_cli.index import index
from isus_cli.preview import preview
from isus_cli.stats import stats
from isus_cli.synth import synth


def translate_errors(fn):
    """Turn isus's own exceptions into clean one-line CLI errors (exit code 1)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (isus.IsusError, FileExistsError, ValueError) as e:
            raise click.ClickException(str(e)) from e

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

if __name__ == "__main__":
    cli()
