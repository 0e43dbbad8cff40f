"""One vocabulary across the ``isus`` commands (issue 15): shared options and defaults, every reader
option on the command line, shard file names, progress in log files, and the smaller fixes."""
from __future__ import annotations

import json
import shutil

import click
import pytest
from click.testing import CliRunner

import isus
from isus.datasets.base import reader_options
from isus_cli._options import DEFAULT_CROP, DATASETS
from isus_cli.main import cli
from tests.conftest import realdata


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def commands(group: click.Group = cli, path: tuple[str, ...] = ()):
    """``(("index", "build"), command), ...``: every command of the tree."""
    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            yield from commands(cmd, path + (name,))
        else:
            yield path + (name,), cmd


def options(cmd: click.Command) -> dict[str, click.Option]:
    return {o: p for p in cmd.params if isinstance(p, click.Option) and not p.hidden for o in p.opts}


OPENS_A_DATASET = [("index", "build"), ("eval",)]


@pytest.fixture(scope="module")
def mvd(tmp_path_factory):
    """A small synthetic MVD dataset and its index."""
    d = tmp_path_factory.mktemp("cli_options")
    root = isus.synth.write_dataset(d / "mvd", "mvd", 4, size=(160, 120), seed=3)
    res = invoke("index", "build", "--dataset", "mvd", "--root", root, "--out", d / "mvd.isusidx", "--workers", "1")
    assert res.exit_code == 0, res.output
    return root, d / "mvd.isusidx"


# -- item 5: one vocabulary, the same defaults ------------------------------------------------------
#: Defaults that differ on purpose: synth's --dataset is the layout to write (mvd unless told); the
#: demo writes more and larger images than a default synth run, so that every FPN level shows.
OWN_DEFAULTS = {("synth", "--dataset"), ("demo", "--images"), ("demo", "--size")}


def test_an_option_shared_by_commands_means_the_same_everywhere():
    """Every option name used by several commands has the same type, help and default in each
    (except --out, whose help names what each command writes, and OWN_DEFAULTS)."""
    meaning: dict[str, dict[tuple, list[str]]] = {}
    default: dict[str, dict[str, list[str]]] = {}
    for path, cmd in commands():
        where = " ".join(path)
        for p in {id(p): p for p in options(cmd).values()}.values():
            if p.name == "help" or "--out" in p.opts:
                continue
            key = (tuple(p.opts), json.dumps(p.type.to_info_dict(), default=str), p.help)
            meaning.setdefault(p.opts[0], {}).setdefault(key, []).append(where)
            if (where, p.opts[0]) not in OWN_DEFAULTS:
                default.setdefault(p.opts[0], {}).setdefault(repr(p.default), []).append(where)
    differing = {o: list(v.values()) for o, v in meaning.items() if len(v) > 1}
    assert not differing, f"options whose type or help differ between commands: {differing}"
    differing = {o: v for o, v in default.items() if len(v) > 1}
    assert not differing, f"options whose default differs between commands: {differing}"


def test_one_name_per_thing():
    by_path = {" ".join(p): options(c) for p, c in commands()}
    for path in ("index build", "eval"):
        assert {"--dataset", "--root", "--split"} <= set(by_path[path]), path
    assert "--dataset" in by_path["synth"] and "--layout" not in by_path["synth"]  # hidden alias
    for path in ("preview", "stats", "demo"):
        assert "--crop" in by_path[path], path
    for path in ("preview", "stats"):
        assert {"--samples", "-n", "--preset", "--seed", "--overwrite", "--root"} <= set(by_path[path]), path
    assert "--seed" in by_path["synth"] and "--seed" in by_path["demo"]
    assert by_path["synth"]["--seed"].type.min == by_path["demo"]["--seed"].type.min == 0


