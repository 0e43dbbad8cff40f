"""Tests of isus.cabb against slow independent twins (tests/cabb_reference.py)."""

from __future__ import annotations

import math
import os
import shutil

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import isus.cabb as cabb
import isus.cabb.loss as cabb_loss_module
from isus.cabb.solver import o1_objective, solve_o1
from tests import cabb_reference as ref

pytestmark = pytest.mark.filterwarnings("error")

CROP = np.array([0.0, 0.0, 512.0, 384.0])
TORCHVISION_HEAD = (10.0, 10.0, 5.0, 5.0)
UNIT = (1.0, 1.0, 1.0, 1.0)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(params=["compact", "dense"])
def path(request, monkeypatch):
    """Run both the CPU compaction path and the dense path accelerators take."""
    monkeypatch.setattr(cabb_loss_module, "COMPACT_ON_CPU", request.param == "compact")
    return request.param


def make_cases(n: int, rng: np.random.Generator, weights, crop=CROP, spread=(0.05, 0.5, 2.0)):
    """Random anchors, objects cropped to ``crop`` (visible box + truncation flags), predictions.

    Objects range from much smaller to much larger than the crop, so every per-axis case
    (uncut, cut low, cut high, cut both) is frequent; predictions are the standard target
    plus noise of mixed scales.
    """
    m = 6 * n + 200
    a_ctr = rng.uniform(crop[:2] - 200, crop[2:] + 200, (m, 2))
    a_size = np.exp(rng.uniform(np.log(4), np.log(2000), (m, 2)))
    anchors = np.concatenate([a_ctr - a_size / 2, a_ctr + a_size / 2], 1)
    g_ctr = rng.uniform(crop[:2] - 300, crop[2:] + 300, (m, 2))
    g_size = np.exp(rng.uniform(np.log(2), np.log(3000), (m, 2)))
    orig = np.concatenate([g_ctr - g_size / 2, g_ctr + g_size / 2], 1)
    vis = np.concatenate([np.maximum(orig[:, :2], crop[:2]), np.minimum(orig[:, 2:], crop[2:])], 1)
    keep = np.nonzero((vis[:, 2:] > vis[:, :2] + 0.5).all(1))[0][:n]
    assert len(keep) == n
    anchors, orig, vis = anchors[keep], orig[keep], vis[keep]
    truncated = np.concatenate([orig[:, :2] < crop[:2], orig[:, 2:] > crop[2:]], 1)
    std = ref.encode(vis, anchors, weights)
    scale = rng.choice(np.asarray(spread), std.shape) * np.asarray(weights)
    pred = std + rng.normal(0.0, 1.0, std.shape) * scale
    return pred, anchors, vis, truncated


def isus_targets(pred, anchors, boxes, truncated, crop, weights, beta, dtype=torch.float64):
    t = cabb.cabb_targets(
        torch.tensor(pred, dtype=dtype),
        torch.tensor(anchors, dtype=dtype),
        torch.tensor(boxes, dtype=dtype),
        torch.tensor(truncated),
        torch.tensor(crop, dtype=dtype),
        weights,
        beta,
    )
    return t.double().numpy()


def decode(t, anchors, weights):
    """Edges (xyxy) of encoded targets, numpy."""
    wx, wy, ww, wh = weights
    d_a = anchors[:, 2:] - anchors[:, :2]
    c_a = anchors[:, :2] + 0.5 * d_a
    c = c_a + d_a * t[:, :2] / np.array([wx, wy])
    s = d_a * np.exp(t[:, 2:] / np.array([ww, wh]))
    return np.concatenate([c - s / 2, c + s / 2], 1)


def assert_feasible(edges, boxes, truncated, crop, tol=1e-7):
    """Fixed edges equal the box edge; free edges lie beyond the crop border."""
    crop = np.broadcast_to(crop, boxes.shape)
    scale = np.maximum(np.abs(boxes), 1.0)
    fixed = ~truncated
    assert np.all(np.abs(edges - boxes)[fixed] <= tol * scale[fixed])
    lo_free, hi_free = truncated[:, :2], truncated[:, 2:]
    assert np.all((edges[:, :2] <= crop[:, :2] + tol * scale[:, :2])[lo_free])
    assert np.all((edges[:, 2:] >= crop[:, 2:] - tol * scale[:, 2:])[hi_free])


# --------------------------------------------------------------------------------------
# Against the brute force


@pytest.mark.parametrize("weights", [UNIT, TORCHVISION_HEAD], ids=["w1111", "w10_10_5_5"])
@pytest.mark.parametrize("beta", [1.0, 1.0 / 9.0], ids=["beta1", "beta1_9"])
def test_matches_brute_force(weights, beta, path):
    rng = np.random.default_rng(1 + int(weights[0]) + int(9 * beta))
    pred, anchors, boxes, truncated = make_cases(10_000, rng, weights)
    assert truncated.any(1).mean() > 0.5 and (truncated[:, 0] & truncated[:, 2]).sum() > 500
    t = isus_targets(pred, anchors, boxes, truncated, CROP, weights, beta)
    value = ref.huber(pred - t, beta).sum(1)
    brute, _ = ref.brute_force(pred, anchors, boxes, truncated, CROP, weights, beta)
    excess = (value - brute) / np.maximum(np.abs(brute), 1e-12)
    assert excess.max() <= 1e-6, f"worst case {excess.argmax()}: isus {value[excess.argmax()]}, brute {brute[excess.argmax()]}"
    assert_feasible(decode(t, anchors, weights), boxes, truncated, CROP)
    # never worse than the standard loss on the cropped box
    standard = ref.huber(pred - ref.encode(boxes, anchors, weights), beta).sum(1)
    assert np.all(value <= standard * (1 + 1e-12) + 1e-12)


