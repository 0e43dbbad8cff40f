"""Options shared by the commands: one vocabulary and one set of defaults for every ``isus`` command.

Each decorator adds a group of options (sqlite-utils style). Those that stand for one object --
the dataset to open, the sampler configuration -- also turn their options into that object, so a
command receives ``dataset: DatasetArgs`` or ``config: SamplerConfig`` instead of a dozen values.
"""
from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable

import click

import isus
from isus.datasets import canonical_name, dataset_formats, dataset_names, reader_class, reader_options

#: Square crop size of every command that makes crops (preview, stats, demo) without a --preset:
#: larger than P5's smallest objects (448 px), so that every FPN level can be reached.
DEFAULT_CROP = 640

#: The formats registered when the CLI was imported, by their own names (``--dataset`` also takes the
#: aliases of isus.dataset_names(), and formats registered later: the options ask the registry).
DATASETS = tuple(dataset_formats())


class OutDir(click.Path):
    """An output directory; refuses an empty string, which ``Path("")`` would silently turn
    into the current directory."""

    def __init__(self) -> None:
        super().__init__(file_okay=False, path_type=Path)

    def convert(self, value, param, ctx):
        if isinstance(value, str) and not value.strip():
            self.fail("expected a directory; got an empty string", param, ctx)
        return super().convert(value, param, ctx)


class DatasetName(click.ParamType):
    """A registered dataset format or one of its aliases (``mapillary``, ``vistas``, ``coco_panoptic``),
    case-insensitive; converted to the format's own name (``mvd``). ``keep(name)``: which formats the
    option takes (default: all), asked when the value is read, so a format registered later is in."""

    name = "dataset"

    def __init__(self, keep: Callable[[str], bool] | None = None) -> None:
        self.keep = keep

    def formats(self) -> list[str]:
        return [f for f in dataset_formats() if self.keep is None or self.keep(f)]

    def get_metavar(self, param, ctx=None) -> str:  # click 8.2 passes ctx
        return "[" + "|".join(self.formats()) + "]"

    def convert(self, value, param, ctx):
        formats = self.formats()
        try:
            name = canonical_name(value)
        except ValueError:
            name = None
        if name not in formats:
            aliases = [n for n in dataset_names() if n not in formats and canonical_name(n) in formats]
            self.fail(f"expected one of {', '.join(formats)} (or an alias: {', '.join(aliases)}); got {value!r}",
                      param, ctx)
        return name


def has_preset(name: str) -> bool:
    """Whether the reader of ``name`` has a sampler preset (what ``--preset`` takes)."""
    return reader_class(name).sampler_preset is not None


def synth_layout(name: str) -> bool:
    """Whether ``isus synth`` writes the layout ``name``."""
    return name in isus.synth.LAYOUTS


def dataset_help() -> str:
    """The registered formats with their aliases: ``mvd (alias mapillary, vistas), cityscapes, ...``."""
    names = [f + (f" (alias {', '.join(a)})" if (a := reader_class(f).aliases) else "") for f in dataset_formats()]
    return ", ".join(names)


# -- deprecated names --------------------------------------------------------------------------
def hidden_alias(old: str, new: str, *, deprecated: bool = True, **kwargs: Any) -> Callable:
    """Accept ``old`` (hidden from --help) for the option ``new`` -- its earlier name. The command
    sees the value under ``new``'s name; giving both is an error."""
    key = "_alias_" + old.lstrip("-").replace("-", "_")

    def deco(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kw):
            value = kw.pop(key)
            if value is not None:
                ctx = click.get_current_context()
                target = next(p for p in ctx.command.params if new in p.opts)
                if ctx.get_parameter_source(target.name) is not click.core.ParameterSource.DEFAULT:
                    raise click.UsageError(f"{old} is the old name of {new}: give only {new}")
                if deprecated:
                    click.echo(f"warning: {old} is deprecated; use {new}", err=True)
                kw[target.name] = target.process_value(ctx, value)
            return fn(*args, **kw)

        return click.option(old, key, hidden=True, default=None, **kwargs)(wrapper)

    return deco


#: One --root: where the dataset is. Commands that read an index default to the root it recorded.
ROOT_HELP = ("The dataset's root directory, as downloaded (commands that read an index: where it is now, when "
             "it moved since the build; default: the recorded root).")

