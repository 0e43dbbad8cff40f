"""Synthetic panoptic datasets written in each real dataset's on-disk layout.

No dataset ships with isus, so demos, tests and benchmarks run on these. A scene is a list of
polygons drawn in order (stuff, then things from large to small, then crowd and void), so the
same scene can be written as 16-bit instance PNGs, COCO-style RGB panoptic PNGs and polygon
JSONs, and every reader must decode the same segments from it.

The content is built to exercise what comes downstream: several stuff and thing classes,
thing sizes long-tailed like the paper's Fig. 2 (right) -- from a few pixels to larger than a
1024 crop on MVD-sized images --, crowd regions, void pixels, instances cut by the image
border, and images without any thing (every image whose index is 3 mod 7). Images are
learnable: each class has its own colour and stripe texture, instances their own shade and a
dark outline.
"""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import cv2
import numpy as np
from PIL import Image, ImageDraw

from isus import kernels
from isus.datasets._io import id_to_rgb
from isus.datasets.labels import CITYSCAPES_LABELS, IDD_LABELS, IDD_LEVEL3_CATEGORIES

__all__ = ["LAYOUTS", "SynthClass", "SYNTH_CLASSES", "Scene", "make_scene", "render_image", "write_dataset",
           "default_split", "read_manifest", "MANIFEST", "simulated_index", "mvd_from_semantic"]

LAYOUTS = ("mvd", "cityscapes", "idd", "coco")
#: File at the root of a synthetic dataset recording how it was made.
MANIFEST = "isus_synth.json"


@dataclass(frozen=True)
class SynthClass:
    """A class of the synthetic world and its name in each layout."""

    key: str
    isthing: bool
    color: tuple[int, int, int]  # rendering colour of the image, not any dataset's palette
    stripes: tuple[float, float]  # texture: period in pixels, orientation in radians
    aspect: float  # things: width / height
    mvd: str
    cityscapes: str
    idd: str
    coco: tuple[int, str]


SYNTH_CLASSES: tuple[SynthClass, ...] = (
    SynthClass("road", False, (90, 90, 96), (18.0, 0.0), 1.0, "construction--flat--road", "road", "road", (149, "road")),
    SynthClass("sidewalk", False, (170, 150, 160), (9.0, 1.57), 1.0, "construction--flat--sidewalk", "sidewalk",
               "sidewalk", (191, "pavement-merged")),
    SynthClass("building", False, (150, 80, 60), (12.0, 1.57), 1.0, "construction--structure--building", "building",
               "building", (197, "building-other-merged")),
    SynthClass("vegetation", False, (60, 140, 50), (5.0, 0.7), 1.0, "nature--vegetation", "vegetation", "vegetation",
               (184, "tree-merged")),
    SynthClass("sky", False, (120, 170, 235), (40.0, 0.0), 1.0, "nature--sky", "sky", "sky", (187, "sky-other-merged")),
    SynthClass("pole", False, (200, 200, 70), (4.0, 0.0), 0.08, "object--support--pole", "pole", "pole",
               (185, "fence-merged")),
    SynthClass("person", True, (220, 40, 60), (6.0, 0.4), 0.4, "human--person", "person", "person", (1, "person")),
    SynthClass("car", True, (30, 60, 200), (10.0, 0.0), 2.0, "object--vehicle--car", "car", "car", (3, "car")),
    SynthClass("truck", True, (30, 170, 170), (14.0, 1.2), 1.4, "object--vehicle--truck", "truck", "truck",
               (8, "truck")),
    SynthClass("bicycle", True, (240, 140, 20), (3.0, 2.2), 1.6, "object--vehicle--bicycle", "bicycle", "bicycle",
               (2, "bicycle")),
)
_CLS = {c.key: k for k, c in enumerate(SYNTH_CLASSES)}
_THINGS = [k for k, c in enumerate(SYNTH_CLASSES) if c.isthing]
#: Classes whose crowd regions a scene may contain (drawn as ``persongroup`` / ``cargroup``).
_CROWD_CLASSES = (_CLS["person"], _CLS["car"])
VOID, EGO_VEHICLE = -1, -2
_MVD_GROUP = {"person": "human--person--person-group", "car": "object--vehicle--vehicle-group"}


@dataclass
class ScenePolygon:
    segment: int  # scene segment id, 0 = void
    cls: int  # index into SYNTH_CLASSES; VOID or EGO_VEHICLE for void
    iscrowd: bool
    points: np.ndarray  # (K, 2) float64 x, y