@pytest.mark.parametrize("beta", [0.01, 5.0, 20.0])
@pytest.mark.parametrize("weights", [UNIT, TORCHVISION_HEAD, (2.0, 0.5, 0.3, 4.0)], ids=["w1111", "w10_10_5_5", "wmixed"])
def test_matches_brute_force_other_betas_and_weights(weights, beta):
    rng = np.random.default_rng(7)
    pred, anchors, boxes, truncated = make_cases(1500, rng, weights)
    t = isus_targets(pred, anchors, boxes, truncated, CROP, weights, beta)
    value = ref.huber(pred - t, beta).sum(1)
    brute, _ = ref.brute_force(pred, anchors, boxes, truncated, CROP, weights, beta)
    assert ((value - brute) / np.maximum(brute, 1e-12)).max() <= 1e-6
    assert_feasible(decode(t, anchors, weights), boxes, truncated, CROP)


def test_both_sides_cut_against_2d_search():
    """The reduction of the both-cut case to its boundary (Prop. 2) against a 2-D search."""
    rng = np.random.default_rng(3)
    for weights in (UNIT, TORCHVISION_HEAD):
        pred, anchors, boxes, truncated = make_cases(60, rng, weights, spread=(0.5, 2.0))
        truncated[:, [0, 2]] = True
        boxes[:, [0, 2]] = CROP[[0, 2]]
        t = isus_targets(pred, anchors, boxes, truncated, CROP, weights, 1.0 / 9.0)
        edges = decode(t, anchors, weights)
        for i in range(len(pred)):
            value = ref.axis_loss(
                edges[i, 0], edges[i, 2], 0.5 * (anchors[i, 0] + anchors[i, 2]), anchors[i, 2] - anchors[i, 0],
                pred[i, 0], pred[i, 2], weights[0], weights[2], 1.0 / 9.0,
            )
            brute = ref.brute_force_2d(pred[i], anchors[i], CROP, weights[0], weights[2], 1.0 / 9.0, axis=0)
            assert value <= brute * (1 + 1e-6) + 1e-12


@pytest.mark.parametrize("beta", [1.0, 1.0 / 9.0, 3.0])
def test_matches_paper_algorithms(beta):
    """isus and the scalar transcription of Algorithms 1-3 agree on the unweighted case."""
    rng = np.random.default_rng(11)
    pred, anchors, boxes, truncated = make_cases(400, rng, UNIT)
    t = isus_targets(pred, anchors, boxes, truncated, CROP, UNIT, beta)
    paper = np.array([ref.paper_targets(pred[i], anchors[i], boxes[i], truncated[i], CROP, beta) for i in range(len(pred))])
    v_isus = ref.huber(pred - t, beta).sum(1)
    v_paper = ref.huber(pred - paper, beta).sum(1)
    np.testing.assert_allclose(v_isus, v_paper, rtol=1e-9, atol=1e-12)
    # where the minimiser is unique the targets agree too
    close = np.abs(t - paper) <= 1e-5 * np.maximum(1.0, np.abs(paper))
    assert close.mean() > 0.99


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_solver_single_axis_random(dtype):
    """solve_o1 alone, on wide random parameters, against a dense search (float64)."""
    g = torch.Generator().manual_seed(5)
    m = 1500
    for w_c, w_s, beta in [(1.0, 1.0, 1.0), (10.0, 5.0, 1.0 / 9.0), (3.0, 0.5, 5.0), (1.0, 1.0, 20.0)]:
        oh = torch.randn(m, generator=g, dtype=torch.float64) * torch.exp(2 * torch.randn(m, generator=g, dtype=torch.float64)) + 1
        tp = 2 * torch.randn(m, generator=g, dtype=torch.float64)
        t0 = torch.log(3 * torch.rand(m, generator=g, dtype=torch.float64))
        t = solve_o1(oh.to(dtype), tp.to(dtype), t0.to(dtype), w_c, w_s, beta)[0].double()
        assert torch.all(t >= t0.to(dtype).double())
        v = o1_objective(t, oh.to(dtype).double(), tp.to(dtype).double(), w_c, w_s, beta)
        lo = torch.maximum(t0, torch.minimum(tp - beta / w_s, torch.full_like(tp, math.log(2 * w_s / w_c))))
        hi = torch.maximum(torch.maximum(lo, tp), torch.log(oh.clamp_min(1e-300))) + 0.1
        grid = lo[:, None] + (hi - lo)[:, None] * torch.linspace(0, 1, 4001, dtype=torch.float64)
        vb = o1_objective(grid, oh[:, None], tp[:, None], w_c, w_s, beta).min(1).values
        if dtype == torch.float64:
            assert torch.all(v <= vb * (1 + 1e-9) + 1e-12)
        else:  # float32 inputs: the answer is as good as float32 can resolve
            assert torch.all(v <= vb + 2e-6 * (1 + vb))


# --------------------------------------------------------------------------------------
# Gradient


