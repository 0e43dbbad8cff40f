"""Slow, obvious twins of ``isus.cabb`` (numpy / float64, written without isus code).

* ``brute_force``: the CABB minimum by dense search over the free edge(s) plus golden-section
  refinement, in pixel coordinates, for any weights and beta.
* ``brute_force_2d``: the both-sides-cut axis by a dense 2-D search over both free edges
  (checks the reduction to the boundary used by ``brute_force``, paper Prop. 2).
* ``paper_targets``: a scalar transcription of the paper's Algorithms 1-3 (App. B), for the
  unweighted case, one box at a time.
"""

from __future__ import annotations

import math

import numpy as np

GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


def huber(z: np.ndarray, beta: float) -> np.ndarray:
    a = np.abs(z)
    return np.where(a <= beta, 0.5 * z * z / beta, a - 0.5 * beta)


def encode(boxes: np.ndarray, anchors: np.ndarray, weights) -> np.ndarray:
    """torchvision BoxCoder.encode, in numpy."""
    wx, wy, ww, wh = weights
    aw, ah = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    ax, ay = anchors[:, 0] + 0.5 * aw, anchors[:, 1] + 0.5 * ah
    gw, gh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    gx, gy = boxes[:, 0] + 0.5 * gw, boxes[:, 1] + 0.5 * gh
    return np.stack([wx * (gx - ax) / aw, wy * (gy - ay) / ah, ww * np.log(gw / aw), wh * np.log(gh / ah)], 1)


def axis_loss(lo, hi, c_a, d_a, t_c, t_s, w_c, w_s, beta):
    """Smooth-L1 loss of one axis for a box with edges (lo, hi), in pixels."""
    return huber(w_c * (0.5 * (lo + hi) - c_a) / d_a - t_c, beta) + huber(
        w_s * np.log((hi - lo) / d_a) - t_s, beta
    )


def _min_one_free_edge(fixed, side, border, c_a, d_a, t_c, t_s, w_c, w_s, beta, grid):
    """min over the free edge of ``axis_loss``; side=+1: hi free, hi >= border; -1: lo free, lo <= border.

    Search variable: the box size s = |free - fixed| on a geometric grid over [s0, s1], where
    s0 is the smallest feasible size and s1 a size beyond which both terms increase (the
    centre passes the predicted centre and the size passes the predicted size).
    """
    c_p = c_a + d_a * t_c / w_c
    s_p = d_a * np.exp(t_s / w_s)
    s0 = side * (border - fixed)
    s0 = np.maximum(s0, 1e-9 * d_a)
    s1 = np.maximum.reduce([s0, side * 2.0 * (c_p - fixed), s_p]) * 1.5 + 1e-9 * d_a

    def f(log_s):
        # log_s: (n,) or (n, k); per-case parameters broadcast along the trailing axis
        ex = (lambda x: x) if log_s.ndim == 1 else (lambda x: x[:, None])
        s = np.exp(log_s)
        lo = ex(fixed) - (side < 0) * s
        hi = ex(fixed) + (side > 0) * s
        return axis_loss(lo, hi, ex(c_a), ex(d_a), ex(t_c), ex(t_s), w_c, w_s, beta)

    l0, l1 = np.log(s0), np.log(s1)
    u = np.linspace(0.0, 1.0, grid)
    g = l0[:, None] + (l1 - l0)[:, None] * u[None, :]
    vals = f(g)
    i = np.argmin(vals, axis=1)
    rows = np.arange(len(i))
    a = g[rows, np.maximum(i - 1, 0)]
    b = g[rows, np.minimum(i + 1, grid - 1)]
    best = vals[rows, i]
    best_x = g[rows, i]
    for _ in range(100):
        c = b - GOLDEN * (b - a)
        d = a + GOLDEN * (b - a)
        fc, fd = f(c), f(d)
        left = fc < fd
        b = np.where(left, d, b)
        a = np.where(left, a, c)
    m = 0.5 * (a + b)
    fm = f(m)
    better = fm < best
    best_x = np.where(better, m, best_x)
    best = np.where(better, fm, best)
    s = np.exp(best_x)
    free = fixed + side * s
    return best, free


