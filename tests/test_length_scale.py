"""``--length-scale``: the detector's level mapper and anchors and the sampler's level rule are
scaled together, so the model and the sampler assign every object size to the same FPN level."""
from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("torchvision")

from examples.panoptic.levels import level_rule  # noqa: E402
from examples.panoptic.model import build_panoptic_fpn  # noqa: E402
from examples.train_panoptic import parse_args, sampler_config  # noqa: E402


def _model_levels(length_scale: float, sizes: np.ndarray, image: int = 256) -> np.ndarray:
    """The FPN level torchvision's RoI pooler assigns to square boxes of ``sizes`` pixels."""
    torch.manual_seed(0)
    model = build_panoptic_fpn(2, 4, length_scale=length_scale, min_size=image, max_size=image,
                               rpn_pre_nms_top_n_test=20, rpn_post_nms_top_n_test=10).eval()
    with torch.no_grad():  # the pooler infers its levels (P2..P5) from the first batch
        model([torch.rand(3, image, image)])
    s = torch.as_tensor(sizes, dtype=torch.float32)
    boxes = torch.stack([torch.zeros_like(s), torch.zeros_like(s), s, s], dim=1)
    levels = {}
    for name in ("box_roi_pool", "mask_roi_pool"):
        pool = getattr(model.roi_heads, name)
        levels[name] = pool.map_levels([boxes]).numpy() + 2  # index 0 = P2
    assert (levels["box_roi_pool"] == levels["mask_roi_pool"]).all()
    return levels["box_roi_pool"]


@pytest.mark.parametrize("length_scale", [1.0, 0.25, 0.5])
def test_model_and_sampler_assign_the_same_level(length_scale):
    rng = np.random.default_rng(0)
    # random sizes over the whole range, away from the edges where float32 rounding of log2 in
    # torchvision (plus its eps of 1e-6) could tip a box that is exactly on an edge
    sizes = np.exp(rng.uniform(np.log(2.0), np.log(1200.0 * length_scale), 5000))
    rule = level_rule(length_scale)
    edges = rule.canonical_size * 2.0 ** np.arange(-2, 2)
    sizes = sizes[np.min(np.abs(sizes[:, None] / edges[None, :] - 1), axis=1) > 1e-4]
    model = _model_levels(length_scale, sizes)
    np.testing.assert_array_equal(model, rule.level_of(sizes))
    # and just either side of each level edge
    around = np.concatenate([edges * (1 - 1e-3), edges * (1 + 1e-3)])
    np.testing.assert_array_equal(_model_levels(length_scale, around), rule.level_of(around))


def test_length_scale_scales_the_anchors_and_the_canonical_size():
    m = build_panoptic_fpn(2, 4, length_scale=0.25)
    assert m.rpn.anchor_generator.sizes == ((8.0,), (16.0,), (32.0,), (64.0,), (128.0,))
    assert m.roi_heads.box_roi_pool.canonical_scale == 56.0
    assert m.roi_heads.mask_roi_pool.canonical_scale == 56.0
    default = build_panoptic_fpn(2, 4)
    assert default.rpn.anchor_generator.sizes == ((32.0,), (64.0,), (128.0,), (256.0,), (512.0,))
    assert default.roi_heads.box_roi_pool.canonical_scale == 224.0
    with pytest.raises(ValueError, match="length_scale"):
        build_panoptic_fpn(2, 4, length_scale=0)


def test_the_example_gives_the_sampler_the_models_level_rule(tmp_path):
    args = parse_args(["--dataset", "mvd", "--root", str(tmp_path), "--index", str(tmp_path / "x.isusidx"),
                       "--out", str(tmp_path / "run"), "--length-scale", "0.25", "--crop", "256",
                       "--scale-range", "0.25,4", "--sampling", "cus"])
    cfg = sampler_config(args, index=None)
    assert cfg.levels == level_rule(0.25) and cfg.levels.canonical_size == 56.0
    assert cfg.stuff_scale_range == (0.25, 4.0) and cfg.mode == "cus" and cfg.crop_size == (256, 256)
    # a 256 crop can hold objects of every level under the scaled rule, not under the default one
    assert set(level_rule(0.25).level_of(np.array([10.0, 40.0, 80.0, 200.0]))) == {2, 3, 4, 5}
    assert 5 not in set(level_rule(1.0).level_of(np.array([10.0, 40.0, 80.0, 200.0])))
    with pytest.raises(SystemExit):
        parse_args(["--dataset", "mvd", "--root", str(tmp_path), "--index", "x", "--out", "o", "--length-scale", "0"])
