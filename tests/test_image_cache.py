"""The image cache and the sampled annotation path: cached crops against uncached ones (bit-identical
with PNG tiles, PSNR >= 40 dB with the default JPEG), identical targets, detected corruption, and
shards with separate caches merging into a single build's."""
from __future__ import annotations

import os

import numpy as np
import pytest

import isus
from isus.crop import CropEngine
from isus.crop.engine import CropConfig
from isus.index.image_cache import LEVELS, CachedImageSource, ImageCacheParams, _OPEN
from isus.index.store import IndexFileError
from tests.conftest import realdata

SIZE = (700, 500)


def CropSpec(image, window, scale, flip=False):  # noqa: N802 - reads like the type it builds
    return isus.types.CropSpec(image=image, category=-1, instance=-1, level=-1, scale=scale, window=window, flip=flip)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("imgcache")
    root = isus.synth.write_dataset(tmp / "mvd", "mvd", 4, size=SIZE, seed=3)
    ds = isus.open_dataset("mvd", root)
    out = {}
    for codec in ("png", "jpeg", "raw"):
        ix = isus.build_index(ds, workers=1, cache_dir=tmp / f"{codec}.isusidx.cache",
                              image_cache=ImageCacheParams(codec=codec))
        ix.save(tmp / f"{codec}.isusidx")
        out[codec] = tmp / f"{codec}.isusidx"
    return ds, out


def specs_for(index, n=40, crop=192, seed=0):
    """ISUS crops plus hand-made ones: past every border, flipped, strong down- and upscaling."""
    cfg = isus.SamplerConfig(crop_size=(crop, crop))
    draws = isus.SamplingPolicy(index, cfg).draw(np.random.default_rng(seed), n)
    specs = [draws.spec(k) for k in range(n)]
    w, h = SIZE
    for flip in (False, True):
        specs += [CropSpec(image=1, window=(-50.3, -40.7, -50.3 + crop / 0.3, -40.7 + crop / 0.3), scale=0.3, flip=flip),
                  CropSpec(image=2, window=(w - 30.2, h - 25.9, w - 30.2 + crop / 3.7, h - 25.9 + crop / 3.7), scale=3.7, flip=flip),
                  CropSpec(image=0, window=(w + 5, 0, w + 5 + crop, crop), scale=1.0, flip=flip),  # wholly outside
                  CropSpec(image=3, window=(10.5, 20.25, 10.5 + crop / 0.12, 20.25 + crop / 0.12), scale=0.12, flip=flip)]
    return specs


def same_targets(a, b):
    for f in ("panoptic", "semantic", "masks", "labels", "category_ids", "segment_ids", "boxes", "original_boxes",
              "truncated", "crowd"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f)
    assert a.dropped == b.dropped


def psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b) ** 2)
    return np.inf if mse == 0 else 10 * np.log10(255 ** 2 / mse)


@pytest.mark.parametrize("codec", ["png", "raw"])
@pytest.mark.parametrize("interpolation", ["linear", "cubic"])
def test_lossless_caches_give_bit_identical_crops(data, interpolation, codec):
    ds, paths = data
    index = isus.Index.load(paths[codec])
    cfg = CropConfig(interpolation=interpolation)
    cached, plain = CropEngine(ds, index, cfg), CropEngine(ds, index, CropConfig(use_cache=False, interpolation=interpolation))
    assert isinstance(cached.image_source, CachedImageSource) and not isinstance(plain.image_source, CachedImageSource)
    for spec in specs_for(index):
        a, b = cached(spec), plain(spec)
        np.testing.assert_array_equal(a.image, b.image, err_msg=str(spec))
        same_targets(a, b)


