"""File decoding shared by every reader: every failure becomes a DatasetError naming the file."""
from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Callable, Iterator

import cv2
import numpy as np
from PIL import Image

from isus.errors import DatasetError

REDUCE_FLAGS = {
    1: cv2.IMREAD_COLOR,
    2: cv2.IMREAD_REDUCED_COLOR_2,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    8: cv2.IMREAD_REDUCED_COLOR_8,
}


def read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise DatasetError(f"{what} not found (expected a JSON file here)", path)
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{what} is not valid JSON: {e}", path) from None


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DatasetError(f"{what} not found (expected a directory here)", path)
    return path


def image_size(path: Path) -> tuple[int, int]:
    """``(height, width)`` from the file header, without decoding the pixels."""
    try:
        with Image.open(path) as im:
            w, h = im.size
    except FileNotFoundError:
        raise DatasetError("image file not found", path) from None
    except Image.DecompressionBombError as e:
        raise DatasetError(f"{e} (a corrupt size field? raise PIL.Image.MAX_IMAGE_PIXELS for genuinely "
                           "huge images)", path) from None
    except (OSError, SyntaxError, ValueError) as e:
        empty = " (the file is empty, 0 bytes)" if path.is_file() and path.stat().st_size == 0 else ""
        raise DatasetError(f"cannot read image header{empty}: {e}", path) from None
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
        buf = np.fromfile(path, dtype=np.uint8)
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

    PIL checks the mode from the header; OpenCV decodes (faster than PIL on large PNGs) and a
    kernel turns colours into ids without int32 copies of the three channels.
    """
    import cv2

    from isus import kernels

    size = read_png_header(path, ("RGB",), what)
    if check is not None:
        check(size)
    try:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    except cv2.error as e:
        raise DatasetError(f"cannot decode {what}: {str(e).strip().splitlines()[-1]}", path) from None
    if bgr is None:
        raise DatasetError(f"cannot decode {what}", path)
    return kernels.colors_to_ids(bgr, True)


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
    except Image.DecompressionBombError as e:
        raise DatasetError(f"{e} (a corrupt size field? raise PIL.Image.MAX_IMAGE_PIXELS for genuinely "
                           "huge images)", path) from None
    except (OSError, SyntaxError, ValueError) as e:
        raise DatasetError(f"cannot decode {what}: {e}", path) from None


@contextlib.contextmanager
def _open_png(path: Path, modes: tuple[str, ...], what: str) -> Iterator[Image.Image]:
    """The opened PNG (header read, pixels not yet), its mode checked against ``modes``."""
    with _png_errors(path, what):
        im = Image.open(path)
    with im:
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
