"""CUS/ISUS samplers against their target distributions, and the Sampler's determinism (RFS: test_rfs.py)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st
from scipy import stats
from torch.utils.data import DataLoader, Dataset

import isus
from isus.sampling import FPNLevels, LevelRule, SamplerConfig, SamplingPolicy
from isus.torch import CropSampler
from isus.types import CropSpec

P_MIN = 1e-4  # a correct sampler fails a test with probability < 1e-4


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A synthetic MVD dataset with large images (so scales and levels vary) and its index."""
    root = isus.synth.write_dataset(tmp_path_factory.mktemp("s") / "mvd", "mvd", 14, size=(1280, 960), seed=3)
    ds = isus.open_dataset("mvd", root)
    return ds, isus.build_index(ds, workers=1)


def draw(index, n=60000, seed=0, **cfg):
    policy = SamplingPolicy(index, SamplerConfig(**{"crop_size": (512, 512), **cfg}))
    return policy, policy.draw(np.random.default_rng(seed), n)


def chi2_uniform(counts):
    return stats.chisquare(counts).pvalue


@pytest.mark.parametrize("mode", ["isus", "cus"])
def test_class_frequencies_are_uniform(world, mode):
    _, index = world
    policy, b = draw(index, mode=mode)
    counts = np.array([(b.category == c).sum() for c in policy.classes])
    assert chi2_uniform(counts) > P_MIN
    assert set(policy.classes.tolist()) == {c.id for c in index.present_categories() if c.evaluate}


@pytest.mark.parametrize("mode", ["isus", "cus"])
def test_image_frequency_is_uniform_within_a_class(world, mode):
    _, index = world
    policy, b = draw(index, n=120000, mode=mode, seed=1)
    for c in policy.classes:
        sel = b.category == c
        if policy.instance_sampled[list(policy.classes).index(c)]:
            rows = index.instances_of(int(c))
            eligible = np.unique(rows.image[~rows.iscrowd])
        else:
            eligible = index.images_with_class(int(c))[0]
        assert set(np.unique(b.image[sel]).tolist()) <= set(eligible.tolist())
        if len(eligible) > 1:
            counts = np.array([(b.image[sel] == i).sum() for i in eligible])
            assert chi2_uniform(counts) > P_MIN, (c, counts)


def test_isus_levels_uniform_and_hit_when_not_clamped(world):
    _, index = world
    levels = FPNLevels()
    policy, b = draw(index, n=100000, seed=2)
    inst = b.instance >= 0
    assert inst.any() and (~policy.instance_sampled[np.searchsorted(policy.classes, b.category[~inst])]).all()
    counts = np.array([(b.level[inst] == l).sum() for l in levels.levels])
    assert chi2_uniform(counts) > P_MIN
    box = index.instances.box[b.instance[inst]].astype(np.float64)
    size = np.sqrt((box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1])) * b.scale[inst]
    free = ~b.clamped[inst]
    assert free.sum() > 2000  # tiny instances often need σ beyond r_th: many are clamped
    np.testing.assert_array_equal(levels.level_of(size[free]), b.level[inst][free])
    lo, hi = levels.intervals()[b.level[inst][free] - 2].T
    assert ((size[free] >= lo * (1 - 1e-9)) & (size[free] < hi * (1 + 1e-9))).all()


def test_sigma_ranges_and_instances(world):
    _, index = world
    cfg = SamplerConfig(crop_size=(512, 512), shortest_side=800)
    policy, b = draw(index, shortest_side=800, seed=3)
    inst = b.instance >= 0
    r_th, r_st = cfg.thing_scale_range, cfg.stuff_scale_range
    assert ((b.sigma[inst] >= r_th[0]) & (b.sigma[inst] <= r_th[1])).all()
    assert ((b.sigma[~inst] >= r_st[0]) & (b.sigma[~inst] <= r_st[1])).all()
    base = 800 / np.minimum(index.heights, index.widths)[b.image]
    np.testing.assert_allclose(b.scale, base * b.sigma)
    assert not index.instances.iscrowd[b.instance[inst]].any()  # crowd is never the instance
    assert (index.instances.category_id[b.instance[inst]] == b.category[inst]).all()
    assert (index.instances.image[b.instance[inst]] == b.image[inst]).all()
    np.testing.assert_allclose(b.window[:, 2] - b.window[:, 0], 512 / b.scale)
    np.testing.assert_allclose(b.window[:, 3] - b.window[:, 1], 512 / b.scale)
    assert 0.45 < b.flip.mean() < 0.55


