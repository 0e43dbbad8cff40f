"""Generic COCO panoptic reader (RGB-encoded segment PNGs + one JSON)."""
from __future__ import annotations

from pathlib import Path

from isus.datasets._panoptic_json import annotations_by_image, categories_from_json, load_panoptic_json
from isus.datasets.base import PanopticDataset, Record, SamplerPreset, SplitLayout, panoptic_from_rgb, register_dataset
from isus.datasets.io import is_id, read_json, relative_name, require_dir
from isus.errors import DatasetError
from isus.types import Panoptic

__all__ = ["CocoPanoptic"]


@register_dataset
class CocoPanoptic(PanopticDataset):
    """COCO panoptic format.

    Default layout (``split="val"``; the default split is ``"train"``)::

        root/val2017/*.jpg
        root/annotations/panoptic_val2017.json
        root/annotations/panoptic_val2017/*.png

    Parameters
    ----------
    root
        Dataset root.
    split
        ``"train"`` or ``"val"`` (used only to derive the default paths).
    annotations, panoptic_dir, images_dir
        Override the default paths (relative paths are taken from ``root``).
    categories
        A JSON with the category list, for annotation files trimmed to ``annotations`` only
        (e.g. panopticapi's ``panoptic_coco_categories.json``).
    """

    name = "coco"
    aliases = ("coco_panoptic",)
    split_layout = (SplitLayout("*2017", r"^(.+)2017$"),
                    SplitLayout("annotations/panoptic_*2017.json", r"^annotations/panoptic_(.+)2017\.json$"))
    # Not in the paper: s0 = 800 is the usual COCO training size, with 640 crops.
    sampler_preset = SamplerPreset(crop_size=(640, 640), shortest_side=800)

    def __init__(
        self,
        root: Path,
        split: str = "train",
        *,
        annotations: str | Path | None = None,
        panoptic_dir: str | Path | None = None,
        images_dir: str | Path | None = None,
        categories: str | Path | None = None,
    ) -> None:
        root = require_dir(Path(root), "COCO root")
        ann_path = root / (annotations or f"annotations/panoptic_{split}2017.json")
        pan_dir = root / panoptic_dir if panoptic_dir is not None else ann_path.with_suffix("")
        img_dir = require_dir(root / (images_dir or f"{split}2017"), "COCO images directory")
        data = load_panoptic_json(ann_path)  # first: a wrong --annotations is named, not the PNG folder after it
        require_dir(pan_dir, "COCO panoptic PNG directory")
        if categories is not None:
            cpath = root / categories
            raw = read_json(cpath, "category list")
            items = raw if isinstance(raw, list) else raw.get("categories") if isinstance(raw, dict) else None
            if not isinstance(items, list):
                raise DatasetError("category list is neither a list nor a dict with a 'categories' list", cpath)
            cats = categories_from_json(items, cpath)
        elif "categories" in data:
            cats = categories_from_json(data["categories"], ann_path)
        else:
            raise DatasetError("panoptic JSON has no 'categories'; pass categories=PATH to a JSON "
                               "with the category list", ann_path)
        by_image = annotations_by_image(data, ann_path)
        records = []
        if "images" in data:
            for k, im in enumerate(data["images"]):
                try:
                    image_id, file_name = im["id"], im["file_name"]
                except (KeyError, TypeError):
                    raise DatasetError(f"images[{k}] needs 'id' and 'file_name'", ann_path) from None
                if not is_id(image_id) or not isinstance(file_name, str):
                    raise DatasetError(f"images[{k}] has id {image_id!r:.40} and file_name {file_name!r:.40}; "
                                       "expected an integer or string id and a string file name", ann_path)
                relative_name(file_name, ann_path, f"images[{k}].file_name")
                size = im.get("height"), im.get("width")
                if size != (None, None) and not all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                                                    for v in size):
                    raise DatasetError(f"images[{k}] ({file_name}) has height {size[0]!r:.20} and width "
                                       f"{size[1]!r:.20}; expected positive integers (or neither)", ann_path)
                if image_id not in by_image:
                    raise DatasetError(f"image {image_id!r} ({file_name}) has no annotation", ann_path)
                a = by_image.pop(image_id)
                records.append(Record(image_id, img_dir / file_name, (pan_dir / a["file_name"], a["segments_info"]),
                                      im.get("height"), im.get("width")))
            if not records:
                raise DatasetError("panoptic JSON lists no images", ann_path)
            if by_image:
                extra = list(by_image)[:3]
                raise DatasetError(f"annotations for image ids {extra} that 'images' does not list", ann_path)
        else:
            for a in data["annotations"]:
                stem = Path(a["file_name"]).stem
                records.append(Record(a["image_id"], img_dir / f"{stem}.jpg", (pan_dir / a["file_name"], a["segments_info"])))
        _check_images_exist(records, img_dir, ann_path)
        self._json_path = ann_path
        super().__init__(root, split, cats, records, source="panoptic")

    def _load_panoptic(self, r: Record) -> Panoptic:
        png, segments_info = r.annotation
        rgb = self._read_panoptic_png(r, png, "panoptic PNG")
        return panoptic_from_rgb(rgb, segments_info, self, png, self._json_path)


def _check_images_exist(records: list[Record], img_dir: Path, ann_path: Path) -> None:
    """Every image the JSON lists is on disk (one directory listing; a stat only for file names
    with a sub-folder), so a deleted image is reported when the dataset is opened."""
    listed = {p.name for p in img_dir.iterdir()}
    for r in records:
        there = r.image_path.name in listed if r.image_path.parent == img_dir else r.image_path.is_file()
        if not there:
            raise DatasetError(f"image file not found (image {r.image_id!r} of {ann_path.name}; was it deleted? "
                               "nothing is skipped silently)", r.image_path)

