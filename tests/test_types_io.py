"""Small pure pieces against slow, obvious references."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from isus.datasets.io import id_to_rgb, reduced_size, rgb_to_id
from isus.types import SEGMENT_DTYPE, Category, Panoptic, make_segments


@given(hnp.arrays(np.int64, hnp.array_shapes(min_dims=2, max_dims=2, max_side=8), elements=st.integers(0, 2**24 - 1)))
def test_rgb_id_roundtrip(ids):
    rgb = id_to_rgb(ids)
    assert rgb.dtype == np.uint8 and rgb.shape == ids.shape + (3,)
    for (y, x), v in np.ndenumerate(ids):  # the obvious per-pixel formula
        r, g, b = (int(c) for c in rgb[y, x])
        assert r + 256 * g + 65536 * b == v
    np.testing.assert_array_equal(rgb_to_id(rgb), ids)


@settings(max_examples=50)
@given(st.data())
def test_semantic_matches_per_pixel_lookup(data):
    n = data.draw(st.integers(0, 6))
    seg_ids = data.draw(st.lists(st.integers(1, 2**24), min_size=n, max_size=n, unique=True))
    cats = data.draw(st.lists(st.integers(0, 300), min_size=n, max_size=n))
    ids = data.draw(hnp.arrays(np.int32, (5, 7), elements=st.sampled_from([0] + seg_ids)))
    pan = Panoptic(ids, make_segments(seg_ids, cats, [False] * n))
    ref = {0: -1, **dict(zip(seg_ids, cats))}
    expected = np.vectorize(lambda v: ref[int(v)])(ids) if ids.size else ids
    np.testing.assert_array_equal(pan.semantic(), expected)


def test_make_segments_sorts_and_types():
    seg = make_segments([5, 2], [1, 7], [True, False])
    assert seg.dtype == SEGMENT_DTYPE and seg["id"].tolist() == [2, 5] and seg["category_id"].tolist() == [7, 1]


@pytest.mark.parametrize("h,w", [(1, 1), (479, 641), (3024, 4032), (1080, 1920)])
@pytest.mark.parametrize("r", [1, 2, 4, 8])
def test_reduced_size_is_ceil(h, w, r):
    assert reduced_size(h, w, r) == (int(np.ceil(h / r)), int(np.ceil(w / r)))


def test_invariants_are_checked():
    with pytest.raises(ValueError, match="int32"):
        Panoptic(np.zeros((2, 2), np.int64), make_segments([], [], []))
    with pytest.raises(ValueError, match="color"):
        Category(1, "x", True, (1, 2))