@pytest.mark.parametrize("codec", ["png", "jpeg", "raw"])
def test_linear_image_step_is_the_exact_sum_over_the_clipped_window(data, codec):
    """The engine's bilinear image step, with and without the cache, equals the exact fixed-point
    sum (tests/reference.py) over the level image clipped to warp_plan's window, with the taps
    computed from that window's origin, as the engine did before it passed the whole decoded
    buffer to the kernel and asked the source for the taps' pixels only (same crops, bit for bit)."""
    from isus.crop.functional import choose_reduce, crop_size, warp_plan
    from isus.crop.sources import DecodedImageSource
    from isus import kernels
    from tests.reference import bilinear_fixed

    ds, paths = data
    index = isus.Index.load(paths[codec])
    for cfg in (CropConfig(), CropConfig(use_cache=False), CropConfig(pad_value=9), CropConfig(reduced_decode=False)):
        engine = CropEngine(ds, index, cfg)
        for spec in specs_for(index, n=25, seed=4):
            cw, ch = crop_size(spec)
            r = choose_reduce(spec.scale) if cfg.reduced_decode else 1
            m, win = warp_plan(spec, cw, ch, r)
            src = engine.image_source if cfg.use_cache else DecodedImageSource(ds)
            img, ox, oy = src.window(spec.image, r, win)
            xa, ya = max(win[0], ox), max(win[1], oy)
            xb, yb = min(win[2], ox + img.shape[1]), min(win[3], oy + img.shape[0])
            if xb <= xa or yb <= ya:
                want = np.full((ch, cw, 3), cfg.pad_value, np.uint8)
            else:
                xi, xw = kernels.bilinear_taps(m[0, 2] - xa, m[0, 0], cw)
                yi, yw = kernels.bilinear_taps(m[1, 2] - ya, m[1, 1], ch)
                want = bilinear_fixed(img[ya - oy:yb - oy, xa - ox:xb - ox], xi, xw, yi, yw, cfg.pad_value, True)
            np.testing.assert_array_equal(engine(spec).image, want, err_msg=f"{cfg} {spec}")


def test_jpeg_cache_psnr_and_identical_targets(data):
    ds, paths = data
    index = isus.Index.load(paths["jpeg"])
    cached, plain = CropEngine(ds, index), CropEngine(ds, index, CropConfig(use_cache=False))
    worst = np.inf
    for spec in specs_for(index):
        a, b = cached(spec), plain(spec)
        worst = min(worst, psnr(a.image, b.image))
        same_targets(a, b)
    assert worst >= 40, worst


def test_cache_levels_hold_the_reduced_decodes(data):
    ds, paths = data
    index = isus.Index.load(paths["png"])
    source = CachedImageSource(index)
    for r in LEVELS:
        full = ds.load_image(1, r, bgr=True)
        buf, ox, oy = source.window(1, r, (-5, -5, 10 ** 6, 10 ** 6))
        assert (ox, oy) == (0, 0)
        np.testing.assert_array_equal(buf, full)
        # a small window gives only the tiles it covers
        buf, ox, oy = source.window(1, r, (3, 4, 5, 6))
        np.testing.assert_array_equal(buf, full[:buf.shape[0], :buf.shape[1]])
        assert buf.shape[0] <= 256 and buf.shape[1] <= 256


def test_real_mvd_samples(tmp_path):
    base = realdata("mapillary_vistas", "deeposlandia", "tests", "data", "mapillary", "sample")
    cfg = realdata("mapillary_vistas", "mseg-api", "tests", "test_data", "mapillary-vistas-dataset_public_v1.1_config.json")
    root = isus.synth.mvd_from_semantic(base / "labels", base / "images", cfg, tmp_path / "mvd")
    ds = isus.open_dataset("mvd", root)
    plain_index = isus.build_index(ds, workers=1)
    results = {}
    for codec in ("png", "jpeg", "raw"):
        index = isus.build_index(ds, workers=1, cache_dir=tmp_path / codec, image_cache=ImageCacheParams(codec=codec))
        cached, plain = CropEngine(ds, index), CropEngine(ds, plain_index)
        specs = [isus.SamplingPolicy(index, isus.SamplerConfig.preset("mvd")).draw(np.random.default_rng(1), 12).spec(k)
                 for k in range(12)]
        values = []
        for spec in specs:
            a, b = cached(spec), plain(spec)
            same_targets(a, b)
            values.append(psnr(a.image, b.image))
        results[codec] = min(values)
    assert results["png"] == results["raw"] == np.inf
    assert results["jpeg"] >= 40, results


