"""Fuzzing the loaders with malformed bytes: every outcome is a success or an isus error, fast.

Hypothesis mutates the bytes of (a) an index file, (b) an annotation cache entry and (c) every
kind of file each dataset reader decodes (annotation PNGs, panoptic / polygon / config / COCO
JSONs, JPEG and PNG images), and each example checks that loading either succeeds or raises an
:class:`isus.IsusError` -- never ``BadZipFile``, ``KeyError``, ``zlib.error``, ``IndexError``,
``MemoryError``... -- and never hangs (an alarm after :data:`LIMIT_S` seconds, a net, not a speed check). JSON files are also mutated structurally
(a node replaced by a value of another type, or removed), which reaches the readers' field
checks instead of stopping at the JSON parser.
"""
from __future__ import annotations

import copy
import json
import os
import signal
import struct
import warnings
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import isus
from isus.index import cache as cache_mod
from isus.index import store

SIZE = (64, 48)
IMAGES = 2
#: A net for a hang per example (an alarm interrupts a loader stuck in Python code or a blocking
#: read). The files are 64x48: a healthy load takes milliseconds, but the outcome must not depend on
#: the machine's speed or load (a loaded CI machine once took over 2 s in cv2.imread), so the net
#: is far above any healthy time and the elapsed time is not asserted. Resource bounds (pixel
#: budget, crop size) are tested by what they refuse, in tests/test_security.py.
LIMIT_S = 600.0
#: Examples per test (per reader target); ``ISUS_FUZZ_EXAMPLES=2000`` for a longer hunt.
EXAMPLES = int(os.environ.get("ISUS_FUZZ_EXAMPLES", "100"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


class _Hang(BaseException):
    """Raised by the alarm; a BaseException so that no loader's ``except`` swallows it."""


@contextmanager
def bounded(what: str):
    def on_alarm(signum, frame):
        raise _Hang(f"{what}: still running after {LIMIT_S} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, LIMIT_S)
    try:
        with warnings.catch_warnings():
            # PIL warns about images over its decompression-bomb threshold (a corrupt size field);
            # that is a warning by design, not the error this test is about.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def outcome(fn, what: str):
    """``fn()``'s result, or the :class:`isus.IsusError` it raised; any other exception propagates."""
    try:
        with bounded(what):
            return fn()
    except isus.IsusError as e:
        assert str(e), "an isus error without a message"
        return e


# -- mutations ----------------------------------------------------------------------------------
_pos = st.integers(0, 2**31)
_blob = st.binary(min_size=1, max_size=16)
OPS = st.one_of(
    st.tuples(st.just("flip"), _pos, st.integers(1, 255)),
    st.tuples(st.just("truncate"), _pos),
    st.tuples(st.just("overwrite"), _pos, _blob),
    st.tuples(st.just("insert"), _pos, _blob),
    st.tuples(st.just("delete"), _pos, st.integers(1, 64)),
    st.tuples(st.just("append"), _blob),
)
MUTATIONS = st.lists(OPS, min_size=1, max_size=3)


def mutate(data: bytes, ops) -> bytes:
    b = bytearray(data)
    for op in ops:
        kind, args = op[0], op[1:]
        p = args[0] % (len(b) + 1) if kind != "append" else 0
        if kind == "flip" and b:
            b[p % len(b)] ^= args[1]
        elif kind == "truncate":
            del b[p:]
        elif kind == "overwrite":
            b[p:p + len(args[1])] = args[1]
        elif kind == "insert":
            b[p:p] = args[1]
        elif kind == "delete":
            del b[p:p + args[1]]
        elif kind == "append":
            b += args[0]
    return bytes(b)


_JSON_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-2**70, 2**70), st.sampled_from([-1, 0, 1, 2**31, 2**63, 65536]),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8), st.just([]), st.just({}),
    st.lists(st.integers(-5, 5), max_size=3), st.just([[0, 0], [1e308, 1]]),
)


