"""The fast decoder of panoptic PNGs (imagecodecs, for plain 8-bit RGB files) against OpenCV's, the
decoder of record: bit-identical pixels wherever the fast one decodes, OpenCV for every other file
(16 bits, transparency, palette, APNG, damaged), and OpenCV's errors for what either refuses.

The PNGs are written by PIL and OpenCV (as prediction writers and dataset tools write them), by
isus's own writers, and by a small encoder here that writes every filter type, Adam7 interlacing,
split IDAT chunks and ancillary chunks; then truncated, bit-flipped and rearranged.
"""
from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

import isus
from isus import kernels
from isus.datasets.io import decode_plain_rgb8_png, id_to_rgb, plain_rgb8_png, read_panoptic_png

imagecodecs = pytest.importorskip("imagecodecs")


# -- a small PNG encoder -----------------------------------------------------------------------
def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _paeth(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    p = a + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))


def _filtered(rows: np.ndarray, bpp: int, filters: tuple[int, ...]) -> bytes:
    """``rows`` (h, stride) uint8, each filtered with ``filters[y % len(filters)]`` (0-4)."""
    out = bytearray()
    prev = np.zeros(rows.shape[1], np.int32)
    for y, row in enumerate(rows.astype(np.int32)):
        left = np.concatenate([np.zeros(bpp, np.int32), row[:-bpp]])
        upleft = np.concatenate([np.zeros(bpp, np.int32), prev[:-bpp]])
        f = filters[y % len(filters)]
        pred = [np.zeros_like(row), left, prev, (left + prev) // 2, _paeth(left, prev, upleft)][f]
        out.append(f)
        out += ((row - pred) & 255).astype(np.uint8).tobytes()
        prev = row
    return bytes(out)


_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def encode(a: np.ndarray, color_type: int = 2, filters: tuple[int, ...] = (0, 1, 2, 3, 4), interlace: bool = False,
           level: int = 6, before: tuple[tuple[bytes, bytes], ...] = (), after: tuple[tuple[bytes, bytes], ...] = (),
           idat_size: int | None = None, zdata: bytes | None = None) -> bytes:
    """A PNG of ``a`` ((h, w) or (h, w, c), uint8 or uint16), chunks ``before`` / ``after`` the IDATs."""
    h, w = a.shape[:2]
    depth = 16 if a.dtype == np.uint16 else 8
    bpp = (1 if a.ndim == 2 else a.shape[2]) * depth // 8

    def rows(sub: np.ndarray) -> np.ndarray:
        b = sub.astype(">u2").view(np.uint8) if depth == 16 else sub.astype(np.uint8)
        return b.reshape(sub.shape[0], -1)

    if interlace:
        raw = b"".join(_filtered(rows(a[y0::dy, x0::dx]), bpp, filters) for x0, y0, dx, dy in _ADAM7
                       if a[y0::dy, x0::dx].size)
    else:
        raw = _filtered(rows(a), bpp, filters)
    z = zlib.compress(raw, level) if zdata is None else zdata
    parts = [z] if idat_size is None else [z[i:i + idat_size] for i in range(0, len(z), idat_size)]
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, int(interlace)))
            + b"".join(_chunk(k, d) for k, d in before) + b"".join(_chunk(b"IDAT", p) for p in parts)
            + b"".join(_chunk(k, d) for k, d in after) + _chunk(b"IEND", b""))


def pil_png(a: np.ndarray, **kw) -> bytes:
    bio = io.BytesIO()
    Image.fromarray(a).save(bio, "PNG", **kw)
    return bio.getvalue()


def cv2_png(a: np.ndarray, level: int = 3) -> bytes:
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(a[..., ::-1]), [cv2.IMWRITE_PNG_COMPRESSION, level])
    assert ok
    return buf.tobytes()


# -- the decoders compared -----------------------------------------------------------------------
def opencv_rgb(data: bytes) -> np.ndarray | None:
    """What read_panoptic_png decoded before the fast path (and still does outside it)."""
    try:
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
    except cv2.error:
        return None
    return None if bgr is None else bgr[..., ::-1]


def assert_fast_equals_opencv(data: bytes, plain: bool | None = None) -> np.ndarray | None:
    """Where the fast decoder gives pixels, OpenCV gives the same; returns them (None: it declined)."""
    fast = decode_plain_rgb8_png(data)
    if plain is not None:
        assert (plain_rgb8_png(data) is not None) == plain
        if plain:
            assert fast is not None, "a plain PNG must take the fast path"
    if fast is not None:
        ref = opencv_rgb(data)
        assert ref is not None, "the fast decoder accepted a PNG that OpenCV refuses"
        assert fast.dtype == np.uint8 and fast.shape == ref.shape and np.array_equal(fast, ref)
    return fast


