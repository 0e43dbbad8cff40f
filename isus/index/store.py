"""The on-disk index format: one file, a JSON header and 64-byte aligned little-endian arrays.

Layout::

    magic      8 bytes   b"ISUSIDX\\0"
    schema     u32 LE    SCHEMA_VERSION (checked before anything else)
    reserved   u32 LE    0
    header_len u64 LE
    header     JSON      {"meta": {...}, "arrays": {name: {dtype, shape, offset}}, "checksum": "blake2b:..."}
    arrays     each at a 64-byte aligned absolute offset

The checksum covers the header (without the checksum field) and every array's bytes. Loading
memory-maps the file read-only: arrays are views into the page cache, shared by every process
that opens the same file (DataLoader workers do not copy them).
"""
from __future__ import annotations

import hashlib
import json
import mmap
import os
import struct
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from isus.fsio import atomic_file, open_regular
from isus.errors import IsusError

__all__ = ["SCHEMA_VERSION", "IndexFileError", "IndexMismatchError", "write_arrays", "read_arrays", "read_header"]

MAGIC = b"ISUSIDX\0"
#: 2: per-image fingerprints of the dataset files, content-named checksummed cache entries,
#: cache directory relative to the index file. Schema-1 files must be rebuilt.
SCHEMA_VERSION = 2
_PREFIX = struct.Struct("<8sIIQ")
_ALIGN = 64


class IndexFileError(IsusError):
    """An index file is missing, corrupt, of another schema version, or fails its checksum."""

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.path = None if path is None else Path(path)
        super().__init__(f"{path}: {message}" if path is not None else message)


class IndexMismatchError(IndexFileError):
    """An index is used with a dataset (or a file) other than the one it was built from.

    Attributes
    ----------
    image
        Global index of the first image that differs (None for a dataset-level difference).
    field
        What differs, e.g. ``"image file size"``, ``"annotation content"``, ``"split"``.
    """

    def __init__(self, message: str, path: str | Path | None = None, *, image: int | None = None,
                 field: str | None = None) -> None:
        self.image, self.field = image, field
        super().__init__(message, path)


