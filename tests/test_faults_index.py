"""Faults around indexes and their caches: the wrong dataset, an interrupted rebuild over a
working index, a replaced index file under a pickled Index, corrupt cache and checkpoint files.

Each test asserts the error type, that the message names the file or image at fault, and that
what was already written is intact.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import isus
from isus.crop import CropEngine
from isus.index import Index, IndexFileError, build_index
from isus.index.cache import CachedAnnotationSource
from isus.torch import PanopticCropDataset
from isus.types import CropSpec


def _spec(image: int, window) -> CropSpec:
    return CropSpec(image, 0, -1, -1, 1.0, tuple(float(v) for v in window), False)


def _sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _tree_sums(d: Path) -> dict[str, str]:
    return {p.name: _sha(p) for p in sorted(Path(d).iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def two_datasets(tmp_path_factory):
    """Two synthetic MVD datasets with the same file names and different content."""
    base = tmp_path_factory.mktemp("two")
    a = isus.synth.write_dataset(base / "A", "mvd", 12, size=(192, 144), seed=0)
    b = isus.synth.write_dataset(base / "B", "mvd", 12, size=(192, 144), seed=7)
    return a, b


@pytest.fixture
def index_a(two_datasets, tmp_path):
    a, _ = two_datasets
    path = tmp_path / "A.isusidx"
    build_index(isus.open_dataset("mvd", a), workers=1, cache_dir=tmp_path / "A.isusidx.cache").save(path)
    return path


def _first_differing(a: Path, b: Path) -> str:
    da, db = isus.open_dataset("mvd", a), isus.open_dataset("mvd", b)
    for i in range(len(da)):
        for pa, pb in ((da.image_path(i), db.image_path(i)), (da._record(i).annotation, db._record(i).annotation)):
            if Path(pa).read_bytes() != Path(pb).read_bytes():
                return da.image_info(i).file_name
    raise AssertionError("the two datasets are identical")


# -- 1. an index is checked against the dataset it is used with ------------------------------
def test_index_of_another_dataset_is_refused(two_datasets, index_a):
    a, b = two_datasets
    before = _sha(index_a)
    ds_b = isus.open_dataset("mvd", b)
    index = Index.load(index_a)
    first = _first_differing(a, b)
    for make in (lambda: PanopticCropDataset(ds_b, index), lambda: CropEngine(ds_b, index),
                 lambda: index.verify_dataset(ds_b, images="all")):
        with pytest.raises(isus.IndexMismatchError) as e:
            make()
        assert isinstance(e.value, IndexFileError)
        assert first in str(e.value) and str(index_a) in str(e.value)
    index.verify_dataset(isus.open_dataset("mvd", a), images="all")  # its own dataset passes
    assert _sha(index_a) == before


def test_a_file_changed_after_opening_is_caught_when_first_used(two_datasets, tmp_path):
    a, b = two_datasets
    root = shutil.copytree(a, tmp_path / "A")
    ds = isus.open_dataset("mvd", root)
    index = build_index(ds, workers=1, cache_dir=tmp_path / "cache")
    index.save(tmp_path / "a.isusidx")
    index = Index.load(tmp_path / "a.isusidx")
    engine = CropEngine(ds, index)  # verifies a sample on construction
    info = ds.image_info(5)
    engine(_spec(4, (0, 0, 64, 64)))
    other = isus.open_dataset("mvd", b)._record(5).annotation
    shutil.copyfile(other, ds._record(5).annotation)  # swapped under a running engine, before image 5's first use
    with pytest.raises(isus.IndexMismatchError, match="annotation") as e:
        engine(_spec(5, (0, 0, 64, 64)))
    assert info.file_name in str(e.value)


def test_moved_dataset_and_index_keep_working(two_datasets, index_a, tmp_path):
    a, _ = two_datasets
    moved_root = shutil.copytree(a, tmp_path / "elsewhere" / "A")
    moved_dir = tmp_path / "moved"
    moved_dir.mkdir()
    shutil.move(str(index_a), moved_dir / index_a.name)
    shutil.move(str(index_a.parent / "A.isusidx.cache"), moved_dir / "A.isusidx.cache")
    index = Index.load(moved_dir / index_a.name, root=moved_root)
    ds = index.open_dataset()
    assert ds.root == moved_root
    index.verify_dataset(ds, images="all")
    for i in range(len(ds)):
        pan = ds.load_panoptic(i)
        got = CachedAnnotationSource(index).load(i)
        np.testing.assert_array_equal(got.ids, pan.ids)
        np.testing.assert_array_equal(got.segments, pan.segments)
    CropEngine(ds, index)(_spec(1, (10, 10, 90, 90)))
    again = pickle.loads(pickle.dumps(index))  # workers keep the re-pointed root
    assert again.open_dataset().root == moved_root
    from click.testing import CliRunner

    from isus_cli.main import cli

    res = CliRunner().invoke(cli, ["index", "verify", str(moved_dir / index_a.name), "--root", str(moved_root)])
    assert res.exit_code == 0 and "matches" in res.output, res.output
    res = CliRunner().invoke(cli, ["index", "verify", str(moved_dir / index_a.name), "--root", str(a.parent / "B")])
    assert res.exit_code != 0 and "differs" in res.output, res.output


# -- 2. an interrupted rebuild leaves the surviving index and its cache intact ---------------
@pytest.mark.parametrize("kill_at", ["first-cache-entry", "mid-scan", "end-of-scan"])
def test_killed_rebuild_leaves_the_old_index_and_cache_intact(tmp_path, kill_at):
    """A second build to the same --out, SIGKILLed as it writes its first cache entry, in the middle
    of the scan, or after the scan (while it assembles and writes the index)."""
    a = isus.synth.write_dataset(tmp_path / "A", "mvd", 24, size=(480, 360), seed=0)
    b = isus.synth.write_dataset(tmp_path / "B", "mvd", 24, size=(480, 360), seed=7)
    out = tmp_path / "X.isusidx"

    def cmd(root, target=out):
        return [sys.executable, "-m", "isus_cli.main", "index", "build", "--dataset", "mvd", "--root", str(root),
                "--out", str(target), "--workers", "1", "--checkpoint-every", "2", "--cache-annotations", "--overwrite"]

    res = subprocess.run(cmd(a), capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    cache = tmp_path / "X.isusidx.cache"
    index_sum, cache_sums = _sha(out), _tree_sums(cache)
    mtimes = {p.name: p.stat().st_mtime_ns for p in cache.iterdir()}

    proc = subprocess.Popen(cmd(b), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    partial = tmp_path / "X.isusidx.partial"

    def reached() -> bool:
        if kill_at == "first-cache-entry":
            return any(p.name not in cache_sums for p in cache.iterdir())
        return len(list(partial.glob("chunk_*"))) >= (2 if kill_at == "mid-scan" else 11)

    deadline = time.monotonic() + 600  # a net for a hang, not a time limit: the loop ends when reached()
    while time.monotonic() < deadline and proc.poll() is None and not reached():
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the build finished before it could be killed"

    # the old index and every cache entry it refers to are untouched
    assert _sha(out) == index_sum
    now = _tree_sums(cache)
    assert {k: now.get(k) for k in cache_sums} == cache_sums
    assert all(cache.joinpath(k).stat().st_mtime_ns == t for k, t in mtimes.items())
    old = Index.load(out)
    ds_a = isus.open_dataset("mvd", a)
    for i in range(len(ds_a)):
        pan, got = ds_a.load_panoptic(i), CachedAnnotationSource(old).load(i)
        np.testing.assert_array_equal(got.ids, pan.ids)
        np.testing.assert_array_equal(got.segments, pan.segments)

    # resuming gives the index an uninterrupted build gives, byte for byte
    res = subprocess.run(cmd(b) + ["--resume"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    (tmp_path / "fresh").mkdir()
    res = subprocess.run(cmd(b, tmp_path / "fresh" / "X.isusidx"), capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert out.read_bytes() == (tmp_path / "fresh" / "X.isusidx").read_bytes()
    new = Index.load(out)
    ds_b = isus.open_dataset("mvd", b)
    for i in range(len(ds_b)):
        pan, got = ds_b.load_panoptic(i), CachedAnnotationSource(new).load(i)
        np.testing.assert_array_equal(got.ids, pan.ids)
        np.testing.assert_array_equal(got.segments, pan.segments)
    # the superseded entries were removed after the commit
    assert sorted(p.name for p in cache.iterdir()) == sorted(p.name for p in (tmp_path / "fresh" / "X.isusidx.cache").iterdir())


def test_cache_entry_with_permuted_categories_is_rejected(index_a):
    from isus.index.cache import read_entry, write_entry

    index = Index.load(index_a)
    path = index.cache_path(2)
    before = _sha(index_a)
    entry = read_entry(path)
    seg = entry.segments.copy()
    assert len(np.unique(seg["category_id"])) > 1
    seg["category_id"] = np.roll(seg["category_id"], 1)
    write_entry(path.with_name("tampered"), entry._replace(segments=seg))  # a well-formed entry
    os.replace(path.with_name("tampered"), path)
    with pytest.raises(IndexFileError, match="checksum") as e:
        CachedAnnotationSource(index).load(2)
    assert str(path) in str(e.value)
    assert _sha(index_a) == before
    CachedAnnotationSource(index).load(3)  # the other entries still read


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty", "zip"])
def test_corrupt_cache_entry_names_the_file(index_a, damage):
    index = Index.load(index_a)
    path = index.cache_path(4)
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip":
        data[-20] ^= 0x55
    elif damage == "empty":
        data = bytearray()
    else:
        data = bytearray(b"PK\x03\x04" + b"\0" * 40)
    path.write_bytes(bytes(data))
    with pytest.raises(IndexFileError) as e:
        CachedAnnotationSource(index).load(4, (0, 0, 192, 144))
    assert str(path) in str(e.value)


def test_corrupt_checkpoint_chunk_names_the_file(two_datasets, tmp_path):
    a, _ = two_datasets
    ds = isus.open_dataset("mvd", a)
    ckpt = tmp_path / "out.partial"

    def stop(done, total):
        if done == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_index(ds, workers=1, progress=stop, checkpoint_dir=ckpt, checkpoint_every=2)
    chunk = min(ckpt.glob("chunk_*"))
    chunk.write_bytes(chunk.read_bytes()[:100])
    with pytest.raises(IndexFileError) as e:
        build_index(ds, workers=1, checkpoint_dir=ckpt, resume=True)
    assert str(chunk) in str(e.value)


# -- 3. an unpickled Index verifies it maps the same file ------------------------------------
def test_unpickling_refuses_a_replaced_index_file(two_datasets, index_a, tmp_path):
    _, b = two_datasets
    index = Index.load(index_a)
    blob = pickle.dumps(index)
    assert len(blob) < 2000
    other = tmp_path / "B.isusidx"
    build_index(isus.open_dataset("mvd", b), workers=1).save(other)
    original = index_a.read_bytes()
    os.replace(other, index_a)  # another index appears at the path
    with pytest.raises(IndexFileError, match="replaced") as e:
        pickle.loads(blob)
    assert str(index_a) in str(e.value)
    # the same bytes rewritten (a byte-identical rebuild) are accepted
    index_a.write_bytes(original)
    assert pickle.loads(blob).checksum == index.checksum
    # an in-place modification that keeps the header is caught by the full checksum
    data = bytearray(original)
    data[-30] ^= 0xFF
    index_a.write_bytes(bytes(data))
    with pytest.raises(IndexFileError, match="checksum mismatch") as e:
        pickle.loads(blob)
    assert str(index_a) in str(e.value)


def test_schema_1_index_asks_to_rebuild(index_a):
    data = bytearray(index_a.read_bytes())
    data[8:12] = (1).to_bytes(4, "little")
    index_a.write_bytes(bytes(data))
    with pytest.raises(IndexFileError, match="rebuild") as e:
        Index.load(index_a)
    assert str(index_a) in str(e.value)


@pytest.mark.parametrize("compact", [False, True])
def test_a_segment_index_beyond_the_table_is_refused_not_read(two_datasets, index_a, monkeypatch, compact):
    """A band whose runs name a segment the entry's table lacks (passing its CRC: a writer bug, not
    bit rot) is refused by both sampling paths; the fused one must not index past its id table."""
    from isus.index import cache as cache_mod
    real_band = cache_mod._band

    def bad_band(e, b, path):
        offs, vals, ends = real_band(e, b, path)
        vals = vals.copy()
        vals[0] = len(e.segments) + 3
        return offs, vals, ends

    monkeypatch.setattr(cache_mod, "_band", bad_band)
    a, _ = two_datasets
    engine = CropEngine(isus.open_dataset("mvd", a), Index.load(index_a),
                        isus.CropConfig(compact_targets=compact))
    with pytest.raises(IndexFileError, match="beyond its"):
        engine(_spec(0, (0, 0, 64, 64)))
