"""``isus predict`` (issue 23, item 5): a checkpoint of the example on whole images, written in the
files ``isus eval`` reads; the ground truth through the same writer scores 100; bad checkpoints and
a missing torchvision are one-line errors."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import isus
from isus_cli.main import cli

pytest.importorskip("torchvision")

ROOT = Path(__file__).resolve().parents[1]
HINT = 'pip install -e ".[examples]"'
sys.path.insert(0, str(ROOT))


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def make_checkpoint(path: Path, ds: isus.PanopticDataset, *extra: str, categories: bool = True) -> Path:
    """A checkpoint in train_panoptic.py's format: its parsed args and a model built as it builds
    one (untrained: only the format and the plumbing matter here)."""
    import torch

    from examples.panoptic.data import LabelMap
    from examples.panoptic.model import build_panoptic_fpn
    from examples.train_panoptic import checkpoint_categories, parse_args, plain_args

    args = parse_args(["--dataset", ds.name, "--root", str(ds.root), "--index", "i", "--out", str(path.parent),
                       "--rpn-pre-nms-top-n-test", "100", "--rpn-post-nms-top-n-test", "50", *extra])
    labels = LabelMap.from_dataset(ds)
    torch.manual_seed(0)
    model = build_panoptic_fpn(len(labels.thing_train_ids), labels.num_classes, backbone=args.backbone, norm="group",
                               length_scale=args.length_scale)
    state = {"model": model.state_dict(), "optimizer": {}, "scheduler": {}, "scaler": {}, "step": 2, "sampler": {},
             "args": plain_args(args), "world": 1}
    if categories:
        state["categories"] = checkpoint_categories(ds)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("predict")
    root = isus.synth.write_dataset(tmp / "mvd", "mvd", [2, 3], size=(160, 120), seed=4,
                                    split=["training", "validation"])
    val = isus.open_dataset("mvd", root, split="validation")
    ckpt = make_checkpoint(tmp / "run" / "checkpoint.pt", val)
    return tmp, root, val, ckpt


def test_predictions_read_back_by_isus_eval(setup, tmp_path):
    tmp, root, val, _ = setup
    out = tmp_path / "pred"
    res = invoke("predict", tmp / "run", "--dataset", "mvd", "--root", root, "--split", "validation", "--out", out,
                 "--batch-size", "2", "--device", "cpu")
    assert res.exit_code == 0, res.output
    assert "predicting 3 images of mvd validation" in res.output and "on cpu" in res.output
    assert "predicting: 3/3 images (100%)" in res.stderr  # progress lines when stderr is not a terminal
    data = json.loads((out / "panoptic.json").read_text())
    ids = [val.image_info(i).image_id for i in range(len(val))]
    assert [a["image_id"] for a in data["annotations"]] == ids
    assert sorted(p.name for p in (out / "panoptic").iterdir()) == sorted(f"{i}.png" for i in ids)
    assert len(data["categories"]) == len(val.categories)
    res = invoke("eval", "--dataset", "mvd", "--root", root, "--split", "validation", "--predictions",
                 out / "panoptic.json", "--instances", out / "instances.json", "--out", tmp_path / "ev", "--workers", "1")
    assert res.exit_code == 0, res.output
    ev = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert ev["images"] == 3 and 0 <= ev["pq"] <= 1
    # the folder written is what `isus eval --predictions DIR` finds too
    assert isus.eval.PanopticPredictions(out).json_path == out / "panoptic.json"
    # again: refused without --overwrite, replaced with it
    res = invoke("predict", tmp / "run", "--dataset", "mvd", "--root", root, "--split", "validation", "--out", out)
    assert res.exit_code == 1 and "pass --overwrite" in res.output
    res = invoke("predict", tmp / "run" / "checkpoint.pt", "--dataset", "mvd", "--root", root, "--split",
                 "validation", "--out", out, "--overwrite", "--max-images", "1")
    assert res.exit_code == 0, res.output
    assert len(list((out / "panoptic").iterdir())) == 1  # the earlier run's PNGs are gone
    assert "--only-predicted" in res.output


def test_predictions_equal_the_examples_own_evaluation(setup, tmp_path):
    """The command's files hold what examples/panoptic/evaluate.predict returns for each image."""
    import torch

    from examples.panoptic.evaluate import predict
    from examples.panoptic.predict import dataset_items, load_predictor, predict_to_files

    tmp, _, val, ckpt = setup
    p = load_predictor(ckpt, val.categories, device="cpu")
    predict_to_files(p, dataset_items(val, 2), tmp_path / "pred", batch_size=2)
    written = isus.eval.PanopticPredictions(tmp_path / "pred")
    dets = isus.eval.read_instances(tmp_path / "pred" / "instances.json")
    torch.manual_seed(0)
    for i in range(2):
        pan, det = predict(p.model, val.load_image(i), p.labels, val.categories, shortest_side=None,
                           device=torch.device("cpu"))
        key = str(val.image_info(i).image_id)
        got = written.load(key)
        assert np.array_equal(got.ids, pan.ids)
        assert got.segments["category_id"].tolist() == pan.segments["category_id"].tolist()
        assert len(dets.get(key, det).scores) == len(det.scores)


