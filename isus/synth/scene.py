"""The synthetic world: classes, scenes (polygons drawn in order) and their rendering.

Pure generation, no files: :func:`make_scene` gives the ground truth of one image from
``(seed, index)``, :func:`render_image` a learnable RGB image for it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["SynthClass", "SYNTH_CLASSES", "Scene", "ScenePolygon", "make_scene", "rasterize", "render_image",
           "VOID", "EGO_VEHICLE", "PRESETS"]

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
#: scale-study class frequencies over _THINGS (person, car, truck, bicycle)
_SCALE_STUDY_CLASS_P = np.array([0.38, 0.32, 0.12, 0.18])
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


def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int, rng: np.random.Generator,
             jitter: float = 0.08) -> np.ndarray:
    t = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    r = 1.0 + rng.uniform(-jitter, jitter, n)
    return np.stack([cx + rx * r * np.cos(t), cy + ry * r * np.sin(t)], axis=1)


def _rect(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)


#: Scene generators: ``default`` (long-tailed sizes, as in the paper's Fig. 2) and ``scale-study``
#: (a share of very large trucks and cars, for the scale ablation of ``docs/evidence.md``).
PRESETS = ("default", "scale-study")


def make_scene(seed: int, index: int, height: int, width: int, *, integer_coords: bool = False,
               preset: str = "default") -> Scene:
    """Generate the ground truth of image ``index`` of a synthetic dataset (deterministic).

    Parameters
    ----------
    seed, index
        Together they seed the generator: the same pair always gives the same scene.
    height, width
        Image size in pixels.
    integer_coords
        Round polygon vertices to integers (Cityscapes' polygons are integral, IDD's are not).
    preset
        ``"default"``: things' sqrt(area) Pareto-distributed from 4 px up, every image whose index
        is 3 mod 7 without things. ``"scale-study"``: every image has things; trucks (about 12 %
        of them) and one car in five are large, their sqrt(area) uniform in [0.55, 1.4] x the
        image height, so that many exceed a training crop of half the image height; the other
        things have sqrt(area) log-uniform in [6 px, 0.45 x height].
    """
    if preset not in PRESETS:
        raise ValueError(f"make_scene(preset=) expects one of {', '.join(PRESETS)}; got {preset!r}")
    rng = np.random.default_rng([seed, index])
    H, W = height, width
    polys: list[ScenePolygon] = []
    next_id = [1]
    stuff_ids: dict[int, int] = {}

    def stuff(cls_key: str, pts: np.ndarray) -> None:
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
    things: Sequence[tuple[int | None, float]]
    if preset == "scale-study":
        things = _scale_study_things(rng, H, W)
    elif index % 7 != 3:
        n = int(rng.integers(4, 28) * max(1.0, np.sqrt(H * W / (640 * 480)) ** 0.8))
        sizes = np.minimum(4.0 * rng.uniform(1e-9, 1.0, n) ** (-1 / 0.8), 0.8 * max(H, W))
        things = [(None, s) for s in np.sort(sizes)[::-1]]
    else:
        things = []
    if things:
        for c, s in things:
            c = int(rng.choice(_THINGS)) if c is None else c
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


def _scale_study_things(rng: np.random.Generator, H: int, W: int) -> list[tuple[int, float]]:
    """(class, sqrt-area size) of the things of a ``scale-study`` scene, largest first."""
    n = int(rng.integers(14, 30) * max(1.0, np.sqrt(H * W / (640 * 480)) ** 0.8))
    cls = rng.choice(_THINGS, size=n, p=_SCALE_STUDY_CLASS_P)
    small = np.exp(rng.uniform(np.log(6.0), np.log(0.45 * H), n))
    large = rng.uniform(0.55, 1.4, n) * H
    big = (cls == _CLS["truck"]) | ((cls == _CLS["car"]) & (rng.random(n) < 0.2))
    sizes = np.where(big, large, small)
    order = np.argsort(-sizes, kind="stable")
    return [(int(cls[k]), float(sizes[k])) for k in order]


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
    out: np.ndarray = np.clip(img, 0, 255).astype(np.uint8)
    return out
