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
  turning points are roots of a quadratic. That leaves four segments on which ``sigma`` is
  increasing and either concave or convex (at most three of them meet the search interval);
  each holds at most one local minimum, found by Newton steps started from the side from
  which Newton on a concave (convex) increasing function converges monotonically (preceded
  by a few bisection steps when the band is wide, ``beta / w_s > 1``).

Every candidate is clamped into the feasible interval, the feasible lower end is a candidate
too, and the candidate with the lowest objective wins. Because candidates are feasible points
and the objective is evaluated exactly, the result is always feasible and never worse than
the ground truth; the root finding only decides how close to the global minimum it gets.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "huber",
    "o1_objective",
    "solve_o1",
    "default_steps",
]

# Clamps keep every intermediate finite in float32 (exp(2 * 30) < 3.4e38 / 1e12). Inside
# them the solver is exact; outside, the predictions are clipped before solving (the target
# stays feasible, see docs/cabb.md "Robustness").
LOG_SIZE_CLIP = 30.0
CENTER_CLIP = 1.0e6


def default_steps(dtype: torch.dtype, band: float = 2.0) -> tuple[int, int]:
    """(bisection, Newton) steps per monotone segment for ``dtype`` and band width ``band``.

    ``band = 2 beta / w_s`` is the widest a segment can be (in log-size). Bisection first
    brings it to <= 2, where the monotone Newton iteration converges in a few steps
    (checked against brute force in ``tests/test_cabb.py`` for beta / w_s up to 20).
    """
    n_bisect = math.ceil(math.log2(band / 2.0)) if band > 2.0 else 0
    return n_bisect, (6 if dtype == torch.float64 else 3)


def huber(z: Tensor, beta: float) -> Tensor:
    """Smooth-L1 ``z**2 / (2 beta)`` if ``|z| <= beta`` else ``|z| - beta / 2`` (elementwise)."""
    a = z.abs()
    m = a.clamp(max=beta)
    # == where(a <= beta, z^2 / (2 beta), a - beta / 2), without the (slow on CPU) select
    return m * m * (0.5 / beta) + (a - m)


def o1_objective(
    t: Tensor, omega_hat: Tensor, t_p: Tensor, w_c: Tensor | float, w_s: Tensor | float, beta: float
) -> Tensor:
    """Objective ``xi(t)`` of (O1) in the log-size ``t`` (see module docstring)."""
    return huber(w_c * (torch.exp(t) - omega_hat) * 0.5, beta) + huber(w_s * (t - t_p), beta)


def _safe_log(x: Tensor) -> Tensor:
    """log(x) with -inf for x <= 0 (and no NaN)."""
    return torch.log(x.clamp_min(0.0))


