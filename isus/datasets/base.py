"""The record API every dataset reader implements, and the registry behind ``open_dataset``.

A format's knowledge lives on its reader class (:class:`PanopticDataset`'s class attributes: name,
aliases, split layout, sampler preset, cache default), and the registry keys the class by its name
and aliases, as detectron2's catalog keys a dataset's loader and metadata by one name: the sampler
presets, split discovery and the CLI ask the registry, never a list of their own.
"""
from __future__ import annotations

import inspect
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence, TypeVar, overload

import numpy as np

from isus import kernels
from isus.datasets.io import decode_image, image_size, json_flag, json_int, read_panoptic_png, read_png, reduced_size
from isus.errors import DatasetError, InstancesUnavailableError
from isus.types import Category, ImageInfo, Panoptic, make_segments

__all__ = ["ImageFiles", "PanopticDataset", "SplitLayout", "SamplerPreset", "open_dataset", "register_dataset",
           "dataset_names", "dataset_formats", "reader_class", "canonical_name", "reader_options", "find_splits"]


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


@dataclass(frozen=True)
class SplitLayout:
    """Where a format keeps one folder (or file) per split, for :func:`find_splits`.

    Attributes
    ----------
    glob
        Pattern under the dataset root matching one path per split (``"*/images"``).
    regex
        Matched against each path relative to the root (with ``/``); group 1 is the split name
        (``r"^([^/]+)/images$"``).
    """

    glob: str
    regex: str

    def splits(self, root: Path) -> set[str]:
        """The split names this layout finds under ``root``."""
        found = set()
        for p in root.glob(self.glob):
            m = re.match(self.regex, p.relative_to(root).as_posix())
            if m and m.group(1) != "annotations":  # the folder beside the splits, not one of them
                found.add(m.group(1))
        return found


@dataclass(frozen=True)
class SamplerPreset:
    """A format's sampler settings, as keyword values of :class:`isus.SamplerConfig` (which
    :meth:`isus.SamplerConfig.preset` reads from here: the readers do not depend on the sampler).

    Attributes
    ----------
    crop_size
        ``(width, height)`` of a crop.
    shortest_side
        ``s0``, the shortest side images are first rescaled to (None: no rescale).
    stuff_scale_range, thing_scale_range
        ``r_st`` and ``r_th``.
    """

    crop_size: tuple[int, int]
    shortest_side: float | None
    stuff_scale_range: tuple[float, float] = (0.5, 2.0)
    thing_scale_range: tuple[float, float] = (0.25, 4.0)

    def as_kwargs(self) -> dict[str, Any]:
        """The settings as keyword arguments of :class:`isus.SamplerConfig`."""
        return asdict(self)


