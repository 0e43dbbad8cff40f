"""Semantic-only datasets (issue 15, item 2): an MVD tree with only ``labels/`` gives class-uniform
crops (image + semantic map, no instance targets) end to end; ISUS and ``isus stats`` say that they
need instances."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch.utils.data import DataLoader

import isus
from isus.crop import CropConfig, CropEngine
from isus.sampling.policy import SamplingPolicy
from isus.stats import compute_stats
from isus.torch import CropSampler, PanopticCropDataset, collate_crops
from isus_cli.main import cli
from tests.conftest import realdata

MVD_SAMPLE = ("mapillary_vistas", "deeposlandia", "tests", "data", "mapillary")
MVD_V11_CONFIG = ("mapillary_vistas", "mseg-api", "tests", "test_data", "mapillary-vistas-dataset_public_v1.1_config.json")
CUS = isus.SamplerConfig(crop_size=(96, 64), mode="cus")


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The same synthetic MVD scenes opened with their instances and semantic-only (a copy whose
    instances/ and panoptic/ folders are deleted), each with an index and its annotation cache."""
    tmp = tmp_path_factory.mktemp("semonly")
    root = isus.synth.write_dataset(tmp / "full", "mvd", 4, size=(192, 144), seed=11)
    sem_root = tmp / "sem"
    shutil.copytree(root, sem_root)
    for version in ("v1.2", "v2.0"):
        for folder in ("instances", "panoptic"):
            shutil.rmtree(sem_root / "training" / version / folder)
    full, sem = isus.open_dataset("mvd", root), isus.open_dataset("mvd", sem_root)
    assert full.has_instances and not sem.has_instances and sem.source == "labels"
    sem_index = isus.build_index(sem, workers=1, cache_dir=tmp / "cache")
    sem_index.save(tmp / "sem.isusidx")
    return full, sem, sem_index, tmp


def cus_specs(index, n=12, seed=0):
    batch = SamplingPolicy(index, CUS).draw(np.random.default_rng(seed), n)
    return [batch.spec(k) for k in range(n)]


@pytest.mark.parametrize("use_cache", [True, False])
@pytest.mark.parametrize("with_index", [True, False])
def test_cus_crops_of_semantic_only_data_match_those_with_instances(world, use_cache, with_index):
    full, sem, sem_index, _ = world
    assert len(sem_index.instances) == 0
    config = CropConfig(use_cache=use_cache, crowd_as_ignore=False)  # labels/ gives crowd pixels their class
    sem_engine = CropEngine(sem, sem_index if with_index else None, config)
    full_engine = CropEngine(full, None, config)
    specs = cus_specs(sem_index)
    assert any(sem.category(s.category).isthing for s in specs)  # thing classes are cropped too
    for spec in specs:
        a, b = sem_engine(spec), full_engine(spec)
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.semantic, b.semantic)
        assert (a.panoptic == 0).all() and not a.crowd.any()  # no segment ids without instances
        assert a.masks.shape == (0, *a.semantic.shape) and a.masks.dtype == bool
        assert a.labels.shape == a.category_ids.shape == a.segment_ids.shape == (0,)
        assert a.boxes.shape == a.original_boxes.shape == a.truncated.shape == (0, 4)
        assert a.dropped == 0


def test_void_and_padding_are_ignored_not_category_zero(world):
    """Category 0 and void must not be confused: outside the image is ``ignore_label``."""
    _, sem, sem_index, _ = world
    info = sem.image_info(0)
    spec = isus.CropSpec(0, 0, -1, -1, 1.0, (-20.0, -10.0, info.width + 20.0, info.height + 10.0), False)
    for with_index in (True, False):
        s = CropEngine(sem, sem_index if with_index else None)(spec)
        assert (s.semantic[:10] == 255).all() and (s.semantic[:, :20] == 255).all()
        inside = s.semantic[10:-10, 20:-20]
        np.testing.assert_array_equal(inside, np.where(sem.load_semantic(0) < 0, 255, sem.load_semantic(0)))


