"""COCO-panoptic-style JSON (COCO, MVD panoptic, Cityscapes-panoptic, IDD panoptic)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, cast

from isus.datasets.base import Record
from isus.datasets.io import is_id, json_flag, json_int, read_json, relative_name
from isus.errors import DatasetError
from isus.types import Category


def load_panoptic_json(path: Path) -> dict[str, Any]:
    """Read and shape-check a panoptic JSON. ``images``/``categories`` may be absent (trimmed
    copies exist), ``annotations`` may not. Every annotation's ``file_name`` must be a relative
    name without ``..`` (:func:`~isus.datasets.io.relative_name`)."""
    data = read_json(path, "panoptic JSON")
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise DatasetError("panoptic JSON has no 'annotations' list", path)
    for k, a in enumerate(data["annotations"]):
        if (not isinstance(a, dict) or not isinstance(a.get("file_name"), str)
                or not isinstance(a.get("segments_info"), list)):
            raise DatasetError(
                f"annotations[{k}] needs 'image_id', 'file_name' and a 'segments_info' list", path
            )
        if "image_id" not in a:
            raise DatasetError(f"annotations[{k}] ({a['file_name']}) has no 'image_id'", path)
        if not is_id(a["image_id"]):
            raise DatasetError(f"annotations[{k}] ({a['file_name']}) has image_id {a['image_id']!r:.40}; "
                               "expected an integer or a string", path)
        relative_name(a["file_name"], path, f"annotations[{k}].file_name")
    for key in ("images", "categories"):
        if key in data and not isinstance(data[key], list):
            raise DatasetError(f"'{key}' must be a list", path)
    return data



#: Category ids must fit here (readers index tables by category id).
MAX_CATEGORY_ID = 65535


def categories_from_json(items: list[Any], path: Path, name_key: str = "name") -> list[Category]:
    """Categories from a panoptic JSON's ``categories`` list."""
    cats = []
    for k, c in enumerate(items):
        try:
            cats.append(
                Category(
                    id=json_int(c["id"]),
                    name=str(c[name_key]),
                    isthing=json_flag(c["isthing"]),
                    # Category checks the length
                    color=cast("tuple[int, int, int]", tuple(int(v) for v in c.get("color", (0, 0, 0)))),
                )
            )
        except (KeyError, TypeError, ValueError, OverflowError, AttributeError) as e:
            raise DatasetError(f"categories[{k}] lacks or mistypes a field ({e!r}); expected "
                               "'id', 'name', 'isthing', 'color'", path) from None
        if not 0 <= cats[-1].id <= MAX_CATEGORY_ID:
            raise DatasetError(f"categories[{k}] has id {cats[-1].id}; expected 0..{MAX_CATEGORY_ID}", path)
        if any(c.id == cats[-1].id for c in cats[:-1]):
            raise DatasetError(f"categories[{k}] has id {cats[-1].id}, which an earlier category has too", path)
    return cats


def annotations_by_image(data: dict[str, Any], path: Path) -> dict[int | str, dict[str, Any]]:
    """``image_id -> annotation``; a duplicated image id is an error."""
    out: dict[int | str, dict[str, Any]] = {}
    for a in data["annotations"]:
        if a["image_id"] in out:
            raise DatasetError(f"image_id {a['image_id']!r} has two annotations", path)
        out[a["image_id"]] = a
    return out


def match_records(frames: Iterable[tuple[int | str, Path]], data: dict[str, Any], pan_dir: Path, json_path: Path,
                  where: Path) -> list[Record]:
    """One record per image ``(key, path)`` in ``frames``, with its annotation found by
    ``image_id == key``; an image without annotation, or an annotation without image, is an error."""
    by_image = annotations_by_image(data, json_path)
    records = []
    for key, path in frames:
        a = by_image.pop(key, None)
        if a is None:
            raise DatasetError(f"image {path.name} has no annotation (image_id {key!r})", json_path)
        records.append(Record(key, path, (pan_dir / a["file_name"], a["segments_info"])))
    if by_image:
        raise DatasetError(f"annotations for images not in {where}: {list(by_image)[:3]}", json_path)
    return records