def test_cus_follows_the_paper_definition(world):
    _, index = world
    policy, b = draw(index, mode="cus", seed=4, stuff_scale_range=(0.5, 2.0))
    assert (b.instance == -1).all() and (b.level == -1).all() and not b.clamped.any()
    assert stats.kstest((b.sigma - 0.5) / 1.5, "uniform").pvalue > P_MIN
    # a stuff class in ISUS gets the same σ law
    _, bi = draw(index, seed=5)
    stuff = bi.instance < 0
    assert stats.kstest((bi.sigma[stuff] - 0.5) / 1.5, "uniform").pvalue > P_MIN


def _visible_pixels(ds, index, spec: CropSpec) -> int:
    pan = ds.load_panoptic(spec.image)
    h, w = pan.ids.shape
    x0, y0, x1, y1 = spec.window
    # pixel centres k + 0.5 inside [x0, x1)
    xa, xb = max(0, int(np.ceil(x0 - 0.5))), min(w, int(np.ceil(x1 - 0.5)))
    ya, yb = max(0, int(np.ceil(y0 - 0.5))), min(h, int(np.ceil(y1 - 0.5)))
    if spec.instance >= 0:
        return int((pan.ids[ya:yb, xa:xb] == index.instances.segment_id[spec.instance]).sum())
    return int((pan.semantic()[ya:yb, xa:xb] == spec.category).sum())


@pytest.mark.parametrize("cfg", [dict(mode="isus"), dict(mode="cus"),
                                 dict(mode="cus", crop_size=(64, 48), stuff_scale_range=(3.0, 4.0)),
                                 dict(mode="rfs", rfs_threshold=0.5),
                                 dict(mode="rfs", crop_size=(64, 48), stuff_scale_range=(3.0, 4.0))],
                         ids=["isus", "cus", "cus-windows-smaller-than-cells", "rfs", "rfs-windows-smaller-than-cells"])
def test_chosen_instance_or_class_is_visible_in_every_window(world, cfg):
    ds, index = world
    policy, b = draw(index, n=400, seed=6, **cfg)
    for k in range(len(b)):
        assert _visible_pixels(ds, index, b.spec(k)) > 0, b.spec(k)


def test_windows_stay_inside_images_larger_than_them(world):
    _, index = world
    _, b = draw(index, seed=7)
    h, w = index.heights[b.image], index.widths[b.image]
    inside = (b.window[:, 2] - b.window[:, 0] <= w) & (b.window[:, 3] - b.window[:, 1] <= h)
    eps = 1e-6
    assert (b.window[inside, 0] >= -eps).all() and (b.window[inside, 2] <= w[inside] + eps).all()
    assert (b.window[inside, 1] >= -eps).all() and (b.window[inside, 3] <= h[inside] + eps).all()
    # larger windows cover the whole image along that axis
    wide = b.window[:, 2] - b.window[:, 0] > w
    assert (b.window[wide, 0] <= eps).all() and (b.window[wide, 2] >= w[wide] - eps).all()


def test_class_weights_subclass(world):
    _, index = world

    class FrequencyWeighted(SamplingPolicy):
        def class_weights(self):
            return self.images_per_class ** 1.0

    policy = FrequencyWeighted(index, SamplerConfig(crop_size=(512, 512)))
    b = policy.draw(np.random.default_rng(8), 60000)
    counts = np.array([(b.category == c).sum() for c in policy.classes])
    expected = policy.images_per_class / policy.images_per_class.sum() * len(b)
    assert stats.chisquare(counts, expected).pvalue > P_MIN