def brute_force(pred, anchors, boxes, truncated, crop, weights, beta, grid=600):
    """Minimum of the CABB objective and a minimiser, per box, by dense search + refinement.

    Returns ``(value (N,), edges (N, 4))``: the summed loss over both axes and the box
    (xyxy, pixels) attaining it.
    """
    pred = np.asarray(pred, np.float64)
    anchors = np.asarray(anchors, np.float64)
    boxes = np.asarray(boxes, np.float64)
    crop = np.broadcast_to(np.asarray(crop, np.float64), boxes.shape)
    truncated = np.asarray(truncated, bool)
    n = len(pred)
    total = np.zeros(n)
    edges = boxes.copy()
    for ax in (0, 1):
        w_c, w_s = weights[ax], weights[ax + 2]
        d_a = anchors[:, ax + 2] - anchors[:, ax]
        c_a = anchors[:, ax] + 0.5 * d_a
        t_c, t_s = pred[:, ax], pred[:, ax + 2]
        lo, hi = boxes[:, ax], boxes[:, ax + 2]
        c_lo, c_hi = crop[:, ax], crop[:, ax + 2]
        tl, th = truncated[:, ax], truncated[:, ax + 2]
        best = axis_loss(lo, hi, c_a, d_a, t_c, t_s, w_c, w_s, beta)
        b_lo, b_hi = lo.copy(), hi.copy()
        # hi free (lo fixed at the box edge, or at the crop border when lo is cut too: that is
        # the branch of the both-cut case where the lo constraint is active)
        idx = np.nonzero(th)[0]
        if len(idx):
            fixed = np.where(tl[idx], c_lo[idx], lo[idx])
            v, free = _min_one_free_edge(fixed, 1.0, c_hi[idx], c_a[idx], d_a[idx], t_c[idx], t_s[idx], w_c, w_s, beta, grid)
            best[idx], b_lo[idx], b_hi[idx] = v, fixed, free
        idx = np.nonzero(tl)[0]
        if len(idx):
            fixed = np.where(th[idx], c_hi[idx], hi[idx])
            v, free = _min_one_free_edge(fixed, -1.0, c_lo[idx], c_a[idx], d_a[idx], t_c[idx], t_s[idx], w_c, w_s, beta, grid)
            both = th[idx]
            take = ~both | (v < best[idx])
            j = idx[take]
            best[j], b_lo[j], b_hi[j] = v[take], free[take], fixed[take]
        # both cut and the prediction itself is feasible: it is a candidate with loss 0
        c_p = c_a + d_a * t_c / w_c
        s_p = d_a * np.exp(t_s / w_s)
        p_ok = tl & th & (c_p - 0.5 * s_p <= c_lo) & (c_p + 0.5 * s_p >= c_hi)
        best = np.where(p_ok, 0.0, best)
        b_lo = np.where(p_ok, c_p - 0.5 * s_p, b_lo)
        b_hi = np.where(p_ok, c_p + 0.5 * s_p, b_hi)
        total += best
        edges[:, ax], edges[:, ax + 2] = b_lo, b_hi
    return total, edges


def brute_force_2d(pred, anchor, crop, w_c, w_s, beta, axis, grid=300):
    """Both sides cut on ``axis``: min over lo <= crop_lo, hi >= crop_hi by a 2-D search.

    Dense grid over (crop_lo - lo, hi - crop_hi) on a log-spaced grid (plus 0), then
    coordinate-wise golden refinement. Independent of the boundary reduction (Prop. 2).
    """
    d_a = anchor[axis + 2] - anchor[axis]
    c_a = anchor[axis] + 0.5 * d_a
    t_c, t_s = pred[axis], pred[axis + 2]
    c_lo, c_hi = crop[axis], crop[axis + 2]
    c_p = c_a + d_a * t_c / w_c
    s_p = d_a * np.exp(t_s / w_s)
    span = max(abs(c_p - c_lo), abs(c_p - c_hi), s_p, c_hi - c_lo) * 3.0
    r = np.concatenate([[0.0], np.geomspace(1e-7 * span, span, grid - 1)])
    e_lo, e_hi = np.meshgrid(r, r, indexing="ij")
    v = axis_loss(c_lo - e_lo, c_hi + e_hi, c_a, d_a, t_c, t_s, w_c, w_s, beta)
    i, j = np.unravel_index(np.argmin(v), v.shape)
    x = np.array([r[i], r[j]])

    def f(x0, x1):
        return float(axis_loss(c_lo - max(x0, 0.0), c_hi + max(x1, 0.0), c_a, d_a, t_c, t_s, w_c, w_s, beta))

    best = f(*x)
    for _ in range(6):
        for k in range(2):
            lo_k = r[max((i, j)[k] - 1, 0)]
            hi_k = r[min((i, j)[k] + 1, grid - 1)]
            a, b = lo_k, hi_k
            for _ in range(80):
                c = b - GOLDEN * (b - a)
                d = a + GOLDEN * (b - a)
                xc, xd = x.copy(), x.copy()
                xc[k], xd[k] = c, d
                if f(*xc) < f(*xd):
                    b = d
                else:
                    a = c
            xm = x.copy()
            xm[k] = 0.5 * (a + b)
            if f(*xm) < best:
                best, x = f(*xm), xm
    return best


# --------------------------------------------------------------------------------------
# Scalar transcription of the paper's Algorithms 1-3 (App. B), unweighted, one axis.
# Variables as in the paper: omega_P, omega_hat, a1, b1, with omega0 = b1 - a1.


def _h(z: float, beta: float) -> float:
    return 0.5 * z * z / beta if abs(z) <= beta else abs(z) - 0.5 * beta


def _dh(z: float, beta: float) -> float:
    return max(min(z / beta, 1.0), -1.0)


