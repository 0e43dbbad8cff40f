"""File decoding shared by every reader, and the COCO panoptic colour code (which prediction files and
the synthetic writers use too): every failure becomes a DatasetError naming the file."""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import zlib
from pathlib import Path
from typing import Any, Callable, Iterator

import cv2
import numpy as np
from PIL import Image

from isus.fsio import open_regular, read_regular
from isus.errors import DatasetError

__all__ = ["DEFAULT_MAX_IMAGE_PIXELS", "max_image_pixels", "set_max_image_pixels", "check_pixels",
           "jpeg_data_shortfall", "read_json", "relative_name", "require_dir", "is_id", "json_int", "json_flag",
           "image_size", "decode_image", "reduced_size", "read_png", "read_panoptic_png", "read_png_header",
           "plain_rgb8_png", "decode_plain_rgb8_png",
           "rgb_to_id", "id_to_rgb"]

REDUCE_FLAGS = {
    1: cv2.IMREAD_COLOR,
    2: cv2.IMREAD_REDUCED_COLOR_2,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    8: cv2.IMREAD_REDUCED_COLOR_8,
}


#: Default pixel budget per image (64 Mi pixels, e.g. 8192x8192): below PIL's decompression-bomb
#: warning limit (89,478,485), well above the datasets' images (MVD's largest are about 22 Mpx).
DEFAULT_MAX_IMAGE_PIXELS = 64 * 2**20
_max_pixels: list[int | None] = [None]  # set_max_image_pixels(); None: ISUS_MAX_IMAGE_PIXELS or the default


def max_image_pixels() -> int:
    """The pixel budget per image: what :func:`set_max_image_pixels` set, else the environment
    variable ``ISUS_MAX_IMAGE_PIXELS``, else :data:`DEFAULT_MAX_IMAGE_PIXELS`."""
    if _max_pixels[0] is not None:
        return _max_pixels[0]
    env = os.environ.get("ISUS_MAX_IMAGE_PIXELS")
    if env is None:
        return DEFAULT_MAX_IMAGE_PIXELS
    try:
        n = int(env)
        if n < 1:
            raise ValueError
    except ValueError:
        raise ValueError(f"ISUS_MAX_IMAGE_PIXELS expects a positive integer; got {env!r}") from None
    return n


def set_max_image_pixels(n: int | None) -> int:
    """Set the pixel budget per image (``None``: back to ``ISUS_MAX_IMAGE_PIXELS`` or the default);
    returns the budget in force before.

    Every image and annotation is checked against it from its header, before its pixels are
    decoded, so a corrupt or crafted size field cannot make isus allocate gigabytes. Raise it for
    genuinely larger images (beyond PIL's own limit, ``PIL.Image.MAX_IMAGE_PIXELS``, raise that
    too). Worker processes started with ``spawn`` see only the environment variable.
    """
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
        raise ValueError(f"set_max_image_pixels(n=) expects a positive int or None; got {n!r}")
    before = max_image_pixels()
    _max_pixels[0] = n
    return before


def check_pixels(width: int, height: int, what: str, path: Path) -> None:
    """Refuse an image whose header claims more pixels than the budget (:func:`max_image_pixels`)."""
    budget = max_image_pixels()
    if width * height > budget:
        raise DatasetError(f"{what} is {width}x{height} = {width * height} pixels, over the budget of {budget} "
                           "pixels per image (a corrupt or crafted size field?); for genuinely larger images raise "
                           "it: isus.set_max_image_pixels(N) or the environment variable ISUS_MAX_IMAGE_PIXELS=N",
                           path)


def _bomb(e: Exception, what: str, path: Path) -> DatasetError:
    """PIL's decompression-bomb error (or its warning, raised as an error) as a DatasetError."""
    return DatasetError(f"{what}: {e} (a corrupt size field? for genuinely huge images raise "
                        "PIL.Image.MAX_IMAGE_PIXELS and isus.set_max_image_pixels)", path)


