"""The record API every dataset reader implements, and the registry behind ``open_dataset``."""
from __future__ import annotations

import inspect
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import numpy as np

from isus import kernels
from isus.datasets._io import decode_image, image_size, read_png, reduced_size
from isus.datasets._panoptic_json import json_flag, json_int
from isus.errors import DatasetError, InstancesUnavailableError
from isus.types import Category, ImageInfo, Panoptic, make_segments

__all__ = ["ImageFiles", "PanopticDataset", "open_dataset", "register_dataset", "dataset_names"]


@dataclass
class Record:
    """One image of a dataset as a reader found it (private to the readers)."""

    image_id: int | str
    image_path: Path
    annotation: Any  # reader-specific: a path, or (path, segments_info)
    height: int | None = None
    width: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ImageFiles:
    """The files behind one image of a dataset (what an index fingerprints).

    Attributes
    ----------
    image
        The image file.
    annotation
        The annotation file (PNG or polygon JSON), None where the format has none per image.
    segments_info
        The image's ``segments_info`` from a panoptic JSON (part of its annotation), else None.
    """

    image: Path
    annotation: Path | None
    segments_info: Any = None


class PanopticDataset:
    """A panoptic segmentation dataset read from its own on-disk layout.

    Subclasses fill :attr:`categories` and the records in ``__init__`` and implement
    :meth:`_load_panoptic` (and :meth:`_load_semantic` when they can be semantic-only).

    Attributes
    ----------
    name
        Registry name of the format (``"mvd"``, ``"cityscapes"``, ``"idd"``, ``"coco"``).
    root
        Dataset root directory.
    split
        Split that was opened.
    categories
        The dataset's categories, in the dataset's own id order.
    has_instances
        False when only semantic labels were found: :meth:`load_panoptic` then raises
        :class:`~isus.InstancesUnavailableError` and only class-uniform sampling can work.
    source
        Which annotation files the records come from (e.g. ``"instances"``, ``"panoptic"``,
        ``"polygons"``, ``"labels"``).
    """

    name: str = "?"

    def __init__(
        self,
        root: Path,
        split: str | None,
        categories: Sequence[Category],
        records: list[Record],
        *,
        source: str,
        has_instances: bool = True,
    ) -> None:
        self.root = Path(root)
        self.split = split
        self.categories: tuple[Category, ...] = tuple(categories)
        self.source = source
        self.has_instances = has_instances
        self._records = records
        self._by_id = {c.id: c for c in self.categories}
        self.open_args: dict[str, Any] = {"name": self.name, "root": str(self.root.resolve()), "split": split}
        if len(self._by_id) != len(self.categories):
            raise DatasetError(f"{self.name}: duplicate category ids in the label config", self.root)

    # -- record API -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._records)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, images={len(self)}, "
            f"categories={len(self.categories)}, source={self.source!r})"
        )

    def category(self, category_id: int) -> Category:
        """The :class:`Category` with the dataset's id ``category_id``."""
        try:
            return self._by_id[int(category_id)]
        except KeyError:
            raise KeyError(f"{self.name} has no category id {category_id}") from None

    def _record(self, i: int) -> Record:
        if not isinstance(i, (int, np.integer)) or not -len(self) <= i < len(self):
            raise IndexError(f"image index {i!r} out of range for a dataset of {len(self)} images")
        return self._records[int(i)]

    def image_info(self, i: int) -> ImageInfo:
        """Id, file name and size of image ``i`` (the size is read from the header once)."""
        r = self._record(i)
        if r.height is None or r.width is None:
            r.height, r.width = image_size(r.image_path)
        return ImageInfo(
            index=int(i) % len(self),
            image_id=r.image_id,
            file_name=_relative(r.image_path, self.root),
            height=int(r.height),
            width=int(r.width),
        )

    def image_path(self, i: int) -> Path:
        """Absolute path of the image file of image ``i``."""
        return self._record(i).image_path

    def files(self, i: int) -> ImageFiles:
        """The image file, annotation file and (panoptic JSON formats) ``segments_info`` of image ``i``."""
        r = self._record(i)
        ann, segments_info = r.annotation, None
        if isinstance(ann, tuple) and len(ann) == 2:
            ann, segments_info = ann
        if not isinstance(ann, (str, os.PathLike)):
            ann = None
        return ImageFiles(Path(r.image_path), None if ann is None else Path(ann), segments_info)

    def load_image(self, i: int, reduce: int = 1, *, bgr: bool = False) -> np.ndarray:
        """Decode image ``i`` as ``(H, W, 3)`` uint8 RGB (BGR with ``bgr=True``).

        Parameters
        ----------
        i
            Image index.
        reduce
            1, 2, 4 or 8: decode at ``1/reduce`` resolution, ``ceil(H/reduce) x ceil(W/reduce)``
            (JPEGs are scaled inside libjpeg, which is much cheaper than a full decode).
        bgr
            Keep OpenCV's channel order: the crop engine converts only the crop to RGB, not the
            whole image.
        """
        r = self._record(i)
        img = decode_image(r.image_path, reduce, bgr=bgr)
        info = self.image_info(i)
        expected = reduced_size(info.height, info.width, reduce)
        if img.shape[:2] != expected:
            raise DatasetError(
                f"image is {img.shape[1]}x{img.shape[0]} at reduce={reduce}; expected "
                f"{expected[1]}x{expected[0]} from the annotation ({info.width}x{info.height})",
                r.image_path,
            )
        return img

    def load_panoptic(self, i: int) -> Panoptic:
        """Decode the panoptic annotation of image ``i``.

        Segment id 0 is void in every format. Category ids are the dataset's own.
        """
        if not self.has_instances:
            raise InstancesUnavailableError(
                f"the {self.name} dataset was opened semantic-only (source={self.source!r}): "
                "instance annotations are needed for this. Class-uniform sampling (CUS) works on "
                "semantic labels; for ISUS provide the instance or panoptic annotations.",
                self.root,
            )
        return self._load_panoptic(self._record(i))

    def load_semantic(self, i: int) -> np.ndarray:
        """``(H, W)`` int32 category ids of image ``i``; -1 where void."""
        r = self._record(i)
        return self._load_panoptic(r).semantic(void=-1) if self.has_instances else self._load_semantic(r)

    # -- for subclasses ---------------------------------------------------------------------
    def _load_panoptic(self, r: Record) -> Panoptic:
        raise NotImplementedError

    def _load_semantic(self, r: Record) -> np.ndarray:
        raise NotImplementedError

    def _read_png(self, r: Record, path: Path, modes: tuple[str, ...], what: str) -> np.ndarray:
        """Decode an annotation PNG of record ``r`` and check its size against the image's
        before anything is matched against it."""
        arr = read_png(path, modes, what, check=lambda size: self._check_size(r, size, path))
        self._check_size(r, arr.shape, path)
        return arr

    def _read_panoptic_png(self, r: Record, path: Path, what: str) -> np.ndarray:
        """Decode an RGB panoptic PNG of record ``r`` to int32 ids, size-checked against the image."""
        from isus.datasets._io import read_panoptic_png

        ids = read_panoptic_png(path, what, check=lambda size: self._check_size(r, size, path))
        self._check_size(r, ids.shape, path)
        return ids

    def _check_size(self, r: Record, shape: tuple[int, ...], path: Path) -> None:
        if r.height is None or r.width is None:
            r.height, r.width = shape[:2]
            return
        if tuple(shape[:2]) != (r.height, r.width):
            raise DatasetError(
                f"annotation is {shape[1]}x{shape[0]}; expected {r.width}x{r.height} "
                f"(the size of image {r.image_path.name})",
                path,
            )

    def _check_category(self, category_id: int, path: Path, where: str) -> Category:
        try:
            return self._by_id[int(category_id)]
        except KeyError:
            known = sorted(self._by_id)
            shown = ", ".join(map(str, known[:12])) + (", ..." if len(known) > 12 else "")
            raise DatasetError(
                f"{where}: unknown category id {category_id} (the label config has ids {shown})", path
            ) from None


