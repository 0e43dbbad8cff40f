"""Numba kernels: small pure functions over arrays, no I/O.

Each has a plain-numpy twin in ``tests/reference.py``; tests compare them on random inputs.
Setting ``NUMBA_DISABLE_JIT=1`` runs them as plain Python (slow, for debugging/coverage).
"""
from __future__ import annotations

from typing import Any, Callable, TypeVar, cast

import numba
import numpy as np
from numpy.typing import NDArray

__all__ = [
    "count_u16", "dense_segments", "scan_dense", "anchor_points", "rle_encode_rows", "rle_decode_window",
    "rle_rows_valid", "rle_sample_targets", "bilinear_taps", "resample_bilinear",
    "crop_maps", "instance_masks",
    "pair_counts", "mask_rle_counts", "colors_to_ids", "segment_areas",
]

_F = TypeVar("_F", bound=Callable[..., Any])
_njit = numba.njit(nogil=True, cache=True)


def _jit(fn: _F) -> _F:
    """``numba.njit(nogil=True, cache=True)``, typed as keeping ``fn``'s signature (older numba
    releases ship no type information)."""
    return cast(_F, _njit(fn))


@_jit
def count_u16(values: NDArray[np.uint16]) -> NDArray[np.int64]:
    """Histogram of a uint16 array over 0..65535 (``np.bincount`` would first copy it to int64)."""
    counts = np.zeros(65536, dtype=np.int64)
    flat = values.ravel()
    for k in range(flat.shape[0]):
        counts[flat[k]] += 1
    return counts


@_jit
def _add_span(area: np.ndarray, box: np.ndarray, k: int, x0: int, x1: int, y: int) -> None:
    """Count pixels ``[x0, x1)`` of row ``y`` to segment ``k``'s area and box ``(x0, y0, x1, y1)``
    (exclusive ends); rows may come in any order."""
    area[k] += x1 - x0
    if x0 < box[k, 0]:
        box[k, 0] = x0
    if x1 > box[k, 2]:
        box[k, 2] = x1
    if y < box[k, 1]:
        box[k, 1] = y
    if y + 1 > box[k, 3]:
        box[k, 3] = y + 1


@_jit
def _run_end(dense: np.ndarray, y: int, x: int) -> int:
    """End (exclusive) of the run of equal values starting at ``dense[y, x]``."""
    w = dense.shape[1]
    d = dense[y, x]
    e = x + 1
    while e < w and dense[y, e] == d:
        e += 1
    return e


@_jit
def _first_at_least(xs: np.ndarray, lo: int, hi: int, v: int) -> int:
    """The first ``k`` in ``[lo, hi)`` with ``xs[k] >= v`` (``xs`` non-decreasing; ``hi`` if none)."""
    while lo < hi:
        mid = (lo + hi) >> 1
        if xs[mid] < v:
            lo = mid + 1
        else:
            hi = mid
    return lo


@_jit
def _search(sorted_values: np.ndarray, v: int) -> int:
    """First position in ``sorted_values`` whose value is >= ``v`` (binary search)."""
    return _first_at_least(sorted_values, 0, sorted_values.shape[0], v)


@_jit
def dense_segments(ids: np.ndarray, seg_ids: np.ndarray) -> NDArray[np.uint16]:
    """Map segment ids to dense indices: ``seg_ids[k]`` -> ``k + 1``, anything else -> 0.

    ``seg_ids`` must be sorted ascending. Runs of equal ids (the common case in raster order)
    skip the binary search.
    """
    h, w = ids.shape
    out = np.empty((h, w), dtype=np.uint16)  # every pixel is written below
    n = seg_ids.shape[0]
    last_v = -(2**62)
    last_k = 0
    for y in range(h):
        for x in range(w):
            v = ids[y, x]
            if v != last_v:
                lo = _search(seg_ids, v)
                last_k = lo + 1 if lo < n and seg_ids[lo] == v else 0
                last_v = v
            out[y, x] = last_k
    return out