def test_the_old_names_still_work(tmp_path):
    res = invoke("synth", "--layout", "cityscapes", "--out", tmp_path / "cs", "--images", "1", "--size", "64x48")
    assert res.exit_code == 0, res.output
    assert "--layout is deprecated; use --dataset" in res.output and "in the cityscapes layout" in res.output
    res = invoke("synth", "--layout", "idd", "--dataset", "idd", "--out", tmp_path / "x")
    assert res.exit_code == 2 and "give only --dataset" in res.output
    res = invoke("synth", "--dataset", "mvd", "--out", tmp_path / "ss", "--images", "1", "--size", "64x48",
                 "--preset", "scale-study")
    assert res.exit_code == 0 and "--preset is deprecated; use --scene" in res.output
    assert isus.synth.read_manifest(tmp_path / "ss")["preset"] == "scale-study"


def test_dataset_aliases_and_every_preset_are_accepted(mvd, tmp_path):
    root, index = mvd
    # the documented aliases (docs/datasets.md), any case
    res = invoke("index", "build", "--dataset", "Mapillary", "--root", root, "--out", tmp_path / "a.isusidx",
                 "--workers", "1")
    assert res.exit_code == 0, res.output
    assert isus.Index.load(tmp_path / "a.isusidx").meta["dataset"]["name"] == "mvd"
    res = invoke("synth", "--dataset", "coco_panoptic", "--out", tmp_path / "co", "--images", "1", "--size", "64x48")
    assert res.exit_code == 0 and "in the coco layout" in res.output
    res = invoke("index", "build", "--dataset", "nope", "--root", root)
    assert res.exit_code == 2 and "mvd, cityscapes, idd, coco" in res.output and "mapillary" in res.output
    # a preset for every dataset a user can open
    for name in DATASETS + ("mapillary", "coco_panoptic"):
        cfg = isus.SamplerConfig.preset(name)
        assert cfg.shortest_side and cfg.crop_size[0] >= 512
    res = invoke("stats", index, "--out", tmp_path / "st", "--preset", "coco", "--samples", "50")
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "st" / "stats.json").read_text())["settings"]["crop_size"] == [640, 640]
    res = invoke("preview", index, "--out", tmp_path / "pv", "--preset", "coco", "-n", "2")
    assert res.exit_code == 0, res.output


def test_one_default_crop_everywhere(mvd, tmp_path):
    root, index = mvd
    for _, cmd in commands():
        if "--crop" in options(cmd):
            assert options(cmd)["--crop"].default is None and str(DEFAULT_CROP) in options(cmd)["--crop"].help
    res = invoke("stats", index, "--out", tmp_path / "st", "--samples", "50")
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "st" / "stats.json").read_text())["settings"]["crop_size"] == [DEFAULT_CROP] * 2
    res = invoke("demo", "--out", tmp_path / "demo", "--images", "2", "--size", "160x120")
    assert res.exit_code == 0, res.output
    assert f"8 ISUS crops of {DEFAULT_CROP}x{DEFAULT_CROP}" in res.output
    assert f"ISUS crops of {DEFAULT_CROP}x{DEFAULT_CROP} from the index" in res.output
    data = json.loads((tmp_path / "demo" / "stats" / "stats.json").read_text())
    assert data["settings"]["crop_size"] == [DEFAULT_CROP] * 2


# -- item 4: every reader option on the command line -----------------------------------------------
def test_every_reader_option_is_on_every_command_that_opens_a_dataset():
    wanted = {"--" + o.replace("_", "-") for name in DATASETS for o in reader_options(name)}
    by_path = {p: options(c) for p, c in commands()}
    for path in OPENS_A_DATASET:
        missing = wanted - set(by_path[path])
        assert not missing, f"isus {' '.join(path)} lacks {sorted(missing)}"


