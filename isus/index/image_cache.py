"""Image cache: each image stored as square tiles at a few pyramid levels, so a crop decodes
only the tiles its window covers, at the coarsest level that still has the crop's resolution.

Level ``r`` (1, 2, 4, 8) holds the image exactly as the crop engine decodes it without the cache
(``dataset.load_image(i, r)``: for JPEGs libjpeg's DCT-scaled decode, the engine's reduced
decode), so a lossless cache gives bit-identical crops and a JPEG cache differs from them only by
the tiles' coding error. Tiles are ``tile`` pixels square (smaller at the right and bottom edges),
encoded independently as JPEG (default: quality :data:`DEFAULT_QUALITY`, full-resolution chroma), PNG
(lossless) or raw (lossless, uncompressed: no decode at all, about 4 bytes per source pixel), in
BGR order, the engine's working order.

Entries are named by their content, ``{index:07d}-{digest}.img``, beside the annotation cache's
``.ann`` entries, with the same guarantees: written atomically, superseded entries pruned only
after the new index is committed, and the index records each image's digest.

Entry layout (little-endian)::

    magic      8 bytes  b"ISUSIMG\\0"
    version    u32      ENTRY_VERSION
    reserved   u32      0
    header_len u64
    header     JSON     {"image_id", "height", "width", "tile", "codec", "quality",
                         "levels": [[r, height, width, tiles_x, tiles_y], ...]}
    tables     tile_offsets (i8, tiles+1), tile_crc (u4, tiles); tiles of each level row-major
    payload    the encoded tiles

The digest (blake2b, 16 bytes) covers the header and the tables, checked when a process first
opens the entry; each tile's CRC-32 is checked before the tile is decoded. The file is read with
``pread``, tile by tile (not memory-mapped, so a file truncated under a reader gives an
:class:`~isus.index.store.IndexFileError`, never SIGBUS): reading a crop reads only the tiles it
decodes.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import threading
import zlib
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, NamedTuple

import cv2
import numpy as np

from isus.fsio import atomic_file, open_regular
from isus.index.store import IndexFileError
from isus.types import ImageInfo

if TYPE_CHECKING:
    from isus.index.index import Index

__all__ = ["ImageCacheParams", "write_image_entry", "read_window", "window_tiles", "TileWindow", "image_entry_name",
           "CachedImageSource", "LEVELS", "CODECS"]

ENTRY_VERSION = 1
DIGEST_BYTES = 16
DEFAULT_TILE = 256
DEFAULT_QUALITY = 95
LEVELS = (1, 2, 4, 8)
CODECS = ("jpeg", "png", "raw")
_MAGIC = b"ISUSIMG\0"
_PREFIX = struct.Struct("<8sIIQ")
ENTRY_RE = re.compile(r"^(\d{7})-([0-9a-f]{32})\.img$")
#: parsed entries kept open per process (open descriptors: the page cache holds the data, shared)
OPEN_ENTRIES = 64


@dataclass(frozen=True)
class ImageCacheParams:
    """How the image cache is written.

    Attributes
    ----------
    codec
        ``"jpeg"`` (lossy, small, fast to decode), ``"png"`` (lossless, bit-identical crops, slow
        to decode) or ``"raw"`` (lossless and bit-identical, uncompressed: the fastest, reading is
        a copy; about 4 bytes per source pixel on disk, the pyramid included).
    quality
        JPEG quality, 1..100.
    tile
        Tile side in pixels (a multiple of 16 between 64 and 2048).
    chroma
        JPEG chroma sampling: ``"444"`` (full resolution, default) or ``"420"`` (a quarter
        faster to decode and smaller, but colour edges blur: 35 dB instead of 44 dB on the
        synthetic scenes' sharp colour edges; photos lose less).
    """

    codec: str = "jpeg"
    quality: int = DEFAULT_QUALITY
    tile: int = DEFAULT_TILE
    chroma: str = "444"

    def __post_init__(self) -> None:
        if self.codec not in CODECS:
            raise ValueError(f"image cache codec= expects one of {', '.join(CODECS)}; got {self.codec!r}")
        if not (isinstance(self.quality, int) and 1 <= self.quality <= 100):
            raise ValueError(f"image cache quality= expects an int in 1..100; got {self.quality!r}")
        if self.chroma not in ("444", "420"):
            raise ValueError(f"image cache chroma= expects '444' or '420'; got {self.chroma!r}")
        if not (isinstance(self.tile, int) and 64 <= self.tile <= 2048 and self.tile % 16 == 0):
            raise ValueError(f"image cache tile= expects a multiple of 16 in 64..2048; got {self.tile!r}")


def image_entry_name(i: int, digest: str) -> str:
    return f"{i:07d}-{digest}.img"


def _encode_tile(tile: np.ndarray, params: ImageCacheParams) -> bytes:
    if params.codec == "jpeg":
        flags = [cv2.IMWRITE_JPEG_QUALITY, params.quality, cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
                 cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444 if params.chroma == "444" else cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420]
        ok, buf = cv2.imencode(".jpg", tile, flags)
    elif params.codec == "raw":
        return np.ascontiguousarray(tile, np.uint8).tobytes()
    else:
        ok, buf = cv2.imencode(".png", tile, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise IndexFileError(f"OpenCV could not encode a {params.codec} tile")
    return buf.tobytes()


def write_image_entry(cache_dir: Path, i: int, image_id: str, levels: list[np.ndarray],
                      params: ImageCacheParams) -> tuple[int, str]:
    """Tile and encode the pyramid ``levels`` (BGR, level ``LEVELS[k]`` at ``levels[k]``) of image
    ``i`` into a content-named entry in ``cache_dir``; returns ``(bytes, digest)``."""
    t = params.tile
    blobs: list[bytes] = []
    table = []
    for r, img in zip(LEVELS, levels):
        h, w = img.shape[:2]
        nx, ny = -(-w // t), -(-h // t)
        table.append([r, h, w, nx, ny])
        for ty in range(ny):
            for tx in range(nx):
                blobs.append(_encode_tile(np.ascontiguousarray(img[ty * t:(ty + 1) * t, tx * t:(tx + 1) * t]), params))
    h0, w0 = levels[0].shape[:2]
    header = json.dumps({"image_id": str(image_id), "height": int(h0), "width": int(w0), "tile": t,
                         "codec": params.codec, "quality": params.quality, "chroma": params.chroma, "levels": table},
                        sort_keys=True).encode()
    offsets = np.zeros(len(blobs) + 1, "<i8")
    offsets[1:] = np.cumsum([len(b) for b in blobs])
    crc = np.array([zlib.crc32(b) for b in blobs], "<u4")
    tables = offsets.tobytes() + crc.tobytes()
    digest = hashlib.blake2b(header + tables, digest_size=DIGEST_BYTES).hexdigest()
    path = Path(cache_dir) / image_entry_name(i, digest)
    # the build cleans the cache directory of stale temp files once, not once per entry
    with atomic_file(path, clean=False) as f:
        f.write(_PREFIX.pack(_MAGIC, ENTRY_VERSION, 0, len(header)) + header)
        f.write(tables)
        for b in blobs:
            f.write(b)
    return path.stat().st_size, digest


def _raw_sizes(levels: dict[int, tuple[int, int, int, int, int]], tile: int) -> np.ndarray:
    """Bytes of each raw tile, in the entry's order (levels, then rows of tiles)."""
    sizes = []
    for r in sorted(levels, key=lambda r: levels[r][4]):
        h, w, nx, ny, _ = levels[r]
        th = np.minimum(tile, h - tile * np.arange(ny))
        tw = np.minimum(tile, w - tile * np.arange(nx))
        sizes.append((3 * th[:, None] * tw[None, :]).ravel())
    return np.concatenate(sizes).astype(np.int64) if sizes else np.zeros(0, np.int64)


@dataclass
class _Entry:
    image_id: str
    height: int
    width: int
    tile: int
    codec: str
    levels: dict[int, tuple[int, int, int, int, int]]  # r -> (height, width, tiles_x, tiles_y, first tile)
    offsets: np.ndarray
    crc: np.ndarray
    payload_start: int
    data: EntryFile


class EntryFile:
    """A cache entry opened for positional reads (``os.pread``), never memory-mapped.

    Reading a memory-mapped file that another process truncated kills the reader with SIGBUS;
    ``pread`` instead returns fewer bytes, which :meth:`read` turns into :class:`IndexFileError`
    ("truncated"). Reads still come from the page cache, shared between processes, and the
    descriptor may be shared with forked workers (``pread`` has no file position).
    """

    def __init__(self, path: Path, what: str) -> None:
        self.path, self.what = path, what
        try:
            self._f = open_regular(path, what, IndexFileError)
        except FileNotFoundError:
            raise IndexFileError(f"{what} not found (the cache was moved, pruned or deleted; rebuild the index)",
                                 path) from None
        #: the size when opened (a later truncation is caught by :meth:`read`)
        self.size = os.fstat(self._f.fileno()).st_size

    def __len__(self) -> int:
        return self.size

    def read(self, offset: int, n: int) -> bytes:
        """``n`` bytes at ``offset``; fewer (the file shrank since it was opened) raise
        :class:`IndexFileError`."""
        chunks, got = [], 0
        while got < n:
            b = os.pread(self._f.fileno(), n - got, offset + got)
            if not b:
                raise IndexFileError(f"{self.what} is truncated (it ends before byte {offset + n}; was it "
                                     "truncated or rewritten while in use?)", self.path)
            chunks.append(b)
            got += len(b)
        return b"".join(chunks) if len(chunks) != 1 else chunks[0]

    def close(self) -> None:
        self._f.close()

    def __del__(self) -> None:  # entries leave OpenEntries by eviction: close quietly then
        f = getattr(self, "_f", None)
        if f is not None:
            f.close()


def read_entry_bytes(path: Path, what: str) -> bytes:
    """A whole cache entry's bytes (read, not mapped; see :class:`EntryFile`)."""
    f = EntryFile(path, what)
    try:
        return f.read(0, f.size)
    finally:
        f.close()


def header_length(data: Any, magic: bytes, version: int, what: str, path: Path) -> int:
    """Check a cache entry's prefix (magic bytes, version); returns its header's length."""
    if len(data) < _PREFIX.size or data[:8] != magic:
        raise IndexFileError(f"not an isus {what} (bad magic bytes)", path)
    _, found, _, hlen = _PREFIX.unpack_from(data)
    if found != version:
        raise IndexFileError(f"{what} version {found}; this isus reads {version}: rebuild the index", path)
    return int(hlen)


@contextmanager
def entry_errors(what: str, path: Path) -> Iterator[None]:
    """Parsing an entry: a short file is "truncated", any other malformation "corrupt", both as
    :class:`IndexFileError` naming the file (never a bare ``KeyError`` from a header)."""
    try:
        yield
    except IndexFileError:
        raise
    except EOFError:
        raise IndexFileError(f"{what} is truncated", path) from None
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError, OverflowError,
            RecursionError) as e:
        raise IndexFileError(f"{what} is corrupt ({type(e).__name__})", path) from None


