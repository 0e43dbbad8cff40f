"""The index: kernels vs references, built index vs what was written, files, shards, resume."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

import isus
from isus import kernels
from isus.index import Index, IndexFileError, build_index, merge_indexes
from isus.synth import SYNTH_CLASSES
from isus_cli.main import cli
from tests import reference as ref
from tests.conftest import realdata, scene_of


# -- kernels vs references ------------------------------------------------------------------
@st.composite
def id_maps(draw):
    seg_ids = np.array(sorted(draw(st.sets(st.integers(1, 2**24), min_size=0, max_size=6))), np.int32)
    h, w = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    choices = [0, -5] + seg_ids.tolist()
    ids = draw(hnp.arrays(np.int32, (h, w), elements=st.sampled_from(choices)))
    return ids, seg_ids


@settings(max_examples=150, deadline=None)
@given(id_maps(), st.integers(1, 7), st.integers(1, 5))
def test_kernels_match_references(data, grid, k):
    ids, seg_ids = data
    dense = kernels.dense_segments(ids, seg_ids)
    np.testing.assert_array_equal(dense, ref.dense_segments(ids, seg_ids))
    got, want = kernels.scan_dense(dense, len(seg_ids), grid), ref.scan_dense(dense, len(seg_ids), grid)
    for g, w, name in zip(got, want, ("area", "box", "sums", "cells")):
        present = want[0] > 0
        np.testing.assert_allclose(g[present], w[present], err_msg=name)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(kernels.anchor_points(dense, got[0], k), ref.anchor_points(dense, got[0], k))


@settings(max_examples=50, deadline=None)
@given(hnp.arrays(np.uint16, hnp.array_shapes(min_dims=1, max_dims=2, max_side=30)))
def test_count_u16(values):
    np.testing.assert_array_equal(kernels.count_u16(values), ref.count_u16(values))


@settings(max_examples=150, deadline=None)
@given(id_maps(), st.data())
def test_rle_roundtrip_and_windows(data, d):
    ids, seg_ids = data
    dense = kernels.dense_segments(ids, seg_ids)
    h, w = dense.shape
    offsets, values, ends = kernels.rle_encode_rows(dense)
    np.testing.assert_array_equal(ref.rle_decode_full(offsets, values, ends, w), dense)
    y0 = d.draw(st.integers(0, h - 1))
    y1 = d.draw(st.integers(y0 + 1, h))
    x0 = d.draw(st.integers(0, w - 1))
    x1 = d.draw(st.integers(x0 + 1, w + 5))
    win = kernels.rle_decode_window(offsets, values, ends, y0, y1, x0, x1, 0)
    padded = np.zeros((h, w + 5), np.uint16)
    padded[:, :w] = dense
    np.testing.assert_array_equal(win, padded[y0:y1, x0:x1])


@settings(max_examples=200, deadline=None)
@given(id_maps(), st.data())
def test_rle_sample_targets_equals_sample_then_crop_maps(data, d):
    """The fused kernel (maps, area and boxes a span at a time) against sampling every pixel with
    the reference and mapping them one by one (tests/reference.py crop_maps); rows in two calls as
    the cache's bands split them; with every map, the id map alone (compact targets) and the segment
    map alone (the sources' ``sample``)."""
    ids, seg_ids = data
    dense = kernels.dense_segments(ids, seg_ids)
    h, w = dense.shape
    offsets, values, ends = kernels.rle_encode_rows(dense)
    # repeated rows and columns are the upscaling case the kernel copies and replays
    rows = np.sort(np.array(d.draw(st.lists(st.integers(-1, h - 1), min_size=1, max_size=12)), np.int64))
    xs = np.sort(np.array(d.draw(st.lists(st.integers(-3, w + 3), min_size=1, max_size=20)), np.int64))
    flip, want = d.draw(st.booleans()), d.draw(st.sampled_from(["all", "ids", "dense"]))
    maps, with_ids, with_dense = want == "all", want != "dense", want != "ids"
    n = len(seg_ids)
    id_lut = np.concatenate([[0], d.draw(st.permutations(range(1, n + 1)))]).astype(np.int32) * 7
    sem_lut = np.array(d.draw(st.lists(st.integers(0, 300), min_size=n + 1, max_size=n + 1)), np.int64)
    crowd_lut = np.array(d.draw(st.lists(st.booleans(), min_size=n + 1, max_size=n + 1)), bool)
    cut = d.draw(st.integers(0, len(rows)))
    shape = (len(rows) + 2, len(xs))
    got_ids = np.full(shape if with_ids else (0, 0), -5, np.int32)
    got_dense = np.full(shape if with_dense else (0, 0), 9, np.uint16)
    got_sem = np.full(shape if maps else (0, 0), -5, np.int64)
    got_crowd = np.zeros(shape if maps else (0, 0), bool)
    area = np.zeros(n, np.int64)
    box = np.zeros((n, 4), np.int64)
    box[:, 0], box[:, 1] = len(xs), len(rows) + 2
    for a, b in ((0, cut), (cut, len(rows))):
        assert kernels.rle_sample_targets(offsets, values, ends, w, rows[a:b], xs, flip, id_lut, sem_lut, crowd_lut,
                                          got_dense, got_ids, got_sem, got_crowd, 1 + a, area, box) == 0
    box[area == 0, :2] = 0
    want = np.zeros(shape, np.uint16)
    want[1:-1] = ref.rle_sample(offsets, values, ends, w, rows, xs, flip)
    want_ids, want_sem, want_crowd, want_area, want_box = ref.crop_maps(want, id_lut, sem_lut, crowd_lut)
    if with_ids:
        np.testing.assert_array_equal(got_ids[1:-1], want_ids[1:-1])
        assert (got_ids[0] == -5).all() and (got_ids[-1] == -5).all()
    if with_dense:
        np.testing.assert_array_equal(got_dense[1:-1], want[1:-1])
        assert (got_dense[0] == 9).all() and (got_dense[-1] == 9).all()
    if maps:
        np.testing.assert_array_equal(got_sem[1:-1], want_sem[1:-1])
        np.testing.assert_array_equal(got_crowd[1:-1], want_crowd[1:-1])
        assert (got_dense[0] == 9).all() and (got_sem[-1] == -5).all() and not got_crowd[0].any()
    np.testing.assert_array_equal(area, want_area)
    np.testing.assert_array_equal(box, want_box)


def test_rle_sample_targets_refuses_a_value_beyond_the_tables():
    dense = np.array([[1, 1, 3], [2, 2, 2]], np.uint16)
    offsets, values, ends = kernels.rle_encode_rows(dense)

    def run(id_lut, sem_lut, maps=True):
        out = [np.zeros((2, 3) if maps else (0, 0), t) for t in (np.uint16, np.int32, np.int64, bool)]
        out[1] = np.zeros((2, 3), np.int32)
        return kernels.rle_sample_targets(offsets, values, ends, 3, np.array([0, 1]), np.arange(3), False, id_lut,
                                          sem_lut, np.zeros(len(sem_lut), bool), *out, 0, np.zeros(3, np.int64),
                                          np.zeros((3, 4), np.int64))

    assert run(np.array([0, 10, 20], np.int32), np.zeros(3, np.int64)) == 3  # no entry for 3
    assert run(np.array([0, 10, 20, 30], np.int32), np.zeros(3, np.int64)) == 4  # a shorter semantic table
    assert run(np.array([0, 10, 20, 30], np.int32), np.zeros(3, np.int64), maps=False) == 0  # ... not read


@settings(max_examples=150, deadline=None)
@given(id_maps(), st.data())
def test_rle_rows_valid_rejects_what_the_reference_rejects(data, d):
    ids, seg_ids = data
    dense = kernels.dense_segments(ids, seg_ids)
    w = dense.shape[1]
    offsets, values, ends = kernels.rle_encode_rows(dense)
    offsets, ends = offsets.copy(), ends.copy()
    what = d.draw(st.sampled_from(["none", "end", "offset", "width"]))
    if what == "end":
        ends[d.draw(st.integers(0, len(ends) - 1))] = d.draw(st.integers(-2, w + 2))
    elif what == "offset":
        offsets[d.draw(st.integers(0, len(offsets) - 1))] += d.draw(st.integers(-2, 2))
    elif what == "width":
        w += d.draw(st.integers(-1, 1))
    assert kernels.rle_rows_valid(offsets, ends, w) == ref.rle_rows_valid(offsets, ends, w)


# -- built index vs the written dataset ----------------------------------------------------
@pytest.fixture(scope="module")
def mvd_index(synth_root, tmp_path_factory):
    root = synth_root("mvd")
    ds = isus.open_dataset("mvd", root)
    cache = tmp_path_factory.mktemp("cache")
    index = build_index(ds, workers=1, cache_dir=cache)
    path = tmp_path_factory.mktemp("idx") / "mvd.isusidx"
    index.save(path)
    return ds, Index.load(path)


def test_index_equals_what_was_written(mvd_index, synth_root):
    ds, index = mvd_index
    root = synth_root("mvd")
    assert index.num_images == len(ds)
    seen = 0
    grid = index.meta["params"]["grid"]
    for i in range(len(ds)):
        info = index.image_info(i)
        assert info == ds.image_info(i)
        scene = scene_of(root, info.image_id)
        pan = ds.load_panoptic(i)
        # the scene's segments, through the loaded ids (ids are the reader's, geometry the scene's)
        lid_of = {int(s): int(l) for l, s in np.unique(np.stack([pan.ids.ravel(), scene.ids.ravel()]), axis=1).T if s}
        class_pixels: dict[str, int] = {}
        for sid, (cls, crowd) in scene.segments.items():
            ys, xs = np.nonzero(scene.ids == sid)
            name = ds.category(int(pan.segments[pan.segments["id"] == lid_of[sid]]["category_id"][0])).name
            class_pixels[name] = class_pixels.get(name, 0) + len(ys)
            if not SYNTH_CLASSES[cls].isthing:
                continue
            cat = [c.id for c in index.categories if c.name == name][0]
            rows = index.instances_of(cat, i)
            row = rows[rows.segment_id == lid_of[sid]]
            assert len(row) == 1
            assert row.area[0] == len(ys) and bool(row.iscrowd[0]) == crowd
            assert row.box[0].tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            np.testing.assert_allclose(row.centroid[0], [xs.mean() + 0.5, ys.mean() + 0.5], rtol=1e-5)
            for x, y in row.anchors[0]:
                assert scene.ids[y, x] == sid
            seen += 1
        for c in index.categories:
            imgs, pix = index.images_with_class(c.id)
            expected = class_pixels.get(c.name, 0)
            assert (pix[imgs == i].tolist() or [0]) == [expected]
            sem = pan.semantic()
            for x, y in index.class_anchors(c.id, i):
                assert sem[y, x] == c.id
            cells, cell_pix = index.class_cells(c.id, i)
            assert cell_pix.sum() == expected
            if expected:
                mask = np.isin(pan.semantic(), [c.id])
                h, w = mask.shape
                ys, xs = np.nonzero(mask)
                want = np.bincount((ys * grid // h) * grid + xs * grid // w, minlength=grid * grid)
                assert dict(zip(cells.tolist(), cell_pix.tolist())) == {k: v for k, v in enumerate(want) if v}
    assert seen == len(index.instances) > 20


def test_queries(mvd_index):
    _, index = mvd_index
    inst = index.instances
    offsets = index.arrays()["inst_class_offsets"]
    for r, c in enumerate(index.categories):
        rows = index.instances_of(c.id)
        assert (rows.category_id == c.id).all() and len(rows) == offsets[r + 1] - offsets[r]
        assert (np.diff(rows.image) >= 0).all()
        imgs, _ = index.images_with_class(c.id)
        assert (np.diff(imgs) > 0).all()
        if c.isthing:
            assert set(rows.image.tolist()) <= set(imgs.tolist())
    assert len(inst) == sum(len(index.instances_of(c.id)) for c in index.categories)
    with pytest.raises(KeyError, match="no category id 999"):
        index.images_with_class(999)
    assert all(not a.flags.writeable for a in index.arrays().values())


def test_annotation_cache_matches_the_dataset(mvd_index):
    ds, index = mvd_index
    from isus.index.cache import CachedAnnotationSource

    source = CachedAnnotationSource(index)
    rng = np.random.default_rng(0)
    for i in range(len(ds)):
        pan = ds.load_panoptic(i)
        full = source.load(i)
        np.testing.assert_array_equal(full.ids, pan.ids)
        np.testing.assert_array_equal(full.segments, pan.segments)
        h, w = pan.ids.shape
        for _ in range(5):
            x0, y0 = rng.integers(-50, w), rng.integers(-50, h)
            x1, y1 = x0 + rng.integers(1, 300), y0 + rng.integers(1, 300)
            win = source.load(i, (x0, y0, x1, y1))
            padded = np.zeros((h + 700, w + 700), np.int32)
            padded[350:350 + h, 350:350 + w] = pan.ids
            np.testing.assert_array_equal(win.ids, padded[350 + y0:350 + y1, 350 + x0:350 + x1])
            assert set(win.segments["id"].tolist()) == set(np.unique(win.ids).tolist()) - {0}


def test_index_pickles_by_path(mvd_index):
    import pickle

    _, index = mvd_index
    blob = pickle.dumps(index)
    assert len(blob) < 1000  # the path, not the arrays
    again = pickle.loads(blob)
    assert again.checksum == index.checksum and again.num_images == index.num_images
    np.testing.assert_array_equal(again.instances.area, index.instances.area)


@pytest.mark.parametrize("layout", ["cityscapes", "idd", "coco"])
def test_other_layouts_index_and_parallel_equals_serial(layout, synth_root):
    ds = isus.open_dataset(layout, synth_root(layout))
    a, b = build_index(ds, workers=1), build_index(ds, workers=2)
    for k, v in a.arrays().items():
        np.testing.assert_array_equal(v, b.arrays()[k], err_msg=k)
    assert a.meta == b.meta
    assert len(a.instances) > 0 and a.instances.iscrowd.any()


def test_semantic_only_index(synth_root):
    ds = isus.open_dataset("mvd", synth_root("mvd"), source="labels")
    index = build_index(ds, workers=1)
    full = build_index(isus.open_dataset("mvd", synth_root("mvd")), workers=1)
    assert len(index.instances) == 0
    for c in index.categories:
        np.testing.assert_array_equal(index.images_with_class(c.id)[0], full.images_with_class(c.id)[0])
        np.testing.assert_array_equal(index.images_with_class(c.id)[1], full.images_with_class(c.id)[1])


# -- shards, files, interruption -----------------------------------------------------------
def test_merge_of_shards_equals_single_build(synth_root, tmp_path):
    ds = isus.open_dataset("mvd", synth_root("mvd"))
    single = build_index(ds, workers=1, cache_dir=tmp_path / "c")
    single_sum = single.save(tmp_path / "single.idx")
    parts = []
    for k in range(3):
        p = tmp_path / f"part{k}.idx"
        build_index(ds, workers=1, shard=(k, 3), cache_dir=tmp_path / "c").save(p)
        parts.append(p)
    merged = merge_indexes(parts[::-1])
    assert merged.save(tmp_path / "merged.idx") == single_sum
    assert (tmp_path / "merged.idx").read_bytes() == (tmp_path / "single.idx").read_bytes()
    with pytest.raises(IndexFileError, match="missing"):
        merge_indexes(parts[:2])
    with pytest.raises(IndexFileError, match="overlaps"):
        merge_indexes([parts[0], parts[0], parts[1], parts[2]])


def test_interrupted_build_leaves_nothing_and_resumes(synth_root, tmp_path):
    ds = isus.open_dataset("mvd", synth_root("mvd"))
    ckpt = tmp_path / "out.idx.partial"

    def stop_after_5(done, total):
        if done == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_index(ds, workers=1, progress=stop_after_5, checkpoint_dir=ckpt, checkpoint_every=2)
    assert not (tmp_path / "out.idx").exists()
    with pytest.raises(isus.IsusError, match="resume"):
        build_index(ds, workers=1, checkpoint_dir=ckpt)
    with pytest.raises(isus.IsusError, match="other settings.*params"):
        build_index(ds, workers=1, grid=8, checkpoint_dir=ckpt, resume=True)
    calls = []
    resumed = build_index(ds, workers=1, progress=lambda d, t: calls.append(d), checkpoint_dir=ckpt, resume=True)
    assert calls[0] == 6 and len(calls) == len(ds) - 5  # the 5 finished images were not redone
    fresh = build_index(ds, workers=1)
    assert resumed.save(tmp_path / "a.idx") == fresh.save(tmp_path / "b.idx")


def test_killed_cli_build_leaves_no_index_and_resume_completes(tmp_path):
    root = isus.synth.write_dataset(tmp_path / "ds", "mvd", 30, size=(480, 360))
    out = tmp_path / "out.isusidx"
    cmd = [sys.executable, "-m", "isus_cli.main", "index", "build", "--dataset", "mvd", "--root", str(root),
           "--out", str(out), "--workers", "1", "--checkpoint-every", "2", "--no-cache-annotations"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = tmp_path / "out.isusidx.partial"
    deadline = time.monotonic() + 600  # a net for a hang, not a time limit: the loop ends at 2 chunks
    while time.monotonic() < deadline and proc.poll() is None and len(list(partial.glob("chunk_*.npz"))) < 2:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(list(partial.glob("chunk_*.npz"))) >= 2, "the build finished before it could be killed"
    assert not out.exists()
    res = subprocess.run(cmd + ["--resume"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert out.exists() and not partial.exists()
    index = Index.load(out)
    fresh = build_index(isus.open_dataset("mvd", root), workers=1)
    for k, v in fresh.arrays().items():
        np.testing.assert_array_equal(v, index.arrays()[k], err_msg=k)


@pytest.fixture
def saved_index(mvd_index, tmp_path):
    _, index = mvd_index
    path = tmp_path / "x.isusidx"
    index.save(path)
    return path


@pytest.mark.parametrize("version,match", [(isus.index.SCHEMA_VERSION + 1, "newer than this isus supports"),
                                           (0, "older than this isus")])
def test_schema_version_is_checked_first(saved_index, version, match):
    data = bytearray(saved_index.read_bytes())
    data[8:12] = version.to_bytes(4, "little")
    saved_index.write_bytes(bytes(data))
    with pytest.raises(IndexFileError, match=match) as e:
        Index.load(saved_index)
    assert str(saved_index) in str(e.value)


def test_bad_checksum_and_truncation(saved_index):
    data = bytearray(saved_index.read_bytes())
    data[-100] ^= 0xFF
    saved_index.write_bytes(bytes(data))
    with pytest.raises(IndexFileError, match="checksum mismatch"):
        Index.load(saved_index)
    Index.load(saved_index, verify=False)  # opt-out works
    saved_index.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(IndexFileError, match="truncated"):
        Index.load(saved_index)
    saved_index.write_bytes(b"PK\x03\x04 not an index")
    with pytest.raises(IndexFileError, match="not an isus index"):
        Index.load(saved_index)


# -- real samples --------------------------------------------------------------------------
def test_index_of_real_coco_samples_matches_their_json():
    root = realdata("coco_panoptic", "panopticapi", "sample_data")
    ds = isus.open_dataset("coco", root, annotations="panoptic_examples.json", panoptic_dir="panoptic_examples",
                           images_dir="input_images")
    index = build_index(ds, workers=1)
    data = json.loads((root / "panoptic_examples.json").read_text())
    things = {c["id"] for c in data["categories"] if c["isthing"]}
    n = 0
    for i, ann in enumerate(data["annotations"]):
        for s in ann["segments_info"]:
            if s["category_id"] not in things:
                continue
            rows = index.instances_of(s["category_id"], i)
            row = rows[rows.segment_id == s["id"]]
            x, y, w, h = s["bbox"]
            assert row.area.tolist() == [s["area"]] and row.box.tolist() == [[x, y, x + w, y + h]]
            assert row.iscrowd.tolist() == [bool(s["iscrowd"])]
            n += 1
    assert n == len(index.instances) > 10


def test_index_of_real_cityscapes_sample_recomputed_independently():
    root = realdata("cityscapes", "mmsegmentation", "tests", "data", "pseudo_cityscapes_dataset")
    ds = isus.open_dataset("cityscapes", root, split="val")
    index = build_index(ds, workers=1)
    raw = np.array(Image.open(root / "gtFine/val/frankfurt/frankfurt_000000_000294_gtFine_instanceIds.png")).astype(np.int64)
    for v in np.unique(raw[raw >= 1000]):
        ys, xs = np.nonzero(raw == v)
        rows = index.instances_of(int(v // 1000), 0)
        row = rows[rows.segment_id == v]
        assert row.area.tolist() == [len(ys)]
        assert row.box.tolist() == [[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]]
    assert len(index.instances) == len(np.unique(raw[raw >= 1000]))


def test_index_of_real_mvd_semantic_samples():
    root = realdata("mapillary_vistas", "deeposlandia", "tests", "data", "mapillary")
    cfg = realdata("mapillary_vistas", "mseg-api", "tests", "test_data", "mapillary-vistas-dataset_public_v1.1_config.json")
    ds = isus.open_dataset("mvd", root, split="sample", config=str(cfg))
    index = build_index(ds, workers=2)
    for i in range(len(ds)):
        raw = np.array(Image.open(root / "sample" / "labels" / f"{ds.image_info(i).image_id}.png")).astype(np.int64)
        counts = np.bincount(raw.ravel(), minlength=66)
        for c in index.categories:
            imgs, pix = index.images_with_class(c.id)
            assert (pix[imgs == i].tolist() or [0]) == [counts[c.id]]


# -- CLI -----------------------------------------------------------------------------------
def test_cli_build_info_merge(synth_root, tmp_path):
    root = synth_root("cityscapes")
    runner = CliRunner()
    out = tmp_path / "cs.isusidx"
    res = runner.invoke(cli, ["index", "build", "--dataset", "cityscapes", "--root", str(root), "--out", str(out),
                              "--workers", "1"])
    assert res.exit_code == 0, res.output
    assert "indexed 8 images" in res.output and out.exists() and not (tmp_path / "cs.isusidx.partial").exists()
    res = runner.invoke(cli, ["index", "info", str(out)])
    index = Index.load(out)
    assert res.exit_code == 0 and f"instances    {int((~index.instances.iscrowd).sum())}" in res.output
    parts = []
    for k in range(2):
        p = tmp_path / f"p{k}.isusidx"
        res = runner.invoke(cli, ["index", "build", "--dataset", "cityscapes", "--root", str(root), "--out", str(p),
                                  "--workers", "1", "--shard", f"{k}/2"])
        assert res.exit_code == 0, res.output
        parts.append(str(p))
    res = runner.invoke(cli, ["index", "merge", *parts, "--out", str(tmp_path / "m.isusidx")])
    assert res.exit_code == 0, res.output
    assert Index.load(tmp_path / "m.isusidx").checksum == index.checksum
    res = runner.invoke(cli, ["index", "info", str(tmp_path / "nope")])
    assert res.exit_code == 2
    (tmp_path / "bad").write_bytes(b"junk")
    res = runner.invoke(cli, ["index", "info", str(tmp_path / "bad")])
    assert res.exit_code == 1 and "not an isus index" in res.output


def test_torchrun_build_equals_single_build(synth_root, tmp_path):
    """Each rank builds its shard and rank 0 merges: the same file as one process builds."""
    root = synth_root("coco")
    out = tmp_path / "dist.isusidx"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "isus_cli.main", "index", "build", "--dataset", "coco", "--root", str(root), "--out", str(out),
           "--workers", "1"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert out.exists() and not list(tmp_path.glob("dist.isusidx.part*"))
    single = build_index(isus.open_dataset("coco", root), workers=1)
    assert single.save(tmp_path / "single.isusidx") == Index.load(out).checksum


def test_category_ranks(mvd_index):
    _, index = mvd_index
    ids = index.instances.category_id
    np.testing.assert_array_equal(index.category_ranks(ids), [index._rank_of(int(c)) for c in ids])
    with pytest.raises(KeyError, match="999"):
        index.category_ranks(np.array([index.categories[0].id, 999]))
