"""The example scripts' command line: help without torchvision, defaults shown, one-line errors,
ETA lines in a log file, ``params_in_sync`` in ``eval.json`` (issue 15, items 3 and 7)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import isus

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "examples" / "train_panoptic.py"
STUDY = ROOT / "examples" / "scale_study.py"
HINT = 'pip install -e ".[examples]"'


@pytest.fixture()
def no_torchvision(tmp_path):
    """An environment whose ``import torchvision`` fails as it does where it is not installed: a
    package of that name, first on the path, raising ModuleNotFoundError."""
    shim = tmp_path / "shim" / "torchvision"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'torchvision'\", name='torchvision')\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(shim.parent), os.environ.get("PYTHONPATH", "")])}


def run(args, env=None, **kw):
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, timeout=1800, env=env,
                          cwd=ROOT, **kw)


@pytest.mark.parametrize("script", [TRAIN, STUDY], ids=lambda p: p.name)
def test_help_without_torchvision_shows_defaults_and_the_install_line(script, no_torchvision):
    res = run([script, "--help"], env=no_torchvision)
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
    assert res.stdout.startswith("usage:") and "(default: " in res.stdout
    assert HINT in res.stdout  # the epilog says what to install


def test_training_without_torchvision_is_one_line(no_torchvision, tmp_path):
    res = run([TRAIN, "--dataset", "mvd", "--root", tmp_path, "--index", tmp_path / "x.isusidx", "--out",
               tmp_path / "run"], env=no_torchvision)
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert res.stderr.strip().count("\n") == 0 and HINT in res.stderr and "torchvision" in res.stderr, res.stderr
    res = run([STUDY, "--out", tmp_path / "study", "--scale", "smoke"], env=no_torchvision)
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert res.stderr.strip().count("\n") == 0 and HINT in res.stderr, res.stderr
    assert not (tmp_path / "study").exists()  # refused before writing any data


def test_defaults_suit_the_cpu_quick_start_and_agree_with_the_evidence():
    """ResNet-18 for CPUs; ISUS crops and CABB on data with instances, since study 2 measured both
    gains (docs/training.md, "Which sampling and box loss"), CUS and smooth L1 on semantic-only
    data; an option given is kept; --help says so."""
    pytest.importorskip("torchvision")
    sys.path.insert(0, str(ROOT))
    from examples.train_panoptic import parse_args, resolve_defaults

    base = ["--dataset", "mvd", "--root", "r", "--index", "i", "--out", "o"]
    args = parse_args(base)
    assert args.backbone == "resnet18" and args.sampling is None and args.box_loss is None
    assert resolve_defaults(args, True) == ["--sampling", "--box-loss"]
    assert (args.sampling, args.box_loss) == ("isus", "cabb")
    args = parse_args(base)
    resolve_defaults(args, False)
    assert (args.sampling, args.box_loss) == ("cus", "smooth_l1")
    args = parse_args(base + ["--sampling", "cus"])
    assert resolve_defaults(args, True) == ["--box-loss"] and (args.sampling, args.box_loss) == ("cus", "cabb")
    text = " ".join(run([TRAIN, "--help"]).stdout.split())
    for option in ("--sampling", "--box-loss"):
        said = text.rsplit(option + " {", 1)[1].split(" --", 1)[0]
        assert "docs/evidence-study-2.md" in "".join(said.split()), option  # argparse may wrap at the hyphen
    assert "running" not in text


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tiny")
    root = isus.synth.write_dataset(tmp / "mvd", "mvd", 4, size=(128, 96), seed=3)
    isus.build_index(isus.open_dataset("mvd", root), workers=1).save(tmp / "mvd.isusidx")
    return tmp, root


def test_log_file_has_eta_lines_and_eval_json_has_params_in_sync(tiny):
    """stdout redirected to a file (as on a cluster): every log line carries steps/s and the ETA;
    a single process writes ``params_in_sync`` too."""
    pytest.importorskip("torchvision")
    tmp, root = tiny
    out = tmp / "run"
    with open(tmp / "train.log", "w") as log:
        res = subprocess.run([sys.executable, str(TRAIN), "--dataset", "mvd", "--root", str(root), "--index",
                              str(tmp / "mvd.isusidx"), "--out", str(out), "--crop", "64", "--steps", "3",
                              "--warmup", "1", "--workers", "0", "--log-every", "1", "--no-eval",
                              "--rpn-pre-nms-top-n-train", "100", "--rpn-post-nms-top-n-train", "50",
                              "--rpn-batch-size-per-image", "32", "--box-batch-size-per-image", "32"],
                             stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, timeout=1800)
    text = (tmp / "train.log").read_text()
    assert res.returncode == 0, text[-3000:]
    # the configuration first, with the evidence behind the defaults
    assert text.startswith("configuration: --sampling isus --box-loss cabb (defaults: --sampling, --box-loss;")
    assert "docs/evidence-study-2.md" in text.splitlines()[0]
    steps = [line for line in text.splitlines() if line.startswith("step ")]
    assert [s.split()[1] for s in steps] == ["1/3", "2/3", "3/3"], text
    assert all("steps_per_s=" in s and " eta=" in s for s in steps)
    assert steps[-1].endswith("eta=0s")
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert all(r["steps_per_s"] > 0 and r["eta_s"] >= 0 for r in records) and records[-1]["eta_s"] == 0
    assert json.loads((out / "eval.json").read_text())["params_in_sync"] is True


def test_format_duration():
    pytest.importorskip("torchvision")
    sys.path.insert(0, str(ROOT))
    from examples.train_panoptic import format_duration

    assert [format_duration(s) for s in (0, 45.4, 61, 3599, 3600, 3725, 90000)] == \
        ["0s", "45s", "1m01s", "59m59s", "1h00m", "1h02m", "25h00m"]


def _sync_worker(rank: int, world: int, port: int, result) -> None:
    import torch
    import torch.distributed as dist

    sys.path.insert(0, str(ROOT))
    from examples.train_panoptic import params_in_sync

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.Linear(4, 2))
    same = params_in_sync(model, torch.device("cpu"), world)
    if rank == 1:
        with torch.no_grad():
            model[1].bias[0] = torch.nextafter(model[1].bias[0], torch.tensor(1.0))  # one ulp
    result[rank] = (same, params_in_sync(model, torch.device("cpu"), world))
    dist.destroy_process_group()


def test_params_in_sync_detects_one_ulp():
    """Two gloo ranks: identical parameters are in sync; one ulp apart on one rank they are not."""
    pytest.importorskip("torchvision")
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = mp.Manager().dict()
    mp.spawn(_sync_worker, args=(2, port, result), nprocs=2)
    assert dict(result) == {0: (True, False), 1: (True, False)}
