"""``isus stats``: the paper's Fig. 2 and the per-level balance for a dataset, as plots and numbers."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import click

import isus
from isus._fsio import atomic_write_bytes, naming
from isus.stats import compute_stats, write_plots
from isus_cli._options import OutDir
from isus_cli._progress import progress


def run_stats(index: isus.Index, out: Path, config: isus.SamplerConfig, samples: int, seed: int,
              per_class: bool) -> tuple[dict, list[Path]]:
    stats = compute_stats(index, config, samples, seed, per_class=per_class, progress=progress("sampling crops"))
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "stats.json", json.dumps(stats, indent=1).encode())
    with naming(out):
        return stats, write_plots(stats, out)


def level_table(stats: dict) -> str:
    lv = stats["levels"]
    lines = [f"  {'':12s}" + "".join(f"{'P' + str(l):>10s}" for l in lv["levels"]) + "    max/min"]
    for mode, label in (("full_images", "full images"), ("cus", "CUS"), ("isus", "ISUS")):
        lines.append(f"  {label:12s}" + "".join(f"{c:10d}" for c in lv[mode]) + f"    {lv['imbalance'][mode]:7.1f}")
    return "\n".join(lines)


@click.command()
@click.argument("index_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", type=OutDir(), required=True, help="Output directory.")
@click.option("--preset", type=click.Choice(["mvd", "cityscapes", "idd"]), default=None,
              help="Sampler preset (crop size, s0, scale ranges); default: 1024x1024 crops, no s0.")
@click.option("--crop", type=click.IntRange(min=16), default=None, help="Square crop size (overrides the preset's).")
@click.option("--samples", type=click.IntRange(min=1), default=20000, show_default=True,
              help="Simulated crops per mode (CUS and ISUS).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Random seed.")
@click.option("--per-class", is_flag=True, help="Also per-class scale histograms and level counts.")
def stats(index_file: Path, out: Path, preset: str | None, crop: int | None, samples: int, seed: int,
          per_class: bool) -> None:
    """Plot object scales, crop truncation and per-level supervision (FULL / CUS / ISUS).

    Computed from the index and simulated crops only: nothing is decoded. Writes
    scale_distribution.png, crop_truncation.png, level_supervision.png (and per_class_levels.png)
    and stats.json with every plotted number.

    Example:

        isus stats mvd-training.isusidx --out stats --preset mvd --samples 20000
    """
    index = isus.Index.load(index_file)
    config = isus.SamplerConfig.preset(preset) if preset else isus.SamplerConfig(crop_size=(1024, 1024))
    if crop is not None:
        config = replace(config, crop_size=(crop, crop))
    result, paths = run_stats(index, out, config, samples, seed, per_class)
    click.echo(f"instances per FPN level ({samples} crops per mode; max/min: the imbalance):")
    click.echo(level_table(result))
    click.echo(f"wrote {out / 'stats.json'} and " + ", ".join(p.name for p in paths) + f" in {out}")
