"""The index schema (``isus.index.schema``): string packing, the column table, the typed views
``Index`` hands out, and the content digest sampler states record."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import isus
from isus.index import ClassTable, Index, IndexMeta, Instances, build_index, fingerprint
from isus.index.schema import (CACHE_DIGEST_COLUMNS, CELL_COLUMNS, CLASS_COLUMNS, DIGEST_BYTES, DTYPES,
                               FINGERPRINT_COLUMNS, IMAGE_STRINGS, INSTANCE_COLUMNS, OPTIONAL, SCAN_COLUMNS,
                               csr_gather, empty_column, image_strings, pack_strings, unpack_string, unpack_strings)


@pytest.fixture(scope="module")
def built(synth_root, tmp_path_factory):
    """A saved and re-loaded index of the synthetic MVD dataset with both caches (every array)."""
    ds = isus.open_dataset("mvd", synth_root("mvd"))
    work = tmp_path_factory.mktemp("schema")
    index = build_index(ds, workers=1, cache_dir=work / "cache", image_cache=True)
    index.save(work / "mvd.isusidx")
    return ds, Index.load(work / "mvd.isusidx")


@pytest.fixture(scope="module")
def simulated():
    return isus.synth.simulated_index(300, seed=3)


def _indexes(built, simulated):
    return {"built": built[1], "simulated": simulated}


# -- strings ------------------------------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(st.characters(blacklist_categories=("Cs",)), max_size=12), max_size=20))
def test_pack_unpack_roundtrip(values):
    blob, offsets = pack_strings(values)
    assert blob.dtype == np.uint8 and blob.ndim == 1
    assert offsets.dtype == np.int64 and offsets.shape == (len(values) + 1,) and offsets[0] == 0
    assert offsets[-1] == len(blob)
    assert unpack_strings(blob, offsets) == values
    assert [unpack_string(blob, offsets, i) for i in range(len(values))] == values


def test_image_strings_unpack_every_string_column(built):
    _, index = built
    a = index.arrays()
    got = image_strings(a)
    assert list(got) == list(IMAGE_STRINGS)
    assert got["file_name"] == [index.image_info(i).file_name for i in range(*index.image_range)]
    for k in IMAGE_STRINGS:
        assert index.image_strings(k) == got[k]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 5), max_size=12), st.data())
def test_csr_gather_matches_a_loop(lengths, data):
    offsets = np.r_[0, np.cumsum(lengths, dtype=np.int64)].astype(np.int64)
    rows = np.array(data.draw(st.lists(st.integers(0, max(len(lengths) - 1, 0)), max_size=10) if lengths
                              else st.just([])), np.int64)
    want = [p for r in rows.tolist() for p in range(offsets[r], offsets[r + 1])]
    assert csr_gather(offsets, rows).tolist() == want


# -- the column table ---------------------------------------------------------------------------
def test_dtypes_describe_a_built_index(built):
    """Every array of an index built with both caches is in ``DTYPES`` with that dtype, and every
    array of ``DTYPES`` is there (the optional ones too: this build has fingerprints and caches)."""
    _, index = built
    a = index.arrays()
    assert set(a) == set(DTYPES)
    for name, arr in a.items():
        assert arr.dtype.newbyteorder("<") == np.dtype(DTYPES[name]).newbyteorder("<"), name
    assert OPTIONAL < set(DTYPES)
    for name in CACHE_DIGEST_COLUMNS:
        assert a[name].shape == (index.num_images, DIGEST_BYTES)
    for name, _, dtype in FINGERPRINT_COLUMNS:
        assert a[name].dtype == np.dtype(dtype)


def test_digest_width_is_the_caches():
    from isus.index import cache, image_cache

    assert DIGEST_BYTES == cache.DIGEST_BYTES == image_cache.DIGEST_BYTES


def test_scan_columns_are_the_row_columns_without_the_image(built):
    _, index = built
    a = index.arrays()
    assert set(SCAN_COLUMNS) | {"inst_image", "cls_image"} == set(INSTANCE_COLUMNS + CLASS_COLUMNS + CELL_COLUMNS)
    k = index.info.params.anchors
    for c in SCAN_COLUMNS:
        empty = empty_column(c, k)
        assert len(empty) == 0 and empty.dtype == a[c].dtype and empty.shape[1:] == a[c].shape[1:], c


def test_fingerprint_fields_follow_the_schema():
    assert [(name, key) for name, key, _ in fingerprint.FIELDS] == [(name, key) for name, key, _ in FINGERPRINT_COLUMNS]


# -- typed views --------------------------------------------------------------------------------
def test_views_are_the_raw_arrays(built, simulated):
    for what, index in _indexes(built, simulated).items():
        a = index.arrays()
        inst, cls = index.instances, index.classes
        assert isinstance(inst, Instances) and isinstance(cls, ClassTable) and isinstance(index.info, IndexMeta)
        for field, column in zip(("image", "segment_id", "category_id", "iscrowd", "area", "box", "centroid",
                                  "anchors"), INSTANCE_COLUMNS):
            assert getattr(inst, field) is a[column], (what, field)
        assert inst.class_offsets is a["inst_class_offsets"]
        for field, column in zip(("image", "category_id", "pixels", "ncells", "anchors"), CLASS_COLUMNS):
            assert getattr(cls, field) is a[column], (what, field)
        for field in ("cell_offsets", "cell_index", "cell_pixels"):
            assert getattr(cls, field) is a[field], (what, field)
        assert cls.class_offsets is a["cls_class_offsets"]
        assert len(inst) == len(a["inst_image"]) and len(cls) == len(a["cls_image"])


def test_class_table_row_finds_every_row(built, simulated):
    for index in _indexes(built, simulated).values():
        cls = index.classes
        ranks = np.repeat(np.arange(len(index.categories)), np.diff(cls.class_offsets))
        for k in range(0, len(cls), max(1, len(cls) // 200)):
            assert cls.row(int(ranks[k]), int(cls.image[k])) == k
        present = set(zip(ranks.tolist(), cls.image.tolist()))
        absent = next((r, i) for r in range(len(index.categories)) for i in range(*index.image_range)
                      if (r, i) not in present)
        assert cls.row(*absent) is None


def test_instances_selection_carries_no_class_offsets(built):
    _, index = built
    sel = index.instances[2:5]
    assert sel.class_offsets is None and len(sel) == 3
    np.testing.assert_array_equal(sel.box, index.instances.box[2:5])


def test_info_matches_the_header(built, simulated):
    for what, index in _indexes(built, simulated).items():
        meta, info = index.meta, index.info
        d = meta["dataset"]
        assert (info.dataset.name, info.dataset.split, info.dataset.source, info.dataset.root,
                info.dataset.num_images, info.dataset.has_instances) == (
            d["name"], d.get("split"), d["source"], d["root"], d["num_images"], d.get("has_instances", True)), what
        assert dict(info.dataset.options) == {k: v for k, v in d.items() if k not in (
            "name", "root", "split", "source", "has_instances", "num_images")}
        p = meta["params"]
        assert (info.params.grid, info.params.anchors, info.params.cache_dir) == (p["grid"], p["anchors"],
                                                                                p.get("cache_dir"))
        assert (None if info.params.image_cache is None else dict(info.params.image_cache)) == p.get("image_cache")
        assert info.image_range == tuple(meta["image_range"]) == index.image_range
        assert info.categories == index.categories
        assert [c.id for c in info.categories] == [c["id"] for c in meta["categories"]]
        assert (info.int_image_ids, info.cache_bytes, info.image_cache_bytes, info.schema, info.isus_version) == (
            bool(meta.get("int_image_ids")), meta.get("cache_bytes", 0), meta.get("image_cache_bytes", 0),
            meta["schema"], meta.get("isus_version"))
    assert built[1].info.params.image_cache is not None and built[1].info.cache_bytes > 0


def test_info_follows_a_save(synth_root, tmp_path):
    """Saving records the cache directory relative to the file: the typed view says the same."""
    ds = isus.open_dataset("mvd", synth_root("mvd"))
    index = build_index(ds, workers=1, cache_dir=tmp_path / "cache", shard=(0, 4))
    assert index.info.params.cache_dir == str((tmp_path / "cache").resolve())
    index.save(tmp_path / "sub.isusidx")
    assert index.info.params.cache_dir == index.meta["params"]["cache_dir"] == "cache"
    assert index.cache_dir == tmp_path / "cache"


def test_views_are_read_only(built, simulated):
    for index in _indexes(built, simulated).values():
        for view in (index.instances, index.classes, index.info, index.info.dataset, index.info.params):
            with pytest.raises(dataclasses.FrozenInstanceError):
                view.image_range = None  # type: ignore[misc]
        with pytest.raises(ValueError, match="read-only"):
            index.instances.box[0, 0] = 1
        with pytest.raises(ValueError, match="read-only"):
            index.classes.cell_pixels[0] = 1
        with pytest.raises(TypeError):
            index.info.dataset.options["version"] = "x"  # type: ignore[index]
    with pytest.raises(TypeError):
        built[1].info.params.image_cache["codec"] = "png"  # type: ignore[index]


def test_a_malformed_header_is_an_index_file_error(built, tmp_path):
    """The header is parsed when the index is made: without the checksum, a header lacking a
    field fails to load with IndexFileError rather than later, wherever the field is read."""
    from isus.index.store import read_arrays, write_arrays

    _, index = built
    meta, arrays, _ = read_arrays(index.path)
    meta = json.loads(json.dumps(meta))
    del meta["dataset"]["source"]
    write_arrays(tmp_path / "bad.isusidx", meta, {k: np.array(v) for k, v in arrays.items()})
    with pytest.raises(isus.IndexFileError, match="header is malformed"):
        Index.load(tmp_path / "bad.isusidx", verify=False)


# -- the content digest -------------------------------------------------------------------------
def _sampler_digest_before(index: Index) -> str:
    """``isus.torch.sampler.index_fingerprint``'s digest as it was computed before the index
    owned it (a copy): sampler states saved then must still load."""
    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps([index.meta.get("categories"), index.meta.get("image_range")], sort_keys=True).encode())
    arrays = index.arrays()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}:{a.dtype.str}:{a.shape};".encode())
        h.update(a.reshape(-1).view(np.uint8).data)
    return "blake2b:" + h.hexdigest()


def test_content_digest_is_the_sampler_digest(built, simulated):
    for what, index in _indexes(built, simulated).items():
        assert index.content_digest() == _sampler_digest_before(index), what
    # recorded in sampler states before the digest moved to the index
    assert simulated.content_digest() == "blake2b:c6dcd775a3f87451e4e78f44a79ac728"


def test_content_digest_ignores_where_the_index_is(built, tmp_path):
    _, index = built
    shutil.copy(index.path, tmp_path / "elsewhere.isusidx")
    moved = Index.load(tmp_path / "elsewhere.isusidx", root=tmp_path)
    assert moved.path != index.path and moved.cache_dir != index.cache_dir
    assert moved.content_digest() == index.content_digest()
    other = isus.synth.simulated_index(300, seed=4)
    assert other.content_digest() != isus.synth.simulated_index(300, seed=3).content_digest()


def test_sampler_state_records_the_content_digest(simulated):
    pytest.importorskip("torch")
    from isus.torch.sampler import CropSampler, index_fingerprint

    fp = index_fingerprint(simulated)
    assert fp == {"digest": simulated.content_digest(), "dataset": "simulated", "num_images": 300}
    sampler = CropSampler(simulated, isus.SamplerConfig.preset("mvd"), 100, seed=1)
    assert sampler.state_dict()["index"] == fp