def test_a_moved_layout_opens_through_the_path_options(mvd, tmp_path):
    """MVD with its images and label config elsewhere: only --images-dir/--config reach them."""
    src, _ = mvd
    root = tmp_path / "moved"
    shutil.copytree(src, root)
    (root / "training" / "images").rename(root / "jpgs")
    (root / "config_v1.2.json").rename(root / "labels.json")
    res = invoke("index", "build", "--dataset", "mvd", "--root", root, "--out", tmp_path / "m.isusidx", "--workers", "1")
    assert res.exit_code == 1 and "images" in res.output  # the default layout is not there
    res = invoke("index", "build", "--dataset", "mvd", "--root", root, "--images-dir", "jpgs", "--config", "labels.json",
                 "--out", tmp_path / "m.isusidx", "--workers", "1")
    assert res.exit_code == 0, res.output
    index = isus.Index.load(tmp_path / "m.isusidx")
    assert index.num_images == 4 and index.open_dataset().image_path(0).parent.name == "jpgs"
    # an option of another format is a clean usage error naming the formats that take it
    res = invoke("index", "build", "--dataset", "mvd", "--root", root, "--annotations", "x.json")
    assert res.exit_code == 2 and "--annotations applies to --dataset coco" in res.output
    res = invoke("eval", "--images-dir", "jpgs")
    assert res.exit_code == 2 and "--dataset is required with --images-dir" in res.output


def test_real_coco_sample_indexes_from_the_cli(tmp_path):
    root = realdata("coco_panoptic", "panopticapi", "sample_data")
    res = invoke("index", "build", "--dataset", "coco", "--root", root, "--annotations", "panoptic_examples.json",
                 "--panoptic-dir", "panoptic_examples", "--images-dir", "input_images", "--out", tmp_path / "c.isusidx",
                 "--workers", "1")
    assert res.exit_code == 0, res.output
    ds = isus.open_dataset("coco", root, annotations="panoptic_examples.json", panoptic_dir="panoptic_examples",
                           images_dir="input_images")
    assert isus.Index.load(tmp_path / "c.isusidx").num_images == len(ds)


# -- item 1 (CLI side): a shard's default file name -------------------------------------------------
def test_shards_without_out_write_their_own_files(mvd, tmp_path, monkeypatch):
    root, _ = mvd
    monkeypatch.chdir(tmp_path)
    for k in range(2):
        res = invoke("index", "build", "--dataset", "mvd", "--root", root, "--shard", f"{k}/2", "--workers", "1")
        assert res.exit_code == 0, res.output
    parts = [tmp_path / f"mvd-training.shard{k}of2.isusidx" for k in range(2)]
    assert all(p.exists() for p in parts) and not (tmp_path / "mvd-training.isusidx").exists()
    assert [isus.Index.load(p).num_images for p in parts] == [2, 2]


# -- item 6: progress lines when stderr is a log file ------------------------------------------------
def test_long_commands_print_progress_lines_when_not_on_a_terminal(mvd, tmp_path):
    root, index = mvd
    runs = {
        "synth": (["synth", "--out", tmp_path / "s", "--images", "2", "--size", "64x48"], "writing mvd: 2/2 images"),
        "index build": (["index", "build", "--dataset", "mvd", "--root", root, "--out", tmp_path / "i.isusidx",
                         "--workers", "1"], "indexing mvd: 4/4 images"),
        "stats": (["stats", index, "--out", tmp_path / "st", "--samples", "50"],
                  "sampling 50 CUS + 50 ISUS crops: 2/2 batches (100%)"),
    }
    for name, (args, line) in runs.items():
        res = CliRunner().invoke(cli, [str(a) for a in args])  # stderr is not a TTY here
        assert res.exit_code == 0, res.output
        assert line in res.stderr and "ETA" in res.stderr, (name, res.stderr)
        assert "\r" not in res.stderr and "\x1b" not in res.stderr  # lines, not a redrawn bar
    # eval: tests/test_eval_cli.py checks "evaluating: 6/6 images" the same way


