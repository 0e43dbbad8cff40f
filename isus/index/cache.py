"""Annotation cache: each image's segment map, stored so that any window decodes cheaply.

The map is stored as dense segment indices (0 = void), run-length encoded per row, in bands of
:data:`BAND_ROWS` rows compressed independently with zlib. Reading a crop window decompresses
only the bands it covers and expands only the runs overlapping its columns -- instead of
decoding a whole 16-bit PNG (the most expensive part of loading an MVD sample).

Entries are named by their content, ``{index:07d}-{digest}.ann``, and the index records each
image's digest. A rebuild therefore writes its entries *beside* those of the index it replaces
(identical content gets the identical name and bytes), so an interrupted rebuild never changes
what the surviving index reads; superseded entries are removed only after the new index is
committed (:func:`prune_cache`).

Entry layout (little-endian)::

    magic      8 bytes  b"ISUSANN\\0"
    version    u32      ENTRY_VERSION
    reserved   u32      0
    header_len u64
    header     JSON     {"image_id", "height", "width", "segments", "bands", "band_rows"}
    tables     segments (SEGMENT_DTYPE), band_offsets (i8, bands+1), band_runs (i8), band_crc (u4)
    payload    the zlib-compressed bands

The digest (blake2b, 16 bytes) covers the header and the tables; each band's CRC-32 covers its
compressed bytes and is checked before it is decompressed. So a read verifies everything it uses
at the cost of hashing a few KiB.
"""
from __future__ import annotations

import hashlib
import json
import re
import struct
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Callable, NamedTuple

import numpy as np

from isus import kernels
from isus.fsio import atomic_file
from isus.index.image_cache import ENTRY_RE as IMAGE_ENTRY_RE
from isus.index.image_cache import (OPEN_ENTRIES, OpenEntries, check_image, entry_errors, header_length,
                                    read_entry_bytes)
from isus.index.store import IndexFileError
from isus.types import SEGMENT_DTYPE, ImageInfo, Panoptic, SampledTargets, make_segments

if TYPE_CHECKING:
    from isus.index.index import Index

BAND_ROWS = 64
ZLIB_LEVEL = 1
ENTRY_VERSION = 1
DIGEST_BYTES = 16
_MAGIC = b"ISUSANN\0"
_PREFIX = struct.Struct("<8sIIQ")
_ENTRY_RE = re.compile(r"^(\d{7})-([0-9a-f]{32})\.ann$")
_LEGACY_RE = re.compile(r"^\d{7}\.npz$|^\..*\.tmp-\d+$")
_SEG = SEGMENT_DTYPE.newbyteorder("<")


class CacheEntry(NamedTuple):
    """The decoded parts of a cache entry (see the module docstring)."""

    image_id: str
    height: int
    width: int
    segments: np.ndarray
    band_offsets: np.ndarray
    band_runs: np.ndarray
    band_crc: np.ndarray
    payload: bytes | memoryview


def entry_name(i: int, digest: str) -> str:
    return f"{i:07d}-{digest}.ann"


def _encode(e: CacheEntry) -> tuple[bytes, bytes, str]:
    """``(prefix + header, tables, digest hex)``."""
    header = json.dumps({"image_id": str(e.image_id), "height": int(e.height), "width": int(e.width),
                         "segments": len(e.segments), "bands": len(e.band_runs), "band_rows": BAND_ROWS},
                        sort_keys=True).encode()
    tables = (np.ascontiguousarray(e.segments, _SEG).tobytes() + np.asarray(e.band_offsets, "<i8").tobytes()
              + np.asarray(e.band_runs, "<i8").tobytes() + np.asarray(e.band_crc, "<u4").tobytes())
    digest = hashlib.blake2b(header + tables, digest_size=DIGEST_BYTES).hexdigest()
    return _PREFIX.pack(_MAGIC, ENTRY_VERSION, 0, len(header)) + header, tables, digest


def write_entry(path: str | Path, entry: CacheEntry) -> str:
    """Write ``entry`` to ``path`` atomically (temp file, fsync, rename); returns its digest."""
    path = Path(path)
    head, tables, digest = _encode(entry)
    # the build cleans the cache directory of stale temp files once, not once per entry
    with atomic_file(path, clean=False) as f:
        f.write(head)
        f.write(tables)
        f.write(entry.payload)
    return digest


def encode_entry(image_id: str, dense: np.ndarray, segments: np.ndarray) -> CacheEntry:
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
    crc = np.array([zlib.crc32(b) for b in blobs], np.uint32)
    return CacheEntry(str(image_id), h, w, np.asarray(segments, SEGMENT_DTYPE), band_offsets,
                      np.array(runs, np.int64), crc, b"".join(blobs))