def check_image(what: str, image_id: str, height: int, width: int, info: ImageInfo, path: Path) -> None:
    """An entry's header must describe the image the index says it is for."""
    if image_id != str(info.image_id) or (height, width) != (info.height, info.width):
        raise IndexFileError(f"{what} is for image {image_id!r} ({width}x{height}), not {info.image_id!r} "
                             f"({info.width}x{info.height}): the cache is stale, rebuild the index", path)


def _parse(path: Path, digest: str | None) -> _Entry:
    data = EntryFile(path, "image cache entry")
    hlen = header_length(data.read(0, min(len(data), _PREFIX.size)), _MAGIC, ENTRY_VERSION, "image cache entry", path)
    with entry_errors("image cache entry", path):
        if hlen > len(data) - _PREFIX.size:
            raise EOFError
        head = data.read(_PREFIX.size, hlen)
        header = json.loads(head)
        table = [tuple(int(v) for v in row) for row in header["levels"]]
        ntiles = sum(nx * ny for _, _, _, nx, ny in table)
        t0 = _PREFIX.size + hlen
        t1 = t0 + 8 * (ntiles + 1) + 4 * ntiles
        if ntiles < 0 or len(data) < t1:
            raise EOFError
        tables = data.read(t0, t1 - t0)
        found = hashlib.blake2b(head + tables, digest_size=DIGEST_BYTES).hexdigest()
        if digest is not None and found != digest:
            raise IndexFileError(f"image cache entry checksum mismatch (content hashes to {found}, the index "
                                 f"expects {digest}): the entry is corrupt or belongs to another build; rebuild "
                                 "the index", path)
        offsets = np.frombuffer(tables, "<i8", ntiles + 1).astype(np.int64)
        crc = np.frombuffer(tables, "<u4", ntiles, 8 * (ntiles + 1)).astype(np.uint32)
        tile = int(header["tile"])
        levels, first = {}, 0
        for r, h, w, nx, ny in table:
            if h <= 0 or w <= 0 or nx != -(-w // tile) or ny != -(-h // tile):
                raise ValueError("level table")
            levels[r] = (h, w, nx, ny, first)
            first += nx * ny
        if (offsets[0] != 0 or (np.diff(offsets) < 0).any() or len(data) != t1 + offsets[-1]
                or header["codec"] not in CODECS):
            raise EOFError if len(data) < t1 + offsets[-1] else ValueError("tile table")
        if header["codec"] == "raw" and not np.array_equal(np.diff(offsets), _raw_sizes(levels, tile)):
            raise ValueError("raw tile sizes")  # each raw tile is exactly its pixels: nothing else can be read
        return _Entry(str(header["image_id"]), int(header["height"]), int(header["width"]), tile,
                      str(header["codec"]), levels, offsets, crc, t1, data)


class OpenEntries:
    """The last ``size`` cache entries this process read, parsed (and digest-checked) once by
    ``parse(path, digest)``. Entries are read with ``pread``, so the data stays in the page cache,
    shared between processes."""

    def __init__(self, size: int, parse: Callable[[Path, str | None], Any]) -> None:
        self.size, self.parse, self.lock = size, parse, threading.Lock()
        self.entries: OrderedDict[tuple[str, str | None], Any] = OrderedDict()

    def get(self, path: Path, digest: str | None) -> Any:
        key = (str(path), digest)
        # A file changed in place since it was opened (its identity differs) is parsed again
        # (a truncation between this check and a read still gives IndexFileError, see EntryFile).
        try:
            st = os.stat(path)
            ident = (st.st_ino, st.st_size, st.st_mtime_ns)
        except FileNotFoundError:
            ident = None
        with self.lock:
            hit = self.entries.get(key)
            if hit is not None and hit[0] == ident:
                self.entries.move_to_end(key)
                return hit[1]
        e = self.parse(path, digest)
        with self.lock:
            self.entries[key] = (ident, e)
            while len(self.entries) > self.size:
                self.entries.popitem(last=False)
        return e

    def clear(self) -> None:
        with self.lock:
            self.entries.clear()


_OPEN = OpenEntries(OPEN_ENTRIES, _parse)


def verify_entry(path: Path, info: ImageInfo, digest: str | None = None) -> int:
    """Check a whole image cache entry (digest, header against ``info``, every tile's CRC);
    returns its size in bytes. Raises :class:`IndexFileError` naming the file."""
    e = _parse(path, digest)
    check_image("image cache entry", e.image_id, e.height, e.width, info, path)
    for k in range(len(e.crc)):
        a, b = e.payload_start + int(e.offsets[k]), e.payload_start + int(e.offsets[k + 1])
        if zlib.crc32(e.data.read(a, b - a)) != int(e.crc[k]):
            raise IndexFileError(f"image cache entry checksum mismatch in tile {k}: the entry is corrupt; rebuild "
                                 "the index", path)
    return len(e.data)


class TileWindow(NamedTuple):
    """The encoded tiles covering a window, CRC-checked, and where each goes.

    ``blobs[k]`` (uint8 arrays read from the entry) is pasted at rows ``y[k]:y[k] + h[k]``
    and columns ``x[k]:x[k] + w[k]`` of a ``shape`` buffer whose pixel (0, 0) is level pixel
    ``(ox, oy)``. For decoders other than OpenCV's (e.g. nvjpeg through
    ``torchvision.io.decode_jpeg(..., device="cuda")``, see ``bench/tile_decode_gpu.py``).
    """

    blobs: list[np.ndarray]
    y: list[int]
    x: list[int]
    h: list[int]
    w: list[int]
    shape: tuple[int, int, int]
    ox: int
    oy: int
    codec: str


def window_tiles(path: Path, info: ImageInfo, reduce: int, x0: int, y0: int, x1: int, y1: int,
                 digest: str | None = None) -> TileWindow:
    """The tiles of level ``reduce`` covering level pixels ``[x0, x1) x [y0, y1)`` (clipped to the
    level image), each CRC-checked, not decoded. An empty intersection gives no tiles and a
    ``(0, 0, 3)`` shape."""
    e = _OPEN.get(path, digest)
    check_image("image cache entry", e.image_id, e.height, e.width, info, path)
    if reduce not in e.levels:
        raise IndexFileError(f"image cache entry has no level 1/{reduce} (it has {sorted(e.levels)})", path)
    h, w, nx, ny, first = e.levels[reduce]
    t = e.tile
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    win = TileWindow([], [], [], [], [], (0, 0, 3), 0, 0, e.codec)
    if x1 <= x0 or y1 <= y0:
        return win
    tx0, ty0, tx1, ty1 = x0 // t, y0 // t, (x1 - 1) // t + 1, (y1 - 1) // t + 1
    ox, oy = tx0 * t, ty0 * t
    win = win._replace(shape=(min(ty1 * t, h) - oy, min(tx1 * t, w) - ox, 3), ox=ox, oy=oy)
    for ty in range(ty0, ty1):
        for tx in range(tx0, tx1):
            k = first + ty * nx + tx
            a, b = e.payload_start + int(e.offsets[k]), e.payload_start + int(e.offsets[k + 1])
            blob = np.frombuffer(e.data.read(a, b - a), np.uint8)
            if zlib.crc32(blob.data) != int(e.crc[k]):
                raise IndexFileError(f"image cache entry checksum mismatch in tile ({tx}, {ty}) of level 1/{reduce}: "
                                     "the entry is corrupt; rebuild the index", path)
            win.blobs.append(blob)
            win.y.append(ty * t - oy)
            win.x.append(tx * t - ox)
            win.h.append(min(t, h - ty * t))
            win.w.append(min(t, w - tx * t))
    return win


def read_window(path: Path, info: ImageInfo, reduce: int, x0: int, y0: int, x1: int, y1: int,
                digest: str | None = None) -> tuple[np.ndarray, int, int]:
    """Decode the tiles of level ``reduce`` covering level pixels ``[x0, x1) x [y0, y1)`` (clipped to
    the level image); returns the BGR buffer of those whole tiles and its origin ``(ox, oy)`` in
    level pixels. An empty intersection gives a ``(0, 0, 3)`` buffer."""
    win = window_tiles(path, info, reduce, x0, y0, x1, y1, digest)
    out = np.empty(win.shape, np.uint8)
    raw = win.codec == "raw"
    for blob, ty, tx, th, tw in zip(win.blobs, win.y, win.x, win.h, win.w):
        if raw:
            tile = blob.reshape(th, tw, 3) if blob.size == th * tw * 3 else None
        else:
            tile = cv2.imdecode(blob, cv2.IMREAD_COLOR)
        if tile is None or tile.shape != (th, tw, 3):
            raise IndexFileError(f"image cache entry has an undecodable tile at ({tx + win.ox}, {ty + win.oy}) of "
                                 f"level 1/{reduce}", path)
        out[ty:ty + th, tx:tx + tw] = tile
    return out, win.ox, win.oy


class CachedImageSource:
    """The crop engine's image source (:class:`~isus.crop.sources.ImageSource`) reading
    ``index``'s image cache: only the tiles a window covers are read and decoded."""

    def __init__(self, index: Index) -> None:
        self.index = index

    def window(self, i: int, reduce: int, window: tuple[int, int, int, int]) -> tuple[np.ndarray, int, int]:
        """BGR pixels of image ``i`` at level ``1/reduce`` (1, 2, 4, 8): the whole tiles covering
        ``window`` ``(x0, y0, x1, y1)`` in that level's pixels (clipped to the image), and the
        origin ``(ox, oy)`` of the returned buffer."""
        ix = self.index
        return read_window(ix.image_cache_path(i), ix.image_info(i), reduce, *window, digest=ix.image_digest(i))

    def tiles(self, i: int, reduce: int, window: tuple[int, int, int, int]) -> TileWindow:
        """The encoded, CRC-checked tiles of :meth:`window`, not decoded: for decoders other than
        OpenCV's, e.g. nvjpeg (``bench/tile_decode_gpu.py``)."""
        ix = self.index
        return window_tiles(ix.image_cache_path(i), ix.image_info(i), reduce, *window, digest=ix.image_digest(i))
