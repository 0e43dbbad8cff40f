"""``isus demo``: the main job on the embedded synthetic default."""
from __future__ import annotations

from pathlib import Path

import click

import isus
from isus._fsio import naming
from isus_cli._progress import progress
from isus_cli.index import save_index
from isus_cli.stats import level_table, run_stats
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
    """Synthesise a small MVD-layout dataset, read and summarise it, build its index, sample and draw crops.

    Example:

        isus demo --out /tmp/isus-demo
    """
    root = out / "mvd"
    params = {"layout": "mvd", "num_images": num_images, "width": size[0], "height": size[1], "seed": seed}
    previous = isus.synth.read_manifest(root)
    if previous is not None and all(previous.get(k) == v for k, v in params.items()):
        click.echo(f"1/5 reusing the synthetic Mapillary Vistas dataset of a previous run in {root}")
    else:
        if previous is not None:
            raise click.ClickException(
                f"{root} holds a synthetic dataset made with other settings ({previous.get('num_images')} images, "
                f"{previous.get('width')}x{previous.get('height')}, seed {previous.get('seed')}); "
                "pass --out with a new directory or delete it")
        click.echo(f"1/5 writing a synthetic Mapillary Vistas dataset ({num_images} images, {size[0]}x{size[1]}) "
                   f"to {root}")
        isus.synth.write_dataset(root, "mvd", num_images, size=size, seed=seed, progress=progress("synthesising"))
    ds = isus.open_dataset("mvd", root, split="training", version="v1.2")
    click.echo(f"2/5 reading it back with {ds!r}")
    summary = isus.summarize(ds, progress=progress("scanning annotations"))
    click.echo("")
    click.echo(summary.format())
    click.echo("")
    index_path = out / "mvd-training.isusidx"
    click.echo(f"3/5 building its index (with the annotation cache) in {index_path}")
    index = isus.build_index(ds, progress=True, cache_dir=out / "mvd-training.isusidx.cache")
    save_index(index, index_path)
    index = isus.Index.load(index_path)
    click.echo(index.describe())
    click.echo("")
    from isus.preview import render_preview

    with naming(out / "crops_isus.png"):
        crops = render_preview(index, out / "crops_isus.png", 8, config=isus.SamplerConfig(crop_size=(512, 512)),
                               seed=seed)
    click.echo(f"4/5 wrote 8 ISUS crops with their masks, visible/original boxes and truncated sides to {crops}")
    click.echo("")
    crop = (640, 640)  # larger than P5's smallest objects (448 px), so every level can be reached
    click.echo(f"5/5 simulating 4000 CUS and 4000 ISUS crops of {crop[0]}x{crop[1]} from the index (isus stats)")
    result, plots = run_stats(index, out / "stats", isus.SamplerConfig(crop_size=crop), 4000, seed, per_class=False)
    click.echo("  instances per FPN level (those overlapping each crop, at the level of their visible box):")
    click.echo(level_table(result))
    click.echo("  plots (scale distribution, crop truncation, per-level supervision): "
               + ", ".join(str(p) for p in plots))
    click.echo("")
    click.echo(f"dataset: isus.open_dataset('mvd', {str(root)!r})")
    click.echo(f"index:   isus.Index.load({str(index_path)!r})   (or: isus index info {index_path})")