# -- item 8: the smaller fixes ------------------------------------------------------------------------
def test_demo_refuses_a_non_empty_directory_and_prints_the_summary_once(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "mine.txt").write_text("keep")
    res = invoke("demo", "--out", tmp_path / "full", "--images", "2", "--size", "160x120")
    assert res.exit_code == 1 and "not empty" in res.output and "Traceback" not in res.output
    assert sorted(p.name for p in (tmp_path / "full").iterdir()) == ["mine.txt"]
    res = invoke("demo", "--out", tmp_path / "d", "--images", "3", "--size", "160x120")
    assert res.exit_code == 0, res.output
    assert res.output.count("instance size") == 1 and res.output.count("per class") == 1
    again = invoke("demo", "--out", tmp_path / "d", "--images", "3", "--size", "160x120")  # its own earlier run
    assert again.exit_code == 0 and "reusing" in again.output


def test_summary_class_counts_agree_with_its_per_class_line(synth_root):
    ds = isus.open_dataset("mvd", synth_root("mvd"))
    s = isus.summarize(ds)
    assert sum(s.instances_per_category.values()) == s.num_instances
    assert len(s.instances_per_category) + len(s.thing_categories_without_instances) == s.num_thing_categories
    line = next(x for x in s.format().splitlines() if x.startswith("per class"))
    assert f"({len(s.instances_per_category)} of {s.num_thing_categories} thing classes have instances)" in line
    for name in s.thing_categories_without_instances:
        assert name in line


def test_a_wrong_split_lists_the_splits_there(tmp_path):
    for layout, splits in (("mvd", ["training", "validation"]), ("cityscapes", ["train", "val"]),
                           ("coco", ["train", "val"])):
        root = isus.synth.write_dataset(tmp_path / layout, layout, [1, 1], size=(64, 48), split=splits)
        with pytest.raises(isus.DatasetError, match=f"the splits found are {', '.join(splits)}"):
            isus.open_dataset(layout, root, split="nope")
        res = invoke("index", "build", "--dataset", layout, "--root", root, "--split", "nope")
        assert res.exit_code == 1 and f"the splits found are {', '.join(splits)}" in res.output


def test_preview_titles_show_sigma_and_say_when_it_was_clamped(mvd, tmp_path, monkeypatch):
    from matplotlib.axes import Axes

    from isus.preview import render_preview

    _, index = mvd
    titles: list[str] = []
    real = Axes.set_title
    monkeypatch.setattr(Axes, "set_title", lambda self, t, *a, **k: (titles.append(t), real(self, t, *a, **k))[1])
    cfg = isus.SamplerConfig.preset("mvd")  # s0 = 2048: the total scale differs from σ
    render_preview(isus.Index.load(index), tmp_path / "p.png", 16, config=cfg, seed=1)
    batch = isus.SamplingPolicy(isus.Index.load(index), cfg).draw(__import__("numpy").random.default_rng(1), 16)
    assert len(titles) == 16
    for k, t in enumerate(titles):
        assert f"σ {batch.sigma[k]:.2f}" in t and ("(clamped)" in t) == bool(batch.clamped[k])
    assert any("(clamped)" in t for t in titles)  # 160x120 images at s0 = 2048: ISUS clamps often


def test_stats_preview_and_eval_refuse_to_overwrite_without_the_flag(mvd, tmp_path):
    _, index = mvd
    for cmd in (["stats", index, "--samples", "20"], ["preview", index, "-n", "1"]):
        out = tmp_path / cmd[0]
        assert invoke(*cmd, "--out", out).exit_code == 0
        before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
        res = invoke(*cmd, "--out", out)
        assert res.exit_code == 1 and "already exist" in res.output and "pass --overwrite" in res.output, res.output
        assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
        assert invoke(*cmd, "--out", out, "--overwrite").exit_code == 0
    (tmp_path / "ev").mkdir()
    (tmp_path / "ev" / "compare.json").write_text("{}")
    res = invoke("eval", "--compare", tmp_path / "x.json", "--out", tmp_path / "ev")
    assert res.exit_code == 2  # x.json does not exist: click says so first
    (tmp_path / "x.json").write_text("{}")
    res = invoke("eval", "--compare", tmp_path / "x.json", "--out", tmp_path / "ev")
    assert res.exit_code == 1 and "compare.json already exists (an earlier run's): pass --overwrite" in res.output