def _xi(w, w_p, w_hat, beta):
    return _h((w - w_hat) / 2.0, beta) + _h(math.log(w) - math.log(w_p), beta)


def _dxi(w, w_p, w_hat, beta):
    return 0.5 * _dh((w - w_hat) / 2.0, beta) + _dh(math.log(w) - math.log(w_p), beta) / w


def find_min(u, v, phi, eps=1e-13):
    """Algorithm 3 (iterative form of the recursion)."""
    while True:
        if phi(u) >= 0:
            return u
        if phi(v) <= 0:
            return v
        m = 0.5 * (u + v)
        if v - u < eps * max(1.0, abs(m)):
            return m
        if phi(m) >= 0:
            v = m
        else:
            u = m


def solve_o1_paper(w_p, w_hat, a1, b1, beta):
    """Algorithm 1."""
    w0 = b1 - a1
    S = [w0]
    dxi = lambda w: _dxi(w, w_p, w_hat, beta)  # noqa: E731
    sig = lambda w: w * _dxi(w, w_p, w_hat, beta)  # noqa: E731

    def fm(u, v, phi):
        # Intervals may be empty; the paper leaves this implicit, we skip them.
        if u <= v:
            S.append(find_min(u, v, phi))

    if max(w0, w_hat) < w_p:
        return find_min(max(w0, w_hat), w_p, dxi)
    elif max(w0, w_p) < w_hat:
        S.append(w_hat)
        e, eb = math.e, math.exp(beta)
        fm(max(w0, w_p), min(math.exp(min(beta, 1.0)) * w_p, w_hat), dxi)  # J1
        fm(max(w0, 2.0 * math.sqrt(beta), w_hat - 2.0 * beta, eb * w_p), w_hat, dxi)  # J2
        if w_hat <= 4.0 * math.sqrt(2.0):
            fm(max(w0, w_hat - 2.0 * beta, e * w_p), min(eb * w_p, w_hat), sig)  # J3
        else:
            r = math.sqrt(1.0 - 32.0 / w_hat**2)
            nu1, nu2 = w_hat / 4.0 * (1.0 - r), w_hat / 4.0 * (1.0 + r)
            fm(max(w0, w_hat - 2.0 * beta, e * w_p), min(eb * w_p, w_hat, nu1), sig)  # J4
            fm(max(w0, w_hat - 2.0 * beta, e * w_p, nu2), min(eb * w_p, w_hat), sig)  # J5
    return min(S, key=lambda w: _xi(w, w_p, w_hat, beta))


def solve_o2_paper(d_p, w_p, a2, b2, beta):
    """Algorithm 2."""
    w_hat1 = 2.0 * (d_p - a2)
    w_hat2 = 2.0 * (b2 - d_p)
    if w_p >= max(w_hat1, w_hat2):
        return d_p, w_p
    w1 = solve_o1_paper(w_p, w_hat1, a2, b2, beta)
    w2 = solve_o1_paper(w_p, w_hat2, a2, b2, beta)
    if _xi(w1, w_p, w_hat1, beta) <= _xi(w2, w_p, w_hat2, beta):
        return a2 + w1 / 2.0, w1
    return b2 - w2 / 2.0, w2


def paper_targets(pred, anchor, box, truncated, crop, beta):
    """Encoded CABB target of one box (weights (1, 1, 1, 1)) by the paper's algorithms.

    Per axis, coordinates are shifted so the crop starts at 0 (the paper's convention) and
    the cases of Sec. 2.4 are told apart by the truncation flags.
    """
    out = [0.0] * 4
    for ax in (0, 1):
        d_a = anchor[ax + 2] - anchor[ax]
        c_a = anchor[ax] + 0.5 * d_a - crop[ax]  # anchor centre, crop at [0, d_c]
        d_c = crop[ax + 2] - crop[ax]
        lo, hi = box[ax] - crop[ax], box[ax + 2] - crop[ax]
        d_g, w_g = (0.5 * (lo + hi) - c_a) / d_a, (hi - lo) / d_a
        d_p, w_p = pred[ax], math.exp(pred[ax + 2])
        tl, th = bool(truncated[ax]), bool(truncated[ax + 2])
        if not tl and not th:
            d, w = d_g, w_g
        elif th and not tl:
            a1, b1 = d_g - w_g / 2.0, (d_c - c_a) / d_a
            w = solve_o1_paper(w_p, 2.0 * (d_p - a1), a1, b1, beta)
            d = a1 + w / 2.0
        elif tl and not th:
            a1, b1 = -c_a / d_a, d_g + w_g / 2.0
            w = solve_o1_paper(w_p, 2.0 * (b1 - d_p), a1, b1, beta)
            d = b1 - w / 2.0
        else:
            d, w = solve_o2_paper(d_p, w_p, -c_a / d_a, (d_c - c_a) / d_a, beta)
        out[ax], out[ax + 2] = d, math.log(w)
    return out
