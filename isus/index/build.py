"""Building an index: decode each annotation once, scan it with the kernels, assemble the tables.

Orchestration only (workers, checkpoints, progress); the per-pixel work is in ``kernels.py``.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from isus.datasets.base import PanopticDataset
from isus.errors import IsusError
from isus import kernels
from isus.version import __version__
from isus.fsio import atomic_file, open_regular, remove_stale_temps
from isus._parallel import run_parallel, usable_cores
from isus.progress import Progress
from isus.index.cache import write_cached
from isus.index.image_cache import LEVELS, ImageCacheParams, write_image_entry
from isus.index.fingerprint import SAMPLE_BYTES, file_names, image_fingerprint
from isus.index.index import Index
from isus.index.schema import (CACHE_DIGEST_COLUMNS, CELL_COLUMNS, CLASS_COLUMNS, DIGEST_BYTES, DTYPES,
                               FINGERPRINT_COLUMNS, IMAGE_COLUMNS, IMAGE_STRINGS, INSTANCE_COLUMNS, SCAN_COLUMNS,
                               assemble, empty_column, image_strings, pack_strings)
from isus.index.store import SCHEMA_VERSION, IndexFileError
from isus.types import category_segments

__all__ = ["BuildParams", "build_index", "merge_indexes", "scan_image", "shard_range"]

ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class BuildParams:
    """What an index build computes (recorded in the index).

    Attributes
    ----------
    grid
        Classes are located on a ``grid x grid`` partition of each image.
    anchors
        Pixels recorded per instance to anchor crops on.
    cache_dir
        Where to write the annotation cache (None: no cache).
    image_cache
        Also write the image cache to ``cache_dir``: the fields of an
        :class:`~isus.index.image_cache.ImageCacheParams` (None: no image cache).
    """

    grid: int = 16
    anchors: int = 4
    cache_dir: str | None = None
    image_cache: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.grid, int) or not 1 <= self.grid <= 256:
            raise ValueError(f"BuildParams(grid=) expects an int in 1..256; got {self.grid!r}")
        if not isinstance(self.anchors, int) or not 1 <= self.anchors <= 64:
            raise ValueError(f"BuildParams(anchors=) expects an int in 1..64; got {self.anchors!r}")
        if self.image_cache is not None:
            ImageCacheParams(**self.image_cache)  # validates
            if self.cache_dir is None:
                raise ValueError("the image cache is written beside the annotation cache: pass cache_dir= too")


def shard_range(num_images: int, shard: tuple[int, int] | None) -> tuple[int, int]:
    """Images ``[start, stop)`` of shard ``(k, n)``: the k-th of n contiguous, disjoint parts."""
    if shard is None:
        return 0, num_images
    k, n = shard
    if not (isinstance(k, int) and isinstance(n, int) and n >= 1 and 0 <= k < n):
        raise ValueError(f"shard= expects (k, n) with 0 <= k < n; got {shard!r}")
    return k * num_images // n, (k + 1) * num_images // n


def scan_image(ds: PanopticDataset, i: int, params: BuildParams) -> dict[str, Any]:
    """Decode image ``i``'s annotation once and compute its index rows (and cache entry)."""
    info = ds.image_info(i)
    if ds.has_instances:
        pan = ds.load_panoptic(i)
        ids, seg = pan.ids, pan.segments
    else:
        ids = ds.load_semantic(i)
        seg = category_segments(c.id for c in ds.categories)
    if len(seg) > 65535:
        raise IsusError(f"image {info.file_name} has {len(seg)} segments; the index supports 65535")
    dense = kernels.dense_segments(ids, seg["id"])
    area, box, sums, cells = kernels.scan_dense(dense, len(seg), params.grid)
    present = area > 0
    isthing = np.array([ds.category(int(c)).isthing for c in seg["category_id"]], dtype=bool)
    inst = np.flatnonzero(present & isthing) if ds.has_instances else np.zeros(0, np.int64)
    all_anchors = kernels.anchor_points(dense, area, params.anchors)
    anchors = all_anchors[inst]
    # Per class: sum the segments of each category.
    cats_present, cls_of_seg = np.unique(seg["category_id"][present], return_inverse=True)
    cls_cells = np.zeros((len(cats_present), params.grid * params.grid), np.int64)
    np.add.at(cls_cells, cls_of_seg, cells[present])
    nz_rows, nz_cells = np.nonzero(cls_cells)
    # Per class, the anchors of its largest segment: points certainly on the class.
    present_idx = np.flatnonzero(present)
    largest = np.zeros(len(cats_present), np.int64)
    order = np.lexsort((-area[present_idx], cls_of_seg))
    first = np.r_[True, cls_of_seg[order][1:] != cls_of_seg[order][:-1]]
    largest[cls_of_seg[order][first]] = present_idx[order][first]
    cache_bytes, cache_digest = 0, ""
    if params.cache_dir is not None:
        cache_bytes, cache_digest = write_cached(Path(params.cache_dir), i, str(info.image_id), dense, seg)
    image_cache_bytes, image_cache_digest = 0, ""
    if params.image_cache is not None:
        # each level exactly as the crop engine decodes it without the cache
        levels = [ds.load_image(i, r, bgr=True) for r in LEVELS]
        assert params.cache_dir is not None  # BuildParams requires it with image_cache
        image_cache_bytes, image_cache_digest = write_image_entry(
            Path(params.cache_dir), i, str(info.image_id), levels, ImageCacheParams(**params.image_cache))
    return {
        **image_fingerprint(ds, i),
        "cache_digest": cache_digest,
        "image_cache_digest": image_cache_digest,
        "image_cache_bytes": image_cache_bytes,
        "image_id": str(info.image_id),
        "file_name": info.file_name,
        "height": info.height,
        "width": info.width,
        "inst_segment": seg["id"][inst].astype(np.int32),
        "inst_category": seg["category_id"][inst].astype(np.int32),
        "inst_crowd": seg["iscrowd"][inst].astype(bool),
        "inst_area": area[inst],
        "inst_box": box[inst],
        "inst_centroid": (sums[inst] / np.maximum(area[inst], 1)[:, None]).astype(np.float32),
        "inst_anchors": anchors,
        "cls_category": cats_present.astype(np.int32),
        "cls_pixels": cls_cells.sum(axis=1),
        "cls_ncells": np.bincount(nz_rows, minlength=len(cats_present)).astype(np.int32),
        "cls_anchors": all_anchors[largest],
        "cell_index": nz_cells.astype(np.uint16),
        "cell_pixels": cls_cells[nz_rows, nz_cells].astype(np.uint32),
        "cache_bytes": cache_bytes,
    }