def check_pairs(records: list[Record], annotations: list[Path], image_of: Callable[[Path], Path]) -> None:
    """Every record's annotation file exists, and every annotation file found has its image.

    ``annotations`` are the annotation files found on disk (one listing, not a stat per image);
    ``image_of(annotation)`` is where the image of an orphan annotation was expected. Images are
    listed from disk, so without this a deleted image would make the dataset one image shorter
    without a word.
    """
    expected = {r.annotation for r in records}
    found = set(annotations)
    missing = [r for r in records if r.annotation not in found]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DatasetError(f"annotation of image {missing[0].image_path.name} not found{more}", missing[0].annotation)
    orphans = sorted(p for p in found if p not in expected)
    if orphans:
        more = f" (and {len(orphans) - 1} more)" if len(orphans) > 1 else ""
        raise DatasetError(f"annotation has no image: {image_of(orphans[0])} not found{more} (was the image "
                           "deleted? nothing is skipped silently)", orphans[0])


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


# -- shared decoders --------------------------------------------------------------------------
def panoptic_from_packed(
    values: np.ndarray,
    decode: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]],
    dataset: PanopticDataset,
    path: Path,
) -> Panoptic:
    """Turn a 16-bit packed map (class and instance in one value) into a :class:`Panoptic`.

    ``decode(present_values) -> (segment_ids, category_ids, iscrowd)`` maps each distinct
    value to its segment; a segment id of 0 marks void. Works through a 65536-entry lookup
    table, so the pixels are touched only by one bincount and one gather.
    """
    if values.dtype != np.uint16:
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise DatasetError("16-bit annotation holds values outside 0..65535", path)
        values = values.astype(np.uint16)
    present = np.flatnonzero(kernels.count_u16(np.ascontiguousarray(values)))
    seg_ids, cat_ids, crowd = decode(present)
    keep = seg_ids != 0
    for c in np.unique(cat_ids[keep]):
        dataset._check_category(int(c), path, "pixel value")
    lut = np.zeros(65536, dtype=np.int32)
    lut[present] = seg_ids
    ids = lut[values]
    return Panoptic(ids, make_segments(seg_ids[keep], cat_ids[keep], crowd[keep]))


