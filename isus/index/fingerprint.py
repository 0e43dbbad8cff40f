"""Fingerprints of the dataset files an index was built from, and their verification.

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
from typing import TYPE_CHECKING, Any

from isus._fsio import open_regular
from isus.errors import DatasetError

if TYPE_CHECKING:
    from isus.datasets.base import PanopticDataset

__all__ = ["FIELDS", "OPEN_SAMPLE", "SAMPLE_BYTES", "file_names", "file_sample", "image_files", "image_fingerprint"]

#: Bytes read at each end of a file for its content sample.
SAMPLE_BYTES = 1024
#: Images whose files are checked when an index is opened with a dataset (spread evenly).
OPEN_SAMPLE = 32
#: Fingerprint columns of the index: (array name, scan key, what the error message calls it).
FIELDS = (("fp_image_size", "image_size", "image file size"),
          ("fp_image_sample", "image_sample", "image content"),
          ("fp_ann_size", "ann_size", "annotation file size"),
          ("fp_ann_sample", "ann_sample", "annotation content"))


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
