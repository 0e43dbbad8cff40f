"""examples/train_panoptic.py checks what it can before the first step (issue 23, item 4): every
failure below is one line naming the option, and happens before anything is trained or written
(no output folder, no checkpoint, no log, no step printed). Data without instance annotations
trains the semantic head end to end and is evaluated with mIoU."""
from __future__ import annotations

import json
import shutil
import sys
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest

import isus
from isus.eval import PanopticEvaluator
from isus.types import make_segments

pytest.importorskip("torchvision")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from examples import train_panoptic  # noqa: E402
from examples.panoptic.evaluate import semantic_confusion, semantic_result  # noqa: E402

TINY = ["--crop", "64", "--batch-size", "1", "--workers", "0", "--warmup", "1", "--log-every", "1",
        "--rpn-pre-nms-top-n-train", "100", "--rpn-post-nms-top-n-train", "50", "--rpn-batch-size-per-image", "32",
        "--box-batch-size-per-image", "32", "--rpn-pre-nms-top-n-test", "100", "--rpn-post-nms-top-n-test", "50"]


def _drop_instances(root: Path, split: str) -> None:
    for version in ("v1.2", "v2.0"):
        for folder in ("instances", "panoptic"):
            shutil.rmtree(root / split / version / folder)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """``pan``: panoptic training split, semantic-only validation split; ``sem``: both splits
    semantic-only. Each with the index of its training split."""
    tmp = tmp_path_factory.mktemp("checks")
    out = {}
    for name, drop in (("pan", ["validation"]), ("sem", ["training", "validation"])):
        root = isus.synth.write_dataset(tmp / name, "mvd", [3, 2], size=(128, 96), seed=4,
                                        split=["training", "validation"])
        for split in drop:
            _drop_instances(root, split)
        ds = isus.open_dataset("mvd", root, split="training")
        isus.build_index(ds, workers=1).save(tmp / f"{name}.isusidx")
        out[name] = (root, tmp / f"{name}.isusidx")
    assert not isus.open_dataset("mvd", out["sem"][0], split="training").has_instances
    return out


def argv(data, which: str, out: Path, *extra: str) -> list[str]:
    root, index = data[which]
    return ["--dataset", "mvd", "--root", str(root), "--index", str(index), "--out", str(out), *TINY, *extra]


def refused(args: list[str], capsys) -> str:
    """The one-line message main() stops with; nothing trained (no step printed)."""
    with pytest.raises(SystemExit) as e:
        train_panoptic.main(args)
    msg = str(e.value.code)
    printed = capsys.readouterr().out
    assert "\n" not in msg.strip() and "Traceback" not in msg, msg
    assert not any(line.startswith(("step ", "training ")) for line in printed.splitlines()), printed
    return msg


def nothing_written(out: Path) -> None:
    assert not out.exists(), sorted(p.name for p in out.iterdir())


@pytest.mark.parametrize("extra,words", [
    (["--sampling", "isus"], ["--sampling isus", "no instance annotations", "--sampling cus"]),
    (["--box-loss", "cabb"], ["--box-loss cabb", "no instance annotations"]),
    (["--eval-range", "big=1000:inf"], ["--eval-range", "no instance annotations"]),
], ids=["isus", "cabb", "eval-range"])
def test_semantic_only_data_refuses_what_needs_instances(data, tmp_path, capsys, extra, words):
    out = tmp_path / "run"
    msg = refused(argv(data, "sem", out, "--steps", "1", *extra), capsys)
    assert all(w in msg for w in words), msg
    nothing_written(out)


def test_missing_validation_split_is_refused_before_training(data, tmp_path, capsys):
    out = tmp_path / "run"
    msg = refused(argv(data, "pan", out, "--steps", "1", "--val-split", "nosuch"), capsys)
    assert msg.startswith("--val-split nosuch:") and "--no-eval" in msg, msg
    nothing_written(out)


