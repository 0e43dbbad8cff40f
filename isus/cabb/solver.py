"""Vectorised solver for the inner minimisation of the CABB loss.

Everything here is a pure torch function of tensors in *anchor-normalised* coordinates
(one axis at a time, ``x_norm = (x - c_A) / d_A``), batched over any shape. No Python loop
over boxes, no branching on tensor values, no host-device synchronisation: the same code runs
on CPU and CUDA.

The one-free-edge problem (O1) of the paper (Sec. 2.4, App. A) is solved in the log-size
``t = log(omega)``::

    xi(t) = huber_beta(w_c * (exp(t) - omega_hat) / 2) + huber_beta(w_s * (t - t_P)),  t >= t_0

(for ``w_c = w_s = 1`` this is the paper's objective). ``sigma(t) = d xi / dt`` is the paper's
``sigma(omega) = omega * xi'(omega)``. The set of *local minima* of ``xi`` over the real line is
enumerated exactly (see ``docs/cabb.md``):

* where the size term is linear (``|t - t_P| >= beta / w_s``), ``sigma = 0`` is a linear or
  quadratic equation in ``omega``: closed forms;
* in the band ``|t - t_P| <= beta / w_s`` the centre term splits ``omega`` into its linear-low,
  quadratic and linear-high pieces; on each, ``sigma`` is concave or convex in ``t`` and its
  turning points are roots of a quadratic. That leaves at most four segments on which ``sigma``
  is increasing and either concave or convex; each holds at most one local minimum, found by a
  few bisection steps followed by Newton steps started from the side from which Newton on a
  concave (convex) increasing function converges monotonically.

Every candidate is clamped into the feasible interval, the feasible lower end is a candidate
too, and the candidate with the lowest objective wins. Because candidates are feasible points
and the objective is evaluated exactly, the result is always feasible and never worse than
the ground truth; the root finding only decides how close to the global minimum it gets.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "huber",
    "o1_objective",
    "o1_slope",
    "solve_o1",
    "default_steps",
]

# Clamps keep every intermediate finite in float32 (exp(2 * 30) < 3.4e38 / 1e12). Inside
# them the solver is exact; outside, the predictions are clipped before solving (the target
# stays feasible, see docs/cabb.md "Robustness").
LOG_SIZE_CLIP = 30.0
CENTER_CLIP = 1.0e6


def default_steps(dtype: torch.dtype) -> tuple[int, int]:
    """(bisection steps, Newton steps) used per monotone segment for ``dtype``."""
    if dtype == torch.float64:
        return 6, 8
    return 5, 5


def huber(z: Tensor, beta: float) -> Tensor:
    """Smooth-L1 ``z**2 / (2 beta)`` if ``|z| <= beta`` else ``|z| - beta / 2`` (elementwise)."""
    a = z.abs()
    return torch.where(a <= beta, 0.5 * z * z / beta, a - 0.5 * beta)


def o1_objective(
    t: Tensor, omega_hat: Tensor, t_p: Tensor, w_c: Tensor | float, w_s: Tensor | float, beta: float
) -> Tensor:
    """Objective ``xi(t)`` of (O1) in the log-size ``t`` (see module docstring)."""
    return huber(w_c * (torch.exp(t) - omega_hat) * 0.5, beta) + huber(w_s * (t - t_p), beta)


def o1_slope(
    t: Tensor, omega_hat: Tensor, t_p: Tensor, w_c: Tensor | float, w_s: Tensor | float, beta: float
) -> tuple[Tensor, Tensor]:
    """``sigma(t) = d xi / dt`` and ``d sigma / dt`` (one-sided where ``xi`` has a kink in ``xi''``)."""
    omega = torch.exp(t)
    # centre term: F(omega) = omega * (w_c / 2) * clamp(w_c (omega - omega_hat) / (2 beta), -1, 1)
    u = w_c * (omega - omega_hat) * (0.5 / beta)
    cu = u.clamp(-1.0, 1.0)
    f = (0.5 * w_c) * omega * cu
    p = (w_c * w_c) * (0.25 / beta)
    in_c = (u.abs() < 1.0).to(t.dtype)
    # size term: G(t) = w_s * clamp(w_s (t - t_P) / beta, -1, 1)
    v = w_s * (t - t_p) / beta
    cv = v.clamp(-1.0, 1.0)
    q = (w_s * w_s) / beta
    in_s = (v.abs() < 1.0).to(t.dtype)
    sigma = f + w_s * cv
    dsigma = f + p * omega * omega * in_c + q * in_s
    return sigma, dsigma


def _safe_log(x: Tensor) -> Tensor:
    """log(x) with -inf for x <= 0 (and no NaN)."""
    return torch.log(x.clamp_min(0.0))


def solve_o1(
    omega_hat: Tensor,
    t_p: Tensor,
    t_0: Tensor,
    w_c: Tensor | float,
    w_s: Tensor | float,
    beta: float,
    steps: tuple[int, int] | None = None,
) -> Tensor:
    """Global minimiser of (O1) over ``t >= t_0``, elementwise.

    Parameters
    ----------
    omega_hat, t_p, t_0 : Tensor
        Broadcastable tensors: the paper's ``omega_hat`` (any real), the predicted log-size
        ``log(omega_P)`` (finite) and the log of the lower bound ``omega_0`` (``-inf`` allowed:
        no bound).
    w_c, w_s : float or Tensor
        Positive encoding weights of the centre and the size term (``w_x``/``w_w`` or
        ``w_y``/``w_h``); broadcastable.
    beta : float
        Smooth-L1 parameter, > 0.
    steps : (int, int), optional
        Bisection and Newton steps per segment; ``default_steps(dtype)`` if omitted.

    Returns
    -------
    Tensor
        ``t* = log(omega*)``, feasible (``>= t_0``), finite.
    """
    if steps is None:
        steps = default_steps(t_p.dtype)
    n_bisect, n_newton = steps
    omega_hat, t_p, t_0 = torch.broadcast_tensors(omega_hat, t_p, t_0)
    dtype = t_p.dtype
    b_c = beta / w_c  # half-width of the quadratic zone of the centre term, in omega / 2
    b_s = beta / w_s  # half-width of the quadratic zone of the size term, in t
    p = (w_c * w_c) * (0.25 / beta)
    q = (w_s * w_s) / beta

    # Below t_min, sigma < 0 whatever omega_hat is (|F| <= w_c omega / 2 < w_s = -G), so the
    # minimiser is >= t_min: this makes the lower end finite when omega_0 <= 0.
    t_min = torch.minimum(t_p - b_s, torch.full_like(t_p, 0.0) + _log_const(2.0 * w_s / w_c, t_p))
    lo = torch.maximum(t_0, t_min)
    # Above max(omega_hat, omega_P) both terms increase (Prop. 3).
    hi = torch.maximum(lo, torch.maximum(t_p, _safe_log(omega_hat)))

    def clip(t: Tensor) -> Tensor:
        return torch.minimum(torch.maximum(t, lo), hi)

    cands = [lo]

    # Closed forms where the size term is linear.
    # G = -w_s: F(omega) = w_s on omega > omega_hat (F increasing there: a minimum).
    om_lin = torch.full_like(omega_hat, 0.0) + 2.0 * w_s / w_c  # linear-high piece of F
    om_quad = 0.5 * omega_hat + torch.sqrt(0.25 * omega_hat * omega_hat + w_s / p)
    om_neg = torch.where(om_lin >= omega_hat + 2.0 * b_c, om_lin, om_quad)
    cands.append(clip(_safe_log(om_neg)))
    # G = +w_s: F(omega) = -w_s on the increasing (quadratic) branch omega in [omega_hat/2, omega_hat].
    disc = 0.25 * omega_hat * omega_hat - w_s / p
    om_pos = 0.5 * omega_hat + torch.sqrt(disc.clamp_min(0.0))
    cands.append(clip(torch.where(disc >= 0.0, _safe_log(om_pos), lo)))

    # Segments of the band |t - t_P| <= b_s where sigma is increasing and concave / convex.
    g_lo = t_p - b_s
    g_hi = t_p + b_s
    e1 = _safe_log(omega_hat - 2.0 * b_c)  # centre kink low  (linear-low | quadratic)
    e2 = _safe_log(omega_hat + 2.0 * b_c)  # centre kink high (quadratic | linear-high)
    tau = torch.full_like(t_p, 0.0) + _log_const(2.0 * q / w_c, t_p)  # turning point on linear-low
    t_q = _safe_log(0.25 * omega_hat)  # inflection of the quadratic piece
    d_nu = omega_hat * omega_hat - 8.0 * q / p
    real = d_nu >= 0.0
    s_nu = torch.sqrt(d_nu.clamp_min(0.0))
    inf = torch.full_like(t_p, float("inf"))
    nu1 = torch.where(real, _safe_log(0.25 * (omega_hat - s_nu)), inf)
    nu2 = torch.where(real, _safe_log(0.25 * (omega_hat + s_nu)), -inf)
    seg_lo = torch.stack(
        [
            g_lo,  # I1: linear-low, increasing up to tau (concave)
            torch.maximum(g_lo, e1),  # I2: quadratic, increasing up to nu1 (concave)
            torch.maximum(torch.maximum(g_lo, e1), torch.maximum(t_q, nu2)),  # I3: convex
            torch.maximum(g_lo, e2),  # I4: linear-high (convex, increasing)
        ]
    )
    seg_hi = torch.stack(
        [
            torch.minimum(g_hi, torch.minimum(e1, tau)),
            torch.minimum(torch.minimum(g_hi, e2), torch.minimum(t_q, nu1)),
            torch.minimum(g_hi, e2),
            g_hi,
        ]
    )
    concave = torch.tensor([True, True, False, False], device=t_p.device).view(
        (4,) + (1,) * t_p.dim()
    )
    a = torch.maximum(seg_lo, lo).clamp(max=hi)  # into the feasible interval [lo, hi]
    b = torch.minimum(seg_hi, hi).clamp(min=lo)
    b = torch.maximum(a, b)  # empty segments collapse to a point (a harmless candidate)
    oh, tp = omega_hat.unsqueeze(0), t_p.unsqueeze(0)
    for _ in range(n_bisect):
        m = 0.5 * (a + b)
        s, _ = o1_slope(m, oh, tp, w_c, w_s, beta)
        neg = s < 0.0
        a = torch.where(neg, m, a)
        b = torch.where(neg, b, m)
    # Newton on a concave increasing function from the left (convex: from the right) moves
    # monotonically towards the root without overshooting it, so it never leaves [a, b].
    x = torch.where(concave, a, b)
    for _ in range(n_newton):
        s, ds = o1_slope(x, oh, tp, w_c, w_s, beta)
        step = torch.where(ds > 0.0, s / ds.clamp_min(torch.finfo(dtype).tiny), torch.zeros_like(s))
        x = torch.minimum(torch.maximum(x - step, a), b)
    cands.extend(x.unbind(0))

    best_t = cands[0]
    best_v = o1_objective(best_t, omega_hat, t_p, w_c, w_s, beta)
    for c in cands[1:]:
        v = o1_objective(c, omega_hat, t_p, w_c, w_s, beta)
        better = v < best_v
        best_t = torch.where(better, c, best_t)
        best_v = torch.where(better, v, best_v)
    return best_t


def _log_const(x: Tensor | float, like: Tensor) -> Tensor:
    """log of a weight expression that may be a Python float or a tensor, as a tensor."""
    if isinstance(x, Tensor):
        return torch.log(x.to(like.dtype))
    return torch.full((), float(torch.log(torch.tensor(x, dtype=torch.float64))), dtype=like.dtype, device=like.device)
