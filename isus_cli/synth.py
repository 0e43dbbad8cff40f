"""``isus synth``: write a synthetic dataset in a real dataset's layout."""
from __future__ import annotations

from pathlib import Path

import click

import isus
from isus_cli._progress import progress


def parse_size(ctx, param, value: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"expected WIDTHxHEIGHT such as 640x480; got {value!r}") from None
    return w, h


@click.command()
@click.option("--layout", type=click.Choice(isus.synth.LAYOUTS), default="mvd", show_default=True,
              help="On-disk layout to write.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Output directory (must be new or empty).")
@click.option("--images", "num_images", type=click.IntRange(min=1), default=8, show_default=True,
              help="Number of images.")
@click.option("--size", default="640x480", show_default=True, callback=parse_size,
              help="Image size WIDTHxHEIGHT (MVD-like: 4032x3024).")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option("--split", default=None, help="Split folder name (default: the reader's default split).")
def synth(layout: str, out: Path, num_images: int, size: tuple[int, int], seed: int, split: str | None) -> None:
    """Write a synthetic panoptic dataset in the exact layout of MVD, Cityscapes, IDD or COCO.

    Example:

        isus synth --layout cityscapes --out /tmp/cs --images 20 --size 2048x1024
    """
    root = isus.synth.write_dataset(out, layout, num_images, size=size, seed=seed, split=split,
                                    progress=progress(f"writing {layout}"))
    ds = isus.open_dataset(layout, root)
    click.echo(f"wrote {len(ds)} images in the {layout} layout to {root}")
    click.echo(f"open it with: isus.open_dataset({layout!r}, {str(root)!r})")
