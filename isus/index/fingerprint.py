"""Fingerprints of the dataset files an index was built from, and the checks of a dataset against them.

Per image the index records the image's and the annotation's file names (relative to the
dataset root), their sizes, and a 64-bit blake2b of the size plus the first and last
:data:`SAMPLE_BYTES` bytes of each file (for annotations listed in a panoptic JSON, the image's
``segments_info`` too). That is two small reads per file: cheap enough to check a sample of
images whenever an index is opened with a dataset and every image the first time a crop engine
loads it. Sizes and content samples, not mtimes: a copied or moved dataset still matches.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np

from isus.fsio import open_regular
from isus.errors import DatasetError
from isus.index.schema import FINGERPRINT_COLUMNS
from isus.index.store import IndexFileError, IndexMismatchError

if TYPE_CHECKING:
    from isus.datasets.base import PanopticDataset
    from isus.index.index import Index

__all__ = ["FIELDS", "OPEN_SAMPLE", "SAMPLE_BYTES", "file_names", "file_sample", "image_files", "image_fingerprint",
           "verify_dataset", "verify_image", "mismatch"]

#: Bytes read at each end of a file for its content sample.
SAMPLE_BYTES = 1024
#: Images whose files are checked when an index is opened with a dataset (spread evenly).
OPEN_SAMPLE = 32
_LABELS = {"image_size": "image file size", "image_sample": "image content", "ann_size": "annotation file size",
           "ann_sample": "annotation content"}
#: Fingerprint columns of the index: (array name, scan key, what the error message calls it).
FIELDS = tuple((array, key, _LABELS[key]) for array, key, _ in FINGERPRINT_COLUMNS)


def file_sample(path: str | Path, extra: bytes = b"") -> tuple[int, int]:
    """``(size, hash)`` of a file: a 64-bit blake2b of its size, first and last
    :data:`SAMPLE_BYTES` bytes and ``extra``; ``(-1, 0)`` when the file does not exist. A FIFO,
    device or directory raises :class:`~isus.DatasetError`."""
    h = hashlib.blake2b(digest_size=8)
    try:
        with open_regular(path, "dataset file", DatasetError) as f:
            size = os.fstat(f.fileno()).st_size
            h.update(size.to_bytes(8, "little"))
            h.update(f.read(SAMPLE_BYTES))
            if size > SAMPLE_BYTES:
                f.seek(max(SAMPLE_BYTES, size - SAMPLE_BYTES))
                h.update(f.read(SAMPLE_BYTES))
    except FileNotFoundError:
        return -1, 0
    h.update(extra)
    return size, int.from_bytes(h.digest(), "little")


def image_files(ds: PanopticDataset, i: int) -> tuple[Path, Path | None, Any]:
    """``(image path, annotation path or None, segments_info or None)`` of image ``i``."""
    f = ds.files(i)
    return f.image, f.annotation, f.segments_info


def relative_name(path: Path | None, root: Path) -> str:
    if path is None:
        return ""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def file_names(ds: PanopticDataset, i: int) -> tuple[str, str]:
    """Image and annotation file names of image ``i``, relative to the dataset root."""
    img, ann, _ = image_files(ds, i)
    return relative_name(img, ds.root), relative_name(ann, ds.root)


def image_fingerprint(ds: PanopticDataset, i: int) -> dict[str, Any]:
    """The fingerprint of image ``i``'s files (keys of :data:`FIELDS` plus ``ann_name``)."""
    img, ann, segments_info = image_files(ds, i)
    image_size, image_sample = file_sample(img)
    extra = b"" if segments_info is None else json.dumps(segments_info, sort_keys=True).encode()
    ann_size, ann_sample = file_sample(ann, extra) if ann is not None else (0, 0)
    return {"ann_name": relative_name(ann, ds.root), "image_size": image_size, "image_sample": image_sample,
            "ann_size": ann_size, "ann_sample": ann_sample}