def _gt_detections(ds, i):
    from isus.eval import Detections

    gt = ds.load_panoptic(i)
    things = [s for s in gt.segments if ds.category(int(s["category_id"])).isthing and not s["iscrowd"]]
    masks = np.stack([gt.ids == s["id"] for s in things]) if things else np.zeros((0, *gt.ids.shape), bool)
    boxes = [[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] for ys, xs in (np.nonzero(m) for m in masks)]
    return gt, Detections(np.array(boxes, float).reshape(-1, 4), np.linspace(1, 0.5, len(things)),
                          np.array([s["category_id"] for s in things], np.int64), masks)


class GroundTruth:
    """Stands in for the model in predict_to_files: returns each image's ground truth."""

    def __init__(self, ds):
        self.ds, self.categories, self.next = ds, ds.categories, 0
        self.batches: list[int] = []

    def __call__(self, images):
        self.batches.append(len(images))
        out = []
        for img in images:
            gt, det = _gt_detections(self.ds, self.next)
            assert img.shape[:2] == gt.ids.shape
            out.append((gt, det))
            self.next += 1
        return out


def test_ground_truth_through_the_same_writer_scores_100(setup, tmp_path):
    from examples.panoptic.predict import dataset_items, predict_to_files

    tmp, root, val, _ = setup
    fake = GroundTruth(val)
    predict_to_files(fake, dataset_items(val), tmp_path / "gt", batch_size=2)
    assert fake.batches == [2, 1]
    res = invoke("eval", "--dataset", "mvd", "--root", root, "--split", "validation", "--predictions",
                 tmp_path / "gt" / "panoptic.json", "--instances", tmp_path / "gt" / "instances.json", "--out",
                 tmp_path / "ev", "--workers", "1")
    assert res.exit_code == 0, res.output
    ev = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert ev["pq"] == 1.0 and ev["sq"] == 1.0 and ev["rq"] == 1.0 and ev["miou"] == 1.0
    assert ev["ap_box"] == pytest.approx(1.0) and ev["ap_mask"] == pytest.approx(1.0)


def test_to_panoptic_of_the_ground_truth_scores_100(setup):
    """The example's conversion of a fused (class, instance) map keeps every segment: the ground
    truth passed through it as a fusion output scores PQ 100 (crowd regions aside)."""
    from examples.panoptic.data import LabelMap
    from examples.panoptic.evaluate import to_panoptic

    _, _, val, _ = setup
    labels = LabelMap.from_dataset(val)
    pos = {c.id: k for k, c in enumerate(val.categories)}
    ev = isus.eval.PanopticEvaluator(val.categories)
    for i in range(len(val)):
        gt = val.load_panoptic(i)
        cat = np.full(gt.ids.shape, -1, np.int64)
        inst = np.zeros(gt.ids.shape, np.int64)
        n = 0
        for s in gt.segments:
            m = gt.ids == s["id"]
            cat[m] = pos[int(s["category_id"])]
            if val.category(int(s["category_id"])).isthing:
                n += 1
                inst[m] = n
        ev.add(gt, to_panoptic(cat, inst, labels, val.categories))
    assert ev.result().pq == 1.0


