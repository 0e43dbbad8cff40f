"""Writing scenes in each real dataset's on-disk layout (MVD, Cityscapes, IDD, COCO), and the manifest
that records how a synthetic dataset was made."""
from __future__ import annotations

import base64
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol, Sequence

import cv2
import numpy as np
from PIL import Image

from isus._parallel import run_parallel, usable_cores
from isus.fsio import atomic_file, naming
from isus.datasets.io import id_to_rgb
from isus.segments import segment_geometry
from isus.datasets.labels import CITYSCAPES_LABELS, IDD_LABELS, IDD_LEVEL3_CATEGORIES
from isus.synth.scene import (_CLS, _MVD_GROUP, EGO_VEHICLE, PRESETS, SYNTH_CLASSES, VOID, Scene, make_scene,
                              rasterize, render_image)

__all__ = ["LAYOUTS", "MANIFEST", "write_dataset", "read_manifest", "scene_of", "default_split", "segment_boxes"]

LAYOUTS = ("mvd", "cityscapes", "idd", "coco")
#: File at the root of a synthetic dataset recording how it was made.
MANIFEST = "isus_synth.json"


#: Largest image written: what PIL opens without a decompression-bomb warning (which the readers,
#: and tests run with warnings as errors, would trip on).
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485
#: Peak memory while one image is generated and written (measured ~77 bytes/pixel with numpy's
#: allocations alone; the codecs add their buffers).
BYTES_PER_PIXEL = 96
log = logging.getLogger("isus")


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def check_size(width: int, height: int) -> None:
    """Refuse an image size that is too small, that the readers would not open, or that cannot fit
    in this machine's memory -- before anything is allocated."""
    if width < 32 or height < 32:
        raise ValueError(f"write_dataset(size=) expects at least 32x32 pixels; got {width}x{height}")
    pixels = width * height
    if pixels > MAX_PIXELS:
        raise ValueError(f"write_dataset(size=) {width}x{height} is {pixels:,} pixels per image; at most "
                         f"{MAX_PIXELS:,} are supported (PIL's decompression-bomb limit; MVD's largest images "
                         "have about 20 million)")
    total = _physical_memory()
    if total is not None and pixels * BYTES_PER_PIXEL > total:
        raise ValueError(f"write_dataset(size=) {width}x{height} needs about "
                         f"{pixels * BYTES_PER_PIXEL / 2**30:.1f} GiB to write one image; this machine has "
                         f"{total / 2**30:.1f} GiB")


