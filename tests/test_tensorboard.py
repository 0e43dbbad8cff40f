"""examples/panoptic/tensorboard.py (issue 26, part 4): the training scalars, the evaluation
metrics with their size buckets and the crop previews are written where TensorBoard reads them
(read back with tensorboard's own event reader); without the tensorboard package a one-line note
and nothing else; --no-tensorboard writes nothing; one tiny end-to-end run of the example."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

import isus

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from examples.panoptic import tensorboard as tbmod  # noqa: E402


def _events(log_dir: Path):
    ea_mod = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    ea = ea_mod.EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0})
    ea.Reload()
    return ea


RECORD = {"step": 3, "lr": 0.01, "loss": 2.5, "loss_classifier": 0.5, "loss_box_reg": 0.25, "loss_semantic": 1.75,
          "samples_per_s": 12.0, "data_wait_share": 0.1, "steps_per_s": 6.0, "eta_s": 4.0,
          "gpu_peak_gib": 1.5, "gpu_reserved_gib": 2.0}

EVAL = {"pq": 0.4, "sq": 0.7, "rq": 0.5, "pq_th": 0.3, "pq_st": None, "miou": 0.6, "ap_box": 0.2, "ap_mask": None,
        "ap": {"box": {"ap": 0.2, "ap50": 0.4, "ap_small": float("nan")}, "mask": None},
        "buckets": {"percentiles": [0, 50, 100], "edges": [1.0, 100.0, 900.0], "instances": [3, 4],
                    "box": [0.1, 0.3], "mask": None,
                    "extent": [{"n": 2, "width_ratio_median": 0.9}, {"n": 3, "width_ratio_median": 1.1}]},
        "by_size": {"percentiles": [0, 50, 100], "edges": [1.0, 100.0, 900.0], "segments": [5, 6],
                    "tp": [1, 2], "pq": [0.25, 0.5], "pq_th": [0.2, None]},
        "ranges": {"big": {"area": [500, None], "instances": 2, "box": {"ap": 0.3}, "mask": None,
                           "matches": [[0, 1, 1.0, 1.0, 0.9]]}},
        "per_class": {"car": {"pq": 0.1}}, "images": 2, "steps": 3, "params_in_sync": True, "eval_split": "validation"}


def test_train_scalars_name_each_loss_term_and_drop_step_and_eta():
    tags = tbmod.train_scalars(RECORD)
    assert tags == {"loss/total": 2.5, "loss/classifier": 0.5, "loss/box_reg": 0.25, "loss/semantic": 1.75,
                    "train/lr": 0.01, "train/samples_per_s": 12.0, "train/data_wait_share": 0.1,
                    "train/steps_per_s": 6.0, "gpu/peak_gib": 1.5, "gpu/reserved_gib": 2.0}


def test_flatten_eval_keeps_defined_metrics_and_names_buckets():
    tags = tbmod.flatten_eval(EVAL)
    assert tags["eval/pq"] == 0.4 and tags["eval/miou"] == 0.6 and tags["eval/images"] == 2
    assert "eval/pq_st" not in tags and "eval/ap_mask" not in tags  # undefined: left out
    assert tags["eval/ap/box/ap50"] == 0.4 and "eval/ap/box/ap_small" not in tags  # NaN left out
    assert tags["eval_buckets/box/1_p0-p50"] == 0.1 and tags["eval_buckets/box/2_p50-p100"] == 0.3
    assert tags["eval_buckets/instances/2_p50-p100"] == 4
    assert tags["eval_buckets/extent/width_ratio_median/2_p50-p100"] == 1.1
    assert tags["eval_by_size/pq/1_p0-p50"] == 0.25 and tags["eval_by_size/tp/2_p50-p100"] == 2
    assert tags["eval_by_size/pq_th/1_p0-p50"] == 0.2 and "eval_by_size/pq_th/2_p50-p100" not in tags
    assert tags["eval_ranges/big/box/ap"] == 0.3 and tags["eval_ranges/big/instances"] == 2
    assert not any(t.startswith(("eval/steps", "eval/params", "eval/per_class")) or "matches" in t for t in tags)
    # edges given in pixels (no percentiles): buckets named by their areas
    user = {"by_size": {"percentiles": None, "edges": [0.0, 1024.0, float("inf")], "pq": [0.1, 0.2]}}
    assert tbmod.flatten_eval(user) == {"eval_by_size/pq/1_area_0-1024": 0.1, "eval_by_size/pq/2_area_1024-inf": 0.2}


def _batch():
    images = [torch.rand(3, 32, 40), torch.rand(3, 24, 32)]
    masks = torch.zeros(1, 32, 40, dtype=torch.uint8)
    masks[0, 4:12, 5:20] = 1
    targets = [{"boxes": torch.tensor([[5.0, 4.0, 20.0, 12.0]]), "masks": masks,
                "truncated": torch.tensor([[False, True, False, False]])},
               {"boxes": torch.zeros(0, 4), "masks": torch.zeros(0, 24, 32, dtype=torch.uint8),
                "truncated": torch.zeros(0, 4, dtype=torch.bool)}]
    return images, targets


def test_writer_output_reads_back_with_tensorboards_event_reader(tmp_path):
    pytest.importorskip("tensorboard")
    pytest.importorskip("torchvision")
    lines: list[str] = []
    tb = tbmod.TensorBoard(tmp_path, print_fn=lines.append)
    assert tb and lines == [f"tensorboard: {tmp_path / 'tensorboard'} (open it with: tensorboard --logdir {tmp_path})"]
    tb.scalars(1, {**RECORD, "step": 1, "loss": 3.0})
    tb.scalars(3, RECORD)
    tb.crops(1, *_batch())
    tb.evaluation(3, EVAL)
    tb.close()
    ea = _events(tmp_path / "tensorboard")
    scalars = set(ea.Tags()["scalars"])
    assert {"loss/total", "loss/classifier", "loss/box_reg", "train/lr", "train/samples_per_s",
            "train/data_wait_share", "gpu/peak_gib", "eval/pq", "eval_by_size/pq/1_p0-p50",
            "eval_buckets/box/2_p50-p100"} <= scalars
    assert [(e.step, e.value) for e in ea.Scalars("loss/total")] == [(1, 3.0), (3, 2.5)]
    assert [(e.step, round(e.value, 6)) for e in ea.Scalars("eval_by_size/pq/2_p50-p100")] == [(3, 0.5)]
    assert ea.Tags()["images"] == ["crops"]
    img = ea.Images("crops")[0]
    assert img.step == 1 and img.width >= 40 + 32 and img.height >= 32
    # the grid: both crops side by side, the first with its mask and a red (truncated) box drawn
    grid = tbmod.crop_grid(*_batch())
    assert grid.dtype == torch.uint8 and grid.shape[0] == 3 and grid.shape[1] == 32 + 4
    assert (grid[0] == 255).logical_and(grid[1] == 0).any()  # red


def test_disabled_or_other_ranks_write_nothing(tmp_path):
    lines: list[str] = []
    for tb in (tbmod.TensorBoard(tmp_path, enabled=False, print_fn=lines.append),
               tbmod.TensorBoard(tmp_path, rank=1, print_fn=lines.append)):
        assert not tb
        tb.scalars(1, RECORD)
        tb.crops(1, *_batch())
        tb.evaluation(1, EVAL)
        tb.text("args", "x")
        tb.close()
    assert lines == [] and not (tmp_path / "tensorboard").exists()


def _no_tensorboard(monkeypatch):
    """As if the tensorboard package were not installed: importing it (and torch's wrapper) fails."""
    for name in list(sys.modules):
        if name == "tensorboard" or name.startswith(("tensorboard.", "torch.utils.tensorboard")):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)


