"""Compact targets (``CropConfig(compact_targets=True)``) expanded by ``isus.torch.expand_targets``
equal the CPU targets of the default configuration exactly, on random and hand-made crops of
synthetic datasets of every layout, a semantic-only tree, with and without the caches, one crop
at a time and as collated batches, through DataLoader workers too."""
from __future__ import annotations

import dataclasses
import os
import shutil

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader

import isus
from isus import kernels
from isus.crop import CropConfig, CropEngine
from isus.crop.functional import crop_size
from isus.sampling.policy import SamplingPolicy
from isus.torch import (CropSampler, PanopticCropDataset, collate_crops, expand_masks, expand_semantic, expand_targets,
                        sample_to_tensors, to_tv_tensors)
from isus.types import CropSpec
from tests import reference as ref
from tests.conftest import SYNTH_SIZE

SMALL_CUS = isus.SamplerConfig(crop_size=(64, 48), mode="cus")
SMALL_ISUS = isus.SamplerConfig(crop_size=(64, 48), mode="isus")


def same(a, b) -> bool:
    """Equal values, dtypes and shapes (tensors), recursively through lists; other values by ==."""
    if isinstance(a, torch.Tensor):
        return (isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape
                and bool(torch.equal(a, b)))
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return bool(a == b)