def test_gradient_is_finite_difference_of_brute_force_minimum():
    rng = np.random.default_rng(17)
    for weights, beta in [(UNIT, 1.0), (TORCHVISION_HEAD, 1.0 / 9.0)]:
        pred, anchors, boxes, truncated = make_cases(40, rng, weights)
        p = torch.tensor(pred, requires_grad=True)
        loss = cabb.cabb_loss(
            p, torch.tensor(anchors), torch.tensor(boxes), torch.tensor(truncated), torch.tensor(CROP), weights, beta
        )
        loss.backward()
        h = 1e-6 * np.asarray(weights)
        fd = np.zeros_like(pred)
        for k in range(4):
            e = np.zeros(4)
            e[k] = h[k]
            up, _ = ref.brute_force(pred + e, anchors, boxes, truncated, CROP, weights, beta, grid=2000)
            dn, _ = ref.brute_force(pred - e, anchors, boxes, truncated, CROP, weights, beta, grid=2000)
            fd[:, k] = (up - dn) / (2 * h[k])
        np.testing.assert_allclose(p.grad.numpy(), fd, atol=2e-4, rtol=1e-3)


# --------------------------------------------------------------------------------------
# Properties (hypothesis)

coord = st.floats(-1000.0, 1000.0, allow_nan=False)
log_size = st.floats(math.log(0.5), math.log(5000.0))


@st.composite
def one_box(draw, both_sides=False, anchor_log_size=st.floats(math.log(2.0), math.log(4000.0))):
    crop = np.array([0.0, 0.0, draw(st.floats(16, 2048)), draw(st.floats(16, 2048))])
    ac = np.array([draw(coord), draw(coord)])
    asz = np.exp([draw(anchor_log_size), draw(anchor_log_size)])
    anchors = np.concatenate([ac - asz / 2, ac + asz / 2])[None]
    lo = np.array([draw(st.floats(-3000, crop[2] - 1)), draw(st.floats(-3000, crop[3] - 1))])
    hi = lo + np.exp([draw(log_size), draw(log_size)])
    if both_sides:
        lo, hi = np.minimum(lo, -1.0), np.maximum(hi, crop[2:] + 1.0)
    vis = np.concatenate([np.maximum(lo, 0.0), np.minimum(hi, crop[2:])])
    vis[2:] = np.maximum(vis[2:], vis[:2] + 0.25)
    truncated = np.concatenate([lo < 0.0, hi > crop[2:]])[None]
    return anchors, vis[None], truncated, crop


