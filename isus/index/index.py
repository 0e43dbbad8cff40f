"""The dataset index: per-class and per-instance lookup tables answering every sampling question
without decoding an annotation."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from isus.index.store import IndexFileError, read_arrays, write_arrays
from isus.types import Category, ImageInfo

__all__ = ["Index", "Instances"]

#: Per-image scan columns, in the order they are concatenated (image-major).
INSTANCE_COLUMNS = ("inst_image", "inst_segment", "inst_category", "inst_crowd", "inst_area", "inst_box",
                    "inst_centroid", "inst_anchors")
CLASS_COLUMNS = ("cls_image", "cls_category", "cls_pixels", "cls_ncells", "cls_anchors")
CELL_COLUMNS = ("cell_index", "cell_pixels")


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
    """

    image: np.ndarray
    segment_id: np.ndarray
    category_id: np.ndarray
    iscrowd: np.ndarray
    area: np.ndarray
    box: np.ndarray
    centroid: np.ndarray
    anchors: np.ndarray

    def __len__(self) -> int:
        return len(self.image)

    def __getitem__(self, sel) -> "Instances":
        return Instances(*(getattr(self, f)[sel] for f in self.__dataclass_fields__))

    @property
    def scale(self) -> np.ndarray:
        """Instance scale ``sqrt(area)`` in pixels (the paper's Fig. 2 quantity)."""
        return np.sqrt(self.area.astype(np.float64))


def _pack_strings(values: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    enc = [v.encode() for v in values]
    offsets = np.zeros(len(enc) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(e) for e in enc])
    return np.frombuffer(b"".join(enc), dtype=np.uint8).copy(), offsets


def _unpack_string(blob: np.ndarray, offsets: np.ndarray, i: int) -> str:
    return blob[offsets[i]:offsets[i + 1]].tobytes().decode()


