"""``isus stats``: the paper's Fig. 2 and the per-level balance for a dataset, as plots and numbers."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import click

import isus
from isus.fsio import atomic_write_bytes, naming
from isus.stats import compute_stats, mask_visibility, require_instances, write_plots
from isus_cli._options import (check_overwrite, index_root_option, out_dir_option, overwrite_option,
                               sampler_options, samples_option, seed_option)
from isus_cli._progress import progress


def run_stats(index: isus.Index, out: Path, config: isus.SamplerConfig, samples: int, seed: int,
              per_class: bool, box_fractions: tuple[float, ...] = (0.1, 0.25, 0.5),
              masks: MaskCounts | None = None) -> tuple[dict, list[Path]]:
    rfs = f" + {samples} RFS" if config.mode == "rfs" else ""
    stats = compute_stats(index, config, samples, seed, per_class=per_class, box_fractions=box_fractions,
                          progress=progress(f"sampling {samples} CUS + {samples} ISUS{rfs} crops", unit="batches"))
    if masks is not None and masks.samples > 0:
        stats["visibility"]["masks"] = masks.count(index, config, seed, box_fractions)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "stats.json", json.dumps(stats, indent=1).encode())
    with naming(out):
        return stats, write_plots(stats, out)


@dataclass(frozen=True)
class MaskCounts:
    """``--mask-samples`` and ``--visible-fractions``: the visibility filters counted on the
    segment maps of drawn crops (``isus.stats.mask_visibility``), when the dataset is reachable."""

    samples: int
    visible_fractions: tuple[float, ...]
    root: Path | None = None

    def count(self, index: isus.Index, config: isus.SamplerConfig, seed: int,
              box_fractions: tuple[float, ...]) -> dict:
        try:
            ds = index.open_dataset(self.root, verify=False)
            engine = isus.CropEngine(ds, index)  # checks the files against the index (a sample)
        except (isus.IsusError, OSError) as e:
            click.echo(f"note: the visibility filters are not counted on masks: the dataset could not be "
                       f"opened ({e}); pass --root, or --mask-samples 0", err=True)
            return {"skipped": str(e)}
        n = self.samples * (3 if config.mode == "rfs" else 2)
        return mask_visibility(engine, config, self.samples, seed, visible_fractions=self.visible_fractions,
                               box_fractions=box_fractions,
                               progress=progress(f"reading the segment maps of {n} crops", unit="crops"))


def mask_table(masks: dict) -> str:
    """Per mode and size bucket: the instances of the drawn crops, and the share (%) whose visible
    area (``area <``) or visible box (``box <``) is below each fraction of the full one."""
    modes = [m for m in ("cus", "isus", "rfs") if m in masks]
    lines = [f"  {'':6s}{'':12s}" + "".join(f"{b:>10s}" for b in masks["size_buckets"])]
    for m in modes:
        v = masks[m]
        lines.append(f"  {m.upper():6s}{'pairs':>12s}" + "".join(f"{n:10d}" for n in v["pairs"]))
        for kind, key, fr in (("area", "area_below", masks["visible_fractions"]),
                              ("box", "box_below", masks["box_fractions"])):
            for f, row in zip(fr, v[key]):
                lines.append(f"  {'':6s}{kind + ' < ' + format(f, 'g'):>12s}"
                             + "".join(f"{100 * k / max(n, 1):9.1f}%" for k, n in zip(row, v["pairs"])))
    return "\n".join(lines)


def level_table(stats: dict) -> str:
    lv = stats["levels"]
    lines = [f"  {'':12s}" + "".join(f"{'P' + str(l):>10s}" for l in lv["levels"]) + "    max/min"]
    modes = (("full_images", "full images"), ("cus", "CUS"), ("isus", "ISUS")) + ((("rfs", "RFS"),) if "rfs" in lv
                                                                                 else ())
    for mode, label in modes:
        lines.append(f"  {label:12s}" + "".join(f"{c:10d}" for c in lv[mode]) + f"    {lv['imbalance'][mode]:7.1f}")
    return "\n".join(lines)


def visibility_table(stats: dict) -> str:
    """Per mode and size bucket: the (crop, instance) pairs, and the share (%) whose clipped box is
    below each box fraction (what ``CropConfig(min_box_fraction=f)`` would drop or ignore, at least)."""
    v = stats["visibility"]
    modes = [m for m in ("cus", "isus", "rfs") if m in v]
    head = f"  {'':6s}{'':8s}" + "".join(f"{b:>10s}" for b in v["size_buckets"])
    lines = [head]
    for m in modes:
        lines.append(f"  {m.upper():6s}{'pairs':>8s}" + "".join(f"{n:10d}" for n in v[m]["pairs"]))
        for f, row in zip(v["box_fractions"], v[m]["below"]):
            lines.append(f"  {'':6s}{'< ' + format(f, 'g'):>8s}"
                         + "".join(f"{100 * k / max(n, 1):9.1f}%" for k, n in zip(row, v[m]["pairs"])))
    return "\n".join(lines)


def _fractions(ctx: click.Context, param: click.Parameter, value: str) -> tuple[float, ...]:
    try:
        out = tuple(float(x) for x in value.split(",") if x.strip())
    except ValueError:
        raise click.BadParameter(f"expects comma-separated fractions in (0, 1]; got {value!r}") from None
    if not out or not all(0 < f <= 1 for f in out):
        raise click.BadParameter(f"expects comma-separated fractions in (0, 1]; got {value!r}")
    return out


def class_table(stats: dict, limit: int | None = None) -> str:
    """RFS runs: each sampled class's images, ``f_c`` and ``r_c``, and under CUS, ISUS and RFS the
    share of crops drawn from an image holding it and its instances overlapping the crops;
    rarest first (``limit``: the rarest and the commonest ``limit // 2`` each)."""
    c = stats["classes"]
    order = sorted(range(len(c["name"])), key=lambda j: (c["images"][j], c["name"][j]))
    if limit is not None and len(order) > limit:
        order = order[:limit // 2] + [-1] + order[-(limit - limit // 2):]
    modes = ("cus", "isus", "rfs")
    lines = [f"  {'':20s}{'':8s}{'':7s}{'':7s}  {'crops (%) from its images':>26s}  {'its instances in the crops':>29s}",
             f"  {'class':20s}{'images':>8s}{'f_c':>7s}{'r_c':>7s}  " + "".join(f"{m.upper():>8s}" for m in modes)
             + "  " + "".join(f"{m.upper():>10s}" for m in modes)]
    for j in order:
        if j < 0:
            lines.append("  ...")
            continue
        name = c["name"][j].split("--")[-1][:20]
        lines.append(f"  {name:20s}{c['images'][j]:8d}{c['frequency'][j]:7.3f}{c['repeat_factor'][j]:7.2f}  "
                     + "".join(f"{100 * c['image_share'][m][j]:8.1f}" for m in modes)
                     + "  " + "".join(f"{c['instances'][m][j]:10d}" for m in modes))
    return "\n".join(lines)


@click.command()
@click.argument("index_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@out_dir_option("Output directory (stats.json and the plots).")
@sampler_options(mode=True)
@samples_option
@seed_option
@click.option("--per-class", is_flag=True, help="Also per-class scale histograms and level counts.")
@click.option("--box-fractions", default="0.1,0.25,0.5", show_default=True, callback=_fractions,
              help="CropConfig(min_box_fraction=) values whose dropped or ignored (crop, instance) pairs "
                   "are counted per size bucket.")
@click.option("--visible-fractions", default="0.1,0.25,0.5", show_default=True, callback=_fractions,
              help="CropConfig(min_visible_fraction=) values whose dropped or ignored pairs are counted per "
                   "size bucket, on the segment maps of --mask-samples crops.")
@click.option("--mask-samples", type=click.IntRange(min=0), default=200, show_default=True,
              help="Crops per mode whose segment maps are read to count --visible-fractions and, exactly, "
                   "--box-fractions (needs the dataset; the annotation cache when the index has one); 0: none.")
@index_root_option
@overwrite_option
def stats(index_file: Path, out: Path, config: isus.SamplerConfig, samples: int | None, seed: int, per_class: bool,
          box_fractions: tuple[float, ...], visible_fractions: tuple[float, ...], mask_samples: int,
          root: Path | None, overwrite: bool) -> None:
    """Plot object scales, crop truncation and per-level supervision (FULL / CUS / ISUS, and RFS).

    Computed from the index and simulated crops (the visibility filters also from the segment maps
    of --mask-samples crops per mode; no image pixels are decoded). Writes
    scale_distribution.png, crop_truncation.png, level_supervision.png (and per_class_levels.png)
    and stats.json with every plotted number; refuses to replace those of an earlier run
    without --overwrite. Every number is about instances: on an index without any (a
    semantic-only dataset) it says so and writes nothing. With --mode rfs, repeat-factor
    sampling's crops are simulated too, and a table compares the classes under CUS, ISUS and
    RFS (all classes with --per-class, else the rarest and commonest).

    Example:

    \b
        isus stats mvd-training.isusidx --out stats --preset mvd --samples 20000
        isus stats mvd-training.isusidx --out stats --crop 1024 --per-class --overwrite
        isus stats mvd-training.isusidx --out stats-rfs --preset mvd --mode rfs --rfs-threshold 0.01
    """
    samples = 20000 if samples is None else samples
    index = isus.Index.load(index_file, root=root)
    require_instances(index)  # a semantic-only index: say so, rather than draw empty plots
    check_overwrite(output_files(out, per_class), overwrite)
    result, paths = run_stats(index, out, config, samples, seed, per_class, box_fractions,
                              MaskCounts(mask_samples, visible_fractions, root))
    click.echo(f"instances per FPN level ({samples} crops per mode; max/min: the imbalance):")
    click.echo(level_table(result))
    click.echo("(crop, instance) pairs per size in the crop (sqrt(area) < 32, < 96, more), and the share a "
               "CropConfig(min_box_fraction=f) would drop or ignore (at least: window-clipped boxes):")
    click.echo(visibility_table(result))
    masks = result["visibility"].get("masks")
    if masks is not None and "skipped" not in masks:
        click.echo(f"measured on the segment maps of {masks['samples']} crops per mode (instances kept by "
                   "min_instance_area; the share a CropConfig(min_visible_fraction=f) or (min_box_fraction=f) "
                   "would drop or ignore):")
        click.echo(mask_table(masks))
    if "classes" in result:
        r = result["settings"]["rfs"]
        c = result["classes"]
        repeated = sum(f > 1 for f in c["repeat_factor"])
        click.echo(f"RFS repeat factors (t = {r['threshold']:g}, {'sqrt' if r['sqrt'] else 'no sqrt'}, over "
                   f"{r['eligible_images']} images): {repeated} of {len(c['name'])} classes repeated, max r_c "
                   f"{max(c['repeat_factor']):.2f}; per class, rarest first:")
        click.echo(class_table(result, None if per_class else 10))
    click.echo(f"wrote {out / 'stats.json'} and " + ", ".join(p.name for p in paths) + f" in {out}")


def output_files(out: Path, per_class: bool) -> list[Path]:
    """What ``isus stats`` writes in ``out``."""
    names = ["stats.json", "scale_distribution.png", "crop_truncation.png", "level_supervision.png"]
    return [out / n for n in names + (["per_class_levels.png"] if per_class else [])]
