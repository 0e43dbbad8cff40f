"""Issue 22, evaluation side: crafted or careless evaluation inputs are refused with an error that
names the file, the entry and the field, never turned into a silently wrong number.

Instances JSON (scores, boxes, RLE masks, category ids), prediction file names, ``isus eval
--compare`` on runs that do not belong together, and impossible metric values in eval.json."""
from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
from click.testing import CliRunner

import isus
from isus.eval import Detections, EvalResult, PanopticPredictions, read_instances
from isus.eval.coco import detections_to_coco
from isus.eval.stats import CategoryTable
from isus_cli.main import cli
from tests.test_eval_cli import _write_predictions


@pytest.fixture(scope="module")
def mvd(tmp_path_factory):
    root = tmp_path_factory.mktemp("sec_mvd") / "mvd"
    isus.synth.write_dataset(root, "mvd", 3, size=(128, 96), seed=5)
    return isus.open_dataset("mvd", root)


@pytest.fixture(scope="module")
def preds(mvd, tmp_path_factory):
    """Valid predictions (panoptic JSON + PNGs, instances JSON with RLE masks) and their records."""
    out = tmp_path_factory.mktemp("sec_preds")
    pred, inst = _write_predictions(mvd, out, shift=1)
    return pred, inst, json.loads(inst.read_text())


def _eval(args):
    return CliRunner().invoke(cli, ["eval", *map(str, args)])


def _instances(tmp_path, records, name="inst.json"):
    path = tmp_path / name
    path.write_text(json.dumps(records))
    return path


def _refused(path, *fragments, categories=None):
    with pytest.raises(isus.IsusError) as e:
        read_instances(path, categories=categories) if categories is not None else read_instances(path)
    msg = str(e.value)
    assert str(path) in msg, msg
    for f in fragments:
        assert f in msg, msg
    return msg


# -- 1. instances JSON and Detections ----------------------------------------------------------
def test_null_scores_are_refused_not_ap_100(mvd, preds, tmp_path):
    pred, _, recs = preds
    bad = [{**r, "score": None} for r in recs]
    path = _instances(tmp_path, bad)
    _refused(path, "[0]", f"image_id {recs[0]['image_id']!r}", "score", "finite number")
    with pytest.raises(isus.IsusError, match="score"):
        isus.eval.evaluate_dataset(mvd, pred, path)


@pytest.mark.parametrize("score", ["NaN", "Infinity", "-Infinity", '"0.9"', "true"])
def test_non_finite_or_non_numeric_scores_are_refused(preds, tmp_path, score):
    _, _, recs = preds
    text = json.dumps(recs[:3]).replace(f'"score": {json.dumps(recs[2]["score"])}', f'"score": {score}', 1)
    path = tmp_path / "inst.json"
    path.write_text(text)
    assert score in path.read_text()
    _refused(path, "[2]", "score")


@pytest.mark.parametrize("bbox,what", [([0, 0, float("nan"), 3], "finite"), ([0, float("inf"), 3, 3], "finite"),
                                       ([0, 0, -2, 3], "width"), ([0, 0, 2, -0.5], "height"),
                                       ([0, 0, "2", 3], "numbers"), ([0, 0, 2, None], "numbers")])
def test_bad_boxes_are_refused(preds, tmp_path, bbox, what):
    _, _, recs = preds
    path = tmp_path / "inst.json"
    recs = [dict(r) for r in recs[:2]]
    recs[1]["bbox"] = bbox
    path.write_text(json.dumps(recs))  # NaN/Infinity written as JSON's non-standard literals
    _refused(path, "[1]", "bbox", what)


def test_zero_size_boxes_stay_allowed(preds, tmp_path):
    _, _, recs = preds
    recs = [dict(r) for r in recs[:2]]
    recs[1]["bbox"] = [3, 4, 0, 0]
    assert len(read_instances(_instances(tmp_path, recs))) >= 1


def _rle(recs, k=0):
    return dict(recs[k]["segmentation"])


@pytest.mark.parametrize("case", ["garbage", "short_list", "long_list", "negative", "string_short",
                                  "string_long", "truncated", "not_ascii", "bad_size", "counts_type"])