def panoptic_from_rgb(
    rgb: np.ndarray, segments_info: list[dict[str, Any]], dataset: PanopticDataset, path: Path, json_path: Path
) -> Panoptic:
    """Decode a COCO-style RGB panoptic PNG against its ``segments_info`` from the JSON.

    ``rgb`` is the PNG's ``(H, W, 3)`` RGB array, or its ``(H, W)`` int32 ids already decoded
    (:func:`isus.datasets._io.read_panoptic_png`). Raises :class:`DatasetError` when the PNG holds
    an id the JSON does not list, the JSON lists a segment absent from the PNG, or a segment names
    an unknown category.
    """
    ids = rgb if rgb.ndim == 2 else kernels.colors_to_ids(np.ascontiguousarray(rgb), False)
    try:
        seg_ids = np.array([json_int(s["id"]) for s in segments_info], dtype=np.int64)
        cat_ids = np.array([json_int(s["category_id"]) for s in segments_info], dtype=np.int64)
        crowd = np.array([json_flag(s.get("iscrowd", 0)) for s in segments_info], dtype=bool)
    except (KeyError, TypeError, ValueError, OverflowError, AttributeError) as e:
        raise DatasetError(f"segments_info of {path.name} lacks or mistypes a field ({e!r}); "
                           "each segment needs integer 'id' and 'category_id'", json_path) from None
    if len(np.unique(seg_ids)) != len(seg_ids):
        raise DatasetError(f"segments_info of {path.name} lists a segment id twice", json_path)
    if (seg_ids == 0).any():
        raise DatasetError(f"segments_info of {path.name} uses id 0, which means void", json_path)
    for c in np.unique(cat_ids):
        dataset._check_category(int(c), json_path, f"segments_info of {path.name}")
    order = np.argsort(seg_ids)
    areas, unknown, _ = kernels.segment_areas(ids, seg_ids[order])
    if unknown:
        present = np.unique(ids[(ids != 0) & ~np.isin(ids, seg_ids)])  # error path only
        raise DatasetError(
            f"the PNG holds segment ids {present[:5].tolist()} that segments_info in "
            f"{json_path.name} does not list", path)
    missing_in_png = seg_ids[order][areas == 0]
    if missing_in_png.size:
        raise DatasetError(
            f"segments_info in {json_path.name} lists segment ids {missing_in_png[:5].tolist()} "
            "that the PNG does not contain", path)
    return Panoptic(ids.astype(np.int32, copy=False), make_segments(seg_ids, cat_ids, crowd))


# -- registry ---------------------------------------------------------------------------------
_REGISTRY: dict[str, type[PanopticDataset]] = {}
_D = TypeVar("_D", bound=type[PanopticDataset])


def register_dataset(*names: str) -> Callable[[_D], _D]:
    """Class decorator: make a reader available to :func:`open_dataset` under ``names``."""

    def deco(cls: _D) -> _D:
        for n in names:
            _REGISTRY[n.lower()] = cls
        return cls

    return deco