# -- the dataset to open -----------------------------------------------------------------------
#: Every reader option of open_dataset: (python name, help). Which formats take which is read from
#: the readers (isus.datasets.reader_options), so a new reader option needs one line here.
READER_OPTIONS = (
    ("version", "MVD label version: v1.2 (default) or v2.0."),
    ("source", "Annotations to read: instances, panoptic or labels (semantic only), and for Cityscapes/IDD "
               "polygons (default: auto, the first found)."),
    ("config", "MVD label config JSON, relative to --root (default: config_{version}.json)."),
    ("images_dir", "Images folder, relative to --root (default: the format's, e.g. {split}/images for MVD, "
                   "leftImg8bit for Cityscapes/IDD, {split}2017 for COCO)."),
    ("instances_dir", "MVD instance PNG folder, relative to --root (default: {split}/{version}/instances)."),
    ("labels_dir", "MVD semantic label PNG folder, relative to --root (default: {split}/{version}/labels)."),
    ("panoptic_dir", "Panoptic PNG folder, relative to --root (default: the format's, beside the panoptic JSON)."),
    ("panoptic_json", "MVD/Cityscapes/IDD panoptic JSON, relative to --root (default: the format's)."),
    ("annotations_dir", "Cityscapes/IDD annotation folder, relative to --root (default: gtFine)."),
    ("annotations", "COCO panoptic JSON, relative to --root (default: annotations/panoptic_{split}2017.json)."),
    ("categories", "COCO category list JSON, relative to --root (default: the annotations JSON's)."),
)


def _flag(option: str) -> str:
    return "--" + option.replace("_", "-")


@dataclass(frozen=True)
class DatasetArgs:
    """What ``--dataset``, ``--root``, ``--split`` and the reader options name."""

    name: str
    root: Path
    split: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def open(self) -> isus.PanopticDataset:
        """``isus.open_dataset`` with these arguments (a split that is not there: the error lists
        those that are; a --root that is one split's folder: the error names its parent)."""
        try:
            return isus.open_dataset(self.name, self.root, split=self.split, **self.options)
        except isus.DatasetError as e:
            parent, split = self.root.resolve().parent, self.root.resolve().name
            if self.split in (None, split) and parent != self.root.resolve():
                try:  # the user pointed --root at a split folder (e.g. .../mvd/training)
                    isus.open_dataset(self.name, parent, split=split, **self.options)
                except (isus.IsusError, ValueError, OSError):
                    raise e from None
                raise isus.DatasetError(f"{e} -- {self.root} looks like the {split!r} split of a {self.name} dataset: "
                                        f"pass its parent, --root {parent} --split {split}") from None
            raise


def dataset_options(required: bool = True, *, reader: bool = True) -> Callable:
    """``--dataset``, ``--root``, ``--split`` and every reader option of ``open_dataset``; the
    command receives ``dataset: DatasetArgs`` (None when ``required`` is False and no --dataset
    is given). ``reader=False`` omits --root and the reader options (``isus synth`` writes)."""

    def deco(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kw):
            name, root, split = kw.pop("dataset_name"), kw.pop("root", None), kw.pop("split", None)
            given = {k: v for k, v in ((o, kw.pop(o, None)) for o, _ in READER_OPTIONS) if v is not None}
            if not reader:
                kw["dataset"] = name
                return fn(*args, **kw)
            if name is None:
                extra = [_flag(k) for k in given] + (["--root"] if root is not None else [])
                if extra:
                    raise click.UsageError(f"--dataset is required with {', '.join(extra)}")
                kw["dataset"] = None
                return fn(*args, **kw)
            if root is None:
                raise click.UsageError(f"--root is required with --dataset {name}")
            takes = reader_options(name)
            for k in given:
                if k not in takes:
                    others = [d for d in dataset_formats() if k in reader_options(d)]
                    raise click.UsageError(f"{_flag(k)} applies to --dataset {'/'.join(others)}, not {name} "
                                           f"(its options: {', '.join(_flag(o) for o in takes)})")
            kw["dataset"] = DatasetArgs(name, root, split, given)
            return fn(*args, **kw)

        f = wrapper
        if reader:
            for option, help_ in reversed(READER_OPTIONS):
                f = click.option(_flag(option), option, default=None, metavar="TEXT" if option in ("version", "source")
                                 else "PATH", help=help_)(f)
            f = click.option("--split", default=None,
                             help="Split, in the dataset's own terms (default: the reader's: training for MVD, "
                                  "train elsewhere).")(f)
            f = click.option("--root", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
                             required=required, help=ROOT_HELP)(f)
        f = click.option("--dataset", "dataset_name", type=DatasetName(None if reader else synth_layout),
                         default=None if reader else "mvd",
                         required=required and reader, show_default=not reader,
                         help=f"Dataset format: {dataset_help()}.")(f)
        return f

    return deco