def jpeg_data_shortfall(buf: bytes) -> tuple[int, int, int] | None:
    """``(width, height, bytes needed)`` when a JPEG holds fewer bytes of coded data than its
    frame header's size needs at the very least, else None (also for what cannot be parsed here).

    Every 8x8 block of every component costs at least one bit in a Huffman-coded JPEG (its DC
    code, in sequential and progressive files alike), so fewer bytes after the first start-of-scan
    than ``blocks / 8`` cannot be a complete image: libjpeg would decode it, warn, and fill the
    rest with grey (a 108 KB file claiming 13000x13000 pixels). Arithmetic-coded files have no
    such bound and are not checked.
    """
    mv = memoryview(buf)
    if bytes(mv[:2]) != b"\xff\xd8":
        return None
    n, pos, frame = len(mv), 2, None
    while pos + 4 <= n:
        if mv[pos] != 0xFF:
            return None
        marker = mv[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # standalone markers
            pos += 2
            continue
        length = (mv[pos + 2] << 8) | mv[pos + 3]
        if length < 2:
            return None
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7) and pos + 10 <= n:
            h, w, nf = (mv[pos + 5] << 8) | mv[pos + 6], (mv[pos + 7] << 8) | mv[pos + 8], mv[pos + 9]
            comps = [(mv[pos + 11 + 3 * c] >> 4, mv[pos + 11 + 3 * c] & 15) for c in range(nf)
                     if pos + 12 + 3 * c <= n]
            if h == 0 or w == 0 or len(comps) != nf or not comps or min(min(c) for c in comps) < 1:
                return None
            hmax, vmax = max(c[0] for c in comps), max(c[1] for c in comps)
            blocks = sum(_ceil(_ceil(w * hs, hmax), 8) * _ceil(_ceil(h * vs, vmax), 8) for hs, vs in comps)
            frame = (w, h, _ceil(blocks, 8))
        elif marker in (0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):  # arithmetic coding: no bound
            return None
        elif marker == 0xDA:  # start of scan: the coded data follows its header
            if frame is None:
                return None
            coded = n - (pos + 2 + length)
            return frame if coded < frame[2] else None
        pos += 2 + length
    return None


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def read_json(path: Path, what: str) -> Any:
    """The parsed JSON file ``path`` (``what`` it is names it in errors)."""
    if not path.exists():
        raise DatasetError(f"{what} not found (expected a JSON file here)", path)
    try:
        return json.loads(read_regular(path, what, DatasetError))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{what} is not valid JSON: {e}", path) from None
    except RecursionError:
        raise DatasetError(f"{what} is nested too deeply to parse", path) from None


def relative_name(name: object, json_path: Path, where: str) -> str:
    """``name`` (a file name read from ``json_path`` at ``where``, e.g. ``images[3].file_name``)
    if it is a relative path without a ``..`` component, else a :class:`DatasetError`.

    Names from a file must stay inside the folder they are joined to: an absolute name or a
    ``..`` would read (and fingerprint, and cache) a file outside the dataset root. Only the name
    is checked, not the resolved path, so folders that are symlinks inside a root still work.
    """
    if not isinstance(name, str):
        raise DatasetError(f"{where} is {name!r:.60}; expected a relative file name (a string)", json_path)
    parts = name.replace("\\", "/").split("/")
    if (not name or "\0" in name or name.startswith(("/", "\\")) or ".." in parts
            or re.match(r"^[A-Za-z]:", name) or not any(p not in ("", ".") for p in parts)):
        raise DatasetError(f"{where} is {name!r:.80}; expected a relative file name inside the dataset folder "
                           "(not empty, not absolute, no '..' component)", json_path)
    return name


def require_dir(path: Path, what: str) -> Path:
    """``path``, if it is a directory."""
    if not path.is_dir():
        raise DatasetError(f"{what} not found (expected a directory here)", path)
    return path


def is_id(v: object) -> bool:
    """An image id as JSON files hold them: an int (not a bool) or a string."""
    return isinstance(v, str) or (isinstance(v, int) and not isinstance(v, bool))


def json_int(v: object) -> int:
    """An integer read from a JSON file: an int (not a bool), or a float with an integral value
    (``3.0``, as some writers store ids). Strings, ``3.7``, NaN and the rest raise ``TypeError`` /
    ``ValueError`` (which the readers turn into a :class:`DatasetError` naming the file)."""
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    if isinstance(v, float) and math.isfinite(v) and v.is_integer():
        return int(v)
    raise ValueError(f"expected an integer, got {v!r:.40}")