@dataclass
class Scene:
    """A synthetic image's ground truth.

    Attributes
    ----------
    ids
        ``(H, W)`` int32 scene segment ids, 0 = void; the rasterisation of :attr:`polygons`.
    segments
        ``{segment id: (class index, iscrowd)}`` for every segment visible in :attr:`ids`.
    polygons
        Everything drawn, in drawing order (includes segments fully hidden later).
    """

    height: int
    width: int
    ids: np.ndarray
    segments: dict[int, tuple[int, bool]]
    polygons: list[ScenePolygon]


def _ellipse(cx, cy, rx, ry, n, rng, jitter=0.08):
    t = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    r = 1.0 + rng.uniform(-jitter, jitter, n)
    return np.stack([cx + rx * r * np.cos(t), cy + ry * r * np.sin(t)], axis=1)


def _rect(x0, y0, x1, y1):
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)


def make_scene(seed: int, index: int, height: int, width: int, *, integer_coords: bool = False) -> Scene:
    """Generate the ground truth of image ``index`` of a synthetic dataset (deterministic).

    Parameters
    ----------
    seed, index
        Together they seed the generator: the same pair always gives the same scene.
    height, width
        Image size in pixels.
    integer_coords
        Round polygon vertices to integers (Cityscapes' polygons are integral, IDD's are not).
    """
    rng = np.random.default_rng([seed, index])
    H, W = height, width
    polys: list[ScenePolygon] = []
    next_id = [1]
    stuff_ids: dict[int, int] = {}

    def stuff(cls_key, pts):
        c = _CLS[cls_key]
        if c not in stuff_ids:
            stuff_ids[c] = next_id[0]
            next_id[0] += 1
        polys.append(ScenePolygon(stuff_ids[c], c, False, pts))

    horizon = H * rng.uniform(0.3, 0.5)
    # Ground first (sidewalk everywhere below the horizon, road on top of it), then the sky.
    stuff("sidewalk", _rect(0, horizon, W, H))
    spread = rng.uniform(0.05, 0.3) * W
    vx = W * rng.uniform(0.35, 0.65)
    stuff("road", np.array([[vx - spread * 0.2, horizon], [vx + spread * 0.2, horizon], [W * 1.1, H], [-0.1 * W, H]]))
    xs = np.linspace(0, W, 9)
    wave = horizon + rng.uniform(-0.04, 0.0, xs.size) * H
    stuff("sky", np.concatenate([[[0, 0], [W, 0]], np.stack([xs[::-1], wave[::-1]], 1)]))
    x = -rng.uniform(0, 0.1) * W
    while x < W:
        bw = rng.uniform(0.06, 0.25) * W
        if rng.random() < 0.75:
            top = horizon - rng.uniform(0.05, 0.35) * H
            stuff("building", _rect(x, max(top, 0), x + bw, horizon + 0.01 * H))
        x += bw
    for _ in range(rng.integers(1, 5)):
        r = rng.uniform(0.03, 0.12) * W
        stuff("vegetation", _ellipse(rng.uniform(0, W), horizon - 0.3 * r, r, r * 0.7, 24, rng, 0.2))
    for _ in range(rng.integers(0, 4)):
        px, pw = rng.uniform(0, W), max(2.0, 0.006 * W)
        stuff("pole", _rect(px, horizon - rng.uniform(0.1, 0.3) * H, px + pw, horizon + rng.uniform(0.05, 0.2) * H))

    # Things: sqrt(area) is Pareto-distributed (long tail), drawn from large to small so the
    # small ones stay visible; about one in ten is pushed onto an image border.
    if index % 7 != 3:
        n = int(rng.integers(4, 28) * max(1.0, np.sqrt(H * W / (640 * 480)) ** 0.8))
        sizes = np.minimum(4.0 * rng.uniform(1e-9, 1.0, n) ** (-1 / 0.8), 0.8 * max(H, W))
        for s in np.sort(sizes)[::-1]:
            c = int(rng.choice(_THINGS))
            a = SYNTH_CLASSES[c].aspect * rng.uniform(0.8, 1.25)
            w, h = s * np.sqrt(a), s / np.sqrt(a)
            cx, cy = rng.uniform(0, W), rng.uniform(horizon - 0.1 * H, H)
            if rng.random() < 0.1:
                cx = rng.choice([0.0, W]) + rng.uniform(-0.3, 0.3) * w
            if SYNTH_CLASSES[c].key in ("car", "truck") and rng.random() < 0.5:
                pts = _rect(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
            else:
                pts = _ellipse(cx, cy, w / 2, h / 2, 16, rng)
            polys.append(ScenePolygon(next_id[0], c, False, pts))
            next_id[0] += 1
        if rng.random() < 0.6:
            c = int(rng.choice(_CROWD_CLASSES))
            w = rng.uniform(0.1, 0.3) * W
            cx, cy = rng.uniform(0, W), rng.uniform(horizon, H)
            polys.append(ScenePolygon(next_id[0], c, True, _ellipse(cx, cy, w / 2, w / 5, 20, rng, 0.15)))
            next_id[0] += 1

    # Void: a few blobs, and sometimes an ego-vehicle band at the bottom.
    for _ in range(rng.integers(1, 4)):
        r = rng.uniform(0.01, 0.05) * W
        polys.append(ScenePolygon(0, VOID, False, _ellipse(rng.uniform(0, W), rng.uniform(0, H), r, r, 12, rng, 0.3)))
    if rng.random() < 0.3:
        polys.append(ScenePolygon(0, EGO_VEHICLE, False, _rect(0, H * 0.93, W, H)))

    for p in polys:
        # Annotation tools keep vertices inside the image; so do we (x in [0, W-1]).
        p.points = np.stack([np.clip(p.points[:, 0], 0, W - 1), np.clip(p.points[:, 1], 0, H - 1)], 1)
        if integer_coords:
            p.points = np.round(p.points)
    ids = rasterize(polys, H, W, [p.segment for p in polys], background=0)
    present = set(np.unique(ids).tolist()) - {0}
    segments = {p.segment: (p.cls, p.iscrowd) for p in polys if p.segment in present}
    return Scene(H, W, ids, segments, polys)


def rasterize(polys: list[ScenePolygon], height: int, width: int, values: list[int], background: int) -> np.ndarray:
    """Draw polygons in order with PIL's polygon fill, the rasteriser of the official
    Cityscapes/IDD tooling (and of isus's polygon reader)."""
    img = Image.new("I", (width, height), background)
    draw = ImageDraw.Draw(img)
    for p, v in zip(polys, values):
        draw.polygon([(float(x), float(y)) for x, y in p.points], fill=int(v))
    return np.asarray(img, dtype=np.int32)


def render_image(scene: Scene, seed: int, index: int) -> np.ndarray:
    """Render a learnable RGB image for ``scene``: class colour and stripes, per-instance shade,
    dark instance outlines, mild noise. Void pixels are dark grey."""
    rng = np.random.default_rng([seed, index, 1])
    H, W = scene.height, scene.width
    nseg = int(scene.ids.max()) + 1
    seg_cls = np.full(nseg, -1, dtype=np.int64)
    shade = np.ones(nseg, dtype=np.float32)
    for sid, (c, crowd) in scene.segments.items():
        seg_cls[sid] = c
        shade[sid] = rng.uniform(0.75, 1.2) if SYNTH_CLASSES[c].isthing and not crowd else 1.0
    palette = np.array([c.color for c in SYNTH_CLASSES] + [(40, 40, 40)], dtype=np.float32)
    period = np.array([c.stripes[0] for c in SYNTH_CLASSES] + [1e9], dtype=np.float32)
    angle = np.array([c.stripes[1] for c in SYNTH_CLASSES] + [0.0], dtype=np.float32)
    cls = seg_cls[scene.ids]  # -1 (void) indexes the last palette row
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    phase = (xx * np.cos(angle)[cls] + yy * np.sin(angle)[cls]) * (2 * np.pi / period[cls])
    tex = 1.0 + 0.18 * np.sin(phase)
    img = palette[cls] * (tex * shade[scene.ids])[..., None]
    edge = np.zeros((H, W), dtype=bool)
    edge[1:, :] |= scene.ids[1:, :] != scene.ids[:-1, :]
    edge[:, 1:] |= scene.ids[:, 1:] != scene.ids[:, :-1]
    img[edge] *= 0.45
    img += rng.normal(0.0, 6.0, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def read_manifest(root: str | Path) -> dict | None:
    """The manifest of a synthetic dataset written by :func:`write_dataset`, or None."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        return None
    with open(path) as f:
        return json.load(f)


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
        im.putpalette(palette)
    else:
        im = Image.fromarray(arr)
    im.save(path, optimize=False, compress_level=1)


def _save_image(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    params = [cv2.IMWRITE_JPEG_QUALITY, 92] if path.suffix == ".jpg" else [cv2.IMWRITE_PNG_COMPRESSION, 1]
    ok, buf = cv2.imencode(path.suffix, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise OSError(f"cannot encode {path}")
    buf.tofile(path)


def _write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f, indent=1)


def segment_boxes(ids: np.ndarray, seg_ids: Iterable[int]) -> dict[int, tuple[int, list[int]]]:
    """``{segment id: (area, [x, y, w, h])}`` in COCO's convention, from the index's scan kernels."""
    seg_ids = np.array(sorted(seg_ids), dtype=np.int32)
    dense = kernels.dense_segments(ids, seg_ids)
    area, box, _, _ = kernels.scan_dense(dense, len(seg_ids), 1)
    return {int(s): (int(a), [int(b[0]), int(b[1]), int(b[2] - b[0]), int(b[3] - b[1])])
            for s, a, b in zip(seg_ids, area, box)}


def _panoptic_ids(scene: Scene, rng: np.random.Generator) -> dict[int, int]:
    """Random distinct RGB-encodable ids for each scene segment (as COCO's are colour-derived)."""
    vals = rng.choice(np.arange(1, 1 << 24), size=len(scene.segments), replace=False)
    return {s: int(v) for s, v in zip(sorted(scene.segments), vals)}


def _segments_info(scene: Scene, enc: dict[int, int], category: Callable[[int, bool], int]) -> list[dict]:
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


class _MvdWriter:
    def __init__(self, out: Path, split: str):
        self.out, self.split = out, split
        names = [c.mvd for c in SYNTH_CLASSES]
        self.label = {k: names.index(c.mvd) for k, c in enumerate(SYNTH_CLASSES)}
        labels = [{"name": c.mvd, "readable": c.key.title(), "instances": c.isthing, "evaluate": True,
                   "color": list(c.color)} for c in SYNTH_CLASSES]
        self.group = {}
        for key, name in _MVD_GROUP.items():
            self.group[_CLS[key]] = len(labels)
            labels.append({"name": name, "readable": f"{key.title()} Group", "instances": True, "evaluate": False,
                           "color": list(SYNTH_CLASSES[_CLS[key]].color)})
        self.void = len(labels)
        labels.append({"name": "void--unlabeled", "readable": "Unlabeled", "instances": False, "evaluate": False,
                       "color": [0, 0, 0]})
        self.labels = labels
        self.palette = [v for lab in labels for v in lab["color"]]
        self.panoptic = {"v1.2": [], "v2.0": []}
        self.images = []

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


class _CityscapesLikeWriter:
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
        self.images, self.annotations = [], []

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
        objects, values, drawn, counters = [], {}, [], {}
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


class _CocoWriter:
    def __init__(self, out: Path, split: str):
        self.out, self.split = out, split
        self.categories = []
        for k, c in enumerate(SYNTH_CLASSES):
            self.categories.append({"id": c.coco[0], "name": c.coco[1], "isthing": int(c.isthing),
                                    "color": list(c.color), "supercategory": c.key})
        self.images, self.annotations = [], []

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


def write_dataset(
    out: str | Path,
    layout: str = "mvd",
    num_images: int = 8,
    *,
    size: tuple[int, int] = (640, 480),
    seed: int = 0,
    split: str | None = None,
    progress: Callable[[Iterable[int]], Iterable[int]] | None = None,
) -> Path:
    """Write a synthetic dataset in a real dataset's on-disk layout.

    Parameters
    ----------
    out
        Directory to create (it may exist but must not already hold a dataset).
    layout
        ``"mvd"`` (both v1.2 and v2.0 annotations), ``"cityscapes"``, ``"idd"`` or ``"coco"``.
    num_images
        Number of images.
    size
        ``(width, height)`` of every image; use ``(4032, 3024)`` for MVD-like sizes.
    seed
        Seed; image ``i`` is :func:`make_scene` ``(seed, i, ...)``.
    split
        Split folder name; defaults to what the reader opens by default.
    progress
        Optional wrapper around the image index iterable (e.g. a progress bar).

    Returns
    -------
    Path
        ``out``, ready for ``open_dataset(layout, out)``.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"write_dataset(layout=) expects one of {', '.join(LAYOUTS)}; got {layout!r}")
    if not isinstance(num_images, int) or num_images < 1:
        raise ValueError(f"write_dataset(num_images=) expects a positive int; got {num_images!r}")
    width, height = size
    if width < 32 or height < 32:
        raise ValueError(f"write_dataset(size=) expects at least 32x32 pixels; got {width}x{height}")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out}: directory is not empty; choose a new output directory")
    out.mkdir(parents=True, exist_ok=True)
    split = split or default_split(layout)
    writer = (_MvdWriter(out, split) if layout == "mvd" else _CocoWriter(out, split) if layout == "coco"
              else _CityscapesLikeWriter(out, split, layout))
    indices: Iterable[int] = range(num_images)
    if progress is not None:
        indices = progress(indices)
    written = []
    for i in indices:
        scene = make_scene(seed, i, height, width, integer_coords=layout == "cityscapes")
        rng = np.random.default_rng([seed, i, 2])
        written.append(writer.write(i, scene, render_image(scene, seed, i), rng))
    writer.finish()
    # Readers list images in path order; the manifest maps each image id back to its scene.
    _write_json(out / MANIFEST, {"layout": layout, "num_images": num_images, "width": width, "height": height,
                                 "seed": seed, "split": split, "image_ids": written,
                                 "integer_coords": layout == "cityscapes"})
    return out


def simulated_index(num_images: int = 18000, *, num_stuff: int = 28, num_things: int = 37, seed: int = 0,
                    grid: int = 16, anchors: int = 4):
    """An :class:`isus.Index` with MVD-like statistics, made without images (for benchmarks).

    Image sizes from 1920x1080 to 5376x3024; about 20 classes per image; about 50 instances per
    image with Pareto-distributed sizes. Geometry is random but consistent (boxes inside images,
    anchors inside boxes, cell counts summing to the class pixels), which is all sampling and
    statistics read.
    """
    from isus.index.index import Index, _pack_strings, assemble
    from isus.index.store import SCHEMA_VERSION

    rng = np.random.default_rng(seed)
    sizes = np.array([(4032, 3024), (3264, 2448), (1920, 1080), (5376, 3024), (2448, 2448), (4608, 2592)])
    wh = sizes[rng.integers(0, len(sizes), num_images)]
    ncat = num_stuff + num_things
    cats = [{"id": k, "name": f"{'thing' if k >= num_stuff else 'stuff'}-{k}", "isthing": k >= num_stuff,
             "color": [int(v) for v in rng.integers(0, 256, 3)], "evaluate": True} for k in range(ncat)]
    # class rows: each image holds ~20 classes, frequent classes more often (long-tailed)
    freq = 1.0 / np.arange(1, ncat + 1) ** 0.8
    per_image = rng.integers(12, 28, num_images)
    cls_image = np.repeat(np.arange(num_images, dtype=np.int32), per_image)
    cls_category = np.concatenate([rng.choice(ncat, k, replace=False, p=freq / freq.sum()) for k in per_image]).astype(np.int32)
    nrows = len(cls_image)
    W, H = wh[cls_image, 0], wh[cls_image, 1]
    ncells = rng.integers(1, 40, nrows).astype(np.int32)
    cell_index = np.concatenate([rng.choice(grid * grid, k, replace=False) for k in ncells]).astype(np.uint16)
    cell_pixels = rng.integers(1, 20000, len(cell_index)).astype(np.uint32)
    row_of_cell = np.repeat(np.arange(nrows), ncells)
    cls_pixels = np.bincount(row_of_cell, weights=cell_pixels, minlength=nrows).astype(np.int64)
    # class anchors: inside their first cell
    first = np.r_[0, np.cumsum(ncells)[:-1]]
    gy, gx = cell_index[first] // grid, cell_index[first] % grid
    ax = np.ceil(gx * W / grid).astype(np.int32)
    ay = np.ceil(gy * H / grid).astype(np.int32)
    cls_anchors = np.repeat(np.stack([ax, ay], 1)[:, None, :], anchors, axis=1)
    # instances of the thing classes present in each image
    thing_rows = np.flatnonzero(cls_category >= num_stuff)
    per_row = rng.integers(1, 6, len(thing_rows))
    inst_row = np.repeat(thing_rows, per_row)
    n = len(inst_row)
    iw, ih = W[inst_row], H[inst_row]
    s = np.minimum(4.0 * rng.uniform(1e-9, 1, n) ** (-1 / 0.8), 0.9 * np.minimum(iw, ih))
    aspect = rng.uniform(0.4, 2.5, n)
    bw = np.clip(np.round(s * np.sqrt(aspect)), 1, iw).astype(np.int32)
    bh = np.clip(np.round(s / np.sqrt(aspect)), 1, ih).astype(np.int32)
    x0 = (rng.random(n) * (iw - bw + 1)).astype(np.int32)
    y0 = (rng.random(n) * (ih - bh + 1)).astype(np.int32)
    box = np.stack([x0, y0, x0 + bw, y0 + bh], 1)
    area = np.maximum(1, (bw.astype(np.int64) * bh * rng.uniform(0.4, 0.8, n)).astype(np.int64))
    crowd = rng.random(n) < 0.02
    inst_anchors = np.stack([x0[:, None] + (rng.random((n, anchors)) * bw[:, None]).astype(np.int32),
                             y0[:, None] + (rng.random((n, anchors)) * bh[:, None]).astype(np.int32)], -1)
    rows = {
        "inst_image": cls_image[inst_row], "inst_segment": np.arange(1, n + 1, dtype=np.int32),
        "inst_category": cls_category[inst_row], "inst_crowd": crowd, "inst_area": area, "inst_box": box,
        "inst_centroid": np.stack([x0 + bw / 2, y0 + bh / 2], 1).astype(np.float32),
        "inst_anchors": inst_anchors.astype(np.int32),
        "cls_image": cls_image, "cls_category": cls_category, "cls_pixels": cls_pixels, "cls_ncells": ncells,
        "cls_anchors": cls_anchors.astype(np.int32), "cell_index": cell_index, "cell_pixels": cell_pixels,
    }
    images = {"image_height": wh[:, 1].astype(np.int32), "image_width": wh[:, 0].astype(np.int32)}
    images["image_id_blob"], images["image_id_offsets"] = _pack_strings([f"sim{i:06d}" for i in range(num_images)])
    images["file_name_blob"], images["file_name_offsets"] = _pack_strings([f"sim{i:06d}.jpg" for i in range(num_images)])
    meta = {"kind": "index", "schema": SCHEMA_VERSION, "isus_version": "simulated",
            "dataset": {"name": "simulated", "root": "", "split": "training", "source": "simulated",
                        "has_instances": True, "num_images": num_images},
            "params": {"grid": grid, "anchors": anchors, "cache_dir": None}, "categories": cats,
            "image_range": [0, num_images], "int_image_ids": False, "cache_bytes": 0}
    return Index(meta, assemble(meta, images, rows))


def mvd_from_semantic(labels_dir: str | Path, images_dir: str | Path, config: str | Path, out: str | Path,
                      split: str = "training") -> Path:
    """Turn an MVD tree that has only semantic ``labels/`` into one with v1.2 ``instances/``.

    Each connected component (8-connectivity) of a thing label becomes an instance (beyond 256
    per label, the smallest are merged into the 256th). Images are symlinked. For tests and
    benchmarks on the real samples, whose instance PNGs are not public.
    """
    labels_dir, images_dir, out = Path(labels_dir), Path(images_dir), Path(out)
    cfg = json.loads(Path(config).read_text())
    things = [k for k, lab in enumerate(cfg["labels"]) if lab["instances"]]
    (out / split / "images").mkdir(parents=True, exist_ok=True)
    (out / split / "v1.2" / "instances").mkdir(parents=True, exist_ok=True)
    _write_json(out / "config_v1.2.json", cfg)
    for png in sorted(labels_dir.glob("*.png")):
        lab = np.asarray(Image.open(png)).astype(np.int64)
        values = lab * 256
        for t in things:
            mask = (lab == t).astype(np.uint8)
            if not mask.any():
                continue
            n, comp, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
            order = np.argsort(-stats[1:, cv2.CC_STAT_AREA]) + 1  # largest first
            inst = np.zeros(n, np.int64)
            inst[order] = np.minimum(np.arange(len(order)), 255)
            values[mask.astype(bool)] += inst[comp[mask.astype(bool)]]
        _save_png(out / split / "v1.2" / "instances" / png.name, values, "I;16")
        src = next(images_dir.glob(png.stem + ".*"))
        dst = out / split / "images" / src.name
        if not dst.exists():
            dst.symlink_to(src.resolve())
    return out
