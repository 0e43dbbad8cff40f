"""Structural checks of an index's arrays and header, run whenever an index file is loaded.

The checksum proves that a file is the one its writer wrote, not that the writer was honest: a
crafted (or buggy) file can carry a valid checksum over arrays whose offsets run past their
tables, anchors outside the image, or category ids no table holds. The sampler and the crop engine
index these arrays without further checks, so the loader refuses such a file with
:class:`~isus.index.store.IndexFileError` naming the array and what was expected. Every check is
vectorised: a few tens of milliseconds for an MVD-sized index.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from isus.index.schema import CACHE_DIGEST_COLUMNS, DIGEST_BYTES, DTYPES, FINGERPRINT_COLUMNS, OPTIONAL
from isus.index.store import IndexFileError

__all__ = ["check_index"]

_MAX_INT32 = 2**31 - 1
MAX_CATEGORY_ID = 65535


class _Fail(Exception):
    pass


def _fail(what: str) -> _Fail:
    return _Fail(what)


def _int(v: Any, lo: int, hi: int, what: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise _fail(f"{what} is {v!r:.40}; expected an integer in {lo}..{hi}")
    return v


def _shape(a: dict[str, np.ndarray], name: str, shape: tuple[int, ...]) -> np.ndarray:
    arr = a[name]
    if arr.shape != shape:
        raise _fail(f"array {name!r} has shape {arr.shape}; expected {shape}")
    return arr


def _csr(a: dict[str, np.ndarray], name: str, rows: int, total: int) -> np.ndarray:
    """Offsets of ``rows`` rows into ``total`` elements: start at 0, never decrease, end at ``total``."""
    off = _shape(a, name, (rows + 1,))
    if off[0] != 0 or off[-1] != total or (np.diff(off) < 0).any():
        raise _fail(f"array {name!r} is not a valid offset table (it must start at 0, never decrease and end at "
                    f"{total}; it runs {int(off[0])}..{int(off[-1])})")
    return off


def _in(arr: np.ndarray, lo: Any, hi: Any, name: str, what: str) -> None:
    """Every element in ``[lo, hi]`` (``lo``, ``hi`` scalars or arrays broadcasting against ``arr``)."""
    bad = ~((arr >= lo) & (arr <= hi))
    if bad.any():
        k = np.unravel_index(int(np.argmax(bad)), bad.shape)
        raise _fail(f"array {name!r} holds {arr[k]!r} at {tuple(int(v) for v in k)}; expected {what}")


def _categories(meta: dict[str, Any]) -> np.ndarray:
    cats = meta.get("categories")
    if not isinstance(cats, list):
        raise _fail("header 'categories' is not a list")
    ids = []
    for k, c in enumerate(cats):
        if not isinstance(c, dict):
            raise _fail(f"header categories[{k}] is not an object")
        ids.append(_int(c.get("id"), 0, MAX_CATEGORY_ID, f"header categories[{k}].id"))
        if not isinstance(c.get("name"), str) or not isinstance(c.get("isthing"), bool):
            raise _fail(f"header categories[{k}] needs a string 'name' and a boolean 'isthing'")
        color = c.get("color")
        if not (isinstance(color, list) and len(color) == 3 and all(
                isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in color)):
            raise _fail(f"header categories[{k}].color is {color!r:.40}; expected three integers in 0..255")
    if len(set(ids)) != len(ids):
        raise _fail("header 'categories' lists a category id twice")
    return np.array(ids, dtype=np.int64)


def _by_class(a: dict[str, np.ndarray], prefix: str, cat_ids: np.ndarray, image_rule: str) -> None:
    """Rows of ``{prefix}_category`` grouped by ``{prefix}_class_offsets`` (one group per category,
    in the header's order), images ascending within a group (strictly for class rows)."""
    category, image = a[f"{prefix}_category"], a[f"{prefix}_image"]
    off = _csr(a, f"{prefix}_class_offsets", len(cat_ids), len(category))
    expected = np.repeat(cat_ids, np.diff(off))
    if not np.array_equal(category, expected):
        k = int(np.argmax(category != expected))
        raise _fail(f"array '{prefix}_category' holds {int(category[k])} at row {k}, where "
                    f"'{prefix}_class_offsets' puts category {int(expected[k])}")
    same = np.repeat(np.arange(len(cat_ids)), np.diff(off))
    step = np.diff(image.astype(np.int64))
    bad = (same[1:] == same[:-1]) & ((step <= 0) if image_rule == "increasing" else (step < 0))
    if bad.any():
        raise _fail(f"array '{prefix}_image' is not sorted within each class (row {int(np.argmax(bad)) + 1}); "
                    f"expected images {image_rule} within a class")


def _strings(a: dict[str, np.ndarray], key: str, n: int) -> None:
    blob = a[f"{key}_blob"]
    if blob.ndim != 1:
        raise _fail(f"array '{key}_blob' has shape {blob.shape}; expected one dimension")
    off = _csr(a, f"{key}_offsets", n, len(blob))
    data = blob.tobytes()
    for i, (s, e) in enumerate(zip(off[:-1].tolist(), off[1:].tolist())):
        try:
            data[s:e].decode()
        except UnicodeDecodeError:
            raise _fail(f"string {i} of '{key}' is not valid UTF-8") from None


def _check(meta: dict[str, Any], a: dict[str, np.ndarray]) -> None:
    if not isinstance(meta, dict):
        raise _fail("header 'meta' is not an object")
    for name, dt in DTYPES.items():
        if name not in a:
            if name in OPTIONAL:
                continue
            raise _fail(f"array {name!r} is missing")
        if a[name].dtype.newbyteorder("<") != np.dtype(dt).newbyteorder("<"):
            raise _fail(f"array {name!r} has dtype {a[name].dtype}; expected {np.dtype(dt)}")
    params, dataset = meta.get("params"), meta.get("dataset")
    if not isinstance(params, dict) or not isinstance(dataset, dict):
        raise _fail("header needs 'params' and 'dataset' objects")
    grid = _int(params.get("grid"), 1, 256, "header params.grid")
    k = _int(params.get("anchors"), 1, 64, "header params.anchors")
    total = _int(dataset.get("num_images"), 0, _MAX_INT32, "header dataset.num_images")
    rng = meta.get("image_range")
    if not (isinstance(rng, list) and len(rng) == 2):
        raise _fail(f"header image_range is {rng!r:.40}; expected [start, stop]")
    start = _int(rng[0], 0, total, "header image_range[0]")
    stop = _int(rng[1], start, total, "header image_range[1]")
    n = stop - start
    cat_ids = _categories(meta)

    h, w = _shape(a, "image_height", (n,)), _shape(a, "image_width", (n,))
    _in(h, 1, _MAX_INT32, "image_height", "a positive height")
    _in(w, 1, _MAX_INT32, "image_width", "a positive width")
    for key in ("image_id", "file_name") + (("ann_name",) if "ann_name_blob" in a or "ann_name_offsets" in a else ()):
        _strings(a, key, n)
    for name, _, _ in FINGERPRINT_COLUMNS:
        if name in a:
            _shape(a, name, (n,))
    for name in CACHE_DIGEST_COLUMNS:
        if name in a:
            _shape(a, name, (n, DIGEST_BYTES))

    # instances: (category, image)-sorted rows, each inside its image
    m = len(a["inst_image"])
    img = _shape(a, "inst_image", (m,))
    _in(img, start, stop - 1, "inst_image", f"an image in {start}..{stop - 1}")
    for name in ("inst_segment", "inst_category", "inst_crowd", "inst_area"):
        _shape(a, name, (m,))
    _in(a["inst_segment"], 1, _MAX_INT32, "inst_segment", "a segment id >= 1")
    _by_class(a, "inst", cat_ids, "non-decreasing")
    ih, iw = h[img - start].astype(np.int64), w[img - start].astype(np.int64)
    box = _shape(a, "inst_box", (m, 4)).astype(np.int64)
    _in(box[:, 0], 0, iw - 1, "inst_box", "x0 inside the image")
    _in(box[:, 1], 0, ih - 1, "inst_box", "y0 inside the image")
    _in(box[:, 2], box[:, 0] + 1, iw, "inst_box", "x0 < x1 <= the image width")
    _in(box[:, 3], box[:, 1] + 1, ih, "inst_box", "y0 < y1 <= the image height")
    _in(a["inst_area"], 1, (box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1]), "inst_area",
        "a positive area no larger than the box")
    c = _shape(a, "inst_centroid", (m, 2))
    _in(c[:, 0], box[:, 0], box[:, 2], "inst_centroid", "x inside the instance's box")
    _in(c[:, 1], box[:, 1], box[:, 3], "inst_centroid", "y inside the instance's box")
    anc = _shape(a, "inst_anchors", (m, k, 2))
    _in(anc[..., 0], box[:, 0, None], box[:, 2, None] - 1, "inst_anchors", "x inside the instance's box")
    _in(anc[..., 1], box[:, 1, None], box[:, 3, None] - 1, "inst_anchors", "y inside the instance's box")

    # classes: rows per (category, image), each with its cells of the grid
    r = len(a["cls_image"])
    cimg = _shape(a, "cls_image", (r,))
    _in(cimg, start, stop - 1, "cls_image", f"an image in {start}..{stop - 1}")
    for name in ("cls_category", "cls_pixels", "cls_ncells"):
        _shape(a, name, (r,))
    _by_class(a, "cls", cat_ids, "increasing")
    ch, cw = h[cimg - start].astype(np.int64), w[cimg - start].astype(np.int64)
    _in(a["cls_pixels"], 1, ch * cw, "cls_pixels", "a positive pixel count no larger than the image")
    _in(a["cls_ncells"], 1, grid * grid, "cls_ncells", f"1..{grid * grid} cells")
    cells = len(a["cell_index"])
    off = _csr(a, "cell_offsets", r, cells)
    if not np.array_equal(np.diff(off), a["cls_ncells"]):
        raise _fail("array 'cell_offsets' does not match 'cls_ncells'")
    _shape(a, "cell_pixels", (cells,))
    _in(a["cell_index"], 0, grid * grid - 1, "cell_index", f"a cell of the {grid}x{grid} grid")
    anc = _shape(a, "cls_anchors", (r, k, 2))
    _in(anc[..., 0], 0, cw[:, None] - 1, "cls_anchors", "x inside the image")
    _in(anc[..., 1], 0, ch[:, None] - 1, "cls_anchors", "y inside the image")
    if meta.get("int_image_ids"):
        blob, offs = a["image_id_blob"].tobytes(), a["image_id_offsets"].tolist()
        for i in range(n):
            s = blob[offs[i]:offs[i + 1]].decode()
            if not (s.lstrip("-").isdigit() and len(s) < 40):
                raise _fail(f"image id {s!r:.40} of image {start + i} is not an integer, as the header says ids are")


def check_index(meta: dict[str, Any], arrays: dict[str, np.ndarray], path: str | Path | None) -> None:
    """Raise :class:`IndexFileError` naming the first structural fault of an index's header or
    arrays (see the module docstring); return quietly for a well-formed index."""
    try:
        _check(meta, arrays)
    except _Fail as e:
        raise IndexFileError(f"index is malformed: {e} (the file is corrupt or was crafted, even if its checksum "
                             "matches; rebuild it)", path) from None
