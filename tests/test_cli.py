"""The CLI through click's CliRunner."""
from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

import isus
from isus_cli.main import cli


def test_every_command_is_documented_with_an_example():
    for name, cmd in cli.commands.items():
        assert cmd.help and "Example:" in cmd.help, f"isus {name} needs help text with an Example: block"
        for p in cmd.params:
            if isinstance(p, click.Option) and p.name != "help":
                assert p.help, f"isus {name} {p.opts[0]} has no help"


@pytest.mark.parametrize("layout", isus.synth.LAYOUTS)
def test_synth_writes_an_openable_dataset(layout, tmp_path):
    out = tmp_path / layout
    res = CliRunner().invoke(cli, ["synth", "--layout", layout, "--out", str(out), "--images", "2", "--size", "96x64"])
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
