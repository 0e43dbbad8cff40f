"""Executable documentation: the code blocks of ``README.md`` and ``docs/*.md`` run, so a doc that
drifts from the code fails CI.

How a block is treated depends on the HTML comment on the line just before its fence:

- ```` ```python ```` blocks all run, unless marked ``<!-- not-runnable: reason -->`` (keep that
  rare: only for code that needs what the test cannot provide). The blocks of one page run in
  order in one namespace, in a fresh folder that holds ``mvd-training.isusidx`` (and its cache),
  ``preds/panoptic.json`` + ``preds/instances.json`` (the validation ground truth as predictions),
  and names a page leaves to the reader (``root``, ``i``, ``spec``, ``pred_deltas``, ...) taken
  from :func:`context`; the pages of :data:`COMPLETE` get no such names: their blocks are whole
  programs a reader can copy.
- ```` ```bash ```` blocks marked ``<!-- runnable -->`` (anything may follow ``runnable``, e.g. a
  note) run under ``bash -euo pipefail`` in a fresh folder with ``examples/`` linked in, ``HOME``
  set to a folder holding ``~/data/mvd`` (a synthetic MVD root: ``training`` and ``validation``),
  and the test's Python first on ``PATH`` (``isus``, ``python``, ``torchrun``).
- Every other ``bash`` block is not run, but each ``isus ...`` command in it is checked against
  the CLI: its subcommands and every option it uses must exist.

Sizes are made small before a block runs (real datasets and long trainings do not fit a test):

- paths: :data:`PATHS` (``/data/mvd`` -> the synthetic root);
- options of shell commands and keyword arguments of Python calls: :data:`SMALL` (``--images 64``
  -> ``--images 3``, ``--steps 90000`` -> ``--steps 2``, ``num_workers=8`` -> ``num_workers=0``, ...).

Environment variables: ``ISUS_DOCS_FULL=1`` runs the shell blocks at their documented sizes (slow,
and still on the test's small dataset: only the options are left as written);
``ISUS_DOCS_KEEP=DIR`` keeps each page's folder and every block's output (``block<line>.log``, with
its wall time) under ``DIR``.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import isus
from tests.conftest import REALDATA

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FULL = os.environ.get("ISUS_DOCS_FULL") == "1"
#: pages whose Python blocks run as they are, without the names of :func:`context`
COMPLETE = {ROOT / "README.md"}

#: documented paths -> where the test's synthetic data is ({home}: the HOME of the blocks)
PATHS = {"/data/mapillary-vistas": "{home}/data/mvd", "/data/mvd": "{home}/data/mvd", "~/data/mvd": "{home}/data/mvd",
         "../shared/realdata": str(REALDATA)}  # the real samples: blocks using them skip where they are absent

def _cap(most: int):
    """A replacement that keeps the option's numbers (a comma list too) but caps each at ``most``."""
    def repl(m: re.Match) -> str:
        return m.group(1) + ",".join(str(min(int(n.replace("_", "")), most)) for n in m.group(2).split(","))
    return repl


#: (pattern, replacement) applied in order to a block before it runs; shell options and Python keywords
SMALL: list[tuple[str, object]] = [
    (r"(--images )([\d,]+)", _cap(3)),
    (r"--size \d+x\d+", "--size 128x96"),
    (r"--steps \d+", "--steps 1"),
    (r"--warmup \d+", "--warmup 1"),
    (r"--crop \d+", "--crop 64"),
    # the example: small crops and s0 too (`isus` commands: the crop; they have no --shortest-side)
    (r"^(.*train_panoptic\.py.*)--preset (mvd|idd|cityscapes)(?= |$)", r"\1--preset \2 --crop 64 --shortest-side 96"),
    (r"^(\s*isus .*)--preset (mvd|idd|cityscapes)(?= |$)", r"\1--preset \2 --crop 64"),
    (r"--eval-images \d+", "--eval-images 1"),
    (r"(--samples )(\d+)", _cap(200)),
    (r"--workers \d+", "--workers 1"),
    (r"(?<= )-n \d+", "-n 4"),
    (r"--nproc_per_node=\d+", "--nproc_per_node=1"),
    (r"--backbone resnet50", "--backbone resnet18"),
    (r" --sync-bn", ""),  # SyncBatchNorm needs GPUs
    (r" --backbone-weights \S+", ""),  # no weights to load here
    (r"\bnum_samples=[\d_]+", "num_samples=8"),
    (r"\bnum_workers=\d+", "num_workers=0"),
    (r"\bworkers=\d+", "workers=1"),
    (r"(\bsamples=)([\d_]+)", _cap(200)),
]


