"""``isus eval`` and the prediction files: COCO panoptic JSON + PNGs, COCO results JSON."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import isus
from isus.eval import Detections, PanopticPredictionWriter, PanopticPredictions, write_instances
from isus.types import Panoptic, make_segments
from isus_cli.main import cli


def _thing_detections(ds, gt: Panoptic, drop_top: float | None = None) -> Detections:
    """The GT thing instances as perfect detections (optionally without those of area >= drop_top)."""
    rows = [s for s in gt.segments if ds.category(int(s["category_id"])).isthing and not s["iscrowd"]]
    masks = np.stack([gt.ids == s["id"] for s in rows]) if rows else np.zeros((0,) + gt.ids.shape, bool)
    if drop_top is not None and len(rows):
        keep = masks.sum(axis=(1, 2)) < drop_top
        rows, masks = [r for r, k in zip(rows, keep) if k], masks[keep]
    boxes = []
    for m in masks:
        ys, xs = np.nonzero(m)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    return Detections(np.array(boxes, float).reshape(-1, 4), np.linspace(1.0, 0.5, len(rows)),
                      np.array([r["category_id"] for r in rows], np.int64), masks)


def _write_predictions(ds, out, shift: int = 0, drop_top: float | None = None, skip: int | None = None):
    """Predictions derived from the GT: masks shifted by ``shift`` px, crowd dropped."""
    dets = {}
    with PanopticPredictionWriter(out) as w:
        for i in range(len(ds)):
            if i == skip:
                continue
            gt, info = ds.load_panoptic(i), ds.image_info(i)
            seg = gt.segments[~gt.segments["iscrowd"]]
            ids = np.roll(gt.ids, shift, axis=1)
            ids = np.where(np.isin(ids, seg["id"]), ids, 0).astype(np.int32)
            w.add(info.image_id, Panoptic(ids, make_segments(seg["id"], seg["category_id"], np.zeros(len(seg), bool))))
            dets[info.image_id] = _thing_detections(ds, gt, drop_top)
    write_instances(out / "instances.json", dets)
    return out / "panoptic.json", out / "instances.json"


@pytest.fixture(scope="module")
def mvd(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_mvd") / "mvd"
    isus.synth.write_dataset(root, "mvd", 6, size=(256, 192), seed=3)
    return isus.open_dataset("mvd", root)


def _eval(args):
    return CliRunner().invoke(cli, ["eval", *map(str, args)])


def test_eval_writes_json_and_plot_and_prints_percent(mvd, tmp_path):
    pred, inst = _write_predictions(mvd, tmp_path / "p", shift=1)
    res = _eval(["--dataset", "mvd", "--root", mvd.root, "--predictions", tmp_path / "p", "--instances", inst,
                 "--out", tmp_path / "ev", "--workers", "1"])
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert (tmp_path / "ev" / "eval_by_size.png").stat().st_size > 10_000
    # the same numbers as the library, fractions in JSON and percent on screen
    lib = isus.eval.evaluate_dataset(mvd, pred, inst)
    assert data == json.loads(json.dumps(lib.to_dict()))
    assert 0 < data["pq"] < 1 and data["ap_box"] == pytest.approx(1.0)
    assert f"{100 * lib.pq:5.1f}" in res.output and "p95-p100" in res.output
    assert sum(data["buckets"]["instances"]) == sum(
        int(((mvd.load_panoptic(i).segments["iscrowd"] == 0) &
             np.isin(mvd.load_panoptic(i).segments["category_id"], [c.id for c in mvd.categories if c.isthing])).sum())
        for i in range(len(mvd)))
    # progress goes to stderr also when it is not a terminal (a log file)
    assert "evaluating: 6/6 images" in res.stderr


def test_eval_workers_do_not_change_the_result(mvd, tmp_path):
    pred, inst = _write_predictions(mvd, tmp_path / "p", shift=2)
    one = isus.eval.evaluate_dataset(mvd, pred, inst, workers=1)
    two = isus.eval.evaluate_dataset(mvd, pred, inst, workers=2)
    assert json.dumps(one.to_dict()) == json.dumps(two.to_dict())


def test_compare_draws_runs_together_and_checks_their_buckets(mvd, tmp_path):
    outs = []
    for name, kw in (("good", {}), ("no_large", {"drop_top": 2000})):
        pred, inst = _write_predictions(mvd, tmp_path / name, **kw)
        res = _eval(["--dataset", "mvd", "--root", mvd.root, "--predictions", pred, "--instances", inst,
                     "--out", tmp_path / f"ev_{name}"])
        assert res.exit_code == 0, res.output
        outs.append(tmp_path / f"ev_{name}" / "eval.json")
    res = _eval(["--compare", *outs, "--out", tmp_path / "cmp", "--labels", "good,no-large"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "cmp" / "compare_by_size.png").exists()
    both = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert set(both) == {"good", "no-large"}
    assert both["no-large"]["buckets"]["box"][-1] < both["good"]["buckets"]["box"][-1]
    assert "no-large" in res.output and "box AP by size" in res.output
    # runs with other bucket edges cannot share a plot
    other = json.loads(outs[0].read_text())
    other["buckets"]["edges"] = [e * 2 for e in other["buckets"]["edges"]]
    (tmp_path / "other.json").write_text(json.dumps(other))
    res = _eval(["--compare", outs[0], tmp_path / "other.json", "--out", tmp_path / "cmp2"])
    assert res.exit_code == 1 and "bucket edges" in res.output and "Traceback" not in res.output
    res = _eval(["--compare", tmp_path / "p_missing.json", "--out", tmp_path / "cmp3"])
    assert res.exit_code == 2
    (tmp_path / "bad.json").write_text("{\"pq\": 1}")
    res = _eval(["--compare", tmp_path / "bad.json", "--out", tmp_path / "cmp4"])
    assert res.exit_code == 1 and "lacks the fields" in res.output


def test_missing_and_extra_predictions_are_clean_errors(mvd, tmp_path):
    pred, _ = _write_predictions(mvd, tmp_path / "p", skip=2)
    res = _eval(["--dataset", "mvd", "--root", mvd.root, "--predictions", pred, "--out", tmp_path / "ev"])
    assert res.exit_code == 1 and "no prediction for 1 of 6" in res.output
    assert repr(mvd.image_info(2).image_id) in res.output and "Traceback" not in res.output
    res = _eval(["--dataset", "mvd", "--root", mvd.root, "--predictions", pred, "--out", tmp_path / "ev",
                 "--only-predicted"])
    assert res.exit_code == 0 and "5 images (of 6, --only-predicted)" in res.output, res.output
    assert json.loads((tmp_path / "ev" / "eval.json").read_text())["images"] == 5
    pred, _ = _write_predictions(mvd, tmp_path / "full")
    data = json.loads(pred.read_text())
    data["annotations"].append({**data["annotations"][0], "image_id": "not-an-image"})
    pred.write_text(json.dumps(data))
    res = _eval(["--dataset", "mvd", "--root", mvd.root, "--predictions", pred, "--out", tmp_path / "ev", "--overwrite"])
    assert res.exit_code == 1 and "1 predictions for image ids the ground truth does not have" in res.output
    assert "'not-an-image'" in res.output and "matching split" in res.output


def test_prediction_file_errors_name_the_file(mvd, tmp_path):
    pred, _ = _write_predictions(mvd, tmp_path / "p")
    preds = PanopticPredictions(tmp_path / "p")  # the folder holding one JSON
    assert len(preds) == 6 and preds.png_dir == tmp_path / "p" / "panoptic"
    image_id = mvd.image_info(0).image_id
    np.testing.assert_array_equal(preds.load(image_id).ids != 0, np.isin(
        mvd.load_panoptic(0).ids, mvd.load_panoptic(0).segments[~mvd.load_panoptic(0).segments["iscrowd"]]["id"]))
    # an id in the PNG that segments_info does not list
    data = json.loads(pred.read_text())
    png = preds.png_dir / data["annotations"][0]["file_name"]
    data["annotations"][0]["segments_info"] = data["annotations"][0]["segments_info"][1:]
    pred.write_text(json.dumps(data))
    with pytest.raises(isus.IsusError, match="does not list") as e:
        PanopticPredictions(pred).load(image_id)
    assert str(png) in str(e.value)
    png.unlink()
    with pytest.raises(isus.IsusError, match="not found"):
        PanopticPredictions(pred).load(image_id)
    pred.write_text("{\"annotations\": 3}")
    with pytest.raises(isus.IsusError, match="no 'annotations' list"):
        PanopticPredictions(pred)
    pred.write_text("{oops")
    with pytest.raises(isus.IsusError, match="not valid JSON"):
        PanopticPredictions(pred)
    (tmp_path / "p" / "second.json").write_text("{}")
    (tmp_path / "p" / "second").mkdir()
    with pytest.raises(isus.IsusError, match="exactly one"):
        PanopticPredictions(tmp_path / "p")


def test_instances_file_round_trip_and_errors(tmp_path):
    masks = np.zeros((2, 20, 30), bool)
    masks[0, 2:8, 3:9] = True
    masks[1, 10:19, 0:30] = True
    det = Detections(np.array([[3, 2, 9, 8], [0, 10, 30, 19]], float), np.array([0.9, 0.4]), np.array([5, 7]), masks)
    path = write_instances(tmp_path / "i.json", {"a": det, 3: det})
    back = isus.eval.read_instances(path)
    assert set(back) == {"a", "3"}
    np.testing.assert_allclose(back["a"].boxes, det.boxes)
    from pycocotools import mask as mu
    # (mu.decode warns under NumPy 2: compare the encodings instead)
    assert back["3"].masks[1]["counts"] == mu.encode(np.asfortranarray(masks[1].astype(np.uint8)))["counts"].decode()
    assert back["3"].masks[1]["size"] == [20, 30]
    (tmp_path / "bad.json").write_text(json.dumps([{"image_id": 1, "bbox": [0, 0, 1, 1], "score": 1}]))
    with pytest.raises(isus.IsusError, match=r"result \[0\] needs"):
        isus.eval.read_instances(tmp_path / "bad.json")
    (tmp_path / "bad.json").write_text(json.dumps([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1], "score": 1}]))
    with pytest.raises(isus.IsusError, match="bbox"):
        isus.eval.read_instances(tmp_path / "bad.json")


def test_writer_png_is_the_coco_encoding(tmp_path):
    ids = np.zeros((4, 5), np.int32)
    ids[1:3, 1:4] = 70000  # needs all three channels
    ids[3, :] = 2
    with PanopticPredictionWriter(tmp_path) as w:
        w.add(17, Panoptic(ids, make_segments([2, 70000], [1, 2], [False, False])))
    rgb = np.array(Image.open(tmp_path / "panoptic" / "17.png")).astype(np.int64)
    np.testing.assert_array_equal(rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2], ids)
    info = json.loads((tmp_path / "panoptic.json").read_text())["annotations"][0]
    assert info["image_id"] == 17
    assert info["segments_info"] == [{"id": 2, "category_id": 1, "iscrowd": 0, "area": 5, "bbox": [0, 3, 5, 1]},
                                     {"id": 70000, "category_id": 2, "iscrowd": 0, "area": 6, "bbox": [1, 1, 3, 2]}]