def test_without_tensorboard_one_note_and_nothing_breaks(tmp_path, monkeypatch):
    _no_tensorboard(monkeypatch)
    lines: list[str] = []
    tb = tbmod.TensorBoard(tmp_path, print_fn=lines.append)
    assert not tb and lines == [tbmod.NOTE]
    tb.scalars(1, RECORD)
    tb.evaluation(1, EVAL)
    tb.close()
    assert lines == [tbmod.NOTE] and not (tmp_path / "tensorboard").exists()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tb")
    root = isus.synth.write_dataset(tmp / "mvd", "mvd", 3, size=(128, 96), seed=3)
    isus.build_index(isus.open_dataset("mvd", root), workers=1).save(tmp / "mvd.isusidx")
    return tmp, root


TINY = ["--crop", "64", "--batch-size", "1", "--workers", "0", "--warmup", "1", "--log-every", "1", "--steps", "2",
        "--rpn-pre-nms-top-n-train", "100", "--rpn-post-nms-top-n-train", "50", "--rpn-batch-size-per-image", "32",
        "--box-batch-size-per-image", "32", "--rpn-pre-nms-top-n-test", "100", "--rpn-post-nms-top-n-test", "50",
        "--eval-images", "1"]


def test_example_writes_scalars_crops_and_eval_metrics(tiny, capsys):
    pytest.importorskip("torchvision")
    pytest.importorskip("tensorboard")
    from examples import train_panoptic

    tmp, root = tiny
    out = tmp / "run"
    res = train_panoptic.main(["--dataset", "mvd", "--root", str(root), "--index", str(tmp / "mvd.isusidx"),
                               "--out", str(out), *TINY])
    printed = capsys.readouterr().out
    assert f"tensorboard: {out / 'tensorboard'}" in printed and tbmod.NOTE not in printed
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2] and json.loads((out / "eval.json").read_text())["steps"] == 2
    ea = _events(out / "tensorboard")
    scalars = set(ea.Tags()["scalars"])
    terms = {f"loss/{k[5:]}" for k in log[0] if k.startswith("loss_")}
    assert terms and terms | {"loss/total", "train/lr", "train/samples_per_s", "train/data_wait_share"} <= scalars
    assert [e.step for e in ea.Scalars("loss/total")] == [1, 2]
    assert [e.value for e in ea.Scalars("train/lr")] == pytest.approx([r["lr"] for r in log])
    assert "eval/pq" in scalars and ea.Scalars("eval/pq")[0].step == 2
    assert ea.Scalars("eval/pq")[0].value == pytest.approx(res["pq"])
    # the size buckets of AP (buckets) and of PQ/SQ/RQ/PC (by_size), one tag per bucket
    n = len(res["buckets"]["edges"]) - 1
    assert n >= 1 and len([t for t in scalars if t.startswith("eval_buckets/box/")]) == n
    assert len([t for t in scalars if t.startswith("eval_by_size/pq/")]) == n
    assert {"crops", "eval/eval_by_size"} <= set(ea.Tags()["images"])


def test_example_no_tensorboard_and_missing_package(tiny, capsys, monkeypatch):
    pytest.importorskip("torchvision")
    from examples import train_panoptic

    tmp, root = tiny
    base = ["--dataset", "mvd", "--root", str(root), "--index", str(tmp / "mvd.isusidx"), *TINY[:-2],
            "--steps", "1", "--no-eval"]
    off = tmp / "off"
    train_panoptic.main([*base, "--out", str(off), "--no-tensorboard"])
    printed = capsys.readouterr().out
    assert "tensorboard" not in printed and not (off / "tensorboard").exists() and (off / "log.jsonl").exists()
    _no_tensorboard(monkeypatch)
    missing = tmp / "missing"
    train_panoptic.main([*base, "--out", str(missing)])
    printed = capsys.readouterr().out
    assert printed.count(tbmod.NOTE) == 1 and not (missing / "tensorboard").exists()
    assert (missing / "log.jsonl").exists() and (missing / "eval.json").exists()
