"""Annotation cache: each image's segment map, stored so that any window decodes cheaply.

The map is stored as dense segment indices (0 = void), run-length encoded per row, in bands of
:data:`BAND_ROWS` rows compressed independently with zlib. Reading a crop window decompresses
only the bands it covers and expands only the runs overlapping its columns -- instead of
decoding a whole 16-bit PNG (the most expensive part of loading an MVD sample).

One file per image (``{index:07d}.npz``), written atomically, so interrupted and sharded builds
need no special handling.
"""
from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np

from isus.errors import DatasetError
from isus import kernels
from isus.types import ImageInfo, Panoptic, make_segments

BAND_ROWS = 64
ZLIB_LEVEL = 1


def cache_path(cache_dir: Path, i: int) -> Path:
    return Path(cache_dir) / f"{i:07d}.npz"


def write_cached(cache_dir: Path, i: int, image_id: str, dense: np.ndarray, segments: np.ndarray) -> int:
    """Store image ``i``'s dense segment map; returns the file size in bytes."""
    h, w = dense.shape
    offsets, values, ends = kernels.rle_encode_rows(dense)
    blobs, runs = [], []
    for y0 in range(0, h, BAND_ROWS):
        y1 = min(y0 + BAND_ROWS, h)
        a, b = offsets[y0], offsets[y1]
        payload = ((offsets[y0:y1 + 1] - a).astype("<i4").tobytes() + values[a:b].astype("<u2").tobytes()
                   + ends[a:b].astype("<i4").tobytes())
        blobs.append(zlib.compress(payload, ZLIB_LEVEL))
        runs.append(b - a)
    band_offsets = np.zeros(len(blobs) + 1, dtype=np.int64)
    band_offsets[1:] = np.cumsum([len(b) for b in blobs])
    path = cache_path(cache_dir, i)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, shape=np.array([h, w], np.int64), segments=segments, band_offsets=band_offsets,
                     band_runs=np.array(runs, np.int64), payload=np.frombuffer(b"".join(blobs), np.uint8),
                     image_id=np.array(str(image_id)))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path.stat().st_size


def read_cached(cache_dir: Path, i: int, window: tuple[int, int, int, int] | None, info: ImageInfo) -> Panoptic:
    """Decode image ``i`` (or a window ``(x0, y0, x1, y1)`` of it) from the cache."""
    path = cache_path(cache_dir, i)
    try:
        z = np.load(path)
    except FileNotFoundError:
        raise DatasetError(f"annotation cache has no entry for image {i}", path) from None
    with z:
        h, w = (int(v) for v in z["shape"])
        if str(z["image_id"]) != str(info.image_id) or (h, w) != (info.height, info.width):
            raise DatasetError(f"annotation cache entry is for image {str(z['image_id'])!r} ({w}x{h}), not "
                               f"{info.image_id!r} ({info.width}x{info.height}): the cache is stale, rebuild the index", path)
        segments = z["segments"]
        band_offsets, band_runs, payload = z["band_offsets"], z["band_runs"], z["payload"]
    x0, y0, x1, y1 = (0, 0, w, h) if window is None else (int(v) for v in window)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"load_annotation(window=) expects x0 < x1 and y0 < y1; got {window}")
    out = np.zeros((y1 - y0, x1 - x0), dtype=np.uint16)
    cx0, cx1 = max(x0, 0), min(x1, w)
    if cx0 < cx1:
        for b in range(max(y0, 0) // BAND_ROWS, (min(y1, h) - 1) // BAND_ROWS + 1 if min(y1, h) > max(y0, 0) else 0):
            by0 = b * BAND_ROWS
            rows = min(BAND_ROWS, h - by0)
            raw = zlib.decompress(payload[band_offsets[b]:band_offsets[b + 1]].tobytes())
            n = int(band_runs[b])
            offs = np.frombuffer(raw, "<i4", rows + 1).astype(np.int64)
            vals = np.frombuffer(raw, "<u2", n, offset=4 * (rows + 1))
            ends = np.frombuffer(raw, "<i4", n, offset=4 * (rows + 1) + 2 * n)
            ya, yb = max(y0, by0), min(y1, by0 + rows)
            out[ya - y0:yb - y0, cx0 - x0:cx1 - x0] = kernels.rle_decode_window(
                offs, vals, ends, ya - by0, yb - by0, cx0, cx1, 0)
    lut = np.concatenate([[0], segments["id"]]).astype(np.int32)
    present = np.flatnonzero(np.bincount(out.ravel(), minlength=len(lut))[1:])
    seg = segments[present]
    return Panoptic(lut[out], make_segments(seg["id"], seg["category_id"], seg["iscrowd"]))