def write_cached(cache_dir: Path, i: int, image_id: str, dense: np.ndarray, segments: np.ndarray) -> tuple[int, str]:
    """Store image ``i``'s dense segment map as a content-named entry; returns ``(bytes, digest)``."""
    entry = encode_entry(image_id, dense, segments)
    digest = _encode(entry)[2]
    path = Path(cache_dir) / entry_name(i, digest)
    write_entry(path, entry)
    return path.stat().st_size, digest


def read_entry(path: str | Path, digest: str | None = None) -> CacheEntry:
    """Read and check a cache entry; ``digest``: the one the index expects.

    Raises :class:`IndexFileError` naming the file when it is missing, not an entry, truncated or
    fails its checksum (band CRCs are checked when the bands are decompressed, by :func:`read_cached`).
    """
    path = Path(path)
    data = read_entry_bytes(path, "annotation cache entry")
    hlen = header_length(data, _MAGIC, ENTRY_VERSION, "annotation cache entry", path)
    with entry_errors("annotation cache entry", path):
        if hlen > len(data) - _PREFIX.size:
            raise EOFError
        header = json.loads(data[_PREFIX.size:_PREFIX.size + hlen])
        nseg, nb = int(header["segments"]), int(header["bands"])
        if nseg < 0 or nb < 0:
            raise ValueError("negative table length")
        if header["band_rows"] != BAND_ROWS:
            raise ValueError("band_rows")
        t0 = _PREFIX.size + hlen
        t1 = t0 + nseg * _SEG.itemsize + 8 * (nb + 1) + 8 * nb + 4 * nb
        if len(data) < t1:
            raise EOFError
        found = hashlib.blake2b(data[_PREFIX.size:t1], digest_size=DIGEST_BYTES).hexdigest()
        if digest is not None and found != digest:
            raise IndexFileError(f"annotation cache entry checksum mismatch (content hashes to {found}, the index "
                                 f"expects {digest}): the entry is corrupt or belongs to another build; rebuild "
                                 "the index", path)
        pos = t0
        segments = np.frombuffer(data, _SEG, nseg, pos).astype(SEGMENT_DTYPE)
        pos += nseg * _SEG.itemsize
        band_offsets = np.frombuffer(data, "<i8", nb + 1, pos).astype(np.int64)
        pos += 8 * (nb + 1)
        band_runs = np.frombuffer(data, "<i8", nb, pos).astype(np.int64)
        pos += 8 * nb
        band_crc = np.frombuffer(data, "<u4", nb, pos).astype(np.uint32)
        payload = memoryview(data)[t1:]
        if len(payload) != band_offsets[-1]:
            raise EOFError
        height, width = int(header["height"]), int(header["width"])
        # The structure the decoder relies on (it indexes without bounds checks): what the
        # digest covers can still be wrong if a writer was buggy.
        if (height < 0 or width < 0 or nb != -(-height // BAND_ROWS) or band_offsets[0] != 0
                or (np.diff(band_offsets) < 0).any() or (band_runs < 0).any()):
            raise ValueError("inconsistent band tables")
        return CacheEntry(str(header["image_id"]), height, width, segments, band_offsets, band_runs, band_crc, payload)


def read_cached(path: Path, window: tuple[int, int, int, int] | None, info: ImageInfo,
                digest: str | None = None) -> Panoptic:
    """Decode the entry at ``path`` (or a window ``(x0, y0, x1, y1)`` of it), checking it
    against ``digest`` and ``info``."""
    e = read_entry(path, digest)
    h, w = e.height, e.width
    check_image("annotation cache entry", e.image_id, e.height, e.width, info, path)
    x0, y0, x1, y1 = (0, 0, w, h) if window is None else (int(v) for v in window)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"CachedAnnotationSource.load(window=) expects x0 < x1 and y0 < y1; got {window}")
    out = np.zeros((y1 - y0, x1 - x0), dtype=np.uint16)
    cx0, cx1 = max(x0, 0), min(x1, w)
    if cx0 < cx1:
        for b in range(max(y0, 0) // BAND_ROWS, (min(y1, h) - 1) // BAND_ROWS + 1 if min(y1, h) > max(y0, 0) else 0):
            by0 = b * BAND_ROWS
            rows = min(BAND_ROWS, h - by0)
            offs, vals, ends = _band(e, b, path)
            ya, yb = max(y0, by0), min(y1, by0 + rows)
            out[ya - y0:yb - y0, cx0 - x0:cx1 - x0] = kernels.rle_decode_window(
                offs, vals, ends, ya - by0, yb - by0, cx0, cx1, 0)
    segments = e.segments
    lut = np.concatenate([[0], segments["id"]]).astype(np.int32)
    counts = np.bincount(out.ravel(), minlength=len(lut))
    if len(counts) > len(lut):
        raise IndexFileError(f"annotation cache entry is corrupt: segment index {len(counts) - 1} beyond its "
                             f"{len(segments)} segments", path)
    present = np.flatnonzero(counts[1:])
    seg = segments[present]
    return Panoptic(lut[out], make_segments(seg["id"], seg["category_id"], seg["iscrowd"]))


_OPEN = OpenEntries(OPEN_ENTRIES, read_entry)


def _band(e: CacheEntry, b: int, path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Band ``b``'s row offsets, run values and run ends, CRC- and structure-checked."""
    h, w = e.height, e.width
    rows = min(BAND_ROWS, h - b * BAND_ROWS)
    blob = e.payload[e.band_offsets[b]:e.band_offsets[b + 1]]
    n = int(e.band_runs[b])
    if zlib.crc32(blob) != int(e.band_crc[b]):
        raise IndexFileError(f"annotation cache entry checksum mismatch in band {b} (rows {b * BAND_ROWS}.."
                             f"{b * BAND_ROWS + rows - 1}): the entry is corrupt; rebuild the index", path)
    try:
        raw = zlib.decompress(blob)
    except zlib.error:
        raw = b""
    if len(raw) != 4 * (rows + 1) + 6 * n:
        raise IndexFileError(f"annotation cache entry is corrupt in band {b}", path)
    offs = np.frombuffer(raw, "<i4", rows + 1).astype(np.int64)
    vals = np.frombuffer(raw, "<u2", n, offset=4 * (rows + 1))
    ends = np.frombuffer(raw, "<i4", n, offset=4 * (rows + 1) + 2 * n)
    # the sampling kernel indexes without bounds checks
    if not kernels.rle_rows_valid(offs, ends, w):
        raise IndexFileError(f"annotation cache entry is corrupt in band {b}", path)
    return offs, vals, ends


def verify_entry(path: Path, info: ImageInfo, digest: str | None = None) -> int:
    """Check a whole annotation cache entry (digest, header against ``info``, every band's CRC and
    structure); returns its size in bytes. Raises :class:`IndexFileError` naming the file."""
    e = read_entry(path, digest)
    check_image("annotation cache entry", e.image_id, e.height, e.width, info, path)
    for b in range(len(e.band_runs)):
        _band(e, b, path)
    return _PREFIX.size + len(e.payload)


def read_cached_sampled(path: Path, ys: np.ndarray, xs: np.ndarray, flip: bool, info: ImageInfo,
                        digest: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Nearest-neighbour sample of image ``info``'s cached segment map at rows ``ys`` and columns
    ``xs`` (both non-decreasing original pixels, may lie outside the image: void there; ``flip``
    reverses the columns): ``(dense, segments)``, ``dense[j, k]`` the position + 1 in
    ``segments`` of the segment at ``(ys[j], xs[k])``, 0 for void.

    Only the bands holding a sampled row are decompressed, and only sampled rows are expanded,
    and only at the sampled columns: the cost follows the output, not the window.
    """
    got = _sample_runs(path, ys, xs, flip, info, digest, None, dense=True, ids=False, maps=False)
    assert got.dense is not None
    return got.dense, got.segments


def read_cached_sampled_targets(path: Path, ys: np.ndarray, xs: np.ndarray, flip: bool, info: ImageInfo,
                                luts: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]], maps: bool,
                                digest: str | None = None) -> SampledTargets:
    """:func:`read_cached_sampled` and the crop's per-pixel targets in one pass over the runs.

    ``luts(segments)`` gives the lookup tables ``(id_lut, sem_lut, crowd_lut)`` of the entry's
    segments (position + 1; 0 is void). Returns :class:`~isus.types.SampledTargets`: the id map,
    and with ``maps`` the dense indices, semantic map and crowd mask too (else None and (0, 0)),
    with each segment's sampled area and box, as :func:`~isus.kernels.crop_maps` of the dense
    map gives them, counted a span of equal pixels at a time."""
    return _sample_runs(path, ys, xs, flip, info, digest, luts, dense=maps, ids=True, maps=maps)


def _sample_runs(path: Path, ys: np.ndarray, xs: np.ndarray, flip: bool, info: ImageInfo, digest: str | None,
                 luts: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]] | None,
                 dense: bool, ids: bool, maps: bool) -> SampledTargets:
    e = _OPEN.get(path, digest)
    h, w = e.height, e.width
    check_image("annotation cache entry", e.image_id, e.height, e.width, info, path)
    ys, xs = np.asarray(ys, np.int64), np.asarray(xs, np.int64)
    n = len(e.segments)
    if luts is None:  # the segment map alone: the tables only bound the values
        id_lut, sem_lut, crowd_lut = np.zeros(n + 1, np.int32), np.zeros(n + 1, np.int64), np.zeros(n + 1, bool)
    else:
        id_lut, sem_lut, crowd_lut = luts(e.segments)
    shape, none = (len(ys), len(xs)), (0, 0)
    out_dense = np.empty(shape if dense else none, np.uint16)
    out_ids = np.empty(shape if ids else none, np.int32)
    sem = np.empty(shape if maps else none, np.int64)
    crowd = np.empty(shape if maps else none, np.bool_)
    area = np.zeros(n, np.int64)
    box = np.zeros((n, 4), np.int64)
    box[:, 0], box[:, 1] = len(xs), len(ys)
    inside = np.flatnonzero((ys >= 0) & (ys < h))  # ys is sorted: rows outside lie before or after
    outside = [slice(0, len(ys))] if not len(inside) else [slice(0, inside[0]), slice(inside[-1] + 1, len(ys))]
    for void in outside:
        out_ids[void] = id_lut[0]
        out_dense[void] = 0
        sem[void], crowd[void] = sem_lut[0], crowd_lut[0]
    if len(inside):
        bands = ys[inside] // BAND_ROWS
        cuts = np.flatnonzero(np.diff(bands)) + 1
        for a, b in zip(np.r_[0, cuts], np.r_[cuts, len(inside)]):
            band = int(bands[a])
            offs, vals, ends = _band(e, band, path)
            rows = ys[inside[a:b]] - band * BAND_ROWS
            bad = kernels.rle_sample_targets(offs, vals, ends, w, rows, xs, flip, id_lut, sem_lut, crowd_lut,
                                             out_dense, out_ids, sem, crowd, int(inside[a]), area, box)
            if bad:
                raise IndexFileError(f"annotation cache entry is corrupt: segment index {bad} beyond its "
                                     f"{n} segments", path)
    box[area == 0, :2] = 0
    return SampledTargets(out_dense if dense else None, out_ids, sem, crowd, area, box, e.segments, (h, w))


class CachedAnnotationSource:
    """The crop engine's annotation source (:class:`~isus.crop.sources.AnnotationSource`)
    reading ``index``'s annotation cache: only the bands and rows a crop samples are decoded."""

    def __init__(self, index: Index) -> None:
        self.index = index

    def sample(self, i: int, ys: np.ndarray, xs: np.ndarray, flip: bool) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
        """Nearest-neighbour sample of image ``i``'s cached segment map at rows ``ys`` and columns
        ``xs`` (non-decreasing original pixels; outside the image is void; ``flip`` reverses the
        columns): ``(dense, segments, (H, W))``, ``dense`` the position + 1 in ``segments`` (0 void)."""
        ix = self.index
        info = ix.image_info(i)
        dense, segments = read_cached_sampled(ix.cache_path(i), ys, xs, flip, info, ix.annotation_digest(i))
        return dense, segments, (info.height, info.width)

    def sample_targets(self, i: int, ys: np.ndarray, xs: np.ndarray, flip: bool,
                       luts: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]], maps: bool = True
                       ) -> SampledTargets:
        """:meth:`sample` and the crop's per-pixel targets in one pass over the runs
        (:meth:`~isus.crop.sources.AnnotationSource.sample_targets`)."""
        ix = self.index
        return read_cached_sampled_targets(ix.cache_path(i), ys, xs, flip, ix.image_info(i), luts, maps,
                                           ix.annotation_digest(i))

    def load(self, i: int, window: tuple[int, int, int, int] | None = None) -> Panoptic:
        """Panoptic annotation of image ``i``, optionally only the ``window`` ``(x0, y0, x1, y1)``
        (decoding only the bands it covers; parts outside the image are void)."""
        ix = self.index
        path = ix.cache_path(i)
        return read_cached(path, window, ix.image_info(i), ix.annotation_digest(i))


def prune_cache(cache_dir: str | Path, keep: set[str]) -> int:
    """Delete cache entries (and leftovers of killed writers) whose names are not in ``keep``.

    Call it only after the index referring to ``keep`` was committed; returns the number removed.
    """
    removed = 0
    d = Path(cache_dir)
    if not d.is_dir():
        return 0
    for p in d.iterdir():
        if p.name not in keep and (_ENTRY_RE.match(p.name) or IMAGE_ENTRY_RE.match(p.name) or _LEGACY_RE.match(p.name)) \
                and p.is_file():
            p.unlink(missing_ok=True)
            removed += 1
    return removed