def _concat(scans: dict[int, dict[str, Any]], anchors: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], bool]:
    """Image table and image-major rows from per-image scans, in image order."""
    order = sorted(scans)
    rows: dict[str, np.ndarray] = {}
    for col in SCAN_COLUMNS:
        parts = [scans[i][col] for i in order]
        rows[col] = np.concatenate(parts) if parts else empty_column(col, anchors)
    rows["inst_image"] = np.repeat(np.array(order, np.int32), [len(scans[i]["inst_segment"]) for i in order])
    rows["cls_image"] = np.repeat(np.array(order, np.int32), [len(scans[i]["cls_category"]) for i in order])
    ids = [scans[i]["image_id"] for i in order]
    int_ids = all(s.lstrip("-").isdigit() for s in ids) and len(ids) > 0
    images: dict[str, np.ndarray] = {"image_height": np.array([scans[i]["height"] for i in order], np.int32),
              "image_width": np.array([scans[i]["width"] for i in order], np.int32)}
    images["image_id_blob"], images["image_id_offsets"] = pack_strings(ids)
    for key in IMAGE_STRINGS[1:]:
        images[f"{key}_blob"], images[f"{key}_offsets"] = pack_strings([scans[i][key] for i in order])
    for name, key, dtype in FINGERPRINT_COLUMNS:
        images[name] = np.array([scans[i][key] for i in order], dtype).reshape(-1)
    for key in CACHE_DIGEST_COLUMNS:
        images[key] = np.array([list(bytes.fromhex(scans[i].get(key, "")) or bytes(DIGEST_BYTES))
                                for i in order], np.dtype(DTYPES[key])).reshape(-1, DIGEST_BYTES)
    return images, rows, int_ids