def json_flag(v: object) -> bool:
    """A flag read from a JSON file: ``true``/``false`` or ``0``/``1`` (``bool("no")`` would be True)."""
    if isinstance(v, bool):
        return v
    if isinstance(v, int) and v in (0, 1):
        return bool(v)
    raise ValueError(f"expected true/false or 0/1, got {v!r:.40}")


def image_size(path: Path) -> tuple[int, int]:
    """``(height, width)`` from the file header, without decoding the pixels."""
    try:
        with open_regular(path, "image file", DatasetError) as f, Image.open(f) as im:
            w, h = im.size
    except FileNotFoundError:
        raise DatasetError("image file not found", path) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise _bomb(e, "image file", path) from None
    except (OSError, SyntaxError, ValueError) as e:
        empty = " (the file is empty, 0 bytes)" if path.is_file() and path.stat().st_size == 0 else ""
        raise DatasetError(f"cannot read image header{empty}: {e}", path) from None
    check_pixels(w, h, "image", path)
    return h, w


def decode_image(path: Path, reduce: int = 1, bgr: bool = False) -> np.ndarray:
    """Decode an RGB (or, with ``bgr``, OpenCV's BGR) image at ``1/reduce`` resolution.

    JPEGs use libjpeg's DCT scaling (cheaper than decoding then resizing); other formats are
    decoded in full and downsampled by OpenCV. EXIF orientation is ignored so that pixels line
    up with the annotation, which is stored unrotated.
    """
    try:
        flag = REDUCE_FLAGS[reduce]
    except (KeyError, TypeError):
        raise ValueError(f"load_image(reduce=) expects one of 1, 2, 4, 8; got {reduce!r}") from None
    try:
        data = read_regular(path, "image file", DatasetError)
        buf = np.frombuffer(data, dtype=np.uint8)
    except FileNotFoundError:
        raise DatasetError("image file not found", path) from None
    except OSError as e:
        raise DatasetError(f"cannot read image file: {e}", path) from None
    if buf.size == 0:  # (OpenCV asserts on an empty buffer instead of returning None)
        raise DatasetError("image file is empty (0 bytes)", path)
    # libjpeg fills a truncated JPEG with grey and only warns, so check the end-of-image
    # marker ourselves (a few writers pad after it, hence the search in the tail).
    if buf[:2].tobytes() == b"\xff\xd8" and b"\xff\xd9" not in buf[-64:].tobytes():
        raise DatasetError("truncated JPEG (no end-of-image marker)", path)
    is_jpeg = buf[:2].tobytes() == b"\xff\xd8"
    _check_header(buf, path)
    short = jpeg_data_shortfall(data) if is_jpeg else None
    if short is not None:
        raise DatasetError(f"corrupt or truncated JPEG: its header says {short[0]}x{short[1]} pixels, which need at "
                           f"least {short[2]} bytes of coded data, but the file holds fewer (libjpeg would fill "
                           "the rest with grey)", path)
    # Only JPEG has a cheap reduced decode; OpenCV's reduced flags on other formats round the
    # size down, while libjpeg rounds up, so those are resized here to the same (ceil) size.
    try:
        img = cv2.imdecode(buf, (flag if is_jpeg else cv2.IMREAD_COLOR) | cv2.IMREAD_IGNORE_ORIENTATION)
    except cv2.error as e:
        raise DatasetError(f"cannot decode image: {str(e).strip().splitlines()[-1]}", path) from None
    if img is None:
        raise DatasetError("cannot decode image (corrupt, truncated or not an image)", path)
    if reduce > 1 and not is_jpeg:
        h, w = reduced_size(img.shape[0], img.shape[1], reduce)
        img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
    return img if bgr else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _check_header(buf: np.ndarray, path: Path) -> None:
    """The pixel budget, from the header PIL reads (formats PIL does not know are left to OpenCV)."""
    try:
        with Image.open(io.BytesIO(buf[:1 << 20].tobytes())) as im:  # the header, not the pixels
            w, h = im.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise _bomb(e, "image file", path) from None
    except (OSError, SyntaxError, ValueError):
        return
    check_pixels(w, h, "image", path)


