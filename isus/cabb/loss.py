"""Crop-aware bounding box (CABB) targets and loss (Porzi et al., CVPR 2021, Sec. 2.3-2.4)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from isus.cabb.solver import CENTER_CLIP, LOG_SIZE_CLIP, default_steps, solve_o1

__all__ = ["cabb_targets", "cabb_loss"]

_REDUCTIONS = ("none", "mean", "sum")

# Solve only the used slots when on the CPU (tests switch it off to exercise the dense path
# that accelerators take).
COMPACT_ON_CPU = True

# torch.compiler.is_compiling (torch >= 2.3) is True while torch.compile traces: the paths that
# read values on the host (CPU compaction, the CPU finiteness test) step aside for the dense,
# value-independent one, so that cabb_loss compiles to one graph (fullgraph=True).
_is_compiling = getattr(getattr(torch, "compiler", None), "is_compiling", None) or (lambda: False)


def _compact(device: torch.device) -> bool:
    """Solve only the used rows/slots (data-dependent shapes): eager CPU tensors only."""
    return COMPACT_ON_CPU and device.type == "cpu" and not _is_compiling()


def _positive_finite(x: Any) -> bool:
    """A positive finite number (not a bool or a tensor: reading a tensor synchronises).

    Comparisons rather than ``math.isfinite``: under ``torch.compile(dynamic=True)`` Python
    floats arrive as symbolic floats, which ``math.isfinite`` and ``isinstance(x, float)`` reject.
    """
    if isinstance(x, (bool, Tensor)):
        return False
    try:
        return bool(0 < x < math.inf)  # False for NaN
    except TypeError:
        return False


def _describe(x: object) -> str:
    if isinstance(x, Tensor):
        return f"Tensor(shape={tuple(x.shape)}, dtype={x.dtype}, device={x.device})"
    return f"{type(x).__name__}"


def _validate(
    fn: str,
    pred_deltas: Tensor,
    anchors: Tensor,
    boxes: Tensor,
    truncated: Tensor,
    crop_boxes: Tensor,
    weights: Sequence[float],
    beta: float,
    steps: tuple[int, int] | None,
) -> tuple[float, float, float, float]:
    if not isinstance(pred_deltas, Tensor) or pred_deltas.dim() != 2 or pred_deltas.shape[1] != 4:
        raise ValueError(f"{fn}(pred_deltas=) expects a tensor of shape (N, 4); got {_describe(pred_deltas)}")
    if not pred_deltas.is_floating_point():
        raise ValueError(f"{fn}(pred_deltas=) expects a floating-point tensor; got {_describe(pred_deltas)}")
    n = pred_deltas.shape[0]
    for name, t in (("anchors", anchors), ("boxes", boxes)):
        if not isinstance(t, Tensor) or tuple(t.shape) != (n, 4):
            raise ValueError(f"{fn}({name}=) expects a tensor of shape ({n}, 4) like pred_deltas; got {_describe(t)}")
        if not t.is_floating_point():
            raise ValueError(f"{fn}({name}=) expects a floating-point tensor; got {_describe(t)}")
    if not isinstance(truncated, Tensor) or truncated.dtype != torch.bool or tuple(truncated.shape) != (n, 4):
        raise ValueError(f"{fn}(truncated=) expects a bool tensor of shape ({n}, 4); got {_describe(truncated)}")
    if not isinstance(crop_boxes, Tensor) or tuple(crop_boxes.shape) not in ((4,), (n, 4)):
        raise ValueError(f"{fn}(crop_boxes=) expects a tensor of shape (4,) or ({n}, 4); got {_describe(crop_boxes)}")
    if not crop_boxes.is_floating_point():
        raise ValueError(f"{fn}(crop_boxes=) expects a floating-point tensor; got {_describe(crop_boxes)}")
    for name, t in (("anchors", anchors), ("boxes", boxes), ("truncated", truncated), ("crop_boxes", crop_boxes)):
        if t.device != pred_deltas.device:
            raise ValueError(
                f"{fn}({name}=) expects a tensor on {pred_deltas.device} like pred_deltas; got {t.device}"
            )
    try:
        w = tuple(float(x) for x in weights)
    except TypeError:
        w = ()
    if len(w) != 4 or not all(_positive_finite(x) for x in w):
        raise ValueError(f"{fn}(weights=) expects 4 positive finite numbers (wx, wy, ww, wh); got {weights!r}")
    if not _positive_finite(beta):
        raise ValueError(f"{fn}(beta=) expects a positive finite float; got {beta!r}")
    if steps is not None and not (
        isinstance(steps, tuple) and len(steps) == 2 and all(isinstance(k, int) and k >= 0 for k in steps)
    ):
        raise ValueError(f"{fn}(steps=) expects None or a pair of non-negative ints; got {steps!r}")
    return w


def _check_finite_geometry(fn: str, anchors: Tensor, boxes: Tensor, crop: Tensor) -> None:
    # check=None on CPU tensors: no device to synchronise with. A non-finite anchor, box or crop
    # has no meaningful target. A sum is finite when every entry is (and is several times
    # cheaper than isfinite().all()); only when it is not -- a NaN/inf, or an overflow -- is each
    # tensor tested exactly.
    if not math.isfinite(float(anchors.sum()) + float(boxes.sum()) + float(crop.sum())):
        for name, t in (("anchors", anchors), ("boxes", boxes), ("crop_boxes", crop)):
            if not bool(torch.isfinite(t).all()):
                bad = (~torch.isfinite(t.reshape(-1, 4))).any(dim=1).nonzero().reshape(-1)[:5].tolist()
                raise ValueError(f"{fn}({name}=) expects finite values; got non-finite entries in rows {bad} "
                                 "(pass check=False to skip this test: such boxes then get NaN targets)")
    # An inverted or zero-size anchor (or crop) has no log-size encoding: its targets would be
    # NaN and train the network on garbage without an error.
    for name, t in (("anchors", anchors), ("crop_boxes", crop.reshape(-1, 4))):
        if t.numel() and not float((t[:, 2:] - t[:, :2]).min()) > 0:
            size = t[:, 2:] - t[:, :2]
            bad = (~(size > 0)).any(dim=1).nonzero().reshape(-1)[:5].tolist()
            if bad:
                raise ValueError(f"{fn}({name}=) expects boxes with positive width and height (x1 > x0, y1 > y0); "
                                 f"rows {bad} are inverted or empty, e.g. {t[bad[0]].tolist()}")


def _run_checks(fn: str, check: bool | None, pred: Tensor, anchors: Tensor, boxes: Tensor, crop: Tensor) -> None:
    if check is None:
        # Under torch.compile the CPU test is skipped like on accelerators: it reads values on
        # the host, which would break the graph.
        if pred.device.type == "cpu" and not _is_compiling():
            _check_finite_geometry(fn, anchors, boxes, crop)
    elif check is True:
        _check_values(fn, pred, anchors, boxes, crop)
    elif check is not False:
        raise ValueError(f"{fn}(check=) expects None, True or False; got {check!r}")


def _check_values(fn: str, pred: Tensor, anchors: Tensor, boxes: Tensor, crop: Tensor) -> None:
    # Only with check=True: every test below synchronises with the device.
    for name, t in (("pred_deltas", pred), ("anchors", anchors), ("boxes", boxes), ("crop_boxes", crop)):
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{fn}({name}=) expects finite values; got non-finite entries")
    for name, t in (("anchors", anchors), ("crop_boxes", crop.reshape(-1, 4))):
        if not bool(((t[:, 2:] - t[:, :2]) > 0).all()):
            raise ValueError(f"{fn}({name}=) expects boxes with positive width and height (x1 > x0, y1 > y0)")
    if not bool(((boxes[:, 2:] - boxes[:, :2]) >= 0).all()):
        raise ValueError(f"{fn}(boxes=) expects boxes with x1 >= x0 and y1 >= y0")


def _pair(x: float, y: float, like: Tensor) -> Tensor | float:
    """Per-axis weights (x, y): a float when equal, else a (2,) tensor filled on the device
    (``torch.tensor([x, y], device=...)`` would be a synchronising host-to-device copy)."""
    if x == y:
        return x
    out = torch.empty(2, dtype=like.dtype, device=like.device)
    out[0] = x
    out[1] = y
    return out


def cabb_targets(
    pred_deltas: Tensor,
    anchors: Tensor,
    boxes: Tensor,
    truncated: Tensor,
    crop_boxes: Tensor,
    weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
    beta: float = 1.0,
    *,
    check: bool | None = None,
    steps: tuple[int, int] | None = None,
) -> Tensor:
    """Encoded CABB targets: the member of the crop-aware box set closest to the prediction.

    For each box and axis, ``Delta* = argmin_{Delta in rho_A(G, C)} L_BB(pred; Delta)`` with
    ``L_BB`` the smooth-L1 loss on weighted deltas (paper Eq. 2, Sec. 2.3-2.4, App. A-B,
    extended to unequal weights, see ``docs/cabb.md``). An edge whose side is not truncated
    stays at the box edge; a truncated edge may move anywhere beyond the crop border
    (``x0 <= crop_x0``, ``y0 <= crop_y0``, ``x1 >= crop_x1``, ``y1 >= crop_y1``).

    Parameters
    ----------
    pred_deltas : Tensor, shape (N, 4)
        Predicted ``(tx, ty, tw, th)``, encoded like torchvision's ``BoxCoder``:
        ``tx = wx (cx - cx_A) / w_A``, ``tw = ww log(w / w_A)``.
    anchors, boxes : Tensor, shape (N, 4)
        Reference boxes and visible (cropped) ground-truth boxes, xyxy.
    truncated : Tensor, shape (N, 4), bool
        Per side ``(x0, y0, x1, y1)``: the object extends beyond the crop there.
    crop_boxes : Tensor, shape (N, 4) or (4,)
        The region the network saw, xyxy, same coordinates as ``boxes``.
    weights : 4 floats
        ``(wx, wy, ww, wh)``; RPN uses ``(1, 1, 1, 1)``, torchvision's box head ``(10, 10, 5, 5)``.
    beta : float
        Smooth-L1 parameter (> 0).
    check : bool or None
        Which values to validate. ``None`` (default): on CPU tensors, that anchors, boxes and
        crop boxes are finite and anchors and crop boxes have positive width and height (a
        ``ValueError`` names the argument and the rows); on other devices nothing,
        since every test synchronises with the device -- there a non-finite anchor, box or crop
        gives NaN in that box's target (and loss), never a made-up finite number. ``True``: also
        on accelerators, plus finite predictions and positive anchor/crop sizes. ``False``: none.
    steps : (int, int), optional
        Bisection and Newton steps per monotone segment (defaults depend on the dtype).

    Returns
    -------
    Tensor, shape (N, 4)
        Encoded targets without gradient, finite whenever anchors, boxes and crops are.
        Untruncated boxes get exactly the standard encoding. Non-finite predictions are
        replaced by 0 (NaN) or clipped (inf) before solving, so the targets stay finite and
        feasible.
    """
    w = _validate("cabb_targets", pred_deltas, anchors, boxes, truncated, crop_boxes, weights, beta, steps)
    _run_checks("cabb_targets", check, pred_deltas, anchors, boxes, crop_boxes)
    with torch.no_grad():
        return _cabb_targets(pred_deltas.detach(), anchors, boxes, truncated, crop_boxes, w, float(beta), steps)


def _cabb_targets(
    pred: Tensor,
    anchors: Tensor,
    boxes: Tensor,
    truncated: Tensor,
    crop: Tensor,
    weights: tuple[float, float, float, float],
    beta: float,
    steps: tuple[int, int] | None,
) -> Tensor:
    out_dtype = pred.dtype
    dtype = out_dtype if out_dtype in (torch.float32, torch.float64) else torch.float32
    pred = pred.to(dtype)
    anchors = anchors.to(dtype)
    boxes = boxes.to(dtype)
    crop = crop.to(dtype).reshape(-1, 4)  # (1, 4) broadcasts, (N, 4) per box
    tiny = torch.finfo(dtype).tiny
    wx, wy, ww, wh = weights
    w_c = _pair(wx, wy, pred)
    w_s = _pair(ww, wh, pred)

    # Standard encoding, written exactly as torchvision's encode_boxes so that untruncated
    # boxes reproduce the standard loss bit for bit. Everything below works on contiguous
    # (N, 2) tensors (x, y): strided outputs and column-wise cat are slow on the CPU.
    a_size = anchors[:, 2:] - anchors[:, :2]
    a_ctr = anchors[:, :2] + 0.5 * a_size
    g_size = boxes[:, 2:] - boxes[:, :2]
    g_ctr = boxes[:, :2] + 0.5 * g_size
    # Degenerate anchors or boxes would give inf/NaN; clamping keeps targets finite
    # (documented: such boxes get a finite but arbitrary target; check=True rejects them).
    a_size = a_size.clamp_min(tiny)
    std_c = (w_c * (g_ctr - a_ctr) / a_size).clamp_(-CENTER_CLIP * max(wx, wy), CENTER_CLIP * max(wx, wy))
    std_s = (w_s * torch.log((g_size / a_size).clamp_min(tiny))).clamp_(
        -LOG_SIZE_CLIP * max(ww, wh), LOG_SIZE_CLIP * max(ww, wh)
    )
    if steps is None:
        steps = default_steps(dtype, 2.0 * beta / min(ww, wh))

    if _compact(pred.device):
        # No device to synchronise with: solve only the boxes with a truncated side.
        rows = truncated.any(dim=1).nonzero().squeeze(1)
        crop_rows = crop if crop.shape[0] == 1 else crop[rows]  # one crop broadcasts
        cut = _cut_targets(pred[rows], a_ctr[rows], a_size[rows], boxes[rows], crop_rows, truncated[rows],
                           std_c[rows], std_s[rows], weights, beta, steps)
        return torch.cat([std_c, std_s], dim=1).index_copy_(0, rows, cut).to(out_dtype)
    return _cut_targets(pred, a_ctr, a_size, boxes, crop, truncated, std_c, std_s, weights, beta, steps).to(out_dtype)


def _cut_targets(
    pred: Tensor,
    a_ctr: Tensor,
    a_size: Tensor,
    boxes: Tensor,
    crop: Tensor,
    truncated: Tensor,
    std_c: Tensor,
    std_s: Tensor,
    weights: tuple[float, float, float, float],
    beta: float,
    steps: tuple[int, int],
) -> Tensor:
    """(N, 4) targets: the solver's on truncated axes, the standard ``(std_c, std_s)`` on the others.

    ``pred``, ``boxes``, ``truncated`` (N, 4); ``crop`` (N or 1, 4); ``a_ctr``, ``a_size``,
    ``std_c``, ``std_s`` (N, 2).
    """
    wx, wy, ww, wh = weights
    w_c = _pair(wx, wy, pred)
    w_s = _pair(ww, wh, pred)

    # Anchor-normalised coordinates, per axis (last dim: x, y).
    def norm(v: Tensor) -> Tensor:
        return ((v - a_ctr) / a_size).clamp_(-CENTER_CLIP, CENTER_CLIP)

    box_lo, box_hi = norm(boxes[:, :2]), norm(boxes[:, 2:])
    crop_lo, crop_hi = norm(crop[:, :2]), norm(crop[:, 2:])
    tr_lo, tr_hi = truncated[:, :2].contiguous(), truncated[:, 2:].contiguous()

    pred = torch.nan_to_num(pred, nan=0.0)
    d_p = (pred[:, :2] / w_c).clamp(-CENTER_CLIP, CENTER_CLIP)
    t_p = (pred[:, 2:] / w_s).clamp(-LOG_SIZE_CLIP, LOG_SIZE_CLIP)

    # Slot H: low edge fixed at a_h, high edge free beyond crop_hi. Slot L: mirror image.
    # With both sides truncated, H and L are the two active-constraint branches of (O2).
    a_h = torch.where(tr_lo, crop_lo, box_lo)
    b_l = torch.where(tr_hi, crop_hi, box_hi)
    omega_hat = torch.stack([2.0 * (d_p - a_h), 2.0 * (b_l - d_p)])  # (2 slots, N, 2 axes)
    log_om0 = torch.log(torch.stack([crop_hi - a_h, b_l - crop_lo]).clamp_min(0.0))
    need = torch.stack([tr_hi, tr_lo])
    t_star, v_star = _solve_slots(
        omega_hat, t_p.expand_as(omega_hat), log_om0, need, (wx, wy), (ww, wh), beta, steps
    )
    t_star = t_star.clamp(-LOG_SIZE_CLIP, LOG_SIZE_CLIP)
    half = 0.5 * torch.exp(t_star)
    d_h = a_h + half[0]
    d_l = b_l - half[1]
    t_h, t_l = t_star[0], t_star[1]
    # xi(t*) is this axis's loss at the slot's box (delta - delta_P = +-(omega - omega_hat) / 2),
    # so the two branches of a both-cut axis compare directly.
    use_l = tr_lo & (~tr_hi | (v_star[1] < v_star[0]))
    d_cut = torch.where(use_l, d_l, d_h)
    t_cut = torch.where(use_l, t_l, t_h)
    # Both sides cut and the prediction already covers the crop: it is its own target (Prop. 2).
    half_p = 0.5 * torch.exp(t_p)
    pred_ok = tr_lo & tr_hi & (d_p - half_p <= crop_lo) & (d_p + half_p >= crop_hi)
    d_cut = torch.where(pred_ok, d_p, d_cut)
    t_cut = torch.where(pred_ok, t_p, t_cut)

    cut = tr_lo | tr_hi
    return torch.cat([torch.where(cut, w_c * d_cut, std_c), torch.where(cut, w_s * t_cut, std_s)], dim=1)


def _solve_slots(
    omega_hat: Tensor,
    t_p: Tensor,
    log_om0: Tensor,
    need: Tensor,
    w_c: tuple[float, float],
    w_s: tuple[float, float],
    beta: float,
    steps: tuple[int, int],
) -> tuple[Tensor, Tensor]:
    """``solve_o1`` on the (slot, box, axis) problems, shape (2, N, 2); returns t* and xi(t*).

    Slots that are not needed get an arbitrary (finite) value.
    """
    same = w_c[0] == w_c[1] and w_s[0] == w_s[1]
    groups = [(slice(None), w_c[0], w_s[0])] if same else [(0, w_c[0], w_s[0]), (1, w_c[1], w_s[1])]
    t_out = torch.zeros_like(omega_hat)
    v_out = torch.zeros_like(omega_hat)
    for ax, wc, ws in groups:
        oh, tp, t0, nd = (x[..., ax].reshape(-1) for x in (omega_hat, t_p, log_om0, need))
        if _compact(oh.device):
            # On the CPU, compacting to the slots that are used costs no device sync and saves
            # most of the work; on accelerators every slot is solved (fixed shapes, no sync).
            idx = nd.nonzero().squeeze(1)
            t_sol, v_sol = solve_o1(oh[idx], tp[idx], t0[idx], wc, ws, beta, steps)
            t_res = torch.zeros_like(oh).index_put_((idx,), t_sol)
            v_res = torch.zeros_like(oh).index_put_((idx,), v_sol)
        else:
            t_res, v_res = solve_o1(oh, tp, t0, wc, ws, beta, steps)
        t_out[..., ax] = t_res.view(t_out[..., ax].shape)
        v_out[..., ax] = v_res.view(v_out[..., ax].shape)
    return t_out, v_out


def cabb_loss(
    pred_deltas: Tensor,
    anchors: Tensor,
    boxes: Tensor,
    truncated: Tensor,
    crop_boxes: Tensor,
    weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
    beta: float = 1.0,
    reduction: str = "sum",
    *,
    check: bool | None = None,
    steps: tuple[int, int] | None = None,
) -> Tensor:
    """Crop-aware bounding box loss ``L_CABB(pred) = min_{Delta in rho_A(G, C)} L_BB(pred; Delta)``.

    Computed as ``smooth_l1(pred_deltas, cabb_targets(...), beta)``: by the envelope theorem
    (paper Prop. 1) the gradient of ``L_CABB`` is that of the standard loss with the target
    replaced, as a constant, by the minimiser, so the solver is not differentiated through.
    ``L_CABB <= L_BB`` with the cropped ground truth, with equality for untruncated boxes.

    Parameters
    ----------
    pred_deltas, anchors, boxes, truncated, crop_boxes, weights, beta, check, steps
        As in :func:`cabb_targets`.
    reduction : {"none", "mean", "sum"}
        ``"none"``: shape (N, 4); ``"mean"``: mean over the N * 4 entries (0 for N = 0);
        ``"sum"``: sum (the convention of torchvision's detection losses).

    Returns
    -------
    Tensor
        The loss; NaN only where ``pred_deltas`` itself is NaN (as for ``smooth_l1_loss``) or,
        when the value check is skipped (``check=False``, or ``None`` off the CPU), where an
        anchor, box or crop is non-finite; with a bounded gradient otherwise.
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"cabb_loss(reduction=) expects one of {_REDUCTIONS}; got {reduction!r}")
    w = _validate("cabb_loss", pred_deltas, anchors, boxes, truncated, crop_boxes, weights, beta, steps)
    _run_checks("cabb_loss", check, pred_deltas, anchors, boxes, crop_boxes)
    with torch.no_grad():
        target = _cabb_targets(pred_deltas.detach(), anchors, boxes, truncated, crop_boxes, w, float(beta), steps)
    if reduction == "mean" and pred_deltas.shape[0] == 0:
        return 0.0 * pred_deltas.sum()  # (the mean of nothing would be NaN)
    return F.smooth_l1_loss(pred_deltas, target, reduction=reduction, beta=float(beta))