_INFO = ("image_id", "file_name", "height", "width", "cache_bytes", "cache_digest", "image_cache_bytes",
         "image_cache_digest", "ann_name", "image_size",
         "image_sample", "ann_size", "ann_sample")


# -- checkpoints --------------------------------------------------------------------------------
class _Checkpoint:
    """Scanned images saved in chunk files, so an interrupted build resumes where it stopped."""

    def __init__(self, directory: Path, fingerprint: dict[str, Any], resume: bool) -> None:
        self.dir = directory
        fp_path = directory / "build.json"
        # Temp files of a killed build (one build per directory: whatever matches is stale).
        remove_stale_temps(directory, r"^\.chunk_\d+\.tmp$|^\.build\.json\.tmp$")
        if directory.exists() and any(directory.iterdir()):
            if not resume:
                raise IsusError(f"{directory}: an interrupted build left its progress here; resume it "
                                "(--resume / resume=True) or delete the directory")
            try:
                previous = json.loads(fp_path.read_text())
            except (OSError, json.JSONDecodeError):
                raise IsusError(f"{fp_path}: unreadable build description; delete {directory} to start over") from None
            if previous != fingerprint:
                changed = sorted(k for k in set(previous) | set(fingerprint) if previous.get(k) != fingerprint.get(k))
                raise IsusError(f"{directory}: the interrupted build used other settings ({', '.join(changed)}); "
                                "use the same ones or delete the directory")
        directory.mkdir(parents=True, exist_ok=True)
        with atomic_file(fp_path, tmp=directory / ".build.json.tmp") as f:
            f.write(json.dumps(fingerprint, indent=1).encode())
        self._n = len(list(directory.glob("chunk_*.npz")))

    def load(self) -> dict[int, dict[str, Any]]:
        import zipfile
        import zlib

        scans: dict[int, dict[str, Any]] = {}
        for path in sorted(self.dir.glob("chunk_*.npz")):
            try:
                with open_regular(path, "build checkpoint", IndexFileError) as fh, np.load(fh) as z:
                    meta = json.loads(str(z["meta"]))
                    for k, i in enumerate(meta["images"]):
                        scan = {c: z[f"{k}/{c}"] for c in SCAN_COLUMNS}
                        scan.update({f: meta["info"][k][f] for f in _INFO})
                        scans[int(i)] = scan
            except (OSError, EOFError, ValueError, KeyError, TypeError, IndexError, zipfile.BadZipFile,
                    zlib.error, json.JSONDecodeError) as e:
                raise IndexFileError(f"build checkpoint is corrupt or truncated ({type(e).__name__}); delete "
                                     f"{self.dir} to start the build over", path) from None
        return scans

    def save(self, scans: dict[int, dict[str, Any]]) -> None:
        if not scans:
            return
        order = sorted(scans)
        arrays = {f"{k}/{c}": scans[i][c] for k, i in enumerate(order) for c in SCAN_COLUMNS}
        info = [{f: scans[i][f] for f in _INFO} for i in order]
        path = self.dir / f"chunk_{self._n:06d}.npz"
        # a failed write leaves no temp file; saved chunks stay
        with atomic_file(path, tmp=self.dir / f".chunk_{self._n:06d}.tmp") as f:
            np.savez(f, meta=np.array(json.dumps({"images": order, "info": info})), **arrays)
        self._n += 1


# -- parallel scan ------------------------------------------------------------------------------
def _scan_task(state: tuple[PanopticDataset, BuildParams], i: int) -> dict[str, Any]:
    return scan_image(state[0], i, state[1])