def test_image_folder_at_the_training_s0(setup, tmp_path):
    """Images of two sizes, batched together: each is predicted at s0 (the checkpoint's
    --shortest-side) and written at its own size; categories come from the checkpoint."""
    from PIL import Image

    tmp, _, val, _ = setup
    ckpt = make_checkpoint(tmp_path / "run" / "checkpoint.pt", val, "--shortest-side", "96")
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(val.image_path(0), folder / "a.jpg")
    Image.fromarray(val.load_image(1)[:100, :140]).save(folder / "b.png")
    (folder / "notes.txt").write_text("not an image")
    res = invoke("predict", ckpt, "--image-folder", folder, "--out", tmp_path / "out", "--batch-size", "2")
    assert res.exit_code == 0, res.output
    assert "predicting 2 images" in res.output and "shortest side 96" in res.output
    preds = isus.eval.PanopticPredictions(tmp_path / "out")
    assert sorted(preds.image_ids()) == ["a", "b"]
    assert preds.load("a").ids.shape == (120, 160) and preds.load("b").ids.shape == (100, 140)
    # a file that is not an image: one line naming it
    (folder / "c.jpg").write_bytes(b"not a jpeg")
    res = invoke("predict", ckpt, "--image-folder", folder, "--out", tmp_path / "o3")
    assert res.exit_code == 1 and "c.jpg: not a readable image" in res.output and "Traceback" not in res.output
    # without recorded categories, a folder cannot be labelled
    old = make_checkpoint(tmp_path / "old" / "checkpoint.pt", val, categories=False)
    res = invoke("predict", old, "--image-folder", folder, "--out", tmp_path / "o2")
    assert res.exit_code == 1 and "does not record its categories" in res.output


def test_checkpoint_errors_are_one_line(setup, tmp_path):
    import torch

    tmp, root, val, ckpt = setup
    base = ["--dataset", "mvd", "--root", root, "--split", "validation", "--out", tmp_path / "o"]

    def fails(path, *args):
        res = invoke("predict", path, *(args or base))
        assert res.exit_code == 1 and "Traceback" not in res.output, res.output
        assert res.output.strip().count("\n") == 0, res.output
        return res.output

    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    assert "is not a checkpoint of examples/train_panoptic.py" in fails(tmp_path / "foreign.pt")
    (tmp_path / "trunc.pt").write_bytes(ckpt.read_bytes()[:200])
    assert "is not a readable checkpoint" in fails(tmp_path / "trunc.pt")
    (tmp_path / "empty").mkdir()
    assert "no checkpoint there" in fails(tmp_path / "empty")
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    state = torch.load(ckpt, weights_only=True)
    torch.save({**state, "args": {**state["args"], "x": Evil()}}, tmp_path / "evil.pt")
    assert "holds more than tensors and plain data (refused" in fails(tmp_path / "evil.pt")
    assert not marker.exists()
    # another dataset's categories
    cs = isus.synth.write_dataset(tmp_path / "cs", "cityscapes", 1, size=(64, 48))
    out = fails(ckpt, "--dataset", "cityscapes", "--root", cs, "--out", tmp_path / "o")
    assert "was trained on other categories" in out
    nocats = make_checkpoint(tmp_path / "nocats" / "checkpoint.pt", val, categories=False)
    out = fails(nocats, "--dataset", "cityscapes", "--root", cs, "--out", tmp_path / "o")
    assert "was trained on 12 categories" in out and "(6 thing)" in out
    # usage
    res = invoke("predict", ckpt, "--out", tmp_path / "o")
    assert res.exit_code == 2 and "--dataset/--root/--split or --image-folder" in res.output
    res = invoke("predict", ckpt, *base, "--device", "tpu")
    assert res.exit_code == 2 and "expected cpu, cuda or cuda:N" in res.output


def test_missing_torchvision_is_one_line_naming_the_install(setup, tmp_path):
    tmp, root, _, ckpt = setup
    shim = tmp_path / "shim" / "torchvision"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'torchvision'\", name='torchvision')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(shim.parent), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, "-m", "isus_cli.main", "predict", str(ckpt), "--dataset", "mvd", "--root",
                          str(root), "--split", "validation", "--out", str(tmp_path / "o")], capture_output=True,
                         text=True, env=env, cwd=tmp_path, timeout=300)
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert res.stderr.strip().count("\n") == 0 and HINT in res.stderr and "torchvision" in res.stderr, res.stderr
    assert not (tmp_path / "o").exists()
