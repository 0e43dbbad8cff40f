"""examples/panoptic/data.py: the model inputs of compact crops (what the example loads when
training on a GPU) equal those of the default crops (the CPU path), crop sizes equal or not."""
from __future__ import annotations

import numpy as np
import torch

import isus
from examples.panoptic.data import FullImagePolicy, LabelMap, to_model_inputs
from isus.torch import CropSampler, PanopticCropDataset, collate_crops


def _inputs(ds, index, specs, compact: bool):
    dataset = PanopticCropDataset(ds, index, isus.CropConfig(compact_targets=compact))
    return to_model_inputs(collate_crops([dataset[s] for s in specs]), LabelMap.from_dataset(ds), torch.device("cpu"))


def test_compact_crops_give_the_same_model_inputs(synth_root):
    ds = isus.open_dataset("mvd", synth_root("mvd"))
    index = isus.build_index(ds, workers=1)
    crops = list(CropSampler(index, isus.SamplerConfig(crop_size=(64, 48), mode="isus"), 6, seed=3))
    full_cfg = isus.SamplerConfig(crop_size=(64, 48), mode="cus", shortest_side=100)
    batch = FullImagePolicy(index, full_cfg).draw(np.random.default_rng(0), 3)
    whole = [batch.spec(k) for k in range(3)]
    for specs in (crops, whole, crops[:2] + whole[:2]):  # the last: two sizes, maps collated as lists
        (img_a, tgt_a), (img_b, tgt_b) = _inputs(ds, index, specs, False), _inputs(ds, index, specs, True)
        assert all(torch.equal(a, b) for a, b in zip(img_a, img_b))
        assert sum(len(t["labels"]) for t in tgt_a) > 0
        for a, b in zip(tgt_a, tgt_b):
            assert a.keys() == b.keys()
            for key in a:
                assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key
