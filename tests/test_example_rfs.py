"""examples/train_panoptic.py --sampling rfs: repeat-factor sampling (isus.RepeatFactorConfig) in the
example, its options, and a short run."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

import isus
from isus.sampling import RepeatFactorPolicy
from isus.torch import CropSampler
from tests.test_example import SCRIPT, SMALL, data  # noqa: F401  (the synthetic data fixture)

pytest.importorskip("torchvision")
from examples.train_panoptic import parse_args, sampler_config  # noqa: E402


def test_sampling_rfs_makes_a_repeat_factor_config(data):  # noqa: F811
    tmp, root = data
    base = ["--dataset", "mvd", "--root", str(root), "--index", str(tmp / "mvd.isusidx"), "--out", str(tmp / "o")]
    index = isus.Index.load(tmp / "mvd.isusidx")
    cfg = sampler_config(parse_args(base + ["--sampling", "rfs", "--crop", "96"]), index)
    assert isinstance(cfg, isus.RepeatFactorConfig) and cfg.mode == "rfs" and cfg.crop_size == (96, 96)
    assert (cfg.rfs_threshold, cfg.rfs_sqrt, cfg.rfs_crop) == (0.001, True, "class")  # LVIS's defaults
    cfg = sampler_config(parse_args(base + ["--sampling", "rfs", "--rfs-threshold", "0.3", "--no-rfs-sqrt",
                                            "--rfs-crop", "image"]), index)
    assert (cfg.rfs_threshold, cfg.rfs_sqrt, cfg.rfs_crop) == (0.3, False, "image")
    assert isinstance(CropSampler(index, cfg, 4, seed=0).policy, RepeatFactorPolicy)
    assert not isinstance(sampler_config(parse_args(base + ["--sampling", "isus"]), index), isus.RepeatFactorConfig)


@pytest.mark.parametrize("bad, says", [(["--rfs-threshold", "0.01"], "applies to --sampling rfs only"),
                                       (["--no-rfs-sqrt", "--rfs-crop", "image"], "--no-rfs-sqrt, --rfs-crop apply to --sampling rfs only"),
                                       (["--sampling", "rfs", "--rfs-threshold", "2"], "--rfs-threshold"),
                                       (["--sampling", "rfs", "--rfs-crop", "box"], "--rfs-crop")])
def test_rfs_options_are_checked(bad, says):
    res = subprocess.run([sys.executable, str(SCRIPT), "--dataset", "mvd", "--root", ".", "--out", "o", "--index",
                          "x", *bad], capture_output=True, text=True)
    assert res.returncode == 2 and says in res.stderr, res.stderr


@pytest.mark.parametrize("crop, says", [("class", "crops around a class"), ("image", "whole images at s0")])
def test_a_short_rfs_run(data, tmp_path, crop, says):  # noqa: F811
    tmp, root = data
    out = tmp_path / "rfs"
    res = subprocess.run([sys.executable, str(SCRIPT), "--dataset", "mvd", "--root", str(root), "--index",
                          str(tmp / "mvd.isusidx"), *SMALL, "--sampling", "rfs", "--rfs-threshold", "0.5",
                          "--rfs-crop", crop, "--out", str(out), "--steps", "2", "--no-eval", "--no-tensorboard"],
                         capture_output=True, text=True, timeout=1800)
    assert res.returncode == 0, (res.stdout[-3000:], res.stderr[-3000:])
    assert f"repeat-factor sampling: t = 0.5, sqrt, {says}" in res.stdout
    assert [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()] == [1, 2]
