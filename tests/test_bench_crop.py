"""bench/crop.py: its window and regime helpers, the plain libjpeg-turbo peer's cut, and a
``--quick`` smoke run end to end (the peers that are installed; the others are named as skipped)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import isus

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import crop as bench_crop  # noqa: E402


def _spec(window, scale):
    return isus.types.CropSpec(image=0, category=-1, instance=-1, level=-1, scale=scale, window=window, flip=False)


def test_regimes_cover_every_scale_once():
    assert [bench_crop.regime_of(s) for s in (0.01, 0.4999, 0.5, 0.99, 1.0, 1.99, 2.0, 50.0)] == [0, 0, 1, 1, 2, 2, 3, 3]


def test_clipped_window_rounds_out_and_keeps_at_least_a_pixel():
    box, out, clipped = bench_crop.clipped_window(_spec((10.4, -3.2, 60.6, 40.0), 2.0), 100, 80)
    assert box == (10, 0, 61, 40) and clipped
    assert out == (round((60.6 - 10.4) * 2), round(40.0 * 2))
    box, out, clipped = bench_crop.clipped_window(_spec((120.0, 90.0, 130.0, 95.0), 1.0), 100, 80)  # wholly outside
    assert box[2] > box[0] and box[3] > box[1] and 0 <= box[0] < 100 and clipped


def test_select_specs_keeps_at_most_k_per_regime_in_draw_order(synth_root):
    index = isus.build_index(isus.open_dataset("mvd", synth_root("mvd")), workers=1)
    specs, regimes = bench_crop.select_specs(index, 3, "scale", max_draws=400)
    assert len(specs) == len(regimes) <= 12
    for k in range(len(bench_crop.REGIMES)):
        assert (regimes == k).sum() <= 3
    assert all(bench_crop.regime_of(s.scale) == r for s, r in zip(specs, regimes))


def test_sjpeg_peer_decodes_at_a_dct_scale_keeping_the_crop_resolution():
    sj = pytest.importorskip("simplejpeg")
    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8), (9, 9), 3)
    data = np.frombuffer(cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes(), np.uint8)
    spec = _spec((100.0, 80.0, 100 + 300 / 0.3, 80 + 200 / 0.3), 0.3)
    box, out, _ = bench_crop.clipped_window(spec, 640, 480)
    got = bench_crop.sjpeg_cv2(sj, data, 640, 480, box, out, spec.scale)
    assert got.shape == (out[1], out[0], 3)
    full = cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    xa, ya, xb, yb = box
    ref = cv2.resize(full[ya:yb, xa:xb], out, interpolation=cv2.INTER_AREA)
    assert np.abs(got.astype(int) - ref).mean() < 3  # a reduced decode of the same pixels
    assert math.isclose(got.shape[1] / (xb - xa), spec.scale, rel_tol=0.05)


def test_quick_run_prints_the_regime_tables_and_the_goals():
    proc = subprocess.run([sys.executable, "bench/crop.py", "--quick", "--no-real"], cwd=ROOT, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "s         n lvl |" in out and "  all " in out and "\ngoals\n" in out
    assert "resize-then-crop / isus with caches" in out
    for name in bench_crop.PEERS:  # measured or named as skipped
        assert name in out


def test_raw_storage_peer_cuts_the_level_isus_reads(synth_root, tmp_path):
    """raw+cv2 reads the level choose_reduce picks and gives the clipped window at the spec's
    scale: at scale 1 an integral window is the decoded image's cut, unchanged."""
    ds = isus.open_dataset("mvd", synth_root("mvd"))
    peer = bench_crop.RawPyramid(ds, tmp_path / "raw")
    full = ds.load_image(0)
    np.testing.assert_array_equal(peer(_spec((10.0, 20.0, 74.0, 52.0), 1.0)), full[20:52, 10:74])
    assert bench_crop.choose_reduce(0.25) == 4
    quarter = ds.load_image(0, 4)
    got = peer(_spec((-8.0, 0.0, 120.0, 64.0), 0.25))  # level 1/4, scale 1 there, clipped at the left
    np.testing.assert_array_equal(got, quarter[0:16, 0:30])
    got = peer(_spec((0.0, 0.0, 160.0, 96.0), 0.2))  # level 1/4 resized by 0.8
    assert got.shape == (19, 32, 3)
    np.testing.assert_array_equal(got, bench_crop.cv2_resize(np.ascontiguousarray(quarter[0:24, 0:40]), (32, 19)))