def _available_memory() -> int | None:
    """Memory the kernel can hand out now without swapping (Linux's MemAvailable), else the
    physical memory."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return _physical_memory()


def _workers_in_memory(workers: int, pixels: int) -> int:
    """``workers`` capped so that the images in flight (one per worker, about
    ``BYTES_PER_PIXEL`` bytes a pixel each) fit in the memory available now; logged when capped."""
    avail = _available_memory()
    if not avail:
        return workers
    fit = max(1, avail // (pixels * BYTES_PER_PIXEL))
    if workers > fit:
        log.warning("isus: %d workers would hold about %.1f GiB of images at %d pixels each; %.1f GiB of memory "
                    "is available: using %d", workers, workers * pixels * BYTES_PER_PIXEL / 2**30, pixels,
                    avail / 2**30, fit)
        return int(fit)
    return workers


def check_split_name(split: object) -> None:
    """A split is one plain folder name: it must not lead outside the output directory."""
    if (not isinstance(split, str) or not split.strip() or split in (".", "..") or "/" in split or "\\" in split
            or os.sep in split or Path(split).is_absolute()):
        raise ValueError(f"write_dataset(split=) expects plain folder names (no '/', '.' or '..': a split must "
                         f"stay inside the output directory); got {split!r}")


def read_manifest(root: str | Path) -> dict[str, Any] | None:
    """The manifest of a synthetic dataset written by :func:`write_dataset`, or None.

    ``{"layout", "width", "height", "seed", "preset", "integer_coords", "num_images" (all splits),
    "splits": {split: {"first_index", "num_images", "image_ids"}}}``; manifests of isus 0.1
    (one split) are read into the same shape.
    """
    path = Path(root) / MANIFEST
    if not path.is_file():
        return None
    with open(path) as f:
        man: dict[str, Any] = json.load(f)
    if "splits" not in man:  # isus 0.1: one split, scenes 0..n-1
        man["splits"] = {man.pop("split"): {"first_index": 0, "num_images": man["num_images"],
                                            "image_ids": man.pop("image_ids")}}
        man.setdefault("preset", "default")
    return man


def scene_of(root: str | Path, image_id: int | str, split: str | None = None) -> Scene:
    """The scene that :func:`write_dataset` drew for ``image_id`` (searched in every split by default)."""
    man = read_manifest(root)
    if man is None:
        raise FileNotFoundError(f"{root}: no {MANIFEST}; not a synthetic dataset written by isus")
    for name, sp in man["splits"].items():
        if split is not None and name != split:
            continue
        if image_id in sp["image_ids"]:
            index = sp["first_index"] + sp["image_ids"].index(image_id)
            return make_scene(man["seed"], index, man["height"], man["width"], integer_coords=man["integer_coords"],
                              preset=man.get("preset", "default"))
    raise KeyError(f"{root}: no image {image_id!r} in the synthetic dataset's manifest")


def default_split(layout: str) -> str:
    """The split each reader opens by default."""
    return {"mvd": "training"}.get(layout, "train")


# -- layout writers ---------------------------------------------------------------------------
def _save_png(path: Path, arr: np.ndarray, mode: str | None = None, palette: list[int] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "I;16":
        im = Image.fromarray(arr.astype(np.uint16))
    elif mode == "P":
        im = Image.fromarray(arr.astype(np.uint8), mode="L").convert("P")
        assert palette is not None, "mode P needs a palette"
        im.putpalette(palette)
    else:
        im = Image.fromarray(arr)
    with naming(path):
        im.save(path, optimize=False, compress_level=1)


def _save_image(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    params = [cv2.IMWRITE_JPEG_QUALITY, 92] if path.suffix == ".jpg" else [cv2.IMWRITE_PNG_COMPRESSION, 1]
    ok, buf = cv2.imencode(path.suffix, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise OSError(f"cannot encode {path}")
    with naming(path):
        buf.tofile(path)


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with naming(path), open(path, "w") as f:
        json.dump(data, f, indent=1)


def segment_boxes(ids: np.ndarray, seg_ids: Iterable[int]) -> dict[int, tuple[int, list[int]]]:
    """``{segment id: (area, [x, y, w, h])}`` in COCO's convention, from the index's scan kernels."""
    seg_ids = np.array(sorted(seg_ids), dtype=np.int32)
    _, area, box = segment_geometry(ids, seg_ids)
    return {int(s): (int(a), [int(b[0]), int(b[1]), int(b[2] - b[0]), int(b[3] - b[1])])
            for s, a, b in zip(seg_ids, area, box)}


def _panoptic_ids(scene: Scene, rng: np.random.Generator) -> dict[int, int]:
    """Random distinct RGB-encodable ids for each scene segment (as COCO's are colour-derived)."""
    vals = rng.choice(np.arange(1, 1 << 24), size=len(scene.segments), replace=False)
    return {s: int(v) for s, v in zip(sorted(scene.segments), vals)}


def _segments_info(scene: Scene, enc: dict[int, int], category: Callable[[int, bool], int]) -> list[dict[str, Any]]:
    boxes = segment_boxes(scene.ids, sorted(scene.segments))
    info = []
    for s in sorted(scene.segments):
        c, crowd = scene.segments[s]
        area, bbox = boxes[s]
        info.append({"id": enc[s], "category_id": category(c, crowd), "area": area, "bbox": bbox,
                     "iscrowd": int(crowd)})
    return info


def _lut(scene: Scene, enc: dict[int, int], void: int) -> np.ndarray:
    lut = np.full(int(scene.ids.max()) + 1, void, dtype=np.int64)
    for s, v in enc.items():
        lut[s] = v
    return lut


class _Writer(Protocol):
    """One split of one layout: ``write`` stores an image's files and adds its records to the
    split's JSON lists (``records``), ``finish`` writes those lists."""

    def write(self, index: int, scene: Scene, rgb: np.ndarray, rng: np.random.Generator) -> int | str: ...

    def records(self) -> dict[str, list[Any]]: ...

    def extend(self, records: dict[str, list[Any]]) -> None: ...

    def finish(self) -> None: ...


class _Records:
    """``records``/``extend`` over the JSON lists a writer names in ``_lists``."""

    _lists: tuple[str, ...] = ("images", "annotations")

    def records(self) -> dict[str, list[Any]]:
        return {name: getattr(self, name) for name in self._lists}

    def extend(self, records: dict[str, list[Any]]) -> None:
        for name, items in records.items():
            getattr(self, name).extend(items)


class _MvdWriter(_Records):
    _lists = ("images", "panoptic_v12", "panoptic_v20")

    def __init__(self, out: Path, split: str):
        self.out, self.split = out, split
        names = [c.mvd for c in SYNTH_CLASSES]
        self.label = {k: names.index(c.mvd) for k, c in enumerate(SYNTH_CLASSES)}
        labels: list[dict[str, Any]] = [{"name": c.mvd, "readable": c.key.title(), "instances": c.isthing, "evaluate": True,
                   "color": list(c.color)} for c in SYNTH_CLASSES]
        self.group: dict[int, int] = {}
        for key, name in _MVD_GROUP.items():
            self.group[_CLS[key]] = len(labels)
            labels.append({"name": name, "readable": f"{key.title()} Group", "instances": True, "evaluate": False,
                           "color": list(SYNTH_CLASSES[_CLS[key]].color)})
        self.void = len(labels)
        labels.append({"name": "void--unlabeled", "readable": "Unlabeled", "instances": False, "evaluate": False,
                       "color": [0, 0, 0]})
        self.labels = labels
        self.palette = [v for lab in labels for v in lab["color"]]
        self.panoptic_v12: list[dict[str, Any]] = []
        self.panoptic_v20: list[dict[str, Any]] = []
        self.panoptic = {"v1.2": self.panoptic_v12, "v2.0": self.panoptic_v20}
        self.images: list[dict[str, Any]] = []

    def label_of(self, c: int, crowd: bool) -> int:
        return self.group[c] if crowd else self.label[c]

    def write(self, index: int, scene: Scene, rgb: np.ndarray, rng: np.random.Generator) -> int | str:
        key = base64.urlsafe_b64encode(rng.bytes(17)).decode()[:22]
        if index == 0:
            key = "__" + key[2:]  # real keys may start with "__"; make sure one does
        sp = self.out / self.split
        _save_image(sp / "images" / f"{key}.jpg", rgb)
        counters: dict[int, int] = {}
        packed = {}
        for s in sorted(scene.segments):
            c, crowd = scene.segments[s]
            lab = self.label_of(c, crowd)
            inst = counters.get(lab, 0)
            if SYNTH_CLASSES[c].isthing and not crowd:
                counters[lab] = inst + 1
            else:
                inst = 0
            if inst > 255:
                raise ValueError("MVD packs at most 256 instances per class and image")
            packed[s] = lab * 256 + inst
        lut = _lut(scene, packed, self.void * 256)
        values = lut[scene.ids]
        rgb_ids = _panoptic_ids(scene, rng)
        for v in ("v1.2", "v2.0"):
            _save_png(sp / v / "instances" / f"{key}.png", values, "I;16")
            _save_png(sp / v / "labels" / f"{key}.png", values // 256, "P", self.palette)
            _save_png(sp / v / "panoptic" / f"{key}.png", id_to_rgb(_lut(scene, rgb_ids, 0)[scene.ids]))
            self.panoptic[v].append({"image_id": key, "file_name": f"{key}.png",
                                     "segments_info": _segments_info(scene, rgb_ids, self.label_of)})
        self.images.append({"id": key, "file_name": f"{key}.jpg", "height": scene.height, "width": scene.width})
        return key

    def finish(self) -> None:
        for v, version, mapping in (("v1.2", 1.2, "public"), ("v2.0", "2.0", "mvd20")):
            _write_json(self.out / f"config_{v}.json", {
                "labels": self.labels, "version": version, "mapping": mapping,
                "folder_structure": "{split}/{content}/{key:.{22}}.{ext}"})
            cats = [{"id": k, "name": lab["readable"], "supercategory": lab["name"], "isthing": int(lab["instances"]),
                     "color": lab["color"]} for k, lab in enumerate(self.labels) if k != self.void]
            name = "panoptic_2018.json" if v == "v1.2" else "panoptic_2020.json"
            _write_json(self.out / self.split / v / "panoptic" / name,
                        {"images": self.images, "annotations": self.panoptic[v], "categories": cats})


class _CityscapesLikeWriter(_Records):
    """Cityscapes and IDD: images, polygons JSON, label/instance PNGs and the panoptic format."""

    def __init__(self, out: Path, split: str, layout: str):
        self.out, self.split, self.layout = out, split, layout
        if layout == "cityscapes":
            table = {l.name: l.id for l in CITYSCAPES_LABELS}
            self.value = {k: table[c.cityscapes] for k, c in enumerate(SYNTH_CLASSES)}
            self.void_value, self.ego_value = 0, 1
            self.suffix = ("_gtFine_instanceIds.png", "_gtFine_labelIds.png")
            cats = [(l.id, l.name, l.has_instances, l.color) for l in CITYSCAPES_LABELS if not l.ignore_in_eval]
        else:
            table = {l.name: l.level3_id for l in IDD_LABELS}
            self.value = {k: table[c.idd] for k, c in enumerate(SYNTH_CLASSES)}
            self.void_value = self.ego_value = 255
            self.suffix = ("_gtFine_instancelevel3Ids.png", "_gtFine_labellevel3Ids.png")
            cats = list(IDD_LEVEL3_CATEGORIES)
        self.categories = [{"id": i, "name": n, "isthing": int(t), "color": list(col), "supercategory": n}
                           for i, n, t, col in cats]
        self.offset = 0 if layout == "cityscapes" else 1
        self.images: list[dict[str, Any]] = []
        self.annotations: list[dict[str, Any]] = []

    def names(self, index: int) -> tuple[str, str, str]:
        if self.layout == "cityscapes":
            city = ("aachen", "bremen")[index % 2]
            return city, f"{city}_{index:06d}_000019", f"{city}_{index:06d}_000019"
        drive = str(index % 3)
        img = f"{100000 + 7 * index:06d}"
        return drive, img, f"{drive}_{img}"

    def write(self, index: int, scene: Scene, rgb: np.ndarray, rng: np.random.Generator) -> int | str:
        folder, stem, key = self.names(index)
        _save_image(self.out / "leftImg8bit" / self.split / folder / f"{stem}_leftImg8bit.png", rgb)
        gt = self.out / "gtFine" / self.split / folder
        # Packed values exactly as the official rasteriser numbers them: class*1000 + k, with k
        # counted per class value in drawing order (hidden instances use up a k too).
        objects: list[dict[str, Any]] = []
        values: dict[int, int] = {}
        drawn: list[int] = []
        counters: dict[int, int] = {}
        for p in scene.polygons:
            if p.cls == VOID:
                label, value = "unlabeled", self.void_value
            elif p.cls == EGO_VEHICLE:
                label, value = "ego vehicle", self.ego_value
            else:
                c = SYNTH_CLASSES[p.cls]
                label = getattr(c, self.layout)
                value = self.value[p.cls]
                if p.iscrowd:
                    label += "group"
                elif c.isthing:
                    k = counters.get(value, 0)
                    counters[value] = k + 1
                    value = value * 1000 + k
            if p.segment:
                values[p.segment] = value
            drawn.append(value)
            pts = p.points.tolist() if self.layout == "idd" else p.points.astype(int).tolist()
            obj = {"label": label, "polygon": pts}
            if self.layout == "idd":
                obj.update({"id": len(objects), "deleted": 0, "draw": True, "user": "isus-synth", "verified": 0})
            objects.append(obj)
            if self.layout == "idd" and p.cls >= 0 and SYNTH_CLASSES[p.cls].isthing and rng.random() < 0.15:
                # IDD keeps deleted objects in the file; a reader that draws them paints ghosts.
                ghost = (p.points + rng.uniform(-20, 20, 2)).clip(0, [scene.width - 1, scene.height - 1])
                objects.append({"label": "car", "polygon": ghost.tolist(), "id": len(objects), "deleted": 1,
                                "draw": False, "user": "isus-synth", "verified": 0})
        _write_json(gt / f"{stem}_gtFine_polygons.json",
                    {"imgHeight": scene.height, "imgWidth": scene.width, "objects": objects})
        packed = rasterize(scene.polygons, scene.height, scene.width, drawn, self.void_value)
        _save_png(gt / f"{stem}{self.suffix[0]}", packed, "I;16")
        labels = np.where(packed >= 1000, packed // 1000, packed)
        _save_png(gt / f"{stem}{self.suffix[1]}", labels.astype(np.uint8))
        # Panoptic: ids are the packed values (+1 for IDD, whose class 0 is road), like
        # cityscapesScripts' createPanopticImgs.
        enc = {s: values[s] + self.offset for s in scene.segments}
        pan_dir = "cityscapes_panoptic_{}" if self.layout == "cityscapes" else "{}_panoptic"
        pan_name = f"{key}_gtFine_panoptic.png" if self.layout == "cityscapes" else f"{key}_gtFine_panopticlevel3Ids.png"
        _save_png(self.out / "gtFine" / pan_dir.format(self.split) / pan_name,
                  id_to_rgb(_lut(scene, enc, 0)[scene.ids]))
        self.images.append({"id": key, "file_name": f"{key}_leftImg8bit.png", "height": scene.height,
                            "width": scene.width})
        self.annotations.append({"image_id": key, "file_name": pan_name,
                                 "segments_info": _segments_info(scene, enc, lambda c, crowd: self.value[c])})
        return key

    def finish(self) -> None:
        name = f"cityscapes_panoptic_{self.split}.json" if self.layout == "cityscapes" else f"{self.split}_panoptic.json"
        _write_json(self.out / "gtFine" / name,
                    {"images": self.images, "annotations": self.annotations, "categories": self.categories})


class _CocoWriter(_Records):
    def __init__(self, out: Path, split: str):
        self.out, self.split = out, split
        self.categories = []
        for c in SYNTH_CLASSES:
            self.categories.append({"id": c.coco[0], "name": c.coco[1], "isthing": int(c.isthing),
                                    "color": list(c.color), "supercategory": c.key})
        self.images: list[dict[str, Any]] = []
        self.annotations: list[dict[str, Any]] = []

    def write(self, index: int, scene: Scene, rgb: np.ndarray, rng: np.random.Generator) -> int | str:
        image_id = 1000 + index
        name = f"{image_id:012d}"
        _save_image(self.out / f"{self.split}2017" / f"{name}.jpg", rgb)
        enc = _panoptic_ids(scene, rng)
        _save_png(self.out / "annotations" / f"panoptic_{self.split}2017" / f"{name}.png",
                  id_to_rgb(_lut(scene, enc, 0)[scene.ids]))
        self.images.append({"id": image_id, "file_name": f"{name}.jpg", "height": scene.height, "width": scene.width})
        self.annotations.append({"image_id": image_id, "file_name": f"{name}.png",
                                 "segments_info": _segments_info(scene, enc, lambda c, crowd: SYNTH_CLASSES[c].coco[0])})
        return image_id

    def finish(self) -> None:
        _write_json(self.out / "annotations" / f"panoptic_{self.split}2017.json",
                    {"info": {"description": "isus synthetic"}, "licenses": [], "images": self.images,
                     "annotations": self.annotations, "categories": self.categories})


@dataclass(frozen=True)
class _Job:
    """What every image of one split shares: enough to rebuild its writer in a worker process."""

    layout: str
    out: Path
    split: str
    seed: int
    height: int
    width: int
    preset: str

    def writer(self) -> _Writer:
        if self.layout == "mvd":
            return _MvdWriter(self.out, self.split)
        if self.layout == "coco":
            return _CocoWriter(self.out, self.split)
        return _CityscapesLikeWriter(self.out, self.split, self.layout)


def _write_task(job: _Job, i: int) -> tuple[int | str, dict[str, list[Any]]]:
    """Write image ``i`` with a writer of its own; its id and the records it adds to the split's
    JSON (the caller, alone, gathers them in index order and writes the JSON)."""
    writer = job.writer()
    scene = make_scene(job.seed, i, job.height, job.width, integer_coords=job.layout == "cityscapes",
                       preset=job.preset)
    key = writer.write(i, scene, render_image(scene, job.seed, i), np.random.default_rng([job.seed, i, 2]))
    return key, writer.records()


def write_dataset(
    out: str | Path,
    layout: str = "mvd",
    num_images: int | Sequence[int] = 8,
    *,
    size: tuple[int, int] = (640, 480),
    seed: int = 0,
    split: str | Sequence[str] | None = None,
    preset: str = "default",
    progress: Callable[[Iterable[int]], Iterable[int]] | None = None,
    workers: int | None = 1,
) -> Path:
    """Write a synthetic dataset in a real dataset's on-disk layout.

    Parameters
    ----------
    out
        Dataset root. New or empty, or a synthetic dataset written with the same layout, size,
        seed and preset, to which new splits are added.
    layout
        ``"mvd"`` (both v1.2 and v2.0 annotations), ``"cityscapes"``, ``"idd"`` or ``"coco"``.
    num_images
        Number of images, one number per split.
    size
        ``(width, height)`` of every image; use ``(4032, 3024)`` for MVD-like sizes.
    seed
        Seed of the generator.
    split
        Split name(s); defaults to what the reader opens by default. Splits draw disjoint scenes
        from the same generator: scene ``first_index + i`` of ``seed``, where ``first_index``
        continues after the scenes of the splits written before (recorded in the manifest).
    preset
        Scene generator, see :func:`isus.synth.make_scene` (``"default"``, ``"scale-study"``).
    progress
        Optional wrapper around the image index iterable (e.g. a progress bar); with several
        workers it advances as images are finished.
    workers
        Processes rendering and encoding images in parallel (1 = in this process, None = all
        usable cores). Capped at the usable cores and the number of images (a warning on the
        ``isus`` logger says so when the cores cap it). Every image depends only on ``seed`` and its index,
        so the files are the same, byte for byte, with any number of workers.

    Returns
    -------
    Path
        ``out``, ready for ``open_dataset(layout, out, split=...)``.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"write_dataset(layout=) expects one of {', '.join(LAYOUTS)}; got {layout!r}")
    splits = [split or default_split(layout)] if split is None or isinstance(split, str) else list(split)
    counts = [num_images] if isinstance(num_images, (int, np.integer)) else list(num_images)
    if len(counts) != len(splits) or any(not isinstance(n, (int, np.integer)) or n < 1 for n in counts):
        raise ValueError(f"write_dataset(num_images=) expects one positive int per split ({', '.join(splits)}); "
                         f"got {num_images!r}")
    for sp in splits:
        check_split_name(sp)
    if len(set(splits)) != len(splits):
        raise ValueError(f"write_dataset(split=) expects distinct split names; got {splits!r}")
    if preset not in PRESETS:
        raise ValueError(f"write_dataset(preset=) expects one of {', '.join(PRESETS)}; got {preset!r}")
    if workers is None:
        workers = usable_cores()
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise ValueError(f"write_dataset(workers=) expects a positive int or None; got {workers!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"write_dataset(seed=) expects a non-negative int; got {seed!r}")
    try:
        width, height = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"write_dataset(size=) expects (width, height); got {size!r}") from None
    check_size(width, height)
    workers = _workers_in_memory(workers, width * height)
    out = Path(out)
    settings = {"layout": layout, "width": width, "height": height, "seed": seed, "preset": preset,
                "integer_coords": layout == "cityscapes"}
    man = read_manifest(out) if out.is_dir() else None
    if man is None:
        if out.exists() and any(out.iterdir()):
            raise FileExistsError(f"{out}: directory is not empty and holds no synthetic dataset; choose a new "
                                  "output directory")
        man = {**settings, "num_images": 0, "splits": {}}
    else:
        other = {k: man.get(k) for k in settings if man.get(k) != settings[k]}
        if other:
            raise FileExistsError(f"{out}: holds a synthetic dataset written with other settings ({other}); new "
                                  f"splits must use the same layout, size, seed and preset")
        again = [sp for sp in splits if sp in man["splits"]]
        if again:
            raise FileExistsError(f"{out}: already holds the split {again[0]!r}; choose another split name or "
                                  "another directory")
    out.mkdir(parents=True, exist_ok=True)
    first = max((sp["first_index"] + sp["num_images"] for sp in man["splits"].values()), default=0)
    for sp_name, n in zip(splits, counts):
        job = _Job(layout, out, sp_name, seed, height, width, preset)
        writer = job.writer()
        indices = range(first, first + int(n))
        ticks: Iterable[int] = progress(indices) if progress is not None else indices
        done: dict[int, tuple[int | str, dict[str, list[Any]]]] = {}
        # The wrapper reports a step when the next one is asked for: one ask per finished image
        # (first ask now, last after the last image) keeps its count at the finished images.
        tick = iter(ticks)
        next(tick, None)

        def finished(i: int, result: tuple[int | str, dict[str, list[Any]]]) -> None:
            done[i] = result
            next(tick, None)

        # in this process for one worker or one image, else in the pool (which caps and says so)
        run_parallel(_write_task, job, indices, workers, finished)
        for i in indices:  # the records in index order, whatever order the images finished in
            writer.extend(done[i][1])
        written = [done[i][0] for i in indices]
        writer.finish()
        # Readers list images in path order; the manifest maps each image id back to its scene.
        man["splits"][sp_name] = {"first_index": first, "num_images": int(n), "image_ids": written}
        man["num_images"] += int(n)
        first += int(n)
        _write_json_atomic(out / MANIFEST, man)
    return out


def _write_json_atomic(path: Path, data: Any) -> None:
    with atomic_file(path) as f:
        f.write(json.dumps(data, indent=1).encode())