def images(rng: np.random.Generator) -> list[np.ndarray]:
    """Noise, flat regions (long runs, as in panoptic maps) and odd sizes down to 1x1."""
    out = [rng.integers(0, 256, (1, 1, 3), dtype=np.uint8), rng.integers(0, 256, (1, 9, 3), dtype=np.uint8),
           rng.integers(0, 256, (7, 1, 3), dtype=np.uint8)]
    for h, w in ((13, 17), (40, 33), (64, 64)):
        out.append(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        ids = np.repeat(np.repeat(rng.integers(0, 1 << 24, (h // 8 + 1, w // 8 + 1)), 8, 0), 8, 1)[:h, :w]
        out.append(id_to_rgb(ids))
    return out


# -- pixels ------------------------------------------------------------------------------------
@pytest.mark.parametrize("interlace", [False, True])
@pytest.mark.parametrize("filters", [(0,), (1,), (2,), (3,), (4,), (0, 1, 2, 3, 4), (4, 3, 2, 1, 0, 2)])
def test_every_filter_and_interlacing_is_bit_exact(filters, interlace):
    for a in images(np.random.default_rng(len(filters) + 10 * interlace)):
        fast = assert_fast_equals_opencv(encode(a, filters=filters, interlace=interlace), plain=True)
        assert np.array_equal(fast, a)


@pytest.mark.parametrize("writer", ["pil", "pil-optimize", "pil-level0", "pil-level9", "cv2-0", "cv2-3", "cv2-9"])
def test_real_writers_are_bit_exact(writer):
    for a in images(np.random.default_rng(3)):
        if writer.startswith("pil"):
            opts = {"pil": {}, "pil-optimize": {"optimize": True}, "pil-level0": {"compress_level": 0},
                    "pil-level9": {"compress_level": 9}}[writer]
            data = pil_png(a, **opts)
        else:
            data = cv2_png(a, int(writer[-1]))
        assert np.array_equal(assert_fast_equals_opencv(data, plain=True), a)


def test_chunk_layouts_that_stay_plain():
    a = images(np.random.default_rng(4))[-1]
    text = ((b"tEXt", b"Software\x00test"),)
    for data in (encode(a, idat_size=1), encode(a, idat_size=100), encode(a, level=0), encode(a, level=9),
                 encode(a, before=((b"gAMA", struct.pack(">I", 45455)), (b"sRGB", b"\x00"), (b"pHYs", bytes(9)),
                                   (b"sBIT", b"\x05\x06\x05"), (b"cHRM", bytes(32)))),
                 encode(a, before=text, after=text), encode(a, after=((b"tIME", bytes(7)),)),
                 encode(a) + b"trailing bytes after IEND"):
        assert np.array_equal(assert_fast_equals_opencv(data, plain=True), a)


def test_everything_else_goes_to_opencv():
    """16 bits, transparency, palettes, grey, alpha, APNG, bKGD, compressed chunks, a chunk between
    IDATs, a missing or damaged IEND: not plain, so OpenCV decodes them (its 16-bit RGB -> 8 bits,
    tRNS dropped, ...) exactly as before; read_panoptic_png's result is OpenCV's."""
    rng = np.random.default_rng(5)
    a = images(rng)[-1]
    a16 = a.astype(np.uint16) * 257 + rng.integers(0, 256, a.shape).astype(np.uint16)
    body = encode(a)
    others = [encode(a16), encode(a, before=((b"tRNS", bytes(6)),)), encode(a[..., 0], color_type=0),
              encode(np.dstack([a, a[..., :1]]), color_type=6), encode(a[..., 0] % 4, color_type=3,
                                                                       before=((b"PLTE", bytes(range(12))),)),
              encode(a, before=((b"PLTE", bytes(range(12))),)), encode(a, before=((b"acTL", bytes(8)),)),
              encode(a, before=((b"bKGD", bytes(6)),)), encode(a, before=((b"iCCP", b"x\x00\x00" + zlib.compress(b"0")),)),
              encode(a, before=((b"zTXt", b"k\x00\x00" + zlib.compress(b"v")),)), encode(a, before=((b"abCd", b"x"),)),
              body[:-12], body[:-1], body[:-12] + _chunk(b"IEND", b"x"), body[:-4] + b"\0\0\0\0"]
    # a tEXt between two IDATs
    half = encode(a, idat_size=200)
    second = half.index(b"IDAT", half.index(b"IDAT") + 4) - 4
    others.append(half[:second] + _chunk(b"tEXt", b"k\x00v") + half[second:])
    for k, data in enumerate(others):
        assert plain_rgb8_png(data) is None, k
        assert decode_plain_rgb8_png(data) is None, k


def test_read_panoptic_png_equals_opencv_on_every_kind(tmp_path):
    """The whole reader, fast path or not: OpenCV's ids, or the same DatasetError."""
    rng = np.random.default_rng(6)
    a = images(rng)[-1]
    a16 = a.astype(np.uint16) * 257 + rng.integers(0, 256, a.shape).astype(np.uint16)
    files = {"plain": pil_png(a), "adam7": encode(a, interlace=True), "16bit": encode(a16),
             "trns": encode(a, before=((b"tRNS", bytes(6)),)), "no-iend": pil_png(a)[:-12],
             "truncated": pil_png(a)[:60], "bad-idat-crc": pil_png(a)[:-17] + b"\0\0\0\0" + pil_png(a)[-12:]}
    for name, data in files.items():
        path = tmp_path / f"{name}.png"
        path.write_bytes(data)
        ref = opencv_rgb(data)
        if ref is None:
            with pytest.raises(isus.DatasetError, match="cannot decode prediction PNG"):
                read_panoptic_png(path, "prediction PNG")
        else:
            ids = read_panoptic_png(path, "prediction PNG")
            assert ids.dtype == np.int32
            assert np.array_equal(ids, kernels.colors_to_ids(np.ascontiguousarray(ref), False)), name


# -- damaged files -------------------------------------------------------------------------------
def test_damaged_files_never_decode_differently():
    """Truncations, single bit flips anywhere (the CRCs then catch most), bit flips in the compressed
    data with the CRCs made right again (so that the inflater and the unfiltering meet them), extra
    or missing image data, a wrong Adler-32: whenever the fast decoder gives pixels, OpenCV gives the
    same; everything else falls to OpenCV."""
    rng = np.random.default_rng(7)
    fast = {"whole": 0, "deflate flips": 0}
    for a in images(rng)[3:7]:
        raw = _filtered(a.reshape(a.shape[0], -1), 3, (0, 1, 2, 3, 4))
        z = zlib.compress(raw)
        srcs = [pil_png(a), cv2_png(a), encode(a, interlace=True, idat_size=64),
                encode(a, zdata=zlib.compress(raw + b"\0" * 7)),  # more image data than the image has
                encode(a, zdata=zlib.compress(raw[:-5])),  # less
                encode(a, zdata=z[:-4] + b"\0\0\0\0"),  # a wrong Adler-32
                encode(a, zdata=z + b"more")]  # bytes after the end of the deflate stream
        for data in srcs:
            fast["whole"] += assert_fast_equals_opencv(data) is not None
            for cut in range(0, len(data), max(1, len(data) // 97)):
                assert_fast_equals_opencv(data[:cut])
            for pos in rng.integers(0, len(data), 60):
                m = bytearray(data)
                m[pos] ^= 1 << int(rng.integers(0, 8))
                assert_fast_equals_opencv(bytes(m))
        for pos in rng.integers(2, len(z), 80):
            m = bytearray(z)
            m[pos] ^= 1 << int(rng.integers(0, 8))
            fast["deflate flips"] += assert_fast_equals_opencv(encode(a, zdata=bytes(m), idat_size=97)) is not None
    assert fast["whole"] >= 8 and fast["deflate flips"] > 0, fast  # both kinds reach the fast decoder


# -- isus's own files and the fallbacks ---------------------------------------------------------
def test_synthetic_dataset_and_prediction_files(tmp_path):
    """The synthetic COCO writer's ground truth and PanopticPredictionWriter's predictions."""
    from isus.eval import PanopticPredictionWriter

    root = tmp_path / "coco"
    isus.synth.write_dataset(root, "coco", 3, size=(96, 64), seed=1)
    ds = isus.open_dataset("coco", root)
    pngs = sorted((root / "annotations").rglob("*.png"))
    assert pngs
    with PanopticPredictionWriter(tmp_path / "pred") as w:
        for i in range(len(ds)):
            w.add(ds.image_info(i).image_id, ds.load_panoptic(i))
    pngs += sorted((tmp_path / "pred" / "panoptic").glob("*.png"))
    for p in pngs:
        data = p.read_bytes()
        rgb = assert_fast_equals_opencv(data, plain=True)
        assert np.array_equal(read_panoptic_png(p, "PNG"), kernels.colors_to_ids(np.ascontiguousarray(rgb), False))


def test_without_imagecodecs_or_when_it_fails_opencv_decodes(tmp_path, monkeypatch):
    a = images(np.random.default_rng(8))[-1]
    path = tmp_path / "p.png"
    path.write_bytes(pil_png(a))
    want = kernels.colors_to_ids(a, False)
    assert np.array_equal(read_panoptic_png(path, "PNG"), want)

    def boom(data):
        raise imagecodecs.PngError("refused")

    monkeypatch.setattr(imagecodecs, "png_decode", boom)
    assert decode_plain_rgb8_png(path.read_bytes()) is None
    assert np.array_equal(read_panoptic_png(path, "PNG"), want)
    monkeypatch.undo()
    monkeypatch.setitem(__import__("sys").modules, "imagecodecs", None)  # import imagecodecs -> ImportError
    assert decode_plain_rgb8_png(path.read_bytes()) is None
    assert np.array_equal(read_panoptic_png(path, "PNG"), want)