# -- crops ---------------------------------------------------------------------------------------
#: ``--mode`` of the commands that sample crops.
MODES = ("isus", "cus", "rfs")
#: The repeat-factor options of ``--mode rfs``, named as the SamplerConfig fields they set.
RFS_OPTIONS = ("rfs_threshold", "rfs_sqrt", "rfs_crop")


def sampler_options(mode: bool = False) -> Callable:
    """``--preset`` and ``--crop`` (and ``--mode`` with the repeat-factor options ``--rfs-threshold``,
    ``--rfs-sqrt/--no-rfs-sqrt``, ``--rfs-crop`` when ``mode``); the command receives
    ``config: isus.SamplerConfig``: the preset's, with --crop replacing its crop size, or
    DEFAULT_CROP square crops without an s0 rescale."""

    def deco(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kw):
            preset, crop, length_scale = kw.pop("preset"), kw.pop("crop"), kw.pop("length_scale")
            extra = {"mode": kw.pop("mode")} if mode else {}
            if mode:
                given = {k: v for k, v in ((k, kw.pop(k)) for k in RFS_OPTIONS) if v is not None}
                if given and extra["mode"] != "rfs":
                    flags = ", ".join(_flag(k) if k != "rfs_sqrt" else ("--rfs-sqrt" if given[k] else "--no-rfs-sqrt")
                                      for k in given)
                    raise click.UsageError(f"{flags} appl{'y' if len(given) > 1 else 'ies'} to --mode rfs "
                                           f"(repeat-factor sampling), not --mode {extra['mode']}")
                extra.update(given)
            if length_scale != 1.0:  # the level rule of a network whose lengths are scaled (a miniature)
                extra["levels"] = isus.FPNLevels(canonical_size=224.0 * length_scale)
            try:
                config = (isus.SamplerConfig.preset(preset, **extra) if preset
                          else isus.SamplerConfig(crop_size=(DEFAULT_CROP, DEFAULT_CROP), **extra))
            except ValueError as e:  # e.g. --rfs-threshold nan, which passes click's range check
                raise click.UsageError(str(e)) from None
            if crop is not None:
                try:
                    config = replace(config, crop_size=(crop, crop))
                except ValueError as e:  # the crop bound (isus.types.check_crop_size), said as the option's
                    raise click.BadParameter(str(e).replace("SamplerConfig(crop_size=) expects", "expected"),
                                             param_hint="'--crop'") from None
            kw["config"] = config
            return fn(*args, **kw)

        f = wrapper
        if mode:
            f = click.option("--rfs-crop", "rfs_crop", type=click.Choice(["class", "image"]), default=None,
                             help="--mode rfs: a crop around a class of the drawn image (class, the default) or the "
                                  "whole image at the preset's s0 (image).")(f)
            f = click.option("--rfs-sqrt/--no-rfs-sqrt", "rfs_sqrt", default=None,
                             help="--mode rfs: repeat factor max(1, sqrt(t / f)) as in LVIS (the default), or "
                                  "max(1, t / f).")(f)
            f = click.option("--rfs-threshold", "rfs_threshold", type=click.FloatRange(0, 1), default=None,
                             metavar="T", help="--mode rfs: frequency threshold t below which a class's images are "
                                                "repeated (default 0.001, as detectron2's LVIS configs).")(f)
            f = click.option("--mode", type=click.Choice(MODES), default="isus", show_default=True,
                             help="Sampling mode: isus, cus, or rfs (repeat-factor sampling as in LVIS; "
                                  "docs/sampling.md). isus stats always shows CUS and ISUS, and RFS beside them "
                                  "with rfs.")(f)
        f = crop_option(f)
        f = click.option("--length-scale", type=click.FloatRange(min=0, min_open=True, max=16), default=1.0,
                         show_default=True,
                         help="Scale of the network's lengths: the FPN level rule's canonical size is 224 x this "
                              "(0.25 for 256 crops standing for 1024 ones; examples/train_panoptic.py's option of "
                              "the same name).")(f)
        f = click.option("--preset", type=DatasetName(has_preset), default=None,
                         help="Sampler preset of a dataset (crop size, s0, scale ranges; see docs/sampling.md). "
                              f"Default: {DEFAULT_CROP}x{DEFAULT_CROP} crops of the images as they are (no s0).")(f)
        return f

    return deco


