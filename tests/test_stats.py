"""isus stats: numbers against independent computations, ISUS flatter than CUS, plots written (and RFS beside them)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import isus
from isus.sampling import SamplingPolicy
from isus.stats import compute_stats, write_plots
from isus_cli.main import cli


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    root = isus.synth.write_dataset(tmp_path_factory.mktemp("st") / "mvd", "mvd", 16, size=(1024, 768), seed=11)
    idx = isus.build_index(isus.open_dataset("mvd", root), workers=1)
    path = tmp_path_factory.mktemp("st") / "mvd.isusidx"
    idx.save(path)
    return isus.Index.load(path)


CFG = isus.SamplerConfig(crop_size=(640, 640), shortest_side=600)


@pytest.fixture(scope="module")
def stats(index):
    return compute_stats(index, CFG, samples=3000, seed=4, per_class=True, chunk=1000)


def test_scale_histogram_matches_the_index(index, stats):
    inst = index.instances
    keep = ~inst.iscrowd
    base = 600 / np.minimum(index.heights, index.widths)[inst.image[keep]]
    scale = np.sqrt(inst.area[keep].astype(float)) * base
    edges = np.array(stats["scale_histogram"]["edges"])
    assert stats["scale_histogram"]["counts"] == np.histogram(scale, bins=edges)[0].tolist()
    assert sum(stats["scale_histogram"]["counts"]) == stats["num_instances"] == keep.sum()
    per_class = stats["scale_histogram"]["per_class"]
    assert sum(sum(v) for v in per_class.values()) == keep.sum()
    assert np.allclose(np.diff(np.log2(edges)), 0.25)  # log-spaced, 4 bins per octave


def _overlaps(index, policy, m):
    """The crops compute_stats draws for mode ``m`` (3 chunks of 1000 from PCG64(SeedSequence([4,
    m]))) and, with plain loops, each (crop, non-crowd instance) pair whose box overlaps the
    window: (instance row, crop scale, clipped box width and height, full box area)."""
    inst = index.instances
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([4, m])))
    for b in [policy.draw(rng, 1000) for _ in range(3)]:
        for k in range(len(b)):
            x0, y0, x1, y1 = b.window[k]
            for r in np.flatnonzero((inst.image == b.image[k]) & ~inst.iscrowd):
                bx0, by0, bx1, by1 = inst.box[r].astype(float)
                w, h = min(bx1, x1) - max(bx0, x0), min(by1, y1) - max(by0, y0)
                if w > 0 and h > 0:
                    yield r, b.scale[k], w, h, (bx1 - bx0) * (by1 - by0)


def test_truncation_and_levels_recomputed_from_the_crop_windows(index, stats):
    """Redraw the same crops and recompute IoU and levels with plain loops."""
    edges = np.array(stats["truncation"]["edges"])
    levels = CFG.levels
    inst = index.instances
    base = 600 / np.minimum(index.heights, index.widths)
    for m, mode in enumerate(("cus", "isus")):
        policy = SamplingPolicy(index, isus.SamplerConfig(crop_size=(640, 640), shortest_side=600, mode=mode))
        sums, counts, lv = np.zeros(len(edges) - 1), np.zeros(len(edges) - 1), np.zeros(4, int)
        for r, scale, w, h, full in _overlaps(index, policy, m):
            s = np.sqrt(inst.area[r]) * base[inst.image[r]]
            j = min(max(np.searchsorted(edges, s, side="right") - 1, 0), len(edges) - 2)
            sums[j] += w * h / full
            counts[j] += 1
            lv[levels.levels.index(int(levels.level_of(np.array([np.sqrt(w * h) * scale]))[0]))] += 1
        assert stats["truncation"][mode]["count"] == counts.astype(int).tolist()
        got = np.array([np.nan if v is None else v for v in stats["truncation"][mode]["mean_iou"]])
        want = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
        np.testing.assert_allclose(got, want, rtol=1e-9)
        assert stats["levels"][mode] == lv.tolist()
    b = inst.box[~inst.iscrowd].astype(float)
    size = np.sqrt((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])) * base[inst.image[~inst.iscrowd]]
    full = levels.level_of(size)
    assert stats["levels"]["full_images"] == [int((full == l).sum()) for l in levels.levels]


def test_isus_is_measurably_flatter_than_cus(stats):
    imb = stats["levels"]["imbalance"]
    assert imb["isus"] < 0.8 * imb["cus"], imb
    cus, isus_ = np.array(stats["levels"]["cus"], float), np.array(stats["levels"]["isus"], float)
    # ISUS moves supervision from the lowest level to the highest
    assert isus_[-1] / isus_.sum() > cus[-1] / cus.sum() and isus_[0] / isus_.sum() < cus[0] / cus.sum()


def test_plots_are_written_and_decode(stats, tmp_path):
    paths = write_plots(stats, tmp_path)
    assert [p.name for p in paths] == ["scale_distribution.png", "crop_truncation.png", "level_supervision.png",
                                       "per_class_levels.png"]
    for p in paths[:3]:
        with Image.open(p) as im:
            im.load()
            assert im.size == (750, 460)
    with Image.open(paths[3]) as im:
        assert im.size[0] == 1100 and im.size[1] > 200


def test_cli_stats(index, tmp_path):
    res = CliRunner().invoke(cli, ["stats", str(index.path), "--out", str(tmp_path), "--samples", "500",
                                   "--crop", "512"])
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "stats.json").read_text())
    assert data["settings"]["crop_size"] == [512, 512] and data["settings"]["samples"] == 500
    assert "max/min" in res.output and (tmp_path / "level_supervision.png").exists()
    assert not (tmp_path / "per_class_levels.png").exists()


# -- repeat-factor sampling beside CUS and ISUS ---------------------------------------------------
RFS_CFG = CFG.with_mode("rfs", rfs_threshold=0.9)


@pytest.fixture(scope="module")
def rfs_stats(index):
    return compute_stats(index, RFS_CFG, samples=3000, seed=4, per_class=True, chunk=1000)


def test_rfs_is_added_beside_cus_and_isus(index, stats, rfs_stats):
    """CUS and ISUS are drawn exactly as without RFS; an ISUS/CUS configuration gets no RFS keys."""
    for key in ("scale_histogram", "num_instances", "dataset"):
        assert rfs_stats[key] == stats[key]
    for mode in ("cus", "isus"):
        assert rfs_stats["truncation"][mode] == stats["truncation"][mode]
        assert rfs_stats["levels"][mode] == stats["levels"][mode]
        assert rfs_stats["levels"]["imbalance"][mode] == stats["levels"]["imbalance"][mode]
    assert set(rfs_stats["levels"]["per_class"]) == set(stats["levels"]["per_class"])
    for name, v in stats["levels"]["per_class"].items():
        assert {m: rfs_stats["levels"]["per_class"][name][m] for m in v} == v
        assert set(rfs_stats["levels"]["per_class"][name]) == {"full_images", "cus", "isus", "rfs"}
    assert "rfs" not in stats["levels"] and "rfs" not in stats["truncation"] and "classes" not in stats
    assert "rfs" not in stats["settings"]
    assert rfs_stats["settings"]["rfs"] == {"threshold": 0.9, "sqrt": True, "crop": "class", "eligible_images": 16}


def test_rfs_numbers_recomputed_from_its_crops(index, rfs_stats):
    """Redraw the RFS crops (generator PCG64(SeedSequence([seed, 2]))) and recount with loops."""
    policy = SamplingPolicy(index, RFS_CFG)
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([4, 2])))
    batches = [policy.draw(rng, 1000) for _ in range(3)]
    inst = index.instances
    levels = CFG.levels
    lv = np.zeros(4, int)
    per_class_inst: dict[int, int] = {}
    holds: dict[int, set[int]] = {}
    for c in policy.classes:
        for i in index.images_with_class(int(c))[0]:
            holds.setdefault(int(i), set()).add(int(c))
    image_crops: dict[int, int] = {}
    for b in batches:
        for k in range(len(b)):
            for c in holds.get(int(b.image[k]), ()):
                image_crops[c] = image_crops.get(c, 0) + 1
            x0, y0, x1, y1 = b.window[k]
            for r in np.flatnonzero((inst.image == b.image[k]) & ~inst.iscrowd):
                bx0, by0, bx1, by1 = inst.box[r].astype(float)
                w, h = min(bx1, x1) - max(bx0, x0), min(by1, y1) - max(by0, y0)
                if w <= 0 or h <= 0:
                    continue
                lv[levels.levels.index(int(levels.level_of(np.array([np.sqrt(w * h) * b.scale[k]]))[0]))] += 1
                c = int(inst.category_id[r])
                per_class_inst[c] = per_class_inst.get(c, 0) + 1
    assert rfs_stats["levels"]["rfs"] == lv.tolist()
    cl = rfs_stats["classes"]
    r = isus.sampling.repeat_factors(index, threshold=0.9)
    assert cl["id"] == r.classes.tolist() and cl["images"] == r.images_with_class.tolist()
    np.testing.assert_allclose(cl["repeat_factor"], r.class_factor)
    np.testing.assert_allclose(cl["frequency"], r.frequency)
    assert r.class_factor.max() > 1  # some class is repeated: the comparison is not vacuous
    np.testing.assert_allclose(cl["image_share"]["rfs"], [image_crops.get(c, 0) / 3000 for c in cl["id"]])
    assert cl["instances"]["rfs"] == [per_class_inst.get(c, 0) for c in cl["id"]]


def test_rfs_plots(rfs_stats, tmp_path):
    paths = write_plots(rfs_stats, tmp_path)
    assert [p.name for p in paths][-1] == "per_class_levels.png"
    with Image.open(paths[2]) as im:
        assert im.size == (750, 460)
    with Image.open(paths[3]) as im:
        assert im.size[0] == 1400  # a fourth panel


def test_cli_stats_and_preview_with_rfs(index, tmp_path):
    res = CliRunner().invoke(cli, ["stats", str(index.path), "--out", str(tmp_path), "--samples", "500", "--crop", "512",
                                   "--mode", "rfs", "--rfs-threshold", "0.9", "--no-rfs-sqrt", "--per-class"])
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "stats.json").read_text())
    assert data["settings"]["rfs"]["threshold"] == 0.9 and data["settings"]["rfs"]["sqrt"] is False
    lines = res.output.splitlines()
    assert any(line.split()[:1] == ["RFS"] and len(line.split()) == 6 for line in lines), res.output
    assert "RFS repeat factors (t = 0.9, no sqrt, over 16 images)" in res.output
    table = lines[lines.index(next(line for line in lines if line.strip().startswith("class"))) + 1:-1]
    assert len(table) == len(data["classes"]["name"])  # --per-class: every class
    # an rfs option without --mode rfs is a usage error naming both
    res = CliRunner().invoke(cli, ["stats", str(index.path), "--out", str(tmp_path / "x"), "--rfs-threshold", "0.1"])
    assert res.exit_code == 2 and "--rfs-threshold applies to --mode rfs" in res.output, res.output
    res = CliRunner().invoke(cli, ["preview", str(index.path), "--out", str(tmp_path / "pv"), "--samples", "4",
                                   "--crop", "256", "--mode", "rfs", "--rfs-crop", "class"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "pv" / "preview_rfs.png").exists()


# -- visibility-aware filtering: what min_box_fraction would drop or ignore -----------------------
def test_visibility_counts_recomputed_from_the_crop_windows(index, stats):
    """Redraw the same crops; count per size bucket (full box in the crop: < 32, < 96, more) the
    pairs and those whose window-clipped box is below each fraction, with plain loops."""
    v = stats["visibility"]
    assert v["box_fractions"] == [0.1, 0.25, 0.5] and v["size_edges"] == [32.0, 96.0]
    for m, mode in enumerate(("cus", "isus")):
        policy = SamplingPolicy(index, isus.SamplerConfig(crop_size=(640, 640), shortest_side=600, mode=mode))
        pairs, below = np.zeros(3, int), np.zeros((3, 3), int)
        for _, scale, w, h, full in _overlaps(index, policy, m):
            size = np.sqrt(full) * scale
            j = 0 if size < 32 else 1 if size < 96 else 2
            pairs[j] += 1
            for t, f in enumerate((0.1, 0.25, 0.5)):
                below[t, j] += w * h / full < f
        assert v[mode]["pairs"] == pairs.tolist()
        assert v[mode]["below"] == below.tolist()
        assert sum(pairs) == sum(stats["truncation"][mode]["count"])
        assert (below[0] <= below[1]).all() and (below[1] <= below[2]).all() and below[2].sum() > 0


def test_cli_stats_box_fractions(index, tmp_path):
    res = CliRunner().invoke(cli, ["stats", str(index.path), "--out", str(tmp_path), "--samples", "300",
                                   "--crop", "512", "--box-fractions", "0.2,0.7"])
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "stats.json").read_text())
    assert data["visibility"]["box_fractions"] == [0.2, 0.7]
    assert len(data["visibility"]["isus"]["below"]) == 2
    assert "min_box_fraction" in res.output and "< 0.7" in res.output
    res = CliRunner().invoke(cli, ["stats", str(index.path), "--out", str(tmp_path / "b"), "--box-fractions", "0,2"])
    assert res.exit_code != 0 and "--box-fractions" in res.output


def test_cli_stats_counts_visibility_on_masks(index, tmp_path):
    """--mask-samples crops' segment maps give the min_visible_fraction counts (and exact box ones);
    0 turns it off; an index whose dataset is gone still gets its index-only numbers, with a note."""
    res = CliRunner().invoke(cli, ["stats", str(index.path), "--out", str(tmp_path / "a"), "--samples", "200",
                                   "--crop", "512", "--mask-samples", "20", "--visible-fractions", "0.3"])
    assert res.exit_code == 0, res.output
    masks = json.loads((tmp_path / "a" / "stats.json").read_text())["visibility"]["masks"]
    assert masks["samples"] == 20 and masks["visible_fractions"] == [0.3] and set(masks) >= {"cus", "isus"}
    assert len(masks["isus"]["area_below"]) == 1 and len(masks["isus"]["box_below"]) == 3
    assert "segment maps of 20 crops per mode" in res.output and "area < 0.3" in res.output
    res = CliRunner().invoke(cli, ["stats", str(index.path), "--out", str(tmp_path / "b"), "--samples", "200",
                                   "--mask-samples", "0"])
    assert res.exit_code == 0 and "segment maps" not in res.output, res.output
    assert "masks" not in json.loads((tmp_path / "b" / "stats.json").read_text())["visibility"]
    elsewhere = tmp_path / "empty"
    elsewhere.mkdir()
    res = CliRunner().invoke(cli, ["stats", str(index.path), "--out", str(tmp_path / "c"), "--samples", "200",
                                   "--mask-samples", "5", "--root", str(elsewhere)])
    assert res.exit_code == 0, res.output
    assert "not counted on masks" in res.output and "--mask-samples 0" in res.output
    assert "skipped" in json.loads((tmp_path / "c" / "stats.json").read_text())["visibility"]["masks"]
