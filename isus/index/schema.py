"""The index's schema: its columns and their dtypes, string packing, table assembly, and the
typed, read-only views :class:`~isus.index.Index` hands out.

The builder, the shard merge and the simulated index all produce their arrays through
:func:`assemble`, and the loader checks files against :data:`DTYPES`; code outside
``isus.index`` reads the tables through :class:`Instances`, :class:`ClassTable` and
:class:`IndexMeta` rather than by array name. The file format itself (header, alignment,
checksum, :data:`~isus.index.store.SCHEMA_VERSION`) is ``isus.index.store``'s.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping, Sequence

import numpy as np

from isus.types import Category

__all__ = ["IMAGE_COLUMNS", "IMAGE_STRINGS", "FINGERPRINT_COLUMNS", "CACHE_DIGEST_COLUMNS", "DIGEST_BYTES",
           "INSTANCE_COLUMNS", "CLASS_COLUMNS", "CELL_COLUMNS", "SCAN_COLUMNS", "OFFSET_COLUMNS", "DTYPES", "OPTIONAL",
           "ROW_SHAPES", "empty_column", "pack_strings", "unpack_string", "unpack_strings", "image_strings",
           "csr_gather", "assemble", "Instances", "ClassTable", "DatasetIdentity", "BuildInfo", "IndexMeta"]

# -- columns ------------------------------------------------------------------------------------
#: Per-image size columns, one row per image of the index's range.
IMAGE_COLUMNS = ("image_height", "image_width")
#: Per-image strings, stored as ``{name}_blob`` (UTF-8 bytes) and ``{name}_offsets``.
IMAGE_STRINGS = ("image_id", "file_name", "ann_name")
#: Per-image fingerprint of the dataset files: (array, scan key, dtype); see ``isus.index.fingerprint``.
FINGERPRINT_COLUMNS = (("fp_image_size", "image_size", "i8"), ("fp_image_sample", "image_sample", "u8"),
                       ("fp_ann_size", "ann_size", "i8"), ("fp_ann_sample", "ann_sample", "u8"))
#: Per-image content digests of the annotation and image cache entries, ``(n, DIGEST_BYTES)`` uint8.
CACHE_DIGEST_COLUMNS = ("cache_digest", "image_cache_digest")
#: Bytes of a cache entry's content digest (``isus.index.cache.DIGEST_BYTES``).
DIGEST_BYTES = 16
#: Instance rows, in the order the per-image scans are concatenated (image-major).
INSTANCE_COLUMNS = ("inst_image", "inst_segment", "inst_category", "inst_crowd", "inst_area", "inst_box",
                    "inst_centroid", "inst_anchors")
#: Class rows: one per (category, image) where the category has pixels.
CLASS_COLUMNS = ("cls_image", "cls_category", "cls_pixels", "cls_ncells", "cls_anchors")
#: Grid cells of the class rows (CSR by ``cell_offsets``).
CELL_COLUMNS = ("cell_index", "cell_pixels")
#: What one image's scan yields (the image columns are added when the scans are concatenated).
SCAN_COLUMNS = tuple(c for c in INSTANCE_COLUMNS + CLASS_COLUMNS + CELL_COLUMNS if c not in ("inst_image", "cls_image"))
#: CSR offsets written by :func:`assemble`: instances and class rows per category, cells per class row.
OFFSET_COLUMNS = ("inst_class_offsets", "cls_class_offsets", "cell_offsets")

#: dtype of every array an index may hold (little-endian on disk).
DTYPES: Mapping[str, str] = MappingProxyType({
    "image_height": "i4", "image_width": "i4",
    "image_id_blob": "u1", "image_id_offsets": "i8", "file_name_blob": "u1", "file_name_offsets": "i8",
    "ann_name_blob": "u1", "ann_name_offsets": "i8",
    "inst_image": "i4", "inst_segment": "i4", "inst_category": "i4", "inst_crowd": "b1", "inst_area": "i8",
    "inst_box": "i4", "inst_centroid": "f4", "inst_anchors": "i4", "inst_class_offsets": "i8",
    "cls_image": "i4", "cls_category": "i4", "cls_pixels": "i8", "cls_ncells": "i4", "cls_anchors": "i4",
    "cls_class_offsets": "i8", "cell_index": "u2", "cell_pixels": "u4", "cell_offsets": "i8",
    "fp_image_size": "i8", "fp_image_sample": "u8", "fp_ann_size": "i8", "fp_ann_sample": "u8",
    "cache_digest": "u1", "image_cache_digest": "u1",
})
#: Arrays an index may lack: the simulated index has no files to fingerprint and no annotation names.
OPTIONAL = frozenset({"ann_name_blob", "ann_name_offsets", "fp_image_size", "fp_image_sample", "fp_ann_size",
                      "fp_ann_sample", "cache_digest", "image_cache_digest"})
#: Trailing shape of the row columns that are not 1-D (None: the build's anchors per row).
ROW_SHAPES: Mapping[str, tuple[int | None, ...]] = MappingProxyType({
    "inst_box": (4,), "inst_centroid": (2,), "inst_anchors": (None, 2), "cls_anchors": (None, 2)})


def empty_column(name: str, anchors: int) -> np.ndarray:
    """A row column with no rows (its dtype and trailing shape), for a build without images."""
    shape = tuple(anchors if s is None else s for s in ROW_SHAPES.get(name, ()))
    return np.zeros((0, *shape), np.dtype(DTYPES[name]))


# -- strings ------------------------------------------------------------------------------------
def pack_strings(values: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(blob, offsets)``: the UTF-8 bytes of ``values`` concatenated (uint8) and where each
    starts and ends (int64, ``len(values) + 1``)."""
    enc = [v.encode() for v in values]
    offsets = np.zeros(len(enc) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(e) for e in enc])
    return np.frombuffer(b"".join(enc), dtype=np.uint8).copy(), offsets


