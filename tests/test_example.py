"""examples/train_panoptic.py end to end under torchrun (2 processes, gloo) on synthetic data, and
torchmetrics' PanopticQuality against isus.eval on the same predictions."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import isus
from isus.eval import Detections, EvalResult, PanopticEvaluator, PanopticPredictions, read_instances
from isus.types import make_segments

pytest.importorskip("torchvision")
SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "train_panoptic.py"
SMALL = ["--backbone", "resnet18", "--norm", "group", "--crop", "128", "--batch-size", "2", "--workers", "0",
         "--rpn-pre-nms-top-n-train", "200", "--rpn-post-nms-top-n-train", "100", "--rpn-pre-nms-top-n-test", "200",
         "--rpn-post-nms-top-n-test", "100", "--rpn-batch-size-per-image", "64", "--box-batch-size-per-image", "64",
         "--log-every", "1", "--warmup", "2", "--lr", "0.01"]


def torchrun(*args, nproc=2):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", str(SCRIPT), *args]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
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
    # CABB, ISUS (not the defaults): 2 steps, checkpoint, then resume to 4 and evaluate
    out = tmp / "cabb"
    paper = ["--sampling", "isus", "--box-loss", "cabb"]
    torchrun(*common, *paper, "--out", str(out), "--steps", "2", "--checkpoint-every", "2", "--no-eval")
    first = [json.loads(l) for l in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in first] == [1, 2] and (out / "checkpoint.pt").exists()
    stdout = torchrun(*common, *paper, "--out", str(out), "--steps", "4", "--checkpoint-every", "2", "--resume",
                      "--eval-images", "2")
    steps = [line for line in stdout.splitlines() if line.startswith("step ")]
    assert [s.split()[1] for s in steps] == ["3/4", "4/4"] and all(" eta=" in s for s in steps), stdout
    assert "(percent; eval.json holds fractions)" in stdout  # printed in percent, as the docs quote
    log = [json.loads(l) for l in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    assert all(math.isfinite(r["loss"]) and r["loss_box_reg"] >= 0 for r in log)
    result = json.loads((out / "eval.json").read_text())
    assert result["steps"] == 4 and result["params_in_sync"] is True
    assert math.isfinite(result["pq"]) and 0 <= result["pq"] <= 1 and result["images"] == 2
    res = EvalResult.from_dict(result)  # eval.json is isus.eval's result (fractions) plus the run's keys
    assert res.ap_box is not None and res.buckets["edges"]  # scored instances were evaluated
    # the written files (COCO panoptic JSON + PNGs, COCO results JSON) give the same metrics
    assert (out / "predictions" / "panoptic.json").exists() and (out / "eval_by_size.png").exists()
    preds = PanopticPredictions(out / result["predictions"])
    dets = read_instances(out / result["instances"])
    ds = isus.open_dataset("mvd", root)
    ev = PanopticEvaluator(ds.categories)
    empty = Detections(np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64), [])
    for i in range(2):  # the two images rank 0 and rank 1 evaluated
        image_id = ds.image_info(i).image_id
        ev.add(ds.load_panoptic(i), preds.load(image_id), dets.get(str(image_id), empty))
    again = ev.result().to_dict()
    assert len(preds) == 2
    for k in ("pq", "sq", "rq", "pq_th", "pq_st", "pq_dagger", "pc", "miou", "ap_box", "ap_mask", "buckets"):
        assert again[k] == result[k], k  # lossless: PNG ids, float repr in JSON, the same RLEs
    # smooth-L1 steps
    out2 = tmp / "sl1"
    torchrun(*common, "--out", str(out2), "--steps", "2", "--box-loss", "smooth_l1", "--no-eval")
    assert json.loads((out2 / "eval.json").read_text())["params_in_sync"] is True


def _void_free_prediction(gt: isus.Panoptic, categories, rng: np.random.Generator) -> isus.Panoptic:
    """A prediction derived from ``gt`` by perturbation: instances shifted, relabelled, dropped, an
    extra false-positive instance, a block of stuff relabelled, and every void or dropped pixel
    given to a stuff class (so the prediction has no void). One segment per stuff class."""
    thing_cats = [c.id for c in categories if c.isthing]
    stuff_cats = [c.id for c in categories if not c.isthing]
    h, w = gt.ids.shape
    cat = gt.semantic(void=-1).astype(np.int64)
    out_cat, out_inst = np.full_like(cat, -1), np.zeros_like(cat)
    stuff = ~np.isin(cat, thing_cats) & (cat >= 0)
    out_cat[stuff] = cat[stuff]
    y0, x0 = rng.integers(0, h // 2), rng.integers(0, w // 2)  # a block of stuff relabelled
    block = np.zeros_like(stuff)
    block[y0:y0 + h // 3, x0:x0 + w // 3] = True
    out_cat[block & stuff] = rng.choice(stuff_cats)
    for s in gt.segments:
        if s["category_id"] not in thing_cats:
            continue
        m = gt.ids == s["id"]
        r = rng.random()
        if r < 0.15:
            continue  # dropped: a false negative
        c = int(s["category_id"]) if r < 0.85 else int(rng.choice(thing_cats))  # relabelled: FN + FP
        dy, dx = rng.integers(-4, 5, size=2)
        m = np.roll(m, (dy, dx), axis=(0, 1))  # shifted: IoU from 1 down to below 0.5
        out_cat[m], out_inst[m] = c, s["id"]
    fy, fx = rng.integers(0, h - 12), rng.integers(0, w - 12)  # a false positive
    out_cat[fy:fy + 12, fx:fx + 12], out_inst[fy:fy + 12, fx:fx + 12] = thing_cats[0], 10_000
    out_cat[out_cat < 0] = rng.choice(stuff_cats)  # no void in the prediction
    # segment ids: the instance number for things, 20000 + category for stuff (one segment each)
    ids = np.where(out_inst > 0, out_inst, 20_000 + out_cat)
    seg_ids, first = np.unique(ids, return_index=True)
    return isus.Panoptic(ids.astype(np.int32), make_segments(seg_ids, out_cat.ravel()[first], np.zeros(len(seg_ids))))


def _pairs(pan: isus.Panoptic, thing_cats) -> np.ndarray:
    """torchmetrics' (H, W, 2) (category, instance) input; void is category -1."""
    cat = pan.semantic(void=-1).astype(np.int64)
    return np.stack([cat, np.where(np.isin(cat, thing_cats), pan.ids, 0)], axis=-1)


