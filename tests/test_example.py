"""examples/train_panoptic.py end to end under torchrun (2 processes, gloo) on synthetic data."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

import isus

pytest.importorskip("torchvision")
pytest.importorskip("torchmetrics")
SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "train_panoptic.py"
SMALL = ["--backbone", "resnet18", "--norm", "group", "--crop", "128", "--batch-size", "2", "--workers", "0",
         "--rpn-pre-nms-top-n-train", "200", "--rpn-post-nms-top-n-train", "100", "--rpn-pre-nms-top-n-test", "200",
         "--rpn-post-nms-top-n-test", "100", "--rpn-batch-size-per-image", "64", "--box-batch-size-per-image", "64",
         "--log-every", "1", "--warmup", "2", "--lr", "0.01"]


def torchrun(*args, nproc=2):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", str(SCRIPT), *args]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, (res.stdout[-3000:], res.stderr[-5000:])
    return res.stdout


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("train")
    root = isus.synth.write_dataset(tmp / "mvd", "mvd", 6, size=(256, 192), seed=2)
    ds = isus.open_dataset("mvd", root)
    isus.build_index(ds, workers=1).save(tmp / "mvd.isusidx")
    return tmp, root


def test_torchrun_cabb_and_smooth_l1_checkpoint_resume_eval(data):
    tmp, root = data
    common = ["--dataset", "mvd", "--root", str(root), "--index", str(tmp / "mvd.isusidx"), *SMALL]
    # CABB, ISUS: 2 steps, checkpoint, then resume to 4 and evaluate
    out = tmp / "cabb"
    torchrun(*common, "--out", str(out), "--steps", "2", "--checkpoint-every", "2", "--no-eval")
    first = [json.loads(l) for l in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in first] == [1, 2] and (out / "checkpoint.pt").exists()
    torchrun(*common, "--out", str(out), "--steps", "4", "--checkpoint-every", "2", "--resume",
             "--eval-images", "2")
    log = [json.loads(l) for l in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    assert all(math.isfinite(r["loss"]) and r["loss_box_reg"] >= 0 for r in log)
    result = json.loads((out / "eval.json").read_text())
    assert result["steps"] == 4 and result["params_in_sync"] is True
    assert math.isfinite(result["PQ"]) and 0 <= result["PQ"] <= 1 and result["images"] == 2
    # smooth-L1 steps
    out2 = tmp / "sl1"
    torchrun(*common, "--out", str(out2), "--steps", "2", "--box-loss", "smooth_l1", "--no-eval")
    assert json.loads((out2 / "eval.json").read_text())["params_in_sync"] is True