# -- integrity ----------------------------------------------------------------------------------
@pytest.fixture
def fresh(data, tmp_path):
    """A private JPEG-cached index (tests damage its cache)."""
    ds, _ = data
    isus.build_index(ds, workers=1, cache_dir=tmp_path / "x.isusidx.cache", image_cache=True).save(tmp_path / "x.isusidx")
    return ds, isus.Index.load(tmp_path / "x.isusidx")


SPEC = CropSpec(image=2, window=(0.0, 0.0, 700.0, 500.0), scale=0.5, flip=False)


@pytest.mark.parametrize("damage", ["tile", "header", "truncate", "empty", "version", "missing", "stale"])
def test_damaged_image_entry_is_detected_and_named(fresh, damage):
    ds, index = fresh
    engine = CropEngine(ds, index)
    engine(SPEC)  # opened and mapped once before the damage
    path = index.image_cache_path(2)
    data = bytearray(path.read_bytes())
    if damage == "tile":  # inside the first tile of the level the crop reads (1/2)
        from isus.index.image_cache import _parse

        e = _parse(path, None)
        data[e.payload_start + int(e.offsets[e.levels[2][4]]) + 40] ^= 0x5A
    elif damage == "header":
        data[30] ^= 0x01
    elif damage == "truncate":
        data = data[: len(data) - 1000]
    elif damage == "empty":
        data = bytearray()
    elif damage == "version":
        data[8] = 99
    elif damage == "stale":
        data = bytearray(index.image_cache_path(1).read_bytes())  # another image's entry under this name
    if damage == "missing":
        path.unlink()
    else:
        tmp = path.with_name("damaged")
        tmp.write_bytes(bytes(data))
        os.replace(tmp, path)
    with pytest.raises(IndexFileError) as e:
        engine(SPEC)
    assert str(path) in str(e.value)
    engine(CropSpec(image=1, window=SPEC.window, scale=0.5))  # other images still read


def test_damaged_raw_tile_is_detected(data, tmp_path):
    """Raw tiles are pixels as stored: a flipped bit there is caught by the tile's CRC before use."""
    ds, _ = data
    isus.build_index(ds, workers=1, cache_dir=tmp_path / "r.isusidx.cache",
                     image_cache=ImageCacheParams(codec="raw")).save(tmp_path / "r.isusidx")
    index = isus.Index.load(tmp_path / "r.isusidx")
    engine = CropEngine(ds, index)
    engine(SPEC)
    path = index.image_cache_path(2)
    from isus.index.image_cache import _parse

    e = _parse(path, None)
    data_ = bytearray(path.read_bytes())
    data_[e.payload_start + int(e.offsets[e.levels[2][4]]) + 40] ^= 0x5A
    tmp = path.with_name("damaged")
    tmp.write_bytes(bytes(data_))
    os.replace(tmp, path)
    with pytest.raises(IndexFileError, match="checksum mismatch") as err:
        engine(SPEC)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("damage", ["band", "truncate", "stale"])
def test_damaged_annotation_entry_is_detected_on_the_sampled_path(fresh, damage):
    ds, index = fresh
    engine = CropEngine(ds, index, CropConfig())
    engine(SPEC)
    path = index.cache_path(2)
    data = bytearray(path.read_bytes())
    if damage == "band":
        data[-30] ^= 0x33
    elif damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data = bytearray(index.cache_path(1).read_bytes())
    tmp = path.with_name("damaged")
    tmp.write_bytes(bytes(data))
    os.replace(tmp, path)
    with pytest.raises(IndexFileError) as e:
        engine(SPEC)
    assert str(path) in str(e.value)