class PanopticDataset:
    """A panoptic segmentation dataset read from its own on-disk layout.

    Subclasses fill :attr:`categories` and the records in ``__init__``, implement
    :meth:`_load_panoptic` (and :meth:`_load_semantic` when they can be semantic-only), declare
    what the rest of isus needs to know about their format in the class attributes below, and
    are registered with :func:`register_dataset` (``docs/datasets.md``, "Adding a dataset format").

    Class attributes
    ----------------
    name
        Registry name of the format (``"mvd"``, ``"cityscapes"``, ``"idd"``, ``"coco"``).
    aliases
        Other names :func:`open_dataset`, the presets and the CLI accept for it (``"mapillary"``).
    split_layout
        Where its splits are (:class:`SplitLayout`), so that a missing split's error lists those found.
    sampler_preset
        Its :class:`SamplerPreset` (what ``SamplerConfig.preset(name)`` gives), or None.
    cache_annotations_by_default
        Whether ``isus index build`` writes the annotation cache without ``--cache-annotations``:
        worth it where decoding an annotation costs much more than reading the cache.

    Attributes
    ----------
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

    name: ClassVar[str] = "?"
    aliases: ClassVar[tuple[str, ...]] = ()
    split_layout: ClassVar[tuple[SplitLayout, ...]] = ()
    sampler_preset: ClassVar[SamplerPreset | None] = None
    cache_annotations_by_default: ClassVar[bool] = False

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
    (:func:`isus.datasets.io.read_panoptic_png`). Raises :class:`DatasetError` when the PNG holds
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
_REGISTRY: dict[str, type[PanopticDataset]] = {}  # name or alias (lower case) -> reader
_D = TypeVar("_D", bound=type[PanopticDataset])


@overload
def register_dataset(cls: _D, /) -> _D: ...
@overload
def register_dataset(*names: str) -> Callable[[_D], _D]: ...
def register_dataset(*names: Any) -> Any:
    """Class decorator: make a reader available to :func:`open_dataset` (and to the sampler
    presets, split discovery and the CLI) under its ``name`` and ``aliases``.

    Used bare (``@register_dataset``) or with further aliases (``@register_dataset("old_name")``,
    the form readers used before they declared ``aliases``). A name another reader holds is a
    ``ValueError``, as in detectron2's catalog: a subclass of a registered reader inherits its
    ``aliases`` and must declare its own.
    """
    if len(names) == 1 and isinstance(names[0], type):
        return _register(names[0], ())
    return lambda cls: _register(cls, names)


def _register(cls: _D, names: tuple[str, ...]) -> _D:
    if not isinstance(cls.name, str) or cls.name in ("", PanopticDataset.name):
        raise TypeError(f"register_dataset: {cls.__name__} needs a class attribute name (its format's name)")
    keys = [n.lower() for n in (cls.name, *cls.aliases, *names)]
    taken = [k for k in keys if _REGISTRY.get(k, cls) is not cls]
    if taken:
        raise ValueError(f"register_dataset: {cls.__name__} asks for {', '.join(map(repr, taken))}, already the "
                         f"name of {', '.join(sorted({_REGISTRY[k].__name__ for k in taken}))} (a subclass "
                         "inherits its parent's aliases: declare aliases = (...) of its own)")
    for k in keys:
        _REGISTRY[k] = cls
    return cls


def dataset_names() -> list[str]:
    """Names accepted by :func:`open_dataset`, aliases included (``mapillary`` and ``vistas`` for
    ``mvd``, ``coco_panoptic`` for ``coco``)."""
    return sorted(_REGISTRY)


def dataset_formats() -> list[str]:
    """The formats' own names, in the order they were registered: ``["mvd", "cityscapes", "idd", "coco"]``
    and then any registered later."""
    return list(dict.fromkeys(cls.name for cls in _REGISTRY.values()))


def reader_class(name: str) -> type[PanopticDataset]:
    """The reader registered under ``name`` or an alias of it (any case): ``reader_class("mapillary")``
    is :class:`~isus.datasets.MapillaryVistas`; an unknown name is a ``ValueError`` listing the known."""
    try:
        return _REGISTRY[str(name).lower()]
    except KeyError:
        raise ValueError(f"open_dataset(name=) expects one of {', '.join(dataset_names())}; got {name!r}") from None


def canonical_name(name: str) -> str:
    """The format's own name for ``name`` or an alias of it: ``"mapillary"`` -> ``"mvd"``."""
    return reader_class(name).name


def reader_options(name: str) -> tuple[str, ...]:
    """The keyword options (besides ``root`` and ``split``) that the reader of ``name`` takes:
    ``reader_options("coco")`` -> ``("annotations", "categories", "images_dir", "panoptic_dir")``."""
    found: dict[str, None] = {}
    for klass in reader_class(name).__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters.values()
        found.update((p.name, None) for p in params if p.kind is p.KEYWORD_ONLY)
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return tuple(sorted(found))


def find_splits(name: str, root: str | Path) -> list[str]:
    """The splits found under ``root`` in the default layout of format ``name`` (for messages)."""
    root = Path(root)
    found: set[str] = set()
    for layout in reader_class(name).split_layout:
        found |= layout.splits(root)
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
    cls = reader_class(name)
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
