"""Crop-aware bounding box (CABB) targets and loss (Porzi et al., CVPR 2021, Sec. 2.3-2.4)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from isus.cabb.solver import CENTER_CLIP, LOG_SIZE_CLIP, huber, solve_o1

__all__ = ["cabb_targets", "cabb_loss"]

_REDUCTIONS = ("none", "mean", "sum")


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
    if len(w) != 4 or not all(math.isfinite(x) and x > 0 for x in w):
        raise ValueError(f"{fn}(weights=) expects 4 positive finite numbers (wx, wy, ww, wh); got {weights!r}")
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not (math.isfinite(beta) and beta > 0):
        raise ValueError(f"{fn}(beta=) expects a positive finite float; got {beta!r}")
    return w  # type: ignore[return-value]


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


def cabb_targets(
    pred_deltas: Tensor,
    anchors: Tensor,
    boxes: Tensor,
    truncated: Tensor,
    crop_boxes: Tensor,
    weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
    beta: float = 1.0,
    *,
    check: bool = False,
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
    check : bool
        Also validate values (finite, positive anchor/crop sizes); this synchronises with the
        device, so it is off by default.
    steps : (int, int), optional
        Bisection and Newton steps per monotone segment (defaults depend on the dtype).

    Returns
    -------
    Tensor, shape (N, 4)
        Encoded targets, finite, without gradient. Untruncated boxes get exactly the standard
        encoding. Non-finite predictions are replaced by 0 (NaN) or clipped (inf) before
        solving, so the targets stay finite and feasible.
    """
    w = _validate("cabb_targets", pred_deltas, anchors, boxes, truncated, crop_boxes, weights, beta)
    if check:
        _check_values("cabb_targets", pred_deltas, anchors, boxes, crop_boxes)
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
    crop = crop.to(dtype).expand(pred.shape[0], 4)
    tiny = torch.finfo(dtype).tiny
    wx, wy, ww, wh = weights

    # Standard encoding, written exactly as torchvision's encode_boxes so that untruncated
    # boxes reproduce the standard loss bit for bit.
    a_size = anchors[:, 2:] - anchors[:, :2]
    a_ctr = anchors[:, :2] + 0.5 * a_size
    g_size = boxes[:, 2:] - boxes[:, :2]
    g_ctr = boxes[:, :2] + 0.5 * g_size
    w_c = torch.tensor([wx, wy], dtype=dtype, device=pred.device)
    w_s = torch.tensor([ww, wh], dtype=dtype, device=pred.device)
    # Degenerate anchors or boxes would give inf/NaN; clamping keeps targets finite
    # (documented: such boxes get a finite but arbitrary target; check=True rejects them).
    a_size_safe = a_size.clamp_min(tiny)
    gt_c = w_c * (g_ctr - a_ctr) / a_size_safe
    gt_s = w_s * torch.log((g_size / a_size_safe).clamp_min(tiny))
    gt_c = gt_c.clamp(-CENTER_CLIP * w_c, CENTER_CLIP * w_c)
    gt_s = gt_s.clamp(-LOG_SIZE_CLIP * w_s, LOG_SIZE_CLIP * w_s)
    standard = torch.cat([gt_c, gt_s], dim=1)

    # Anchor-normalised coordinates, per axis (last dim: x, y).
    def norm(v: Tensor) -> Tensor:
        return ((v - a_ctr) / a_size_safe).clamp(-CENTER_CLIP, CENTER_CLIP)

    box_lo, box_hi = norm(boxes[:, :2]), norm(boxes[:, 2:])
    crop_lo, crop_hi = norm(crop[:, :2]), norm(crop[:, 2:])
    tr_lo, tr_hi = truncated[:, :2], truncated[:, 2:]

    pred = torch.nan_to_num(pred, nan=0.0)
    d_p = (pred[:, :2] / w_c).clamp(-CENTER_CLIP, CENTER_CLIP)
    t_p = (pred[:, 2:] / w_s).clamp(-LOG_SIZE_CLIP, LOG_SIZE_CLIP)

    # Slot H: low edge fixed at a_h, high edge free beyond crop_hi. Slot L: mirror image.
    # With both sides truncated, H and L are the two active-constraint branches of (O2).
    a_h = torch.where(tr_lo, crop_lo, box_lo)
    b_l = torch.where(tr_hi, crop_hi, box_hi)
    omega_hat = torch.stack([2.0 * (d_p - a_h), 2.0 * (b_l - d_p)])
    log_om0 = torch.log(torch.stack([crop_hi - a_h, b_l - crop_lo]).clamp_min(0.0))
    t_star = solve_o1(omega_hat, t_p.unsqueeze(0), log_om0, w_c, w_s, beta, steps)
    t_star = t_star.clamp(-LOG_SIZE_CLIP, LOG_SIZE_CLIP)
    half = 0.5 * torch.exp(t_star)
    d_h = a_h + half[0]
    d_l = b_l - half[1]
    t_h, t_l = t_star[0], t_star[1]

    def axis_loss(d: Tensor, t: Tensor) -> Tensor:
        return huber(w_c * (d - d_p), beta) + huber(w_s * (t - t_p), beta)

    v_h = axis_loss(d_h, t_h)
    v_l = axis_loss(d_l, t_l)
    use_l = tr_lo & (~tr_hi | (v_l < v_h))
    d_cut = torch.where(use_l, d_l, d_h)
    t_cut = torch.where(use_l, t_l, t_h)
    # Both sides cut and the prediction already covers the crop: it is its own target (Prop. 2).
    half_p = 0.5 * torch.exp(t_p)
    pred_ok = tr_lo & tr_hi & (d_p - half_p <= crop_lo) & (d_p + half_p >= crop_hi)
    d_cut = torch.where(pred_ok, d_p, d_cut)
    t_cut = torch.where(pred_ok, t_p, t_cut)

    cut = tr_lo | tr_hi
    tgt_c = torch.where(cut, w_c * d_cut, standard[:, :2])
    tgt_s = torch.where(cut, w_s * t_cut, standard[:, 2:])
    return torch.cat([tgt_c, tgt_s], dim=1).to(out_dtype)


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
    check: bool = False,
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
        The loss; NaN only where ``pred_deltas`` itself is NaN (as for ``smooth_l1_loss``),
        with a bounded gradient otherwise (targets are always finite).
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"cabb_loss(reduction=) expects one of {_REDUCTIONS}; got {reduction!r}")
    w = _validate("cabb_loss", pred_deltas, anchors, boxes, truncated, crop_boxes, weights, beta)
    if check:
        _check_values("cabb_loss", pred_deltas, anchors, boxes, crop_boxes)
    with torch.no_grad():
        target = _cabb_targets(pred_deltas.detach(), anchors, boxes, truncated, crop_boxes, w, float(beta), steps)
    loss = F.smooth_l1_loss(pred_deltas, target, reduction="none", beta=float(beta))
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.mean() if loss.numel() > 0 else 0.0 * loss.sum()
    return loss