def test_rebuild_prunes_superseded_image_entries_only_after_commit(data, tmp_path):
    ds, _ = data
    cache = tmp_path / "i.isusidx.cache"
    a = isus.build_index(ds, workers=1, cache_dir=cache, image_cache=True)
    a.save(tmp_path / "i.isusidx")
    b = isus.build_index(ds, workers=1, cache_dir=cache, image_cache=ImageCacheParams(quality=80))
    # before the commit both builds' entries are there; the old index still reads
    assert len(list(cache.glob("*.img"))) == 2 * len(ds)
    CropEngine(ds, isus.Index.load(tmp_path / "i.isusidx"))(SPEC)
    b.save(tmp_path / "i.isusidx")
    assert isus.Index.load(tmp_path / "i.isusidx").prune_cache() == len(ds)
    assert sorted(p.name for p in cache.glob("*.img")) == sorted(b.image_cache_path(i).name for i in range(len(ds)))


def test_shards_with_their_own_caches_merge_into_a_single_build(data, tmp_path):
    from isus.index.build import merge_indexes

    ds, _ = data
    single = isus.build_index(ds, workers=1, cache_dir=tmp_path / "one.cache", image_cache=True)
    parts = []
    for k in range(2):  # as on two machines: each shard its own file and cache directory
        ix = isus.build_index(ds, workers=1, cache_dir=tmp_path / f"s{k}.isusidx.cache", image_cache=True, shard=(k, 2))
        ix.save(tmp_path / f"s{k}.isusidx")
        parts.append(tmp_path / f"s{k}.isusidx")
    with pytest.raises(IndexFileError, match="different directories"):
        merge_indexes(parts)
    merged = merge_indexes(parts, cache_dir=tmp_path / "m.isusidx.cache")
    merged.save(tmp_path / "m.isusidx")
    merged = isus.Index.load(tmp_path / "m.isusidx")
    a, b = merged.arrays(), single.arrays()
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert sorted(p.name for p in (tmp_path / "m.isusidx.cache").iterdir()) == sorted(
        p.name for p in (tmp_path / "one.cache").iterdir())
    CropEngine(ds, merged)(SPEC)


def test_merge_names_the_differing_setting(data, tmp_path):
    from isus.index.build import merge_indexes

    ds, _ = data
    a = isus.build_index(ds, workers=1, cache_dir=tmp_path / "c", image_cache=True, shard=(0, 2))
    b = isus.build_index(ds, workers=1, cache_dir=tmp_path / "c", image_cache=ImageCacheParams(quality=70), shard=(1, 2))
    with pytest.raises(IndexFileError, match=r"params\.image_cache\.quality \(70 vs 95\)"):
        merge_indexes([a, b])


def test_image_cache_needs_the_cache_dir(data):
    ds, _ = data
    with pytest.raises(ValueError, match="cache_dir"):
        isus.build_index(ds, workers=1, image_cache=True)
    with pytest.raises(ValueError, match="codec"):
        ImageCacheParams(codec="webp")


