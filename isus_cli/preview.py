"""``isus preview``: a PNG grid of sampled crops with their targets drawn."""
from __future__ import annotations

from pathlib import Path

import click

import isus
from isus._fsio import naming
from isus.preview import render_preview
from isus_cli._options import OutDir


@click.command()
@click.argument("index_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", type=OutDir(), required=True, help="Output directory.")
@click.option("-n", "num", type=click.IntRange(1, 64), default=16, show_default=True, help="Number of crops.")
@click.option("--preset", type=click.Choice(["mvd", "cityscapes", "idd"]), default=None,
              help="Sampler preset (default: 512x512 ISUS crops without s0).")
@click.option("--mode", type=click.Choice(["isus", "cus"]), default="isus", show_default=True, help="Sampling mode.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Random seed.")
def preview(index_file: Path, out: Path, num: int, preset: str | None, mode: str, seed: int) -> None:
    """Draw sampled crops with masks, visible boxes, original boxes and truncated sides.

    Example:

        isus preview mvd-training.isusidx --out previews -n 16 --preset mvd
    """
    index = isus.Index.load(index_file)
    cfg = (isus.SamplerConfig.preset(preset, mode=mode) if preset else isus.SamplerConfig(crop_size=(512, 512), mode=mode))
    with naming(out / f"preview_{mode}.png"):
        path = render_preview(index, out / f"preview_{mode}.png", num, config=cfg, seed=seed)
    click.echo(f"wrote {path}")
