"""Mapillary Vistas (MVD) reader: v1.2 16-bit instance PNGs, v2.0 panoptic, or semantic labels."""
from __future__ import annotations

from pathlib import Path
from typing import cast

import numpy as np

from isus.datasets._panoptic_json import MAX_CATEGORY_ID, load_panoptic_json, match_records
from isus.datasets.base import (PanopticDataset, Record, SamplerPreset, SplitLayout, check_pairs, panoptic_from_packed,
                                panoptic_from_rgb, register_dataset)
from isus.datasets.io import json_flag, read_json, require_dir
from isus.errors import DatasetError
from isus.types import Category, Panoptic

__all__ = ["MapillaryVistas", "mvd_categories"]

VERSIONS = ("v1.2", "v2.0")
SOURCES = ("auto", "instances", "panoptic", "labels")
PANOPTIC_JSON = {"v1.2": "panoptic_2018.json", "v2.0": "panoptic_2020.json"}


def mvd_categories(config: object, path: Path) -> tuple[list[Category], int | None]:
    """Categories from an MVD ``config*.json`` and the index of its void label.

    The label id is the position in ``labels``; ``void--unlabeled`` (if present) is void, not
    a category. Colours come from the config, never from a PNG palette.
    """
    labels = config.get("labels") if isinstance(config, dict) else None
    if not isinstance(labels, list) or not labels:
        raise DatasetError("MVD config has no 'labels' list", path)
    if len(labels) > MAX_CATEGORY_ID + 1:
        raise DatasetError(f"MVD config has {len(labels)} labels; label ids (their positions) must be "
                           f"0..{MAX_CATEGORY_ID}", path)
    cats, void = [], None
    for k, lab in enumerate(labels):
        try:
            name = str(lab["name"])
            color = cast("tuple[int, int, int]", tuple(int(v) for v in lab["color"]))  # Category checks the length
            cat = Category(k, name, json_flag(lab["instances"]), color,
                           json_flag(lab.get("evaluate", True)))
        except (KeyError, TypeError, ValueError, OverflowError) as e:
            raise DatasetError(f"labels[{k}] lacks or mistypes a field ({e!r}); expected "
                               "'name', 'instances', 'color'", path) from None
        if name.endswith("--unlabeled") or name == "unlabeled":
            void = k
        else:
            cats.append(cat)
    return cats, void


