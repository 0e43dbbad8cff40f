"""``isus preview``: a PNG grid of sampled crops with their targets drawn."""
from __future__ import annotations

from pathlib import Path

import click

import isus
from isus.fsio import naming
from isus.preview import render_preview
from isus_cli._options import (check_overwrite, index_root_option, out_dir_option, overwrite_option, sampler_options,
                               samples_option, seed_option)


@click.command()
@click.argument("index_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@out_dir_option("Output directory (preview_{mode}.png).")
@sampler_options(mode=True)
@samples_option
@seed_option
@index_root_option
@overwrite_option
def preview(index_file: Path, out: Path, config: isus.SamplerConfig, samples: int | None, seed: int, root: Path | None,
            overwrite: bool) -> None:
    """Draw sampled crops with masks, visible boxes, original boxes and truncated sides.

    Each tile's title gives the class, σ (the scale relative to the preset's s0 rescale; "clamped"
    when ISUS clamped it to r_th) and the FPN level aimed at. --mode rfs draws images by their
    LVIS repeat factors (docs/sampling.md); its tiles' class is the one the crop was placed
    around (--rfs-crop image: the image's rarest class). An index of a semantic-only dataset
    (no instances) takes --mode cus or rfs; its tiles show the semantic map in the classes' colours.

    Example:

    \b
        isus preview mvd-training.isusidx --out previews --samples 16 --preset mvd
        isus preview mvd-training.isusidx --out previews --mode cus --crop 512 --overwrite
        isus preview mvd-training.isusidx --out previews --mode rfs --rfs-threshold 0.01 --preset mvd
    """
    samples = 16 if samples is None else samples
    if samples > 64:
        raise click.BadParameter(f"draws at most 64 crops in one grid; got {samples}", param_hint="--samples")
    index = isus.Index.load(index_file, root=root)
    path = out / f"preview_{config.mode}.png"
    check_overwrite([path], overwrite)
    with naming(path):
        path = render_preview(index, path, samples, config=config, seed=seed)
    click.echo(f"wrote {path}")
