"""The crop engine's kernels against obvious numpy twins (tests/reference.py) on random inputs."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from isus import kernels
from tests import reference as ref


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40), st.floats(-8, 45), st.floats(0.05, 4), st.floats(-8, 45),
       st.floats(0.05, 4), st.integers(1, 30), st.integers(1, 30), st.integers(0, 255), st.booleans(), st.integers(0, 2**31))
def test_resample_bilinear_is_bilinear_sampling(h, w, xs, xstep, ys, ystep, wo, ho, pad, swap, seed):
    src = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    xi, xw = kernels.bilinear_taps(xs, xstep, wo)
    yi, yw = kernels.bilinear_taps(ys, ystep, ho)
    out = kernels.resample_bilinear(src, xi, xw, yi, yw, pad, swap, np.empty((ho, wo, 3), np.uint8))
    want = ref.bilinear_float(src, xs, xstep, ys, ystep, wo, ho, pad)
    if swap:
        want = want[..., ::-1]
    # 11-bit weights: within one grey level of the exact value
    assert np.abs(out.astype(np.float64) - want).max() <= 1.0


@settings(max_examples=400, deadline=None)
@given(st.integers(0, 40), st.integers(0, 40), st.floats(-8, 45), st.floats(-4, 4), st.floats(-8, 45),
       st.floats(-4, 4), st.integers(1, 30), st.integers(1, 30), st.integers(0, 255), st.booleans(), st.integers(0, 2**31))
def test_resample_bilinear_is_the_exact_fixed_point_sum(h, w, xs, xstep, ys, ystep, wo, ho, pad, swap, seed):
    """Bit for bit the fixed-point sum of tests/reference.py, whichever order the kernel runs its
    passes in (|ystep| below about 7/8: columns first, each source row once; above: rows first),
    flipped (negative steps), with taps outside the source and empty sources."""
    src = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    xi, xw = kernels.bilinear_taps(xs, xstep, wo)
    yi, yw = kernels.bilinear_taps(ys, ystep, ho)
    out = kernels.resample_bilinear(src, xi, xw, yi, yw, pad, swap, np.empty((ho, wo, 3), np.uint8))
    np.testing.assert_array_equal(out, ref.bilinear_fixed(src, xi, xw, yi, yw, pad, swap))


@pytest.mark.parametrize("step", [0.29, 0.6, 0.86, 0.9, 1.0, 1.45, 1.99])
def test_resample_bilinear_both_pass_orders_on_crop_sized_outputs(step):
    """Crop-sized outputs on both sides of the kernel's switch between its two pass orders (enlarging:
    columns first, each source row once; shrinking: rows first), window partly outside the source."""
    rng = np.random.default_rng(int(step * 100))
    n = int(300 / max(step, 1)) + 50
    src = rng.integers(0, 256, (int(n * step) + 3, int(n * step) + 9, 3), dtype=np.uint8)
    xi, xw = kernels.bilinear_taps(-2.7, step, n)
    yi, yw = kernels.bilinear_taps(1.3, step, n + 7)
    for swap in (False, True):
        out = kernels.resample_bilinear(src, xi, xw, yi, yw, 17, swap, np.empty((n + 7, n, 3), np.uint8))
        np.testing.assert_array_equal(out, ref.bilinear_fixed(src, xi, xw, yi, yw, 17, swap))


def test_resample_bilinear_writes_a_non_contiguous_out():
    src = np.random.default_rng(1).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    xi, xw = kernels.bilinear_taps(0.4, 0.8, 30)
    yi, yw = kernels.bilinear_taps(-1.2, 1.3, 20)
    big = np.zeros((20, 34, 3), np.uint8)
    out = kernels.resample_bilinear(src, xi, xw, yi, yw, 5, True, big[:, 2:-2])
    np.testing.assert_array_equal(big[:, 2:-2], ref.bilinear_fixed(src, xi, xw, yi, yw, 5, True))
    np.testing.assert_array_equal(out, big[:, 2:-2])
    assert (big[:, :2] == 0).all() and (big[:, -2:] == 0).all()


def test_resample_bilinear_on_a_strided_view_equals_a_copy():
    src = np.random.default_rng(0).integers(0, 256, (50, 60, 3), dtype=np.uint8)
    view = src[5:40, 7:52]
    xi, xw = kernels.bilinear_taps(-1.3, 0.7, 70)
    yi, yw = kernels.bilinear_taps(2.2, 0.45, 80)
    a = kernels.resample_bilinear(view, xi, xw, yi, yw, 9, False, np.empty((80, 70, 3), np.uint8))
    b = kernels.resample_bilinear(view.copy(), xi, xw, yi, yw, 9, False, np.empty((80, 70, 3), np.uint8))
    np.testing.assert_array_equal(a, b)


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 30), st.integers(1, 30), st.integers(0, 12), st.integers(0, 2**31))
def test_crop_maps_and_instance_masks(h, w, n, seed):
    rng = np.random.default_rng(seed)
    dense = rng.integers(0, n + 1, (h, w)).astype(np.uint16)
    id_lut = np.concatenate([[0], rng.integers(1, 10**6, n)]).astype(np.int32)
    sem_lut = rng.integers(0, 256, n + 1).astype(np.int64)
    crowd_lut = rng.random(n + 1) < 0.3
    got = kernels.crop_maps(dense, id_lut, sem_lut, crowd_lut)
    for g, r in zip(got, ref.crop_maps(dense, id_lut, sem_lut, crowd_lut)):
        np.testing.assert_array_equal(g, r)
    area, box = got[3], got[4]
    segs = np.flatnonzero(area > 0)[::2].astype(np.int64)
    np.testing.assert_array_equal(kernels.instance_masks(dense, segs, box[segs]), ref.instance_masks(dense, segs))


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 12), st.integers(1, 12), st.integers(0, 6), st.integers(0, 2**31))
def test_crop_maps_and_crop_ids_on_upscaled_maps(h, w, n, seed):
    """What crops look like (and what the kernels' run and repeated-row paths serve): a small map
    upscaled by repeating rows and columns a random number of times each, equal to the reference."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, n + 1, (h, w)).astype(np.uint16)
    dense = np.ascontiguousarray(np.repeat(np.repeat(small, rng.integers(1, 5, h), 0), rng.integers(1, 5, w), 1))
    id_lut = np.concatenate([[0], rng.integers(1, 10**6, n)]).astype(np.int32)
    sem_lut = rng.integers(0, 256, n + 1).astype(np.int64)
    crowd_lut = rng.random(n + 1) < 0.3
    for g, r in zip(kernels.crop_maps(dense, id_lut, sem_lut, crowd_lut), ref.crop_maps(dense, id_lut, sem_lut, crowd_lut)):
        np.testing.assert_array_equal(g, r)
    for g, r in zip(kernels.crop_ids(dense, id_lut), ref.crop_ids(dense, id_lut)):
        np.testing.assert_array_equal(g, r)