def _warm_up() -> None:
    """Compile the kernels once in the parent, so forked workers inherit them."""
    d = kernels.dense_segments(np.zeros((2, 2), np.int32), np.array([0], np.int32))
    a, *_ = kernels.scan_dense(d, 1, 2)
    kernels.anchor_points(d, a, 1)
    kernels.rle_encode_rows(d)


def _run(ds: PanopticDataset, todo: Sequence[int], params: BuildParams, workers: int,
         on_done: Callable[[int, dict[str, Any]], None]) -> None:
    _warm_up()
    run_parallel(_scan_task, (ds, params), todo, workers, on_done)


def build_index(
    ds: PanopticDataset,
    *,
    workers: int | None = None,
    progress: bool | ProgressFn = False,
    grid: int = 16,
    anchors: int = 4,
    cache_dir: str | Path | None = None,
    image_cache: bool | ImageCacheParams = False,
    shard: tuple[int, int] | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    checkpoint_every: int = 64,
) -> Index:
    """Scan every annotation of ``ds`` once and build its :class:`Index`.

    Parameters
    ----------
    ds
        An opened dataset (semantic-only datasets give an index without instances).
    workers
        Processes decoding and scanning in parallel (default: all usable cores; 1 = in this
        process). Capped at the usable cores and the number of images (a warning on the ``isus``
        logger says so when the cores cap it).
    progress
        True for a progress bar on stderr, or a callable ``progress(done, total)``.
    grid, anchors
        See :class:`BuildParams`.
    cache_dir
        Also write the annotation cache there (see ``isus.index.cache``).
    image_cache
        Also write the image cache to ``cache_dir``: True for the defaults (JPEG tiles of 256
        pixels at quality 95), or an :class:`~isus.index.image_cache.ImageCacheParams` (e.g.
        ``codec="png"`` or ``codec="raw"`` for bit-identical crops, raw the fastest and the
        largest). See ``isus.index.image_cache``.
    shard
        ``(k, n)``: build only the k-th of n contiguous parts; join parts with :func:`merge_indexes`.
    checkpoint_dir
        Save scanned images there as the build goes; with ``resume=True`` a previous, interrupted
        build's progress is picked up. The caller removes the directory after saving the index.
    checkpoint_every
        Images per checkpoint chunk.

    Returns
    -------
    Index
        In memory; call :meth:`Index.save` to write it.
    """
    if image_cache is True:
        image_cache = ImageCacheParams()
    params = BuildParams(grid=grid, anchors=anchors, cache_dir=None if cache_dir is None else str(Path(cache_dir).resolve()),
                         image_cache=asdict(image_cache) if image_cache else None)
    start, stop = shard_range(len(ds), shard)
    if workers is None:
        workers = usable_cores()
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"build_index(workers=) expects a positive int; got {workers!r}")
    if params.cache_dir is not None:
        Path(params.cache_dir).mkdir(parents=True, exist_ok=True)
    _check_names(ds, start, stop)
    meta = _meta(ds, params, (start, stop))
    scans: dict[int, dict[str, Any]] = {}
    ckpt = None
    if checkpoint_dir is not None:
        ckpt = _Checkpoint(Path(checkpoint_dir), {"dataset": meta["dataset"], "params": meta["params"],
                                                  "image_range": [start, stop]}, resume)
        scans = {i: s for i, s in ckpt.load().items() if start <= i < stop}
    todo = [i for i in range(start, stop) if i not in scans]
    bar = Progress(stop - start, f"indexing {ds.name}", done=stop - start - len(todo)) if progress is True else None
    report = bar if bar is not None else (progress if callable(progress) else None)
    unsaved: dict[int, dict[str, Any]] = {}
    last_save = time.monotonic()

    def on_done(i: int, scan: dict[str, Any]) -> None:
        nonlocal last_save
        scans[i] = unsaved[i] = scan
        if report is not None:
            report(len(scans), stop - start)
        if ckpt is not None and (len(unsaved) >= checkpoint_every or time.monotonic() - last_save > 30):
            ckpt.save(unsaved)
            unsaved.clear()
            last_save = time.monotonic()

    try:
        try:
            _run(ds, todo, params, workers, on_done)
        except BaseException:
            if ckpt is not None:
                try:
                    ckpt.save(unsaved)  # whatever was finished survives an interruption
                except OSError:
                    pass  # e.g. the disk is full: the chunks saved before stay; report the first error
            raise
        if ckpt is not None:
            ckpt.save(unsaved)
    finally:
        if bar is not None:
            bar.close()
    images, rows, int_ids = _concat(scans, params.anchors)
    meta["int_image_ids"] = int_ids
    meta["cache_bytes"] = int(sum(s["cache_bytes"] for s in scans.values()))
    meta["image_cache_bytes"] = int(sum(s.get("image_cache_bytes", 0) for s in scans.values()))
    return Index(meta, assemble(meta, images, rows))