def test_validation_split_without_panoptic_ground_truth_is_refused(data, tmp_path, capsys):
    """The training split has instances, the default validation split only semantic labels."""
    out = tmp_path / "run"
    msg = refused(argv(data, "pan", out, "--steps", "1"), capsys)
    assert msg.startswith("--val-split validation:") and "no panoptic ground truth" in msg and "--no-eval" in msg, msg
    nothing_written(out)


def test_output_folder_that_cannot_be_made_is_refused(data, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    out = blocker / "run"
    msg = refused(argv(data, "pan", out, "--steps", "1", "--no-eval"), capsys)
    assert msg.startswith(f"--out {out}: cannot write there"), msg


def test_too_little_disk_space_for_checkpoints_is_refused(data, tmp_path, capsys, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(train_panoptic.shutil, "disk_usage", lambda path: usage(2**40, 2**40 - 2**20, 2**20))
    out = tmp_path / "deep" / "run"
    msg = refused(argv(data, "pan", out, "--steps", "1", "--no-eval"), capsys)
    assert msg.startswith(f"--out {out}: 0.00 GiB free") and "checkpoints" in msg, msg
    assert not (tmp_path / "deep").exists()  # the folders made for the check are gone again


def test_semantic_only_data_trains_the_semantic_head_and_reports_miou(data, tmp_path, capsys):
    out = tmp_path / "run"
    res = train_panoptic.main(argv(data, "sem", out, "--steps", "2", "--eval-images", "2"))
    printed = capsys.readouterr().out
    assert "has no instance annotations (semantic labels only): the semantic head alone is trained" in printed
    assert "mIoU" in printed
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2]
    assert all(not any(k.startswith(("loss_box", "loss_objectness", "loss_rpn", "loss_classifier", "loss_mask"))
                       for k in r) for r in log)  # the detector is neither trained nor run
    assert all(r["loss"] == r["loss_semantic"] for r in log)
    saved = json.loads((out / "eval.json").read_text())
    assert saved["semantic_only"] is True and saved["images"] == 2 and saved["eval_split"] == "validation"
    assert 0 <= saved["miou"] <= 1 and "pq" not in saved and saved["miou"] == res["miou"]
    # the disk check's estimate of a checkpoint is not below the real one (here above it: the
    # detector's parameters get no gradient, so no momentum buffer, on semantic-only data)
    from examples.panoptic.model import build_panoptic_fpn

    cats = isus.open_dataset("mvd", data["sem"][0]).categories
    model = build_panoptic_fpn(sum(c.isthing for c in cats), len(cats), norm="group")
    real = (out / "checkpoint.pt").stat().st_size
    assert real <= train_panoptic.checkpoint_bytes(model) <= 2 * real


def test_semantic_miou_is_isus_evals():
    """The example's semantic-only mIoU equals isus.eval's on the same maps (each class one segment)."""
    rng = np.random.default_rng(0)
    cats = [isus.Category(id=10 + k, name=f"c{k}", isthing=k < 2, color=(k, k, k)) for k in range(5)]
    confusion = np.zeros((3, 5), np.int64)
    ev = PanopticEvaluator(cats)
    for _ in range(3):
        gt = rng.integers(-1, 4, (20, 30))  # class 4 never in the ground truth; -1 void
        pred = rng.integers(0, 5, (20, 30))
        confusion += semantic_confusion(gt, pred, 5)

        def panoptic(classes):
            ids = np.where(classes >= 0, classes + 1, 0).astype(np.int32)
            present = np.unique(ids[ids > 0])
            return isus.Panoptic(ids, make_segments(present, np.array([cats[k - 1].id for k in present]),
                                                    np.zeros(len(present), bool)))

        ev.add(panoptic(gt), panoptic(pred))
    ours = semantic_result(confusion, cats, 3)
    theirs = ev.result()
    assert ours["miou"] == pytest.approx(theirs.miou, rel=1e-12)
    for c in cats:
        assert ours["per_class"][c.name]["iou"] == pytest.approx(theirs.per_class[c.name]["iou"], rel=1e-12)