# CABB_EXAMPLES=2000 for a longer search
settings.register_profile("cabb", max_examples=int(os.environ.get("CABB_EXAMPLES", "60")), deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check_one(anchors, boxes, truncated, crop, pred, weights, beta):
    t = isus_targets(pred, anchors, boxes, truncated, crop, weights, beta)
    v = ref.huber(pred - t, beta).sum(1)
    brute, _ = ref.brute_force(pred, anchors, boxes, truncated, crop, weights, beta, grid=3000)
    assert v[0] <= brute[0] * (1 + 1e-6) + 1e-10
    assert_feasible(decode(t, anchors, weights), boxes, truncated, crop, tol=1e-6)
    return t, v


@settings(settings.get_profile("cabb"))
@given(box=one_box(), data=st.data(), weights=st.sampled_from([UNIT, TORCHVISION_HEAD]), beta=st.sampled_from([1.0, 1 / 9]))
def test_prediction_already_feasible_is_its_own_target(box, data, weights, beta):
    anchors, boxes, truncated, crop = box
    # a prediction that keeps the fixed edges and pushes the free ones beyond the crop
    edges = boxes.copy()
    for k in range(4):
        if truncated[0, k]:
            out = data.draw(st.floats(0.0, 500.0))
            edges[0, k] = crop[k] - out if k < 2 else crop[k] + out
    pred = ref.encode(edges, anchors, weights)
    t, v = _check_one(anchors, boxes, truncated, crop, pred, weights, beta)
    assert v[0] <= 1e-12
    np.testing.assert_allclose(t, pred, atol=1e-9 * max(weights))


@settings(settings.get_profile("cabb"))
@given(box=one_box(both_sides=True), noise=st.lists(st.floats(-3, 3), min_size=4, max_size=4), beta=st.sampled_from([1.0, 1 / 9]))
def test_box_touching_crop_on_both_sides(box, noise, beta):
    anchors, boxes, truncated, crop = box
    assert truncated[0, 0] and truncated[0, 2]
    pred = ref.encode(boxes, anchors, TORCHVISION_HEAD) + np.asarray(noise)[None] * np.asarray(TORCHVISION_HEAD)
    _check_one(anchors, boxes, truncated, crop, pred, TORCHVISION_HEAD, beta)


@settings(settings.get_profile("cabb"))
@given(
    box=one_box(anchor_log_size=st.sampled_from([math.log(1e-2), math.log(0.5), math.log(5e4), math.log(1e6)])),
    noise=st.lists(st.floats(-2, 2), min_size=4, max_size=4),
    weights=st.sampled_from([UNIT, TORCHVISION_HEAD]),
)
def test_tiny_and_huge_anchors(box, noise, weights):
    anchors, boxes, truncated, crop = box
    pred = ref.encode(boxes, anchors, weights) + np.asarray(noise)[None] * np.asarray(weights)
    _check_one(anchors, boxes, truncated, crop, pred, weights, 1 / 9)


# --------------------------------------------------------------------------------------
# Contract


def test_untruncated_is_exactly_the_standard_loss():
    pytest.importorskip("torchvision")
    from torchvision.models.detection._utils import BoxCoder

    rng = np.random.default_rng(2)
    pred, anchors, boxes, _ = make_cases(500, rng, TORCHVISION_HEAD)
    p, a, b = (torch.tensor(x, dtype=torch.float32) for x in (pred, anchors, boxes))
    none = torch.zeros(500, 4, dtype=torch.bool)
    target = BoxCoder(TORCHVISION_HEAD).encode_single(b, a)
    assert torch.equal(cabb.cabb_targets(p, a, b, none, torch.tensor(CROP, dtype=torch.float32), TORCHVISION_HEAD), target)
    standard = torch.nn.functional.smooth_l1_loss(p, target, beta=1 / 9, reduction="sum")
    ours = cabb.cabb_loss(p, a, b, none, torch.tensor(CROP, dtype=torch.float32), TORCHVISION_HEAD, 1 / 9)
    assert torch.equal(ours, standard)


def test_batched_equals_one_by_one_and_empty(path):
    rng = np.random.default_rng(4)
    pred, anchors, boxes, truncated = make_cases(64, rng, UNIT)
    crops = np.tile(CROP, (64, 1))
    args = [torch.tensor(x) for x in (pred, anchors, boxes, truncated, crops)]
    full = cabb.cabb_targets(*args)
    for i in range(0, 64, 7):
        one = cabb.cabb_targets(*(x[i : i + 1] for x in args))
        torch.testing.assert_close(one, full[i : i + 1], rtol=0, atol=0)
    empty = cabb.cabb_targets(*(x[:0] for x in args))
    assert empty.shape == (0, 4)
    assert cabb.cabb_loss(*(x[:0] for x in args), reduction="mean").item() == 0.0


def test_compact_and_dense_paths_agree(monkeypatch):
    rng = np.random.default_rng(6)
    pred, anchors, boxes, truncated = make_cases(2000, rng, TORCHVISION_HEAD)
    args = [torch.tensor(x) for x in (pred, anchors, boxes, truncated, CROP)]
    a = cabb.cabb_targets(*args, TORCHVISION_HEAD, 1 / 9)
    monkeypatch.setattr(cabb_loss_module, "COMPACT_ON_CPU", False)
    b = cabb.cabb_targets(*args, TORCHVISION_HEAD, 1 / 9)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_float32_close_to_float64():
    rng = np.random.default_rng(8)
    cases = make_cases(3000, rng, TORCHVISION_HEAD)
    # same (float32-representable) inputs: what differs is the arithmetic only
    pred, anchors, boxes, truncated = (x.astype(np.float32).astype(np.float64) if x.dtype != bool else x for x in cases)
    t64 = isus_targets(pred, anchors, boxes, truncated, CROP, TORCHVISION_HEAD, 1 / 9)
    t32 = isus_targets(pred, anchors, boxes, truncated, CROP, TORCHVISION_HEAD, 1 / 9, dtype=torch.float32)
    v64 = ref.huber(pred - t64, 1 / 9).sum(1)
    v32 = ref.huber(pred - t32, 1 / 9).sum(1)
    # float32 resolves encoded coordinates to ~1e-7 of their magnitude
    scale = 1.0 + np.abs(t64).max(1)
    assert np.all(np.abs(v32 - v64) <= 2e-5 * scale)


def test_loss_reductions_and_gradient_flow():
    rng = np.random.default_rng(9)
    pred, anchors, boxes, truncated = make_cases(50, rng, UNIT)
    p = torch.tensor(pred, requires_grad=True)
    rest = [torch.tensor(x) for x in (anchors, boxes, truncated, CROP)]
    none = cabb.cabb_loss(p, *rest, reduction="none")
    assert none.shape == (50, 4)
    torch.testing.assert_close(cabb.cabb_loss(p, *rest, reduction="sum"), none.sum())
    torch.testing.assert_close(cabb.cabb_loss(p, *rest, reduction="mean"), none.mean())
    t = cabb.cabb_targets(p, *rest)
    assert not t.requires_grad
    none.sum().backward()
    # envelope theorem: d/dp of smooth_l1(p, t*) with t* held constant
    torch.testing.assert_close(p.grad, torch.clamp(p.detach() - t, -1.0, 1.0))


def test_no_host_sync_or_value_branching_on_meta_device(monkeypatch):
    """On 'meta' tensors any .item(), value-dependent branch or nonzero() would fail."""
    monkeypatch.setattr(cabb_loss_module, "COMPACT_ON_CPU", False)
    n = 8
    meta = dict(device="meta")
    p = torch.empty(n, 4, **meta)
    a = torch.empty(n, 4, **meta)
    tr = torch.empty(n, 4, dtype=torch.bool, **meta)
    out = cabb.cabb_loss(p, a, a, tr, torch.empty(4, **meta), TORCHVISION_HEAD, 1 / 9, reduction="none")
    assert out.shape == (n, 4) and out.device.type == "meta"


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu_without_sync():
    rng = np.random.default_rng(10)
    pred, anchors, boxes, truncated = make_cases(3000, rng, TORCHVISION_HEAD)
    cpu = [torch.tensor(x) for x in (pred, anchors, boxes, truncated, CROP)]
    gpu = [x.cuda() for x in cpu]
    torch.cuda.set_sync_debug_mode("error")
    try:
        t_gpu = cabb.cabb_targets(*gpu, TORCHVISION_HEAD, 1 / 9)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    t_cpu = cabb.cabb_targets(*cpu, TORCHVISION_HEAD, 1 / 9)
    v_gpu = ref.huber(pred - t_gpu.cpu().numpy(), 1 / 9).sum(1)
    v_cpu = ref.huber(pred - t_cpu.numpy(), 1 / 9).sum(1)
    np.testing.assert_allclose(v_gpu, v_cpu, rtol=1e-9, atol=1e-12)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_compiled_matches_eager_without_sync():
    """Inductor (Triton) on CUDA: one graph, no host-device sync once compiled, eager's numbers."""
    rng = np.random.default_rng(11)
    pred, anchors, boxes, truncated = make_cases(3000, rng, TORCHVISION_HEAD)
    p, a, b, tr, c = (torch.tensor(x).cuda() for x in (pred, anchors, boxes, truncated, CROP))
    torch._dynamo.reset()
    compiled = torch.compile(cabb.cabb_loss, fullgraph=True)
    q = p.clone().requires_grad_(True)
    compiled(q, a, b, tr, c, TORCHVISION_HEAD, 1 / 9, "none").sum().backward()  # compiles
    q.grad = None
    torch.cuda.set_sync_debug_mode("error")
    try:
        loss = compiled(q, a, b, tr, c, TORCHVISION_HEAD, 1 / 9, "none")
        loss.sum().backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    e = p.clone().requires_grad_(True)
    eager = cabb.cabb_loss(e, a, b, tr, c, TORCHVISION_HEAD, 1 / 9, "none")
    eager.sum().backward()
    # float64 rounding of the targets (Triton's exp/log and fusions differ from eager's kernels)
    torch.testing.assert_close(loss, eager, rtol=1e-12, atol=1e-11)
    torch.testing.assert_close(q.grad, e.grad, rtol=1e-12, atol=1e-10)


# --------------------------------------------------------------------------------------
# torch.compile


def _loss_and_grad(fn, p, rest, weights, beta):
    q = p.clone().requires_grad_(True)
    loss = fn(q, *rest, weights, beta, "none")
    loss.sum().backward()
    return loss.detach(), q.grad


@pytest.mark.parametrize("weights, beta", [(TORCHVISION_HEAD, 1 / 9), ((2.0, 0.5, 0.3, 4.0), 5.0)])
def test_compiles_to_one_graph_with_identical_results(weights, beta):
    """fullgraph=True raises at any graph break. The aot_eager backend runs the captured forward
    and backward graphs with eager kernels, so the numbers must be bit-identical; dynamic=True
    proves no value (not even N, or a weight) is baked into the graph: one graph serves every N."""
    torch._dynamo.reset()
    compiled = torch.compile(cabb.cabb_loss, fullgraph=True, backend="aot_eager", dynamic=True)
    cases = []
    for n, seed in ((300, 15), (517, 16), (0, 17)):
        pred, anchors, boxes, truncated = make_cases(max(n, 1), np.random.default_rng(seed), weights)
        p, *rest = (torch.tensor(x[:n]) for x in (pred, anchors, boxes, truncated))
        rest.append(torch.tensor(CROP))
        cases.append((p, rest))
        got = _loss_and_grad(compiled, p, rest, weights, beta)
        want = _loss_and_grad(cabb.cabb_loss, p, rest, weights, beta)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    # the targets alone (no autograd) compile too
    p, rest = cases[0]
    targets = torch.compile(cabb.cabb_targets, fullgraph=True, backend="aot_eager")
    assert torch.equal(targets(p, *rest, weights, beta), cabb.cabb_targets(p, *rest, weights, beta))


def test_compiled_non_finite_geometry_gives_nan_instead_of_raising():
    """Under torch.compile the CPU finiteness test (host reads) steps aside, as on accelerators."""
    pred, anchors, boxes, truncated = make_cases(20, np.random.default_rng(18), UNIT)
    anchors[3, 0] = np.nan
    truncated[3] = True
    args = [torch.tensor(x) for x in (pred, anchors, boxes, truncated, CROP)]
    with pytest.raises(ValueError, match=r"cabb_loss\(anchors=\) expects finite values"):
        cabb.cabb_loss(*args)
    torch._dynamo.reset()
    loss = torch.compile(cabb.cabb_loss, fullgraph=True, backend="aot_eager")(*args, reduction="none")
    assert torch.isnan(loss[3]).any() and torch.isfinite(loss[torch.arange(20) != 3]).all()


@pytest.mark.skipif(not any(shutil.which(c) for c in ("g++", "c++", "clang++")), reason="no C++ compiler for inductor")
def test_compiled_with_inductor_matches_eager():
    """The default backend (inductor, C++ on the CPU): one graph, forward and backward.

    Slow-ish (compiling takes ~10-30 s on a 2-core machine; a warm inductor cache, seconds).
    Inductor's generated kernels round differently from eager's (fused expressions, vectorised
    exp/log), so the numbers agree to float64 rounding rather than bit for bit."""
    pred, anchors, boxes, truncated = make_cases(400, np.random.default_rng(19), TORCHVISION_HEAD)
    p, *rest = (torch.tensor(x) for x in (pred, anchors, boxes, truncated, CROP))
    torch._dynamo.reset()
    compiled = torch.compile(cabb.cabb_loss, fullgraph=True)
    got = _loss_and_grad(compiled, p, rest, TORCHVISION_HEAD, 1 / 9)
    want = _loss_and_grad(cabb.cabb_loss, p, rest, TORCHVISION_HEAD, 1 / 9)
    # targets agree to float64 rounding (~1e-13 at their magnitude); the gradient
    # (p - t) / beta multiplies that by 1 / beta = 9
    torch.testing.assert_close(got[0], want[0], rtol=1e-12, atol=1e-11)
    torch.testing.assert_close(got[1], want[1], rtol=1e-12, atol=1e-10)


# --------------------------------------------------------------------------------------
# Robustness and validation


def test_non_finite_and_huge_predictions_give_finite_targets_and_gradients():
    rng = np.random.default_rng(12)
    pred, anchors, boxes, truncated = make_cases(40, rng, UNIT)
    pred[0] = np.nan
    pred[1] = [np.inf, -np.inf, np.inf, -np.inf]
    pred[2] = [1e30, -1e30, 1e30, -1e30]
    pred[3] = [0.0, 0.0, 80.0, -80.0]
    truncated[:4] = True
    p = torch.tensor(pred, requires_grad=True)
    rest = [torch.tensor(x) for x in (anchors, boxes, truncated, CROP)]
    t = cabb.cabb_targets(p, *rest)
    assert torch.isfinite(t).all()
    loss = cabb.cabb_loss(p, *rest, reduction="none")
    loss.sum().backward()
    assert torch.isnan(loss[0]).all() and torch.isnan(p.grad[0]).all()  # NaN in, NaN loss: not silent
    assert torch.isfinite(p.grad[1:]).all()
    assert torch.isfinite(loss[2:]).all()
    with pytest.raises(ValueError, match=r"cabb_loss\(pred_deltas=\) expects finite values"):
        cabb.cabb_loss(p, *rest, check=True)


def test_degenerate_anchors_and_boxes():
    anchors = torch.tensor([[10.0, 10.0, 10.0, 30.0], [0.0, 0.0, 20.0, 20.0]], dtype=torch.float64)
    boxes = torch.tensor([[0.0, 5.0, 40.0, 25.0], [500.0, 0.0, 512.0, 0.0]], dtype=torch.float64)
    truncated = torch.tensor([[True, False, False, False], [False, True, True, False]])
    pred = torch.zeros(2, 4, dtype=torch.float64, requires_grad=True)
    crop = torch.tensor(CROP)
    # unchecked (check=False, as off the CPU by default): finite targets, never a crash
    t = cabb.cabb_targets(pred, anchors, boxes, truncated, crop, check=False)
    assert torch.isfinite(t).all()
    cabb.cabb_loss(pred, anchors, boxes, truncated, crop, check=False).backward()
    assert torch.isfinite(pred.grad).all()
    # checked (the CPU default and check=True): a zero-width anchor is refused, naming its row
    for check in (None, True):
        with pytest.raises(ValueError, match=r"cabb_targets\(anchors=\) expects boxes with positive width"):
            cabb.cabb_targets(pred, anchors, boxes, truncated, crop, check=check)
    with pytest.raises(ValueError, match=r"cabb_loss\(anchors=\) .* rows \[0\] are inverted or empty"):
        cabb.cabb_loss(pred, anchors, boxes, truncated, crop)
    inverted = torch.tensor([[0.0, 0.0, 20.0, 20.0], [30.0, 0.0, 10.0, 20.0]], dtype=torch.float64)
    with pytest.raises(ValueError, match=r"rows \[1\] are inverted or empty"):
        cabb.cabb_loss(pred, inverted, boxes, truncated, crop)
    with pytest.raises(ValueError, match=r"cabb_loss\(crop_boxes=\) expects boxes with positive width"):
        cabb.cabb_loss(pred, inverted[:1].expand(2, 4), boxes, truncated, torch.tensor([0.0, 0.0, 0.0, 512.0]))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(pred_deltas=torch.zeros(3, 5)), r"cabb_loss\(pred_deltas=\) expects a tensor of shape \(N, 4\)"),
        (dict(pred_deltas=torch.zeros(3, 4, dtype=torch.int64)), r"pred_deltas=\) expects a floating-point"),
        (dict(anchors=torch.zeros(2, 4)), r"cabb_loss\(anchors=\) expects a tensor of shape \(3, 4\)"),
        (dict(truncated=torch.zeros(3, 4)), r"cabb_loss\(truncated=\) expects a bool tensor of shape \(3, 4\)"),
        (dict(crop_boxes=torch.zeros(2, 4)), r"cabb_loss\(crop_boxes=\) expects a tensor of shape \(4,\) or \(3, 4\)"),
        (dict(weights=(1.0, 1.0, 0.0, 1.0)), r"cabb_loss\(weights=\) expects 4 positive finite numbers"),
        (dict(weights=(1.0, 1.0, 1.0)), r"cabb_loss\(weights=\)"),
        (dict(beta=0.0), r"cabb_loss\(beta=\) expects a positive finite float"),
        (dict(reduction="avg"), r"cabb_loss\(reduction=\) expects one of"),
    ],
)
def test_validation_messages(kwargs, message):
    args = dict(
        pred_deltas=torch.zeros(3, 4),
        anchors=torch.tensor([[0.0, 0.0, 10.0, 10.0]] * 3),
        boxes=torch.tensor([[1.0, 1.0, 5.0, 5.0]] * 3),
        truncated=torch.zeros(3, 4, dtype=torch.bool),
        crop_boxes=torch.tensor([0.0, 0.0, 20.0, 20.0]),
    )
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        cabb.cabb_loss(**args)