def _check_names(ds: PanopticDataset, start: int, stop: int) -> None:
    """Refuse, before any work, a file name that is not valid UTF-8: an index records file names as
    UTF-8 text (and compares them when it is used), so such a dataset cannot be indexed."""
    for i in range(start, stop):
        for name in file_names(ds, i):
            try:
                name.encode("utf-8")
            except UnicodeEncodeError:
                shown = os.fsencode(str(Path(ds.root) / name)).decode("utf-8", "backslashreplace")
                raise IsusError(f"{shown}: file name is not valid UTF-8 (image {i}); isus indexes record file "
                                "names as UTF-8: rename the file") from None


def _meta(ds: PanopticDataset, params: BuildParams, image_range: tuple[int, int]) -> dict[str, Any]:
    return {
        "kind": "index",
        "schema": SCHEMA_VERSION,
        "isus_version": __version__,
        "dataset": {**ds.open_args, "source": ds.source, "has_instances": ds.has_instances,
                    "num_images": len(ds)},
        "params": asdict(params),
        "categories": [{"id": c.id, "name": c.name, "isthing": c.isthing, "color": list(c.color),
                        "evaluate": c.evaluate} for c in ds.categories],
        "image_range": list(image_range),
        "fingerprint": {"sample_bytes": SAMPLE_BYTES, "hash": "blake2b-64(size, first and last sample_bytes, "
                        "segments_info)"},
    }


