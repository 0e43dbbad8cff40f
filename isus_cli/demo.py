"""``isus demo``: the main job on the embedded synthetic default."""
from __future__ import annotations

from pathlib import Path

import click

import isus
from isus.fsio import naming
from isus_cli._progress import progress
from isus_cli.index import save_index
from isus_cli.stats import level_table, run_stats
from isus_cli._options import DEFAULT_CROP, crop_option, images_option, out_dir_option, seed_option, size_option


@click.command()
@out_dir_option("Working directory (created; must be new or empty, or hold an earlier demo run, whose "
                "dataset is reused).", default=Path("isus-demo"))
@images_option("24")
@size_option("1024x768")
@seed_option
@crop_option
def demo(out: Path, num_images: list[int], size: tuple[int, int], seed: int, crop: int | None) -> None:
    """Synthesise a small MVD-layout dataset, read and summarise it, build its index, sample and draw crops.

    Example:

    \b
        isus demo --out /tmp/isus-demo
        isus demo --out /tmp/isus-demo-small --images 8 --size 640x480 --crop 320
    """
    if len(num_images) != 1:
        raise click.BadParameter("the demo writes one split: give one number", param_hint="--images")
    num_images = num_images[0]
    root = out / "mvd"
    params = {"layout": "mvd", "num_images": num_images, "width": size[0], "height": size[1], "seed": seed}
    previous = isus.synth.read_manifest(root) if root.is_dir() else None
    if previous is None and out.is_dir() and any(out.iterdir()):
        raise click.ClickException(f"{out} is not empty and holds no earlier `isus demo` run: pass --out with a new "
                                   "or empty directory")
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
    click.echo(f"  {index.num_images} images, {len(index.present_categories())} classes present, "
               f"{len(index.instances)} segments located (all of it: isus index info {index_path})")
    click.echo("")
    from isus.preview import render_preview

    config = isus.SamplerConfig(crop_size=(crop or DEFAULT_CROP,) * 2)
    c = config.crop_size[0]
    with naming(out / "crops_isus.png"):
        crops = render_preview(index, out / "crops_isus.png", 8, config=config, seed=seed)
    click.echo(f"4/5 wrote 8 ISUS crops of {c}x{c} with their masks, visible/original boxes and truncated sides "
               f"to {crops}")
    click.echo("")
    click.echo(f"5/5 simulating 4000 CUS and 4000 ISUS crops of {c}x{c} from the index (isus stats)")
    result, plots = run_stats(index, out / "stats", config, 4000, seed, per_class=False)
    click.echo("  instances per FPN level (those overlapping each crop, at the level of their visible box):")
    click.echo(level_table(result))
    click.echo("  plots (scale distribution, crop truncation, per-level supervision): "
               + ", ".join(str(p) for p in plots))
    click.echo("")
    click.echo(f"dataset: isus.open_dataset('mvd', {str(root)!r})")
    click.echo(f"index:   isus.Index.load({str(index_path)!r})   (or: isus index info {index_path})")
