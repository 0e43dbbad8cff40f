"""The files the field already writes: COCO panoptic predictions (one JSON with
``annotations[].segments_info`` plus one RGB PNG per image, as panopticapi and detectron2 write
them) and COCO detection results (``[{image_id, category_id, bbox, score, segmentation}]``)."""
from __future__ import annotations

import json
import math
import os
import re
import stat
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from isus import kernels
from isus.fsio import atomic_file, remove_stale_temps
from isus.datasets.io import id_to_rgb, read_panoptic_png
from isus.errors import IsusError
from isus.eval.coco import Detections
from isus.segments import segment_geometry
from isus.types import Category, Panoptic, make_segments

__all__ = ["PanopticPredictions", "PanopticPredictionWriter", "read_instances", "write_instances",
           "PredictionFileError", "write_json"]


class PredictionFileError(IsusError):
    """A prediction file is missing, malformed or does not match the ground truth."""

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.path = None if path is None else Path(path)
        super().__init__(f"{path}: {message}" if path is not None else message)


def _key(image_id: Any) -> str:
    # JSON writers differ on int vs str ids (COCO: int, MVD/Cityscapes: the file stem)
    return str(image_id)


def _read_json(path: Path, what: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise PredictionFileError(f"{what} not found", path) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PredictionFileError(f"{what} is not valid JSON ({e})", path) from None
    except RecursionError:
        raise PredictionFileError(f"{what} is nested too deeply to parse", path) from None


def _file_name_problem(name: Any) -> str | None:
    """Why a ``file_name`` from a predictions JSON could name a file outside the PNG folder (None
    when it cannot): it must be a non-empty relative path without ``..`` components, in the
    POSIX or the Windows spelling. The name is checked, not the resolved path, so a symlinked
    folder inside the PNG folder stays allowed."""
    if not isinstance(name, str) or not name or "\x00" in name:
        return "must be a non-empty string"
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "must be relative to the predictions folder, not absolute"
    if ".." in re.split(r"[/\\]", name):
        return "must not contain '..' (it would name a file outside the predictions folder)"
    return None


class PanopticPredictions:
    """Panoptic predictions in the COCO panoptic format.

    Parameters
    ----------
    path
        The predictions JSON, or a directory holding it: its only ``*.json``, or the only one with
        a folder of the same name beside it.
    png_dir
        Folder of the PNGs; default: the folder named like the JSON without ``.json`` if it
        exists (panopticapi's convention), else the JSON's own folder.
    """

    def __init__(self, path: str | Path, png_dir: str | Path | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            found = sorted(path.glob("*.json"))
            if len(found) > 1:  # e.g. beside instances.json: the one with its PNG folder next to it
                found = [p for p in found if p.with_suffix("").is_dir()] or found
            if len(found) != 1:
                raise PredictionFileError(
                    f"expected exactly one predictions JSON in the folder; found {len(found)}"
                    + (f" ({', '.join(p.name for p in found[:4])})" if found else "")
                    + "; pass the JSON file itself", path)
            path = found[0]
        self.json_path = path
        data = _read_json(path, "predictions JSON")
        anns = data.get("annotations") if isinstance(data, dict) else None
        if not isinstance(anns, list):
            raise PredictionFileError("predictions JSON has no 'annotations' list (COCO panoptic format)", path)
        if png_dir is None:
            png_dir = path.with_suffix("") if path.with_suffix("").is_dir() else path.parent
        self.png_dir = Path(png_dir)
        self._by_id: dict[str, dict[str, Any]] = {}
        for k, a in enumerate(anns):
            if not isinstance(a, dict) or "image_id" not in a or "file_name" not in a or \
                    not isinstance(a.get("segments_info"), list):
                raise PredictionFileError(f"annotations[{k}] needs 'image_id', 'file_name' and a 'segments_info' "
                                          "list", path)
            problem = _file_name_problem(a["file_name"])
            if problem is not None:
                raise PredictionFileError(f"annotations[{k}] (image_id {a['image_id']!r}): file_name "
                                          f"{a['file_name']!r} {problem}", path)
            key = _key(a["image_id"])
            if key in self._by_id:
                raise PredictionFileError(f"image_id {a['image_id']!r} has two annotations", path)
            self._by_id[key] = a

    def __len__(self) -> int:
        return len(self._by_id)

    def image_ids(self) -> list[str]:
        """The image ids (as strings) that have a prediction."""
        return list(self._by_id)

    def __contains__(self, image_id: Any) -> bool:
        return _key(image_id) in self._by_id

    def load(self, image_id: Any) -> Panoptic:
        """The prediction of ``image_id`` as a :class:`~isus.Panoptic`.

        Raises :class:`PredictionFileError` naming the file when the PNG is missing or
        unreadable, holds an id that ``segments_info`` does not list, or the JSON is malformed.
        Segments listed but absent from the PNG are dropped (they cannot affect any metric).
        """
        a = self._by_id.get(_key(image_id))
        if a is None:
            raise PredictionFileError(f"no prediction for image {image_id!r}", self.json_path)
        png = self.png_dir / a["file_name"]
        try:
            mode = os.stat(png).st_mode  # follows symlinks: a symlinked folder or file stays allowed
        except FileNotFoundError:
            raise PredictionFileError(f"prediction PNG of image {image_id!r} not found", png) from None
        except OSError as e:
            raise PredictionFileError(f"prediction PNG of image {image_id!r} cannot be read ({e.strerror})",
                                      png) from None
        if not stat.S_ISREG(mode):  # a FIFO would block the reader forever, a device never end
            raise PredictionFileError(f"prediction PNG of image {image_id!r} is not a regular file", png)
        try:
            ids = read_panoptic_png(png, "prediction PNG")
        except IsusError as e:
            raise PredictionFileError(str(e)) from None
        try:
            info = a["segments_info"]
            seg_ids = np.array([int(s["id"]) for s in info], dtype=np.int64)
            cat_ids = np.array([int(s["category_id"]) for s in info], dtype=np.int64)
        except (KeyError, TypeError, ValueError, OverflowError) as e:
            raise PredictionFileError(f"segments_info of image {image_id!r} lacks or mistypes a field ({e!r}); each "
                                      "segment needs integer 'id' and 'category_id'", self.json_path) from None
        if len(np.unique(seg_ids)) != len(seg_ids):
            raise PredictionFileError(f"segments_info of image {image_id!r} lists a segment id twice", self.json_path)
        if (seg_ids == 0).any():
            raise PredictionFileError(f"segments_info of image {image_id!r} uses id 0, which means void",
                                      self.json_path)
        order = np.argsort(seg_ids)
        seg_ids, cat_ids = seg_ids[order], cat_ids[order]
        areas, unknown, _ = kernels.segment_areas(ids, seg_ids)
        if unknown:
            bad = np.unique(ids[(ids != 0) & ~np.isin(ids, seg_ids)])  # error path only
            raise PredictionFileError(f"the PNG holds segment ids {bad[:5].tolist()} that segments_info in "
                                      f"{self.json_path.name} does not list", png)
        keep = areas > 0
        return Panoptic(ids, make_segments(seg_ids[keep], cat_ids[keep], np.zeros(int(keep.sum()), bool)))


class PanopticPredictionWriter:
    """Writes panoptic predictions in the COCO panoptic format, as panopticapi reads them.

    PNGs go to ``out / "panoptic"`` as they come; :meth:`close` writes ``out / "panoptic.json"``
    atomically (a crash leaves no half-written JSON).

    Examples
    --------
    >>> with PanopticPredictionWriter("preds") as w:              # doctest: +SKIP
    ...     w.add(image_id, panoptic)
    """

    def __init__(self, out: str | Path, name: str = "panoptic") -> None:
        self.out = Path(out)
        self.json_path = self.out / f"{name}.json"
        self.png_dir = self.out / name
        self.png_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(self.png_dir, r"^\..*\.tmp-(\d+)(?:\.png)?$")  # left by a killed writer
        self._annotations: list[dict[str, Any]] = []
        self._seen: set[str] = set()

    def add(self, image_id: Any, pred: Panoptic, file_name: str | None = None) -> dict[str, Any]:
        """Write the PNG of one image's prediction and return its JSON record (``image_id``,
        ``file_name``, ``segments_info``). Segment ids must be < 2**24, the RGB encoding's range."""
        import cv2

        key = _key(image_id)
        if key in self._seen:
            raise ValueError(f"PanopticPredictionWriter.add: image {image_id!r} was added already")
        ids = pred.ids
        if ids.size and (ids.max() >= 1 << 24 or ids.min() < 0):
            raise ValueError("PanopticPredictionWriter.add: segment ids must lie in [0, 2**24)")
        file_name = file_name or f"{key}.png"
        rgb = id_to_rgb(ids)
        path = self.png_dir / file_name
        ok, png = cv2.imencode(".png", rgb[..., ::-1])
        if not ok:
            raise IsusError(f"{path}: could not encode the prediction PNG")
        with atomic_file(path, clean=False) as f:  # __init__ cleaned the folder once
            f.write(png.data)
        seg = pred.segments
        _, area, box = segment_geometry(ids, seg["id"])
        info = []
        for k in range(len(seg)):
            if area[k] == 0:
                continue
            x0, y0, x1, y1 = (int(v) for v in box[k])
            info.append({"id": int(seg["id"][k]), "category_id": int(seg["category_id"][k]),
                         "iscrowd": int(seg["iscrowd"][k]), "area": int(area[k]), "bbox": [x0, y0, x1 - x0, y1 - y0]})
        record = {"image_id": image_id if isinstance(image_id, (int, str)) else key, "file_name": file_name,
                  "segments_info": info}
        self._annotations.append(record)
        self._seen.add(key)
        return record

    @property
    def records(self) -> list[dict[str, Any]]:
        """The JSON records of the images added so far, in order."""
        return list(self._annotations)

    def close(self, categories: Iterable[Category] | None = None,
              records: Iterable[dict[str, Any]] | None = None) -> Path:
        """Write the JSON and return its path.

        Parameters
        ----------
        categories
            :class:`~isus.Category` objects to list in the JSON (optional).
        records
            The records to write instead of this writer's own, e.g. those of several processes
            that wrote their PNGs into the same folder, gathered and ordered by the caller.
        """
        data: dict[str, Any] = {"annotations": list(self._annotations if records is None else records)}
        if categories is not None:
            data["categories"] = [{"id": c.id, "name": c.name, "isthing": int(c.isthing), "color": list(c.color)}
                                  for c in categories]
        write_json(self.json_path, data)
        return self.json_path

    def __enter__(self) -> "PanopticPredictionWriter":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is None:
            self.close()


def write_json(path: str | Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` atomically: ``path`` holds its old content or the new, never
    a mix (:func:`isus.eval.write_instances` and the CLI's result files go through here)."""
    with atomic_file(path) as f:
        f.write(json.dumps(data).encode())


def read_instances(path: str | Path, categories: Iterable[Category] | None = None) -> dict[str, Detections]:
    """Read a COCO results JSON into ``{str(image_id): Detections}``.

    Every entry is validated (see docs/evaluation.md, "Files"): ``image_id`` an int or a string;
    ``category_id`` an integer (an integral float such as ``3.0`` is read as 3; ``3.7`` is refused)
    and, when ``categories`` are given, a thing category among them; ``score`` a finite number;
    ``bbox`` four finite numbers with width and height >= 0; ``segmentation``, when present, an RLE
    dict that decodes to exactly its ``size``. A violation raises :class:`PredictionFileError`
    naming the file, the entry (its index and image id), the field and what was expected.
    """
    from isus.eval.coco import rle_problem

    path = Path(path)
    data = _read_json(path, "instances JSON")
    if isinstance(data, dict) and isinstance(data.get("annotations"), list):
        data = data["annotations"]  # some tools wrap the results list
    if not isinstance(data, list):
        raise PredictionFileError("instances JSON must be a list of COCO results "
                                  "[{image_id, category_id, bbox, score, segmentation}]", path)
    cats = None if categories is None else {c.id: c for c in categories}
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for k, r in enumerate(data):
        if not isinstance(r, dict) or not all(f in r for f in ("image_id", "category_id", "bbox", "score")):
            raise PredictionFileError(f"result [{k}] needs 'image_id', 'category_id', 'bbox' and 'score'", path)
        where = f"result [{k}] (image_id {r['image_id']!r})"

        def bad(field: str, expected: str) -> PredictionFileError:
            return PredictionFileError(f"{where}: {field} {r.get(field)!r}: expected {expected}", path)

        if not isinstance(r["image_id"], (int, str)) or isinstance(r["image_id"], bool):
            raise bad("image_id", "an int or a string")
        cid = r["category_id"]
        if not _is_number(cid) or not math.isfinite(cid) or cid != int(cid):
            raise bad("category_id", "an integer category id (an integral float such as 3.0 is read as 3)")
        if cats is not None:
            cat = cats.get(int(cid))
            if cat is None:
                raise bad("category_id", f"a category id of the evaluated set ({_show_ids(cats)})")
            if not cat.isthing:
                raise bad("category_id", f"a thing category; {cat.name!r} is a stuff category and AP is "
                                         "evaluated on thing categories only")
        if not _is_number(r["score"]) or not math.isfinite(r["score"]):
            raise bad("score", "a finite number")
        box = r["bbox"]
        if not (isinstance(box, list) and len(box) == 4):
            raise bad("bbox", "[x, y, width, height]")
        if not all(_is_number(v) for v in box):
            raise bad("bbox", "[x, y, width, height] numbers")
        if not all(math.isfinite(v) for v in box):
            raise bad("bbox", "finite [x, y, width, height]")
        if box[2] < 0 or box[3] < 0:
            raise bad("bbox", "[x, y, width, height] with width >= 0 and height >= 0")
        seg = r.get("segmentation")
        if seg is not None:
            problem = rle_problem(seg)
            if problem is not None:
                raise PredictionFileError(f"{where}: segmentation: {problem}", path)
        groups[_key(r["image_id"])].append(r)
    return {k: Detections.from_coco(v) for k, v in groups.items()}


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _show_ids(cats: dict[int, Category], k: int = 12) -> str:
    ids = sorted(cats)
    return "ids " + ", ".join(map(str, ids[:k])) + (", ..." if len(ids) > k else "")


def write_instances(path: str | Path, detections: dict[Any, Detections]) -> Path:
    """Write ``{image_id: Detections}`` as a COCO results JSON (atomically); masks as RLE."""
    from isus.eval.coco import _mask_api, _rle_str

    mu = _mask_api()
    out = []
    for image_id, det in detections.items():
        rles = None
        if det.masks is not None:
            if isinstance(det.masks, np.ndarray):
                rles = [_rle_str(r) for r in
                        mu.encode(np.asfortranarray(np.moveaxis(det.masks.astype(np.uint8), 0, -1)))] \
                    if len(det.masks) else []
            else:
                rles = [_rle_str(r) for r in det.masks]
        for k in range(len(det.scores)):
            x0, y0, x1, y1 = (float(v) for v in det.boxes[k])
            r = {"image_id": image_id, "category_id": int(det.labels[k]), "bbox": [x0, y0, x1 - x0, y1 - y0],
                 "score": float(det.scores[k])}
            if rles is not None:
                r["segmentation"] = rles[k]
            out.append(r)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, out)
    return path