def _le(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    if a.dtype.byteorder == ">" or (a.dtype.byteorder == "=" and not np.little_endian):
        a = a.astype(a.dtype.newbyteorder("<"))
    return a


def _digest(header: dict[str, Any], arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.blake2b(digest_size=20)
    h.update(json.dumps({k: header[k] for k in ("meta", "arrays")}, sort_keys=True).encode())
    for name in sorted(arrays):
        h.update(np.ascontiguousarray(arrays[name]).reshape(-1).view(np.uint8).data)
    return "blake2b:" + h.hexdigest()


def write_arrays(path: str | Path, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> str:
    """Atomically write ``arrays`` and ``meta`` to ``path``; returns the checksum.

    Writes a temporary file beside ``path``, fsyncs it and renames it into place, so ``path``
    either keeps its old content or gets the complete new file -- never a partial one.
    """
    path = Path(path)
    arrays = {k: _le(v) for k, v in arrays.items()}
    table: dict[str, Any] = {}
    offset = 0
    for name in sorted(arrays):
        a = arrays[name]
        table[name] = {"dtype": a.dtype.str, "shape": list(a.shape), "offset": offset}
        offset += -(-a.nbytes // _ALIGN) * _ALIGN
    header: dict[str, Any] = {"meta": meta, "arrays": table}
    checksum = header["checksum"] = _digest(header, arrays)
    # Offsets are relative to the data start until the header size is known.
    blob = json.dumps(header).encode()
    data_start = -(-(_PREFIX.size + len(blob)) // _ALIGN) * _ALIGN
    with atomic_file(path) as f:
        f.write(_PREFIX.pack(MAGIC, SCHEMA_VERSION, 0, len(blob)))
        f.write(blob)
        f.write(b"\0" * (data_start - _PREFIX.size - len(blob)))
        for name in sorted(arrays):
            a = arrays[name]
            f.write(a.reshape(-1).view(np.uint8).data)
            f.write(b"\0" * (-(-a.nbytes // _ALIGN) * _ALIGN - a.nbytes))
    return checksum


def read_arrays(path: str | Path, verify: bool = True) -> tuple[dict[str, Any], dict[str, np.ndarray], str | None]:
    """Memory-map an index file: ``(meta, arrays, checksum)``; arrays are read-only views.

    Raises
    ------
    IndexFileError
        Not an isus index, a schema version other than :data:`SCHEMA_VERSION`, a truncated
        file, or (with ``verify``) a checksum mismatch.
    """
    path = Path(path)
    with _open(path) as f:
        header, header_len = _read_header(f, path)
        size = os.fstat(f.fileno()).st_size
        data_start = -(-(_PREFIX.size + header_len) // _ALIGN) * _ALIGN
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else None
    arrays: dict[str, np.ndarray] = {}
    try:
        table = header["arrays"]
        meta = header["meta"]
        for name, spec in table.items():
            dtype, shape = np.dtype(spec["dtype"]), tuple(int(n) for n in spec["shape"])
            start = data_start + int(spec["offset"])
            nbytes = dtype.itemsize * int(np.prod(shape, dtype=np.int64))
            if start + nbytes > size:
                raise IndexFileError(f"index file is truncated (array {name!r} ends at byte "
                                     f"{start + nbytes}, the file has {size})", path)
            arr = (np.frombuffer(mm, dtype=dtype, count=nbytes // dtype.itemsize, offset=start)
                   if nbytes and mm is not None
                   else np.empty(0, dtype))
            arrays[name] = arr.reshape(shape)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise IndexFileError(f"index header is corrupt ({type(e).__name__}: {e})", path) from None
    if verify:
        expected = _digest(header, arrays)
        if expected != header.get("checksum"):
            raise IndexFileError(f"checksum mismatch (file says {header.get('checksum')}, content hashes to "
                                 f"{expected}): the file is corrupt or was modified; rebuild it", path)
    return meta, arrays, header.get("checksum")


def _read_header(f: BinaryIO, path: Path) -> tuple[dict[str, Any], int]:
    prefix = f.read(_PREFIX.size)
    if len(prefix) < _PREFIX.size or prefix[:8] != MAGIC:
        raise IndexFileError("not an isus index file (bad magic bytes)", path)
    _, version, _, header_len = _PREFIX.unpack(prefix)
    if version > SCHEMA_VERSION:
        raise IndexFileError(f"index schema version {version} is newer than this isus supports "
                             f"({SCHEMA_VERSION}); upgrade isus", path)
    if version < SCHEMA_VERSION:
        raise IndexFileError(f"index schema version {version} is older than this isus's "
                             f"({SCHEMA_VERSION}; schema 2 added dataset fingerprints and checksummed "
                             "cache entries): rebuild it with `isus index build`", path)
    # Check the length against the file before reading: a corrupt length field must not
    # make us allocate (or try to allocate) up to 2**64 bytes.
    size = os.fstat(f.fileno()).st_size
    if header_len > size - _PREFIX.size:
        raise IndexFileError(f"index file is truncated or its header length field is corrupt (the header "
                             f"needs {header_len} bytes, the file has {max(size - _PREFIX.size, 0)} after "
                             "the prefix)", path)
    blob = f.read(header_len)
    if len(blob) < header_len:
        raise IndexFileError(f"index file is truncated (the header needs {header_len} bytes)", path)
    try:
        header = json.loads(blob)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise IndexFileError("index header is corrupt", path) from None
    if not isinstance(header, dict):
        raise IndexFileError("index header is corrupt", path)
    return header, header_len


def _open(path: Path) -> BinaryIO:
    try:
        return open_regular(path, "index file", IndexFileError)
    except FileNotFoundError:
        raise IndexFileError("index file not found", path) from None


def read_header(path: str | Path) -> tuple[str | None, os.stat_result]:
    """The checksum an index file's header records and the file's ``stat`` (cheap: reads the
    header only). Raises :class:`IndexFileError` like :func:`read_arrays`."""
    path = Path(path)
    with _open(path) as f:
        header, _ = _read_header(f, path)
        return header.get("checksum"), os.fstat(f.fileno())