@dataclass
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    lang: str
    marker: str  # the HTML comment before the fence, "" when none
    text: str

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    lines = page.read_text().splitlines()
    out, i = [], 0
    while i < len(lines):
        m = re.match(r"^```(\w+)\s*$", lines[i])
        if m:
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            k = i - 1
            while k >= 0 and not lines[k].strip():
                k -= 1
            prev = lines[k].strip() if k >= 0 else ""
            marker = prev if prev.startswith("<!--") else ""
            out.append(Block(page, i + 1, m.group(1), marker, "\n".join(lines[i + 1:j]) + "\n"))
            i = j
        i += 1
    return out


ALL = [b for page in PAGES for b in blocks(page)]


def runnable(b: Block) -> bool:
    return b.marker.startswith("<!-- runnable")


def skipped(b: Block) -> str | None:
    m = re.match(r"<!-- not-runnable:\s*(.*?)\s*-->", b.marker)
    return m.group(1) if m else None


def shrink(text: str, home: Path, shell: bool = False) -> str:
    if shell:
        text = re.sub(r"\\\n\s*", " ", text)  # one command per line
    paths = re.compile("|".join(re.escape(p) for p in PATHS))
    text = paths.sub(lambda m: PATHS[m.group(0)].format(home=home), text)
    if FULL:
        return text
    for pattern, repl in SMALL:
        text = re.sub(pattern, repl, text, flags=re.M)
    return text


# -- the data the blocks run on ------------------------------------------------------------------
@pytest.fixture(scope="module")
def docdata(tmp_path_factory):
    """~/data/mvd (training 4 + validation 3 images), its training index with the annotation cache,
    and the validation ground truth written as predictions (preds/)."""
    from isus.eval import Detections, PanopticPredictionWriter, write_instances

    base = tmp_path_factory.mktemp("docs")
    home = base / "home"
    root = isus.synth.write_dataset(home / "data" / "mvd", "mvd", [4, 3], size=(128, 96), seed=5,
                                    split=["training", "validation"])
    files = base / "files"
    files.mkdir()
    ds = isus.open_dataset("mvd", root, split="training")
    isus.build_index(ds, workers=1, cache_dir=files / "mvd-training.isusidx.cache").save(files / "mvd-training.isusidx")
    val = isus.open_dataset("mvd", root, split="validation")
    dets = {}
    with PanopticPredictionWriter(files / "preds") as w:
        for i in range(len(val)):
            gt, info = val.load_panoptic(i), val.image_info(i)
            w.add(info.image_id, gt)
            things = [s for s in gt.segments if val.category(int(s["category_id"])).isthing and not s["iscrowd"]]
            masks = np.stack([gt.ids == s["id"] for s in things]) if things else np.zeros((0, *gt.ids.shape), bool)
            boxes = [[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] for ys, xs in (np.nonzero(m) for m in masks)]
            dets[info.image_id] = Detections(np.array(boxes, float).reshape(-1, 4), np.linspace(1, 0.5, len(things)),
                                             np.array([s["category_id"] for s in things], np.int64), masks)
    write_instances(files / "preds" / "instances.json", dets)
    return home, root, files


def workdir(tmp_path: Path, docdata) -> Path:
    keep = os.environ.get("ISUS_DOCS_KEEP")
    cwd = Path(keep) / tmp_path.name if keep else tmp_path / "cwd"
    cwd.mkdir(parents=True, exist_ok=True)
    for f in docdata[2].iterdir():
        (shutil.copytree if f.is_dir() else shutil.copy2)(f, cwd / f.name)
    return cwd


def context(root: Path) -> dict:
    """Names the Python blocks use without defining them: things a reader has at hand."""
    import torch

    ds = isus.open_dataset("mvd", root, split="training")
    val = isus.open_dataset("mvd", root, split="validation")
    index = isus.Index.load("mvd-training.isusidx")
    cfg = isus.SamplerConfig(crop_size=(64, 64))
    spec = isus.SamplingPolicy(index, cfg).draw(np.random.default_rng(0), 1).spec(0)
    thing = next(c.id for c in ds.categories if c.isthing and len(index.images_with_class(c.id)[0]))
    anchors = torch.tensor([[0.0, 0.0, 40.0, 30.0], [10.0, 5.0, 60.0, 50.0]])
    return {
        "root": str(root), "i": 0, "image": 0, "cat_id": thing, "spec": spec, "epochs": 1, "N": 8,
        "index": index, "cfg": cfg, "val_ds": val,
        "dataset": isus.torch.PanopticCropDataset(ds, index),
        "x0": 0, "y0": 0, "x1": 32, "y1": 24,
        "pred_deltas": torch.zeros(2, 4, requires_grad=True), "anchors": anchors,
        "boxes": torch.tensor([[0.0, 0.0, 30.0, 30.0], [12.0, 6.0, 64.0, 48.0]]),
        "truncated": torch.tensor([[True, False, False, False], [False, False, True, False]]),
        "crop_boxes": torch.tensor([0.0, 0.0, 64.0, 48.0]),
        "my_panoptic": val.load_panoptic,
        "boxes_xyxy": np.zeros((0, 4)), "scores": np.zeros(0), "labels": np.zeros(0, np.int64), "masks": [],
    }