def test_open_entries_are_reparsed_after_an_in_place_change(fresh):
    ds, index = fresh
    engine = CropEngine(ds, index)
    engine(SPEC)
    assert len(_OPEN.entries) > 0
    path = index.image_cache_path(2)
    data = path.read_bytes()
    with open(path, "r+b") as f:  # in place, same inode: a reader must not trust its old parse
        f.truncate(len(data) // 3)
    with pytest.raises(IndexFileError, match="truncated"):
        engine(SPEC)


def test_cli_shards_merge_with_defaults_and_with_their_own_outs(tmp_path, monkeypatch):
    """Issue: `--shard K/N --out sK.isusidx` then `index merge` failed ("its params differs") since
    each shard's cache directory differed; with the defaults and with separate outs, the merge
    must equal a single build, caches included."""
    from click.testing import CliRunner

    from isus_cli.main import cli

    root = isus.synth.write_dataset(tmp_path / "mvd", "mvd", 4, size=(320, 240), seed=5)
    run = CliRunner()

    def ok(*args):
        res = run.invoke(cli, [str(a) for a in args], catch_exceptions=False)
        assert res.exit_code == 0, res.output
        return res.output

    monkeypatch.chdir(tmp_path)
    ok("index", "build", "--dataset", "mvd", "--root", root, "--out", "one.isusidx", "--cache-images")
    for k in range(2):  # as on two machines: each its own out and cache
        ok("index", "build", "--dataset", "mvd", "--root", root, "--shard", f"{k}/2", "--out", f"s{k}.isusidx", "--cache-images")
    ok("index", "merge", "s0.isusidx", "s1.isusidx", "--out", "m.isusidx")
    for k in range(2):  # the defaults: shard files, one shared cache directory
        ok("index", "build", "--dataset", "mvd", "--root", root, "--shard", f"{k}/2")
    ok("index", "merge", "mvd-training.shard0of2.isusidx", "mvd-training.shard1of2.isusidx", "--out", "mvd-training.isusidx")
    ok("index", "build", "--dataset", "mvd", "--root", root, "--out", "plain.isusidx")
    for merged, single in (("m.isusidx", "one.isusidx"), ("mvd-training.isusidx", "plain.isusidx")):
        a, b = isus.Index.load(merged).arrays(), isus.Index.load(single).arrays()
        assert sorted(a) == sorted(b)
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
        assert sorted(p.name for p in (tmp_path / f"{merged}.cache").iterdir()) == sorted(
            p.name for p in (tmp_path / f"{single}.cache").iterdir())


def test_verify_caches_reads_every_entry_and_names_a_bad_one(fresh, tmp_path):
    from click.testing import CliRunner

    from isus_cli.main import cli

    ds, index = fresh
    assert index.verify_caches() == 2 * len(ds)
    res = CliRunner().invoke(cli, ["index", "verify", str(index.path)])
    assert res.exit_code == 0 and f"its {2 * len(ds)} cache entries" in res.output, res.output
    # damage the last tile of the coarsest level: no crop at these scales ever reads it
    path = index.image_cache_path(3)
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IndexFileError, match="tile") as e:
        index.verify_caches()
    assert str(path) in str(e.value)
    res = CliRunner().invoke(cli, ["index", "verify", str(index.path)])
    assert res.exit_code != 0 and path.name in res.output


@pytest.mark.parametrize("options, want", [(["--image-codec", "raw"], {"codec": "raw"}),
                                           (["--image-chroma", "420", "--image-quality", "90"],
                                            {"codec": "jpeg", "chroma": "420", "quality": 90})])
def test_cli_image_cache_options_reach_the_cache(tmp_path, monkeypatch, options, want):
    from click.testing import CliRunner

    from isus_cli.main import cli

    root = isus.synth.write_dataset(tmp_path / "mvd", "mvd", 2, size=(320, 240), seed=5)
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(cli, ["index", "build", "--dataset", "mvd", "--root", str(root), "--out", "x.isusidx",
                                   "--cache-images", *options], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    index = isus.Index.load(tmp_path / "x.isusidx")
    assert {k: index.image_cache[k] for k in want} == want
    ds = isus.open_dataset("mvd", root)
    spec = CropSpec(image=1, window=(10.0, 20.0, 200.0, 180.0), scale=1.3)
    a, b = CropEngine(ds, index)(spec), CropEngine(ds, index, CropConfig(use_cache=False))(spec)
    same_targets(a, b)
    if want["codec"] == "raw":  # lossless
        np.testing.assert_array_equal(a.image, b.image)
    else:  # lossy tiles, close to the decode
        assert (a.image != b.image).any() and psnr(a.image, b.image) >= 30


def test_raw_entry_with_tiles_of_the_wrong_size_is_refused(data, tmp_path, monkeypatch):
    """A raw tile is exactly its pixels: an entry whose tiles have other sizes (a writer's bug; the
    CRCs and the digest match what was written) is refused when opened, naming the file."""
    from isus.index import image_cache

    ds, _ = data
    real = image_cache._encode_tile
    monkeypatch.setattr(image_cache, "_encode_tile", lambda tile, params: real(tile, params)[:-3])
    isus.build_index(ds, workers=1, cache_dir=tmp_path / "r.isusidx.cache",
                     image_cache=ImageCacheParams(codec="raw")).save(tmp_path / "r.isusidx")
    monkeypatch.undo()
    index = isus.Index.load(tmp_path / "r.isusidx")
    with pytest.raises(IndexFileError, match="corrupt") as err:
        CropEngine(ds, index)(SPEC)
    assert str(index.image_cache_path(2)) in str(err.value)
