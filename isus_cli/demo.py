"""``isus demo``: the main job on the embedded synthetic default."""
from __future__ import annotations

from pathlib import Path

import click

import isus
from isus_cli._progress import progress
from isus_cli.synth import parse_size


@click.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("isus-demo"),
              show_default=True, help="Working directory for the demo (created; must be new or empty).")
@click.option("--images", "num_images", type=click.IntRange(min=1), default=24, show_default=True,
              help="Number of synthetic images.")
@click.option("--size", default="1024x768", show_default=True,
              callback=parse_size,
              help="Image size WIDTHxHEIGHT.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
def demo(out: Path, num_images: int, size: tuple[int, int], seed: int) -> None:
    """Synthesise a small MVD-layout dataset, read and summarise it, and build its index.

    Example:

        isus demo --out /tmp/isus-demo
    """
    root = out / "mvd"
    params = {"layout": "mvd", "num_images": num_images, "width": size[0], "height": size[1], "seed": seed}
    previous = isus.synth.read_manifest(root)
    if previous is not None and all(previous.get(k) == v for k, v in params.items()):
        click.echo(f"1/3 reusing the synthetic Mapillary Vistas dataset of a previous run in {root}")
    else:
        if previous is not None:
            raise click.ClickException(
                f"{root} holds a synthetic dataset made with other settings ({previous.get('num_images')} images, "
                f"{previous.get('width')}x{previous.get('height')}, seed {previous.get('seed')}); "
                "pass --out with a new directory or delete it")
        click.echo(f"1/3 writing a synthetic Mapillary Vistas dataset ({num_images} images, {size[0]}x{size[1]}) "
                   f"to {root}")
        isus.synth.write_dataset(root, "mvd", num_images, size=size, seed=seed, progress=progress("synthesising"))
    ds = isus.open_dataset("mvd", root, split="training", version="v1.2")
    click.echo(f"2/3 reading it back with {ds!r}")
    summary = isus.summarize(ds, progress=progress("scanning annotations"))
    click.echo("")
    click.echo(summary.format())
    click.echo("")
    index_path = out / "mvd-training.isusidx"
    click.echo(f"3/3 building its index (with the annotation cache) in {index_path}")
    index = isus.build_index(ds, progress=True, cache_dir=out / "mvd-training.isusidx.cache")
    index.save(index_path)
    click.echo(isus.Index.load(index_path).describe())
    click.echo("")
    click.echo(f"dataset: isus.open_dataset('mvd', {str(root)!r})")
    click.echo(f"index:   isus.Index.load({str(index_path)!r})   (or: isus index info {index_path})")
