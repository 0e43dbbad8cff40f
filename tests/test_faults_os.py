"""Operating-system faults (reliability issue): disk full, read-only file system, a name too long, a
path component that is a file, permission denied -- each a one-line isus error naming the path, in
every command; nothing written before is lost, no temp file stays, no worker outlives a SIGKILLed
build, and a file name that is not UTF-8 is refused naming it.

Tests may run as root, which ignores permissions: errors are injected by monkeypatching where the
kernel would raise them (``write``/``fsync`` report a full disk without a file name).
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import matplotlib.figure
import pytest
from click.testing import CliRunner

import isus
from isus_cli.main import cli

ERRORS = {"ENOSPC": errno.ENOSPC, "EROFS": errno.EROFS, "ENAMETOOLONG": errno.ENAMETOOLONG,
          "ENOTDIR": errno.ENOTDIR, "EACCES": errno.EACCES}
TEMP_MARKS = (".tmp",)


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.blake2b(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _temps(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if any(m in p.name for m in TEMP_MARKS)]


def _invoke(args) -> object:
    return CliRunner().invoke(cli, [str(a) for a in args])


def _assert_one_line_error(res, path_part: str, strerror: str) -> None:
    out = res.output.strip()
    assert res.exit_code == 1, res.output
    assert "Traceback" not in res.output
    assert len(out.splitlines()) == 1 or out.splitlines()[-1].startswith("Error:"), out
    last = out.splitlines()[-1]
    assert last.startswith("Error: ") and path_part in last and strerror in last, last


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A small MVD dataset, its index and two shard indexes, an eval.json."""
    d = tmp_path_factory.mktemp("os")
    isus.synth.write_dataset(d / "mvd", "mvd", 6, size=(320, 240))
    assert _invoke(["index", "build", "--dataset", "mvd", "--root", d / "mvd", "--out", d / "mvd.isusidx",
                    "--workers", "1"]).exit_code == 0
    for k in range(2):
        assert _invoke(["index", "build", "--dataset", "mvd", "--root", d / "mvd", "--out", d / f"p{k}.isusidx",
                        "--workers", "1", "--shard", f"{k}/2", "--no-cache-annotations"]).exit_code == 0
    fields = ["pq", "sq", "rq", "pq_th", "sq_th", "rq_th", "pq_st", "sq_st", "rq_st", "pq_dagger", "pq_dagger_th",
              "pq_dagger_st", "pc", "pc_th", "pc_st", "miou"]
    (d / "run").mkdir()
    (d / "run" / "eval.json").write_text(json.dumps(isus.eval.EvalResult(**{f: 0.5 for f in fields}, images=1).to_dict()))
    return d


def _fail_os(monkeypatch, name: str, code: int, with_name: bool, when=lambda *a: True):
    """Make ``os.NAME`` raise OSError(code) -- naming the file(s) like the kernel's open/rename do, or
    without a name as write()/fsync() do -- whenever ``when(*args)``."""
    real = getattr(os, name)

    def fake(*args, **kwargs):
        if when(*args):
            names = [os.fspath(a) for a in args if isinstance(a, (str, os.PathLike))] if with_name else []
            raise OSError(code, os.strerror(code), *names[:1], *([None, *names[1:2]] if len(names) > 1 else []))
        return real(*args, **kwargs)

    monkeypatch.setattr(os, name, fake)


