"""``isus synth``: write a synthetic dataset in a real dataset's layout."""
from __future__ import annotations

from pathlib import Path

import click

import isus
from isus.synth.writers import check_split_name
from isus_cli._options import (dataset_options, hidden_alias, images_option, out_dir_option, seed_option, size_option,
                               workers_option)
from isus_cli._progress import progress


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


@click.command()
@hidden_alias("--layout", "--dataset")
@hidden_alias("--preset", "--scene")
@dataset_options(reader=False)
@out_dir_option("Output directory: the dataset's root (must be new or empty, or a synthetic dataset's root, "
                "to add splits).")
@images_option("8")
@size_option("640x480")
@seed_option
@click.option("--splits", "--split", "splits", default=None, callback=parse_splits,
              help="Split name, or several comma-separated (default: the reader's default split). A root that "
                   "holds a synthetic dataset gets the new splits added.")
@click.option("--scene", "preset", type=click.Choice(isus.synth.PRESETS), default="default", show_default=True,
              help="Scene generator (formerly --preset): default (long-tailed sizes) or scale-study (many objects "
                   "larger than a crop; see docs/evidence.md).")
@workers_option
def synth(dataset: str, out: Path, num_images: list[int], size: tuple[int, int], seed: int,
          splits: list[str] | None, preset: str, workers: int | None) -> None:
    """Write a synthetic panoptic dataset in the exact layout of MVD, Cityscapes, IDD or COCO.

    --dataset names the layout (formerly --layout, still accepted); --scene the scene generator
    (formerly --preset, a name that now means a sampler preset everywhere).

    Example:

    \b
        isus synth --dataset cityscapes --out /tmp/cs --images 20 --size 2048x1024
        isus synth --dataset mvd --out /tmp/mvd --splits training,validation --images 200,50 --scene scale-study

    The files do not depend on --workers (each image depends only on --seed and its index).
    """
    layout = dataset
    names = splits or [isus.synth.default_split(layout)]
    if len(num_images) == 1 and len(names) > 1:
        raise click.BadParameter(f"give one number of images per split ({len(names)} splits)", param_hint="--images")
    if len(num_images) != len(names):
        raise click.BadParameter(f"{len(num_images)} numbers of images for {len(names)} splits", param_hint="--images")
    root = isus.synth.write_dataset(out, layout, num_images, size=size, seed=seed, split=names, preset=preset,
                                    progress=progress(f"writing {layout}"), workers=workers)
    for name in names:
        ds = isus.open_dataset(layout, root, split=name)
        click.echo(f"wrote {len(ds)} images of split {name!r} in the {layout} layout to {root}")
        click.echo(f"open it with: isus.open_dataset({layout!r}, {str(root)!r}, split={name!r})")
