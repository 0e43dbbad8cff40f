"""Slow, obvious twins of the numba kernels (and other fast paths), for tests only."""
from __future__ import annotations

import numpy as np


def count_u16(values):
    return np.bincount(values.ravel().astype(np.int64), minlength=65536)


def dense_segments(ids, seg_ids):
    out = np.zeros(ids.shape, dtype=np.uint16)
    for k, s in enumerate(seg_ids):
        out[ids == s] = k + 1
    return out


def scan_dense(dense, n, grid):
    h, w = dense.shape
    area = np.zeros(n, np.int64)
    box = np.zeros((n, 4), np.int32)
    box[:, 0], box[:, 1] = w, h
    sums = np.zeros((n, 2))
    cells = np.zeros((n, grid * grid), np.int64)
    ys, xs = np.mgrid[0:h, 0:w]
    cell = (ys * grid // h) * grid + xs * grid // w
    for k in range(n):
        m = dense == k + 1
        area[k] = m.sum()
        if area[k]:
            box[k] = [xs[m].min(), ys[m].min(), xs[m].max() + 1, ys[m].max() + 1]
            sums[k] = [(xs[m] + 0.5).sum(), (ys[m] + 0.5).sum()]
            cells[k] = np.bincount(cell[m], minlength=grid * grid)
    return area, box, sums, cells


def anchor_points(dense, area, k):
    n = len(area)
    out = np.full((n, k, 2), -1, np.int32)
    for s in range(n):
        ys, xs = np.nonzero(dense == s + 1)  # raster order
        for j in range(k):
            if area[s]:
                r = (2 * j + 1) * area[s] // (2 * k)
                out[s, j] = [xs[r], ys[r]]
    return out


def rle_decode_full(offsets, values, ends, width):
    h = len(offsets) - 1
    out = np.zeros((h, width), np.uint16)
    for y in range(h):
        x = 0
        for r in range(offsets[y], offsets[y + 1]):
            out[y, x:ends[r]] = values[r]
            x = ends[r]
    return out


def rle_rows_valid(offsets, ends, width):
    offsets, ends = np.asarray(offsets), np.asarray(ends)
    if len(offsets) < 1 or offsets[0] != 0 or offsets[-1] != len(ends) or (np.diff(offsets) < 0).any():
        return False
    for y in range(len(offsets) - 1):
        row = ends[offsets[y]:offsets[y + 1]]
        if len(row) == 0:
            if width > 0:
                return False
            continue
        if row[0] <= 0 or (np.diff(row) <= 0).any() or row[-1] != width:
            return False
    return True


def rle_sample(offsets, values, ends, width, rows, xs, flip):
    """Decode every row, then index: the obvious way."""
    full = rle_decode_full(offsets, values, ends, width)
    xs = np.asarray(xs)
    out = np.zeros((len(rows), len(xs)), np.uint16)
    inside = (xs >= 0) & (xs < width)
    for j, y in enumerate(rows):
        if y >= 0:
            out[j, inside] = full[y, xs[inside]]
    return out[:, ::-1] if flip else out


def colors_to_ids(img, bgr):
    img = img.astype(np.int64)
    r, b = (img[..., 2], img[..., 0]) if bgr else (img[..., 0], img[..., 2])
    return (r + 256 * img[..., 1] + 65536 * b).astype(np.int32)


def segment_areas(ids, seg_ids):
    areas = np.array([(ids == s).sum() for s in seg_ids], dtype=np.int64)
    unknown_mask = (ids != 0) & ~np.isin(ids, seg_ids)
    first = int(ids[unknown_mask][0]) if unknown_mask.any() else 0  # raster order
    return areas, int(unknown_mask.sum()), first


def bilinear_float(src, x_start, x_step, y_start, y_step, w_out, h_out, pad):
    """Bilinear sampling in floating point, the textbook way (neighbours outside are ``pad``)."""
    h, w = src.shape[:2]
    padded = np.full((h + 4, w + 4, 3), pad, np.float64)
    padded[2:-2, 2:-2] = src
    xs = x_start + np.arange(w_out) * x_step
    ys = y_start + np.arange(h_out) * y_step
    x0, y0 = np.floor(xs).astype(int), np.floor(ys).astype(int)
    ax, ay = (xs - x0)[None, :, None], (ys - y0)[:, None, None]
    xa, xb = np.clip(x0 + 2, 0, w + 3), np.clip(x0 + 3, 0, w + 3)
    ya, yb = np.clip(y0 + 2, 0, h + 3), np.clip(y0 + 3, 0, h + 3)
    top = padded[ya][:, xa] * (1 - ax) + padded[ya][:, xb] * ax
    bot = padded[yb][:, xa] * (1 - ax) + padded[yb][:, xb] * ax
    return top * (1 - ay) + bot * ay


def crop_maps(dense, id_lut, sem_lut, crowd_lut):
    n = len(id_lut) - 1
    area = np.bincount(dense.ravel(), minlength=n + 1)[1:].astype(np.int64)
    box = np.zeros((n, 4), np.int64)
    for k in range(n):
        ys, xs = np.nonzero(dense == k + 1)
        if len(ys):
            box[k] = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    return id_lut[dense], sem_lut[dense], crowd_lut[dense], area, box


def instance_masks(dense, segs):
    return np.stack([dense == k + 1 for k in segs]) if len(segs) else np.zeros((0, *dense.shape), bool)


def crop_ids(dense, id_lut):
    _, _, _, area, box = crop_maps(dense, id_lut, np.zeros(len(id_lut), np.int64), np.zeros(len(id_lut), bool))
    return id_lut[dense], area, box


def bilinear_fixed(src, xi, xw, yi, yw, pad, swap, bits=11):
    """Bilinear sampling in exact integer arithmetic, rounded once: output pixel (v, u) is
    ``(sum of the four neighbours times their (2**bits)-scaled weights + half) >> 2 * bits``,
    the neighbours of rows ``yi[v]``, ``yi[v] + 1`` and columns ``xi[u]``, ``xi[u] + 1`` reading
    ``pad`` outside ``src``; ``xw``, ``yw`` are the weights of the second ones. ``swap`` reverses
    the channels. What ``isus.kernels.resample_bilinear`` computes, bit for bit."""
    h, w = src.shape[:2]
    one = 1 << bits

    def at(ys, xs):
        inside = ((ys >= 0) & (ys < h))[:, None] & ((xs >= 0) & (xs < w))[None, :]
        if not (h and w):
            return np.full((len(ys), len(xs), 3), pad, np.int64)
        v = src[np.clip(ys, 0, h - 1)][:, np.clip(xs, 0, w - 1)].astype(np.int64)
        return np.where(inside[..., None], v, pad)

    xi, yi = np.asarray(xi, np.int64), np.asarray(yi, np.int64)
    ax = np.asarray(xw, np.int64)[None, :, None]
    ay = np.asarray(yw, np.int64)[:, None, None]
    top = at(yi, xi) * (one - ax) + at(yi, xi + 1) * ax
    bottom = at(yi + 1, xi) * (one - ax) + at(yi + 1, xi + 1) * ax
    out = ((top * (one - ay) + bottom * ay + (1 << (2 * bits - 1))) >> (2 * bits)).astype(np.uint8)
    return out[..., ::-1] if swap else out
