"""``write_dataset(workers=)`` / ``isus synth --workers``: images written in parallel processes
give the same files, byte for byte, as one process; the progress wrapper still counts every image;
the workers are bounded by the machine's memory."""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pytest
from click.testing import CliRunner

import isus
from isus.synth import writers
from isus_cli.main import cli

SPLITS = {"mvd": ["training", "validation"], "cityscapes": ["train", "val"], "idd": ["train", "val"],
          "coco": ["train", "val"]}


def tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("layout", isus.synth.LAYOUTS)
def test_parallel_writing_gives_the_same_files(layout, tmp_path):
    one = isus.synth.write_dataset(tmp_path / "one", layout, [3, 2], size=(128, 96), seed=4, split=SPLITS[layout])
    two = isus.synth.write_dataset(tmp_path / "two", layout, [3, 2], size=(128, 96), seed=4, split=SPLITS[layout],
                                   workers=2)
    a, b = tree(one), tree(two)
    assert a == b
    # the split JSON lists every image once, in index order, as one process writes them
    ds = isus.open_dataset(layout, two, split=SPLITS[layout][0])
    assert len(ds) == 3
    # a split added later, in parallel, continues the scene numbering as a serial one does
    isus.synth.write_dataset(one, layout, 2, size=(128, 96), seed=4, split="extra")
    isus.synth.write_dataset(two, layout, 2, size=(128, 96), seed=4, split="extra", workers=3)
    assert tree(one) == tree(two) != a


def test_progress_counts_every_image_with_workers(tmp_path):
    seen: list[int] = []
    steps: list[int] = []

    def progress(items):
        items = list(items)
        for k, i in enumerate(items):
            seen.append(i)
            yield i
            steps.append(k + 1)

    isus.synth.write_dataset(tmp_path / "x", "mvd", 5, size=(96, 64), seed=1, progress=progress, workers=2)
    assert seen == [0, 1, 2, 3, 4] and steps == [1, 2, 3, 4, 5]


def test_workers_are_validated_and_bounded_by_memory(tmp_path, monkeypatch, caplog):
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match=r"write_dataset\(workers=\)"):
            isus.synth.write_dataset(tmp_path / "bad", "mvd", 2, size=(96, 64), workers=bad)
    # a machine with room for two images of this size in flight: 8 workers become 2
    per_image = 96 * 64 * writers.BYTES_PER_PIXEL
    monkeypatch.setattr(writers, "_available_memory", lambda: 2 * per_image + 1)
    assert writers._workers_in_memory(8, 96 * 64) == 2
    assert writers._workers_in_memory(2, 96 * 64) == 2
    with caplog.at_level(logging.WARNING, logger="isus"):
        isus.synth.write_dataset(tmp_path / "capped", "mvd", 3, size=(96, 64), workers=8)
    assert "8 workers would hold" in caplog.text and "using 2" in caplog.text
    monkeypatch.setattr(writers, "_available_memory", lambda: None)  # unknown: only the cores bound it
    assert writers._workers_in_memory(8, 96 * 64) == 8
    monkeypatch.undo()
    avail = writers._available_memory()  # this machine's, read from the kernel
    assert avail is not None and 0 < avail <= (writers._physical_memory() or avail)


def test_a_request_above_the_cores_is_said_once(tmp_path, monkeypatch, caplog):
    import isus._parallel

    for cores in (1, 2):  # one core: in this process; two: in the pool
        monkeypatch.setattr(isus._parallel, "usable_cores", lambda: cores)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="isus"):
            one = isus.synth.write_dataset(tmp_path / f"x{cores}", "coco", 3, size=(96, 64), workers=5)
        assert caplog.text.count("5 workers requested") == 1, caplog.text
        assert tree(one) == tree(isus.synth.write_dataset(tmp_path / f"y{cores}", "coco", 3, size=(96, 64)))


def test_cli_workers(tmp_path):
    for w in ("1", "2"):
        res = CliRunner().invoke(cli, ["synth", "--dataset", "cityscapes", "--out", str(tmp_path / w), "--images", "3",
                                       "--size", "96x64", "--workers", w])
        assert res.exit_code == 0, res.output
    assert tree(tmp_path / "1") == tree(tmp_path / "2")
    res = CliRunner().invoke(cli, ["synth", "--out", str(tmp_path / "0"), "--workers", "0"])
    assert res.exit_code == 2 and "--workers" in res.output
