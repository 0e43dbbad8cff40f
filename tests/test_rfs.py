"""Repeat-factor sampling (LVIS RFS, ``mode="rfs"``): the factors against the formula on a
hand-built index, the stream's image and class frequencies against the factors (chi-squared), and
determinism and resumption through CropSampler."""
from __future__ import annotations

import math
from dataclasses import fields, replace

import numpy as np
import pytest
from scipy import stats

import isus
from isus.crop.functional import crop_size
from isus.index import Index
from isus.index.schema import assemble, pack_strings
from isus.index.store import SCHEMA_VERSION
from isus.sampling import (RepeatFactorConfig, RepeatFactorPolicy, SamplerConfig, SamplingPolicy, class_repeat_factors,
                           repeat_factors)
from isus.torch import CropSampler
from isus.torch.sampler import SamplerStateError, config_description

#: Significance level of every chi-squared test here: with its fixed seed each test is
#: deterministic, and a correct sampler would fail it with probability below this.
ALPHA = 1e-4

W, H, GRID = 400, 300, 4
# category id -> (name, isthing, evaluate)
CATEGORIES = {1: ("road", False, True), 2: ("sky", False, True), 3: ("car", True, True), 4: ("bike", True, True),
              5: ("ambiguous", False, False)}
# image -> the categories with pixels in it. Image 10 holds only a category that is not evaluated
# (not sampled), so it is not a training image for RFS: r = 0, and it is not in f_c's denominator.
PRESENCE = {0: [1, 2, 3], 1: [1, 2, 3], 2: [1, 2], 3: [1, 2], 4: [1, 2], 5: [1], 6: [1], 7: [1, 4], 8: [1],
            9: [1, 5], 10: [5]}


def tiny_index(presence: dict[int, list[int]] = PRESENCE, size: tuple[int, int] = (W, H)) -> Index:
    """An index assembled from hand-written rows: category c of image i occupies grid cell c - 1
    (one cell, 100 pixels); each thing category has one instance there."""
    cells_w, cells_h = size[0] // GRID, size[1] // GRID
    cls_rows, inst_rows = [], []
    for image, cats in presence.items():
        for c in cats:
            gx, gy = (c - 1) % GRID, (c - 1) // GRID
            x, y = gx * cells_w + 10, gy * cells_h + 10
            cls_rows.append((image, c, gy * GRID + gx, x, y))
            if CATEGORIES[c][1]:
                inst_rows.append((image, c, x, y))
    n_img = len(presence)
    k = 4  # anchors per row
    ci = np.array(cls_rows, dtype=np.int64).reshape(-1, 5)
    ii = np.array(inst_rows, dtype=np.int64).reshape(-1, 4)
    rows = {
        "cls_image": ci[:, 0].astype(np.int32), "cls_category": ci[:, 1].astype(np.int32),
        "cls_pixels": np.full(len(ci), 100, np.int64), "cls_ncells": np.ones(len(ci), np.int32),
        "cls_anchors": np.repeat(ci[:, None, 3:5], k, axis=1).astype(np.int32),
        "cell_index": ci[:, 2].astype(np.uint16), "cell_pixels": np.full(len(ci), 100, np.uint32),
        "inst_image": ii[:, 0].astype(np.int32), "inst_segment": np.arange(1, len(ii) + 1, dtype=np.int32),
        "inst_category": ii[:, 1].astype(np.int32), "inst_crowd": np.zeros(len(ii), bool),
        "inst_area": np.full(len(ii), 100, np.int64),
        "inst_box": np.stack([ii[:, 2], ii[:, 3], ii[:, 2] + 10, ii[:, 3] + 10], 1).astype(np.int32),
        "inst_centroid": np.stack([ii[:, 2] + 5, ii[:, 3] + 5], 1).astype(np.float32),
        "inst_anchors": np.repeat(ii[:, None, 2:4], k, axis=1).astype(np.int32),
    }
    images = {"image_height": np.full(n_img, size[1], np.int32), "image_width": np.full(n_img, size[0], np.int32)}
    images["image_id_blob"], images["image_id_offsets"] = pack_strings([f"im{i}" for i in range(n_img)])
    images["file_name_blob"], images["file_name_offsets"] = pack_strings([f"im{i}.jpg" for i in range(n_img)])
    cats = [{"id": c, "name": name, "isthing": thing, "color": [c, c, c], "evaluate": ev}
            for c, (name, thing, ev) in CATEGORIES.items()]
    meta = {"kind": "index", "schema": SCHEMA_VERSION, "isus_version": "test",
            "dataset": {"name": "tiny", "root": "", "split": "train", "source": "hand-built", "has_instances": True,
                        "num_images": n_img},
            "params": {"grid": GRID, "anchors": k, "cache_dir": None}, "categories": cats,
            "image_range": [0, n_img], "int_image_ids": False, "cache_bytes": 0}
    return Index(meta, assemble(meta, images, rows))