def test_crop_dataset_and_loader_on_semantic_only_data(world):
    _, sem, sem_index, _ = world
    data = PanopticCropDataset(sem, sem_index)
    sampler = CropSampler(sem_index, CUS, num_samples=6, seed=3)
    batch = next(iter(DataLoader(data, batch_size=3, sampler=sampler, collate_fn=collate_crops)))
    assert batch["image"].shape == (3, 3, 64, 96) and batch["semantic"].shape == (3, 64, 96)
    assert all(m.shape == (0, 64, 96) for m in batch["masks"]) and all(len(b) == 0 for b in batch["boxes"])
    assert (batch["semantic"] != 255).any() and batch["semantic"].dtype == torch.int64


def test_isus_says_that_it_needs_instances(world):
    _, _, sem_index, _ = world
    with pytest.raises(isus.InstancesUnavailableError, match=r"semantic-only.*mode='cus'"):
        SamplingPolicy(sem_index, isus.SamplerConfig(crop_size=(96, 64), mode="isus"))
    with pytest.raises(isus.InstancesUnavailableError, match="mode='cus'"):
        CropSampler(sem_index, isus.SamplerConfig(crop_size=(96, 64)), num_samples=4)


def test_stats_say_that_they_need_instances(world):
    _, _, sem_index, _ = world
    with pytest.raises(isus.InstancesUnavailableError, match="no instances"):
        compute_stats(sem_index, CUS, 100)


def test_cli_on_the_semantic_only_synthetic_index(world, tmp_path):
    *_, tmp = world
    res = invoke("stats", tmp / "sem.isusidx", "--out", tmp_path / "st", "--samples", "50")
    assert res.exit_code == 1 and "no instances" in res.output and "semantic-only" in res.output, res.output
    assert not (tmp_path / "st").exists()  # no empty plots
    res = invoke("preview", tmp / "sem.isusidx", "--out", tmp_path / "pv", "--samples", "4")
    assert res.exit_code == 1 and "--mode cus" in res.output, res.output
    res = invoke("preview", tmp / "sem.isusidx", "--out", tmp_path / "pv", "--samples", "4", "--mode", "cus",
                 "--crop", "96")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "pv" / "preview_cus.png").stat().st_size > 0


def test_cli_end_to_end_on_the_real_semantic_only_mvd_sample(tmp_path):
    root, config = realdata(*MVD_SAMPLE), realdata(*MVD_V11_CONFIG)
    index = tmp_path / "mvd.isusidx"
    res = invoke("index", "build", "--dataset", "mvd", "--root", root, "--split", "sample", "--config", config,
                 "--out", index, "--workers", "1")
    assert res.exit_code == 0, res.output
    assert not isus.Index.load(index).meta["dataset"]["has_instances"]
    res = invoke("preview", index, "--out", tmp_path / "pv", "--samples", "4", "--mode", "cus", "--crop", "256")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "pv" / "preview_cus.png").exists()
    res = invoke("preview", index, "--out", tmp_path / "pv", "--samples", "4")
    assert res.exit_code == 1 and "needs instance annotations" in res.output and "--mode cus" in res.output, res.output
    res = invoke("stats", index, "--out", tmp_path / "st", "--samples", "50")
    assert res.exit_code == 1 and "no instances" in res.output and "Traceback" not in res.output, res.output
    assert not (tmp_path / "st").exists()
    # the real sample's crops: the label PNG's classes, void (65) ignored, nothing else
    ds = isus.open_dataset("mvd", root, split="sample", config=str(config))
    idx = isus.Index.load(index)
    engine = CropEngine(ds, idx)
    for spec in cus_specs(idx, n=4, seed=1):
        s = engine(spec)
        assert s.image.shape == (64, 96, 3) and len(s.masks) == 0
        present = set(np.unique(s.semantic).tolist()) - {255}
        assert spec.category in present and present <= set(range(65))
