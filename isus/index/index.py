"""The dataset index: per-class and per-instance lookup tables answering every sampling question
without decoding an annotation."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

import numpy as np

from isus.datasets.base import open_dataset
from isus.index import fingerprint
from isus.index.cache import entry_name, prune_cache
from isus.index.cache import verify_entry as verify_annotation_entry
from isus.index.image_cache import image_entry_name
from isus.index.image_cache import verify_entry as verify_image_entry
from isus.index.schema import ClassTable, IndexMeta, Instances, image_strings, unpack_string
from isus.index.store import IndexFileError, IndexMismatchError, read_arrays, read_header, write_arrays
from isus.index.structure import check_index
from isus.summary import format_bytes, histogram_lines, scale_histogram
from isus.types import Category, ImageInfo

if TYPE_CHECKING:
    from isus.datasets.base import PanopticDataset

__all__ = ["Index", "Instances"]


class Index:
    """A dataset index, built by :func:`isus.build_index` or loaded with :meth:`Index.load`.

    All arrays are read-only; loaded ones are memory-mapped, so every DataLoader worker shares
    one copy in the page cache (pickling an index sends only its path, and unpickling checks that
    the file there is still the one that was loaded).

    The index records a fingerprint of every image's files; :meth:`verify_dataset` checks a
    dataset against it (the crop engine does so on construction and per image on first use).

    Attributes
    ----------
    info
        The header, typed (:class:`~isus.index.schema.IndexMeta`): the dataset's identity, build
        parameters, categories, image range.
    meta
        The header as stored (a dict); prefer :attr:`info`.
    categories
        The dataset's categories, in the dataset's order.
    instances
        :class:`Instances` of every thing segment, sorted by (category, image, segment id).
    classes
        :class:`~isus.index.schema.ClassTable`: where each category is, per image and grid cell.
    """

    info: IndexMeta

    def __init__(self, meta: dict[str, Any], arrays: dict[str, np.ndarray], path: Path | None = None,
                 checksum: str | None = None, root: str | Path | None = None) -> None:
        self.meta = meta
        #: Dataset root overriding the recorded one (``Index.load(..., root=)``), for a moved dataset.
        self.root = None if root is None else Path(root)
        self._file_id: tuple[int, int, int] | None = None
        self._names: dict[str, list[str]] | None = None
        self._a = arrays
        for a in arrays.values():
            if a.flags.writeable:
                a.flags.writeable = False
        self.path = path
        self.checksum = checksum
        self._rank = {c.id: k for k, c in enumerate(self.categories)}
        self.instances = Instances.from_arrays(arrays)
        self.classes = ClassTable.from_arrays(arrays)

    @property
    def meta(self) -> dict[str, Any]:
        """The header as stored; :attr:`info` is its typed view."""
        return self._meta

    @meta.setter
    def meta(self, meta: dict[str, Any]) -> None:
        # parsed once here, so a malformed header fails when the index is made, not on first use
        self.info = IndexMeta.from_dict(meta)
        self._meta = meta

    @property
    def categories(self) -> tuple[Category, ...]:
        """The dataset's categories, in the dataset's order."""
        return self.info.categories

    # -- persistence ----------------------------------------------------------------------------
    def save(self, path: str | Path) -> str:
        """Write the index atomically (temp file + fsync + rename) and return its checksum.

        The annotation cache directory is recorded relative to the index file, so an index moved
        together with its cache keeps working. Afterwards the index refers to ``path``.
        """
        path = Path(path)
        meta = self.meta
        cache = self.cache_dir
        if cache is not None:
            rel = os.path.relpath(Path(cache).resolve(), path.resolve().parent)
            meta = {**meta, "params": {**meta["params"], "cache_dir": Path(rel).as_posix()}}
        self.checksum = write_arrays(path, meta, self._a)
        self.meta, self.path = meta, path
        self._file_id = _file_id(os.stat(path))
        return self.checksum

    @classmethod
    def load(cls, path: str | Path, verify: bool = True, root: str | Path | None = None) -> "Index":
        """Memory-map an index file.

        Parameters
        ----------
        verify
            Check the checksum (reads the whole file once). Raises :class:`IndexFileError` on a
            mismatch, a schema version other than this isus's, or a truncated file. The arrays'
            structure (lengths, offsets, ranges: ``isus.index.structure``) is checked either way.
        root
            The dataset's root now, when it moved since the build: :meth:`open_dataset` opens it
            there. Verification compares relative file names, sizes and content samples, which a
            copied or moved dataset still matches.
        """
        meta, arrays, checksum = read_arrays(path, verify=verify)
        if not isinstance(meta, dict) or meta.get("kind") != "index":
            raise IndexFileError(f"file holds a {meta.get('kind') if isinstance(meta, dict) else meta!r:.40}, "
                                 "not an index", path)
        check_index(meta, arrays, path)  # a valid checksum does not make the arrays consistent
        try:
            index = cls(meta, arrays, Path(path), checksum, root)
        except (KeyError, TypeError, ValueError, IndexError) as e:
            # a damaged header loaded with verify=False, or one its writer left incomplete
            raise IndexFileError(f"index header is malformed ({type(e).__name__}: {e})", path) from None
        index._file_id = _file_id(os.stat(path))
        return index

    def __reduce__(self) -> tuple[Callable[..., Index], tuple[Any, ...]]:
        if self.path is None:
            return (Index, (self.meta, {k: np.array(v) for k, v in self._a.items()}, None, self.checksum, self.root))
        # Workers re-map the same file instead of receiving a copy of the arrays, after checking
        # that it is still the same file.
        return (_reopen, (str(self.path), self.checksum, self._file_id, None if self.root is None else str(self.root)))

    def arrays(self) -> dict[str, np.ndarray]:
        """The raw arrays (read-only), by name (``isus.index.schema``); prefer the typed views
        :attr:`instances`, :attr:`classes` and :attr:`info`."""
        return dict(self._a)

    def content_digest(self) -> str:
        """``"blake2b:<hex>"`` of what the index says: its categories, image range and every
        array (names, dtypes, shapes, bytes). Not where it or its dataset are stored, so a copied
        or moved index has the same digest. Reads every array."""
        h = hashlib.blake2b(digest_size=16)
        h.update(json.dumps([self.meta.get("categories"), self.meta.get("image_range")], sort_keys=True).encode())
        for name in sorted(self._a):
            a = np.ascontiguousarray(self._a[name])
            h.update(f"{name}:{a.dtype.str}:{a.shape};".encode())
            h.update(a.reshape(-1).view(np.uint8).data)
        return "blake2b:" + h.hexdigest()

    # -- images -----------------------------------------------------------------------------------
    @property
    def num_images(self) -> int:
        return int(len(self._a["image_height"]))

    @property
    def image_range(self) -> tuple[int, int]:
        """Global image indices this index covers (a shard covers a part)."""
        return self.info.image_range

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
        image_id: int | str = unpack_string(a["image_id_blob"], a["image_id_offsets"], k)
        if self.info.int_image_ids:
            image_id = int(image_id)
        return ImageInfo(i, image_id, unpack_string(a["file_name_blob"], a["file_name_offsets"], k),
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
        counts = np.diff(self.classes.class_offsets)
        return [c for c, n in zip(self.categories, counts) if n > 0]

    def images_with_class(self, category_id: int) -> tuple[np.ndarray, np.ndarray]:
        """``(images, pixels)``: the images containing the class (ascending) and its pixel count in each."""
        r = self._rank_of(category_id)
        t = self.classes
        s = slice(t.class_offsets[r], t.class_offsets[r + 1])
        return t.image[s], t.pixels[s]

    def class_cells(self, category_id: int, image: int) -> tuple[np.ndarray, np.ndarray]:
        """``(cell_index, pixels)``: where the class is visible in ``image``, on the index's
        ``grid x grid`` partition (cell ``gy*grid + gx`` covers rows ``[gy*H/grid, (gy+1)*H/grid)``
        and columns likewise). Empty when the class is absent."""
        t = self.classes
        k = t.row(self._rank_of(category_id), image)
        if k is None:
            return np.zeros(0, np.uint16), np.zeros(0, np.uint32)
        s = slice(t.cell_offsets[k], t.cell_offsets[k + 1])
        return t.cell_index[s], t.cell_pixels[s]

    def class_anchors(self, category_id: int, image: int) -> np.ndarray:
        """``(K, 2)`` int32 ``(x, y)`` pixels of the class in ``image`` (spread over its largest
        segment); empty when the class is absent."""
        k = self.classes.row(self._rank_of(category_id), image)
        if k is None:
            return np.zeros((0, 2), np.int32)
        anchors: np.ndarray = self.classes.anchors[k]
        return anchors

    def instances_of(self, category_id: int, image: int | None = None) -> Instances:
        """Instance rows of a thing class, optionally only those in ``image`` (crowd included:
        filter on ``iscrowd``)."""
        r = self._rank_of(category_id)
        inst = self.instances
        assert inst.class_offsets is not None  # the whole table has them
        lo, hi = int(inst.class_offsets[r]), int(inst.class_offsets[r + 1])
        if image is not None:
            imgs = inst.image[lo:hi]
            lo, hi = lo + int(np.searchsorted(imgs, image)), lo + int(np.searchsorted(imgs, image, side="right"))
        return inst[lo:hi]

    def open_dataset(self, root: str | Path | None = None, verify: bool = True) -> PanopticDataset:
        """Reopen the dataset this index was built from (same reader, split and options) at
        ``root``, else the root given to :meth:`load`, else the recorded one; with ``verify``,
        check it against the index (:meth:`verify_dataset`, a sample of images)."""
        d = self.info.dataset
        root = root if root is not None else self.root if self.root is not None else d.root
        ds = open_dataset(d.name, root, split=d.split, **d.options)
        if len(ds) != d.num_images:
            raise IndexMismatchError(f"the dataset at {ds.root} now has {len(ds)} images; the index was built "
                                     f"from {d.num_images}: rebuild it", self.path, field="number of images")
        if verify:
            self.verify_dataset(ds)
        return ds

    # -- verification against a dataset ---------------------------------------------------------
    def image_strings(self, column: str) -> list[str]:
        """A per-image string column (``"image_id"``, ``"file_name"`` or ``"ann_name"``), in
        image order; unpacked on first use and kept."""
        if self._names is None:
            self._names = image_strings(self._a)
        return self._names[column]

    def verify_dataset(self, ds: PanopticDataset, images: str | Iterable[int] = "sample") -> None:
        """Check that ``ds`` is the dataset this index was built from.

        Always compares the dataset's identity (format, split, annotation source, categories,
        number of images) and every image's and annotation's file name (relative to the root;
        no file is touched). Then the files' sizes and content samples (see
        ``isus.index.fingerprint``) of ``images``: ``"sample"`` (a fixed, evenly spread set of
        :data:`~isus.index.fingerprint.OPEN_SAMPLE` images), ``"all"``, or an iterable of image indices.

        Raises
        ------
        IndexMismatchError
            Naming the first image (and the field) that differs.
        """
        fingerprint.verify_dataset(self, ds, images)

    def verify_image(self, ds: PanopticDataset, i: int, names: bool = True) -> None:
        """Check image ``i``'s files in ``ds`` against the index's fingerprint (two small reads
        per file); raises :class:`IndexMismatchError` naming the image and the field."""
        fingerprint.verify_image(self, ds, i, names)

    # -- annotation cache -------------------------------------------------------------------------
    @property
    def cache_dir(self) -> Path | None:
        """Directory of the annotation cache, if the index was built with one (recorded relative
        to the index file)."""
        recorded = self.info.params.cache_dir
        if recorded is None:
            return None
        d = Path(recorded)
        return d if d.is_absolute() or self.path is None else self.path.parent / d

    def cache_path(self, i: int) -> Path:
        """The annotation cache entry of image ``i`` (named by its content digest)."""
        if self.cache_dir is None:
            raise IndexFileError("this index was built without an annotation cache "
                                 "(build with cache_annotations=True / --cache-annotations)", self.path)
        start, stop = self.image_range
        if not start <= i < stop:
            raise IndexError(f"image {i} is not in this index (images {start}..{stop - 1})")
        return self.cache_dir / entry_name(i, self._a["cache_digest"][i - start].tobytes().hex())

    @property
    def image_cache(self) -> dict[str, Any] | None:
        """The image cache's settings (codec, quality, tile), if the index was built with one."""
        settings: dict[str, Any] | None = self.meta["params"].get("image_cache")
        return settings

    def annotation_digest(self, i: int) -> str:
        """Hex content digest of image ``i``'s annotation cache entry (recorded at build time)."""
        start, stop = self.image_range
        if not start <= i < stop:
            raise IndexError(f"image {i} is not in this index (images {start}..{stop - 1})")
        digest: str = self._a["cache_digest"][i - start].tobytes().hex()
        return digest

    def image_digest(self, i: int) -> str:
        """Hex content digest of image ``i``'s image cache entry (recorded at build time)."""
        start, stop = self.image_range
        if not start <= i < stop:
            raise IndexError(f"image {i} is not in this index (images {start}..{stop - 1})")
        digest: str = self._a["image_cache_digest"][i - start].tobytes().hex()
        return digest

    def image_cache_path(self, i: int) -> Path:
        """The image cache entry of image ``i`` (named by its content digest)."""
        if self.image_cache is None or self.cache_dir is None:
            raise IndexFileError("this index was built without an image cache (build with image_cache=True / "
                                 "--cache-images)", self.path)
        return self.cache_dir / image_entry_name(i, self.image_digest(i))

    def cache_paths(self, i: int) -> list[Path]:
        """Every cache entry of image ``i`` (annotation, image)."""
        paths = [] if self.cache_dir is None else [self.cache_path(i)]
        return paths + ([self.image_cache_path(i)] if self.image_cache is not None else [])

    def prune_cache(self) -> int:
        """Delete the cache entries in :attr:`cache_dir` this index does not refer to (left by
        the build it replaced, or by an interrupted one). Call it once this index is committed;
        returns how many files were removed. Never call it while another index shares the directory."""
        if self.cache_dir is None:
            return 0
        return prune_cache(self.cache_dir, {p.name for i in range(*self.image_range) for p in self.cache_paths(i)})

    def verify_caches(self, progress: Callable[[int, int], None] | None = None) -> int:
        """Read every cache entry this index refers to in full and check it: digests, every band's
        and tile's CRC-32, each header against the index. Returns the number of entries checked;
        raises :class:`IndexFileError` naming the first bad one."""
        n = 0
        total = self.num_images
        for k, i in enumerate(range(*self.image_range)):
            info = self.image_info(i)
            if self.cache_dir is not None:
                verify_annotation_entry(self.cache_path(i), info, self._a["cache_digest"][i - self.image_range[0]].tobytes().hex())
                n += 1
            if self.image_cache is not None:
                verify_image_entry(self.image_cache_path(i), info, self.image_digest(i))
                n += 1
            if progress is not None:
                progress(k + 1, total)
        return n

    def describe(self) -> str:
        """Multi-line report: counts, instances per class, size histogram, build parameters."""
        info = self.info
        ds, p = info.dataset, info.params
        inst = self.instances
        things = ~inst.iscrowd
        per_class = np.bincount(self.category_ranks(inst.category_id[things]), minlength=len(self.categories))
        start, stop = self.image_range
        lines = [
            f"dataset      {ds.name} split={ds.split!r} ({ds.source} annotations) at {ds.root}"
            + (f" (re-pointed to {self.root})" if self.root is not None else ""),
            f"images       {self.num_images}" + ("" if (start, stop) == (0, ds.num_images)
                                                  else f" (shard: images {start}..{stop - 1} of {ds.num_images})"),
            f"classes      {len(self.categories)} ({sum(c.isthing for c in self.categories)} thing), "
            f"{len(self.present_categories())} present",
            f"instances    {int(things.sum())} (+{int(inst.iscrowd.sum())} crowd)",
        ]
        if things.any():
            lines.append("per class    " + ", ".join(f"{c.name} {n}" for c, n in zip(self.categories, per_class) if n))
            lines.append("instance size, sqrt(area) in px:")
            lines += histogram_lines(scale_histogram(inst.scale[things]))
        cache = f"{self.cache_dir} ({format_bytes(info.cache_bytes)})" if p.cache_dir else "none"
        ic = p.image_cache
        images = (f"{ic['codec']} tiles of {ic['tile']} px" + (f", quality {ic['quality']}" if ic["codec"] == "jpeg" else "")
                  + f" ({format_bytes(info.image_cache_bytes)})") if ic else "none"
        lines.append(f"build        grid {p.grid}x{p.grid}, {p.anchors} anchors per instance, "
                     f"annotation cache: {cache}, image cache: {images}")
        lines.append(f"file         {self.path} (schema {info.schema}, {self.checksum})")
        return "\n".join(lines)

    def __repr__(self) -> str:
        ds = self.info.dataset
        return (f"Index({ds.name} {ds.split!r}: images={self.num_images}, categories={len(self.categories)}, "
                f"instances={len(self.instances)}, path={str(self.path) if self.path else None!r})")


def _file_id(st: os.stat_result) -> tuple[int, int, int]:
    return st.st_size, st.st_ino, st.st_mtime_ns


def _reopen(path: str, checksum: str | None, file_id: tuple[int, int, int] | None, root: str | None) -> Index:
    """Unpickle an index by re-mapping its file, verifying it is the file that was pickled.

    The header's checksum must equal the pickled one (else the file was replaced). When the file's
    size, inode and mtime are also unchanged that is enough; otherwise (the file was rewritten)
    the whole file is re-hashed, so content changed under an unchanged header is caught too.
    """
    found, st = read_header(path)
    if found != checksum:
        raise IndexFileError(f"the index file was replaced since this Index was loaded (checksum {checksum}, "
                             f"the file now has {found}); reload it", path)
    same = file_id is not None and _file_id(st) == tuple(file_id)
    return Index.load(path, verify=not same, root=root)