def lvis_factors(presence: dict[int, list[int]], classes: list[int], t: float, sqrt: bool
                 ) -> tuple[dict[int, float], dict[int, float]]:
    """The LVIS definition with plain Python: f_c over the images holding any of ``classes``,
    r_c = max(1, sqrt(t / f_c)) (or t / f_c), r_i = max over the image's classes (0: none)."""
    train = [i for i, cats in presence.items() if set(cats) & set(classes)]
    r_c = {}
    for c in classes:
        f = sum(c in presence[i] for i in train) / len(train)
        r_c[c] = max(1.0, math.sqrt(t / f) if sqrt else t / f)
    r_i = {i: max((r_c[c] for c in cats if c in r_c), default=0.0) for i, cats in presence.items()}
    return r_c, r_i


@pytest.fixture(scope="module")
def tiny():
    return tiny_index()


def rfs(**kw) -> SamplerConfig:
    return SamplerConfig(**{"crop_size": (64, 64), "mode": "rfs", **kw})


# -- the factors ------------------------------------------------------------------------------
def test_class_repeat_factors_by_hand():
    f = np.array([1.0, 0.01, 0.001, 0.0001, 0.00025])
    np.testing.assert_allclose(class_repeat_factors(f, 0.001), [1, 1, 1, math.sqrt(10), 2])
    np.testing.assert_allclose(class_repeat_factors(f, 0.001, sqrt=False), [1, 1, 1, 10, 4])
    np.testing.assert_allclose(class_repeat_factors(f, 0.0), np.ones(5))
    with pytest.raises(ValueError, match="frequencies > 0"):
        class_repeat_factors(np.array([0.5, 0.0]), 0.001)


@pytest.mark.parametrize("sqrt", [True, False], ids=["sqrt", "linear"])
@pytest.mark.parametrize("t", [0.0, 0.001, 0.15, 0.3, 0.75, 1.0])
def test_repeat_factors_equal_the_lvis_formula(tiny, t, sqrt):
    classes = [1, 2, 3, 4]  # the evaluated ones: not 5
    want_c, want_i = lvis_factors(PRESENCE, classes, t, sqrt)
    got = repeat_factors(tiny, threshold=t, sqrt=sqrt)
    assert got.classes.tolist() == classes
    assert got.images_with_class.tolist() == [10, 5, 2, 1]
    np.testing.assert_allclose(got.frequency, [1.0, 0.5, 0.2, 0.1])
    assert got.num_eligible == 10
    np.testing.assert_allclose(got.class_factor, [want_c[c] for c in classes], rtol=1e-12)
    np.testing.assert_allclose(got.image_factor, [want_i[i] for i in range(len(PRESENCE))], rtol=1e-12)
    assert got.image_factor[10] == 0  # no sampled class: never drawn
    # the policy uses exactly these
    policy = SamplingPolicy(tiny, rfs(rfs_threshold=t, rfs_sqrt=sqrt))
    np.testing.assert_array_equal(policy.image_weights(), got.image_factor)


def test_repeat_factors_worked_example(tiny):
    """t = 0.3: car (f = 0.2) gets sqrt(1.5) = 1.2247, bike (f = 0.1) sqrt(3) = 1.7321; without
    the square root 1.5 and 3; road and sky stay at 1."""
    r = repeat_factors(tiny, threshold=0.3)
    np.testing.assert_allclose(r.class_factor, [1, 1, 1.224744871, 1.732050808])
    np.testing.assert_allclose(r.image_factor, [1.224744871] * 2 + [1] * 5 + [1.732050808, 1, 1, 0])
    r = repeat_factors(tiny, threshold=0.3, sqrt=False)
    np.testing.assert_allclose(r.image_factor, [1.5, 1.5, 1, 1, 1, 1, 1, 3, 1, 1, 0])


def test_repeat_factors_of_chosen_classes(tiny):
    """With classes=[3, 4] only images 0, 1 and 7 are training images: f = 2/3 and 1/3."""
    r = repeat_factors(tiny, [3, 4], threshold=0.5)
    np.testing.assert_allclose(r.frequency, [2 / 3, 1 / 3])
    want_c, want_i = lvis_factors(PRESENCE, [3, 4], 0.5, True)
    np.testing.assert_allclose(r.class_factor, [want_c[3], want_c[4]])
    np.testing.assert_allclose(r.image_factor, [want_i[i] for i in range(11)])
    assert r.num_eligible == 3
    with pytest.raises(isus.IsusError, match="no pixels"):
        repeat_factors(tiny_index({**PRESENCE, 7: [1]}), [4])