def _setup(cmd: str, base: Path, tmp: Path, monkeypatch, code: int):
    """Prepare ``cmd`` with earlier output in ``tmp``; returns (args, expected path part in the message)."""
    if cmd == "synth":
        out = tmp / "s"
        isus.synth.write_dataset(out, "mvd", 2, size=(160, 120))
        _fail_os(monkeypatch, "replace", code, True)
        return ["synth", "--out", out, "--splits", "validation", "--images", "2", "--size", "160x120"], "isus_synth.json"
    if cmd == "build":
        shutil.copy(base / "mvd.isusidx", tmp / "x.isusidx")
        _fail_os(monkeypatch, "fsync", code, False)  # the disk fills up while writing
        return ["index", "build", "--dataset", "mvd", "--root", base / "mvd", "--out", tmp / "x.isusidx", "--workers",
                "1", "--no-cache-annotations", "--checkpoint-every", "2", "--overwrite"], "x.isusidx"
    if cmd == "merge":
        shutil.copy(base / "mvd.isusidx", tmp / "m.isusidx")
        _fail_os(monkeypatch, "replace", code, True)
        return ["index", "merge", base / "p0.isusidx", base / "p1.isusidx", "--out", tmp / "m.isusidx", "--overwrite"], "m.isusidx"
    if cmd == "stats":
        assert _invoke(["stats", base / "mvd.isusidx", "--out", tmp / "st", "--samples", "50"]).exit_code == 0
        _fail_os(monkeypatch, "fsync", code, False)
        return ["stats", base / "mvd.isusidx", "--out", tmp / "st", "--samples", "60", "--overwrite"], "stats.json"
    if cmd == "preview":
        (tmp / "pv").mkdir()
        (tmp / "pv" / "earlier.png").write_bytes(b"earlier")

        def savefig(self, *a, **k):
            raise OSError(code, os.strerror(code))
        monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
        return ["preview", base / "mvd.isusidx", "--out", tmp / "pv", "-n", "2"], "preview_isus.png"
    if cmd == "eval":
        (tmp / "cmp").mkdir()
        (tmp / "cmp" / "compare.json").write_text("{}")
        _fail_os(monkeypatch, "fsync", code, False)
        return ["eval", "--compare", base / "run" / "eval.json", "--out", tmp / "cmp", "--overwrite"], "compare.json"
    raise AssertionError(cmd)


@pytest.mark.parametrize("err", list(ERRORS))
@pytest.mark.parametrize("cmd", ["synth", "build", "merge", "stats", "preview", "eval"])
def test_os_error_is_one_line_naming_the_path(cmd, err, base, tmp_path, monkeypatch):
    code = ERRORS[err]
    args, where = _setup(cmd, base, tmp_path, monkeypatch, code)
    before = _hashes(tmp_path)
    res = _invoke(args)
    monkeypatch.undo()
    _assert_one_line_error(res, where, os.strerror(code))
    after = _hashes(tmp_path)
    assert {k: after.get(k) for k in before} == before  # nothing written before is lost or changed
    assert _temps(tmp_path) == []


@pytest.mark.parametrize("cmd", ["synth", "build", "stats", "preview", "eval", "demo"])
@pytest.mark.parametrize("kind", ["ENOTDIR", "ENAMETOOLONG"])
def test_real_bad_output_paths(cmd, kind, base, tmp_path):
    """No injection: --out under a regular file, or with a component longer than NAME_MAX."""
    (tmp_path / "afile").write_text("x")
    out = tmp_path / "afile" / "sub" if kind == "ENOTDIR" else tmp_path / ("n" * 300) / "sub"
    args = {"synth": ["synth", "--out", out, "--images", "1", "--size", "64x64"],
            "build": ["index", "build", "--dataset", "mvd", "--root", base / "mvd", "--out", out / "x.isusidx",
                      "--workers", "1"],
            "stats": ["stats", base / "mvd.isusidx", "--out", out, "--samples", "10"],
            "preview": ["preview", base / "mvd.isusidx", "--out", out, "-n", "1"],
            "eval": ["eval", "--compare", base / "run" / "eval.json", "--out", out],
            "demo": ["demo", "--out", out, "--images", "1", "--size", "64x64"]}[cmd]
    res = _invoke(args)
    _assert_one_line_error(res, "afile" if kind == "ENOTDIR" else "n" * 300, os.strerror(ERRORS[kind]))


def test_checkpointed_work_survives_a_full_disk_and_resumes(base, tmp_path, monkeypatch):
    out = tmp_path / "x.isusidx"
    _fail_os(monkeypatch, "replace", errno.ENOSPC, True, when=lambda src, dst, *a: Path(dst).name == out.name)
    res = _invoke(["index", "build", "--dataset", "mvd", "--root", base / "mvd", "--out", out, "--workers", "1",
                   "--checkpoint-every", "2"])
    monkeypatch.undo()
    _assert_one_line_error(res, "x.isusidx", "No space left on device")
    assert not out.exists() and _temps(tmp_path) == []
    assert len(list((tmp_path / "x.isusidx.partial").glob("chunk_*.npz"))) == 3
    res = _invoke(["index", "build", "--dataset", "mvd", "--root", base / "mvd", "--out", out, "--workers", "1",
                   "--resume"])
    assert res.exit_code == 0, res.output
    assert isus.Index.load(out).arrays()["cache_digest"].tobytes() == \
        isus.Index.load(base / "mvd.isusidx").arrays()["cache_digest"].tobytes()