# --------------------------------------------------------------------------------------
# torchvision adapters


def _tv_setup(with_truncation: bool):
    pytest.importorskip("torchvision")
    rng = np.random.default_rng(13)
    pred, anchors, boxes, truncated = make_cases(60, rng, TORCHVISION_HEAD)
    refs = [torch.tensor(anchors[:30], dtype=torch.float32), torch.tensor(anchors[30:], dtype=torch.float32)]
    gts = [torch.tensor(boxes[:10], dtype=torch.float32), torch.tensor(boxes[30:40], dtype=torch.float32)]
    trs = [torch.tensor(truncated[:10]), torch.tensor(truncated[30:40])]
    matched_idxs = [torch.tensor(rng.integers(-1, 10, 30)), torch.tensor(rng.integers(-1, 10, 30))]
    matched_boxes = [g[i.clamp(min=0)] for g, i in zip(gts, matched_idxs)]
    targets = []
    for g, t in zip(gts, trs):
        d = {"boxes": g, "labels": torch.ones(len(g), dtype=torch.int64)}
        if with_truncation:
            d.update(truncated=t, crop_box=torch.tensor(CROP, dtype=torch.float32))
        targets.append(d)
    return refs, gts, trs, matched_idxs, matched_boxes, targets


@pytest.mark.parametrize("with_truncation", [False, True])
def test_fastrcnn_loss_adapter(with_truncation):
    pytest.importorskip("torchvision")
    from torchvision.models.detection import roi_heads
    from torchvision.models.detection._utils import BoxCoder

    refs, gts, trs, matched_idxs, matched_boxes, targets = _tv_setup(with_truncation)
    coder = BoxCoder(TORCHVISION_HEAD)
    regression_targets = [coder.encode_single(m, r) for m, r in zip(matched_boxes, refs)]
    labels = [torch.where(i >= 0, 2, 0) for i in matched_idxs]
    class_logits = torch.randn(60, 3)
    box_regression = torch.randn(60, 12, requires_grad=True)
    info = cabb.CabbInputs(refs, None, targets, matched_idxs=matched_idxs, weights=TORCHVISION_HEAD)
    cls, box = cabb.fastrcnn_loss(class_logits, box_regression, labels, regression_targets, info)
    cls_tv, box_tv = roi_heads.fastrcnn_loss(class_logits, box_regression, labels, regression_targets)
    torch.testing.assert_close(cls, cls_tv)
    if not with_truncation:
        torch.testing.assert_close(box, box_tv, rtol=0, atol=0)
        return
    lab = torch.cat(labels)
    pos = torch.where(lab > 0)[0]
    img_gt = [(0, i) for i in matched_idxs[0].tolist()] + [(1, i) for i in matched_idxs[1].tolist()]
    tr = torch.stack([trs[img_gt[k][0]][img_gt[k][1]] for k in pos.tolist()])
    expected = cabb.cabb_loss(
        box_regression.reshape(60, 3, 4)[pos, 2], torch.cat(refs)[pos], torch.cat(matched_boxes)[pos], tr,
        torch.tensor(CROP, dtype=torch.float32), TORCHVISION_HEAD, 1 / 9,
    ) / lab.numel()
    torch.testing.assert_close(box, expected)
    assert box <= box_tv
    # without crop_box the visible boxes' own edges are the borders: same loss here, since the
    # truncated sides of make_cases boxes touch the crop
    no_crop = [{k: v for k, v in t.items() if k != "crop_box"} for t in targets]
    info2 = cabb.CabbInputs(refs, None, no_crop, matched_idxs=matched_idxs, weights=TORCHVISION_HEAD)
    torch.testing.assert_close(cabb.fastrcnn_loss(class_logits, box_regression, labels, regression_targets, info2)[1], box)