def assert_batches_equal(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for key in want:
        assert same(got[key], want[key]), key


@pytest.fixture(scope="module", params=isus.synth.LAYOUTS)
def world(request, synth_root, tmp_path_factory):
    ds = isus.open_dataset(request.param, synth_root(request.param))
    index = isus.build_index(ds, workers=1, cache_dir=tmp_path_factory.mktemp("cache") / "c", image_cache=True)
    return ds, index


@pytest.fixture(scope="module")
def semantic_only(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("semonly")
    root = isus.synth.write_dataset(tmp / "full", "mvd", 4, size=SYNTH_SIZE, seed=11)
    for version in ("v1.2", "v2.0"):
        for folder in ("instances", "panoptic"):
            shutil.rmtree(root / "training" / version / folder)
    ds = isus.open_dataset("mvd", root)
    assert not ds.has_instances
    return ds, isus.build_index(ds, workers=1, cache_dir=tmp / "cache")


def specs_of(index, config, n, seed):
    batch = SamplingPolicy(index, config).draw(np.random.default_rng(seed), n)
    return [batch.spec(k) for k in range(n)]


def hand_made(index) -> list[CropSpec]:
    """Crops the sampler rarely draws: wholly outside the image (padding only), the image that
    never has things (3), an enlarged flipped view, a shrunken whole image."""
    w, h = SYNTH_SIZE
    out = []
    for image, window, scale, flip in ((0, (w + 10.0, h + 10.0, w + 74.0, h + 58.0), 1.0, False),
                                       (3, (0.0, 0.0, 64.0, 48.0), 1.0, True),
                                       (1, (20.0, 10.0, 52.0, 34.0), 2.0, True),
                                       (2, (-16.0, -12.0, w + 16.0, h + 12.0), 0.5, False)):
        out.append(CropSpec(image=image, category=-1, instance=-1, level=-1, scale=scale, window=window, flip=flip))
    return out


def test_crop_ids_equals_its_reference():
    @settings(max_examples=100, deadline=None)
    @given(st.integers(1, 30), st.integers(1, 30), st.integers(0, 12), st.integers(0, 2**31))
    def check(h, w, n, seed):
        rng = np.random.default_rng(seed)
        dense = rng.integers(0, n + 1, (h, w)).astype(np.uint16)
        id_lut = np.concatenate([[0], rng.integers(1, 10**6, n)]).astype(np.int32)
        for g, r in zip(kernels.crop_ids(dense, id_lut), ref.crop_ids(dense, id_lut)):
            assert g.dtype == r.dtype or g.dtype == np.int64
            np.testing.assert_array_equal(g, r)
        # and the maps it shares with crop_maps are crop_maps's
        full = kernels.crop_maps(dense, id_lut, np.zeros(n + 1, np.int64), np.zeros(n + 1, bool))
        for g, r in zip(kernels.crop_ids(dense, id_lut), (full[0], full[3], full[4])):
            np.testing.assert_array_equal(g, r)

    check()


def test_default_config_is_unchanged_and_ships_no_table():
    cfg = CropConfig()
    assert cfg.compact_targets is False
    assert dataclasses.replace(cfg, compact_targets=True) != cfg


@pytest.mark.parametrize("use_cache", [True, False])
def test_expanded_targets_equal_the_cpu_targets(world, use_cache):
    ds, index = world
    dense = CropEngine(ds, index, CropConfig(use_cache=use_cache))
    compact = CropEngine(ds, index, CropConfig(use_cache=use_cache, compact_targets=True))
    specs = specs_of(index, SMALL_CUS, 10, 1) + specs_of(index, SMALL_ISUS, 10, 2) + hand_made(index)
    seen = {"empty": 0, "instances": 0, "crowd": 0, "flip": 0}
    for spec in specs:
        d, c = dense(spec), compact(spec)
        assert d.segment_table is None
        cw, ch = crop_size(spec)
        assert c.masks.shape == (len(d.labels), 0, 0) and c.semantic.shape == (0, 0) == c.crowd.shape
        table = c.segment_table
        assert table is not None and table.dtype == np.int64 and table[0, 0] == 0
        assert (np.diff(table[:, 0]) > 0).all()  # sorted, unique
        for f in ("image", "panoptic", "labels", "category_ids", "segment_ids", "boxes", "original_boxes",
                  "truncated"):
            np.testing.assert_array_equal(getattr(c, f), getattr(d, f), err_msg=f)
        assert (c.dropped, c.spec, c.window, c.scale, c.flip) == (d.dropped, d.spec, d.window, d.scale, d.flip)
        # the CPU sample and the expanded tensors
        want = sample_to_tensors(d)
        shipped = sample_to_tensors(c)
        assert not {"masks", "semantic", "crowd"} & set(shipped)
        got = expand_targets(shipped)
        got.pop("segment_table")
        assert_batches_equal(got, want)
        seen["empty"] += len(d.labels) == 0
        seen["instances"] += len(d.labels) > 0
        seen["crowd"] += bool(d.crowd.any())
        seen["flip"] += spec.flip
    assert all(seen.values()), seen  # every kind of crop was compared


def test_collated_batches_expand_to_the_collated_cpu_targets(world):
    ds, index = world
    dense = PanopticCropDataset(ds, index)
    compact = PanopticCropDataset(ds, index, CropConfig(compact_targets=True))
    specs = specs_of(index, SMALL_ISUS, 6, 3) + hand_made(index)[:2]  # equal sizes: maps stacked
    want = collate_crops([dense[s] for s in specs])
    got = expand_targets(collate_crops([compact[s] for s in specs]))
    assert isinstance(got["semantic"], torch.Tensor) and got["semantic"].shape[0] == len(specs)
    got.pop("segment_table")
    assert_batches_equal(got, want)
    # crops of different sizes: the maps stay lists
    specs = hand_made(index)
    want = collate_crops([dense[s] for s in specs])
    got = expand_targets(collate_crops([compact[s] for s in specs]))
    assert isinstance(got["semantic"], list)
    got.pop("segment_table")
    assert_batches_equal(got, want)


def test_semantic_only_crops_keep_their_semantic_map(semantic_only):
    ds, index = semantic_only
    for use_cache in (True, False):
        dense = CropEngine(ds, index, CropConfig(use_cache=use_cache, crowd_as_ignore=False))
        compact = CropEngine(ds, index, CropConfig(use_cache=use_cache, crowd_as_ignore=False, compact_targets=True))
        for spec in specs_of(index, SMALL_CUS, 8, 4) + hand_made(index):
            d, c = dense(spec), compact(spec)
            assert c.segment_table is None and c.masks.shape == (0, 0, 0)
            np.testing.assert_array_equal(c.semantic, d.semantic)
            np.testing.assert_array_equal(c.crowd, d.crowd)
            shipped = sample_to_tensors(c)
            assert "semantic" in shipped and "masks" not in shipped and "segment_table" not in shipped
            assert_batches_equal(expand_targets(shipped), sample_to_tensors(d))


def test_expand_masks_and_semantic_directly():
    pan = torch.tensor([[0, 7, 7], [9, 9, 0]], dtype=torch.int32)
    masks = expand_masks(pan, torch.tensor([9, 7]))
    assert masks.dtype == torch.bool and masks.tolist() == [[[False, False, False], [True, True, False]],
                                                            [[False, True, True], [False, False, False]]]
    assert expand_masks(pan, torch.zeros(0, dtype=torch.int64)).shape == (0, 2, 3)
    table = torch.tensor([[0, 255, 0], [7, 3, 0], [9, 255, 1]])
    sem, crowd = expand_semantic(pan, table)
    assert sem.dtype == torch.int64 and sem.tolist() == [[255, 3, 3], [255, 255, 255]]
    assert crowd.tolist() == [[False, False, False], [True, True, False]]
    # a stacked batch with tables of different lengths (padded in one lookup)
    sems, crowds = expand_semantic(torch.stack([pan, torch.zeros_like(pan)]), [table, table[:1]])
    assert sems[1].eq(255).all() and not crowds[1].any() and sems[0].tolist() == sem.tolist()
    with pytest.raises(ValueError, match="expects an"):
        expand_masks(pan[0], torch.tensor([7]))
    with pytest.raises(ValueError, match="2 segment maps but 1"):
        expand_masks(torch.stack([pan, pan]), [torch.tensor([7])])
    with pytest.raises(KeyError, match="segment_table"):
        expand_targets({"panoptic": pan, "segment_ids": torch.tensor([7]), "masks": masks})


def test_adapters_accept_compact_crops(world):
    pytest.importorskip("torchvision")
    ds, index = world
    spec = specs_of(index, SMALL_ISUS, 1, 5)[0]
    dense = PanopticCropDataset(ds, index)[spec]
    compact = PanopticCropDataset(ds, index, CropConfig(compact_targets=True))[spec]
    a, b = to_tv_tensors(dense), to_tv_tensors(compact)
    assert torch.equal(a[1]["masks"], b[1]["masks"]) and torch.equal(a[0], b[0])


@pytest.mark.parametrize("compact", [False, True])
def test_worker_batches_equal_main_process_batches(synth_root, tmp_path, compact):
    """collate_crops packs a worker's batch into one shared block: same keys, values, dtypes. The
    worker refills a block once the main process has freed the batch, never while any of its
    tensors is alive: batches kept whole, or one tensor of them, still hold their values at the end."""
    ds = isus.open_dataset("mvd", synth_root("mvd"))
    index = isus.build_index(ds, workers=1, cache_dir=tmp_path / "cache")
    config = CropConfig(compact_targets=compact)
    sampler = isus.SamplerConfig(crop_size=(64, 48), mode="isus")

    def tagged(crops):
        batch = collate_crops(crops)
        batch["block"] = (os.getpid(), batch.slot, batch.block.data_ptr())  # which worker block it used
        return batch

    def loader(workers, collate):
        return DataLoader(PanopticCropDataset(ds, index, config), sampler=CropSampler(index, sampler, 120, seed=2),
                          batch_size=4, num_workers=workers, collate_fn=collate)

    main = list(loader(0, collate_crops))
    kept, blocks = {}, []
    for k, b in enumerate(loader(2, tagged)):
        blocks.append(b.pop("block"))
        assert list(b) == list(main[k])
        assert_batches_equal(b, main[k])
        storages = {t.untyped_storage().data_ptr() for v in b.values()
                    for t in (v if isinstance(v, list) else [v]) if isinstance(t, torch.Tensor) and t.numel()}
        assert len(storages) == 1  # one shared block per batch
        if k % 4 == 0:
            kept[k] = b
        elif k % 7 == 0:
            kept[k] = {"labels": b["labels"]}  # a list of views: the block stays busy
        del b
    for k, b in kept.items():
        for key in b:
            assert same(b[key], main[k][key]), (k, key)
    # how many extra blocks the kept batches force depends on scheduling: only the slots are fixed
    assert {slot for _, slot, _ in blocks} <= {-1, 0, 1, 2, 3}


def test_workers_refill_freed_blocks(synth_root, tmp_path):
    """A main process that frees each batch before taking the next holds one batch, and each worker
    has at most prefetch_factor (2) more in flight: 3 of its 4 slots, whatever the scheduling. So no
    worker ever needs an extra block, and 30 batches reuse at most 2 x 4 blocks."""
    ds = isus.open_dataset("mvd", synth_root("mvd"))
    index = isus.build_index(ds, workers=1, cache_dir=tmp_path / "cache")
    sampler = isus.SamplerConfig(crop_size=(64, 48), mode="isus")

    def tagged(crops):
        batch = collate_crops(crops)
        batch["block"] = (os.getpid(), batch.slot, batch.block.data_ptr())
        return batch

    loader = DataLoader(PanopticCropDataset(ds, index), sampler=CropSampler(index, sampler, 120, seed=2),
                        batch_size=4, num_workers=2, prefetch_factor=2, collate_fn=tagged)
    blocks = []
    for b in loader:
        blocks.append(b.pop("block"))
        del b
    assert len(blocks) == 30
    assert {slot for _, slot, _ in blocks} <= {0, 1, 2, 3}  # never an extra block
    assert len({(pid, slot) for pid, slot, _ in blocks}) <= 8 and len({pid for pid, _, _ in blocks}) == 2
    # a slot is refilled in place (64x48 batches fit the smallest block: never replaced)
    assert len({(pid, ptr) for pid, _, ptr in blocks}) == len({(pid, slot) for pid, slot, _ in blocks})


def test_a_block_is_free_only_when_its_batch_is_gone():
    """The main-process side of the protocol, in one process: the flag of a received batch's slot
    stays set while any tensor sharing its memory lives (also a view or a bare storage)."""
    from isus.torch import transfer

    flags = torch.zeros(4, dtype=torch.uint8)
    block = torch.zeros(64, dtype=torch.uint8)
    flags[2] = 1
    batch = transfer._received({"x": block[8:16].view(torch.int64)}, block, flags, 2)
    del block
    view = batch["x"].view(1, 1)
    storage = view.untyped_storage()
    del batch
    assert flags[2] == 1
    del view
    assert flags[2] == 1  # the bare storage still maps it
    del storage
    assert flags[2] == 0