def test_repeat_factors_on_a_synthetic_dataset(synth_root):
    """Against a loop over the dataset's own panoptic annotations (not the index)."""
    ds = isus.open_dataset("mvd", synth_root("mvd"))
    index = isus.build_index(ds, workers=1)
    evaluated = {c.id for c in ds.categories if c.evaluate}
    presence = {}
    for i in range(len(ds)):
        pan = ds.load_panoptic(i)
        present = {int(s["category_id"]) for s in pan.segments if (pan.ids == s["id"]).any()}
        presence[i] = sorted(present & evaluated)
    classes = sorted(set().union(*presence.values()))
    for sqrt in (True, False):
        want_c, want_i = lvis_factors(presence, classes, 0.4, sqrt)
        got = repeat_factors(index, threshold=0.4, sqrt=sqrt)
        assert got.classes.tolist() == [c for c in (c.id for c in index.categories) if c in want_c]
        np.testing.assert_allclose(got.class_factor, [want_c[c] for c in got.classes.tolist()])
        np.testing.assert_allclose(got.image_factor, [want_i[i] for i in range(len(ds))])
    assert got.class_factor.max() > 1  # the check is not vacuous


# -- the stream -------------------------------------------------------------------------------
@pytest.mark.parametrize("crop", ["class", "image"])
@pytest.mark.parametrize("sqrt", [True, False], ids=["sqrt", "linear"])
def test_image_frequencies_match_the_factors(tiny, crop, sqrt):
    policy = SamplingPolicy(tiny, rfs(rfs_threshold=0.3, rfs_sqrt=sqrt, rfs_crop=crop))
    assert type(policy) is RepeatFactorPolicy
    n = 40000
    b = policy.draw(np.random.default_rng(12), n)
    r = policy.repeat.image_factor
    counts = np.bincount(b.image, minlength=len(r))
    assert counts[10] == 0  # not a training image
    expected = r / r.sum() * n
    keep = r > 0
    assert stats.chisquare(counts[keep], expected[keep]).pvalue > ALPHA
    # the test can fail: the same counts reject uniform image sampling outright
    assert stats.chisquare(counts[keep], np.full(keep.sum(), n / keep.sum())).pvalue < 1e-12


def test_class_frequencies_match_the_factors(tiny):
    """rfs_crop="class": P(category = c) = sum over images i holding c of (r_i / R) / |C_i|."""
    policy = SamplingPolicy(tiny, rfs(rfs_threshold=0.3, rfs_sqrt=False))
    n = 40000
    b = policy.draw(np.random.default_rng(13), n)
    r = dict(enumerate(policy.repeat.image_factor))
    total = sum(r.values())
    classes = [1, 2, 3, 4]
    expected = {c: sum(r[i] / total / len([d for d in cats if d in classes])
                       for i, cats in PRESENCE.items() if c in cats) for c in classes}
    counts = np.array([(b.category == c).sum() for c in classes])
    assert counts.sum() == n  # never category 5
    assert stats.chisquare(counts, [n * expected[c] for c in classes]).pvalue > ALPHA
    # each crop's class is in its image, and the share of crops from images holding c follows r
    assert all(int(c) in PRESENCE[int(i)] for i, c in zip(b.image, b.category))
    for c in classes:
        share = sum(r[i] for i, cats in PRESENCE.items() if c in cats) / total
        held = np.isin(b.image, [i for i, cats in PRESENCE.items() if c in cats]).sum()
        assert stats.binomtest(int(held), n, share).pvalue > ALPHA / len(classes)


def test_whole_images(tiny):
    """rfs_crop="image": the window is the image, the scale the s0 rescale, the category the
    image's rarest class (the one that sets r_i)."""
    policy = SamplingPolicy(tiny, rfs(rfs_threshold=0.3, rfs_crop="image", shortest_side=150))
    b = policy.draw(np.random.default_rng(14), 4000)
    np.testing.assert_allclose(b.scale, 0.5)
    np.testing.assert_allclose(b.window, np.tile([0, 0, W, H], (len(b), 1)))
    rarest = {0: 3, 1: 3, 7: 4, 2: 2, 3: 2, 4: 2}
    assert all(int(c) == rarest.get(int(i), 1) for i, c in zip(b.image, b.category))
    assert (b.sigma == 1).all() and (b.instance == -1).all() and (b.level == -1).all()
    assert 0.45 < b.flip.mean() < 0.55
    spec = b.spec(0)
    assert crop_size(spec) == (200, 150)
    # whole images larger than a crop may be: refused up front, naming the way out
    big = tiny_index(size=(8000, 6000))  # 48 Mpx
    with pytest.raises(isus.IsusError, match="shortest_side"):
        SamplingPolicy(big, rfs(rfs_crop="image"))
    SamplingPolicy(big, rfs(rfs_crop="image", shortest_side=3000))
    SamplingPolicy(big, rfs())  # class crops are crop_size whatever the image