def test_stale_temp_files_of_a_killed_process_are_removed(base, tmp_path):
    dead = 2 ** 22 + 11  # above any pid_max: certainly no live process
    out = tmp_path / "x.isusidx"
    partial, cache = tmp_path / "x.isusidx.partial", tmp_path / "x.isusidx.cache"
    partial.mkdir()
    cache.mkdir()
    stale = [tmp_path / f".x.isusidx.tmp-{dead}", partial / ".chunk_000000.tmp", partial / ".build.json.tmp",
             cache / f".0000001-abcd.ann.tmp-{dead}"]
    live = tmp_path / ".x.isusidx.tmp-1"  # pid 1 is alive: a writer at work, kept
    other = tmp_path / ".mine.tmp-123"  # not isus's: kept
    for p in [*stale, live, other]:
        p.write_bytes(b"partial")
    res = _invoke(["index", "build", "--dataset", "mvd", "--root", base / "mvd", "--out", out, "--workers", "1"])
    assert res.exit_code == 0, res.output
    assert not any(p.exists() for p in stale)
    assert live.exists() and other.exists()
    # the prediction and JSON writers too
    from isus.eval.io import PanopticPredictionWriter, write_json

    png_dir = tmp_path / "preds" / "panoptic"
    png_dir.mkdir(parents=True)
    (png_dir / f".a.png.tmp-{dead}.png").write_bytes(b"x")
    (tmp_path / f".e.json.tmp-{dead}-abc123").write_bytes(b"x")
    PanopticPredictionWriter(tmp_path / "preds")
    write_json(tmp_path / "e.json", {})
    assert _temps(tmp_path / "preds") == [] and not (tmp_path / f".e.json.tmp-{dead}-abc123").exists()


def test_non_utf8_file_name_is_refused_naming_it(tmp_path):
    root = tmp_path / "mvd"
    isus.synth.write_dataset(root, "mvd", 2, size=(160, 120))
    img = sorted((root / "training" / "images").iterdir())[0]
    bad = os.fsdecode(b"bad\xff\xfe")
    for p in root.rglob(img.stem + ".*"):
        p.rename(p.with_name(bad + p.suffix))
    res = _invoke(["index", "build", "--dataset", "mvd", "--root", root, "--out", tmp_path / "x.isusidx",
                   "--workers", "1"])
    _assert_one_line_error(res, "bad\\xff\\xfe", "not valid UTF-8")
    assert not (tmp_path / "x.isusidx").exists()


def _children(pid: int) -> set[int]:
    kids = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids |= {int(c) for c in (task / "children").read_text().split()}
        except OSError:
            pass
    return kids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_sigkill_of_a_build_leaves_no_worker(tmp_path):
    root = tmp_path / "mvd"
    isus.synth.write_dataset(root, "mvd", 16, size=(1600, 1200))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "isus_cli.main", "index", "build", "--dataset", "mvd", "--root",
                             str(root), "--out", str(tmp_path / "x.isusidx"), "--workers", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    workers: set[int] = set()
    try:
        deadline = time.monotonic() + 600  # nets for a hang, not time limits: each loop ends on its condition
        while time.monotonic() < deadline and len(workers) < 2 and proc.poll() is None:
            workers = _children(proc.pid)
            time.sleep(0.05)
        assert len(workers) >= 2, "the build never started its workers"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and any(_alive(w) for w in workers):
            time.sleep(0.05)
        assert not any(_alive(w) for w in workers), "a worker outlived its SIGKILLed parent"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for w in workers:
            if not _alive(w):
                continue
            try:
                os.kill(w, signal.SIGKILL)
            except OSError:
                pass