def unpack_string(blob: np.ndarray, offsets: np.ndarray, i: int) -> str:
    """String ``i`` of a :func:`pack_strings` pair."""
    return blob[offsets[i]:offsets[i + 1]].tobytes().decode()


def unpack_strings(blob: np.ndarray, offsets: np.ndarray) -> list[str]:
    """Every string of a :func:`pack_strings` pair (one pass over the blob)."""
    data = blob.tobytes()
    return [data[a:b].decode() for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())]


def image_strings(arrays: Mapping[str, np.ndarray]) -> dict[str, list[str]]:
    """The per-image string columns (:data:`IMAGE_STRINGS`) of an index's arrays, unpacked."""
    return {k: unpack_strings(arrays[f"{k}_blob"], arrays[f"{k}_offsets"]) for k in IMAGE_STRINGS}


# -- assembly -----------------------------------------------------------------------------------
def csr_gather(offsets: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Element positions of CSR ``rows`` (in the given order), concatenated."""
    starts, stops = offsets[rows], offsets[rows + 1]
    lengths = stops - starts
    if lengths.sum() == 0:
        return np.zeros(0, dtype=np.int64)
    pos = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    return pos + np.arange(lengths.sum())


def assemble(meta: Mapping[str, Any], images: Mapping[str, np.ndarray],
             rows: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Final index arrays from image-major scan rows: instances and class rows sorted by
    (category rank, image, segment), with CSR offsets per category.

    Merging shards goes through here too, so a merged index equals a single build.
    """
    cat_ids = np.array([c["id"] for c in meta["categories"]], dtype=np.int64)
    ncat = len(cat_ids)
    order_of = np.argsort(cat_ids)

    def rank(cats: np.ndarray) -> np.ndarray:
        pos = np.searchsorted(cat_ids[order_of], cats)
        return order_of[np.clip(pos, 0, max(ncat - 1, 0))]

    out = dict(images)
    inst_rank = rank(rows["inst_category"])
    perm = np.lexsort((rows["inst_segment"], rows["inst_image"], inst_rank))
    for c in INSTANCE_COLUMNS:
        out[c] = rows[c][perm]
    out["inst_class_offsets"] = np.searchsorted(inst_rank[perm], np.arange(ncat + 1)).astype(np.int64)

    cls_rank = rank(rows["cls_category"])
    perm = np.lexsort((rows["cls_image"], cls_rank))
    cell_offsets = np.zeros(len(rows["cls_ncells"]) + 1, dtype=np.int64)
    cell_offsets[1:] = np.cumsum(rows["cls_ncells"])
    cell_pos = csr_gather(cell_offsets, perm)
    for c in CLASS_COLUMNS:
        out[c] = rows[c][perm]
    for c in CELL_COLUMNS:
        out[c] = rows[c][cell_pos]
    out["cell_offsets"] = np.zeros(len(perm) + 1, dtype=np.int64)
    out["cell_offsets"][1:] = np.cumsum(out["cls_ncells"])
    out["cls_class_offsets"] = np.searchsorted(cls_rank[perm], np.arange(ncat + 1)).astype(np.int64)
    return out


# -- typed views --------------------------------------------------------------------------------
_INSTANCE_FIELDS = ("image", "segment_id", "category_id", "iscrowd", "area", "box", "centroid", "anchors")


@dataclass(frozen=True)
class Instances:
    """Columns of a set of instance rows (thing segments; crowd segments flagged).

    Attributes
    ----------
    image, segment_id, category_id : (N,) int32
    iscrowd : (N,) bool
    area : (N,) int64 pixels
    box : (N, 4) int32 ``x0, y0, x1, y1`` in original pixel-edge coordinates (x1 = last column + 1)
    centroid : (N, 2) float32 mean ``(x, y)`` of the pixel centres
    anchors : (N, K, 2) int32 ``(x, y)`` of K pixels of the instance spread over it (crop anchors)
    class_offsets : (C + 1,) int64 or None
        For an index's whole table (:attr:`Index.instances`), sorted by (category, image,
        segment): the rows of the index's ``r``-th category are ``class_offsets[r]:class_offsets[r + 1]``.
        None for a selection of rows.
    """

    image: np.ndarray
    segment_id: np.ndarray
    category_id: np.ndarray
    iscrowd: np.ndarray
    area: np.ndarray
    box: np.ndarray
    centroid: np.ndarray
    anchors: np.ndarray
    class_offsets: np.ndarray | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> "Instances":
        """The instance table of an index's arrays (no copy)."""
        return cls(image=arrays["inst_image"], segment_id=arrays["inst_segment"], category_id=arrays["inst_category"],
                   iscrowd=arrays["inst_crowd"], area=arrays["inst_area"], box=arrays["inst_box"],
                   centroid=arrays["inst_centroid"], anchors=arrays["inst_anchors"],
                   class_offsets=arrays["inst_class_offsets"])

    def __len__(self) -> int:
        return len(self.image)

    def __getitem__(self, sel: slice | np.ndarray | Sequence[int]) -> "Instances":
        # a selection is no longer grouped by category, so it carries no class offsets
        return Instances(*(getattr(self, f)[sel] for f in _INSTANCE_FIELDS))

    @property
    def scale(self) -> np.ndarray:
        """Instance scale ``sqrt(area)`` in pixels (the paper's Fig. 2 quantity)."""
        return np.sqrt(self.area.astype(np.float64))


@dataclass(frozen=True)
class ClassTable:
    """Where each category is: one row per (category, image) with pixels of it, sorted by
    (category rank, image), and the grid cells of each row.

    Attributes
    ----------
    image, category_id : (R,) int32
    pixels : (R,) int64 pixels of the category in the image
    ncells : (R,) int32 grid cells holding it
    anchors : (R, K, 2) int32 ``(x, y)`` pixels of its largest segment in the image
    class_offsets : (C + 1,) int64
        The rows of the index's ``r``-th category are ``class_offsets[r]:class_offsets[r + 1]``.
    cell_offsets : (R + 1,) int64
        The cells of row ``k`` are ``cell_offsets[k]:cell_offsets[k + 1]``.
    cell_index : (M,) uint16 cell ``gy * grid + gx`` of the index's ``grid x grid`` partition
    cell_pixels : (M,) uint32 pixels of the category in the cell
    """

    image: np.ndarray
    category_id: np.ndarray
    pixels: np.ndarray
    ncells: np.ndarray
    anchors: np.ndarray
    class_offsets: np.ndarray = field(repr=False)
    cell_offsets: np.ndarray = field(repr=False)
    cell_index: np.ndarray = field(repr=False)
    cell_pixels: np.ndarray = field(repr=False)

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> "ClassTable":
        """The class table of an index's arrays (no copy)."""
        return cls(image=arrays["cls_image"], category_id=arrays["cls_category"], pixels=arrays["cls_pixels"],
                   ncells=arrays["cls_ncells"], anchors=arrays["cls_anchors"], class_offsets=arrays["cls_class_offsets"],
                   cell_offsets=arrays["cell_offsets"], cell_index=arrays["cell_index"],
                   cell_pixels=arrays["cell_pixels"])

    def __len__(self) -> int:
        return len(self.image)

    def row(self, rank: int, image: int) -> int | None:
        """The row of the ``rank``-th category in global image ``image``; None when absent."""
        lo, hi = self.class_offsets[rank], self.class_offsets[rank + 1]
        k = lo + np.searchsorted(self.image[lo:hi], image)
        if k == hi or self.image[k] != image:
            return None
        return int(k)


#: Keys of the header's ``dataset`` object that identify the dataset; the rest are reader options.
_IDENTITY = ("name", "root", "split", "source", "has_instances", "num_images")


@dataclass(frozen=True)
class DatasetIdentity:
    """The dataset an index was built from, as its header records it.

    Attributes
    ----------
    name
        The reader's name (``"mvd"``, ``"cityscapes"``, ...).
    split
        The split, in the dataset's own terms (None if the reader has none).
    source
        Which annotations were read (``"panoptic"``, ``"instances"``, ``"semantic"``, ...).
    root
        The dataset's root at build time.
    num_images
        Images of the whole dataset (a shard covers a part: :attr:`IndexMeta.image_range`).
    has_instances
        False for a semantic-only dataset: the index has no instance rows.
    options
        The reader's other ``open_dataset`` keyword arguments (e.g. ``version``), read-only.
    """

    name: str
    split: str | None
    source: str
    root: str
    num_images: int
    has_instances: bool
    options: Mapping[str, Any]

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "DatasetIdentity":
        return cls(d["name"], d.get("split"), d["source"], d["root"], d["num_images"], bool(d.get("has_instances", True)),
                   MappingProxyType({k: v for k, v in d.items() if k not in _IDENTITY}))


@dataclass(frozen=True)
class BuildInfo:
    """What the build computed (the header's ``params``; see :class:`~isus.index.BuildParams`).

    Attributes
    ----------
    grid
        Classes are located on a ``grid x grid`` partition of each image.
    anchors
        Pixels recorded per instance and per class row.
    cache_dir
        The cache directory as recorded (relative to the index file once saved); None without a cache.
    image_cache
        The image cache's settings (codec, quality, tile), read-only; None without one.
    """

    grid: int
    anchors: int
    cache_dir: str | None
    image_cache: Mapping[str, Any] | None

    @classmethod
    def from_dict(cls, p: Mapping[str, Any]) -> "BuildInfo":
        ic = p.get("image_cache")
        return cls(p["grid"], p["anchors"], p.get("cache_dir"), None if ic is None else MappingProxyType(dict(ic)))


@dataclass(frozen=True)
class IndexMeta:
    """An index's header, typed (:attr:`Index.info`); :attr:`Index.meta` is the raw dict as stored.

    Attributes
    ----------
    dataset
        What the index was built from.
    params
        How it was built.
    categories
        The dataset's categories, in the dataset's order.
    image_range
        ``(start, stop)``: the global image indices the index covers (a shard covers a part).
    int_image_ids
        The dataset's image ids are integers (stored as strings).
    cache_bytes, image_cache_bytes
        Bytes of the annotation and image cache entries at build time (0 without a cache).
    schema
        The file format version the header was written with.
    isus_version
        The isus that built it (None if not recorded).
    fingerprint
        How the dataset files were fingerprinted (None for an index without fingerprints).
    """

    dataset: DatasetIdentity
    params: BuildInfo
    categories: tuple[Category, ...]
    image_range: tuple[int, int]
    int_image_ids: bool
    cache_bytes: int
    image_cache_bytes: int
    schema: int
    isus_version: str | None
    fingerprint: Mapping[str, Any] | None = field(default=None, repr=False)

    @classmethod
    def from_dict(cls, meta: Mapping[str, Any]) -> "IndexMeta":
        """Parse a header's ``meta``; raises ``KeyError``/``TypeError``/``ValueError`` when it is malformed."""
        cats = tuple(Category(c["id"], c["name"], c["isthing"], tuple(c["color"]), c.get("evaluate", True))
                     for c in meta["categories"])
        start, stop = meta["image_range"]
        fp = meta.get("fingerprint")
        return cls(DatasetIdentity.from_dict(meta["dataset"]), BuildInfo.from_dict(meta["params"]), cats,
                   (int(start), int(stop)), bool(meta.get("int_image_ids")), int(meta.get("cache_bytes", 0)),
                   int(meta.get("image_cache_bytes", 0)), meta["schema"], meta.get("isus_version"),
                   None if fp is None else MappingProxyType(dict(fp)))