def test_fastrcnn_loss_adapter_image_without_ground_truth():
    pytest.importorskip("torchvision")
    refs = [torch.tensor([[0.0, 0.0, 50.0, 50.0], [10.0, 10.0, 90.0, 60.0]]), torch.tensor([[5.0, 5.0, 20.0, 20.0]])]
    targets = [
        {"boxes": torch.tensor([[0.0, 2.0, 60.0, 40.0]]), "truncated": torch.tensor([[True, False, False, False]]),
         "crop_box": torch.tensor([0.0, 0.0, 100.0, 100.0])},
        {"boxes": torch.zeros(0, 4), "truncated": torch.zeros(0, 4, dtype=torch.bool),
         "crop_box": torch.tensor([0.0, 0.0, 100.0, 100.0])},
    ]
    matched_idxs = [torch.tensor([0, -1]), torch.tensor([-1])]
    labels = [torch.tensor([1, 0]), torch.tensor([0])]
    regression_targets = [torch.zeros(2, 4), torch.zeros(1, 4)]
    info = cabb.CabbInputs(refs, None, targets, matched_idxs=matched_idxs, weights=TORCHVISION_HEAD)
    cls, box = cabb.fastrcnn_loss(torch.randn(3, 2), torch.randn(3, 8), labels, regression_targets, info)
    assert torch.isfinite(box) and torch.isfinite(cls)
    empty = [{"boxes": torch.zeros(0, 4), "truncated": torch.zeros(0, 4, dtype=torch.bool),
              "crop_box": torch.tensor([0.0, 0.0, 100.0, 100.0])}] * 2
    info = cabb.CabbInputs(refs, None, empty, matched_idxs=[torch.tensor([-1, -1]), torch.tensor([-1])])
    _, box = cabb.fastrcnn_loss(torch.randn(3, 2), torch.randn(3, 8), [torch.zeros(2, dtype=torch.int64),
                                torch.zeros(1, dtype=torch.int64)], regression_targets, info)
    assert box.item() == 0.0