@register_dataset
class MapillaryVistas(PanopticDataset):
    """Mapillary Vistas in its release layout.

    Parameters
    ----------
    root
        The release root (holding ``config_v1.2.json``, ``config_v2.0.json`` and the split
        folders), or a v1.0/1.1 flat release (``config.json``, ``{split}/instances``).
    split
        ``"training"``, ``"validation"`` (or any folder name under ``root``).
    version
        ``"v1.2"`` (default; 66 labels, as in the paper) or ``"v2.0"`` (124 labels).
    source
        ``"auto"``: v1.2 reads ``instances/`` (16-bit ``label*256 + instance``), else the
        panoptic PNGs; v2.0 the reverse; with neither, ``labels/`` opens semantic-only.
        Force one with ``"instances"``, ``"panoptic"`` or ``"labels"``.
    config, images_dir, instances_dir, panoptic_dir, panoptic_json, labels_dir
        Override the default paths (relative paths are taken from ``root``).

    Notes
    -----
    Segment ids from ``instances/`` are the pixel value plus one (value 0 is instance 0 of
    label 0, not void); the void label's pixels are 0. Segments of labels with
    ``evaluate: false`` (the ``*-group`` and ``ambiguous`` labels of v2.0) are crowd.
    """

    name = "mvd"
    aliases = ("mapillary", "vistas")
    split_layout = (SplitLayout("*/images", r"^([^/]+)/images$"),)
    # The paper's App. D crop size; its text loses the s0 line: 2048 is our choice.
    sampler_preset = SamplerPreset(crop_size=(1024, 1024), shortest_side=2048)
    # Its 16-bit instance PNGs are the costliest decode of a sample (docs/index.md, the annotation cache).
    cache_annotations_by_default = True

    def __init__(
        self,
        root: Path,
        split: str = "training",
        *,
        version: str = "v1.2",
        source: str = "auto",
        config: str | Path | None = None,
        images_dir: str | Path | None = None,
        instances_dir: str | Path | None = None,
        panoptic_dir: str | Path | None = None,
        panoptic_json: str | Path | None = None,
        labels_dir: str | Path | None = None,
    ) -> None:
        root = require_dir(Path(root), "MVD root")
        if version not in VERSIONS:
            raise ValueError(f"open_dataset('mvd', version=) expects one of {VERSIONS}; got {version!r}")
        if source not in SOURCES:
            raise ValueError(f"open_dataset('mvd', source=) expects one of {SOURCES}; got {source!r}")
        # The v1.0/1.1 releases keep annotations directly under the split folder.
        flat = not (root / split / version).is_dir() and (root / split).is_dir()
        ann_root = root / split if flat else root / split / version

        def pick(override: str | Path | None, default: Path) -> Path:
            return root / override if override is not None else default

        default_cfg = root / f"config_{version}.json"
        if flat and not default_cfg.exists():
            default_cfg = root / "config.json"
        cfg_path = pick(config, default_cfg)
        img_dir = require_dir(pick(images_dir, root / split / "images"), "MVD images directory")
        inst_dir = pick(instances_dir, ann_root / "instances")
        pan_dir = pick(panoptic_dir, ann_root / "panoptic")
        pan_json = pick(panoptic_json, pan_dir / PANOPTIC_JSON[version])
        lab_dir = pick(labels_dir, ann_root / "labels")

        cats, self.void_label = mvd_categories(read_json(cfg_path, "MVD label config"), cfg_path)
        self.version = version
        self.config_path = cfg_path
        self._num_labels = len(cats) + (self.void_label is not None)

        if source == "auto":
            order = ("instances", "panoptic") if version == "v1.2" else ("panoptic", "instances")
            found = [s for s in order if (inst_dir if s == "instances" else pan_json).exists()]
            source = found[0] if found else "labels"
        images = sorted(p for p in img_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        if not images:
            raise DatasetError("no images (*.jpg) found", img_dir)
        self._images_by_key = {p.stem: p for p in images}

        if source == "panoptic":
            require_dir(pan_dir, "MVD panoptic PNG directory")
            data = load_panoptic_json(pan_json)
            self._json_path = pan_json
            records = match_records(self._images_by_key.items(), data, pan_dir, pan_json, img_dir)
        else:
            ann_dir = require_dir(inst_dir if source == "instances" else lab_dir, f"MVD {source} directory")
            records = [Record(key, p, ann_dir / f"{key}.png") for key, p in self._images_by_key.items()]
            check_pairs(records, [p for p in ann_dir.iterdir() if p.suffix.lower() == ".png"],
                        lambda ann: img_dir / f"{ann.stem}.jpg")
        super().__init__(root, split, cats, records, source=source, has_instances=source != "labels")

    def _load_panoptic(self, r: Record) -> Panoptic:
        if self.source == "panoptic":
            png, segments_info = r.annotation
            return panoptic_from_rgb(self._read_panoptic_png(r, png, "MVD panoptic PNG"), segments_info, self, png, self._json_path)
        values = self._read_png(r, r.annotation, ("I;16", "I;16B", "I"), "MVD 16-bit instance PNG")
        crowd_of_label = np.array([not self._by_id[k].evaluate if k in self._by_id else False
                                   for k in range(256)])

        def decode(present: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            labels = present >> 8
            if labels.max(initial=0) >= self._num_labels:
                bad = int(labels.max())
                raise DatasetError(f"pixel value {int(present[labels.argmax()])} encodes label {bad}, but the "
                                   f"config {self.config_path.name} has {self._num_labels} labels", r.annotation)
            seg = np.where(labels == self.void_label, 0, present.astype(np.int64) + 1)
            return seg, labels, crowd_of_label[labels]

        return panoptic_from_packed(values, decode, self, r.annotation)

    def _load_semantic(self, r: Record) -> np.ndarray:
        lab = self._read_png(r, r.annotation, ("P", "L"), "MVD label PNG").astype(np.int32)
        if lab.size and lab.max() >= self._num_labels:
            raise DatasetError(f"label value {int(lab.max())} is not in the config {self.config_path.name} "
                               f"({self._num_labels} labels)", r.annotation)
        if self.void_label is not None:
            lab[lab == self.void_label] = -1
        return lab