# -- levels ---------------------------------------------------------------------------------
@given(st.sampled_from([2, 3, 4, 5]), st.floats(0, 1, exclude_max=True))
def test_fpn_intervals_map_to_their_level(level, t):
    levels = FPNLevels()
    lo, hi = levels.interval(level)
    size = lo + t * (hi - lo)
    assume(size < hi)  # t just below 1 can round up to hi itself
    assert levels.level_of(np.array([size]))[0] == level


def test_fpn_levels_defaults_and_end_levels():
    levels = FPNLevels()
    np.testing.assert_allclose(levels.intervals(), [[56, 112], [112, 224], [224, 448], [448, 896]])
    assert levels.level_of(np.array([1.0, 111.9, 112.0, 10000.0])).tolist() == [2, 2, 3, 5]
    wide = FPNLevels(end_octaves=2)
    np.testing.assert_allclose(wide.intervals()[[0, -1]], [[28, 112], [448, 1792]])
    with pytest.raises(ValueError, match="consecutive"):
        FPNLevels(levels=(2, 4))


def test_custom_level_rule(world):
    _, index = world

    class Octaves(LevelRule):  # levels 3..7, canonical 128 at level 4
        levels = (3, 4, 5, 6, 7)

        def level_of(self, size):
            return np.clip(np.floor(4 + np.log2(np.asarray(size) / 128)), 3, 7).astype(np.int64)

        def interval(self, level):
            return 128 * 2.0 ** (level - 4), 128 * 2.0 ** (level - 3)

    policy, b = draw(index, n=40000, seed=9, levels=Octaves())
    inst = (b.instance >= 0) & ~b.clamped
    box = index.instances.box[b.instance[inst]].astype(np.float64)
    size = np.sqrt((box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1])) * b.scale[inst]
    np.testing.assert_array_equal(Octaves().level_of(size), b.level[inst])
    assert set(np.unique(b.level[b.instance >= 0]).tolist()) == {3, 4, 5, 6, 7}


def test_presets():
    mvd, cs, idd = (SamplerConfig.preset(d) for d in ("mvd", "cityscapes", "idd"))
    assert mvd.crop_size == (1024, 1024) and cs.crop_size == idd.crop_size == (512, 512)
    assert cs.shortest_side == 1024 and idd.shortest_side == 1080 and mvd.shortest_side == 2048
    assert all(c.thing_scale_range == (0.25, 4.0) and c.stuff_scale_range == (0.5, 2.0) for c in (mvd, cs, idd))
    assert SamplerConfig.preset("mvd", mode="cus").mode == "cus"
    with pytest.raises(ValueError, match="kitti"):
        SamplerConfig.preset("kitti")
    with pytest.raises(ValueError, match="mode"):
        SamplerConfig(mode="random")
    rfs = SamplerConfig.preset("idd", mode="rfs", rfs_threshold=0.01, rfs_sqrt=False)
    assert isinstance(rfs, isus.RepeatFactorConfig) and rfs.shortest_side == 1080 and rfs.crop_size == (512, 512)
    assert (rfs.rfs_threshold, rfs.rfs_sqrt, rfs.rfs_crop) == (0.01, False, "class")
    with pytest.raises(ValueError, match="rfs_threshold"):
        SamplerConfig.preset("idd", rfs_threshold=0.01)  # an rfs setting without mode="rfs"
    with pytest.raises(ValueError, match="thing_scale_range"):
        SamplerConfig(thing_scale_range=(4, 0.25))


# -- the torch Sampler ----------------------------------------------------------------------
class _Echo(Dataset):
    def __getitem__(self, spec: CropSpec):
        return torch.tensor([spec.image, spec.category, spec.instance, spec.level]), torch.tensor(
            [spec.scale, *spec.window], dtype=torch.float64)

    def __len__(self):  # pragma: no cover - the sampler drives iteration
        return 0