def _nodes(obj, path=()):
    yield path
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _nodes(v, path + (k,))
    elif isinstance(obj, list):
        for k, v in enumerate(obj):
            yield from _nodes(v, path + (k,))


def mutate_json(data: bytes, draw) -> bytes:
    """Replace (or delete) a random node of the JSON document with a value of any type."""
    doc = json.loads(data)
    nodes = list(_nodes(doc))
    for _ in range(draw(st.integers(1, 3))):
        path = nodes[draw(st.integers(0, len(nodes) - 1))]
        if not path:
            doc = copy.deepcopy(draw(_JSON_VALUES))
            break
        parent = doc
        try:
            for k in path[:-1]:
                parent = parent[k]
            if draw(st.booleans()) and isinstance(parent, (dict, list)):
                del parent[path[-1]]
            else:
                # a copy: st.just([]) and st.just({}) draw one shared object, and a later step that
                # puts that object inside itself would make the document circular (not JSON)
                parent[path[-1]] = copy.deepcopy(draw(_JSON_VALUES))
        except (KeyError, IndexError, TypeError):  # an earlier replacement removed the path
            continue
    return json.dumps(doc).encode()


@contextmanager
def replaced(path: Path, data: bytes):
    """``path`` holds ``data`` for the duration; its original bytes are restored afterwards."""
    original = path.read_bytes()
    path.write_bytes(data)
    try:
        yield
    finally:
        path.write_bytes(original)


# -- fixtures -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("fuzz")
    return {layout: isus.synth.write_dataset(base / layout, layout, IMAGES, size=SIZE, seed=3)
            for layout in ("mvd", "cityscapes", "idd", "coco")}


@pytest.fixture(scope="module")
def built(roots, tmp_path_factory):
    """A saved index with its annotation cache (also warms up every kernel)."""
    out = tmp_path_factory.mktemp("fuzz_index")
    ds = isus.open_dataset("mvd", roots["mvd"])
    index = isus.build_index(ds, workers=1, cache_dir=out / "mvd.isusidx.cache")
    index.save(out / "mvd.isusidx")
    index = isus.Index.load(out / "mvd.isusidx")
    for i in range(len(ds)):
        cache_mod.CachedAnnotationSource(index).load(i)
    return out / "mvd.isusidx", index


# -- (a) the index file ----------------------------------------------------------------------------
def _same_index(a: isus.Index, b: isus.Index) -> bool:
    if a.meta != b.meta or a.arrays().keys() != b.arrays().keys():
        return False
    return all(x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y)
               for x, y in ((a.arrays()[k], b.arrays()[k]) for k in a.arrays()))


HEADER_LEN = st.one_of(st.integers(0, 2**64 - 1), st.sampled_from([0, 1, 2**31, 2**32, 2**62, 2**63, 2**64 - 1]))


@FUZZ
@given(ops=MUTATIONS, header_len=st.none() | HEADER_LEN)
def test_index_file(built, ops, header_len):
    path, index = built
    data = path.read_bytes()
    bad = mutate(data, ops)
    if header_len is not None and len(bad) >= store._PREFIX.size:
        bad = bad[:16] + struct.pack("<Q", header_len) + bad[24:]
    target = path.with_name("mutated.isusidx")
    target.write_bytes(bad)
    got = outcome(lambda: isus.Index.load(target), "Index.load")
    if isinstance(got, isus.Index):  # the checksum lets no change to the content through
        assert _same_index(got, index), "a mutated index file loaded with different content"
    else:
        assert isinstance(got, isus.IndexFileError) and str(target) in str(got)
    # Without the checksum, the file's layout is still checked: only isus errors. (What the
    # header's meta says is trusted with verify=False: Index.load(verify=False) may fail on it
    # otherwise.)
    outcome(lambda: store.read_arrays(target, verify=False), "read_arrays(verify=False)")
    outcome(lambda: store.read_header(target), "read_header")


