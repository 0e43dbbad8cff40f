"""``isus show`` (issue 23, item 6): image | ground truth | prediction PNGs for the worst images by
PQ or those named, and ``isus.eval.per_image_stats`` that ranks them."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import isus
from isus.eval import PanopticEvaluator, PanopticPredictionWriter, per_image_stats
from isus.types import Panoptic
from isus_cli.main import cli


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """4 validation images predicted as their ground truth, except image 2, whose largest segment
    is predicted void (a lower PQ: it ranks first)."""
    tmp = tmp_path_factory.mktemp("show")
    root = isus.synth.write_dataset(tmp / "mvd", "mvd", 4, size=(160, 120), seed=9, split="validation")
    ds = isus.open_dataset("mvd", root, split="validation")
    with PanopticPredictionWriter(tmp / "pred") as w:
        for i in range(len(ds)):
            gt = ds.load_panoptic(i)
            if i == 2:
                big = gt.segments["id"][np.argmax([(gt.ids == s).sum() for s in gt.segments["id"]])]
                gt = Panoptic(np.where(gt.ids == big, 0, gt.ids).astype(gt.ids.dtype), gt.segments)
            w.add(ds.image_info(i).image_id, gt)
    return tmp, root, ds


def test_per_image_stats_add_up_to_the_dataset_result(data):
    tmp, root, ds = data
    stats = per_image_stats(ds, str(tmp / "pred" / "panoptic.json"))
    assert sorted(stats) == [0, 1, 2, 3]
    total = PanopticEvaluator(ds.categories)
    for st in stats.values():
        total.add_stats(st)
    assert total.result().pq == isus.eval.evaluate_dataset(ds, str(tmp / "pred")).pq
    one = {}
    for i, st in stats.items():
        ev = PanopticEvaluator(ds.categories)
        ev.add_stats(st)
        one[i] = ev.result().pq
    assert one[0] == one[1] == one[3] == 1.0 and one[2] < 1.0
    assert list(per_image_stats(ds, str(tmp / "pred"), images=[3, 1])) == [3, 1]
    with pytest.raises(ValueError, match="positions in 0..3"):
        per_image_stats(ds, str(tmp / "pred"), images=[4])


def test_worst_images_first_with_their_scores(data, tmp_path):
    tmp, root, ds = data
    out = tmp_path / "show"
    res = invoke("show", "--dataset", "mvd", "--root", root, "--split", "validation", "--predictions", tmp / "pred",
                 "--worst", "2", "--out", out, "--workers", "1")
    assert res.exit_code == 0, res.output
    assert "ranked 4 images of mvd validation by PQ; drawing the 2 lowest" in res.output
    assert "drawing: 2/2 images (100%)" in res.stderr
    ids = [str(ds.image_info(i).image_id) for i in range(len(ds))]
    record = json.loads((out / "show.json").read_text())
    names = [r["png"] for r in record["images"]]
    assert names == [f"001_{ids[2]}.png", f"002_{ids[0]}.png"]  # the damaged one first, then image order
    assert sorted(p.name for p in out.iterdir()) == sorted(names + ["show.json"])
    assert record["images"][0]["pq"] < 1.0 and record["images"][1]["pq"] == 1.0
    with Image.open(out / names[0]) as im:  # three panels side by side
        assert im.width > 2.5 * im.height
    # again: refused, then replaced (the earlier run's PNGs removed)
    res = invoke("show", "--dataset", "mvd", "--root", root, "--split", "validation", "--predictions", tmp / "pred",
                 "--worst", "2", "--out", out, "--workers", "1")
    assert res.exit_code == 1 and "pass --overwrite" in res.output
    res = invoke("show", "--dataset", "mvd", "--root", root, "--split", "validation", "--predictions", tmp / "pred",
                 "--image", ids[1], "--out", out, "--workers", "1", "--overwrite")
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == sorted([f"{ids[1]}.png", "show.json"])


def test_named_images_by_id_or_file_name(data, tmp_path):
    tmp, root, ds = data
    info = [ds.image_info(i) for i in (3, 0)]
    res = invoke("show", "--dataset", "mvd", "--root", root, "--split", "validation", "--predictions",
                 tmp / "pred" / "panoptic.json", "--image", info[0].image_id, "--image", info[1].file_name,
                 "--out", tmp_path / "s", "--max-size", "64", "--workers", "1")
    assert res.exit_code == 0, res.output
    assert "drawing 2 images" in res.output
    record = json.loads((tmp_path / "s" / "show.json").read_text())
    assert [r["png"] for r in record["images"]] == [f"{info[0].image_id}.png", f"{info[1].image_id}.png"]
    assert [r["pq"] for r in record["images"]] == [1.0, 1.0]
    assert len(list((tmp_path / "s").glob("*.png"))) == 2


def test_show_errors(data, tmp_path):
    tmp, root, ds = data
    base = ["--dataset", "mvd", "--root", root, "--split", "validation", "--out", tmp_path / "s"]
    res = invoke("show", *base, "--predictions", tmp / "pred", "--image", "nope")
    assert res.exit_code == 2 and "'nope' is no image of mvd validation" in res.output
    res = invoke("show", *base, "--predictions", tmp / "pred", "--image", "x", "--worst", "2")
    assert res.exit_code == 2 and "not both" in res.output
    res = invoke("show", *base)
    assert res.exit_code == 2 and "--predictions is required" in res.output
    res = invoke("show", *base, "--predictions", tmp / "pred", "--worst", "100000")
    assert res.exit_code == 2 and "--worst" in res.output
    assert not (tmp_path / "s").exists()


def test_render_downscales_large_images_and_says_so(data, tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    from isus.eval.view import render_comparison

    _, _, ds = data
    titles = []
    real = Figure.suptitle
    monkeypatch.setattr(Figure, "suptitle", lambda self, t, **k: (titles.append(t), real(self, t, **k))[1])
    gt = ds.load_panoptic(0)
    render_comparison(ds.load_image(0), gt, gt, ds.categories, tmp_path / "a.png", title="t", max_size=80)
    assert "shown at 80x60 of 160x120 px" in titles[-1]
    with pytest.raises(ValueError, match="differ in size"):
        render_comparison(ds.load_image(0)[:10], gt, gt, ds.categories, tmp_path / "b.png")