# -- checks of a dataset against an index ---------------------------------------------------------
def mismatch(index: Index, i: int | None, field: str, ours: object, theirs: object,
             ds: PanopticDataset) -> IndexMismatchError:
    """The error saying that ``field`` of image ``i`` (None: of the dataset) differs between
    ``index`` and ``ds``."""
    where = "the dataset" if i is None else f"image {i} ({index.image_strings('file_name')[i - index.image_range[0]]})"
    return IndexMismatchError(
        f"{where}: {field} differs from what the index was built from (index: {ours}, dataset at {ds.root}: "
        f"{theirs}). The index belongs to another dataset, or the files changed since the build: rebuild "
        "the index, or open the dataset it was built from", index.path, image=i, field=field)


def verify_dataset(index: Index, ds: PanopticDataset, images: str | Iterable[int] = "sample") -> None:
    """Check that ``ds`` is the dataset ``index`` was built from (:meth:`Index.verify_dataset
    <isus.index.Index.verify_dataset>`): its identity and every file name, then the files of
    ``images`` (``"sample"``, ``"all"`` or image indices). Raises :class:`IndexMismatchError`."""
    if FINGERPRINT_COLUMNS[0][0] not in index.arrays():
        raise IndexFileError("this index records no dataset fingerprint (a simulated index?); it cannot "
                             "be used with a dataset", index.path)
    d = index.info.dataset
    for field, ours, theirs in (("dataset format", d.name, ds.name), ("split", d.split, ds.split),
                                ("annotation source", d.source, ds.source),
                                ("number of images", d.num_images, len(ds))):
        if ours != theirs:
            raise mismatch(index, None, field, ours, theirs, ds)
    our_cats = [(c.id, c.name, c.isthing) for c in index.categories]
    their_cats = [(c.id, c.name, c.isthing) for c in ds.categories]
    if our_cats != their_cats:
        diff = next((k for k, (a, b) in enumerate(zip(our_cats, their_cats)) if a != b),
                    min(len(our_cats), len(their_cats)))
        raise mismatch(index, None, "categories", our_cats[diff:diff + 1] or "none",
                       their_cats[diff:diff + 1] or "none", ds)
    start, stop = index.image_range
    names, anns = index.image_strings("file_name"), index.image_strings("ann_name")
    for k, i in enumerate(range(start, stop)):
        img, ann = file_names(ds, i)
        if img != names[k]:
            raise mismatch(index, i, "image file name", names[k], img, ds)
        if ann != anns[k]:
            raise mismatch(index, i, "annotation file name", anns[k], ann, ds)
    if isinstance(images, str):
        if images == "all":
            todo: Iterable[int] = range(start, stop)
        elif images == "sample":
            n = min(OPEN_SAMPLE, stop - start)
            todo = sorted(set(np.linspace(start, stop - 1, n).round().astype(int).tolist())) if n else []
        else:
            raise ValueError(f"verify_dataset(images=) expects 'sample', 'all' or image indices; got {images!r}")
    else:
        todo = images
    for i in todo:
        verify_image(index, ds, int(i), names=False)


def verify_image(index: Index, ds: PanopticDataset, i: int, names: bool = True) -> None:
    """Check image ``i``'s files in ``ds`` against ``index``'s fingerprint of them (two small
    reads per file; with ``names``, their names first). Raises :class:`IndexMismatchError`
    naming the image and the field."""
    start, stop = index.image_range
    if not start <= i < stop:
        raise IndexError(f"image {i} is not in this index (images {start}..{stop - 1})")
    k = i - start
    if names:
        img, ann = file_names(ds, i)
        for field, ours, theirs in (("image file name", index.image_strings("file_name")[k], img),
                                    ("annotation file name", index.image_strings("ann_name")[k], ann)):
            if ours != theirs:
                raise mismatch(index, i, field, ours, theirs, ds)
    fp = image_fingerprint(ds, i)
    arrays = index.arrays()
    for array, key, field in FIELDS:
        recorded = int(arrays[array][k])
        if recorded != fp[key]:
            if key.endswith("size") and fp[key] == -1:
                raise mismatch(index, i, field, recorded, "file missing", ds)
            show = (lambda v: v) if key.endswith("size") else (lambda v: f"{v:016x}")
            raise mismatch(index, i, field, show(recorded), show(fp[key]), ds)