@FUZZ
@given(pos=st.integers(0, 2**31), xor=st.integers(1, 255))
def test_index_single_flip_is_caught(built, pos, xor):
    """Any one-byte change is refused by the checksum, or leaves the content as it was (padding,
    the reserved field, JSON whitespace)."""
    path, index = built
    bad = bytearray(path.read_bytes())
    bad[pos % len(bad)] ^= xor
    target = path.with_name("flipped.isusidx")
    target.write_bytes(bytes(bad))
    got = outcome(lambda: isus.Index.load(target), "Index.load")
    assert isinstance(got, isus.IndexFileError) or _same_index(got, index)


def test_index_huge_header_length_allocates_nothing(built, tmp_path):
    path, _ = built
    data = path.read_bytes()
    for n in (2**40, 2**63, 2**64 - 1):
        bad = tmp_path / f"h{n}.isusidx"
        bad.write_bytes(data[:16] + struct.pack("<Q", n) + data[24:])
        with pytest.raises(isus.IndexFileError, match="header"):
            isus.Index.load(bad)


# -- (b) a cache entry ---------------------------------------------------------------------------
@FUZZ
@given(ops=MUTATIONS, window=st.none() | st.tuples(st.integers(-8, 60), st.integers(-8, 40),
                                                       st.integers(1, 80), st.integers(1, 60)))
def test_cache_entry(built, ops, window):
    _, index = built
    entry = index.cache_path(0)
    bad = mutate(entry.read_bytes(), ops)
    if window is not None:
        window = (window[0], window[1], window[0] + window[2], window[1] + window[3])
    source = cache_mod.CachedAnnotationSource(index)
    expected = source.load(0, window)
    with replaced(entry, bad):
        got = outcome(lambda: source.load(0, window), "CachedAnnotationSource.load")
        if not isinstance(got, isus.IsusError):  # only a change the digest does not cover: none
            assert np.array_equal(got.ids, expected.ids) and np.array_equal(got.segments, expected.segments)
        else:
            assert isinstance(got, isus.IndexFileError) and str(entry) in str(got)
        # The parser behind the digest, as a reader without the index's digest uses it.
        outcome(lambda: cache_mod.read_cached(entry, window, index.image_info(0)), "read_cached(digest=None)")


@FUZZ
@given(data=st.data())
def test_cache_entry_consistent_but_wrong(built, tmp_path_factory, data):
    """Entries whose checksums and CRCs were recomputed over corrupt tables or bands (a buggy
    writer, not a disk error): the structure checks still give isus errors, never an IndexError
    or a read out of bounds."""
    _, index = built
    e = cache_mod.read_entry(index.cache_path(0))
    raw = bytearray(zlib.decompress(e.payload[e.band_offsets[0]:e.band_offsets[1]]))
    raw = bytearray(mutate(bytes(raw), data.draw(MUTATIONS)))
    blob = zlib.compress(bytes(raw))
    runs = data.draw(st.sampled_from([int(e.band_runs[0]), int(e.band_runs[0]) + 1, 0, 10**6, -1]))
    nseg = data.draw(st.sampled_from([len(e.segments), 0, 1]))
    bad = cache_mod.CacheEntry(e.image_id, e.height, e.width, e.segments[:nseg],
                               np.array([0, len(blob)], np.int64), np.array([runs], np.int64),
                               np.array([zlib.crc32(blob)], np.uint32), blob)
    target = tmp_path_factory.mktemp("entry") / "bad.ann"
    digest = cache_mod.write_entry(target, bad)
    outcome(lambda: cache_mod.read_cached(target, None, index.image_info(0), digest), "read_cached")


# -- (c) the dataset readers --------------------------------------------------------------------
def _load_everything(layout: str, root: Path, kwargs: dict):
    ds = isus.open_dataset(layout, root, **kwargs)
    for i in range(len(ds)):
        ds.image_info(i)
        ds.load_image(i)
        ds.load_image(i, reduce=2)
        if ds.has_instances:
            ds.load_panoptic(i)
        ds.load_semantic(i)
    return ds