def dataset_names() -> list[str]:
    """Names accepted by :func:`open_dataset`, aliases included (``mapillary`` and ``vistas`` for
    ``mvd``, ``coco_panoptic`` for ``coco``)."""
    return sorted(_REGISTRY)


def _reader(name: str) -> type[PanopticDataset]:
    try:
        return _REGISTRY[str(name).lower()]
    except KeyError:
        raise ValueError(f"open_dataset(name=) expects one of {', '.join(dataset_names())}; got {name!r}") from None


def canonical_name(name: str) -> str:
    """The format's own name for ``name`` or an alias of it: ``"mapillary"`` -> ``"mvd"``."""
    return _reader(name).name


def reader_options(name: str) -> tuple[str, ...]:
    """The keyword options (besides ``root`` and ``split``) that the reader of ``name`` takes:
    ``reader_options("coco")`` -> ``("annotations", "categories", "images_dir", "panoptic_dir")``."""
    found: dict[str, None] = {}
    for klass in _reader(name).__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters.values()
        found.update((p.name, None) for p in params if p.kind is p.KEYWORD_ONLY)
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return tuple(sorted(found))


#: Where each format keeps one folder per split: (glob under the root, regex giving the split name).
_SPLIT_DIRS = {
    "mvd": [("*/images", r"^([^/]+)/images$")],
    "cityscapes": [("leftImg8bit/*", r"^leftImg8bit/([^/]+)$")],
    "idd": [("leftImg8bit/*", r"^leftImg8bit/([^/]+)$")],
    "coco": [("*2017", r"^(.+)2017$"), ("annotations/panoptic_*2017.json", r"^annotations/panoptic_(.+)2017\.json$")],
}


def find_splits(name: str, root: str | Path) -> list[str]:
    """The splits found under ``root`` in the default layout of format ``name`` (for messages)."""
    root = Path(root)
    found = set()
    for pattern, regex in _SPLIT_DIRS.get(canonical_name(name), []):
        for p in root.glob(pattern):
            m = re.match(regex, p.relative_to(root).as_posix())
            if m and m.group(1) != "annotations":
                found.add(m.group(1))
    return sorted(found)


def open_dataset(name: str, root: str | Path, split: str | None = None, **kwargs: Any) -> PanopticDataset:
    """Open a dataset in its own on-disk layout.

    Parameters
    ----------
    name
        ``"mvd"``, ``"cityscapes"``, ``"idd"`` or ``"coco"``, or an alias (see :func:`dataset_names`).
    root
        The dataset's root directory, as downloaded.
    split
        Split name in the dataset's own terms (``"training"`` for MVD, ``"train"``/``"val"``
        elsewhere); each reader has a default. A split that is not there is an error listing those
        that are.
    **kwargs
        Format-specific options (``version=`` for MVD, ``source=``, paths overriding the
        default layout; :func:`reader_options` lists them); see ``docs/datasets.md``.

    Examples
    --------
    >>> ds = open_dataset("mvd", "/data/mapillary", split="training", version="v1.2")  # doctest: +SKIP
    >>> ds.load_panoptic(0).segments[:3]  # doctest: +SKIP
    """
    cls = _reader(name)
    unknown = sorted(set(kwargs) - set(reader_options(name)))
    if unknown:
        raise ValueError(f"open_dataset({cls.name!r}) does not take {', '.join(k + '=' for k in unknown)}; it takes "
                         f"split=, {', '.join(k + '=' for k in reader_options(name))}")
    if not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"open_dataset(root=) expects a path (str or pathlib.Path); got {root!r:.60}")
    if split is not None and not isinstance(split, str):
        raise TypeError(f"open_dataset(split=) expects a split name (str) or None; got {split!r:.60}")
    if split is not None:
        kwargs["split"] = split
    try:
        ds = cls(Path(root), **kwargs)
    except DatasetError as e:
        splits = find_splits(name, root) if split is not None and Path(root).is_dir() else []
        if splits and split not in splits:
            raise DatasetError(f"{cls.name} has no split {split!r} here; the splits found are "
                               f"{', '.join(splits)} ({e})", root) from e
        raise
    # Enough to reopen the same dataset elsewhere (an index records it).
    ds.open_args = {"name": ds.name, "root": str(Path(root).resolve()),
                    **{k: str(v) if isinstance(v, Path) else v for k, v in kwargs.items()}, "split": ds.split}
    return ds