@pytest.mark.parametrize("with_truncation", [False, True])
def test_rpn_adapter_matches_torchvision_and_subclass(with_truncation):
    pytest.importorskip("torchvision")
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.image_list import ImageList
    from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead

    class CabbRPN(RegionProposalNetwork):  # the few-line subclass from the docs
        def assign_targets_to_anchors(self, anchors, targets):
            labels, matched = super().assign_targets_to_anchors(anchors, targets)
            self._cabb = cabb.CabbInputs(anchors, matched, targets, weights=self.box_coder.weights)
            return labels, matched

        def compute_loss(self, objectness, pred_bbox_deltas, labels, regression_targets):
            return cabb.rpn_compute_loss(self, objectness, pred_bbox_deltas, labels, regression_targets, cabb=self._cabb)

    def build(cls):
        torch.manual_seed(0)
        gen = AnchorGenerator(((32, 64, 128),), ((0.5, 1.0, 2.0),))
        return cls(gen, RPNHead(8, 9), 0.7, 0.3, 64, 0.5, dict(training=200), dict(training=50), 0.7).train()

    images = ImageList(torch.zeros(2, 3, 384, 512), [(384, 512), (384, 512)])
    feats = {"0": torch.randn(2, 8, 24, 32)}
    _, _, _, _, _, targets = _tv_setup(with_truncation)
    torch.manual_seed(1)
    _, loss_tv = build(RegionProposalNetwork)(images, feats, targets)
    torch.manual_seed(1)
    _, loss_cabb = build(CabbRPN)(images, feats, targets)
    torch.testing.assert_close(loss_cabb["loss_objectness"], loss_tv["loss_objectness"])
    if with_truncation:
        assert loss_cabb["loss_rpn_box_reg"] <= loss_tv["loss_rpn_box_reg"]
        assert loss_cabb["loss_rpn_box_reg"] < loss_tv["loss_rpn_box_reg"]  # some positives are cut
    else:
        torch.testing.assert_close(loss_cabb["loss_rpn_box_reg"], loss_tv["loss_rpn_box_reg"], rtol=0, atol=0)


