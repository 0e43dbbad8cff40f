"""The CLI through click's CliRunner."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import isus
from isus_cli._options import examples
from isus_cli.main import cli

ROOT = Path(__file__).resolve().parents[1]


def _commands(group: click.Group = cli, path: tuple[str, ...] = ("isus",)):
    yield path, group
    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, path + (name,))
        else:
            yield path + (name,), cmd


DOCS = "\n".join(p.read_text(encoding="utf-8") for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])


@pytest.mark.parametrize("path", [" ".join(p) for p, _ in _commands()][1:])
def test_every_command_has_help_with_an_example_and_a_docs_entry(path):
    """sqlite-utils style: walk the command tree; each command's --help works and shows an
    Example: block of its own command lines, every visible option has help, and the docs
    (README.md, docs/*.md) use the command."""
    cmd = dict((" ".join(p), c) for p, c in _commands())[path]
    res = CliRunner().invoke(cli, path.split()[1:] + ["--help"])
    assert res.exit_code == 0, res.output
    assert "Example:" in res.output, f"{path} --help has no Example: block"
    lines = examples(cmd)
    assert lines and all(line.startswith(path) for line in lines), f"{path}: examples {lines}"
    for p in cmd.params:
        if isinstance(p, click.Option) and p.name != "help" and not p.hidden:
            assert p.help, f"{path} {p.opts[0]} has no help"
    assert path + " " in DOCS or path + "`" in DOCS, f"{path} is not in README.md or docs/*.md"


def _problems(line: str) -> list[str]:
    """What is wrong with the command line ``isus ...``: an unknown command, an unknown or a
    deprecated (hidden) option."""
    tokens = shlex.split(line.replace("\\\n", " ").split(" #")[0].rstrip("\\"))[1:]
    cmd: click.Command = cli
    while isinstance(cmd, click.Group) and tokens and not tokens[0].startswith("-"):
        if tokens[0] not in cmd.commands:
            return [f"no command {tokens[0]!r}"]
        cmd = cmd.commands[tokens.pop(0)]
    visible = {o for p in cmd.params if not getattr(p, "hidden", False) for o in p.opts + p.secondary_opts}
    known = {o for p in cmd.params for o in p.opts + p.secondary_opts} | {"--help", "-h"}
    opts = [t.split("=")[0] for t in tokens if t.startswith("-") and not t[1:2].isdigit()]
    return ([f"unknown option {o}" for o in opts if o not in known]
            + [f"deprecated option {o}" for o in opts if o in known - visible - {"--help", "-h"}])


def test_help_examples_use_current_options():
    for path, cmd in _commands():
        for line in examples(cmd):
            assert not _problems(line), f"{' '.join(path)} --help: {line}: {_problems(line)}"


def test_docs_command_lines_use_current_options():
    """Every `isus ...` command line in README.md and docs/*.md (code blocks and inline code)
    names commands and options that exist under their current names."""
    lines = re.findall(r"^\s*(?:\$ )?(isus (?:\\\n|[^\n])*)$", DOCS, re.M)
    lines += re.findall(r"`(isus [^`]+)`", DOCS)
    checked = 0
    for line in lines:
        if line.split()[1] not in cli.commands:  # prose such as "isus evaluator"
            continue
        checked += 1
        assert not _problems(line), f"{line}: {_problems(line)}"
    assert checked > 30


@pytest.mark.parametrize("layout", isus.synth.LAYOUTS)
def test_synth_writes_an_openable_dataset(layout, tmp_path):
    out = tmp_path / layout
    res = CliRunner().invoke(cli, ["synth", "--dataset", layout, "--out", str(out), "--images", "2", "--size", "96x64"])
    assert res.exit_code == 0, res.output
    ds = isus.open_dataset(layout, out)
    assert len(ds) == 2 and ds.image_info(0).width == 96 and ds.image_info(0).height == 64
    assert "wrote 2 images of split" in res.output and f"in the {layout} layout" in res.output


def test_synth_errors_are_clean(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    res = CliRunner().invoke(cli, ["synth", "--out", str(tmp_path / "full")])
    assert res.exit_code == 1 and "not empty" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(cli, ["synth", "--out", str(tmp_path / "o"), "--size", "big"])
    assert res.exit_code == 2 and "WIDTHxHEIGHT" in res.output


def test_demo_summarises_and_reuses_its_dataset(tmp_path):
    args = ["demo", "--out", str(tmp_path / "d"), "--images", "8", "--size", "160x120"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    summary = isus.summarize(isus.open_dataset("mvd", tmp_path / "d" / "mvd"))
    assert f"images         {summary.num_images}" in res.output
    assert f"instances      {summary.num_instances} (+{summary.num_crowd} crowd regions)" in res.output
    assert "sqrt(area)" in res.output
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0 and "reusing" in again.output
    other = CliRunner().invoke(cli, args[:-1] + ["200x100"])
    assert other.exit_code == 1 and "other settings" in other.output


def test_version():
    res = CliRunner().invoke(cli, ["--version"])
    assert res.exit_code == 0 and isus.__version__ in res.output


def test_index_build_and_merge_refuse_to_replace_an_index_without_overwrite(tmp_path):
    root = isus.synth.write_dataset(tmp_path / "mvd", "mvd", 2, size=(96, 64), seed=0)
    out = tmp_path / "x.isusidx"
    build = ["index", "build", "--dataset", "mvd", "--root", str(root), "--out", str(out), "--workers", "1"]
    assert CliRunner().invoke(cli, build).exit_code == 0
    before = out.read_bytes()
    res = CliRunner().invoke(cli, build)
    assert res.exit_code == 1 and "already exists: pass --overwrite" in res.output
    assert out.read_bytes() == before and not out.with_name(out.name + ".partial").exists()  # refused before the scan
    assert CliRunner().invoke(cli, build + ["--overwrite"]).exit_code == 0
    res = CliRunner().invoke(cli, ["index", "merge", str(out), "--out", str(out)])
    assert res.exit_code == 1 and "already exists: pass --overwrite" in res.output


def test_errors_speak_cli_and_hint_at_the_fix(tmp_path):
    root = isus.synth.write_dataset(tmp_path / "mvd", "mvd", 2, size=(96, 64), seed=0)
    out = tmp_path / "x.isusidx"
    res = CliRunner().invoke(cli, ["index", "build", "--dataset", "mvd", "--root", str(root), "--version", "v3",
                                   "--out", str(out)])
    assert res.exit_code == 1 and "Error: --version expects one of" in res.output and "open_dataset" not in res.output
    # --root at a split folder: the error names the parent to pass
    res = CliRunner().invoke(cli, ["index", "build", "--dataset", "mvd", "--root", str(root / "training"),
                                   "--out", str(out)])
    assert res.exit_code == 1 and f"pass its parent, --root {root.resolve()} --split training" in res.output
    # an index whose dataset moved: the error says how to point at it
    assert CliRunner().invoke(cli, ["index", "build", "--dataset", "mvd", "--root", str(root), "--out",
                                    str(out)]).exit_code == 0
    root.rename(tmp_path / "moved")
    res = CliRunner().invoke(cli, ["preview", str(out), "--out", str(tmp_path / "pv"), "-n", "1"])
    assert res.exit_code == 1 and "pass --root with its new location" in res.output
    res = CliRunner().invoke(cli, ["preview", str(out), "--out", str(tmp_path / "pv"), "-n", "1",
                                   "--root", str(tmp_path / "moved")])
    assert res.exit_code == 0, res.output


def test_isus_preview_marks_the_instance_each_crop_aimed_at(tmp_path):
    import matplotlib.pyplot as plt

    root = isus.synth.write_dataset(tmp_path / "mvd", "mvd", 3, size=(160, 120), seed=0)
    out = tmp_path / "x.isusidx"
    assert CliRunner().invoke(cli, ["index", "build", "--dataset", "mvd", "--root", str(root), "--out",
                                    str(out)]).exit_code == 0
    titles = []
    real = plt.Axes.set_title

    def spy(self, label, *a, **k):
        titles.append(label)
        return real(self, label, *a, **k)

    plt.Axes.set_title = spy
    try:
        res = CliRunner().invoke(cli, ["preview", str(out), "--out", str(tmp_path / "pv"), "-n", "12", "--crop", "64"])
    finally:
        plt.Axes.set_title = real
    assert res.exit_code == 0, res.output
    aimed = [t for t in titles if ", aimed P" in t]
    assert aimed and all("aimed instance" in t for t in aimed)  # marked (or said to be dropped)
    assert all("aimed instance" not in t for t in titles if ", aimed P" not in t)


def test_stats_and_preview_take_the_level_rule_of_a_scaled_network(tmp_path):
    import json

    root = isus.synth.write_dataset(tmp_path / "mvd", "mvd", 2, size=(160, 120), seed=0)
    out = tmp_path / "x.isusidx"
    assert CliRunner().invoke(cli, ["index", "build", "--dataset", "mvd", "--root", str(root), "--out",
                                    str(out)]).exit_code == 0
    res = CliRunner().invoke(cli, ["stats", str(out), "--out", str(tmp_path / "st"), "--crop", "64", "-n", "200",
                                   "--length-scale", "0.25"])
    assert res.exit_code == 0, res.output
    settings = json.loads((tmp_path / "st" / "stats.json").read_text())["settings"]
    rule = isus.FPNLevels(canonical_size=56)
    assert settings["level_intervals"] == [list(rule.interval(lv)) for lv in rule.levels]
    res = CliRunner().invoke(cli, ["preview", str(out), "--out", str(tmp_path / "pv"), "-n", "2", "--crop", "64",
                                   "--length-scale", "0"])
    assert res.exit_code == 2 and "--length-scale" in res.output