def test_class_crops_contain_a_cell_of_their_class(tiny):
    policy = SamplingPolicy(tiny, rfs(rfs_threshold=0.3, crop_size=(160, 120), stuff_scale_range=(0.5, 2.0)))
    b = policy.draw(np.random.default_rng(15), 3000)
    cw, ch = W // GRID, H // GRID
    for k in range(len(b)):
        c = int(b.category[k])
        gx, gy = (c - 1) % GRID, (c - 1) // GRID
        x0, y0, x1, y1 = b.window[k]
        assert x0 < (gx + 1) * cw and x1 > gx * cw and y0 < (gy + 1) * ch and y1 > gy * ch
    assert stats.kstest((b.sigma - 0.5) / 1.5, "uniform").pvalue > ALPHA


def test_image_weights_subclass(tiny):
    class Uniform(RepeatFactorPolicy):
        def image_weights(self):
            return (self.repeat.image_factor > 0).astype(float)

    b = Uniform(tiny, rfs()).draw(np.random.default_rng(16), 20000)
    counts = np.bincount(b.image, minlength=11)
    assert counts[10] == 0 and stats.chisquare(counts[:10]).pvalue > ALPHA

    class Broken(RepeatFactorPolicy):
        def image_weights(self):
            return np.zeros(3)

    with pytest.raises(ValueError, match="image_weights"):
        Broken(tiny, rfs()).draw(np.random.default_rng(0), 5)


# -- determinism and resumption ---------------------------------------------------------------
def _stream(sampler):
    return [(s.image, s.category, s.instance, s.level, s.scale, s.window, s.flip) for s in sampler]