def solve_o1(
    omega_hat: Tensor,
    t_p: Tensor,
    t_0: Tensor,
    w_c: float,
    w_s: float,
    beta: float,
    steps: tuple[int, int] | None = None,
) -> tuple[Tensor, Tensor]:
    """Global minimiser of (O1) over ``t >= t_0``, elementwise.

    Parameters
    ----------
    omega_hat, t_p, t_0 : Tensor
        Same-shape tensors: the paper's ``omega_hat`` (any real), the predicted log-size
        ``log(omega_P)`` (finite) and the log of the lower bound ``omega_0`` (``-inf``
        allowed: no bound).
    w_c, w_s : float
        Positive encoding weights of the centre and the size term (``w_x``, ``w_w`` or
        ``w_y``, ``w_h``). Python floats: the step count depends on them, and reading a
        tensor would synchronise with the device.
    beta : float
        Smooth-L1 parameter, > 0.
    steps : (int, int), optional
        Bisection and Newton steps per segment; ``default_steps(dtype, 2 beta / w_s)``.

    Returns
    -------
    (Tensor, Tensor)
        ``t* = log(omega*)``, feasible (``>= t_0``), and the objective ``xi(t*)``.
    """
    w_c, w_s, beta = float(w_c), float(w_s), float(beta)
    if steps is None:
        steps = default_steps(t_p.dtype, 2.0 * beta / w_s)
    n_bisect, n_newton = steps
    dtype = t_p.dtype
    b_c = beta / w_c  # half-width of the centre term's quadratic zone, in omega / 2
    b_s = beta / w_s  # half-width of the size term's quadratic zone, in t
    p = w_c * w_c * 0.25 / beta  # F = p omega (omega - omega_hat) on the quadratic piece
    q = w_s * w_s / beta  # G = q (t - t_P) in the band
    h_c = 0.5 * w_c  # |F| <= h_c omega

    # Every threshold given in omega, logged at once (one kernel instead of seven).
    oh2 = 0.25 * omega_hat * omega_hat
    s_nu = torch.sqrt((4.0 * oh2 - 8.0 * q / p).clamp_min(0.0))
    logs = torch.stack(
        [
            omega_hat,
            omega_hat - 2.0 * b_c,  # centre kink low  (linear-low | quadratic)
            omega_hat + 2.0 * b_c,  # centre kink high (quadratic | linear-high)
            # Turning points nu1 <= omega_hat / 4 <= nu2 of sigma on the quadratic piece (roots
            # of 2 omega^2 - omega_hat omega + q / p); both omega_hat / 4 (the inflection) when
            # not real, which gives the same segments.
            0.25 * (omega_hat - s_nu),
            0.25 * (omega_hat + s_nu),
            # Closed forms where the size term is linear: F(omega) = w_s on the quadratic piece
            # (omega_hat <= omega_P) and F(omega) = -w_s on its increasing branch (otherwise).
            0.5 * omega_hat + torch.sqrt(oh2 + w_s / p),
            0.5 * omega_hat + torch.sqrt((oh2 - w_s / p).clamp_min(0.0)),
        ]
    )
    log_oh, e1, e2, nu1, nu2, c_quad, c_pos = logs.clamp_min_(0.0).log_().unbind(0)

    # Prop. 3: sigma < 0 below min(omega_hat, omega_P) and > 0 above max(omega_hat, omega_P).
    # Also sigma < 0 below t_min whatever omega_hat is (|F| <= h_c omega < w_s = -G), which
    # keeps the lower end finite when omega_0 <= 0 or omega_hat <= 0.
    case2 = log_oh > t_p  # omega_hat > omega_P: the minimiser is in [t_P, log omega_hat]
    t_min = (t_p - b_s).clamp(max=math.log(w_s / h_c))
    lo = torch.maximum(torch.maximum(t_0, t_min), torch.minimum(t_p, log_oh))
    hi = torch.maximum(lo, torch.maximum(t_p, log_oh))
    # F(omega) = w_s is on the linear-high piece, omega = w_s / h_c, when that lies beyond it.
    c_neg = torch.where(omega_hat <= w_s / h_c - 2.0 * b_c, math.log(w_s / h_c), c_quad)
    closed = torch.where(case2, c_pos, c_neg)

    # Segments of the band |t - t_P| <= b_s on which sigma is increasing and concave (Newton
    # from the left) or convex (from the right). Clipped to [lo, hi], only the half of the
    # band on the side of omega_hat is left.
    g_lo = t_p - b_s
    g_hi = t_p + b_s
    tau = math.log(2.0 * q / w_c)  # turning point of sigma on the linear-low piece
    lo_e1 = torch.maximum(g_lo, e1)
    hi_e2 = torch.minimum(g_hi, e2)
    seg_lo = torch.stack(
        [
            # omega_hat > omega_P: I1, linear-low piece up to tau (concave); otherwise I4,
            # linear-high piece (convex). The other one is empty within [lo, hi].
            torch.where(case2, g_lo, torch.maximum(g_lo, e2)),
            lo_e1,  # I2: quadratic piece up to nu1 (concave)
            torch.maximum(lo_e1, nu2),  # I3: quadratic piece from nu2 (convex)
        ]
    )
    seg_hi = torch.stack(
        [
            torch.where(case2, torch.minimum(g_hi, e1).clamp(max=tau), g_hi),
            torch.minimum(hi_e2, nu1),
            hi_e2,
        ]
    )
    a = torch.minimum(torch.maximum(seg_lo, lo), hi)  # into the feasible interval [lo, hi]
    b = torch.maximum(torch.minimum(seg_hi, hi), a)  # empty segments collapse to a point
    oh, tp = omega_hat.unsqueeze(0), t_p.unsqueeze(0)
    qtp = q * tp
    for _ in range(n_bisect):
        m = 0.5 * (a + b)
        om = torch.exp(m)
        s = torch.add((om - oh).mul_(p).clamp_(-h_c, h_c).mul_(om), m, alpha=q).sub_(qtp)
        neg = s < 0.0
        a = torch.where(neg, m, a)
        b = torch.where(neg, b, m)
    # Newton on a concave increasing function from the left (convex: from the right) moves
    # monotonically towards the root without overshooting, so it never leaves [a, b]. The
    # derivative is that of the segment's own smooth piece: evaluated at a segment end, the
    # one-sided derivative of the neighbouring piece would derail the iteration.
    quad = torch.full((3,) + (1,) * t_p.dim(), p, dtype=dtype, device=t_p.device)
    quad[0] = 0.0  # the linear pieces have no omega^2 term (filled in place: no host copy)
    x = torch.stack([torch.where(case2, a[0], b[0]), a[1], b[2]])
    tiny = torch.finfo(dtype).tiny
    for _ in range(n_newton):
        om = torch.exp(x)
        f = (om - oh).mul_(p).clamp_(-h_c, h_c).mul_(om)
        s = torch.add(f, x, alpha=q).sub_(qtp)
        ds = torch.addcmul(f, om, om * quad).add_(q).clamp_min_(tiny)
        # (minimum/maximum: clamp with tensor bounds is many times slower on the CPU)
        x = torch.minimum(torch.maximum(x - s.div_(ds), a), b)

    cands = torch.cat([lo.unsqueeze(0), torch.minimum(torch.maximum(closed, lo), hi).unsqueeze(0), x])
    vals = o1_objective(cands, oh, tp, w_c, w_s, beta)
    # A running selection (argmin over the short leading dim is slow on the CPU). Ties keep
    # the earlier candidate, so the lower end (the ground truth when it is feasible) wins them.
    best_t, best_v = cands[0], vals[0]
    for k in range(1, cands.shape[0]):
        better = vals[k] < best_v
        best_t = torch.where(better, cands[k], best_t)
        best_v = torch.minimum(vals[k], best_v)
    return best_t, best_v