def _stream(sampler):
    return [(s.image, s.category, s.instance, s.level, s.scale, s.window, s.flip) for s in sampler]


def test_stream_is_the_same_for_num_workers_0_and_2(world):
    _, index = world
    cfg = SamplerConfig(crop_size=(512, 512))
    out = []
    for workers in (0, 2):
        loader = DataLoader(_Echo(), sampler=CropSampler(index, cfg, 300, seed=5), batch_size=16, num_workers=workers)
        ints, floats = zip(*loader)
        out.append((torch.cat(ints), torch.cat(floats)))
    assert torch.equal(out[0][0], out[1][0]) and torch.equal(out[0][1], out[1][1])
    assert len(out[0][0]) == 300


def test_ranks_are_disjoint_and_complete(world):
    _, index = world
    cfg = SamplerConfig(crop_size=(512, 512))
    n = 10001  # crosses a block boundary, not divisible by the world sizes
    full = _stream(CropSampler(index, cfg, n, seed=3, rank=0, world_size=1))
    for world_size in (2, 4):
        per_rank = [_stream(CropSampler(index, cfg, n, seed=3, rank=r, world_size=world_size)) for r in range(world_size)]
        assert len({len(p) for p in per_rank}) == 1  # equal lengths: no rank waits for another
        merged = [per_rank[j % world_size][j // world_size] for j in range(n)]
        assert merged == full


def test_resume_continues_exactly(world):
    _, index = world
    cfg = SamplerConfig(crop_size=(512, 512))
    ref = CropSampler(index, cfg, 5000, seed=11)
    ref.set_epoch(3)
    expected = _stream(ref)
    a = CropSampler(index, cfg, 5000, seed=11)
    a.set_epoch(3)
    it = iter(a)
    head = [next(it) for _ in range(4321)]
    state = a.state_dict()
    b = CropSampler(index, cfg, 5000, seed=11)  # a fresh sampler, as in a new process
    b.load_state_dict(state)
    tail = _stream(b)
    assert [(s.image, s.category, s.instance, s.level, s.scale, s.window, s.flip) for s in head] + tail == expected
    # resuming after what training consumed, not what the loader prefetched
    c = CropSampler(index, cfg, 5000, seed=11)
    c.load_state_dict(a.state_dict(num_consumed=4000))
    assert _stream(c) == expected[4000:]
    with pytest.raises(ValueError, match="seed"):
        CropSampler(index, cfg, 5000, seed=12).load_state_dict(state)
    longer = CropSampler(index, cfg, 8000, seed=11)  # extending the run keeps the stream
    longer.load_state_dict(state)
    ext = CropSampler(index, cfg, 8000, seed=11)
    ext.set_epoch(3)
    assert _stream(longer) == _stream(ext)[4321:]


def test_epochs_and_seeds_change_the_stream(world):
    _, index = world
    cfg = SamplerConfig(crop_size=(512, 512))
    s = CropSampler(index, cfg, 200, seed=0)
    e0 = _stream(s)
    assert _stream(s) == e0  # the same epoch again
    s.set_epoch(1)
    assert _stream(s) != e0
    assert _stream(CropSampler(index, cfg, 200, seed=1)) != e0
    with pytest.raises(ValueError, match="num_samples"):
        CropSampler(index, cfg, 0)
    with pytest.raises(ValueError, match="rank"):
        CropSampler(index, cfg, 10, rank=2, world_size=2)


@given(st.floats(0.5, 1e5))
def test_fpn_level_of_is_the_fpn_formula(size):
    edges = 224 * 2.0 ** np.arange(-2, 2)
    assume(np.abs(size / edges - 1).min() > 1e-9)  # the formula's log2 may round exactly at an edge
    expected = int(np.clip(np.floor(4 + np.log2(size / 224)), 2, 5))
    assert FPNLevels().level_of(np.array([size]))[0] == expected