@pytest.mark.parametrize("crop", ["class", "image"])
def test_sampler_is_deterministic_and_resumes_exactly(tiny, crop):
    cfg = rfs(rfs_threshold=0.3, rfs_crop=crop)
    ref = CropSampler(tiny, cfg, 9000, seed=4)  # crosses a block boundary (4096)
    ref.set_epoch(2)
    expected = _stream(ref)
    assert _stream(ref) == expected
    again = CropSampler(tiny, cfg, 9000, seed=4)
    again.set_epoch(2)
    assert _stream(again) == expected
    a = CropSampler(tiny, cfg, 9000, seed=4)
    a.set_epoch(2)
    it = iter(a)
    head = [next(it) for _ in range(5000)]
    state = a.state_dict()
    b = CropSampler(tiny, cfg, 9000, seed=4)  # a fresh sampler, as in a new process
    b.load_state_dict(state)
    assert [(s.image, s.category, s.instance, s.level, s.scale, s.window, s.flip) for s in head] + _stream(b) \
        == expected
    c = CropSampler(tiny, cfg, 9000, seed=4)
    c.load_state_dict(a.state_dict(num_consumed=4321))
    assert _stream(c) == expected[4321:]
    # ranks split the same stream
    per_rank = [_stream(CropSampler(tiny, cfg, 9000, seed=4, rank=r, world_size=2)) for r in (0, 1)]
    first = CropSampler(tiny, cfg, 9000, seed=4)
    assert [per_rank[j % 2][j // 2] for j in range(9000)] == _stream(first)
    # another seed, another stream
    assert _stream(CropSampler(tiny, cfg, 200, seed=5)) != _stream(CropSampler(tiny, cfg, 200, seed=4))


def test_state_records_the_rfs_settings(tiny):
    cfg = rfs(rfs_threshold=0.3)
    state = CropSampler(tiny, cfg, 100, seed=1).state_dict()
    assert state["config"]["rfs_threshold"] == "0.3" and state["config"]["rfs_sqrt"] == "True"
    assert state["config"]["policy"] == "isus.sampling.policy.RepeatFactorPolicy"
    for other, what in ((replace(cfg, rfs_threshold=0.2), "rfs_threshold"), (replace(cfg, rfs_sqrt=False), "rfs_sqrt"),
                        (replace(cfg, rfs_crop="image"), "rfs_crop"), (cfg.with_mode("cus"), "mode")):
        with pytest.raises(SamplerStateError, match=what):
            CropSampler(tiny, other, 100, seed=1).load_state_dict(state)


def test_other_configurations_describe_themselves_as_before():
    """The rfs_* fields exist on RepeatFactorConfig only: a CUS/ISUS configuration's fields, and so
    its sampler state, are the eight they always were."""
    names = ["crop_size", "shortest_side", "stuff_scale_range", "thing_scale_range", "levels", "mode", "flip", "classes"]
    for cfg in (SamplerConfig(), SamplerConfig(mode="cus"), SamplerConfig.preset("mvd")):
        assert type(cfg) is SamplerConfig and [f.name for f in fields(cfg)] == names
        assert list(config_description(cfg, SamplingPolicy.__new__(SamplingPolicy))) == names + ["policy"]
    assert [f.name for f in fields(rfs())] == names + ["rfs_threshold", "rfs_sqrt", "rfs_crop"]


# -- configuration ----------------------------------------------------------------------------
def test_config_and_presets():
    cfg = SamplerConfig(mode="rfs")
    assert type(cfg) is RepeatFactorConfig and isinstance(cfg, SamplerConfig)
    assert (cfg.rfs_threshold, cfg.rfs_sqrt, cfg.rfs_crop) == (0.001, True, "class")
    coco = SamplerConfig.preset("coco", mode="rfs", rfs_threshold=0.01)
    assert type(coco) is RepeatFactorConfig and coco.crop_size == (640, 640) and coco.shortest_side == 800
    assert coco.rfs_threshold == 0.01
    assert coco.with_mode("isus") == SamplerConfig.preset("coco")
    assert SamplerConfig.preset("coco").with_mode("rfs", rfs_threshold=0.01) == coco
    assert replace(coco, crop_size=(512, 512)).rfs_threshold == 0.01
    import pickle
    assert pickle.loads(pickle.dumps(coco)) == coco


@pytest.mark.parametrize("kw, match", [
    (dict(mode="cus", rfs_threshold=0.01), "applies to mode='rfs' only"),
    (dict(rfs_sqrt=False), "applies to mode='rfs' only"),
    (dict(mode="rfs", rfs_threshold=-0.1), "rfs_threshold"),
    (dict(mode="rfs", rfs_threshold=1.5), "rfs_threshold"),
    (dict(mode="rfs", rfs_threshold=float("nan")), "rfs_threshold"),
    (dict(mode="rfs", rfs_threshold="0.001"), "rfs_threshold"),
    (dict(mode="rfs", rfs_threshold=True), "rfs_threshold"),
    (dict(mode="rfs", rfs_sqrt=1), "rfs_sqrt"),
    (dict(mode="rfs", rfs_sqrt="yes"), "rfs_sqrt"),
    (dict(mode="rfs", rfs_crop="random"), "rfs_crop"),
    (dict(mode="RFS"), "mode"),
])
def test_config_validation(kw, match):
    with pytest.raises(ValueError, match=match):
        SamplerConfig(**kw)


def test_mode_and_class_must_agree(tiny):
    with pytest.raises(ValueError, match="with_mode"):
        RepeatFactorConfig(mode="cus")
    with pytest.raises(ValueError, match="with_mode"):
        replace(rfs(), mode="isus")
    with pytest.raises(ValueError, match="rfs_"):
        rfs().with_mode("cus", rfs_threshold=0.1)

    class Mine(SamplingPolicy):
        pass

    with pytest.raises(ValueError, match="RepeatFactorPolicy"):
        Mine(tiny, rfs())
    with pytest.raises(ValueError, match="mode='rfs'"):
        RepeatFactorPolicy(tiny, SamplerConfig(mode="cus"))


@pytest.mark.parametrize("cfg", [SamplerConfig(crop_size=(64, 64), mode="cus"), rfs(), rfs(rfs_crop="image")])
def test_draw_refuses_bad_arguments_naming_the_policy(tiny, cfg):
    policy = SamplingPolicy(tiny, cfg)
    name = type(policy).__name__
    for rng in (0, np.random.RandomState(0), None):
        with pytest.raises(TypeError, match=rf"{name}\.draw\(rng=\) expects a numpy Generator"):
            policy.draw(rng, 4)
    for n in (-1, True, 2.0, "4"):
        with pytest.raises(ValueError, match=rf"{name}\.draw\(n=\) expects an integer >= 0"):
            policy.draw(np.random.default_rng(0), n)
    assert len(policy.draw(np.random.default_rng(0), np.int64(3))) == 3 and len(policy.draw(np.random.default_rng(0), 0)) == 0
