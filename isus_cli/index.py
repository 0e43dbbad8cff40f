"""``isus index``: build, inspect and merge dataset indexes."""
from __future__ import annotations

import os
import re
import time
from pathlib import Path

import click

from isus.datasets import dataset_formats, reader_class
from isus.index import Index, build_index, merge_indexes, remove_checkpoint
from isus.index.image_cache import CODECS, ImageCacheParams
from isus.progress import Progress
from isus.fsio import naming, remove_stale_temps
from isus.summary import format_bytes
from isus_cli._options import DatasetArgs, dataset_options, index_root_option, overwrite_option, workers_option

#: the formats whose readers write the annotation cache unless told otherwise (each reader says)
_CACHED = [n for n in dataset_formats() if reader_class(n).cache_annotations_by_default]
_CACHED_BY_DEFAULT = "on for " + ", ".join(_CACHED) if _CACHED else "off"


def save_index(index_: Index, out: Path) -> None:
    """``index_.save(out)``, after removing the temp files a killed save left beside ``out``; an
    error names ``out``."""
    remove_stale_temps(out.parent, rf"^\.{re.escape(out.name)}\.tmp-(\d+)$")
    with naming(out):
        index_.save(out)


def parse_shard(ctx, param, value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        k, n = (int(v) for v in value.split("/"))
    except ValueError:
        raise click.BadParameter(f"expected K/N such as 0/4; got {value!r}") from None
    if not 0 <= k < n:
        raise click.BadParameter(f"expected 0 <= K < N; got {value!r}")
    return k, n


@click.group()
def index() -> None:
    """Build and inspect dataset indexes.

    Example:

    \b
        isus index build --dataset mvd --root /data/mvd --out mvd-training.isusidx
        isus index info mvd-training.isusidx
    """


@index.command()
@dataset_options()
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Index file to write (default: ./{dataset}-{split}.isusidx, or "
                   "./{dataset}-{split}.shard{K}of{N}.isusidx with --shard).")
@workers_option
@click.option("--resume", is_flag=True, help="Continue an interrupted build of the same --out.")
@click.option("--shard", callback=parse_shard, default=None, help="Build only part K of N (K/N); join with `isus index merge`.")
@click.option("--cache-annotations/--no-cache-annotations", default=None,
              help=f"Also write the annotation cache (default: {_CACHED_BY_DEFAULT}) to OUT.cache/ (shards without --out: "
                   "to the whole index's, {dataset}-{split}.isusidx.cache/).")
@click.option("--cache-images/--no-cache-images", default=False, show_default=True,
              help="Also write the image cache (tiles at 1/1..1/8, beside the annotation cache): crops then decode "
                   "only the tiles they cover. About 2-3x the JPEGs' bytes (docs/crops.md).")
@click.option("--image-codec", type=click.Choice(list(CODECS)), default="jpeg", show_default=True,
              help="Image cache tiles: jpeg (small, fast), png (lossless: crops bit-identical to uncached ones; slow) "
                   "or raw (lossless and the fastest: no decode; about 4 bytes per source pixel on disk).")
@click.option("--image-quality", type=click.IntRange(1, 100), default=95, show_default=True,
              help="JPEG quality of the image cache's tiles.")
@click.option("--image-chroma", type=click.Choice(["444", "420"]), default="444", show_default=True,
              help="JPEG chroma sampling of the image cache's tiles: 420 decodes faster, blurs colour edges.")
@click.option("--grid", type=click.IntRange(1, 256), default=16, show_default=True,
              help="Classes are located on a GRIDxGRID partition of each image.")
@click.option("--checkpoint-every", type=click.IntRange(min=1), default=64, show_default=True,
              help="Images per progress checkpoint (what an interruption can lose at most).")
@overwrite_option
def build(dataset: DatasetArgs, out, workers, resume, shard, cache_annotations, cache_images, image_codec, image_quality,
          image_chroma, grid, checkpoint_every, overwrite) -> None:
    """Scan every annotation once and write the index sampling needs.

    An interrupted build (Ctrl-C, kill) leaves nothing at --out -- an index already there, and
    the cache entries it refers to, stay as they were; its progress is kept in OUT.partial/ and
    `--resume` continues from there. Under torchrun, each rank builds its
    shard and rank 0 merges them. Layouts other than the format's default: the path options
    (--images-dir, --config, --annotations, ...), relative to --root.

    Example:

    \b
        isus index build --dataset mvd --root /data/mvd --split training --workers 8
        isus index build --dataset mvd --root /data/mvd --shard 0/2   # mvd-training.shard0of2.isusidx
        isus index build --dataset coco --root /data/coco --split val --annotations ann/val.json --images-dir val
        isus index build --dataset mvd --root /data/mvd --cache-images   # O(crop) loading
    """
    name = dataset.name
    ds = dataset.open()
    whole = Path(f"{name}-{ds.split}.isusidx")  # the default name of the index, and of the shards' merge
    if out is None:
        # each shard its own file; their annotation cache is the whole index's, as a single build's
        out = whole if shard is None else Path(f"{name}-{ds.split}.shard{shard[0]}of{shard[1]}.isusidx")
        cache_dir = whole.with_name(whole.name + ".cache")
    else:
        cache_dir = out.with_name(out.name + ".cache")
    if out.exists() and not overwrite:  # before the scan: hours of work would end in a refusal
        raise click.ClickException(f"{out} already exists: pass --overwrite to replace it (the old index stays "
                                   "valid until the new one is written), or another --out")
    if cache_images and cache_annotations is False:
        raise click.UsageError("--cache-images writes beside the annotation cache: drop --no-cache-annotations")
    if not ((ds.cache_annotations_by_default or cache_images) if cache_annotations is None else cache_annotations):
        cache_dir = None
    image_cache = ImageCacheParams(codec=image_codec, quality=image_quality, chroma=image_chroma) if cache_images else None
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and shard is None:
        from isus.index.distributed import build_index_distributed

        index_ = build_index_distributed(ds, out, workers=workers, grid=grid, cache_dir=cache_dir, resume=resume,
                                         image_cache=image_cache or False)
        if index_ is not None:
            click.echo(index_.describe())
        return
    partial = out.with_name(out.name + ".partial")
    if cache_dir is not None:
        remove_stale_temps(cache_dir, r"^\..*\.tmp-(\d+)$")  # entries a killed build was writing
    t0 = time.perf_counter()
    try:
        index_ = build_index(ds, workers=workers, progress=True, grid=grid, cache_dir=cache_dir, shard=shard,
                             checkpoint_dir=partial, resume=resume, checkpoint_every=checkpoint_every,
                             image_cache=image_cache or False)
    except KeyboardInterrupt:
        raise click.ClickException(f"interrupted: nothing was written to {out}; the images scanned so far are kept "
                                   f"in {partial}/, re-run with --resume to continue") from None
    out.parent.mkdir(parents=True, exist_ok=True)
    save_index(index_, out)  # the commit: until here the previous index at OUT and its cache entries are untouched
    remove_checkpoint(partial)
    dt = time.perf_counter() - t0
    index_ = Index.load(out)
    if shard is None:
        index_.prune_cache()  # entries of the replaced index (shards share the cache: merged later)
    click.echo(f"indexed {index_.num_images} images in {dt:.1f} s ({index_.num_images / dt:.1f} img/s); "
               f"index {format_bytes(out.stat().st_size)}"
               + (f", annotation cache {format_bytes(index_.info.cache_bytes)}" if cache_dir else "")
               + (f", image cache {format_bytes(index_.info.image_cache_bytes)}" if image_cache else "")
               + (f" in {cache_dir}" if cache_dir else ""))
    click.echo(index_.describe())


@index.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def info(file: Path) -> None:
    """Print what an index holds: counts, instances per class, size histogram, build settings.

    Example:

        isus index info mvd-training.isusidx
    """
    click.echo(Index.load(file).describe())


@index.command()
@click.argument("parts", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Merged index file.")
@overwrite_option
def merge(parts, out: Path, overwrite: bool) -> None:
    """Join shard indexes (from `--shard K/N`) into one, identical to a single build.

    Shards built on different machines, each with its own OUT.cache/, are gathered into the
    merged index's OUT.cache/ (hard links where possible): cache entries are named by content.

    Example:

    \b
        isus index merge mvd-training.shard0of2.isusidx mvd-training.shard1of2.isusidx --out mvd-training.isusidx
    """
    if out.exists() and not overwrite:
        raise click.ClickException(f"{out} already exists: pass --overwrite to replace it, or another --out")
    merged = merge_indexes(parts, cache_dir=out.with_name(out.name + ".cache"))
    save_index(merged, out)
    merged = Index.load(out)
    merged.prune_cache()
    click.echo(f"merged {len(parts)} parts into {out}")
    click.echo(merged.describe())


@index.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@index_root_option
@click.option("--all/--sample", "all_images", default=True, show_default=True,
              help="Check every image's files, or only the sample checked whenever the index is opened.")
@click.option("--caches/--no-caches", default=True, show_default=True,
              help="Also read every cache entry in full and check its checksums.")
def verify(file: Path, root: Path | None, all_images: bool, caches: bool) -> None:
    """Check an index against its dataset: identity, file names, sizes and content samples, and
    its caches: every entry's digest and every band's and tile's checksum.

    Exits with an error naming the first image or cache entry that differs.

    Example:

        isus index verify mvd-training.isusidx --root /mnt/new/mvd
    """
    t0 = time.perf_counter()
    index_ = Index.load(file, root=root)
    ds = index_.open_dataset(verify=False)
    index_.verify_dataset(ds, images="all" if all_images else "sample")
    n = index_.num_images if all_images else "a sample of the"
    click.echo(f"{file}: matches the dataset at {ds.root} ({n} images checked in "
               f"{time.perf_counter() - t0:.2f} s)")
    if caches and index_.cache_dir is not None:
        t0 = time.perf_counter()
        bar = Progress(index_.num_images, "checking caches")
        try:
            count = index_.verify_caches(progress=bar)
        finally:
            bar.close()
        click.echo(f"{file}: its {count} cache entries in {index_.cache_dir} are intact "
                   f"({time.perf_counter() - t0:.2f} s)")