def reduced_size(height: int, width: int, reduce: int) -> tuple[int, int]:
    """Size of an image decoded with ``reduce`` (libjpeg rounds up)."""
    return -(-height // reduce), -(-width // reduce)


def read_png(path: Path, modes: tuple[str, ...], what: str,
             check: Callable[[tuple[int, int]], None] | None = None) -> np.ndarray:
    """Decode an annotation PNG whose PIL mode must be one of ``modes``.

    Returns the raw pixel array: palette indices for ``P``, values for ``L``/``I;16``/``I``,
    ``(H, W, 3)`` for ``RGB``. The mode check catches wrong bit depths (e.g. an 8-bit PNG where
    a 16-bit instance map is expected) before they turn into wrong ids. ``check((height, width))``
    is called with the size from the header before the pixels are decoded (so that a corrupt size
    field is refused before that much memory is allocated).
    """
    with _open_png(path, modes, what) as im:
        if check is not None:
            check((im.height, im.width))
        with _png_errors(path, what):
            return np.asarray(im)


def read_panoptic_png(path: Path, what: str, check: Callable[[tuple[int, int]], None] | None = None) -> np.ndarray:
    """Decode a COCO-style RGB panoptic PNG straight to ``(H, W)`` int32 segment ids.

    PIL checks the mode from the header. A plain 8-bit RGB PNG (:func:`plain_rgb8_png`) is decoded
    by imagecodecs' libpng build (zlib-ng, 1.4-2.5x faster than OpenCV's decoder on panoptic PNGs)
    when it is installed; every other PNG, and any that it refuses, by OpenCV as before, so the
    pixels, what is accepted and the error messages are OpenCV's. A kernel turns colours into ids
    without int32 copies of the three channels.
    """
    import cv2

    from isus import kernels

    size = read_png_header(path, ("RGB",), what)
    if check is not None:
        check(size)
    with _png_errors(path, what):
        data = read_regular(path, what, DatasetError)
    rgb = decode_plain_rgb8_png(data)
    if rgb is not None:
        return kernels.colors_to_ids(rgb, False)
    buf = np.frombuffer(data, dtype=np.uint8)
    try:
        bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
    except cv2.error as e:
        raise DatasetError(f"cannot decode {what}: {str(e).strip().splitlines()[-1]}", path) from None
    if bgr is None:
        raise DatasetError(f"cannot decode {what}", path)
    return kernels.colors_to_ids(bgr, True)


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the only valid IEND chunk: empty, with its CRC
#: Ancillary chunks a plain PNG may carry: simple ones that leave the decoded 8-bit RGB pixels
#: alone (OpenCV applies no gamma, and neither does the fast decoder). Compressed ones (zTXt, iTXt,
#: iCCP), those OpenCV checks itself (bKGD) and the rest go to OpenCV.
_PLAIN_ANCILLARY = frozenset({b"gAMA", b"cHRM", b"sRGB", b"sBIT", b"pHYs", b"tEXt", b"tIME"})
_PLAIN_MAX_ANCILLARY = 1 << 20  # bytes


def plain_rgb8_png(data: bytes) -> tuple[int, int] | None:
    """``(height, width)`` when ``data`` is a *plain* 8-bit RGB PNG, else None.

    Plain: the signature, then IHDR (8-bit truecolour, standard compression and filter method,
    interlaced or not, its CRC correct), then only ancillary chunks of a short list (gAMA, cHRM,
    sRGB, sBIT, pHYs, tEXt, tIME; each at most 1 MiB, its CRC correct: no tRNS, PLTE or APNG
    chunk), the IDAT chunks one after another, and the exact IEND chunk, every chunk complete.
    Only the chunk headers are walked (and the small chunks' CRCs computed); the IDAT CRCs and the
    compressed data are the decoder's to check. Every other file is left to OpenCV, whose rules
    (a complete IEND chunk, APNG, transparency, 16 bits to 8) the fast decoder does not share.
    """
    n = len(data)
    if n < 45 or data[:8] != _PNG_SIGNATURE or data[8:16] != b"\x00\x00\x00\x0dIHDR":
        return None
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if (not (0 < width < 1 << 31 and 0 < height < 1 << 31) or data[24:28] != b"\x08\x02\x00\x00"
            or data[28] not in (0, 1) or zlib.crc32(data[12:29]) != int.from_bytes(data[29:33], "big")):
        return None
    pos, idat = 33, 0  # idat: 0 before the first IDAT, 1 in the run of IDATs, 2 after it
    while pos + 12 <= n:
        length = int.from_bytes(data[pos:pos + 4], "big")
        kind = data[pos + 4:pos + 8]
        end = pos + 12 + length
        if length >= 1 << 31 or end > n:
            return None
        if kind == b"IDAT":
            if idat == 2:
                return None
            idat = 1
        elif kind == b"IEND":
            return (height, width) if idat and data[pos:end] == _PNG_IEND else None
        else:
            if (kind not in _PLAIN_ANCILLARY or length > _PLAIN_MAX_ANCILLARY
                    or zlib.crc32(data[pos + 4:end - 4]) != int.from_bytes(data[end - 4:end], "big")):
                return None
            idat = 2 if idat else 0
        pos = end
    return None


def decode_plain_rgb8_png(data: bytes) -> np.ndarray | None:
    """The ``(H, W, 3)`` uint8 RGB pixels of a plain 8-bit RGB PNG (:func:`plain_rgb8_png`), decoded
    by imagecodecs (libpng with zlib-ng; it releases the GIL); None when ``data`` is not plain,
    imagecodecs is not installed or refuses the file: the caller then decodes it with OpenCV, which
    decides what an unusual or damaged file gives. Where both decode a file, the pixels are equal
    (tests/test_png_decode.py).
    """
    size = plain_rgb8_png(data)
    if size is None:
        return None
    try:
        import imagecodecs
    except ImportError:  # an optional speed-up: OpenCV decodes the same pixels
        return None
    try:
        rgb: np.ndarray = imagecodecs.png_decode(data)
    except Exception:  # OpenCV decides, and words the error, for what this refuses
        return None
    if rgb.shape != (*size, 3) or rgb.dtype != np.uint8:
        return None
    return rgb


def read_png_header(path: Path, modes: tuple[str, ...], what: str) -> tuple[int, int]:
    """Check a PNG's PIL mode from its header; returns ``(height, width)``."""
    with _open_png(path, modes, what) as im:
        return im.height, im.width


@contextlib.contextmanager
def _png_errors(path: Path, what: str) -> Iterator[None]:
    """PIL's errors on a missing, corrupt or oversized PNG as :class:`DatasetError` naming it."""
    try:
        yield
    except FileNotFoundError:
        raise DatasetError(f"{what} not found", path) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise _bomb(e, what, path) from None
    except (OSError, SyntaxError, ValueError) as e:
        raise DatasetError(f"cannot decode {what}: {e}", path) from None


@contextlib.contextmanager
def _open_png(path: Path, modes: tuple[str, ...], what: str) -> Iterator[Image.Image]:
    """The opened PNG (header read, pixels not yet), its mode checked against ``modes``."""
    with _png_errors(path, what):
        f = open_regular(path, what, DatasetError)
    with f:
        with _png_errors(path, what):
            im = Image.open(f)
        with im:
            check_pixels(im.width, im.height, what, path)
            if im.mode not in modes:
                raise DatasetError(f"{what} has PIL mode {im.mode!r}; expected {' or '.join(map(repr, modes))}", path)
            yield im


def rgb_to_id(rgb: np.ndarray) -> np.ndarray:
    """COCO panoptic colour encoding: ``id = R + 256 G + 256^2 B`` (in int32, no uint8 overflow)."""
    rgb = rgb.astype(np.int32, copy=False)
    ids: np.ndarray = rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]
    return ids


def id_to_rgb(ids: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rgb_to_id`, as ``(H, W, 3)`` uint8."""
    ids = np.asarray(ids, dtype=np.int64)
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536 % 256], axis=-1).astype(np.uint8)