def test_malformed_rle_is_refused(preds, tmp_path, case):
    from pycocotools import mask as mu

    _, _, recs = preds
    recs = [dict(r) for r in recs[:2]]
    seg = _rle(recs, 1)
    h, w = seg["size"]
    full = mu.frPyObjects({"size": [h, w], "counts": [h * w // 2, h * w - h * w // 2]}, h, w)["counts"].decode()
    seg = {"garbage": {"size": [h, w], "counts": "}}}~~~ \x7f"},
           "short_list": {"size": [h, w], "counts": [5, 10, 20]},
           "long_list": {"size": [h, w], "counts": [h * w - 3, 10]},
           "negative": {"size": [h, w], "counts": [h * w + 5, -5]},
           "string_short": {"size": [h, w + 1], "counts": full},
           "string_long": {"size": [h - 1, w], "counts": full},
           "truncated": {"size": [h, w], "counts": full[:-1] + "o"},  # a continuation bit on the last char
           "not_ascii": {"size": [h, w], "counts": full + "é"},
           "bad_size": {"size": [h, -w], "counts": [0]},
           "counts_type": {"size": [h, w], "counts": 12},
           }[case]
    recs[1]["segmentation"] = seg
    msg = _refused(_instances(tmp_path, recs), "[1]", "segmentation")
    assert "Traceback" not in msg


def test_valid_rle_lists_and_strings_pass(preds, tmp_path):
    _, _, recs = preds
    recs = [dict(r) for r in recs[:2]]
    h, w = recs[1]["segmentation"]["size"]
    recs[1]["segmentation"] = {"size": [h, w], "counts": [0, 7, h * w - 7]}  # uncompressed, starts on foreground
    back = read_instances(_instances(tmp_path, recs))
    assert sum(len(d.scores) for d in back.values()) == 2


@pytest.mark.parametrize("cid,ok", [(3.7, False), ("3", False), (True, False), (None, False), (3.0, True)])
def test_category_id_must_be_integral(preds, tmp_path, cid, ok):
    _, _, recs = preds
    recs = [dict(r) for r in recs[:2]]
    want = recs[1]["category_id"]
    recs[1]["category_id"] = float(want) if ok else cid
    path = _instances(tmp_path, recs)
    if ok:  # 3.0 is read as 3 (JSON writers that only know floats), documented
        dets = read_instances(path)
        labels = np.concatenate([d.labels for d in dets.values()])
        assert labels.dtype == np.int64 and want in labels.tolist()
    else:
        _refused(path, "[1]", "category_id", "integer")


def test_unknown_category_id_names_the_file_and_entry(mvd, preds, tmp_path):
    pred, _, recs = preds
    recs = [dict(r) for r in recs]
    recs[4]["category_id"] = 9999
    path = _instances(tmp_path, recs)
    _refused(path, "[4]", "category_id", "9999", categories=mvd.categories)
    with pytest.raises(isus.IsusError, match=r"\[4\].*9999"):
        isus.eval.evaluate_dataset(mvd, pred, path)
    stuff = next(c for c in mvd.categories if not c.isthing)
    recs[4]["category_id"] = stuff.id
    _refused(_instances(tmp_path, recs), "[4]", "stuff", categories=mvd.categories)


def test_image_id_must_be_an_int_or_a_string(preds, tmp_path):
    _, _, recs = preds
    recs = [dict(r) for r in recs[:2]]
    recs[1]["image_id"] = [1]
    _refused(_instances(tmp_path, recs), "[1]", "image_id")


def test_valid_instances_give_the_same_result(mvd, preds):
    pred, inst, _ = preds
    res = isus.eval.evaluate_dataset(mvd, pred, inst)
    assert res.ap_box == pytest.approx(1.0) and 0 < res.pq < 1


def test_detections_refuse_non_finite_scores_boxes_and_fractional_labels():
    box = np.array([[0.0, 0.0, 4.0, 4.0]])
    Detections(box, np.array([0.5]), np.array([3.0]))  # integral floats are accepted
    with pytest.raises(ValueError, match="scores"):
        Detections(box, np.array([np.nan]), np.array([3]))
    with pytest.raises(ValueError, match="boxes"):
        Detections(np.array([[0.0, 0.0, np.inf, 4.0]]), np.array([0.5]), np.array([3]))
    with pytest.raises(ValueError, match="x1 >= x0"):
        Detections(np.array([[5.0, 0.0, 4.0, 4.0]]), np.array([0.5]), np.array([3]))
    with pytest.raises(ValueError, match="labels"):
        Detections(box, np.array([0.5]), np.array([3.7]))


def test_detections_to_coco_checks_rle_masks():
    table = CategoryTable((isus.Category(1, "car", True, (0, 0, 0)),))
    box = np.array([[0.0, 0.0, 4.0, 4.0]])

    def run(rle):
        return detections_to_coco(Detections(box, np.array([0.5]), np.array([1]), [rle]), table, (10, 12), "img.png")

    assert run({"size": [10, 12], "counts": [0, 16, 104]})[0]["segmentation"]["size"] == [10, 12]
    for bad in ({"size": [10, 12], "counts": [0, 16, 200]}, {"size": [10, 12], "counts": "garbage!"},
                {"size": [10, 12], "counts": b"\xff\xff"}):
        with pytest.raises(isus.eval.EvalInputError, match=r"img.png.*detection 0.*RLE"):
            run(bad)


# -- prediction file names -------------------------------------------------------------------
@pytest.mark.parametrize("name", ["../outside.png", "sub/../../outside.png", "/etc/passwd", "..\\outside.png",
                                  "", "C:\\x.png"])
def test_prediction_file_names_stay_inside_the_folder(preds, tmp_path, name):
    pred, _, _ = preds
    data = json.loads(pred.read_text())
    data["annotations"][1]["file_name"] = name
    path = tmp_path / "panoptic.json"
    path.write_text(json.dumps(data))
    with pytest.raises(isus.eval.PredictionFileError) as e:
        PanopticPredictions(path, png_dir=pred.with_suffix(""))
    msg = str(e.value)
    assert str(path) in msg and "annotations[1]" in msg and "file_name" in msg


def test_prediction_file_must_be_a_regular_file(mvd, preds, tmp_path):
    pred, _, _ = preds
    data = json.loads(pred.read_text())
    png_dir = tmp_path / "png"
    png_dir.mkdir()
    (png_dir / "adir.png").mkdir()
    os.mkfifo(png_dir / "fifo.png")
    data["annotations"][0]["file_name"] = "adir.png"
    data["annotations"][1]["file_name"] = "fifo.png"
    path = tmp_path / "panoptic.json"
    path.write_text(json.dumps(data))
    p = PanopticPredictions(path, png_dir=png_dir)
    for a in data["annotations"][:2]:
        with pytest.raises(isus.eval.PredictionFileError, match="not a regular file"):
            p.load(a["image_id"])  # a FIFO would block forever if opened


def test_prediction_file_names_in_subfolders_and_symlinked_folders_stay_allowed(mvd, preds, tmp_path):
    pred, _, _ = preds
    data = json.loads(pred.read_text())
    sub = tmp_path / "png" / "sub"
    sub.parent.mkdir()
    sub.symlink_to(pred.with_suffix(""), target_is_directory=True)
    for a in data["annotations"]:
        a["file_name"] = "sub/" + a["file_name"]
    path = tmp_path / "panoptic.json"
    path.write_text(json.dumps(data))
    p = PanopticPredictions(path, png_dir=tmp_path / "png")
    assert p.load(data["annotations"][0]["image_id"]).ids.shape == (96, 128)


# -- 2. isus eval --compare and eval.json values -------------------------------------------------
@pytest.fixture(scope="module")
def evals(mvd, preds, tmp_path_factory):
    """eval.json of one run with buckets (isus eval writes it), and its data."""
    pred, inst, _ = preds
    out = tmp_path_factory.mktemp("sec_evals")
    res = _eval(["--dataset", "mvd", "--root", mvd.root, "--predictions", pred, "--instances", inst,
                 "--out", out / "a", "--workers", "1"])
    assert res.exit_code == 0, res.output
    return out / "a" / "eval.json", json.loads((out / "a" / "eval.json").read_text())


def test_eval_json_records_the_dataset(mvd, evals):
    _, data = evals
    assert data["dataset"]["name"] == "mvd" and data["dataset"]["split"] == mvd.split == "training"
    assert len(data["dataset"]["image_ids_sha256"]) == 64
    EvalResult.from_dict(data)  # still an EvalResult


def _variant(tmp_path, data, name, change):
    d = json.loads(json.dumps(data))
    change(d)
    path = tmp_path / name / "eval.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(d))
    return path


def _compare(tmp_path, *paths, flags=()):
    return _eval(["--compare", *paths, "--out", tmp_path / "cmp", "--overwrite", *flags])


@pytest.mark.parametrize("field,change", [
    ("dataset", lambda d: d["dataset"].update(name="cityscapes")),
    ("split", lambda d: d["dataset"].update(split="validation")),
    ("images", lambda d: d.update(images=d["images"] + 1)),
    ("image ids", lambda d: d["dataset"].update(image_ids_sha256="0" * 64)),
    ("bucket edges", lambda d: d["buckets"].update(edges=[e * 2 for e in d["buckets"]["edges"]])),
])
def test_compare_refuses_runs_that_do_not_belong_together(evals, tmp_path, field, change):
    path, data = evals
    other = _variant(tmp_path, data, "other", change)
    res = _compare(tmp_path, path, other)
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    assert "cannot be compared" in res.output and field in res.output and "--allow-mismatch" in res.output
    res = _compare(tmp_path, path, other, flags=["--allow-mismatch"])
    assert res.exit_code == 0, res.output
    assert "note:" in res.output and field in res.output


def test_compare_refuses_other_categories_even_with_the_override(evals, tmp_path):
    path, data = evals

    def change(d):
        name = next(iter(d["per_class"]))
        d["per_class"][name + "x"] = d["per_class"].pop(name)

    other = _variant(tmp_path, data, "other", change)
    for flags in ((), ("--allow-mismatch",)):
        res = _compare(tmp_path, path, other, flags=flags)
        assert res.exit_code == 1 and "categories" in res.output, res.output


def test_compare_with_other_percentiles_gives_the_edge_check(mvd, preds, evals, tmp_path):
    pred, inst, _ = preds
    path, _ = evals
    res = _eval(["--dataset", "mvd", "--root", mvd.root, "--predictions", pred, "--instances", inst,
                 "--out", tmp_path / "b", "--percentiles", "0,50,100", "--workers", "1"])
    assert res.exit_code == 0, res.output
    res = _compare(tmp_path, path, tmp_path / "b" / "eval.json")
    assert res.exit_code == 1 and "bucket edges" in res.output and "broadcast" not in res.output, res.output
    res = _compare(tmp_path, path, tmp_path / "b" / "eval.json", flags=["--allow-mismatch"])
    assert res.exit_code == 0 and "AP by size" in res.output and "no AP by size" in res.output, res.output
    assert not (tmp_path / "cmp" / "compare_by_size.png").exists()


def test_format_compare_and_plot_check_edges_without_numpy_errors(evals):
    from isus.eval.plots import format_compare, plot_by_size

    _, data = evals
    a = EvalResult.from_dict(data)
    b = EvalResult.from_dict(data)
    b.buckets["edges"] = b.buckets["edges"][:3]
    for call in (lambda: format_compare([a, b], ["a", "b"]), lambda: plot_by_size([a, b], ["a", "b"], "/dev/null")):
        with pytest.raises(isus.IsusError, match="bucket edges"):
            call()


def test_old_eval_json_without_dataset_is_compared_with_a_note(evals, tmp_path):
    path, data = evals
    old = _variant(tmp_path, data, "old", lambda d: d.pop("dataset"))
    res = _compare(tmp_path, path, old)
    assert res.exit_code == 0, res.output
    assert "note:" in res.output and "unknown" in res.output


@pytest.mark.parametrize("where,value,field", [
    ("pq", 5.0, "pq"), ("pq", -0.1, "pq"), ("ap_box", "Infinity", "ap_box"), ("sq", "NaN", "sq"),
    ("images", 0, "images"), ("images", 2.5, "images"), ("per_class", 7.0, "per_class"),
    ("bucket_box", "NaN", "buckets.box"), ("bucket_edges", None, "buckets.edges"),
    ("ap", 1.5, "ap.box.ap50"), ("tp", -1, "tp"),
])
def test_impossible_metric_values_are_refused(evals, tmp_path, where, value, field):
    path, data = evals
    d = json.loads(json.dumps(data))
    if where == "per_class":
        next(iter(d["per_class"].values()))["pq"] = value
    elif where == "bucket_box":
        d["buckets"]["box"][1] = value
    elif where == "bucket_edges":
        d["buckets"]["edges"][2] = value
    elif where == "ap":
        d["ap"]["box"]["ap50"] = value
    elif where == "tp":
        next(iter(d["per_class"].values()))["tp"] = value
    else:
        d[where] = value
    text = json.dumps(d)
    if isinstance(value, str):  # the non-standard JSON literals
        text = text.replace(json.dumps(value), value)
    bad = tmp_path / "bad" / "eval.json"
    bad.parent.mkdir()
    bad.write_text(text)
    res = _compare(tmp_path, path, bad)
    assert res.exit_code == 1 and str(bad) in res.output and field in res.output, res.output
    assert "Traceback" not in res.output
    with pytest.raises(isus.IsusError, match=field.split(".")[0]):
        EvalResult.from_dict(json.loads(text))


def test_undefined_metrics_stay_null(evals):
    _, data = evals
    d = json.loads(json.dumps(data))
    d["pq_st"] = None
    assert math.isnan(EvalResult.from_dict(d).pq_st)