def csr_gather(offsets: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Element positions of CSR ``rows`` (in the given order), concatenated."""
    starts, stops = offsets[rows], offsets[rows + 1]
    lengths = stops - starts
    if lengths.sum() == 0:
        return np.zeros(0, dtype=np.int64)
    pos = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    return pos + np.arange(lengths.sum())


def assemble(meta: dict[str, Any], images: dict[str, np.ndarray], rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Final index arrays from image-major scan rows: instances and class rows sorted by
    (category rank, image, segment), with CSR offsets per category.

    Merging shards goes through here too, so a merged index equals a single build.
    """
    cat_ids = np.array([c["id"] for c in meta["categories"]], dtype=np.int64)
    ncat = len(cat_ids)
    order_of = np.argsort(cat_ids)

    def rank(cats):
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


class Index:
    """A dataset index, built by :func:`isus.build_index` or loaded with :meth:`Index.load`.

    All arrays are read-only; loaded ones are memory-mapped, so every DataLoader worker shares
    one copy in the page cache (pickling an index sends only its path).

    Attributes
    ----------
    meta
        Dataset (name, root, split, options), build parameters, categories, schema.
    categories
        The dataset's categories, in the dataset's order.
    instances
        :class:`Instances` of every thing segment, sorted by (category, image, segment id).
    """

    def __init__(self, meta: dict[str, Any], arrays: dict[str, np.ndarray], path: Path | None = None,
                 checksum: str | None = None) -> None:
        self.meta = meta
        self._a = arrays
        for a in arrays.values():
            if a.flags.writeable:
                a.flags.writeable = False
        self.path = path
        self.checksum = checksum
        self.categories: tuple[Category, ...] = tuple(
            Category(c["id"], c["name"], c["isthing"], tuple(c["color"]), c.get("evaluate", True))
            for c in meta["categories"])
        self._rank = {c.id: k for k, c in enumerate(self.categories)}
        self.instances = Instances(*(arrays[c] for c in INSTANCE_COLUMNS))

    # -- persistence ----------------------------------------------------------------------------
    def save(self, path: str | Path) -> str:
        """Write the index atomically (temp file + rename) and return its checksum."""
        self.checksum = write_arrays(path, self.meta, self._a)
        return self.checksum

    @classmethod
    def load(cls, path: str | Path, verify: bool = True) -> "Index":
        """Memory-map an index file.

        Parameters
        ----------
        verify
            Check the checksum (reads the whole file once). Raises :class:`IndexFileError` on a
            mismatch, a schema version other than this isus's, or a truncated file.
        """
        meta, arrays, checksum = read_arrays(path, verify=verify)
        if meta.get("kind") != "index":
            raise IndexFileError(f"file holds a {meta.get('kind')!r}, not an index", path)
        return cls(meta, arrays, Path(path), checksum)

    def __reduce__(self):
        if self.path is None:
            return (Index, (self.meta, {k: np.array(v) for k, v in self._a.items()}, None, self.checksum))
        # Workers re-map the same file instead of receiving a copy of the arrays.
        return (_load_unverified, (str(self.path),))

    def arrays(self) -> dict[str, np.ndarray]:
        """The raw arrays (read-only), by name."""
        return dict(self._a)

    # -- images -----------------------------------------------------------------------------------
    @property
    def num_images(self) -> int:
        return int(len(self._a["image_height"]))

    @property
    def image_range(self) -> tuple[int, int]:
        """Global image indices this index covers (a shard covers a part)."""
        start, stop = self.meta["image_range"]
        return int(start), int(stop)

    @property
    def heights(self) -> np.ndarray:
        return self._a["image_height"]

    @property
    def widths(self) -> np.ndarray:
        return self._a["image_width"]

    def image_info(self, i: int) -> ImageInfo:
        """Id, file name and size of image ``i`` (a global dataset index)."""
        start, stop = self.image_range
        if not start <= i < stop:
            raise IndexError(f"image {i} is not in this index (images {start}..{stop - 1})")
        k = i - start
        a = self._a
        image_id: int | str = _unpack_string(a["image_id_blob"], a["image_id_offsets"], k)
        if self.meta.get("int_image_ids"):
            image_id = int(image_id)
        return ImageInfo(i, image_id, _unpack_string(a["file_name_blob"], a["file_name_offsets"], k),
                         int(a["image_height"][k]), int(a["image_width"][k]))

    # -- classes ----------------------------------------------------------------------------------
    def category(self, category_id: int) -> Category:
        return self.categories[self._rank_of(category_id)]

    def category_ranks(self, category_ids: np.ndarray) -> np.ndarray:
        """Positions in :attr:`categories` of an array of category ids (vectorised)."""
        ids = np.array([c.id for c in self.categories], dtype=np.int64)
        order = np.argsort(ids)
        pos = np.clip(np.searchsorted(ids[order], category_ids), 0, max(len(ids) - 1, 0))
        ranks = order[pos] if len(ids) else np.zeros(len(category_ids), np.int64)
        if len(category_ids) and not np.array_equal(ids[ranks], category_ids):
            raise KeyError("the index has no category id "
                           f"{np.setdiff1d(category_ids, ids)[:5].tolist()}")
        return ranks

    def _rank_of(self, category_id: int) -> int:
        try:
            return self._rank[int(category_id)]
        except KeyError:
            raise KeyError(f"the index has no category id {category_id}") from None

    def present_categories(self) -> list[Category]:
        """Categories that occur in at least one image."""
        counts = np.diff(self._a["cls_class_offsets"])
        return [c for c, n in zip(self.categories, counts) if n > 0]

    def images_with_class(self, category_id: int) -> tuple[np.ndarray, np.ndarray]:
        """``(images, pixels)``: the images containing the class (ascending) and its pixel count in each."""
        r = self._rank_of(category_id)
        s = slice(self._a["cls_class_offsets"][r], self._a["cls_class_offsets"][r + 1])
        return self._a["cls_image"][s], self._a["cls_pixels"][s]

    def class_cells(self, category_id: int, image: int) -> tuple[np.ndarray, np.ndarray]:
        """``(cell_index, pixels)``: where the class is visible in ``image``, on the index's
        ``grid x grid`` partition (cell ``gy*grid + gx`` covers rows ``[gy*H/grid, (gy+1)*H/grid)``
        and columns likewise). Empty when the class is absent."""
        r = self._rank_of(category_id)
        lo, hi = self._a["cls_class_offsets"][r], self._a["cls_class_offsets"][r + 1]
        k = lo + np.searchsorted(self._a["cls_image"][lo:hi], image)
        if k == hi or self._a["cls_image"][k] != image:
            return np.zeros(0, np.uint16), np.zeros(0, np.uint32)
        s = slice(self._a["cell_offsets"][k], self._a["cell_offsets"][k + 1])
        return self._a["cell_index"][s], self._a["cell_pixels"][s]

    def class_anchors(self, category_id: int, image: int) -> np.ndarray:
        """``(K, 2)`` int32 ``(x, y)`` pixels of the class in ``image`` (spread over its largest
        segment); empty when the class is absent."""
        r = self._rank_of(category_id)
        lo, hi = self._a["cls_class_offsets"][r], self._a["cls_class_offsets"][r + 1]
        k = lo + np.searchsorted(self._a["cls_image"][lo:hi], image)
        if k == hi or self._a["cls_image"][k] != image:
            return np.zeros((0, 2), np.int32)
        return self._a["cls_anchors"][k]

    def instances_of(self, category_id: int, image: int | None = None) -> Instances:
        """Instance rows of a thing class, optionally only those in ``image`` (crowd included:
        filter on ``iscrowd``)."""
        r = self._rank_of(category_id)
        lo, hi = int(self._a["inst_class_offsets"][r]), int(self._a["inst_class_offsets"][r + 1])
        if image is not None:
            imgs = self._a["inst_image"][lo:hi]
            lo, hi = lo + int(np.searchsorted(imgs, image)), lo + int(np.searchsorted(imgs, image, side="right"))
        return self.instances[lo:hi]

    def open_dataset(self):
        """Reopen the dataset this index was built from (same reader, root, split and options)."""
        from isus.datasets.base import open_dataset

        args = {k: v for k, v in self.meta["dataset"].items()
                if k not in ("name", "root", "source", "has_instances", "num_images")}
        ds = open_dataset(self.meta["dataset"]["name"], self.meta["dataset"]["root"], **args)
        if len(ds) != self.meta["dataset"]["num_images"]:
            raise IndexFileError(f"the dataset at {ds.root} now has {len(ds)} images; the index was built "
                                 f"from {self.meta['dataset']['num_images']}: rebuild it", self.path)
        return ds

    # -- annotation cache -------------------------------------------------------------------------
    @property
    def cache_dir(self) -> Path | None:
        """Directory of the annotation cache, if the index was built with one."""
        d = self.meta["params"].get("cache_dir")
        if d is None:
            return None
        d = Path(d)
        return d if d.is_absolute() or self.path is None else self.path.parent / d

    def load_annotation(self, i: int, window: tuple[int, int, int, int] | None = None):
        """Panoptic annotation of image ``i`` from the annotation cache, optionally only the
        ``window`` ``(x0, y0, x1, y1)`` (decoding only the bands it covers; parts outside the
        image are void)."""
        from isus.index.cache import read_cached

        if self.cache_dir is None:
            raise IndexFileError("this index was built without an annotation cache "
                                 "(build with cache_annotations=True / --cache-annotations)", self.path)
        return read_cached(self.cache_dir, i, window, self.image_info(i))

    def describe(self) -> str:
        """Multi-line report: counts, instances per class, size histogram, build parameters."""
        from isus.summary import format_bytes, histogram_lines, scale_histogram

        ds, p = self.meta["dataset"], self.meta["params"]
        inst = self.instances
        things = ~inst.iscrowd
        per_class = np.bincount(self.category_ranks(inst.category_id[things]), minlength=len(self.categories))
        start, stop = self.image_range
        lines = [
            f"dataset      {ds['name']} split={ds.get('split')!r} ({ds['source']} annotations) at {ds['root']}",
            f"images       {self.num_images}" + ("" if (start, stop) == (0, ds["num_images"])
                                                  else f" (shard: images {start}..{stop - 1} of {ds['num_images']})"),
            f"classes      {len(self.categories)} ({sum(c.isthing for c in self.categories)} thing), "
            f"{len(self.present_categories())} present",
            f"instances    {int(things.sum())} (+{int(inst.iscrowd.sum())} crowd)",
        ]
        if things.any():
            lines.append("per class    " + ", ".join(f"{c.name} {n}" for c, n in zip(self.categories, per_class) if n))
            lines.append("instance size, sqrt(area) in px:")
            lines += histogram_lines(scale_histogram(inst.scale[things]))
        cache = f"{p['cache_dir']} ({format_bytes(self.meta.get('cache_bytes', 0))})" if p["cache_dir"] else "none"
        lines.append(f"build        grid {p['grid']}x{p['grid']}, {p['anchors']} anchors per instance, "
                     f"annotation cache: {cache}")
        lines.append(f"file         {self.path} (schema {self.meta['schema']}, {self.checksum})")
        return "\n".join(lines)

    def __repr__(self) -> str:
        ds = self.meta["dataset"]
        return (f"Index({ds['name']} {ds.get('split')!r}: images={self.num_images}, categories={len(self.categories)}, "
                f"instances={len(self.instances)}, path={str(self.path) if self.path else None!r})")


def _load_unverified(path: str) -> Index:
    return Index.load(path, verify=False)