def test_torchmetrics_panoptic_quality_agrees_with_isus_eval(synth_root):
    """torchmetrics' ``PanopticQuality`` and ``isus.eval`` give the same PQ, SQ, RQ (overall and per
    class) on perturbed predictions of synthetic images.

    The two agree wherever their semantics coincide, which these inputs are built for:

    - no crowd: torchmetrics has no ``iscrowd`` (panopticapi, and isus.eval, ignore unmatched
      predictions lying mostly on crowd of their class); crowd segments are made void here;
    - no void in the prediction: torchmetrics also subtracts the *predicted* void inside a
      ground-truth segment from the IoU's union and ignores ground-truth segments that are mostly
      predicted void, which panopticapi does not (the example's fusion does leave void, so its
      torchmetrics PQ was not panopticapi's);
    - one segment per stuff class: torchmetrics merges all instances of a stuff class.

    Void in the ground truth is treated alike (ignored in the union; an unmatched prediction
    mostly on it is not a false positive). Both average over the categories with TP + FP + FN > 0.
    """
    import torch

    tm = pytest.importorskip("torchmetrics.detection")
    ds = isus.open_dataset("mvd", synth_root("mvd"))
    thing_cats = [c.id for c in ds.categories if c.isthing]
    stuff_cats = [c.id for c in ds.categories if not c.isthing]
    metric, by_class = (tm.PanopticQuality(things=set(thing_cats), stuffs=set(stuff_cats), return_sq_and_rq=True,
                                           return_per_class=per) for per in (False, True))
    ev = PanopticEvaluator(ds.categories)
    rng = np.random.default_rng(0)
    for _ in range(2):  # two perturbations of every image
        for i in range(len(ds)):
            gt = ds.load_panoptic(i)
            crowd = gt.segments["id"][gt.segments["iscrowd"]]
            ids = np.where(np.isin(gt.ids, crowd), 0, gt.ids).astype(np.int32)
            gt = isus.Panoptic(ids, gt.segments[~gt.segments["iscrowd"]])
            pred = _void_free_prediction(gt, ds.categories, rng)
            assert (pred.ids != 0).all()
            ev.add(gt, pred)
            for m in (metric, by_class):
                m.update(torch.from_numpy(_pairs(pred, thing_cats))[None], torch.from_numpy(_pairs(gt, thing_cats))[None])
    res = ev.result()
    # (C, 3) pq, sq, rq; things then stuff, each sorted by id. torchmetrics divides each IoU in float32
    # (isus.eval in float64): the two differ by ~1e-8, hence 1e-6
    per_class = by_class.compute().double()
    order = sorted(thing_cats) + sorted(stuff_cats)
    counted = [c for c in ds.categories if not math.isnan(res.per_class[c.name]["pq"])]
    assert 0.2 < res.pq < 0.95 and len(counted) >= 8  # a test with matches, misses and false positives
    assert sum(res.per_class[c.name]["fp"] for c in counted) > 0 and sum(res.per_class[c.name]["fn"] for c in counted) > 0
    for c in counted:
        k = order.index(c.id)
        assert per_class[k, 0].item() == pytest.approx(res.per_class[c.name]["pq"], abs=1e-6), c.name
        assert per_class[k, 1].item() == pytest.approx(res.per_class[c.name]["sq"], abs=1e-6), c.name
        assert per_class[k, 2].item() == pytest.approx(res.per_class[c.name]["rq"], abs=1e-6), c.name
    pq, sq, rq = metric.compute().double().tolist()  # torchmetrics' own averages
    assert (pq, sq, rq) == pytest.approx((res.pq, res.sq, res.rq), abs=1e-6)