crop_option = click.option("--crop", type=click.IntRange(min=16), default=None,
                           help=f"Square crop size in pixels (default: the preset's, else {DEFAULT_CROP}).")


samples_option = click.option("--samples", "-n", "samples", type=click.IntRange(min=1), default=None,
                              help="Number of crops to sample (default: preview 16, drawn; stats 20000 per mode, "
                                   "CUS and ISUS (and RFS), simulated).")


def size_option(default: str) -> Callable:
    """``--size WIDTHxHEIGHT`` of synthetic images."""
    return click.option("--size", default=default, show_default=True, callback=_parse_size,
                        help="Image size WIDTHxHEIGHT (MVD-like: 4032x3024).")


def images_option(default: str) -> Callable:
    """``--images``: how many synthetic images, one number per split."""
    return click.option("--images", "num_images", default=default, show_default=True, callback=_parse_counts,
                        help="Number of images (isus synth: one number per split with --splits, e.g. 200,50).")


def _parse_size(ctx, param, value: str) -> tuple[int, int]:
    from isus.synth.writers import check_size

    try:
        w, h = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"expected WIDTHxHEIGHT such as 640x480; got {value!r}") from None
    try:
        check_size(w, h)  # before anything is allocated
    except ValueError as e:
        raise click.BadParameter(str(e).replace("write_dataset(size=) ", "")) from None
    return w, h


def _parse_counts(ctx, param, value: str) -> list[int]:
    try:
        counts = [int(v) for v in value.split(",")]
    except ValueError:
        raise click.BadParameter(f"expected a number of images, or one per split such as 200,50; got {value!r}") from None
    if any(n < 1 for n in counts):
        raise click.BadParameter(f"expected positive numbers of images; got {value!r}")
    return counts


# -- the rest --------------------------------------------------------------------------------------
seed_option = click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Random seed.")

index_root_option = click.option("--root", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
                                 help=ROOT_HELP)

predictions_option = click.option(
    "--predictions", type=click.Path(exists=True, path_type=Path), default=None,
    help="COCO panoptic predictions: the JSON, or a folder holding it (PNGs beside it or in the folder named like it).")

workers_option = click.option("--workers", type=click.IntRange(min=1), default=None,
                              help="Parallel processes (default: all cores).")


def out_dir_option(help_: str, default: Path | None = None) -> Callable:
    return click.option("--out", type=OutDir(), required=default is None, default=default,
                        show_default=default is not None, help=help_)


overwrite_option = click.option("--overwrite", is_flag=True,
                                 help="Replace the files a previous run wrote in --out (default: refuse).")


def check_overwrite(paths: Iterable[Path], overwrite: bool) -> None:
    """Refuse to replace any of ``paths`` that exists unless ``--overwrite`` was given."""
    there = [p for p in paths if p.exists()]
    if there and not overwrite:
        names = ", ".join(p.name for p in there)
        raise click.ClickException(f"{there[0].parent}: {names} already exist{'s' if len(there) == 1 else ''} (an "
                                   "earlier run's): pass --overwrite to replace, or another --out")


def examples(command: click.Command) -> list[str]:
    """The command lines in the ``Example:`` block of ``command``'s help."""
    text = inspect.cleandoc(command.help or "")
    block = text.split("Example:", 1)[1] if "Example:" in text else ""
    return [line.strip() for line in block.splitlines() if line.strip().startswith("isus ")]