def _differences(a: Any, b: Any, prefix: str) -> list[str]:
    """Dotted names of the settings in which ``a`` and ``b`` differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b), key=str) for d in _differences(a.get(k), b.get(k), f"{prefix}.{k}")]
    return [] if a == b else [f"{prefix} ({a!r} vs {b!r})"]


def merge_indexes(parts: Iterable[str | Path | Index], cache_dir: str | Path | None = None) -> Index:
    """Join shard indexes (built with ``shard=(k, n)``) into the index a single build gives.

    Parameters
    ----------
    parts
        The shards, in any order.
    cache_dir
        Where the merged index's caches live when the parts' caches are in different
        directories (shards built on several machines, each with its own ``OUT.cache``): every
        entry the parts refer to is hard-linked there (copied across file systems). Entries are
        named by their content, so the result equals a single build's cache. Not needed when the
        parts share one cache directory.

    Raises :class:`IndexFileError` unless the parts come from the same dataset and settings and
    together cover every image exactly once; the message names the settings that differ.
    """
    loaded = [p if isinstance(p, Index) else Index.load(p) for p in parts]
    if not loaded:
        raise ValueError("merge_indexes() needs at least one part")
    loaded.sort(key=lambda ix: ix.image_range)
    first = loaded[0]

    def settings(ix: Index) -> dict[str, Any]:
        # the cache directory is where a part's cache is, not how the index was built
        params = {k: v for k, v in ix.meta["params"].items() if k != "cache_dir"}
        return {k: ix.meta[k] for k in ("dataset", "categories", "schema")} | {
            "params": params | {"cache": ix.meta["params"].get("cache_dir") is not None}}

    for ix in loaded[1:]:
        diff = _differences(settings(ix), settings(first), "")
        if diff:
            raise IndexFileError(f"cannot merge: built with other settings than {first.path}: "
                                 + "; ".join(d.lstrip(".") for d in diff[:4]), ix.path)
    expected = 0
    for ix in loaded:
        start, stop = ix.image_range
        if start != expected:
            what = "overlaps" if start < expected else "leaves a gap before"
            raise IndexFileError(f"cannot merge: images {start}..{stop - 1} {what} image {expected}", ix.path)
        expected = stop
    total = first.meta["dataset"]["num_images"]
    if expected != total:
        raise IndexFileError(f"cannot merge: the parts cover images 0..{expected - 1} of {total}; "
                             f"shards {expected}.. are missing", loaded[-1].path)
    fixed = IMAGE_COLUMNS + CACHE_DIGEST_COLUMNS + tuple(name for name, _, _ in FINGERPRINT_COLUMNS)
    images: dict[str, list[np.ndarray]] = {k: [] for k in fixed}
    strings: dict[str, list[str]] = {k: [] for k in IMAGE_STRINGS}
    rows: dict[str, list[np.ndarray]] = {c: [] for c in INSTANCE_COLUMNS + CLASS_COLUMNS + CELL_COLUMNS}
    for ix in loaded:
        a = ix.arrays()
        for k in fixed:
            # indexes from before the image cache have no image_cache_digest column
            images[k].append(a[k] if k in a else np.zeros((ix.num_images, DIGEST_BYTES), np.uint8))
        for k, values in image_strings(a).items():
            strings[k] += values
        for c in rows:
            rows[c].append(a[c])
    merged = {k: np.concatenate(v) for k, v in images.items()}
    for k, values in strings.items():
        merged[f"{k}_blob"], merged[f"{k}_offsets"] = pack_strings(values)
    meta = dict(first.meta)
    if first.cache_dir is not None:  # parts store it relative to themselves; the merged index is saved elsewhere
        dirs = {ix.cache_dir.resolve() for ix in loaded if ix.cache_dir is not None}
        if len(dirs) == 1 and (cache_dir is None or Path(cache_dir).resolve() in dirs):
            target = dirs.pop()
        elif cache_dir is None:
            raise IndexFileError("cannot merge: the parts' caches are in different directories ("
                                 + ", ".join(str(d) for d in sorted(dirs)) + "); pass cache_dir= (CLI: the "
                                 "merged index's OUT.cache is used) to gather them", first.path)
        else:
            target = Path(cache_dir).resolve()
            _gather_cache(loaded, target)
        meta["params"] = {**meta["params"], "cache_dir": str(target)}
    meta["image_range"] = [0, total]
    meta["int_image_ids"] = all(ix.meta["int_image_ids"] for ix in loaded)
    meta["cache_bytes"] = int(sum(ix.meta["cache_bytes"] for ix in loaded))
    meta["image_cache_bytes"] = int(sum(ix.meta.get("image_cache_bytes", 0) for ix in loaded))
    return Index(meta, assemble(meta, merged, {c: np.concatenate(v) for c, v in rows.items()}))


def _gather_cache(parts: list[Index], target: Path) -> None:
    """Hard-link (or copy) every cache entry the parts refer to into ``target``."""
    target.mkdir(parents=True, exist_ok=True)
    for ix in parts:
        for i in range(*ix.image_range):
            for src in ix.cache_paths(i):
                dst = target / src.name
                if dst.exists() or src.resolve() == dst.resolve():
                    continue  # content-named: an entry of that name has that content
                if not src.exists():
                    raise IndexFileError("cannot merge: a cache entry of this part is missing", src)
                try:
                    os.link(src, dst)
                except OSError:
                    with atomic_file(dst, clean=False) as f, open_regular(src, "cache entry", IndexFileError) as fsrc:
                        shutil.copyfileobj(fsrc, f)


def remove_checkpoint(checkpoint_dir: str | Path) -> None:
    """Delete a build's checkpoint directory (after its index was saved)."""
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
