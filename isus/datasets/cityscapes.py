"""Cityscapes and IDD readers: both use the ``leftImg8bit/`` + ``gtFine/`` layout."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from isus.datasets._panoptic_json import categories_from_json, load_panoptic_json, match_records
from isus.datasets.base import (PanopticDataset, Record, SamplerPreset, SplitLayout, check_pairs, panoptic_from_packed,
                                panoptic_from_rgb, register_dataset)
from isus.datasets.io import image_size, read_json, require_dir
from isus.datasets.labels import CITYSCAPES_LABELS, IDD_LABELS, IDD_LEVEL3_CATEGORIES
from isus.errors import DatasetError
from isus.types import Category, Panoptic

__all__ = ["Cityscapes", "IDD", "rasterize_polygons"]

SOURCES = ("auto", "instances", "panoptic", "polygons", "labels")
INSTANCE_MODES = ("I;16", "I;16B", "I")
LABEL_MODES = ("L", "P", "I;16", "I")


@dataclass(frozen=True)
class LabelScheme:
    """How one Cityscapes-like dataset encodes classes in its files."""

    categories: tuple[Category, ...]
    polygon_labels: dict[str, tuple[int, bool]]  # polygon label -> (class value, has instances)
    background: int  # class value of pixels no polygon covers
    id_offset: int  # segment id = pixel value + id_offset (keeps value 0 usable as a class)
    instance_suffix: str
    label_suffix: str
    panoptic_json: str  # relative to gtFine/, {split} substituted
    panoptic_dir: str

    def frame_key(self, image: Path, split_dir: Path) -> str:
        raise NotImplementedError


def _cityscapes_scheme() -> LabelScheme:
    cats = tuple(Category(l.id, l.name, l.has_instances, l.color) for l in CITYSCAPES_LABELS
                 if not l.ignore_in_eval)
    return LabelScheme(
        categories=cats,
        polygon_labels={l.name: (l.id, l.has_instances) for l in CITYSCAPES_LABELS},
        background=0, id_offset=0,
        instance_suffix="_gtFine_instanceIds.png", label_suffix="_gtFine_labelIds.png",
        panoptic_json="cityscapes_panoptic_{split}.json", panoptic_dir="cityscapes_panoptic_{split}",
    )


def _idd_scheme() -> LabelScheme:
    cats = {i: Category(i, n, t, c) for i, n, t, c in IDD_LEVEL3_CATEGORIES}
    return LabelScheme(
        categories=tuple(cats.values()),
        polygon_labels={l.name: (l.level3_id, l.has_instances) for l in IDD_LABELS},
        background=255, id_offset=1,
        instance_suffix="_gtFine_instancelevel3Ids.png", label_suffix="_gtFine_labellevel3Ids.png",
        panoptic_json="{split}_panoptic.json", panoptic_dir="{split}_panoptic",
    )


def rasterize_polygons(objects: list[Any], height: int, width: int, scheme: LabelScheme, path: Path) -> np.ndarray:
    """Rasterise a ``*_gtFine_polygons.json`` object list into a packed instance map.

    Follows the official converters (cityscapesScripts ``json2instanceImg``, AutoNUE's copy):
    objects are drawn in list order with PIL's polygon fill, later ones over earlier ones;
    ``deleted`` objects and polygons of fewer than two points are skipped (a polygon that is not
    a list of finite ``[x, y]`` pairs is a :class:`DatasetError` naming the object); a label ending in
    ``group`` is the crowd form of its base label; thing instances get ``class*1000 + k`` with
    ``k`` counted from 0 per class value.
    """
    img = Image.new("I", (width, height), scheme.background)
    draw = ImageDraw.Draw(img)
    counters: dict[int, int] = {}
    for k, obj in enumerate(objects):
        if not isinstance(obj, dict) or "label" not in obj or "polygon" not in obj:
            raise DatasetError(f"objects[{k}] needs 'label' and 'polygon'", path)
        if obj.get("deleted", 0):
            continue
        points = _polygon_points(obj["polygon"], k, path)
        if len(points) < 2:
            continue
        label, group = obj["label"], False
        if not isinstance(label, str):
            raise DatasetError(f"objects[{k}] has label {label!r}; expected a string", path)
        if label not in scheme.polygon_labels and label.endswith("group"):
            label, group = label[: -len("group")], True
        if label not in scheme.polygon_labels:
            raise DatasetError(f"objects[{k}] has unknown label {obj['label']!r}", path)
        value, has_instances = scheme.polygon_labels[label]
        if value < 0:
            continue
        if has_instances and not group and value != scheme.background:
            n = counters.get(value, 0)
            counters[value] = n + 1
            value = value * 1000 + n
        draw.polygon(points, fill=value)
    return np.asarray(img, dtype=np.int32)


def _polygon_points(poly: object, k: int, path: Path) -> list[tuple[float, float]]:
    """``objects[k]["polygon"]`` as ``(x, y)`` floats; anything but a list of finite ``[x, y]``
    number pairs is a :class:`DatasetError` (a string such as ``"x"`` would otherwise be drawn
    as nothing, or skipped as "fewer than two points", and the object silently lost)."""
    if not isinstance(poly, list):
        raise DatasetError(f"objects[{k}] polygon is {type(poly).__name__} {poly!r:.40}; expected a list of "
                           "[x, y] pairs", path)
    points = []
    for j, pt in enumerate(poly):
        if (not isinstance(pt, (list, tuple)) or len(pt) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in pt)):
            raise DatasetError(f"objects[{k}] polygon point {j} is {pt!r:.40}; expected an [x, y] pair of "
                               "numbers", path)
        x, y = float(pt[0]), float(pt[1])
        if not (math.isfinite(x) and math.isfinite(y)):
            raise DatasetError(f"objects[{k}] polygon point {j} is {pt!r}; expected finite coordinates", path)
        points.append((x, y))
    return points


class _CityscapesLike(PanopticDataset):
    scheme: LabelScheme
    split_layout = (SplitLayout("leftImg8bit/*", r"^leftImg8bit/([^/]+)$"),)

    def __init__(
        self,
        root: Path,
        split: str,
        *,
        source: str = "auto",
        images_dir: str | Path | None = None,
        annotations_dir: str | Path | None = None,
        panoptic_json: str | Path | None = None,
        panoptic_dir: str | Path | None = None,
    ) -> None:
        root = require_dir(Path(root), f"{self.name} root")
        if source not in SOURCES:
            raise ValueError(f"open_dataset({self.name!r}, source=) expects one of {SOURCES}; got {source!r}")
        s = self.scheme
        img_root = require_dir(root / (images_dir or "leftImg8bit") / split, f"{self.name} image split directory")
        gt_root = root / (annotations_dir or "gtFine")
        pan_json = root / panoptic_json if panoptic_json else gt_root / s.panoptic_json.format(split=split)
        pan_dir = root / panoptic_dir if panoptic_dir else gt_root / s.panoptic_dir.format(split=split)

        images = sorted(p for p in img_root.glob("*/*_leftImg8bit.*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
        if not images:
            raise DatasetError("no *_leftImg8bit.png/.jpg images found in its sub-folders", img_root)
        frames = []  # (key, image path, annotation stem)
        for p in images:
            stem = p.name[: -len("_leftImg8bit" + p.suffix)]
            frames.append((self._frame_key(p.parent.name, stem), p, gt_root / split / p.parent.name / stem))

        if source == "auto":
            first = frames[0][2]
            if Path(f"{first}{s.instance_suffix}").exists():
                source = "instances"
            elif pan_json.exists():
                source = "panoptic"
            elif Path(f"{first}_gtFine_polygons.json").exists():
                source = "polygons"
            elif Path(f"{first}{s.label_suffix}").exists():
                source = "labels"
            else:
                raise DatasetError(f"no annotations found for {frames[0][1].name}: expected "
                                   f"{Path(f'{first}{s.instance_suffix}').name}, {pan_json.name}, "
                                   "a *_gtFine_polygons.json or a label PNG", gt_root / split)
        cats = s.categories
        if source == "panoptic":
            require_dir(pan_dir, f"{self.name} panoptic PNG directory")
            data = load_panoptic_json(pan_json)
            if "categories" in data:
                cats = tuple(categories_from_json(data["categories"], pan_json))
            records = match_records(((key, p) for key, p, _ in frames), data, pan_dir, pan_json, img_root)
            self._json_path = pan_json
        else:
            suffix = {"instances": s.instance_suffix, "labels": s.label_suffix,
                      "polygons": "_gtFine_polygons.json"}[source]
            records = [Record(key, p, Path(f"{stem}{suffix}")) for key, p, stem in frames]
            image_suffix = images[0].suffix
            check_pairs(records, list((gt_root / split).glob(f"*/*{suffix}")),
                        lambda ann: img_root / ann.parent.name / f"{ann.name[: -len(suffix)]}_leftImg8bit{image_suffix}")
        super().__init__(root, split, cats, records, source=source, has_instances=source != "labels")
        ids = np.array([c.id for c in self.categories], dtype=np.int64)
        self._is_category = np.zeros(max(256, ids.max(initial=-1) + 1), dtype=bool)
        self._is_category[ids] = True
        self._is_thing = np.zeros_like(self._is_category)
        self._is_thing[[c.id for c in self.categories if c.isthing]] = True

    def _frame_key(self, folder: str, stem: str) -> str:
        return stem

    def _decode_packed(self, present: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        cls = np.where(present >= 1000, present // 1000, present).astype(np.int64)
        valid = cls < len(self._is_category)
        is_cat = np.zeros(len(cls), dtype=bool)
        is_cat[valid] = self._is_category[cls[valid]]
        seg = np.where(is_cat, present.astype(np.int64) + self.scheme.id_offset, 0)
        crowd = np.zeros(len(cls), dtype=bool)
        crowd[valid] = self._is_thing[cls[valid]] & (present[valid] < 1000)
        return seg, cls, crowd

    def _load_panoptic(self, r: Record) -> Panoptic:
        if self.source == "panoptic":
            png, segments_info = r.annotation
            return panoptic_from_rgb(self._read_panoptic_png(r, png, "panoptic PNG"), segments_info, self, png, self._json_path)
        if self.source == "polygons":
            data = read_json(r.annotation, "polygons JSON")
            try:
                h, w, objects = data["imgHeight"], data["imgWidth"], data["objects"]
                if not (isinstance(objects, list) and all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                                                          for v in (h, w))):
                    raise TypeError
            except (KeyError, TypeError):
                raise DatasetError("polygons JSON needs positive integers 'imgHeight', 'imgWidth' and an "
                                   "'objects' list", r.annotation) from None
            if r.height is None or r.width is None:  # the image's size bounds what is rasterised
                r.height, r.width = image_size(r.image_path)
            self._check_size(r, (h, w), r.annotation)
            values = rasterize_polygons(objects, h, w, self.scheme, r.annotation)
        else:
            values = self._read_png(r, r.annotation, INSTANCE_MODES, f"{self.name} 16-bit instance PNG")
        return panoptic_from_packed(values, self._decode_packed, self, r.annotation)

    def _load_semantic(self, r: Record) -> np.ndarray:
        lab = self._read_png(r, r.annotation, LABEL_MODES, f"{self.name} label PNG").astype(np.int64)
        lab = np.clip(lab, 0, len(self._is_category) - 1)
        return np.where(self._is_category[lab], lab, -1).astype(np.int32)


@register_dataset
class Cityscapes(_CityscapesLike):
    """Cityscapes (gtFine) in its release layout.

    Reads ``leftImg8bit/{split}/{city}/*_leftImg8bit.png`` with, by ``source``:
    ``"instances"`` (``*_gtFine_instanceIds.png``: ``labelId*1000 + k`` for thing instances,
    the plain labelId elsewhere), ``"panoptic"`` (cityscapesScripts' ``cityscapes_panoptic_{split}.json``
    and PNG folder), ``"polygons"`` (``*_gtFine_polygons.json``, rasterised like the official
    tooling) or ``"labels"`` (``*_gtFine_labelIds.png``, semantic-only). ``"auto"`` takes the
    first present in that order.

    Categories are the 19 evaluated classes, with their labelIds as ids (ordered by labelId,
    which is also trainId order). Pixels of other labels are void. Segment ids equal the
    instanceIds values (as in the panoptic format); thing pixels without an instance
    (``cargroup`` etc.) form one crowd segment per class.
    """

    name = "cityscapes"
    sampler_preset = SamplerPreset(crop_size=(512, 512), shortest_side=1024)  # the paper's App. D
    scheme = _cityscapes_scheme()

    def __init__(self, root: Path, split: str = "train", **kwargs: Any) -> None:
        super().__init__(root, split, **kwargs)


@register_dataset
class IDD(_CityscapesLike):
    """India Driving Dataset (IDD segmentation) at level 3 (26 classes, ids 0..25).

    Layout as Cityscapes with ``{drive_no}`` folders: ``leftImg8bit/{split}/{drive}/{img}_leftImg8bit.png``
    (or ``.jpg``), ``gtFine/{split}/{drive}/{img}_gtFine_instancelevel3Ids.png`` (made by the
    AutoNUE tooling: ``level3Id*1000 + k``, 255 = void), ``*_gtFine_polygons.json`` (float
    coordinates; ``deleted`` objects skipped), or the panoptic ``gtFine/{split}_panoptic.json``
    whose ``image_id`` is ``{drive}_{img}``. Segment ids are the pixel value plus one, since
    level3Id 0 (road) is a real class.
    """

    name = "idd"
    sampler_preset = SamplerPreset(crop_size=(512, 512), shortest_side=1080)  # the paper's App. D
    scheme = _idd_scheme()

    def __init__(self, root: Path, split: str = "train", **kwargs: Any) -> None:
        super().__init__(root, split, **kwargs)

    def _frame_key(self, folder: str, stem: str) -> str:
        return f"{folder}_{stem}"
