"""examples/panoptic/data.py honours CropConfig(low_visibility="ignore"): ignored instances leave
the detector's targets and their pixels get the semantic ignore label; the example's options."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import isus
from examples.panoptic.data import IGNORE_LABEL, LabelMap, to_model_inputs
from isus.torch import PanopticCropDataset, collate_crops
from isus.types import CropSpec
from tests.test_crop_visibility import WINDOW, hand  # noqa: F401  (the hand-made image's fixture)


def _inputs(ds, index, compact, **options):
    dataset = PanopticCropDataset(ds, index, isus.CropConfig(compact_targets=compact, **options))
    specs = [CropSpec(0, -1, -1, -1, 1.0, WINDOW, False), CropSpec(0, -1, -1, -1, 1.0, (0.0, 0.0, 100.0, 100.0), True)]
    raw = [dataset[s] for s in specs]
    return raw, to_model_inputs(collate_crops(raw), LabelMap.from_dataset(ds), torch.device("cpu"))


@pytest.mark.parametrize("compact", [False, True])
def test_ignored_instances_leave_the_targets_and_their_pixels_are_ignored(hand, compact):  # noqa: F811
    ds, index = hand
    raw, (_, base) = _inputs(ds, index, False)
    raw_i, (_, got) = _inputs(ds, index, compact, min_visible_fraction=0.6, low_visibility="ignore")
    # first crop: A and C (half visible) ignored, B kept; second crop (whole image): nothing ignored
    assert raw_i[0]["ignore"].sum() == 2 and not raw_i[1]["ignore"].any()
    keep = ~raw_i[0]["ignore"]
    assert [int(i) for i in raw_i[0]["segment_ids"][keep]] == [2]
    for k in ("boxes", "labels", "masks", "truncated"):
        assert torch.equal(got[0][k], base[0][k][keep])
        assert torch.equal(got[1][k], base[1][k])
    ignored = base[0]["masks"][~keep].any(0).bool()
    assert ignored.sum() == 200 + 100  # half of A, the right square of C
    assert (got[0]["semantic"][ignored] == IGNORE_LABEL).all()
    assert torch.equal(got[0]["semantic"][~ignored], base[0]["semantic"][~ignored])
    assert torch.equal(got[1]["semantic"], base[1]["semantic"])
    # drop gives the detector the same targets, and leaves the semantic map as it was
    _, (_, dropped) = _inputs(ds, index, compact, min_visible_fraction=0.6)
    for k in ("boxes", "labels", "masks", "truncated"):
        assert torch.equal(dropped[0][k], got[0][k])
    assert torch.equal(dropped[0]["semantic"], base[0]["semantic"])


def test_example_options_are_checked():
    for bad in (["--min-visible-fraction", "1.5"], ["--min-box-fraction", "-1"], ["--low-visibility", "mask"]):
        res = subprocess.run([sys.executable, "examples/train_panoptic.py", "--index", "x", *bad],
                             capture_output=True, text=True)
        assert res.returncode == 2 and bad[0] in res.stderr, res.stderr