def test_evaluation_split_defaults_to_the_roots_validation_split(tmp_path, capsys):
    sys.path.insert(0, str(SCRIPT.parents[1]))
    try:
        from examples.train_panoptic import open_eval_split
    finally:
        sys.path.pop(0)
    two = isus.synth.write_dataset(tmp_path / "two", "mvd", [2, 1], size=(96, 64), split=["training", "validation"])
    one = isus.synth.write_dataset(tmp_path / "one", "mvd", 2, size=(96, 64))
    train = isus.open_dataset("mvd", two)
    assert open_eval_split(train, None, {}, 0).split == "validation"
    assert len(open_eval_split(train, None, {}, 0)) == 1
    assert open_eval_split(train, "training", {}, 0).split == "training"
    assert open_eval_split(isus.open_dataset("mvd", one), None, {}, 0).split == "training"
    assert "no 'validation' split" in capsys.readouterr().out


def test_resume_refuses_a_checkpoint_of_another_run(tmp_path, capsys):
    import torch

    sys.path.insert(0, str(SCRIPT.parents[1]))
    from examples.train_panoptic import load_checkpoint, parse_args, plain_args

    base = ["--dataset", "mvd", "--root", "r", "--index", "i", "--out", str(tmp_path)]
    args = parse_args(base + ["--box-loss", "cabb", "--steps", "100"])
    ckpt = tmp_path / "checkpoint.pt"
    state = {"model": {}, "optimizer": {}, "scheduler": {}, "scaler": {}, "step": 20, "sampler": {},
             "args": plain_args(args), "world": 1}
    torch.save(state, ckpt)
    cpu = torch.device("cpu")
    # the same run, resumed with other run-only options (workers, logging, --resume itself): accepted
    same = parse_args(base + ["--box-loss", "cabb", "--steps", "100", "--resume", "--workers", "0", "--log-every", "5"])
    assert load_checkpoint(ckpt, same, 1, cpu)["step"] == 20
    # another loss and learning rate: refused, naming each option and both values
    other = parse_args(base + ["--box-loss", "smooth_l1", "--steps", "100", "--lr", "0.1", "--resume"])
    with pytest.raises(SystemExit) as e:
        load_checkpoint(ckpt, other, 1, cpu)
    msg = str(e.value)
    assert "--box-loss: checkpoint 'cabb', now 'smooth_l1'" in msg and "--lr: checkpoint 0.02, now 0.1" in msg
    # more steps extends the run: accepted, with a note that the schedule changes
    longer = parse_args(base + ["--box-loss", "cabb", "--steps", "200", "--resume"])
    assert load_checkpoint(ckpt, longer, 1, cpu)["step"] == 20
    assert "note: resuming with --steps: checkpoint 100, now 200" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="processes: checkpoint 1, now 2"):
        load_checkpoint(ckpt, same, 2, cpu)
    # a checkpoint written before an option existed is compared on the options it has
    old = {**state, "args": {k: v for k, v in plain_args(args).items() if k != "clip_grad"}}
    torch.save(old, ckpt)
    assert load_checkpoint(ckpt, same, 1, cpu)["step"] == 20
    # a truncated file and a foreign one: named, with what was expected
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    with pytest.raises(SystemExit, match=r"checkpoint.pt is not a readable checkpoint"):
        load_checkpoint(ckpt, same, 1, cpu)
    torch.save({"weights": 1}, ckpt)
    with pytest.raises(SystemExit, match=r"lacks \['model'"):
        load_checkpoint(ckpt, same, 1, cpu)
    with pytest.raises(SystemExit, match="no checkpoint at"):
        load_checkpoint(tmp_path / "none.pt", same, 1, cpu)