# (layout, open_dataset kwargs, file to mutate (glob under the root; the first match))
TARGETS = [
    ("mvd", {}, "training/v1.2/instances/*.png"),
    ("mvd", {"source": "labels"}, "training/v1.2/labels/*.png"),
    ("mvd", {"version": "v2.0"}, "training/v2.0/panoptic/*.png"),
    ("mvd", {"version": "v2.0"}, "training/v2.0/panoptic/panoptic_2020.json"),
    ("mvd", {}, "config_v1.2.json"),
    ("mvd", {}, "training/images/*.jpg"),
    ("cityscapes", {"source": "instances"}, "gtFine/train/*/*_instanceIds.png"),
    ("cityscapes", {"source": "labels"}, "gtFine/train/*/*_labelIds.png"),
    ("cityscapes", {"source": "polygons"}, "gtFine/train/*/*_polygons.json"),
    ("cityscapes", {"source": "panoptic"}, "gtFine/cityscapes_panoptic_train.json"),
    ("cityscapes", {"source": "panoptic"}, "gtFine/cityscapes_panoptic_train/*.png"),
    ("cityscapes", {"source": "instances"}, "leftImg8bit/train/*/*.png"),
    ("idd", {"source": "polygons"}, "gtFine/train/*/*_polygons.json"),
    ("idd", {"source": "instances"}, "gtFine/train/*/*_instancelevel3Ids.png"),
    ("idd", {"source": "panoptic"}, "gtFine/train_panoptic.json"),
    ("coco", {}, "annotations/panoptic_train2017.json"),
    ("coco", {}, "annotations/panoptic_train2017/*.png"),
    ("coco", {}, "train2017/*.jpg"),
]


def _target_id(t):
    return f"{t[0]}-{'-'.join(map(str, t[1].values())) or 'default'}-{Path(t[2]).name.replace('*', 'X')}"


@pytest.mark.parametrize("target", TARGETS, ids=[_target_id(t) for t in TARGETS])
@FUZZ
@given(data=st.data())
def test_reader(roots, target, data):
    layout, kwargs, pattern = target
    root = roots[layout]
    path = min(root.glob(pattern))
    original = path.read_bytes()
    if path.suffix == ".json" and data.draw(st.booleans(), label="structural"):
        bad = mutate_json(original, data.draw)
    else:
        bad = mutate(original, data.draw(MUTATIONS, label="ops"))
    with replaced(path, bad):
        outcome(lambda: _load_everything(layout, root, kwargs), f"{layout} {path.name}")


@pytest.mark.parametrize("target", [t for t in TARGETS if t[2].endswith(".png")],
                         ids=[_target_id(t) for t in TARGETS if t[2].endswith(".png")])
@FUZZ
@given(width=st.sampled_from([0, 1, 65, 2**16, 2**24, 2**31 - 1]), height=st.sampled_from([0, 1, 47, 2**16, 2**31 - 1]))
def test_reader_png_size_field(roots, target, width, height):
    """A PNG whose size field is corrupt but whose chunk CRC was recomputed (PIL checks CRCs, so a
    plain byte flip never gets this far): refused before anything of that size is allocated."""
    layout, kwargs, pattern = target
    root = roots[layout]
    path = min(root.glob(pattern))
    original = path.read_bytes()
    assert original[12:16] == b"IHDR"
    ihdr = struct.pack(">II", width, height) + original[24:29]
    bad = original[:16] + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr)) + original[33:]
    with replaced(path, bad):
        outcome(lambda: _load_everything(layout, root, kwargs), f"{layout} {path.name}")


def test_clean_datasets_load(roots):
    """The unmutated files load (so the tests above exercise the decoders, not a broken setup)."""
    for layout, kwargs, _ in TARGETS:
        ds = _load_everything(layout, roots[layout], kwargs)
        assert len(ds) == IMAGES