@_jit
def scan_dense(dense: np.ndarray, n: int, grid: int
               ) -> tuple[NDArray[np.int64], NDArray[np.int32], NDArray[np.float64], NDArray[np.int64]]:
    """One pass over a dense segment map (0 = void, 1..n = segments).

    Returns
    -------
    area : (n,) int64 pixel counts
    box : (n, 4) int32 ``x0, y0, x1, y1`` in pixel-edge coordinates (x1 = last column + 1)
    sums : (n, 2) float64 sums of pixel-centre coordinates x + 0.5, y + 0.5
    cells : (n, grid * grid) int64 pixel counts per cell of a ``grid x grid`` partition
        (row ``gy`` covers image rows ``[gy*H/grid, (gy+1)*H/grid)``), cell index ``gy*grid + gx``

    Works on runs of equal values along each row (one comparison per pixel, the bookkeeping
    once per run), since segment maps are piecewise constant.
    """
    h, w = dense.shape
    area = np.zeros(n, dtype=np.int64)
    box = np.empty((n, 4), dtype=np.int32)
    box[:, 0] = w
    box[:, 1] = h
    box[:, 2] = 0
    box[:, 3] = 0
    sums = np.zeros((n, 2), dtype=np.float64)
    cells = np.zeros((n, grid * grid), dtype=np.int64)
    # first column of each cell column: x belongs to column gx iff x * grid // w == gx
    col_start = np.empty(grid + 1, dtype=np.int64)
    for g in range(grid + 1):
        col_start[g] = (g * w + grid - 1) // grid
    for y in range(h):
        cy = ((y * grid) // h) * grid
        x = 0
        while x < w:
            d = dense[y, x]
            e = _run_end(dense, y, x)
            if d != 0:
                k = d - 1
                m = e - x
                _add_span(area, box, k, x, e, y)
                sums[k, 0] += m * (x + e) * 0.5
                sums[k, 1] += m * (y + 0.5)
                gx = (x * grid) // w
                a = x
                while a < e:
                    b = min(e, col_start[gx + 1])
                    cells[k, cy + gx] += b - a
                    a = b
                    gx += 1
            x = e
    return area, box, sums, cells


@_jit
def anchor_points(dense: np.ndarray, area: NDArray[np.int64], k: int) -> NDArray[np.int32]:
    """``k`` pixels of each segment, evenly spread over its pixels in raster order.

    Anchor ``j`` of segment ``s`` is its pixel of rank ``floor((j + 0.5) * area[s] / k)``.
    Returns ``(n, k, 2)`` int32 ``(x, y)``; rows of empty segments are -1.
    """
    n = area.shape[0]
    out = np.full((n, k, 2), -1, dtype=np.int32)
    seen = np.zeros(n, dtype=np.int64)
    nxt = np.zeros(n, dtype=np.int64)  # index of the next anchor to take
    h, w = dense.shape
    for y in range(h):
        x = 0
        while x < w:
            d = dense[y, x]
            e = _run_end(dense, y, x)
            if d != 0:
                s = d - 1
                j = nxt[s]
                while j < k:
                    r = (2 * j + 1) * area[s] // (2 * k)
                    if r >= seen[s] + (e - x):
                        break
                    out[s, j, 0] = x + (r - seen[s])
                    out[s, j, 1] = y
                    j += 1
                nxt[s] = j
                seen[s] += e - x
            x = e
    return out


@_jit
def rle_encode_rows(dense: np.ndarray) -> tuple[NDArray[np.int64], NDArray[np.uint16], NDArray[np.int32]]:
    """Run-length encode each row of a dense map.

    Returns ``row_offsets`` (H+1,) int64 into ``values`` (uint16) and ``ends`` (int32, exclusive
    end column of each run); row ``y``'s runs are ``[row_offsets[y], row_offsets[y+1])``.
    """
    h, w = dense.shape
    runs = 0
    for y in range(h):
        runs += 1
        for x in range(1, w):
            if dense[y, x] != dense[y, x - 1]:
                runs += 1
    values = np.empty(runs, dtype=np.uint16)
    ends = np.empty(runs, dtype=np.int32)
    offsets = np.empty(h + 1, dtype=np.int64)
    r = 0
    for y in range(h):
        offsets[y] = r
        for x in range(1, w):
            if dense[y, x] != dense[y, x - 1]:
                values[r] = dense[y, x - 1]
                ends[r] = x
                r += 1
        values[r] = dense[y, w - 1]
        ends[r] = w
        r += 1
    offsets[h] = r
    return offsets, values, ends


@_jit
def _first_run_after(ends: np.ndarray, a: int, b: int, x: int) -> int:
    """The first run of ``ends[a:b]`` (one row's increasing run ends) that ends after ``x``."""
    while a < b:
        mid = (a + b) >> 1
        if ends[mid] <= x:
            a = mid + 1
        else:
            b = mid
    return a


@_jit
def rle_decode_window(offsets: np.ndarray, values: np.ndarray, ends: np.ndarray, y0: int, y1: int, x0: int, x1: int,
                      fill: int) -> NDArray[np.uint16]:
    """Decode rows ``[y0, y1)`` and columns ``[x0, x1)`` of a row-RLE map made by
    :func:`rle_encode_rows`; ``x1`` may exceed the map's width, those pixels get ``fill``."""
    out = np.full((y1 - y0, x1 - x0), fill, dtype=np.uint16)
    for y in range(y0, y1):
        b = offsets[y + 1]
        x = x0
        r = _first_run_after(ends, offsets[y], b, x0)
        while r < b and x < x1:
            e = min(ends[r], x1)
            for xx in range(x, e):
                out[y - y0, xx - x0] = values[r]
            x = e
            r += 1
    return out


@_jit
def rle_rows_valid(offsets: np.ndarray, ends: np.ndarray, width: int) -> bool:
    """Whether row-RLE tables are well formed: offsets start at 0, never decrease and end at
    ``len(ends)``; within each row the run ends increase and the last one is ``width``.

    The decoders index without bounds checks, so a cache entry is checked with this first."""
    rows = offsets.shape[0] - 1
    if rows < 0 or offsets[0] != 0 or offsets[rows] != ends.shape[0]:
        return False
    for y in range(rows):
        a, b = offsets[y], offsets[y + 1]
        if b < a or (b == a and width > 0):
            return False
        prev = 0
        for r in range(a, b):
            if ends[r] <= prev:
                return False
            prev = ends[r]
        if b > a and prev != width:
            return False
    return True


@_jit
def rle_sample_targets(offsets: np.ndarray, values: np.ndarray, ends: np.ndarray, width: int, rows: np.ndarray,
                       xs: np.ndarray, flip: bool, id_lut: np.ndarray, sem_lut: np.ndarray, crowd_lut: np.ndarray,
                       dense: np.ndarray, ids: np.ndarray, sem: np.ndarray, crowd: np.ndarray, row0: int,
                       area: np.ndarray, box: np.ndarray) -> int:
    """Nearest-neighbour sample of a row-RLE map and the crop's per-pixel maps, in one pass.

    ``rows[j]`` is a row of the tables, or -1 for a row outside the map; ``xs`` are the source
    columns, non-decreasing (may lie outside ``[0, width)``: void there); with ``flip`` output
    column ``k`` takes ``xs[n - 1 - k]``. Each sampled pixel of value ``v`` (row ``row0 + j``) gets
    ``dense = v``, ``ids = id_lut[v]``, ``sem = sem_lut[v]`` and ``crowd = crowd_lut[v]``; for
    ``v > 0`` it adds to ``area[v - 1]`` and ``box[v - 1]`` ``(x0, y0, x1, y1)`` (exclusive ends;
    the caller starts x0 and y0 at the output's width and height). A row costs its runs (a binary
    search of ``xs`` for where each ends) plus one fill per span of equal pixels, whatever the
    window's width; a row repeated in ``rows`` (upscaling) is copied and its spans counted again.
    An output with no rows (``shape[0] == 0``) is not written, nor its table read: the crop's
    maps need all four, compact targets ``ids`` alone, the segment map alone ``dense``.

    Returns 0, or the first value with no entry in ``id_lut`` (a corrupt map: nothing is read
    past the tables, the caller raises).
    """
    n = xs.shape[0]
    nlut = id_lut.shape[0]
    if (sem.shape[0] > 0 and sem_lut.shape[0] < nlut) or (crowd.shape[0] > 0 and crowd_lut.shape[0] < nlut):
        return int(nlut)  # tables shorter than the id table: refuse rather than read past them
    want_dense, want_ids = dense.shape[0] > 0, ids.shape[0] > 0
    want_sem, want_crowd = sem.shape[0] > 0, crowd.shape[0] > 0
    lo = 0
    while lo < n and xs[lo] < 0:
        lo += 1
    hi = n
    while hi > lo and xs[hi - 1] >= width:
        hi -= 1
    # the spans (value, first, end output column) of the last row expanded: a repeated row
    # (upscaling) copies its pixels and adds the same spans again
    spans = np.empty((max(n, 1), 3), np.int64)
    ns = 0
    for j in range(rows.shape[0]):
        y = rows[j]
        yo = row0 + j
        if (j > 0 and y == rows[j - 1]) or y < 0 or lo >= hi:
            if j > 0 and y == rows[j - 1]:
                if want_ids:
                    ids[yo] = ids[yo - 1]
                if want_dense:
                    dense[yo] = dense[yo - 1]
                if want_sem:
                    sem[yo] = sem[yo - 1]
                if want_crowd:
                    crowd[yo] = crowd[yo - 1]
            else:  # a row outside the map, or no column inside it: void
                ns = 0
                if want_ids:
                    ids[yo] = id_lut[0]
                if want_dense:
                    dense[yo] = 0
                if want_sem:
                    sem[yo] = sem_lut[0]
                if want_crowd:
                    crowd[yo] = crowd_lut[0]
                continue
        else:
            ns = 0
            # the columns left of the map, each run's span, the columns right of it: one fill per span
            k = 0
            b = offsets[y + 1]
            r = _first_run_after(ends, offsets[y], b, xs[lo])
            while k < n:
                if k < lo:
                    k2, v = lo, 0
                elif k >= hi:
                    k2, v = n, 0
                else:
                    k2 = _first_at_least(xs, k + 1, hi, ends[r])  # columns k..k2-1 fall in run r
                    v = int(values[r])
                    if v >= nlut:
                        return v
                c0, c1 = (n - k2, n - k) if flip else (k, k2)
                if want_ids:
                    ids[yo, c0:c1] = id_lut[v]
                if want_dense:
                    dense[yo, c0:c1] = v
                if want_sem:
                    sem[yo, c0:c1] = sem_lut[v]
                if want_crowd:
                    crowd[yo, c0:c1] = crowd_lut[v]
                if v > 0:
                    spans[ns, 0] = v
                    spans[ns, 1] = c0
                    spans[ns, 2] = c1
                    ns += 1
                if lo <= k < hi and k2 < hi:
                    r = _first_run_after(ends, r + 1, b, xs[k2])
                k = k2
        for q in range(ns):
            _add_span(area, box, spans[q, 0] - 1, spans[q, 1], spans[q, 2], yo)
    return 0


#: fixed-point bits of the bilinear weights: products of two stay within int32 (8 + 2 * 11 bits)
BILINEAR_BITS = 11


@_jit
def bilinear_taps(start: float, step: float, n: int) -> tuple[NDArray[np.int64], NDArray[np.int32]]:
    """Left/top neighbour and fixed-point weight of the right/bottom one for ``n`` output pixels
    sampling source positions ``start + k * step`` (pixel centres at integers)."""
    idx = np.empty(n, np.int64)
    wgt = np.empty(n, np.int32)
    one = 1 << BILINEAR_BITS
    for k in range(n):
        x = start + k * step
        i = np.floor(x)
        w = int(np.rint((x - i) * one))
        if w == one:
            i += 1
            w = 0
        idx[k] = int(i)
        wgt[k] = w
    return idx, wgt


@_jit
def _bilinear_hrow(rows: NDArray[np.uint8], j: int, lo: int, xo: NDArray[np.uint64], xa: NDArray[np.int32],
                   xb: NDArray[np.int32], pad: int, swap: bool, tmp: NDArray[np.uint8], buf: NDArray[np.int32]) -> None:
    """Horizontal pass of source row ``j`` of ``rows`` (H, 3W) into ``buf`` (3n,) int32, in output
    channel order: ``buf[3u + c] = p(xi[u], c) * xb[u] + p(xi[u] + 1, c) * xa[u]``, where ``xo[u] =
    3 * (xi[u] - lo)`` and pixels outside the image read ``pad``."""
    one = 1 << BILINEAR_BITS
    h, w3 = rows.shape
    if not 0 <= j < h:
        buf[:] = pad * one
        return
    row = rows[j]
    span3 = tmp.shape[0]
    s = 3 * lo
    if s >= 0 and s + span3 <= w3:
        src = row[s:s + span3]
    else:  # some taps fall outside the image: a padded copy of the row
        a = min(max(-s, 0), span3)
        e = max(min(w3 - s, span3), a)
        tmp[:a] = pad
        tmp[a:e] = row[s + a:s + e]
        tmp[e:] = pad
        src = tmp
    # unsigned offsets: no negative-index wrap-around test per load
    c0, c2 = (np.uint64(2), np.uint64(0)) if swap else (np.uint64(0), np.uint64(2))
    u1, u3, u4 = np.uint64(1), np.uint64(3), np.uint64(4)
    for u in range(xo.shape[0]):
        i = xo[u]
        wa = xa[u]
        wb = xb[u]
        buf[3 * u] = np.int32(src[i + c0]) * wb + np.int32(src[i + u3 + c0]) * wa
        buf[3 * u + 1] = np.int32(src[i + u1]) * wb + np.int32(src[i + u4]) * wa
        buf[3 * u + 2] = np.int32(src[i + c2]) * wb + np.int32(src[i + u3 + c2]) * wa


@_jit
def _bilinear_vrow(rows: NDArray[np.uint8], j: int, lo: int, b: int, pad: int, padrow: NDArray[np.uint8],
                   vbuf: NDArray[np.int32]) -> None:
    """Vertical pass of source rows ``j`` and ``j + 1`` over the columns ``[lo, lo + len(vbuf) / 3)``:
    ``vbuf[k] = row_j[3 lo + k] * (one - b) + row_j+1[3 lo + k] * b`` (int32), ``pad`` outside."""
    one = 1 << BILINEAR_BITS
    h, w3 = rows.shape
    r0 = rows[j] if 0 <= j < h else padrow
    r1 = rows[j + 1] if 0 <= j + 1 < h else padrow
    span3 = vbuf.shape[0]
    s = 3 * lo
    a = min(max(-s, 0), span3)
    e = max(min(w3 - s, span3), a)
    vbuf[:a] = pad * one
    vbuf[e:] = pad * one
    p = r0[s + a:s + e]
    q = r1[s + a:s + e]
    d = vbuf[a:e]
    wp = np.int32(one - b)
    wq = np.int32(b)
    for k in range(e - a):  # contiguous: vectorised
        d[k] = np.int32(p[k]) * wp + np.int32(q[k]) * wq


@_jit
def _bilinear_hout(vbuf: NDArray[np.int32], xo: NDArray[np.uint64], xa: NDArray[np.int32], xb: NDArray[np.int32],
                   swap: bool, o: NDArray[np.uint8]) -> None:
    """Horizontal pass of a vertically interpolated row into output row ``o`` (3n,) uint8."""
    half = 1 << (2 * BILINEAR_BITS - 1)
    shift = 2 * BILINEAR_BITS
    c0, c2 = (np.uint64(2), np.uint64(0)) if swap else (np.uint64(0), np.uint64(2))
    u1, u3, u4 = np.uint64(1), np.uint64(3), np.uint64(4)
    for u in range(xo.shape[0]):
        i = xo[u]
        wa = xa[u]
        wb = xb[u]
        o[3 * u] = (vbuf[i + c0] * wb + vbuf[i + u3 + c0] * wa + half) >> shift
        o[3 * u + 1] = (vbuf[i + u1] * wb + vbuf[i + u4] * wa + half) >> shift
        o[3 * u + 2] = (vbuf[i + c2] * wb + vbuf[i + u3 + c2] * wa + half) >> shift


@_jit
def _resample_bilinear(src: NDArray[np.uint8], xi: NDArray[np.int64], xw: NDArray[np.int32], yi: NDArray[np.int64],
                       yw: NDArray[np.int32], pad: int, swap: bool, out: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """:func:`resample_bilinear` on C-contiguous ``src`` and ``out``."""
    n = xi.shape[0]
    m = yi.shape[0]
    h, w = src.shape[0], src.shape[1]
    if n == 0 or m == 0:
        return out
    one = 1 << BILINEAR_BITS
    lo = xi.min()
    span = xi.max() + 2 - lo
    xo = np.empty(n, np.uint64)
    xa = np.empty(n, np.int32)
    xb = np.empty(n, np.int32)
    for u in range(n):
        xo[u] = np.uint64(3 * (xi[u] - lo))
        xa[u] = xw[u]
        xb[u] = one - xw[u]
    rows = src.reshape(h, 3 * w)
    flat = out.reshape(m, 3 * n)
    # The sum is exact in int32 whatever the order of the two passes, so the cheaper order is
    # taken: rows first when each output row has its own source rows (shrinking, or nearly:
    # then each output row costs one horizontal pass), else each source row's horizontal pass
    # once, kept for the output rows that fall between it and the next (enlarging).
    if 8 * (abs(yi[m - 1] - yi[0]) + 2) >= 7 * m:
        vbuf = np.empty(3 * span, np.int32)
        padrow = np.full(3 * w, pad, np.uint8)
        for v in range(m):
            _bilinear_vrow(rows, yi[v], lo, yw[v], pad, padrow, vbuf)
            _bilinear_hout(vbuf, xo, xa, xb, swap, flat[v])
        return out
    tmp = np.empty(3 * span, np.uint8)
    r0 = np.empty(3 * n, np.int32)
    r1 = np.empty(3 * n, np.int32)
    have0, have1 = -(1 << 62), -(1 << 62)
    half = 1 << (2 * BILINEAR_BITS - 1)
    shift = 2 * BILINEAR_BITS
    for v in range(m):
        j = yi[v]
        if have0 != j:
            if have1 == j:
                r0, r1 = r1, r0
                have0, have1 = have1, have0
            else:
                _bilinear_hrow(rows, j, lo, xo, xa, xb, pad, swap, tmp, r0)
                have0 = j
        if have1 != j + 1:
            _bilinear_hrow(rows, j + 1, lo, xo, xa, xb, pad, swap, tmp, r1)
            have1 = j + 1
        b = np.int32(yw[v])
        a = np.int32(one) - b
        o = flat[v]
        for k in range(3 * n):  # contiguous: vectorised
            o[k] = (r0[k] * a + r1[k] * b + half) >> shift
    return out


def resample_bilinear(src: np.ndarray, xi: NDArray[np.int64], xw: NDArray[np.int32], yi: NDArray[np.int64],
                      yw: NDArray[np.int32], pad: int, swap: bool, out: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """Separable bilinear resampling of ``src`` (H, W, 3) uint8 into ``out`` (len(yi), len(xi), 3)
    uint8, with the taps of :func:`bilinear_taps`: output pixel ``(v, u)`` interpolates source
    rows ``yi[v]``, ``yi[v] + 1`` and columns ``xi[u]``, ``xi[u] + 1`` with the 11-bit weights
    ``yw[v]``, ``xw[u]`` of the second ones, in exact integer arithmetic rounded once at the end
    (``tests/reference.py:bilinear_fixed``); neighbours outside ``src`` take the value ``pad``.
    With ``swap`` the channel order is reversed (BGR in, RGB out).

    The two passes run in whichever order costs less (the exact sum does not depend on it):
    enlarging, each source row is interpolated horizontally once and reused; shrinking, each
    output row blends its two source rows first, then one horizontal pass. ``src`` that is not
    C-contiguous is copied first (pass the whole decoded buffer and shifted taps rather than a
    view); ``out`` is written in place and returned.
    """
    src = np.ascontiguousarray(src)
    if out.flags.c_contiguous:
        return _resample_bilinear(src, xi, xw, yi, yw, pad, swap, out)
    out[...] = _resample_bilinear(src, xi, xw, yi, yw, pad, swap, np.empty(out.shape, np.uint8))
    return out


@_jit
def crop_maps(dense: np.ndarray, id_lut: np.ndarray, sem_lut: np.ndarray, crowd_lut: np.ndarray
              ) -> tuple[NDArray[np.int32], NDArray[np.int64], NDArray[np.bool_], NDArray[np.int64], NDArray[np.int64]]:
    """One pass over a crop's dense segment indices (0 void, ``k + 1`` segment ``k``): the segment
    id map ``id_lut[dense]`` (int32), the semantic map ``sem_lut[dense]`` (int64), the crowd mask
    ``crowd_lut[dense]``, and per segment ``k`` its pixel count and box ``(x0, y0, x1, y1)``
    (exclusive ends; zeros when absent)."""
    h, w = dense.shape
    n = id_lut.shape[0] - 1
    ids = np.empty((h, w), np.int32)
    sem = np.empty((h, w), np.int64)
    crowd = np.empty((h, w), np.bool_)
    area = np.zeros(n, np.int64)
    box = np.zeros((n, 4), np.int64)
    box[:, 0] = w
    box[:, 1] = h
    # the box update is inlined, not _add_span's: rows come in order here, and the shared update
    # measured 10-40 % slower on this per-pixel loop (crop_ids likewise)
    for y in range(h):
        for x in range(w):
            d = dense[y, x]
            ids[y, x] = id_lut[d]
            sem[y, x] = sem_lut[d]
            crowd[y, x] = crowd_lut[d]
            if d > 0:
                k = d - 1
                area[k] += 1
                if x < box[k, 0]:
                    box[k, 0] = x
                if x + 1 > box[k, 2]:
                    box[k, 2] = x + 1
                if y < box[k, 1]:
                    box[k, 1] = y
                box[k, 3] = y + 1
    for k in range(n):
        if area[k] == 0:
            box[k, 0] = 0
            box[k, 1] = 0
    return ids, sem, crowd, area, box


def instance_masks(dense: np.ndarray, segs: NDArray[np.int64], box: np.ndarray) -> NDArray[np.bool_]:
    """``masks[j] = dense == segs[j] + 1``, (len(segs), H, W) bool, each compared only inside its
    box ``box[j]`` ``(x0, y0, x1, y1)`` (zeros elsewhere: the box holds the whole segment)."""
    # numpy's zeros, not numba's: calloc'd (and hugepage-advised) memory is zeroed lazily, so only
    # the boxes' pages are touched here; numba's allocator would zero all N MiB up front
    masks = np.zeros((segs.shape[0],) + dense.shape, np.bool_)
    _fill_masks(dense, segs, box, masks)
    return masks


@_jit
def _fill_masks(dense: np.ndarray, segs: NDArray[np.int64], box: np.ndarray, masks: np.ndarray) -> None:
    for j in range(segs.shape[0]):
        v = segs[j] + 1
        for y in range(box[j, 1], box[j, 3]):
            for x in range(box[j, 0], box[j, 2]):
                masks[j, y, x] = dense[y, x] == v


@_jit
def _dense_index(seg_ids: np.ndarray, v: int) -> int:
    """Position + 1 of ``v`` in the sorted ``seg_ids``; 0 for id 0; ``len + 1`` for an unknown id."""
    if v == 0:
        return 0
    n = seg_ids.shape[0]
    lo = _search(seg_ids, v)
    return lo + 1 if lo < n and seg_ids[lo] == v else n + 1


@_jit
def pair_counts(gt_ids: np.ndarray, pred_ids: np.ndarray, gt_seg_ids: np.ndarray, pred_seg_ids: np.ndarray
                ) -> NDArray[np.int64]:
    """Pixel counts of every (ground-truth segment, predicted segment) pair in one pass.

    ``gt_seg_ids`` and ``pred_seg_ids`` are sorted ascending. Returns an int64 matrix of shape
    ``(G + 2, P + 2)``: row/column 0 is id 0 (void), ``k + 1`` is ``seg_ids[k]``, and the last
    row/column counts pixels whose id is in neither list (an error for the caller to report).
    Consecutive pixels with the same pair of ids are counted once per run.
    """
    g_n = gt_seg_ids.shape[0]
    p_n = pred_seg_ids.shape[0]
    out = np.zeros((g_n + 2, p_n + 2), dtype=np.int64)
    h, w = gt_ids.shape
    last_g = gt_ids[0, 0] if h and w else 0
    last_p = pred_ids[0, 0] if h and w else 0
    gi = _dense_index(gt_seg_ids, last_g)
    pi = _dense_index(pred_seg_ids, last_p)
    run = 0
    for y in range(h):
        for x in range(w):
            g = gt_ids[y, x]
            p = pred_ids[y, x]
            if g != last_g or p != last_p:
                out[gi, pi] += run
                run = 0
                if g != last_g:
                    gi = _dense_index(gt_seg_ids, g)
                    last_g = g
                if p != last_p:
                    pi = _dense_index(pred_seg_ids, p)
                    last_p = p
            run += 1
    if run:
        out[gi, pi] += run
    return out


@_jit
def _emit(counts: NDArray[np.int64], write: bool, n: int, cur: int, run: int, v: int, length: int
          ) -> tuple[int, int, int]:
    """Append ``length`` pixels of value ``v`` to the runs: ``(n, cur, run)`` after them."""
    if v == cur:
        return n, cur, run + length
    if write:
        counts[n] = run
    return n + 1, v, length


@_jit
def _mask_runs(dense: np.ndarray, k: int, x0: int, y0: int, x1: int, y1: int, counts: NDArray[np.int64],
               write: bool) -> int:
    h, w = dense.shape
    n, cur, run = 0, 0, x0 * h  # the open run: zeros of the whole columns left of the box
    for x in range(x0, x1):
        # zeros above the box, the box's part of column x, zeros below
        if y0 > 0:
            n, cur, run = _emit(counts, write, n, cur, run, 0, y0)
        for y in range(y0, y1):
            n, cur, run = _emit(counts, write, n, cur, run, 1 if dense[y, x] == k else 0, 1)
        if h > y1:
            n, cur, run = _emit(counts, write, n, cur, run, 0, h - y1)
    if w > x1:
        n, cur, run = _emit(counts, write, n, cur, run, 0, (w - x1) * h)
    if write:
        counts[n] = run
    return n + 1


@_jit
def mask_rle_counts(dense: np.ndarray, k: int, x0: int, y0: int, x1: int, y1: int) -> NDArray[np.int64]:
    """Uncompressed COCO RLE (column-major run lengths, starting with a run of zeros) of the
    mask ``dense == k``, whose pixels all lie in the box ``[x0, x1) x [y0, y1)``.

    Costs the box's area, not the image's; ``pycocotools.mask.frPyObjects`` compresses the result.
    """
    empty = np.empty(0, dtype=np.int64)
    n = _mask_runs(dense, k, x0, y0, x1, y1, empty, False)
    counts = np.empty(n, dtype=np.int64)
    _mask_runs(dense, k, x0, y0, x1, y1, counts, True)
    return counts


@_jit
def colors_to_ids(img: np.ndarray, bgr: bool) -> NDArray[np.int32]:
    """COCO panoptic colour encoding ``id = R + 256 G + 256^2 B`` of an ``(H, W, 3)`` uint8 image
    (channels in B, G, R order when ``bgr``), as int32, without an int32 copy per channel."""
    h, w = img.shape[0], img.shape[1]
    out = np.empty((h, w), dtype=np.int32)
    r, b = (2, 0) if bgr else (0, 2)
    for y in range(h):
        for x in range(w):
            out[y, x] = np.int32(img[y, x, r]) + (np.int32(img[y, x, 1]) << 8) + (np.int32(img[y, x, b]) << 16)
    return out


@_jit
def segment_areas(ids: np.ndarray, seg_ids: np.ndarray) -> tuple[NDArray[np.int64], int, int]:
    """Pixels of each id in the sorted ``seg_ids``, in one run-based pass over ``ids``.

    Returns ``(areas, unknown, first_unknown)``: ``(n,)`` int64 counts, the number of pixels whose
    non-zero id is not listed, and the first such id in raster order (0 when none).
    """
    n = seg_ids.shape[0]
    areas = np.zeros(n, dtype=np.int64)
    unknown = 0
    first_unknown = 0
    h, w = ids.shape
    for y in range(h):
        x = 0
        while x < w:
            v = ids[y, x]
            e = _run_end(ids, y, x)
            if v != 0:
                k = _search(seg_ids, v)
                if k < n and seg_ids[k] == v:
                    areas[k] += e - x
                else:
                    if unknown == 0:
                        first_unknown = v
                    unknown += e - x
            x = e
    return areas, unknown, first_unknown


@_jit
def crop_ids(dense: np.ndarray, id_lut: np.ndarray) -> tuple[NDArray[np.int32], NDArray[np.int64], NDArray[np.int64]]:
    """:func:`crop_maps` without the semantic and crowd maps (compact targets rebuild them from
    the segment ids): the id map ``id_lut[dense]`` (int32), and per segment ``k`` its pixel count
    and box ``(x0, y0, x1, y1)`` (exclusive ends; zeros when absent)."""
    h, w = dense.shape
    n = id_lut.shape[0] - 1
    ids = np.empty((h, w), np.int32)
    area = np.zeros(n, np.int64)
    box = np.zeros((n, 4), np.int64)
    box[:, 0] = w
    box[:, 1] = h
    for y in range(h):
        for x in range(w):
            d = dense[y, x]
            ids[y, x] = id_lut[d]
            if d > 0:
                k = d - 1
                area[k] += 1
                if x < box[k, 0]:
                    box[k, 0] = x
                if x + 1 > box[k, 2]:
                    box[k, 2] = x + 1
                if y < box[k, 1]:
                    box[k, 1] = y
                box[k, 3] = y + 1
    for k in range(n):
        if area[k] == 0:
            box[k, 0] = 0
            box[k, 1] = 0
    return ids, area, box


__all__ += ["crop_ids"]