def test_resume_and_init_weights_load_tensors_only(tmp_path):
    """A received checkpoint must not run code on load: anything beyond tensors and plain data is
    refused with a message, and no code runs (--resume used to load with weights_only=False)."""
    import torch

    sys.path.insert(0, str(SCRIPT.parents[1]))
    from examples.train_panoptic import load_checkpoint, load_init_weights, parse_args

    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    args = parse_args(["--dataset", "mvd", "--root", "r", "--index", "i", "--out", str(tmp_path), "--resume"])
    ckpt = tmp_path / "checkpoint.pt"
    torch.save({"model": {}, "optimizer": {}, "scheduler": {}, "scaler": {}, "step": 1, "sampler": {},
                "args": {"x": Evil()}, "world": 1}, ckpt)
    with pytest.raises(SystemExit, match="holds more than tensors and plain data"):
        load_checkpoint(ckpt, args, 1, torch.device("cpu"))
    with pytest.raises(SystemExit, match="--init-weights: .* holds more than tensors"):
        load_init_weights(torch.nn.Linear(2, 2), ckpt)
    assert not marker.exists()
    # a bare state_dict of another model is refused, naming the flag
    torch.save({"weight": torch.zeros(3, 3)}, tmp_path / "other.pt")
    with pytest.raises(SystemExit, match="--init-weights: .* does not fit this model"):
        load_init_weights(torch.nn.Linear(2, 2), tmp_path / "other.pt")
    torch.save(torch.nn.Linear(2, 2).state_dict(), tmp_path / "good.pt")
    assert len(load_init_weights(torch.nn.Linear(2, 2), tmp_path / "good.pt")) == 64
