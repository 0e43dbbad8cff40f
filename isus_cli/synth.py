"""``isus synth``: write a synthetic dataset in a real dataset's layout."""
from __future__ import annotations

from pathlib import Path

import click

import isus
from isus.synth.writers import check_size, check_split_name
from isus_cli._options import OutDir
from isus_cli._progress import progress


def parse_size(ctx, param, value: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"expected WIDTHxHEIGHT such as 640x480; got {value!r}") from None
    try:
        check_size(w, h)  # before anything is allocated
    except ValueError as e:
        raise click.BadParameter(str(e).replace("write_dataset(size=) ", "")) from None
    return w, h


def parse_splits(ctx, param, value: str | None) -> list[str] | None:
    if value is None:
        return None
    names = value.split(",")
    for name in names:
        try:
            check_split_name(name)
        except ValueError as e:
            raise click.BadParameter(str(e).replace("write_dataset(split=) ", "")) from None
    if len(set(names)) != len(names):
        raise click.BadParameter(f"expected distinct split names; got {value!r}")
    return names


def parse_counts(ctx, param, value: str) -> list[int]:
    try:
        counts = [int(v) for v in value.split(",")]
    except ValueError:
        raise click.BadParameter(f"expected a number of images, or one per split such as 200,50; got {value!r}") from None
    if any(n < 1 for n in counts):
        raise click.BadParameter(f"expected positive numbers of images; got {value!r}")
    return counts


@click.command()
@click.option("--layout", type=click.Choice(isus.synth.LAYOUTS), default="mvd", show_default=True,
              help="On-disk layout to write.")
@click.option("--out", type=OutDir(), required=True,
              help="Output directory (must be new or empty).")
@click.option("--images", "num_images", default="8", show_default=True, callback=parse_counts,
              help="Number of images; one number per split with --splits (e.g. 200,50).")
@click.option("--size", default="640x480", show_default=True, callback=parse_size,
              help="Image size WIDTHxHEIGHT (MVD-like: 4032x3024).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Random seed.")
@click.option("--splits", "--split", "splits", default=None, callback=parse_splits,
              help="Split name, or several comma-separated (default: the reader's default split). A root that "
                   "holds a synthetic dataset gets the new splits added.")
@click.option("--preset", type=click.Choice(isus.synth.PRESETS), default="default", show_default=True,
              help="Scene generator: default (long-tailed sizes) or scale-study (many objects larger than a "
                   "crop; see docs/evidence.md).")
def synth(layout: str, out: Path, num_images: list[int], size: tuple[int, int], seed: int, splits: list[str] | None,
          preset: str) -> None:
    """Write a synthetic panoptic dataset in the exact layout of MVD, Cityscapes, IDD or COCO.

    Example:

        isus synth --layout cityscapes --out /tmp/cs --images 20 --size 2048x1024

        isus synth --layout mvd --out /tmp/mvd --splits training,validation --images 200,50 --preset scale-study
    """
    names = splits or [isus.synth.default_split(layout)]
    if len(num_images) == 1 and len(names) > 1:
        raise click.BadParameter(f"give one number of images per split ({len(names)} splits)", param_hint="--images")
    if len(num_images) != len(names):
        raise click.BadParameter(f"{len(num_images)} numbers of images for {len(names)} splits", param_hint="--images")
    root = isus.synth.write_dataset(out, layout, num_images, size=size, seed=seed, split=names, preset=preset,
                                    progress=progress(f"writing {layout}"))
    for name in names:
        ds = isus.open_dataset(layout, root, split=name)
        click.echo(f"wrote {len(ds)} images of split {name!r} in the {layout} layout to {root}")
        click.echo(f"open it with: isus.open_dataset({layout!r}, {str(root)!r}, split={name!r})")