# -- Python blocks -------------------------------------------------------------------------------
PY_PAGES = sorted({b.page for b in ALL if b.lang == "python"})


@pytest.mark.parametrize("page", PY_PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_python_blocks_run(page, docdata, tmp_path, monkeypatch):
    home, root, _ = docdata
    cwd = workdir(tmp_path, docdata)
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("HOME", str(home))
    ns = {"__name__": "__doc__", **({} if page in COMPLETE else context(root))}
    ran = 0
    for b in blocks(page):
        if b.lang != "python" or skipped(b) is not None:
            continue
        code = compile(shrink(b.text, home), b.id, "exec")
        try:
            exec(code, ns)
        except Exception as e:
            raise AssertionError(f"{b.id}: the Python block fails: {type(e).__name__}: {e}") from e
        ran += 1
    if not ran:
        pytest.skip("every Python block of the page is marked not-runnable")


# -- shell blocks --------------------------------------------------------------------------------
SHELL = [b for b in ALL if b.lang in ("bash", "sh", "shell")]


SHELL_PAGES = sorted({b.page for b in SHELL if runnable(b)})


@pytest.mark.parametrize("page", SHELL_PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_runnable_shell_blocks(page, docdata, tmp_path):
    """The page's runnable blocks, in order, in one folder (a later block uses what an earlier one
    wrote, as a reader following the page would)."""
    home, root, _ = docdata
    cwd = workdir(tmp_path, docdata)
    for f in ("mvd-training.isusidx", "mvd-training.isusidx.cache", "preds"):  # the page makes its own
        shutil.rmtree(cwd / f) if (cwd / f).is_dir() else (cwd / f).unlink()
    (cwd / "examples").symlink_to(ROOT / "examples")
    env = {**os.environ, "HOME": str(home), "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get(
        "PYTHONPATH")])), "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    for block in [b for b in blocks(page) if b.lang in ("bash", "sh", "shell") and runnable(b)]:
        if "../shared/realdata" in block.text and not REALDATA.exists():
            continue  # the real samples are not copied into the repository
        script = shrink(block.text, home, shell=True)
        t0 = time.perf_counter()
        res = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=cwd, env=env, capture_output=True,
                             text=True, timeout=None if FULL else 1800)  # a net for a hang
        took = time.perf_counter() - t0
        (cwd / f"block{block.line}.log").write_text(f"$ {script}\n{res.stdout}\n{res.stderr}\n({took:.1f} s)\n")
        assert res.returncode == 0, f"{block.id} fails (exit {res.returncode}):\n{script}\n{res.stdout[-3000:]}\n" \
                                    f"{res.stderr[-3000:]}"


def _commands(text: str) -> list[list[str]]:
    """The ``isus ...`` commands of a shell block, as argument lists (continuations joined,
    comments, ``[`` ``]`` of optional arguments and ``&&``/``;``/``|`` separators handled)."""
    text = re.sub(r"\\\n", " ", text)
    out = []
    for line in text.splitlines():
        line = line.split(" #", 1)[0]
        if line.lstrip().startswith("#"):
            continue
        lex = shlex.shlex(re.sub(r"(^|\s)[\[\]]|[\[\]](?=\s|$)", " ", line), posix=True, punctuation_chars=";&|")
        lex.whitespace_split = True
        words: list[str] = []
        for w in [*lex, ";"]:
            if w and set(w) <= set(";&|"):
                if words and words[0] == "isus":
                    out.append(words)
                words = []
            else:
                words.append(w)
    return out


@pytest.mark.parametrize("block", [b for b in SHELL if not runnable(b) and _commands(b.text)], ids=lambda b: b.id)
def test_isus_commands_in_other_shell_blocks_exist(block):
    import click

    from isus_cli.main import cli

    for words in _commands(block.text):
        cmd, path, rest = cli, ["isus"], words[1:]
        while isinstance(cmd, click.Group) and rest and not rest[0].startswith("-"):
            sub = cmd.get_command(click.Context(cmd), rest[0])
            assert sub is not None, f"{block.id}: `{' '.join(path)}` has no command {rest[0]!r}: {' '.join(words)}"
            cmd, path, rest = sub, [*path, rest[0]], rest[1:]
        known = {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)} | {"--help"}
        used = [w.split("=", 1)[0] for w in rest if re.match(r"^--?[A-Za-z]", w)]
        unknown = [o for o in used if o not in known]
        assert not unknown, f"{block.id}: `{' '.join(path)}` has no option {unknown}: {' '.join(words)}"


def test_markers_are_known():
    """A misspelt marker would silently change what runs."""
    for b in ALL:
        if b.marker and not b.marker.startswith(("<!-- runnable", "<!-- not-runnable:", "<!-- test-command")):
            if re.search(r"runnable|run\b", b.marker):
                raise AssertionError(f"{b.id}: unknown marker {b.marker!r}")