@pytest.mark.parametrize("with_truncation", [False, True])
def test_roi_heads_subclass(with_truncation):
    pytest.importorskip("torchvision")
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.roi_heads import RoIHeads
    from torchvision.ops import MultiScaleRoIAlign

    class CabbRoIHeads(RoIHeads):  # the subclass from the docs: nothing in torchvision is patched
        def select_training_samples(self, proposals, targets):
            self._samples = super().select_training_samples(proposals, targets)
            return self._samples

        def forward(self, features, proposals, image_shapes, targets=None):
            if not self.training:
                return super().forward(features, proposals, image_shapes, targets)
            outputs = []
            hook = self.box_predictor.register_forward_hook(lambda m, i, out: outputs.append(out))
            try:
                result, losses = super().forward(features, proposals, image_shapes, targets)
            finally:
                hook.remove()
            ((class_logits, box_regression),) = outputs
            sampled, matched_idxs, labels, regression_targets = self._samples
            info = cabb.CabbInputs(sampled, None, targets, matched_idxs=matched_idxs, weights=self.box_coder.weights)
            _, losses["loss_box_reg"] = cabb.fastrcnn_loss(class_logits, box_regression, labels, regression_targets, info)
            return result, losses

    def build(cls):
        torch.manual_seed(0)
        pool = MultiScaleRoIAlign(["0"], 7, 2)
        return cls(pool, TwoMLPHead(8 * 49, 32), FastRCNNPredictor(32, 3), 0.5, 0.5, 64, 0.25, None, 0.05, 0.5, 100).train()

    refs, _, _, _, _, targets = _tv_setup(with_truncation)
    for t in targets:
        t["labels"] = torch.full((len(t["boxes"]),), 2, dtype=torch.int64)
    feats = {"0": torch.randn(2, 8, 24, 32)}
    shapes = [(384, 512), (384, 512)]
    torch.manual_seed(1)
    _, loss_tv = build(RoIHeads)(feats, [r.clone() for r in refs], shapes, targets)
    torch.manual_seed(1)
    _, loss_cabb = build(CabbRoIHeads)(feats, [r.clone() for r in refs], shapes, targets)
    torch.testing.assert_close(loss_cabb["loss_classifier"], loss_tv["loss_classifier"])
    if with_truncation:
        assert loss_cabb["loss_box_reg"] < loss_tv["loss_box_reg"]
    else:
        torch.testing.assert_close(loss_cabb["loss_box_reg"], loss_tv["loss_box_reg"], rtol=0, atol=0)
    from torchvision.models.detection import roi_heads

    assert roi_heads.fastrcnn_loss.__module__ == "torchvision.models.detection.roi_heads"


def test_import_without_torchvision_is_lazy():
    import pathlib
    import subprocess
    import sys

    root = str(pathlib.Path(__file__).parents[1])
    lazy = "import sys, isus.cabb; assert 'torchvision' not in sys.modules"
    blocked = "import sys; sys.modules['torchvision'] = None; import isus.cabb; isus.cabb.cabb_loss"
    for code in (lazy, blocked):
        subprocess.run([sys.executable, "-c", code], check=True, cwd=root)
