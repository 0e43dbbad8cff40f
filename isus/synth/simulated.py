"""An index with MVD-like statistics, made without images (for benchmarks of sampling and statistics)."""
from __future__ import annotations

import numpy as np

from isus.index import Index
from isus.index.schema import assemble, pack_strings
from isus.index.store import SCHEMA_VERSION

__all__ = ["simulated_index"]


def simulated_index(num_images: int = 18000, *, num_stuff: int = 28, num_things: int = 37, seed: int = 0,
                    grid: int = 16, anchors: int = 4) -> Index:
    """An :class:`isus.Index` with MVD-like statistics, made without images (for benchmarks).

    Image sizes from 1920x1080 to 5376x3024; about 20 classes per image; about 50 instances per
    image with Pareto-distributed sizes. Geometry is random but consistent (boxes inside images,
    anchors inside boxes, cell counts summing to the class pixels), which is all sampling and
    statistics read.
    """
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
    images["image_id_blob"], images["image_id_offsets"] = pack_strings([f"sim{i:06d}" for i in range(num_images)])
    images["file_name_blob"], images["file_name_offsets"] = pack_strings([f"sim{i:06d}.jpg" for i in range(num_images)])
    meta = {"kind": "index", "schema": SCHEMA_VERSION, "isus_version": "simulated",
            "dataset": {"name": "simulated", "root": "", "split": "training", "source": "simulated",
                        "has_instances": True, "num_images": num_images},
            "params": {"grid": grid, "anchors": anchors, "cache_dir": None}, "categories": cats,
            "image_range": [0, num_images], "int_image_ids": False, "cache_bytes": 0}
    return Index(meta, assemble(meta, images, rows))
